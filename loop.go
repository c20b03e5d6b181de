package main

import (
	"errors"
	"fmt"
	"syscall"
	"time"
)

// The gateway's loop, as a pure transition: step takes the loop's state
// and one input (a signal, a tick, a timer, the session count, a finished
// reload) and returns the effects to perform, in order. It does no I/O,
// reads no clock (the input carries the time) and touches no channel: the
// driver in gateway.go runs the effects, and every effect it runs is itself
// non-blocking (a queued log line, a timer armed, a context cancelled).
// That is what keeps the loop from ever waiting on a file, a lock, the disk
// or the network, and what lets loop_test.go check every rule as a table.
//
// What a signal means depends on the state (the rules, docs/design.md "Signals"):
//
//	state                      TERM / INT                     USR1            HUP
//	serving                    drain, exit 0                  drain, exit 75  reload
//	draining for a restart     the drain goes on as a stop    ignored         reload
//	draining for a stop        stop now: final events, exit   ignored         reload
//
// `hermes restart --force` asks on the control socket for a restart now
// (inRestartNow): a stop-now whose final events and exit (75) say restart.
//
// Any two different signals commute: TERM then USR1 and USR1 then TERM both
// end in a drain that exits 0 and cuts nothing. That matters because the Go
// runtime hands over signals that arrive together in signal-number order
// (signals.go), so "in the order they came" can only be kept where the
// runtime keeps it; where it cannot, the outcome is the same anyway.
// A reload never sends READY=1 during a drain.
//
// A handoff (USR2, or `hermes restart` in handoff mode, through the control
// socket) is a restart that refuses nothing: the gateway starts its
// successor with the listening socket and the locks, keeps serving while
// the successor starts, tells it to take over once it is ready ("go"), and
// when the successor serves, stops accepting and drains what it has. A
// successor that dies or is not ready within restart.ready_timeout is
// killed, and the gateway serves on as if nothing had happened. TERM or
// INT during a handoff stops it and drains to a stop; USR1 and a second
// handoff are refused while one runs. The successor, for its part, does
// not end its own drain before its predecessor has exited (under systemd's
// KillMode=mixed the predecessor would be killed), and passes a stop-now
// on to it.

// stopNowGrace caps the grace after a second stop signal: "stop now" exits
// within 1 s, whatever drain.grace says.
const stopNowGrace = 800 * time.Millisecond

// extendEvery is how often EXTEND_TIMEOUT_USEC is refreshed during a drain.
const extendEvery = 5 * time.Second

// loopState is everything the gateway's loop owns.
type loopState struct {
	state      gwState
	reason     string // the drain's reason: reasonShutdown or reasonRestart
	exitCode   int
	drainStart time.Time
	cut        bool // the sessions were told to finish now
	stopNow    bool // a second stop signal asked for it
	graceEnd   time.Time
	sessions   int // the session count as of the last input
	policy     *Policy

	reloading   bool // a reload runs off the loop
	reloadAgain bool // a HUP came while it ran: read the file once more

	// foreground: a person may be watching stderr and pressing Ctrl-C.
	// hinted is the drain (its start) they were told a second Ctrl-C
	// stops now, so they are told once per drain.
	foreground bool
	hinted     time.Time

	sdWatchdog       bool // systemd wants WATCHDOG=1 from every tick (and this gateway is the one it watches)
	sdWatchdogWanted bool // systemd has a watchdog for this service
	ignoreStops      bool // test fault ignore-stop-signals

	// The handoff this gateway started, until the successor serves or fails.
	handoff *handoffRun
	// handedOff: the successor serves; this gateway only drains what it has.
	handedOff bool
	successor int
	conns     int       // open client connections (counted once handed off)
	probation time.Time // handed off: stay, ready to fail back, until then
	// noHandoff says why this gateway cannot hand off ("" when it can).
	noHandoff string

	// The successor's side: the gateway that handed off to this one, while
	// it drains; standby until this one was told to take over.
	standby bool
	pred    *predecessor
}

// handoffRun is a handoff in progress.
type handoffRun struct {
	requested time.Time
	by        string
	pid       int  // the successor, once started
	told      bool // the successor was told to take over ("go")
	replies   []int
}

