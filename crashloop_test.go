package main

import (
	"fmt"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

const crashing = "HERMES_TEST_FAULT=exit-after-ready"

// TestCrashLoopBacksOff starts a gateway that fails right after it is ready
// four times: more than 2 starts in 1m is a crash loop, so the 3rd start
// waits 1s and the 4th 2s, and the ledger shows every exit and why.
func TestCrashLoopBacksOff(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "[crash_loop]\nstarts = 2\nwindow = \"1m\"\nbase_delay = \"1s\"\nmax_delay = \"10s\"\n")
	e.env = append(e.env, crashing)
	wantDelay := []time.Duration{0, 0, time.Second, 2 * time.Second}
	for i, want := range wantDelay {
		start := time.Now()
		_, stderr, code := e.hermes(20*time.Second, "serve")
		took := time.Since(start)
		if code != exitFailure {
			t.Fatalf("start %d: exit %d, want %d\n%s", i+1, code, exitFailure, stderr)
		}
		delays := strings.Count(stderr, "crash loop delay")
		switch {
		case want == 0 && delays != 0:
			t.Errorf("start %d delayed, want no delay:\n%s", i+1, stderr)
		case want > 0 && (delays != 1 || !strings.Contains(stderr, fmt.Sprintf("delay=%s ", want))):
			t.Errorf("start %d: want one log line 'crash loop delay delay=%s':\n%s", i+1, want, stderr)
		}
		if took < want {
			t.Errorf("start %d took %s, less than its delay %s", i+1, took, want)
		}
	}
	l, err := readStartLedger(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(l.Starts) != 4 || len(l.Exits) != 4 {
		t.Fatalf("ledger: %d starts, %d exits, want 4 and 4: %+v", len(l.Starts), len(l.Exits), l)
	}
	for i, ex := range l.Exits {
		if ex.Code != exitFailure || ex.Reason != "test fault exit-after-ready" || ex.PID != l.Starts[i].PID {
			t.Errorf("exit %d = %+v, want code 1, the fault as reason, pid %d", i+1, ex, l.Starts[i].PID)
		}
	}
	p, _ := loadPolicy(e.policy)
	if loop, delay := l.CrashLoop(p.CrashLoop, time.Now()); !loop || delay != 2*time.Second {
		t.Errorf("CrashLoop = %v, %s; want true, 2s", loop, delay)
	}
	evs, _, _ := readJournal(e.stateDir)
	if !hasEvent(evs, evCrashLoopDelay, "delay", "2s") {
		t.Errorf("journal lacks the 2s crash-loop delay")
	}
}

// A gateway waiting out a crash-loop delay still obeys TERM, at once.
func TestCrashLoopTermDuringDelay(t *testing.T) {
	e := newTestEnv(t, "[crash_loop]\nstarts = 1\nwindow = \"1m\"\nbase_delay = \"30s\"\nmax_delay = \"1m\"\n")
	e.env = append(e.env, crashing)
	if _, stderr, code := e.hermes(20*time.Second, "serve"); code != exitFailure {
		t.Fatalf("first start: exit %d\n%s", code, stderr)
	}
	sock, msgs := fakeNotifySocket(t)
	g := e.spawnGateway("NOTIFY_SOCKET=" + sock)
	g.waitLog("crash loop delay", 10*time.Second)
	// systemd hears why the start takes long, and waits for it.
	wantNotify(t, msgs, "STATUS=crash loop: delaying start by 30s", "EXTEND_TIMEOUT_USEC=35000000")
	start := time.Now()
	l, _ := readStartLedger(e.stateDir)
	if until, ok := l.DelayingUntil(CrashLoopPolicy{Starts: 1, Window: time.Minute, BaseDelay: 30 * time.Second, MaxDelay: time.Minute}, time.Now()); !ok ||
		until.Sub(l.Starts[1].Time) != 30*time.Second {
		t.Errorf("DelayingUntil = %s, %v; want 30s after the 2nd start", until, ok)
	}
	g.signal(syscall.SIGTERM)
	if code := g.wait(3 * time.Second); code != exitOK {
		t.Errorf("TERM during the delay: exit %d, want 0", code)
	}
	t.Logf("TERM during a crash-loop delay: exit after %s", time.Since(start).Round(time.Millisecond))
	if !strings.Contains(g.stderr.String(), `reason="stopped during crash-loop delay"`) {
		t.Errorf("log lacks the exit reason:\n%s", g.stderr.String())
	}
	if strings.Contains(g.stderr.String(), " ready ") {
		t.Errorf("the gateway got ready during its delay:\n%s", g.stderr.String())
	}
}

func TestCrashLoopLedger(t *testing.T) {
	cl := CrashLoopPolicy{Starts: 2, Window: time.Minute, BaseDelay: time.Second, MaxDelay: 5 * time.Second}
	dir := t.TempDir()
	now := time.Now()
	// Three starts, each after a crash: a loop.
	for pid := 100; pid < 103; pid++ {
		if _, err := recordStart(dir, pid, now, false, time.Second); err != nil {
			t.Fatal(err)
		}
		recordExit(dir, pid, exitFailure, "crash", time.Second)
	}
	l, _ := readStartLedger(dir)
	if loop, d := l.CrashLoop(cl, now); !loop || d != time.Second {
		t.Errorf("after 3 crashes: %v %s, want true 1s", loop, d)
	}
	// The same crashes, once the window (1m) has passed over them: no loop.
	if loop, _ := l.CrashLoop(cl, now.Add(2*time.Minute)); loop {
		t.Errorf("3 crashes 2 minutes ago counted as a crash loop (crash_loop.window is 1m)")
	}
	// Starts after planned stops and restarts do not count.
	dir = t.TempDir()
	for pid := 100; pid < 110; pid++ {
		recordStart(dir, pid, now, false, time.Second)
		recordExit(dir, pid, []int{exitOK, exitRestart}[pid%2], "planned", time.Second)
	}
	l, _ = readStartLedger(dir)
	if loop, _ := l.CrashLoop(cl, now); loop {
		t.Errorf("10 planned restarts counted as a crash loop: %+v", l.Starts)
	}
	for k, want := range []time.Duration{1, 2, 4, 5, 5, 5} {
		if got := backoff(cl, k); got != want*time.Second {
			t.Errorf("backoff(k=%d) = %s, want %s", k, got, want*time.Second)
		}
	}
	// Bounded.
	for pid := 0; pid < 2*ledgerKeep; pid++ {
		recordStart(dir, pid, now, false, time.Second)
	}
	if l, _ = readStartLedger(dir); len(l.Starts) != ledgerKeep {
		t.Errorf("ledger holds %d starts, want %d", len(l.Starts), ledgerKeep)
	}
}

// TestRestartEndsCrashLoopDelay: a gateway waiting out a long crash-loop
// delay is seen by status as crash-looping (with its pid and the recent
// exits), and `hermes restart` ends the wait with its ladder and brings a
// ready gateway up at once, instead of starting a second one beside it.
func TestRestartEndsCrashLoopDelay(t *testing.T) {
	e := newTestEnv(t, "[crash_loop]\nstarts = 2\nwindow = \"1m\"\nbase_delay = \"1m\"\nmax_delay = \"5m\"\n"+restartPolicy)
	crashEnv := append(append([]string{}, e.env...), crashing)
	for i := 0; i < 2; i++ {
		cmd := exec.Command(hermesBin, "serve")
		cmd.Env, cmd.Dir = crashEnv, e.dir
		if err := cmd.Run(); err == nil {
			t.Fatal("the crashing gateway exited 0")
		}
	}
	g := e.spawnGateway() // the third start: delayed by a minute
	g.waitLog("crash loop delay", 10*time.Second)

	out, _, code := e.hermes(20*time.Second, "status")
	if code != exitFailure || !strings.Contains(out, "crash-looping (pid "+fmt.Sprint(g.pid())) ||
		!strings.Contains(out, "crash-loop delay until") || !strings.Contains(out, "test fault exit-after-ready") {
		t.Errorf("status during a crash-loop delay = %d:\n%s", code, out)
	}
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
	}
	if gc := g.wait(5 * time.Second); gc != exitRestart {
		t.Errorf("the delayed gateway exit = %d, want %d", gc, exitRestart)
	}
	if !strings.Contains(out, "verdict: crash-looping") || !strings.Contains(out, "sent USR1") {
		t.Errorf("restart output:\n%s", out)
	}
	e.gatewayFromPidFile()
}

