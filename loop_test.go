package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The loop's rules as tables: no process, no sleep. Each case feeds inputs
// to a fresh loopState and checks what it did.

var t0 = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func testLoopPolicy() *Policy {
	p := defaultPolicy()
	p.Drain = DrainPolicy{Timeout: 20 * time.Second, Grace: 2 * time.Second}
	return p
}

// run feeds inputs and answers effStopAdmitting the way the driver does:
// with the session count at that moment (open). It returns every effect.
func runLoop(s *loopState, open int, ins ...loopInput) effects {
	var all effects
	for _, in := range ins {
		if in.sessions == 0 {
			in.sessions = open
		}
		fx := s.step(in)
		for i := 0; i < len(fx); i++ {
			if fx[i].kind == effStopAdmitting {
				fx = append(fx, s.step(loopInput{kind: inSessions, now: in.now, sessions: open})...)
			}
		}
		all = append(all, fx...)
	}
	return all
}

func sig(s syscall.Signal, at time.Duration) loopInput {
	return loopInput{kind: inSignal, sig: s, now: t0.Add(at)}
}

func (fx effects) has(kind effectKind) bool {
	for _, e := range fx {
		if e.kind == kind {
			return true
		}
	}
	return false
}

func (fx effects) find(kind effectKind) (effect, bool) {
	for _, e := range fx {
		if e.kind == kind {
			return e, true
		}
	}
	return effect{}, false
}

func (fx effects) notified(s string) bool {
	for _, e := range fx {
		if e.kind == effNotify && strings.Contains(strings.Join(e.lines, "\n"), s) {
			return true
		}
	}
	return false
}

func (fx effects) logged(ev event, action string) bool {
	for _, e := range fx {
		if e.kind != effLog || e.ev != ev {
			continue
		}
		if action == "" {
			return true
		}
		for i := 0; i+1 < len(e.kv); i += 2 {
			if e.kv[i] == "action" && e.kv[i+1] == action {
				return true
			}
		}
	}
	return false
}

func TestLoopSignalRules(t *testing.T) {
	for _, tc := range []struct {
		name     string
		ins      []loopInput
		state    gwState
		reason   string
		code     int
		cut      bool
		wantLogs []string // "event/action"
	}{
		{"TERM drains to a stop", []loopInput{sig(syscall.SIGTERM, 0)}, stateDraining, reasonShutdown, exitOK, false, []string{"signal/drain"}},
		{"INT drains to a stop", []loopInput{sig(syscall.SIGINT, 0)}, stateDraining, reasonShutdown, exitOK, false, []string{"signal/drain"}},
		{"USR1 drains to a restart", []loopInput{sig(syscall.SIGUSR1, 0)}, stateDraining, reasonRestart, exitRestart, false, []string{"signal/drain"}},
		{"TERM then USR1: the USR1 is ignored", []loopInput{sig(syscall.SIGTERM, 0), sig(syscall.SIGUSR1, time.Millisecond)},
			stateDraining, reasonShutdown, exitOK, false, []string{"signal/drain", "signal/ignored"}},
		{"USR1 then TERM: the drain goes on as a stop, nothing cut", []loopInput{sig(syscall.SIGUSR1, 0), sig(syscall.SIGTERM, time.Millisecond)},
			stateDraining, reasonShutdown, exitOK, false, []string{"signal/drain", "signal/drain continues as a stop"}},
		{"USR1 USR1: the second is ignored", []loopInput{sig(syscall.SIGUSR1, 0), sig(syscall.SIGUSR1, time.Millisecond)},
			stateDraining, reasonRestart, exitRestart, false, []string{"signal/ignored"}},
		{"TERM TERM: stop now", []loopInput{sig(syscall.SIGTERM, 0), sig(syscall.SIGTERM, time.Second)},
			stateDraining, reasonShutdown, exitOK, true, []string{"signal/stop-now"}},
		{"TERM INT: stop now", []loopInput{sig(syscall.SIGTERM, 0), sig(syscall.SIGINT, time.Second)},
			stateDraining, reasonShutdown, exitOK, true, []string{"signal/stop-now"}},
		{"USR1 TERM TERM: stop now", []loopInput{sig(syscall.SIGUSR1, 0), sig(syscall.SIGTERM, time.Second), sig(syscall.SIGTERM, 2*time.Second)},
			stateDraining, reasonShutdown, exitOK, true, []string{"signal/stop-now"}},
		{"HUP reloads", []loopInput{sig(syscall.SIGHUP, 0)}, stateServing, "", exitOK, false, []string{"signal/reload"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopState(testLoopPolicy(), false, false)
			fx := runLoop(s, 1, tc.ins...)
			if s.state != tc.state || s.reason != tc.reason || s.exitCode != tc.code || s.cut != tc.cut {
				t.Errorf("state %s reason %q code %d cut %v; want %s %q %d %v", s.state, s.reason, s.exitCode, s.cut, tc.state, tc.reason, tc.code, tc.cut)
			}
			for _, w := range tc.wantLogs {
				ev, action, _ := strings.Cut(w, "/")
				if !fx.logged(eventNamed(ev), action) {
					t.Errorf("no %s log with action %q in %+v", ev, action, fx)
				}
			}
			if !tc.cut && fx.has(effCut) {
				t.Errorf("sessions were cut: %+v", fx)
			}
		})
	}
}