// predecessor is what a successor knows of the gateway it took over from.
type predecessor struct {
	pid      int
	sessions int
	until    time.Time // its drain's deadline
}

type inputKind uint8

const (
	inSignal inputKind = iota + 1
	inTick
	inDrainTimer
	inGraceTimer
	inExtendTimer
	inSessions   // the session count changed while sessions are not admitted
	inReloaded   // a reload finished: policy, or err
	inFatal      // the HTTP server failed
	inRestartNow // hermes restart --force, on the control socket (id: who waits for the answer; by: who asked)

	// Handoff, the predecessor's side.
	inHandoff          // a handoff was asked for (id: who waits for the outcome; 0 none)
	inSpawned          // the successor was started (pid), or could not be (err)
	inSuccessorReady   // it is ready and waits for "go"
	inSuccessorServing // it took over: it accepts, wrote the pid file, owns the control socket
	inSuccessorExited  // it exited (code)
	inSuccessorFailed  // it could not take over after "go" (err): it exits
	inHandoffTimer     // restart.ready_timeout ran out
	inPeerStopNow      // the successor, being stopped, asks for a stop-now
	inPeerStopping     // the successor drains: no failback from here, end the probation
	inProbationTimer   // restart.probation after the handover

	// Handoff, the successor's side.
	inGo              // the predecessor says take over (or is gone, which means the same)
	inCommitted       // this gateway took over (accepts, pid file, control socket)
	inPredecessor     // the predecessor's drain: sessions, until
	inPredecessorGone // it has exited
)

// loopInput is one input. sessions is the admission gate's count when the
// input was taken.
type loopInput struct {
	kind     inputKind
	now      time.Time
	sig      syscall.Signal
	sessions int
	policy   *Policy  // inReloaded: the new policy (nil when err)
	later    []string // inReloaded: keys that take effect only after a restart
	err      error
	conns    int            // open client connections, once handed off
	id       int            // inHandoff: who waits for the outcome
	by       string         // inHandoff: who asked
	pid      int            // the successor's (or predecessor's) pid
	code     int            // inSuccessorExited
	n        int            // inPredecessor: its sessions
	until    time.Time      // inPredecessor
	proc     *successorProc // inSpawned: for the driver, which keeps it
}

type effectKind uint8

const (
	effLog           effectKind = iota + 1
	effNotify                   // an sd_notify message
	effStopAdmitting            // close the admission gate; the driver answers with inSessions
	effCut                      // every session sends its final event (reason) and ends
	effDrainTimer               // arm at `at`; a zero at disarms
	effGraceTimer
	effExtendTimer
	effReload    // read the policy again, off the loop
	effUsePolicy // policy is the running policy from now on
	effExit      // the loop returns code
	effSay       // one line for the person at the terminal (reason), not a log event

	effSpawn        // start the successor, off the loop
	effHandoffTimer // arm at `at`; zero disarms
	effProbationTimer
	effCommit        // tell the successor to take over ("go")
	effHandOver      // the successor serves: stop accepting, close connections as they idle, MAINPID=code
	effKillSuccessor // kill the successor (code: its pid) and take back the pid file and control socket
	effReply         // answer handoff request code: ok (reason "") or the reason it failed
	effCloseIdle     // close connections idle for a while (handed off)
	effPeerSay       // one line to the peer (reason)
	effTakeOver      // (successor) accept, take the pid file and control socket, say serving
	effTakeBack      // the successor died after taking over: accept again, take everything back
)

type effect struct {
	kind   effectKind
	level  string
	ev     event
	kv     []any
	lines  []string // effNotify
	at     time.Time
	reason string // effCut: the final event's reason; effExit: the exit's reason
	policy *Policy
	code   int
}

type effects []effect

func (fx *effects) log(level string, ev event, kv ...any) {
	*fx = append(*fx, effect{kind: effLog, level: level, ev: ev, kv: kv})
}
func (fx *effects) notify(lines ...string) {
	*fx = append(*fx, effect{kind: effNotify, lines: lines})
}
func (fx *effects) add(e effect) { *fx = append(*fx, e) }

