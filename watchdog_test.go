package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

const frozen = "HERMES_TEST_FAULT=freeze-after-ready"

func TestWatchdogHealsFrozenLoop(t *testing.T) {
	e := newTestEnv(t, "[watchdog]\ntimeout = \"2s\"\nsignal_timeout = \"0s\"\n")
	g := e.startGateway(frozen)
	start := time.Now()
	if code := g.wait(15 * time.Second); code != exitWatchdog {
		t.Fatalf("frozen gateway: exit %d, want %d\n%s", code, exitWatchdog, g.stderr.String())
	}
	took := time.Since(start)
	if took < time.Second {
		t.Errorf("the watchdog fired after %s, before watchdog.timeout", took)
	}
	t.Logf("frozen loop healed: exit 70 %s after ready (watchdog.timeout 2s)", took.Round(time.Millisecond))
	files, _ := filepath.Glob(filepath.Join(e.stateDir, fmt.Sprintf("watchdog-*-%d.stack", g.pid())))
	if len(files) != 1 {
		t.Fatalf("stack files: %v, want one", files)
	}
	b, _ := os.ReadFile(files[0])
	if !strings.Contains(string(b), "loop stuck in: main.freezeLoopForTest") || !strings.Contains(string(b), "main.(*gateway).loop") {
		t.Errorf("stack file does not name the frozen function:\n%.2000s", b)
	}
	log := g.stderr.String()
	for _, want := range []string{"watchdog fired", "stuck_in=main.freezeLoopForTest", "stack_file=" + files[0], "exit level=error code=70"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	for _, path := range []string{pidFilePath(e.stateDir), controlPath(e.stateDir)} {
		if _, err := os.Stat(path); !os.IsNotExist(err) {
			t.Errorf("the watchdog left %s behind: %v", path, err)
		}
	}
	l, err := readStartLedger(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if ex, ok := l.LastExit(g.pid()); !ok || ex.Code != exitWatchdog || !strings.Contains(ex.Reason, "freezeLoopForTest") {
		t.Errorf("ledger exit of pid %d = %+v, want code 70 naming the frozen function", g.pid(), ex)
	}
	evs, _, _ := readJournal(e.stateDir)
	if !hasEvent(evs, evWatchdog, "stuck_in", "main.freezeLoopForTest") || !hasEvent(evs, evExit, "code", "70") {
		t.Errorf("journal lacks watchdog fired / exit 70: %+v", evs)
	}
}

// A TERM that the frozen loop never reads ends the gateway by itself within
// about signal_timeout: the recovery path `hermes restart` relies on. (With
// no signal waiting, a frozen loop is left to watchdog.timeout:
// TestWatchdogCheck pins that rule.)
func TestWatchdogTermToFrozenGateway(t *testing.T) {
	e := newTestEnv(t, "[watchdog]\ntimeout = \"60s\"\nsignal_timeout = \"500ms\"\n")
	sock, msgs := fakeNotifySocket(t)
	g := e.startGateway(frozen, "NOTIFY_SOCKET="+sock)
	start := time.Now()
	g.signal(syscall.SIGTERM)
	if code := g.wait(10 * time.Second); code != exitWatchdog {
		t.Fatalf("TERM to a frozen gateway: exit %d, want %d\n%s", code, exitWatchdog, g.stderr.String())
	}
	took := time.Since(start)
	wantNotify(t, msgs, "STATUS=watchdog: loop stuck in main.freezeLoopForTest")
	t.Logf("TERM to a frozen gateway: exit 70 after %s (signal_timeout 500ms)", took.Round(time.Millisecond))
	if took < 400*time.Millisecond {
		t.Errorf("exited %s after TERM, before signal_timeout", took)
	}
	if !strings.Contains(g.stderr.String(), "waited unread") {
		t.Errorf("log does not say the signal waited unread:\n%s", g.stderr.String())
	}
}

// waitStatus polls the gateway's /status (answered without its loop) until
// cond holds; it fails the test if the gateway exits or time runs out.
func (g *gatewayProc) waitStatus(timeout time.Duration, what string, cond func(gatewayStatus) bool) gatewayStatus {
	g.t.Helper()
	return waitStatusAt(g.t, g.url, g.exited, timeout, what, cond)
}

// waitStatusAt polls /status at url until cond holds, the process behind
// it exits (exited, may be nil) or time runs out.
func waitStatusAt(t testing.TB, url string, exited <-chan struct{}, timeout time.Duration, what string, cond func(gatewayStatus) bool) gatewayStatus {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		var st gatewayStatus
		if resp, err := freshClient.Get(url + "/status"); err == nil {
			json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if cond(st) {
				return st
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/status never showed %s within %s", url, what, timeout)
		}
		select {
		case <-exited:
			t.Fatalf("the gateway at %s exited while waiting for %s", url, what)
		case <-tick.C:
		}
	}
}

// TestWatchdogDisabled: with both checks at 0, a frozen loop with a TERM
// waiting is left alone, for longer than the default signal_timeout (3s);
// the same gateway with the check on is ended. The enabled case shows the
// test can tell the two apart.
func TestWatchdogDisabled(t *testing.T) {
	for _, tc := range []struct {
		name   string
		policy string
		want   int // exit code, or -1: still running
	}{
		{"enabled", "[watchdog]\ntimeout = \"0s\"\nsignal_timeout = \"300ms\"\n", exitWatchdog},
		{"disabled", "[watchdog]\ntimeout = \"0s\"\nsignal_timeout = \"0s\"\n", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, tc.policy)
			g := e.startGateway(frozen)
			g.signal(syscall.SIGTERM)
			if tc.want >= 0 {
				if code := g.wait(10 * time.Second); code != tc.want {
					t.Fatalf("exit %d, want %d\n%s", code, tc.want, g.stderr.String())
				}
				return
			}
			// The gateway itself says how long the TERM has waited unread.
			g.waitStatus(15*time.Second, "a TERM unread for 3.5s", func(st gatewayStatus) bool { return st.SignalUnreadMS >= 3500 })
			if g.hasExited() || strings.Contains(g.stderr.String(), "watchdog fired") {
				t.Fatalf("a disabled watchdog fired: exit %d\n%s", g.code, g.stderr.String())
			}
		})
	}
}