// TestRestartAskedStartIsPlanned: after crashes that make a crash loop, the
// gateway `hermes restart` starts is planned: it comes up at once instead of
// waiting out the backoff, and its start does not count.
func TestRestartAskedStartIsPlanned(t *testing.T) {
	e := newTestEnv(t, "[crash_loop]\nstarts = 2\nwindow = \"1m\"\nbase_delay = \"1m\"\nmax_delay = \"5m\"\n"+restartPolicy)
	crashEnv := append(append([]string{}, e.env...), crashing)
	for i := 0; i < 2; i++ {
		cmd := exec.Command(hermesBin, "serve")
		cmd.Env, cmd.Dir = crashEnv, e.dir
		cmd.Run()
	}
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
	}
	e.gatewayFromPidFile()
	l, err := readStartLedger(e.stateDir)
	if err != nil || len(l.Starts) != 3 || !l.Starts[2].Planned || !l.RestartAsked.IsZero() {
		t.Errorf("ledger after the restart: %+v, %v", l, err)
	}
}

// TestCrashLoopDelayHonoursHUP: a policy fixed during a crash-loop delay is
// picked up by HUP (systemctl reload) at once: here the fixed policy allows
// more starts, so the rest of the delay is dropped and the gateway starts
// on the new policy.
func TestCrashLoopDelayHonoursHUP(t *testing.T) {
	const looping = "[crash_loop]\nstarts = 1\nwindow = \"1m\"\nbase_delay = \"30s\"\nmax_delay = \"1m\"\n"
	e := newTestEnv(t, looping)
	e.env = append(e.env, crashing)
	if _, stderr, code := e.hermes(20*time.Second, "serve"); code != exitFailure {
		t.Fatalf("first start: exit %d\n%s", code, stderr)
	}
	e.env = e.env[:len(e.env)-1]
	g := e.spawnGateway()
	g.waitLog("crash loop delay", 10*time.Second)
	e.writePolicy("[crash_loop]\nstarts = 10\nwindow = \"1m\"\nbase_delay = \"30s\"\nmax_delay = \"1m\"\n[echo]\nword_delay = \"1ms\"\n")
	start := time.Now()
	g.signal(syscall.SIGHUP)
	g.waitReady(10 * time.Second)
	t.Logf("ready %s after HUP during a 30s crash-loop delay", time.Since(start).Round(time.Millisecond))
	for _, want := range []string{"action=reload state=\"crash-loop delay\"", "reload ok"} {
		if !strings.Contains(g.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, g.stderr.String())
		}
	}
}