// TestLoopSignalsCommute: any two different signals, back to back, end in
// the same place in either order (the Go runtime may hand them over in
// signal-number order; signals.go).
func TestLoopSignalsCommute(t *testing.T) {
	sigs := []syscall.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP}
	outcome := func(a, b syscall.Signal) string {
		s := newLoopState(testLoopPolicy(), false, false)
		fx := runLoop(s, 1, sig(a, 0), sig(b, time.Millisecond))
		return fmt.Sprintf("state=%s reason=%s code=%d cut=%v reload=%v", s.state, s.reason, s.exitCode, s.cut, fx.has(effReload))
	}
	for i, a := range sigs {
		for _, b := range sigs[i+1:] {
			if ab, ba := outcome(a, b), outcome(b, a); ab != ba {
				t.Errorf("%s then %s: %s\n%s then %s: %s", signalName(a), signalName(b), ab, signalName(b), signalName(a), ba)
			}
		}
	}
}

func TestLoopStopNowExitsWithinASecond(t *testing.T) {
	p := testLoopPolicy()
	p.Drain.Grace = 30 * time.Second
	s := newLoopState(p, false, false)
	fx := runLoop(s, 2, sig(syscall.SIGTERM, 0), sig(syscall.SIGTERM, time.Second))
	g, ok := fx.find(effGraceTimer)
	if !ok {
		t.Fatalf("stop-now armed no grace timer: %+v", fx)
	}
	if d := g.at.Sub(t0.Add(time.Second)); d > time.Second {
		t.Errorf("stop-now grace %s, want at most 1s whatever drain.grace says", d)
	}
	if c, _ := fx.find(effCut); c.reason != reasonShutdown {
		t.Errorf("cut with reason %q, want %s", c.reason, reasonShutdown)
	}
	// The grace ends the loop.
	fx = s.step(loopInput{kind: inGraceTimer, now: g.at, sessions: 1})
	if e, ok := fx.find(effExit); !ok || e.code != exitOK {
		t.Errorf("after the grace: %+v, want exit 0", fx)
	}
}