func newLoopState(p *Policy, sdWatchdog, ignoreStops bool) *loopState {
	return &loopState{state: stateServing, policy: p, sdWatchdog: sdWatchdog, sdWatchdogWanted: sdWatchdog, ignoreStops: ignoreStops}
}

// step is the loop's transition.
func (s *loopState) step(in loopInput) effects {
	var fx effects
	if s.state == stateStopping {
		return fx // the loop has returned; nothing changes any more
	}
	s.sessions = in.sessions
	if s.handedOff {
		s.conns = in.conns
	}
	switch in.kind {
	case inSignal:
		s.signal(in, &fx)
	case inTick:
		if s.sdWatchdog && !s.standby {
			fx.notify("WATCHDOG=1")
		}
		if s.handedOff {
			fx.add(effect{kind: effCloseIdle})
		}
	case inSessions:
		if s.state == stateDraining {
			if s.drained(in.now) {
				s.exit(in.now, &fx)
			} else if s.handedOff {
				fx.add(effect{kind: effPeerSay, reason: fmt.Sprintf("drain %d %d", in.sessions, s.drainStart.Add(s.policy.Drain.Timeout).UnixMilli())})
			} else {
				fx.notify(s.drainStatus())
			}
		}
	case inDrainTimer:
		if s.state == stateDraining && !s.cut {
			fx.log(levelInfo, evDrainTimeout, "timeout", s.policy.Drain.Timeout, "sessions", in.sessions)
			s.cutSessions(in.now, s.policy.Drain.Grace, &fx)
		}
	case inGraceTimer:
		if s.state == stateDraining && s.cut {
			if s.pred != nil {
				fx.log(levelWarn, evDrainGraceOver, "predecessor", s.pred.pid, "note", "exiting before it: a manager may kill it")
			}
			fx.log(levelWarn, evDrainGraceOver, "sessions", in.sessions)
			s.state = stateStopping
			fx.add(effect{kind: effExit, code: s.exitCode, reason: s.exitReason()})
		}
	case inExtendTimer:
		if s.state == stateDraining && !s.handedOff {
			// Keep systemd's stop timeout ahead of the drain the policy
			// allows, even when a reload lengthened it after the unit was
			// written.
			left := s.policy.Drain.Budget() - in.now.Sub(s.drainStart)
			if s.cut {
				left = s.graceEnd.Sub(in.now)
			}
			fx.notify("EXTEND_TIMEOUT_USEC=" + usec(max(left, 0)+autoWaitMargin))
			fx.add(effect{kind: effExtendTimer, at: in.now.Add(extendEvery)})
		}
	case inReloaded:
		s.reloaded(in, &fx)
	case inFatal:
		// A policy error found while serving (Telegram refused the bot
		// token) is 78 like one found at start: no restart fixes it.
		code := exitFailure
		var ce *configError
		if errors.As(in.err, &ce) {
			code = exitConfig
		}
		fx.log(levelError, evServeFailed, "error", in.err)
		s.exitCode = code
		s.state = stateStopping
		fx.add(effect{kind: effExit, code: code, reason: "serve failed: " + in.err.Error()})
	case inRestartNow:
		s.restartNow(in, &fx)
	case inHandoff:
		s.requestHandoff(in, &fx)
	case inSpawned, inSuccessorReady, inSuccessorServing, inSuccessorExited, inSuccessorFailed, inHandoffTimer:
		s.handoffProgress(in, &fx)
	case inPeerStopNow:
		if s.handedOff {
			s.stopNowNow(in, "successor", &fx)
		}
	case inPeerStopping, inProbationTimer:
		if s.handedOff {
			if in.kind == inPeerStopping {
				s.probation = time.Time{}
			}
			if s.state == stateDraining && s.drained(in.now) {
				s.exit(in.now, &fx)
			}
		}
	case inGo:
		// Only a live loop takes over: one that has returned, or is
		// draining, leaves its predecessor to find it gone.
		if s.standby && s.state == stateServing && s.pred == nil {
			s.pred = &predecessor{pid: in.pid}
			fx.add(effect{kind: effTakeOver, code: in.pid})
		}
	case inCommitted:
		s.standby = false
	case inPredecessor:
		if s.pred != nil {
			s.pred.sessions, s.pred.until = in.n, in.until
		}
	case inPredecessorGone:
		if s.pred != nil {
			fx.log(levelInfo, evPredecessorExited, "predecessor", s.pred.pid)
			s.pred = nil
		}
		if s.state == stateDraining && s.drained(in.now) {
			s.exit(in.now, &fx)
		}
	}
	return fx
}