func TestWatchdogPrunesStackFiles(t *testing.T) {
	dir := t.TempDir()
	now := time.Now()
	for i := 0; i < 8; i++ {
		p := filepath.Join(dir, fmt.Sprintf("watchdog-%d-1.stack", i))
		os.WriteFile(p, nil, 0o600)
		os.Chtimes(p, now, now.Add(time.Duration(i)*time.Second))
	}
	os.WriteFile(filepath.Join(dir, "events.jsonl"), nil, 0o600)
	pruneStackFiles(dir, 5)
	got, _ := filepath.Glob(filepath.Join(dir, "watchdog-*.stack"))
	if len(got) != 5 {
		t.Fatalf("kept %v, want 5", got)
	}
	for _, p := range got {
		var i int
		fmt.Sscanf(filepath.Base(p), "watchdog-%d-", &i)
		if i < 3 {
			t.Errorf("kept an old stack file %s", p)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "events.jsonl")); err != nil {
		t.Errorf("pruning removed another file: %v", err)
	}
}

// A gateway stopped (SIGSTOP) for longer than watchdog.timeout is not
// frozen: resumed, it serves on, and a TERM that waited through the stop
// drains it normally instead of tripping the watchdog. (After SIGCONT the
// loop's tick and the watchdog race; TestWatchdogCheck pins the rule that
// decides that race.) The sleeps here are the scenario, not the proof: the
// process has to stay stopped for longer than the watchdog's timeouts.
func TestWatchdogToleratesSIGSTOP(t *testing.T) {
	e := newTestEnv(t, quickDrain+"[watchdog]\ntimeout = \"2s\"\nsignal_timeout = \"500ms\"\n")
	g := e.startGateway()
	g.signal(syscall.SIGSTOP)
	time.Sleep(3 * time.Second)
	g.signal(syscall.SIGCONT)
	g.waitStatus(10*time.Second, "a fresh heartbeat after SIGCONT", func(st gatewayStatus) bool { return !st.Frozen && st.State == stateServing })
	if code, body := httpGet(t, g.url+"/readyz"); code != 200 {
		t.Fatalf("after SIGCONT: readyz %d %s\n%s", code, body, g.stderr.String())
	}
	g.signal(syscall.SIGSTOP)
	g.signal(syscall.SIGTERM)
	time.Sleep(1500 * time.Millisecond)
	g.signal(syscall.SIGCONT)
	if code := g.wait(10 * time.Second); code != exitOK {
		t.Errorf("TERM pending through a stop: exit %d, want 0 (a drain)\n%s", code, g.stderr.String())
	}
	if strings.Contains(g.stderr.String(), "watchdog fired") {
		t.Errorf("the watchdog fired on a stopped gateway:\n%s", g.stderr.String())
	}
}

