// The gateway's loop, the one goroutine that owns the gateway's state: it
// waits for the next input (a signal, a timer, a session change, a control
// request), feeds it to the pure transition (loop.go) and carries out the
// effects the transition returns. It never waits on I/O: every effect that
// would is a queue put or a goroutine.

package main

import (
	"fmt"
	"strings"
	"time"
)

// loopTimer is a timer the loop selects on; a nil channel never fires.
type loopTimer struct {
	t *time.Timer
	c <-chan time.Time
}

func (lt *loopTimer) arm(at time.Time) {
	if at.IsZero() {
		if lt.t != nil {
			lt.t.Stop()
		}
		lt.c = nil
		return
	}
	d := time.Until(at)
	if lt.t == nil {
		lt.t = time.NewTimer(d)
	} else {
		lt.t.Reset(d)
	}
	lt.c = lt.t.C
}

// loopTimers are the loop's clocks: the heartbeat tick and one timer per
// deadline the transition may arm.
type loopTimers struct {
	tick                                     *time.Ticker
	drain, grace, extend, handoff, probation loopTimer
}

// arm sets the timer a timer effect names; it reports whether e was one.
func (t *loopTimers) arm(e effect) bool {
	switch e.kind {
	case effDrainTimer:
		t.drain.arm(e.at)
	case effGraceTimer:
		t.grace.arm(e.at)
	case effExtendTimer:
		t.extend.arm(e.at)
	case effHandoffTimer:
		t.handoff.arm(e.at)
	case effProbationTimer:
		t.probation.arm(e.at)
	default:
		return false
	}
	return true
}

// loop is the gateway's own loop. It returns the process's exit code and
// the reason.
func (g *gateway) loop(ready func()) (int, string) {
	p := g.policy.Load()
	s := newLoopState(p, g.sdWD > 0, testFaultSet("ignore-stop-signals"))
	s.noHandoff = g.noHandoff
	s.standby = g.inh != nil
	s.foreground = foreground()
	t := &loopTimers{tick: time.NewTicker(p.Watchdog.Heartbeat)}
	defer t.tick.Stop()

	g.publish(s)
	g.beat(time.Now())
	ready()
	testFault("freeze-after-ready")
	if testFaultSet("exit-after-ready") {
		// A gateway that fails right after start, like a crash, so the
		// crash-loop guard has something to guard against.
		return exitFailure, "test fault exit-after-ready"
	}

	for {
		in, ok := g.next(s, t)
		if !ok {
			continue
		}
		in.now = time.Now()
		in.sessions = g.gate.count()
		in.conns = g.conns.count()
		g.beat(in.now)
		fx := s.step(in)
		if in.kind == inPredecessorGone {
			g.tg.predecessorGone()
		}
		if exit, ok := g.carryOut(s, t, in.now, fx); ok {
			g.publish(s)
			return exit.code, exit.reason
		}
		g.publish(s)
	}
}

// next waits for the loop's next input. It answers a liveness ping itself
// and reports false for it: a ping is not a step.
func (g *gateway) next(s *loopState, t *loopTimers) (loopInput, bool) {
	var in loopInput
	select {
	case sig := <-g.pipe.sigs:
		g.pipe.took(sig)
		in = loopInput{kind: inSignal, sig: sig}
	case <-t.tick.C:
		in.kind = inTick
	case <-t.drain.c:
		t.drain.c = nil
		in.kind = inDrainTimer
	case <-t.grace.c:
		t.grace.c = nil
		in.kind = inGraceTimer
	case <-t.extend.c:
		t.extend.c = nil
		in.kind = inExtendTimer
	case <-t.handoff.c:
		t.handoff.c = nil
		in.kind = inHandoffTimer
	case <-t.probation.c:
		t.probation.c = nil
		in.kind = inProbationTimer
	case <-g.gate.changed:
		in.kind = inSessions
	case r := <-g.reloaded:
		in = r
	case err := <-g.fatal:
		in = loopInput{kind: inFatal, err: err}
	case req := <-g.handoffs:
		in = loopInput{kind: inHandoff, id: g.awaitReply(req.reply), by: req.by}
	case req := <-g.nows:
		in = loopInput{kind: inRestartNow, id: g.awaitReply(req.reply), by: req.by}
	case in = <-g.handoffIn:
		if in.kind == inSpawned && in.err == nil {
			g.succ = in.proc
		}
	case reply := <-g.pings:
		g.beat(time.Now())
		reply <- s.state // buffered: never waits
		return in, false
	}
	return in, true
}