func TestLoopDrainEnds(t *testing.T) {
	t.Run("no sessions: exit at once", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		fx := runLoop(s, 0, sig(syscall.SIGUSR1, 0))
		if e, ok := fx.find(effExit); !ok || e.code != exitRestart || e.reason != "planned restart" {
			t.Errorf("effects %+v, want exit 75 planned restart", fx)
		}
	})
	t.Run("the gate closes before the drain is announced", func(t *testing.T) {
		// Whoever reads "drain start" and connects must reach the next
		// gateway (an activated socket is let go with the gate), never
		// this one's 503.
		s := newLoopState(testLoopPolicy(), false, false)
		fx := s.step(sig(syscall.SIGUSR1, 0))
		for _, e := range fx {
			if e.kind == effStopAdmitting {
				return
			}
			if e.kind == effLog || e.kind == effNotify {
				t.Fatalf("%+v comes before the gate closes: %+v", e, fx)
			}
		}
		t.Fatalf("the drain never closed the gate: %+v", fx)
	})
	t.Run("last session ends the drain", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		runLoop(s, 2, sig(syscall.SIGTERM, 0))
		fx := s.step(loopInput{kind: inSessions, now: t0.Add(time.Second), sessions: 1})
		if fx.has(effExit) || !fx.notified("STATUS=draining (gateway_shutdown): 1 sessions left") {
			t.Errorf("one session left: %+v", fx)
		}
		fx = s.step(loopInput{kind: inSessions, now: t0.Add(2 * time.Second), sessions: 0})
		if e, ok := fx.find(effExit); !ok || e.code != exitOK || !fx.logged(evDrainEnd, "") {
			t.Errorf("no session left: %+v, want drain end and exit 0", fx)
		}
	})
	t.Run("drain timeout cuts, grace exits", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		fx := runLoop(s, 3, sig(syscall.SIGUSR1, 0))
		d, _ := fx.find(effDrainTimer)
		if d.at != t0.Add(20*time.Second) {
			t.Errorf("drain timer at %s, want drain.timeout after the signal", d.at)
		}
		fx = s.step(loopInput{kind: inDrainTimer, now: d.at, sessions: 3})
		c, ok := fx.find(effCut)
		if !ok || c.reason != reasonRestart || !fx.logged(evDrainTimeout, "") {
			t.Fatalf("drain timeout: %+v, want a cut with reason gateway_restart", fx)
		}
		g, _ := fx.find(effGraceTimer)
		if g.at != d.at.Add(2*time.Second) {
			t.Errorf("grace timer at %s, want drain.grace after the timeout", g.at)
		}
		fx = s.step(loopInput{kind: inGraceTimer, now: g.at, sessions: 1})
		if e, ok := fx.find(effExit); !ok || e.code != exitRestart {
			t.Errorf("grace over: %+v, want exit 75", fx)
		}
	})
}

func TestLoopReload(t *testing.T) {
	t.Run("serving: RELOADING, then READY", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		fx := runLoop(s, 0, sig(syscall.SIGHUP, 0))
		if !fx.notified("RELOADING=1") || !fx.has(effReload) {
			t.Errorf("HUP: %+v", fx)
		}
		np := testLoopPolicy()
		fx = s.step(loopInput{kind: inReloaded, now: t0.Add(time.Millisecond), policy: np, later: []string{"lock.scope"}})
		if !fx.notified("READY=1") || !fx.has(effUsePolicy) || !fx.logged(evReloadPartial, "") || s.policy != np {
			t.Errorf("reload done: %+v", fx)
		}
	})
	t.Run("draining: never READY=1, the drain follows the new timeout", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		fx := runLoop(s, 1, sig(syscall.SIGTERM, 0), sig(syscall.SIGHUP, time.Second))
		if fx.notified("RELOADING=1") {
			t.Errorf("RELOADING=1 during a drain: %+v", fx)
		}
		np := testLoopPolicy()
		np.Drain.Timeout = time.Minute
		fx = s.step(loopInput{kind: inReloaded, now: t0.Add(2 * time.Second), policy: np, sessions: 1})
		if fx.notified("READY=1") {
			t.Errorf("READY=1 during a drain: %+v", fx)
		}
		if d, ok := fx.find(effDrainTimer); !ok || d.at != t0.Add(time.Minute) {
			t.Errorf("drain timer %+v, want re-armed at the new timeout from the drain's start", d)
		}
	})
	t.Run("a bad file changes nothing", func(t *testing.T) {
		p := testLoopPolicy()
		s := newLoopState(p, false, false)
		runLoop(s, 0, sig(syscall.SIGHUP, 0))
		fx := s.step(loopInput{kind: inReloaded, now: t0, err: fmt.Errorf("hermes.toml:3: gateway.listen: wrong type")})
		if fx.has(effUsePolicy) || s.policy != p || !fx.logged(evReloadFailed, "keeping the running policy") {
			t.Errorf("bad reload: %+v", fx)
		}
	})
	t.Run("HUP during a reload reads the file once more", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		fx := runLoop(s, 0, sig(syscall.SIGHUP, 0), sig(syscall.SIGHUP, time.Millisecond))
		n := 0
		for _, e := range fx {
			if e.kind == effReload {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%d reloads started for two HUPs during one reload, want 1 now", n)
		}
		fx = s.step(loopInput{kind: inReloaded, now: t0, policy: testLoopPolicy()})
		if !fx.has(effReload) {
			t.Errorf("the queued HUP was dropped: %+v", fx)
		}
	})
}