// drained reports whether a drain may end: no session left and, once
// handed off, no client connection and the probation over; and no
// predecessor still draining (its sessions would die with this gateway
// under KillMode=mixed).
func (s *loopState) drained(now time.Time) bool {
	if s.handedOff && (s.conns > 0 || now.Before(s.probation)) {
		return false
	}
	return s.sessions == 0 && s.pred == nil
}

// requestHandoff starts a handoff, or refuses it and says why.
func (s *loopState) requestHandoff(in loopInput, fx *effects) {
	refuse := func(why string) {
		fx.log(levelWarn, evHandoffRefused, "by", in.by, "reason", why)
		fx.add(effect{kind: effReply, code: in.id, reason: "refused: " + why})
	}
	switch {
	case s.noHandoff != "":
		refuse(s.noHandoff)
		if in.id == 0 && s.state == stateServing {
			// USR2 has no one to tell: do what can be done, a drain
			// restart, and say so.
			fx.log(levelInfo, evSignal, "signal", "USR2", "action", "drain restart instead of a handoff", "reason", s.noHandoff)
			s.startDrain(in, "USR2", reasonRestart, exitRestart, fx)
		}
	case s.handoff != nil:
		refuse(fmt.Sprintf("a handoff is already running (successor pid %d, asked %s ago by %s)",
			s.handoff.pid, fmtDur(in.now.Sub(s.handoff.requested)), s.handoff.by))
	case s.state != stateServing || s.standby:
		refuse(fmt.Sprintf("the gateway is %s", s.state))
	default:
		s.handoff = &handoffRun{requested: in.now, by: in.by}
		if in.id != 0 {
			s.handoff.replies = append(s.handoff.replies, in.id)
		}
		fx.log(levelInfo, evHandoffRequested, "by", in.by, "sessions", in.sessions)
		fx.add(effect{kind: effSpawn})
		fx.add(effect{kind: effHandoffTimer, at: in.now.Add(s.policy.Restart.ReadyTimeout)})
	}
}

