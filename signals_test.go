package main

import (
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSelfPipeKeepsOrder sends this process signals one at a time and reads
// them from the self-pipe in the order they were sent; the watchdog's view
// (unreadFor) shows a stop signal until the loop takes it. The signals
// are sent one at a time on purpose: two different signals that arrive
// together are handed over by the Go runtime in signal-number order, which
// no pipe can undo (signals.go; the loop's rules commute for that reason).
func TestSelfPipeKeepsOrder(t *testing.T) {
	p, err := installSignals()
	if err != nil {
		t.Fatal(err)
	}
	sent := []syscall.Signal{syscall.SIGUSR1, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGUSR1, syscall.SIGINT}
	for _, s := range sent {
		if err := syscall.Kill(os.Getpid(), s); err != nil {
			t.Fatal(err)
		}
		select {
		case got := <-p.sigs:
			if got != s {
				t.Fatalf("got %s, want %s", signalName(got), signalName(s))
			}
			if stopsLoop(s) && p.unreadFor(monoNow()+int64(time.Second)) == 0 {
				t.Errorf("%s waits for the loop, but unreadFor is 0", signalName(s))
			}
			p.took(got)
			if u := p.unreadFor(monoNow() + int64(time.Second)); u != 0 {
				t.Errorf("after the loop took %s, unreadFor = %s, want 0", signalName(s), u)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s never reached the self-pipe", signalName(s))
		}
	}
	p.close()
	select {
	case <-p.sideDone:
	default:
		t.Error("close returned while the signal side could still write to the pipe")
	}
}

// TestSelfPipeFullKeepsDistinctSignals: with the reader stalled (a frozen
// loop) and the pipe full, a different signal is still delivered after the
// repeats, in order; only repeats coalesce.
func TestSelfPipeFullKeepsDistinctSignals(t *testing.T) {
	p := &selfPipe{sigs: make(chan syscall.Signal, 1), space: make(chan struct{}, 1), stop: make(chan struct{}),
		notify: make(chan os.Signal), sideDone: make(chan struct{})}
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		t.Fatal(err)
	}
	syscall.SetNonblock(fds[1], true)
	p.r, p.w = os.NewFile(uintptr(fds[0]), "r"), fds[1]
	go p.signalSide()
	// Fill the pipe the way a long-frozen loop would let it fill.
	for {
		if _, err := syscall.Write(p.w, []byte{byte(syscall.SIGHUP)}); err != nil {
			break
		}
	}
	for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM} {
		p.notify <- s
	}
	go p.reader()
	var got []syscall.Signal
	deadline := time.After(10 * time.Second)
	for len(got) < 2 {
		select {
		case s := <-p.sigs:
			if s != syscall.SIGHUP {
				got = append(got, s)
			}
		case <-deadline:
			t.Fatalf("after the pipe drained, got %v, want USR1 and TERM after the HUPs", got)
		}
	}
	if got[0] != syscall.SIGUSR1 || got[1] != syscall.SIGTERM {
		t.Errorf("got %v after the HUPs, want [USR1 TERM]", got)
	}
	select {
	case s := <-p.sigs:
		t.Errorf("a repeat was delivered twice: %s", signalName(s))
	default:
	}
	close(p.notify)
	<-p.sideDone
	close(p.stop)
	syscall.Close(p.w)
	p.r.Close()
}

// TestBackToBackSignalsLetStreamFinish: `kill -TERM p; kill -USR1 p` and
// the reverse, sent back to back (as when `systemctl stop` races `hermes
// restart`), both let a stream that fits in the drain finish with [DONE],
// and both end in a stop.
func TestBackToBackSignalsLetStreamFinish(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	for _, order := range [][2]syscall.Signal{{syscall.SIGTERM, syscall.SIGUSR1}, {syscall.SIGUSR1, syscall.SIGTERM}} {
		t.Run(signalName(order[0])+"+"+signalName(order[1]), func(t *testing.T) {
			e := newTestEnv(t, "[echo]\nword_delay = \"20ms\"\n[drain]\ntimeout = \"20s\"\ngrace = \"1s\"\n")
			g := e.startGateway()
			s := startStream(t, g.url, 60) // 1.2 s: fits easily in the drain
			s.waitLines(t, 4, 5*time.Second)
			syscall.Kill(g.pid(), order[0])
			syscall.Kill(g.pid(), order[1])
			out := s.waitDone(t, 20*time.Second)
			if !strings.Contains(out, "data: [DONE]") || strings.Contains(out, "event: error") {
				t.Errorf("the stream was cut:\n%s", out)
			}
			if code := g.wait(20 * time.Second); code != exitOK {
				t.Errorf("exit %d, want 0 (a stop request ends in a stop)", code)
			}
			if strings.Contains(g.stderr.String(), "stop-now") {
				t.Errorf("two different signals were taken as stop-now:\n%s", g.stderr.String())
			}
		})
	}
}