func TestLoopTickPingsSystemdWatchdog(t *testing.T) {
	s := newLoopState(testLoopPolicy(), true, false)
	if fx := s.step(loopInput{kind: inTick, now: t0}); !fx.notified("WATCHDOG=1") {
		t.Errorf("tick under a systemd watchdog: %+v", fx)
	}
	s = newLoopState(testLoopPolicy(), false, false)
	if fx := s.step(loopInput{kind: inTick, now: t0}); fx.has(effNotify) {
		t.Errorf("tick without a systemd watchdog: %+v", fx)
	}
}

func TestLoopExtendTimeout(t *testing.T) {
	s := newLoopState(testLoopPolicy(), false, false)
	runLoop(s, 1, sig(syscall.SIGTERM, 0))
	fx := s.step(loopInput{kind: inExtendTimer, now: t0.Add(5 * time.Second), sessions: 1})
	// 20s + 2s of drain, 5s of it gone, plus the 5s exit margin.
	if !fx.notified("EXTEND_TIMEOUT_USEC=22000000") {
		t.Errorf("extend: %+v, want EXTEND_TIMEOUT_USEC=22000000", fx)
	}
}

// handedOffState walks a loop through a handoff to the point where the
// successor serves, with open sessions and connections.
func handedOffState(t *testing.T, open int) (*loopState, effects) {
	t.Helper()
	s := newLoopState(testLoopPolicy(), true, false)
	var fx effects
	step := func(in loopInput) {
		in.sessions, in.conns = open, open
		fx = append(fx, s.step(in)...)
	}
	step(loopInput{kind: inHandoff, now: t0, id: 7, by: "test"})
	step(loopInput{kind: inSpawned, now: t0, pid: 42})
	step(loopInput{kind: inSuccessorReady, now: t0, pid: 42})
	step(loopInput{kind: inSuccessorServing, now: t0.Add(time.Millisecond), pid: 42})
	return s, fx
}