// handoffProgress follows the successor from its start to its taking over.
func (s *loopState) handoffProgress(in loopInput, fx *effects) {
	h := s.handoff
	if h == nil && in.kind == inSuccessorExited && s.handedOff && in.pid == s.successor && !s.cut && !s.stopNow {
		// The successor took over and then died: this gateway still has
		// the socket (a spare descriptor) and the locks, so it serves
		// again rather than leave nobody serving.
		fx.log(levelError, evHandoffFailback, "successor", in.pid, "code", in.code, "action", "serving again")
		s.handedOff, s.successor = false, 0
		s.state, s.reason, s.exitCode = stateServing, "", exitOK
		s.sdWatchdog = s.sdWatchdogWanted
		fx.add(effect{kind: effDrainTimer})
		fx.add(effect{kind: effProbationTimer})
		fx.add(effect{kind: effTakeBack})
		return
	}
	if h == nil || (h.pid != 0 && in.pid != 0 && in.pid != h.pid) {
		return // about a successor this gateway already gave up on
	}
	switch in.kind {
	case inSpawned:
		if in.err != nil {
			s.handoffFailed(in, "cannot start the successor: "+in.err.Error(), fx)
			return
		}
		h.pid = in.pid
		fx.log(levelInfo, evHandoffStarted, "successor", in.pid)
	case inSuccessorReady:
		h.told = true
		fx.log(levelInfo, evHandoffReady, "successor", h.pid, "ready_ms", in.now.Sub(h.requested).Milliseconds())
		fx.add(effect{kind: effCommit})
	case inSuccessorServing:
		// The successor accepts. From here this gateway takes no new
		// connection and drains what it has; no request was refused.
		s.handoff = nil
		s.handedOff, s.successor = true, h.pid
		s.state, s.reason, s.exitCode, s.drainStart = stateDraining, reasonRestart, exitOK, in.now
		s.sdWatchdog = false // the successor is the one systemd watches now
		fx.add(effect{kind: effHandoffTimer})
		fx.log(levelInfo, evHandoffDone, "successor", h.pid, "took_ms", in.now.Sub(h.requested).Milliseconds(), "sessions", in.sessions)
		fx.log(levelInfo, evDrainStart, "reason", "handoff", "sessions", in.sessions, "timeout", s.policy.Drain.Timeout, "grace", s.policy.Drain.Grace)
		for _, id := range h.replies {
			fx.add(effect{kind: effReply, code: id})
		}
		fx.add(effect{kind: effDrainTimer, at: in.now.Add(s.policy.Drain.Timeout)})
		if p := s.policy.Restart.Probation; p > 0 {
			s.probation = in.now.Add(p)
			fx.add(effect{kind: effProbationTimer, at: s.probation})
		}
		fx.add(effect{kind: effHandOver, code: h.pid})
	case inSuccessorExited:
		s.handoffFailed(in, fmt.Sprintf("the successor (pid %d) exited with code %d before it took over", in.pid, in.code), fx)
	case inSuccessorFailed:
		s.handoffFailed(in, fmt.Sprintf("the successor (pid %d) could not take over: %v", in.pid, in.err), fx)
	case inHandoffTimer:
		s.handoffFailed(in, fmt.Sprintf("the successor (pid %d) was not ready within restart.ready_timeout (%s)", h.pid, s.policy.Restart.ReadyTimeout), fx)
	}
}

// handoffFailed gives up on the successor: it is killed, and this gateway
// serves on as before.
func (s *loopState) handoffFailed(in loopInput, why string, fx *effects) {
	h := s.handoff
	s.handoff = nil
	fx.log(levelError, evHandoffFailed, "successor", h.pid, "reason", why, "action", "the gateway serves on")
	fx.add(effect{kind: effHandoffTimer})
	if h.pid != 0 {
		fx.add(effect{kind: effKillSuccessor, code: h.pid})
	}
	for _, id := range h.replies {
		fx.add(effect{kind: effReply, code: id, reason: "failed: " + why})
	}
}

func (s *loopState) signal(in loopInput, fx *effects) {
	name := signalName(in.sig)
	if s.ignoreStops && stopsLoop(in.sig) {
		fx.log(levelWarn, evSignal, "signal", name, "action", "ignored (test fault)")
		return
	}
	switch in.sig {
	case syscall.SIGHUP:
		if s.reloading {
			s.reloadAgain = true
			fx.log(levelInfo, evSignal, "signal", name, "action", "reload (after the one running)")
			return
		}
		fx.log(levelInfo, evSignal, "signal", name, "action", "reload")
		if s.state == stateServing {
			fx.notify("RELOADING=1")
		}
		s.reloading = true
		fx.add(effect{kind: effReload})
	case syscall.SIGUSR2:
		fx.log(levelInfo, evSignal, "signal", name, "action", "handoff")
		s.requestHandoff(loopInput{kind: inHandoff, now: in.now, sessions: in.sessions, by: "USR2"}, fx)
	case syscall.SIGUSR1:
		if s.state == stateServing && s.handoff != nil {
			fx.log(levelInfo, evSignal, "signal", name, "action", "ignored", "reason", "a handoff is running")
			return
		}
		if s.state == stateServing {
			s.startDrain(in, name, reasonRestart, exitRestart, fx)
			return
		}
		fx.log(levelInfo, evSignal, "signal", name, "action", "ignored", "state", s.state, "reason", s.reason, "sessions", in.sessions)
	case syscall.SIGTERM, syscall.SIGINT:
		switch {
		case s.state == stateServing:
			if s.handoff != nil {
				s.handoffFailed(in, "stopped by "+name, fx)
			}
			s.startDrain(in, name, reasonShutdown, exitOK, fx)
			s.hintStopNow(in, fx)
		case s.reason == reasonRestart && !s.cut:
			// A stop asked during a restart's drain: the drain goes on,
			// nothing is cut, and it ends in a stop.
			s.reason, s.exitCode = reasonShutdown, exitOK
			fx.log(levelInfo, evSignal, "signal", name, "action", "drain continues as a stop", "sessions", in.sessions)
			if s.handedOff {
				s.probation = time.Time{} // a stop asked: no waiting to fail back
				if s.drained(in.now) {
					s.exit(in.now, fx)
				}
				return
			}
			fx.notify(s.drainStatus())
			s.hintStopNow(in, fx)
		case !s.stopNow:
			s.stopNowNow(in, name, fx)
		default:
			fx.log(levelInfo, evSignal, "signal", name, "action", "none (stopping now)", "sessions", in.sessions)
		}
	default:
		fx.log(levelWarn, evSignal, "signal", name, "action", "none (not handled)")
	}
}

