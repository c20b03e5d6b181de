package main

import (
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
// What a signal means depends on the state (the rules, README "Signals"):
//
//	state                      TERM / INT                     USR1            HUP
//	serving                    drain, exit 0                  drain, exit 75  reload
//	draining for a restart     the drain goes on as a stop    ignored         reload
//	draining for a stop        stop now: final events, exit   ignored         reload
//
// Any two different signals commute: TERM then USR1 and USR1 then TERM both
// end in a drain that exits 0 and cuts nothing. That matters because the Go
// runtime hands over signals that arrive together in signal-number order
// (signals.go), so "in the order they came" can only be kept where the
// runtime keeps it; where it cannot, the outcome is the same anyway.
// A reload never sends READY=1 during a drain.

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

	sdWatchdog  bool // systemd wants WATCHDOG=1 from every tick
	ignoreStops bool // test fault ignore-stop-signals
}

type inputKind uint8

const (
	inSignal inputKind = iota + 1
	inTick
	inDrainTimer
	inGraceTimer
	inExtendTimer
	inSessions // the session count changed while sessions are not admitted
	inReloaded // a reload finished: policy, or err
	inFatal    // the HTTP server failed
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
	return &loopState{state: stateServing, policy: p, sdWatchdog: sdWatchdog, ignoreStops: ignoreStops}
}

// step is the loop's transition.
func (s *loopState) step(in loopInput) effects {
	var fx effects
	if s.state == stateStopping {
		return fx // the loop has returned; nothing changes any more
	}
	s.sessions = in.sessions
	switch in.kind {
	case inSignal:
		s.signal(in, &fx)
	case inTick:
		if s.sdWatchdog {
			fx.notify("WATCHDOG=1")
		}
	case inSessions:
		if s.state == stateDraining {
			if in.sessions == 0 {
				s.exit(in.now, &fx)
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
			fx.log(levelWarn, evDrainGraceOver, "sessions", in.sessions)
			s.state = stateStopping
			fx.add(effect{kind: effExit, code: s.exitCode, reason: s.exitReason()})
		}
	case inExtendTimer:
		if s.state == stateDraining {
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
		fx.log(levelError, evServeFailed, "error", in.err)
		s.exitCode = exitFailure
		s.state = stateStopping
		fx.add(effect{kind: effExit, code: exitFailure, reason: "serve failed: " + in.err.Error()})
	}
	return fx
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
	case syscall.SIGUSR1:
		if s.state == stateServing {
			s.startDrain(in, name, reasonRestart, exitRestart, fx)
			return
		}
		fx.log(levelInfo, evSignal, "signal", name, "action", "ignored", "state", s.state, "reason", s.reason, "sessions", in.sessions)
	case syscall.SIGTERM, syscall.SIGINT:
		switch {
		case s.state == stateServing:
			s.startDrain(in, name, reasonShutdown, exitOK, fx)
		case s.reason == reasonRestart && !s.cut:
			// A stop asked during a restart's drain: the drain goes on,
			// nothing is cut, and it ends in a stop.
			s.reason, s.exitCode = reasonShutdown, exitOK
			fx.log(levelInfo, evSignal, "signal", name, "action", "drain continues as a stop", "sessions", in.sessions)
			fx.notify(s.drainStatus())
		case !s.stopNow:
			// A second stop request: stop now. Open sessions get their
			// final event and the gateway exits within a second.
			s.stopNow = true
			s.reason, s.exitCode = reasonShutdown, exitOK
			fx.log(levelInfo, evSignal, "signal", name, "action", "stop-now", "sessions", in.sessions)
			grace := min(s.policy.Drain.Grace, stopNowGrace)
			if !s.cut {
				s.cutSessions(in.now, grace, fx)
			} else if end := in.now.Add(grace); end.Before(s.graceEnd) {
				s.graceEnd = end
				fx.add(effect{kind: effGraceTimer, at: end})
			}
		default:
			fx.log(levelInfo, evSignal, "signal", name, "action", "none (stopping now)", "sessions", in.sessions)
		}
	default:
		fx.log(levelWarn, evSignal, "signal", name, "action", "none (not handled)")
	}
}

// startDrain stops admitting sessions and starts the drain's timers.
func (s *loopState) startDrain(in loopInput, sigName, reason string, code int, fx *effects) {
	d := s.policy.Drain
	s.state, s.reason, s.exitCode, s.drainStart = stateDraining, reason, code, in.now
	fx.log(levelInfo, evSignal, "signal", sigName, "action", "drain", "reason", reason, "sessions", in.sessions)
	fx.log(levelInfo, evDrainStart, "reason", reason, "sessions", in.sessions, "timeout", d.Timeout, "grace", d.Grace)
	fx.notify("STOPPING=1", s.drainStatus())
	fx.add(effect{kind: effDrainTimer, at: in.now.Add(d.Timeout)})
	fx.add(effect{kind: effExtendTimer, at: in.now})
	fx.add(effect{kind: effStopAdmitting})
}

// cutSessions tells every session to send its final event and end, and
// arms the grace after which the gateway exits regardless.
func (s *loopState) cutSessions(now time.Time, grace time.Duration, fx *effects) {
	s.cut = true
	s.graceEnd = now.Add(grace)
	fx.add(effect{kind: effCut, reason: s.reason})
	fx.add(effect{kind: effDrainTimer})
	fx.add(effect{kind: effGraceTimer, at: s.graceEnd})
}

// exit ends a drain whose last session has ended.
func (s *loopState) exit(now time.Time, fx *effects) {
	fx.log(levelInfo, evDrainEnd, "reason", s.reason, "duration", now.Sub(s.drainStart))
	s.state = stateStopping
	fx.add(effect{kind: effExit, code: s.exitCode, reason: s.exitReason()})
}

func (s *loopState) exitReason() string {
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