func TestLoopHandoff(t *testing.T) {
	t.Run("the successor serves: the gateway stops accepting, drains, answers ok", func(t *testing.T) {
		s, fx := handedOffState(t, 2)
		if !s.handedOff || s.state != stateDraining || s.successor != 42 || s.sdWatchdog {
			t.Errorf("state %+v", s)
		}
		if !fx.has(effSpawn) || !fx.has(effCommit) || !fx.has(effHandOver) || fx.has(effStopAdmitting) || fx.has(effCut) {
			t.Errorf("effects %+v: want spawn, commit (go), hand over; the gate stays open, nothing cut", fx)
		}
		if r, ok := fx.find(effReply); !ok || r.code != 7 || r.reason != "" {
			t.Errorf("reply %+v, want ok to request 7", r)
		}
		// Sessions end, connections close: still there for the probation.
		fx = s.step(loopInput{kind: inSessions, now: t0.Add(time.Second), sessions: 0, conns: 0})
		if fx.has(effExit) {
			t.Errorf("exited during the probation: %+v", fx)
		}
		fx = s.step(loopInput{kind: inProbationTimer, now: t0.Add(6 * time.Second)})
		if e, ok := fx.find(effExit); !ok || e.code != exitOK || e.reason != "handed off to pid 42" {
			t.Errorf("after the probation: %+v, want exit 0 handed off", fx)
		}
	})
	t.Run("open connections hold the exit until they close", func(t *testing.T) {
		s, _ := handedOffState(t, 1)
		fx := s.step(loopInput{kind: inSessions, now: t0.Add(10 * time.Second), sessions: 0, conns: 1})
		if fx.has(effExit) {
			t.Errorf("exited with a connection open: %+v", fx)
		}
		fx = s.step(loopInput{kind: inSessions, now: t0.Add(11 * time.Second), sessions: 0, conns: 0})
		if !fx.has(effExit) {
			t.Errorf("all closed after the probation, no exit: %+v", fx)
		}
	})
	t.Run("the successor dies after taking over: serve again", func(t *testing.T) {
		s, _ := handedOffState(t, 1)
		fx := s.step(loopInput{kind: inSuccessorExited, now: t0.Add(time.Second), pid: 42, code: 2})
		if !fx.has(effTakeBack) || s.state != stateServing || s.handedOff || !s.sdWatchdog {
			t.Errorf("failback: state %+v effects %+v", s, fx)
		}
	})
	t.Run("the successor never gets ready: kill it, serve on", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		s.step(loopInput{kind: inHandoff, now: t0, id: 3})
		s.step(loopInput{kind: inSpawned, now: t0, pid: 42})
		fx := s.step(loopInput{kind: inHandoffTimer, now: t0.Add(30 * time.Second)})
		k, _ := fx.find(effKillSuccessor)
		r, _ := fx.find(effReply)
		if k.code != 42 || !strings.HasPrefix(r.reason, "failed: ") || s.handoff != nil || s.state != stateServing {
			t.Errorf("timeout: kill %+v reply %+v state %s", k, r, s.state)
		}
	})
	t.Run("a second handoff is refused", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		s.step(loopInput{kind: inHandoff, now: t0, id: 1})
		fx := s.step(loopInput{kind: inHandoff, now: t0, id: 2})
		if r, _ := fx.find(effReply); r.code != 2 || !strings.Contains(r.reason, "already running") || fx.has(effSpawn) {
			t.Errorf("second handoff: %+v", fx)
		}
	})
	t.Run("TERM during a handoff: give it up, drain to a stop", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		s.step(loopInput{kind: inHandoff, now: t0, id: 1})
		s.step(loopInput{kind: inSpawned, now: t0, pid: 42})
		fx := runLoop(s, 1, sig(syscall.SIGTERM, time.Second))
		if !fx.has(effKillSuccessor) || s.state != stateDraining || s.reason != reasonShutdown || s.handoff != nil {
			t.Errorf("TERM during handoff: %+v state %s", fx, s.state)
		}
	})
	t.Run("impossible here: refused, and USR2 drains to a restart instead", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		s.noHandoff = "PID 1"
		fx := runLoop(s, 1, sig(syscall.SIGUSR2, 0))
		if !fx.logged(evHandoffRefused, "") || s.state != stateDraining || s.exitCode != exitRestart {
			t.Errorf("USR2 as PID 1: %+v state %s code %d", fx, s.state, s.exitCode)
		}
		s = newLoopState(testLoopPolicy(), false, false)
		s.noHandoff = "PID 1"
		fx = s.step(loopInput{kind: inHandoff, now: t0, id: 5})
		if r, _ := fx.find(effReply); !strings.Contains(r.reason, "PID 1") || s.state != stateServing {
			t.Errorf("control handoff as PID 1: %+v (the restarter falls back itself)", fx)
		}
	})
	t.Run("successor side: waits for its predecessor, passes stop-now on", func(t *testing.T) {
		s := newLoopState(testLoopPolicy(), false, false)
		s.standby = true
		fx := s.step(loopInput{kind: inGo, now: t0, pid: 9})
		if !fx.has(effTakeOver) || s.pred == nil {
			t.Fatalf("go: %+v", fx)
		}
		s.step(loopInput{kind: inCommitted, now: t0, pid: 9})
		fx = runLoop(s, 0, sig(syscall.SIGTERM, time.Second))
		if fx.has(effExit) {
			t.Errorf("exited while its predecessor drains: %+v", fx)
		}
		if e, _ := fx.find(effPeerSay); e.reason != "stopping" {
			t.Errorf("the predecessor was not told: %+v", fx)
		}
		fx = runLoop(s, 0, sig(syscall.SIGTERM, 2*time.Second))
		if e, ok := fx.find(effPeerSay); !ok || e.reason != "stop-now" {
			t.Errorf("stop-now not passed on: %+v", fx)
		}
		fx = s.step(loopInput{kind: inPredecessorGone, now: t0.Add(3 * time.Second), pid: 9})
		if !fx.has(effExit) {
			t.Errorf("predecessor gone, no sessions: %+v, want exit", fx)
		}
	})
}