// stopNowNow: a second stop request. Open sessions get their final event
// and the gateway exits within a second.
func (s *loopState) stopNowNow(in loopInput, by string, fx *effects) {
	s.stopNow = true
	s.reason, s.exitCode = reasonShutdown, exitOK
	fx.log(levelInfo, evSignal, "signal", by, "action", "stop-now", "sessions", in.sessions)
	s.cutWithinStopNow(in.now, fx)
}

// cutWithinStopNow cuts the open sessions now, with at most stopNowGrace
// for their final events; if they were cut already, it shortens the grace
// left to that.
func (s *loopState) cutWithinStopNow(now time.Time, fx *effects) {
	grace := min(s.policy.Drain.Grace, stopNowGrace)
	if !s.cut {
		s.cutSessions(now, grace, fx)
	} else if end := now.Add(grace); end.Before(s.graceEnd) {
		s.graceEnd = end
		fx.add(effect{kind: effGraceTimer, at: end})
	}
}

// hintStopNow tells the person who pressed Ctrl-C in a terminal, once per
// drain, that the wait is a drain and how to cut it short: without it a
// long drain looks like a hang.
func (s *loopState) hintStopNow(in loopInput, fx *effects) {
	if !s.foreground || in.sig != syscall.SIGINT || in.sessions == 0 || s.hinted.Equal(s.drainStart) {
		return
	}
	s.hinted = s.drainStart
	left := s.policy.Drain.Budget() - in.now.Sub(s.drainStart)
	sessions := fmt.Sprintf("%d sessions", in.sessions)
	if in.sessions == 1 {
		sessions = "1 session"
	}
	fx.add(effect{kind: effSay, reason: fmt.Sprintf("hermes: draining %s, for up to %s; press Ctrl-C again to stop now (open sessions get their final event)",
		sessions, fmtDur(max(left, 0)))})
}

// restartNow is hermes restart --force, asked on the control socket: the
// stop-now of a second TERM (open sessions get their final event, the
// gateway exits within a second), but a restart: the final event says
// gateway_restart and the exit is 75.
func (s *loopState) restartNow(in loopInput, fx *effects) {
	reply := func(why string) {
		if in.id != 0 {
			fx.add(effect{kind: effReply, code: in.id, reason: why})
		}
	}
	if s.standby || s.handedOff {
		why := "this gateway has not taken over yet"
		if s.handedOff {
			why = fmt.Sprintf("this gateway has handed over to pid %d", s.successor)
		}
		fx.log(levelWarn, evRestartNow, "by", in.by, "action", "refused", "reason", why)
		reply("refused: " + why)
		return
	}
	fx.log(levelInfo, evRestartNow, "by", in.by, "state", s.state, "sessions", in.sessions)
	if s.state == stateServing {
		if s.handoff != nil {
			s.handoffFailed(in, "a restart now was asked by "+in.by, fx)
		}
		s.startDrain(in, "", reasonRestart, exitRestart, fx)
	}
	s.stopNow = true
	s.reason, s.exitCode = reasonRestart, exitRestart
	s.cutWithinStopNow(in.now, fx)
	reply("")
}