// awaitReply files a control request's reply channel under a new id, which
// the transition's effReply names when the answer is known.
func (g *gateway) awaitReply(ch chan string) int {
	g.nextReply++
	g.replies[g.nextReply] = ch
	return g.nextReply
}

// carryOut runs the effects of one step, in order, with those of the steps
// they cause appended. It returns the exit effect, if one came.
func (g *gateway) carryOut(s *loopState, t *loopTimers, now time.Time, fx []effect) (effect, bool) {
	for i := 0; i < len(fx); i++ {
		e := fx[i]
		if t.arm(e) || g.handoffEffect(e) {
			continue
		}
		switch e.kind {
		case effLog:
			g.log.log(e.level, e.ev, e.kv)
		case effNotify:
			g.sd.put([]byte(strings.Join(e.lines, "\n")))
		case effStopAdmitting:
			n := g.gate.close()
			g.tg.stop() // the long poll is cancelled, not waited out
			g.srv.SetKeepAlivesEnabled(false)
			if g.systemdSocket() {
				// systemd holds the socket: connections queue there
				// for the next gateway instead of getting a 503 here.
				g.stopAccepting()
			}
			fx = append(fx, s.step(loopInput{kind: inSessions, now: now, sessions: n})...)
		case effCut:
			g.cut(&cutCause{reason: e.reason})
		case effReload:
			go g.reload(g.policy.Load())
		case effUsePolicy:
			if e.policy.Watchdog.Heartbeat != g.policy.Load().Watchdog.Heartbeat {
				t.tick.Reset(e.policy.Watchdog.Heartbeat)
			}
			e.policy.Auth.ring.inherit(g.policy.Load().Auth.ring)
			g.policy.Store(e.policy)
			g.log.journal.maxBytes.Store(e.policy.Journal.MaxBytes)
		case effHandOver:
			g.handOver(e.code)
			fx = append(fx, s.step(loopInput{kind: inSessions, now: now, sessions: g.gate.count(), conns: g.conns.count()})...)
		case effReply:
			if ch, ok := g.replies[e.code]; ok {
				delete(g.replies, e.code)
				if e.reason == "" {
					ch <- fmt.Sprintf("ok %d", s.successor)
				} else {
					ch <- "error " + e.reason
				}
			}
		case effCloseIdle:
			g.conns.closeIdle(now, idleCloseAfter)
		case effSay:
			g.log.stderr.put([]byte(e.reason + "\n")) // a queue: never waits
		case effExit:
			return e, true
		}
	}
	return effect{}, false
}

// handoffEffect carries out an effect of the handoff's protocol (starting,
// committing or dropping a successor, taking over from or back from a
// predecessor); it reports whether e was one.
func (g *gateway) handoffEffect(e effect) bool {
	switch e.kind {
	case effSpawn:
		go g.spawn()
	case effCommit:
		// The bot's poller lets go of poll.lock before the
		// successor can take over: one poller at a time.
		g.tg.stop()
		g.succ.peer.say("go")
	case effKillSuccessor:
		g.killSuccessor()
	case effTakeOver:
		go g.commit(e.code)
	case effTakeBack:
		g.takeBack()
		g.tg.resume()
	case effPeerSay:
		// "stop-now" and "stopping" go to the predecessor; the rest
		// to the successor.
		if strings.HasPrefix(e.reason, "stop") {
			if g.inh != nil {
				g.inh.peer.say(e.reason)
			}
		} else if g.succ != nil {
			g.succ.peer.say(e.reason)
		}
	default:
		return false
	}
	return true
}