// TestLoopRestartNow: hermes restart --force's request cuts the sessions
// now, as a second stop signal does, but as a restart: the final event's
// reason is gateway_restart and the exit 75, whatever drain it finds.
func TestLoopRestartNow(t *testing.T) {
	now := func(at time.Duration) loopInput {
		return loopInput{kind: inRestartNow, now: t0.Add(at), id: 7, by: "pid 1 (hermes restart --force)"}
	}
	for _, tc := range []struct {
		name string
		ins  []loopInput
	}{
		{"serving", []loopInput{now(0)}},
		{"draining for a stop", []loopInput{sig(syscall.SIGTERM, 0), now(time.Second)}},
		{"draining for a restart", []loopInput{sig(syscall.SIGUSR1, 0), now(time.Second)}},
		{"stopping now", []loopInput{sig(syscall.SIGTERM, 0), sig(syscall.SIGTERM, time.Second), now(2 * time.Second)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopState(testLoopPolicy(), false, false)
			fx := runLoop(s, 1, tc.ins...)
			if s.state != stateDraining || s.reason != reasonRestart || s.exitCode != exitRestart || !s.cut || !s.stopNow {
				t.Errorf("state %s reason %q code %d cut %v stopNow %v; want a restart cut now", s.state, s.reason, s.exitCode, s.cut, s.stopNow)
			}
			if e, ok := fx.find(effReply); !ok || e.code != 7 || e.reason != "" {
				t.Errorf("no ok reply to request 7: %+v", fx)
			}
			if !fx.logged(evRestartNow, "") {
				t.Errorf("no %q log: %+v", evRestartNow, fx)
			}
			if tc.name == "serving" || tc.name == "draining for a restart" {
				if e, ok := fx.find(effCut); !ok || e.reason != reasonRestart {
					t.Errorf("the cut's final event says %q, want %s", e.reason, reasonRestart)
				}
			}
			// The ladder's TERM that may follow changes nothing now.
			fx = runLoop(s, 1, sig(syscall.SIGTERM, 3*time.Second))
			if s.reason != reasonRestart || s.exitCode != exitRestart {
				t.Errorf("a TERM after the restart now made it %q %d", s.reason, s.exitCode)
			}
		})
	}
	s := newLoopState(testLoopPolicy(), false, false)
	s.standby = true
	fx := runLoop(s, 1, now(0))
	if e, ok := fx.find(effReply); !ok || !strings.HasPrefix(e.reason, "refused: ") || s.state != stateServing {
		t.Errorf("a successor on standby took a restart now: %+v", fx)
	}
}

// TestLoopCtrlCHint: in the foreground, the first Ctrl-C (INT) that
// starts a drain with sessions open says, once per drain, that a second
// one stops now; TERM, no sessions, or no terminal say nothing.
func TestLoopCtrlCHint(t *testing.T) {
	says := func(fx effects) int {
		n := 0
		for _, e := range fx {
			if e.kind == effSay && strings.Contains(e.reason, "press Ctrl-C again to stop now") {
				n++
			}
		}
		return n
	}
	for _, tc := range []struct {
		name       string
		foreground bool
		open       int
		ins        []loopInput
		want       int
	}{
		{"INT drains", true, 3, []loopInput{sig(syscall.SIGINT, 0)}, 1},
		{"INT during a restart's drain", true, 3, []loopInput{sig(syscall.SIGUSR1, 0), sig(syscall.SIGINT, time.Second)}, 1},
		{"INT INT: once, then stop now", true, 3, []loopInput{sig(syscall.SIGINT, 0), sig(syscall.SIGINT, time.Second)}, 1},
		{"INT INT INT", true, 3, []loopInput{sig(syscall.SIGINT, 0), sig(syscall.SIGINT, time.Second), sig(syscall.SIGINT, 2*time.Second)}, 1},
		{"TERM drains", true, 3, []loopInput{sig(syscall.SIGTERM, 0)}, 0},
		{"INT with no sessions", true, 0, []loopInput{sig(syscall.SIGINT, 0)}, 0},
		{"INT under a manager", false, 3, []loopInput{sig(syscall.SIGINT, 0)}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newLoopState(testLoopPolicy(), false, false)
			s.foreground = tc.foreground
			if got := says(runLoop(s, tc.open, tc.ins...)); got != tc.want {
				t.Errorf("said it %d times, want %d", got, tc.want)
			}
		})
	}
}