func TestWatchdogCheck(t *testing.T) {
	n := monoNow()
	w := WatchdogPolicy{Timeout: 2 * time.Second, SignalTimeout: 500 * time.Millisecond}
	for _, tc := range []struct {
		name         string
		beat, unread time.Duration // ago
		resumed      time.Duration // ago; 0 means never stopped
		policy       WatchdogPolicy
		want         string
	}{
		{"ticking, nothing unread", 300 * time.Millisecond, 0, 0, w, ""},
		{"silent loop", 3 * time.Second, 0, 0, w, "has not ticked for 3s"},
		{"silent loop, timeout disabled", 3 * time.Second, 0, 0, WatchdogPolicy{SignalTimeout: time.Second}, ""},
		{"signal unread", 300 * time.Millisecond, 800 * time.Millisecond, 0, w, "waited unread for 800ms"},
		{"signal unread, check disabled", 300 * time.Millisecond, 800 * time.Millisecond, 0, WatchdogPolicy{Timeout: time.Minute}, ""},
		{"resumed from a stop just now", 30 * time.Second, 30 * time.Second, 100 * time.Millisecond, w, ""},
		{"resumed, then silent again", 30 * time.Second, 0, 2500 * time.Millisecond, w, "has not ticked for 2.5s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := &gateway{pipe: &selfPipe{}}
			g.heartbeat.Store(n - int64(tc.beat))
			if tc.unread > 0 {
				g.pipe.waiting.Store(n - int64(tc.unread))
			}
			var resumed int64
			if tc.resumed > 0 {
				resumed = n - int64(tc.resumed)
			}
			got := g.watchdogCheck(tc.policy, n, resumed)
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// TestWatchdogLeavesAnExitToTheLoop: once the loop has claimed the exit (it
// is returning), a stale heartbeat no longer makes the watchdog fire; and
// once the watchdog has claimed it, the loop leaves it to the watchdog.
func TestWatchdogLeavesAnExitToTheLoop(t *testing.T) {
	w := WatchdogPolicy{Heartbeat: 500 * time.Millisecond, Timeout: 2 * time.Second}
	now := monoNow()
	g := &gateway{pipe: &selfPipe{}}
	g.heartbeat.Store(now - int64(time.Minute))
	g.ending.Store(endLoop)
	if r := g.watchdogDecide(w, now, 0); r != "" {
		t.Errorf("the watchdog fired after the loop claimed the exit: %s", r)
	}
	g2 := &gateway{pipe: &selfPipe{}}
	g2.heartbeat.Store(now - int64(time.Minute))
	if r := g2.watchdogDecide(w, now, 0); r == "" || g2.ending.Load() != endWatchdog {
		t.Errorf("a frozen loop: reason %q, ending %d; want a reason and the exit claimed", r, g2.ending.Load())
	}
	if g2.ending.CompareAndSwap(0, endLoop) {
		t.Error("the loop could claim an exit the watchdog holds")
	}
}