// startDrain stops admitting sessions and starts the drain's timers.
// sigName is the signal that asked for it ("" for none).
func (s *loopState) startDrain(in loopInput, sigName, reason string, code int, fx *effects) {
	d := s.policy.Drain
	s.state, s.reason, s.exitCode, s.drainStart = stateDraining, reason, code, in.now
	// The gate closes (and an activated socket is let go) before the drain
	// is announced: whoever sees "drain start" connects to the next gateway.
	fx.add(effect{kind: effStopAdmitting})
	if sigName != "" {
		fx.log(levelInfo, evSignal, "signal", sigName, "action", "drain", "reason", reason, "sessions", in.sessions)
	}
	fx.log(levelInfo, evDrainStart, "reason", reason, "sessions", in.sessions, "timeout", d.Timeout, "grace", d.Grace)
	fx.notify("STOPPING=1", s.drainStatus())
	if s.pred != nil {
		fx.add(effect{kind: effPeerSay, reason: "stopping"}) // no failback to this one
	}
	fx.add(effect{kind: effDrainTimer, at: in.now.Add(d.Timeout)})
	fx.add(effect{kind: effExtendTimer, at: in.now})
}

// cutSessions tells every session to send its final event and end, and
// arms the grace after which the gateway exits regardless.
func (s *loopState) cutSessions(now time.Time, grace time.Duration, fx *effects) {
	s.cut = true
	s.graceEnd = now.Add(grace)
	fx.add(effect{kind: effCut, reason: s.reason})
	if s.pred != nil {
		// The predecessor's sessions get their final event too, rather
		// than a kill when this gateway exits.
		fx.add(effect{kind: effPeerSay, reason: "stop-now"})
	}
	fx.add(effect{kind: effDrainTimer})
	fx.add(effect{kind: effGraceTimer, at: s.graceEnd})
}

// exit ends a drain whose last session has ended.
func (s *loopState) exit(now time.Time, fx *effects) {
	reason := s.reason
	if s.handedOff {
		reason = "handoff"
	}
	fx.log(levelInfo, evDrainEnd, "reason", reason, "duration", now.Sub(s.drainStart))
	s.state = stateStopping
	fx.add(effect{kind: effExit, code: s.exitCode, reason: s.exitReason()})
}

func (s *loopState) exitReason() string {
	if s.handedOff && s.exitCode == exitOK {
		return fmt.Sprintf("handed off to pid %d", s.successor)
	}
	switch s.exitCode {
	case exitOK:
		return "planned stop"
	case exitRestart:
		return "planned restart"
	}
	return "failure"
}

func (s *loopState) drainStatus() string {
	return fmt.Sprintf("STATUS=draining (%s): %d sessions left", s.reason, s.sessions)
}

// reloaded applies a finished reload: a bad file changes nothing.
func (s *loopState) reloaded(in loopInput, fx *effects) {
	s.reloading = false
	if in.err != nil {
		fx.log(levelError, evReloadFailed, "error", in.err, "policy", s.policy.policyLabel(), "action", "keeping the running policy")
	} else {
		if len(in.later) > 0 {
			fx.log(levelWarn, evReloadPartial, "keys", joinKeys(in.later), "note", "changed, but these take effect only after a restart (hermes restart)")
		}
		s.policy = in.policy
		fx.add(effect{kind: effUsePolicy, policy: in.policy})
		fx.log(levelInfo, evReloadOK, "policy", in.policy.policyLabel())
		if s.state == stateDraining && !s.cut {
			// The drain follows the running policy: a reload that
			// lengthened drain.timeout lets the sessions have it.
			fx.add(effect{kind: effDrainTimer, at: s.drainStart.Add(in.policy.Drain.Timeout)})
		}
	}
	if s.state == stateServing {
		fx.notify("READY=1", "STATUS=serving")
	}
	if s.reloadAgain {
		s.reloadAgain, s.reloading = false, true
		fx.add(effect{kind: effReload})
	}
}

func joinKeys(keys []string) string {
	out := ""
	for i, k := range keys {
		if i > 0 {
			out += ","
		}
		out += k
	}
	return out
}