var logTime = regexp.MustCompile(`^(\S+Z) hermes\[\d+\] `)

// logLineTime is the time a log line (the first that contains s) carries.
func logLineTime(t *testing.T, log, s string) time.Time {
	t.Helper()
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, s) {
			m := logTime.FindStringSubmatch(l)
			if m == nil {
				t.Fatalf("log line has no time: %q", l)
			}
			tm, err := time.Parse("2006-01-02T15:04:05.000Z", m[1])
			if err != nil {
				t.Fatal(err)
			}
			return tm
		}
	}
	t.Fatalf("log has no %q:\n%s", s, log)
	return time.Time{}
}

// TestSecondTermStopsNow: TERM, then TERM again during the drain, is "stop
// now": the stream gets its final event and the gateway exits within 1 s of
// the second TERM (by its own log's clock, so a loaded test machine does
// not blur the figure).
func TestSecondTermStopsNow(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"100ms\"\n[drain]\ntimeout = \"60s\"\ngrace = \"5s\"\n")
	g := e.startGateway()
	s := startStream(t, g.url, 200)
	s.waitLines(t, 6, 5*time.Second) // mid-stream: words have gone out
	g.signal(syscall.SIGTERM)
	g.waitLog("drain start", 5*time.Second)
	g.signal(syscall.SIGTERM)
	code := g.wait(10 * time.Second)
	out := s.waitDone(t, 5*time.Second)
	if code != exitOK {
		t.Errorf("exit code = %d, want 0", code)
	}
	if !strings.Contains(out, "event: error") || !strings.Contains(out, reasonShutdown) {
		t.Errorf("stream cut by stop-now lacks its final event:\n%s", out)
	}
	log := g.stderr.String()
	took := logLineTime(t, log, " exit ").Sub(logLineTime(t, log, "action=stop-now"))
	t.Logf("stop-now to exit: %s", took)
	if took > time.Second {
		t.Errorf("stop-now took %s to exit, want within 1s", took)
	}
}

// TestCtrlCDuringDrainSaysSecondStopsNow: Ctrl-C on a gateway in the
// foreground starts a drain that may last drain.timeout; it says so once
// (a HUP in between does not repeat it), and the second Ctrl-C stops now.
// Under a service manager (here: JOURNAL_STREAM) it says nothing.
func TestCtrlCDuringDrainSaysSecondStopsNow(t *testing.T) {
	const hint = "press Ctrl-C again to stop now"
	for _, tc := range []struct {
		name  string
		env   []string
		hints int
	}{
		{"foreground", nil, 1},
		{"under a manager", []string{"JOURNAL_STREAM=8:12345"}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, "[echo]\nword_delay = \"100ms\"\n[drain]\ntimeout = \"60s\"\ngrace = \"5s\"\n")
			g := e.startGateway(tc.env...)
			s := startStream(t, g.url, 300) // 30 s
			s.waitLines(t, 2, 5*time.Second)
			g.signal(syscall.SIGINT)
			g.waitLog("drain start", 5*time.Second)
			if tc.hints > 0 {
				g.waitLog("hermes: draining 1 session, for up to 1m5s; "+hint, 5*time.Second)
			}
			g.signal(syscall.SIGHUP)
			g.waitLog("reload ok", 5*time.Second)
			g.signal(syscall.SIGINT)
			if code := g.wait(5 * time.Second); code != exitOK {
				t.Errorf("exit %d after the second Ctrl-C, want 0", code)
			}
			if body := s.waitDone(t, 5*time.Second); !strings.Contains(body, `"reason":"gateway_shutdown"`) {
				t.Errorf("the stream lacks its final event:\n%s", body)
			}
			if n := strings.Count(g.stderr.String(), hint); n != tc.hints {
				t.Errorf("said %q %d times, want %d:\n%s", hint, n, tc.hints, g.stderr.String())
			}
		})
	}
}
