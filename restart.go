package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// hermes restart and hermes stop: find the gateway and prove it, classify
// it, walk the escalation ladder, then make sure a fresh gateway is up
// (restart) or that nothing brings it back (stop).

const restartUsage = `Bring a fresh gateway up, whatever state the old one is in: serving,
draining, frozen, stopped, crash-looping or not running at all. A serving
gateway hands over to its successor (restart.mode = "handoff": no request is
refused; the binary now at its path starts, so this is also how to upgrade)
or drains first (--mode drain); any other is walked down the escalation
ladder. Exit 0 when a new gateway is ready, 1 when not.

    $ hermes restart
    $ mv hermes.new /usr/local/bin/hermes && hermes restart   # upgrade
    $ hermes restart --mode drain   # drain, exit, start afresh
    $ hermes restart --force        # no drain: streams get their final event now
    $ hermes restart --config /etc/hermes/hermes.toml
`

const stopUsage = `Drain the gateway and stop it for good: under systemd or launchd the
manager is told too, so it does not bring the gateway back.

    $ hermes stop
    $ hermes stop --force
`

// ladderRun is one walk of a ladder against one proven gateway.
type ladderRun struct {
	p       *Policy
	out     io.Writer
	t0      time.Time
	intr    *interrupter
	in      *inspection
	stop    bool    // hermes stop: a planned stop, TERM instead of USR1
	start   bool    // hermes start: nothing to stop, only to bring up
	force   bool    // --force: no long drain
	journal *logger // records the run's events (through a queue)
	logFrom int64   // the gateway log's size when this command began: its tails show only what came after
	// progress, for the summary and for an interrupted run
	rung     int
	rungs    int
	lastSent string
}

func (r *ladderRun) say(format string, args ...any) {
	fmt.Fprintf(r.out, "hermes: [%6s] %s\n", fmtDur(time.Since(r.t0)), fmt.Sprintf(format, args...))
}

// interrupter turns Ctrl-C (SIGINT) and TERM into a readable pipe, so every
// wait (poll on a pidfd, kqueue) can wake on it without a sleep loop.
type interrupter struct {
	r, w *os.File
	ch   chan os.Signal
	done chan struct{} // closed when a signal arrived
}

func newInterrupter() (*interrupter, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	i := &interrupter{r: r, w: w, ch: make(chan os.Signal, 1), done: make(chan struct{})}
	signal.Notify(i.ch, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	go func() {
		if _, ok := <-i.ch; ok {
			close(i.done)
			w.Write([]byte{1})
		}
	}()
	return i, nil
}

func (i *interrupter) fd() int { return int(i.r.Fd()) }

func (i *interrupter) close() {
	signal.Stop(i.ch)
	i.r.Close()
	i.w.Close()
}

// errInterrupted ends a ladder that a person stopped with Ctrl-C.
var errInterrupted = errors.New("interrupted")

// walk sends each rung's signal and waits for the gateway to exit. It
// returns nil once the gateway has exited.
func (r *ladderRun) walk(ladder []Rung) error {
	in := r.in
	h := in.proc
	r.rungs = len(ladder)
	frozen := in.Verdict == verdictFrozen
	if in.Verdict == verdictStopped {
		// Continue it first, then look again: a stopped gateway may be
		// healthy (drain it) or frozen (skip the rungs that need its loop).
		h.signal(syscall.SIGCONT)
		in.classifyLive(true)
		r.say("sent CONT to stopped pid %d; it is now %s", in.PID, in.Verdict)
		frozen = in.Verdict == verdictFrozen
	}
	if r.force && !r.stop && (in.Verdict == verdictServing || in.Verdict == verdictDraining) {
		// --force of a restart: the gateway's loop is asked for a
		// restart now, so its streams' final event says restart and it
		// exits 75. The ladder is what is left if it does not take it.
		if exited, err := r.restartNow(h, ladder[0].Wait); exited || err != nil {
			return err
		}
	}
	for i, rung := range ladder {
		r.rung = i + 1
		name := signalName(rung.Signal)
		if r.stop && rung.Signal == syscall.SIGUSR1 {
			rung.Signal, name = syscall.SIGTERM, "TERM" // a planned stop drains the same way, then exits 0
		}
		if frozen && drains(rung.Signal) {
			r.say("rung %d/%d: skip %s: the loop of pid %d is frozen and cannot act on it", r.rung, r.rungs, name, in.PID)
			continue
		}
		// Journaled before it goes: the gateway's own "signal" line is
		// then always the later of the two, as cause and effect are.
		r.record(evRungSent, "signal", name, "rung", r.rung, "target", in.PID, "wait", rung.Wait.String())
		if err := h.signal(rung.Signal); err != nil {
			if errors.Is(err, unix.ESRCH) || h.state() == 0 {
				r.say("rung %d/%d: pid %d is already gone", r.rung, r.rungs, in.PID)
				return nil
			}
			return fmt.Errorf("sending %s to pid %d: %w", name, in.PID, err)
		}
		if rung.Signal != syscall.SIGKILL {
			h.signal(syscall.SIGCONT) // a stopped process can act on it now
		}
		r.lastSent = fmt.Sprintf("%s sent to pid %d at %s", name, in.PID, fmtDur(time.Since(r.t0)))
		r.say("rung %d/%d: sent %s to pid %d; waiting up to %s for it to exit", r.rung, r.rungs, name, in.PID, rung.Wait)
		sent := time.Now()
		if r.force && !frozen && (rung.Signal == syscall.SIGTERM || rung.Signal == syscall.SIGINT) {
			// --force wants the gateway back now. Once it drains, a second
			// TERM is its "stop now": open streams get their final event
			// (so clients know to reconnect) and it exits within a second,
			// instead of the next rung's KILL cutting them silently.
			if exited, draining, interrupted := r.awaitDraining(h, sent.Add(min(rung.Wait/2, time.Second))); interrupted {
				return errInterrupted
			} else if draining && !exited {
				r.record(evRungSent, "signal", name, "rung", r.rung, "target", in.PID, "again", "stop now")
				h.signal(rung.Signal)
				h.signal(syscall.SIGCONT)
				r.say("rung %d/%d: pid %d is draining; sent %s again: stop now, open streams get their final event", r.rung, r.rungs, in.PID, name)
			}
		}
		exited, interrupted, err := h.wait(rung.Wait-time.Since(sent), r.intr.fd())
		if err != nil {
			return fmt.Errorf("waiting for pid %d: %w", in.PID, err)
		}
		if interrupted {
			return errInterrupted
		}
		if exited {
			r.record(evExitObserved, "target", in.PID, "after_signal", name, "latency_ms", time.Since(sent).Milliseconds())
			if rung.Signal == syscall.SIGKILL {
				// A killed gateway cannot record its own exit: do it for it,
				// so status shows why it went and the crash-loop guard sees it.
				recordExit(r.p.Gateway.StateDir, in.PID, 128+int(syscall.SIGKILL), fmt.Sprintf("killed by hermes %s (%s)", r.what(), in.Verdict), r.p.Journal.ExitFlush)
			}
			r.say("pid %d exited %s after %s", in.PID, fmtDur(time.Since(sent)), name)
			return nil
		}
		r.say("pid %d is still running %s after %s; escalating", in.PID, rung.Wait, name)
	}
	if frozen {
		return withHint(fmt.Errorf("pid %d is frozen and the ladder has no rung that works without its loop (QUIT or KILL)", in.PID),
			"add { signal = \"KILL\", wait = \"5s\" } to restart.ladder, or run: hermes restart --force%s", configFlag(r.p))
	}
	return fmt.Errorf("pid %d survived the whole ladder", in.PID)
}

// restartNow asks the gateway's loop for a restart now on its control
// socket and waits up to wait for it to exit. exited false with a nil
// error: it did not take the request (an older hermes, a loop gone
// silent) or did not exit in time, and the ladder goes on.
func (r *ladderRun) restartNow(h *procHandle, wait time.Duration) (exited bool, err error) {
	in := r.in
	ctl := controlPath(r.p.Gateway.StateDir)
	ans, err := controlRequest(ctl, fmt.Sprintf("restart-now pid %d (hermes restart --force)", os.Getpid()), staleAfter(r.p.Watchdog)+time.Second)
	if err != nil || !strings.HasPrefix(ans, "ok") {
		why := ans
		if err != nil {
			why = err.Error()
		}
		r.say("pid %d did not take a restart now (%s); walking restart.force", in.PID, why)
		return false, nil
	}
	r.record(evRungSent, "request", "restart-now", "rung", 0, "target", in.PID, "wait", wait.String())
	r.lastSent = fmt.Sprintf("restart now asked of pid %d at %s", in.PID, fmtDur(time.Since(r.t0)))
	r.say("asked pid %d to restart now: open streams get their final event; waiting up to %s for it to exit", in.PID, wait)
	sent := time.Now()
	exited, interrupted, err := h.wait(wait, r.intr.fd())
	switch {
	case err != nil:
		return false, fmt.Errorf("waiting for pid %d: %w", in.PID, err)
	case interrupted:
		return false, errInterrupted
	case !exited:
		r.say("pid %d is still running %s after the restart now; walking restart.force", in.PID, wait)
		return false, nil
	}
	r.record(evExitObserved, "target", in.PID, "after_request", "restart-now", "latency_ms", time.Since(sent).Milliseconds())
	r.say("pid %d exited %s after the restart now", in.PID, fmtDur(time.Since(sent)))
	return true, nil
}

// awaitDraining waits until the gateway's loop reports it is draining, it
// exits, or until passes. The pauses between pings are waits on the
// process itself, so an exit ends them at once.
func (r *ladderRun) awaitDraining(h *procHandle, until time.Time) (exited, draining, interrupted bool) {
	ctl := controlPath(r.p.Gateway.StateDir)
	for time.Now().Before(until) {
		if ans, err := controlRequest(ctl, "ping", pingTimeout); err == nil && strings.HasSuffix(ans, string(stateDraining)) {
			return false, true, false
		}
		exited, interrupted, _ := h.wait(20*time.Millisecond, r.intr.fd())
		if exited || interrupted {
			return exited, false, interrupted
		}
	}
	return false, false, false
}

func (r *ladderRun) what() string {
	if r.stop {
		return "stop"
	}
	return "restart"
}

// doneEvent is the event that closes this run in the journal.
func (r *ladderRun) doneEvent() event {
	switch {
	case r.stop:
		return evStopDone
	case r.start:
		return evStartDone
	}
	return evRestartDone
}

// record appends an event of this run to the lifecycle journal.
func (r *ladderRun) record(ev event, kv ...any) { r.journal.record(ev, kv...) }

// lockRestart takes state_dir/restart.lock so two restarts (or stops) never
// interleave their signals. It returns at once with an error naming the
// holder unless wait is set; then it waits for the holder, at most as long
// as a whole restart may take (every rung's wait plus ready_timeout), and a
// Ctrl-C ends the wait: a queued restart that was called off must never
// signal the gateway the first one brought up.
func lockRestart(p *Policy, what string, wait bool, intr *interrupter) (*os.File, error) {
	if err := os.MkdirAll(p.Gateway.StateDir, 0o700); err != nil {
		return nil, err
	}
	path := filepath.Join(p.Gateway.StateDir, "restart.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := flockExclusive(f); err != nil {
		holder, _ := io.ReadAll(f)
		running := lockHolder(string(holder))
		if !wait {
			f.Close()
			return nil, withHint(fmt.Errorf("%s is already in progress", running),
				"wait for it to finish, or queue behind it with: hermes %s --wait%s", what, configFlag(p))
		}
		limit := p.Restart.longest()
		fmt.Printf("hermes: waiting up to %s for the %s in progress to finish; Ctrl-C gives up\n", fmtDur(limit), strings.TrimPrefix(strings.TrimPrefix(running, "a "), "another "))
		locked := make(chan error, 1)
		go func() { locked <- flockWait(f) }()
		t := time.NewTimer(limit)
		defer t.Stop()
		select {
		case err := <-locked:
			if err != nil {
				f.Close()
				return nil, err
			}
		case <-intr.done:
			f.Close() // the waiting flock goes with the process
			return nil, errors.New("interrupted while waiting for the restart in progress: nothing was done")
		case <-t.C:
			f.Close()
			return nil, withHint(fmt.Errorf("%s did not finish within %s", running, fmtDur(limit)),
				"see what it is doing with: hermes status%s", configFlag(p))
		}
	}
	f.Truncate(0)
	f.WriteAt([]byte(fmt.Sprintf("%s pid %d\n", what, os.Getpid())), 0)
	return f, nil
}

var lockHolderRe = lazyRegexp(`^(restart|stop|start)? ?pid (\d+)`)

// lockHolder says what holds restart.lock, from what it wrote there
// ("restart pid 4878"): "a restart (pid 4878)".
func lockHolder(content string) string {
	m := lockHolderRe().FindStringSubmatch(strings.TrimSpace(content))
	switch {
	case m == nil:
		return "a restart, stop or start"
	case m[1] == "":
		return fmt.Sprintf("a restart, stop or start (pid %s)", m[2])
	}
	return fmt.Sprintf("a %s (pid %s)", m[1], m[2])
}

func runRestart(args []string) error { return runLadderCommand("restart", restartUsage, args, false) }
func runStop(args []string) error    { return runLadderCommand("stop", stopUsage, args, true) }

// runLadderCommand is restart and stop: the same flags, the same walk.
func runLadderCommand(name, usage string, args []string, stop bool) error {
	fs := newFlagSet(name, usage)
	tf := addTargetFlags(fs)
	force := fs.Bool("force", false, "walk restart.force (stop now: streams get their final event, no drain) instead of restart.ladder")
	wait := fs.Bool("wait", false, "if another restart or stop is in progress, wait for it instead of exiting")
	var mode *string
	if !stop {
		mode = fs.String("mode", "", "`handoff` or drain: how to restart a serving gateway (default: restart.mode)")
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	t, err := tf.resolve(name, !stop)
	if err != nil {
		return err
	}
	p := t.p
	if mode != nil && *mode != "" {
		if *mode != modeHandoff && *mode != modeDrain {
			return usageError(name, "%s: --mode %q: use handoff or drain", name, *mode)
		}
		p.Restart.Mode = *mode
	}
	err = restartOrStop(t, *force, *wait, stop)
	if err != nil && !stop && !errors.Is(err, errInterrupted) {
		restartFailedAlert(t.p, name, err)
	}
	return err
}

func restartOrStop(t *target, force, wait, stop bool) error {
	p := t.p
	intr, err := newInterrupter()
	if err != nil {
		return err
	}
	defer intr.close()
	what := "restart"
	if stop {
		what = "stop"
	}
	lock, err := lockRestart(p, what, wait, intr)
	if err != nil {
		return err
	}
	defer lock.Close()

	// The run's journal lines go through a queue: the ladder never waits
	// on the journal's lock or the disk. They get exit_flush at the end.
	rec, jq := newRecorder(openJournal(p))
	defer func() { jq.flush(time.Now().Add(p.Journal.ExitFlush)) }()
	r := &ladderRun{p: p, out: os.Stdout, t0: time.Now(), intr: intr, force: force, stop: stop, journal: rec,
		logFrom: fileSize(gatewayLogPath(p.Gateway.StateDir))}
	if stop {
		r.record(evStopRequested, "by_pid", os.Getpid(), "user", currentUser(), "force", force)
	} else {
		r.record(evRestartRequested, "by_pid", os.Getpid(), "user", currentUser(), "force", force)
	}
	mgr := detectManager(p)
	in := inspect(p, mgr)
	defer in.close()
	r.in = in
	r.record(evVerdict, "verdict", in.Verdict, "target", in.PID, "detail", in.Detail, "manager", mgr.Kind)
	r.say("%s of instance %q (policy %s, manager %s)", what, p.Name, policyOrigin(p), mgr.Kind)
	r.say("verdict: %s%s", in.Verdict, map[bool]string{true: " — " + in.Detail, false: ""}[in.Detail != ""])
	if in.Verdict == verdictNotRunning {
		if t.renamed != nil && !stop {
			// Its successor would find the port taken by the gateway the
			// policy no longer names.
			err := fmt.Errorf("not starting %q: %s", p.Name, t.notRunningNote(what))
			r.record(r.doneEvent(), "ok", false, "error", err.Error())
			return err
		}
		if note := t.notRunningNote(what); note != "" {
			r.say("%s", note)
		}
	}

	ladder := p.Restart.Ladder
	if force {
		ladder = p.Restart.Force
	}
	finishCmd := "hermes " + what + map[bool]string{true: " --force", false: ""}[force] + configFlag(p)

	if !stop && !force && p.Restart.Mode == modeHandoff {
		switch err := r.handoff(); {
		case err == nil:
			return nil
		case errors.Is(err, errNoHandoff) && in.proc == nil:
			// Nothing runs: nothing to hand off, nothing to say.
		case errors.Is(err, errNoHandoff):
			r.say("%v; walking restart.ladder instead", err)
		default:
			return err
		}
	}

	// A healthy gateway under a manager stops through the manager, which
	// drains it with the same budget (TimeoutStopSec / ExitTimeOut come
	// from the policy) and will not bring it back.
	managedStop := stop && !force && mgr.Kind != managerNone && (in.Verdict == verdictServing || in.Verdict == verdictDraining || in.Verdict == verdictStarting || in.Verdict == verdictNoFDs)

	if in.proc != nil && in.Verdict != verdictZombie && !managedStop {
		err := r.walk(ladder)
		if errors.Is(err, errInterrupted) {
			return r.interrupted(finishCmd)
		}
		if err != nil {
			r.record(r.doneEvent(), "ok", false, "error", err.Error())
			return err
		}
	}

	if stop {
		return r.finishStop(mgr, managedStop, finishCmd)
	}
	return r.bringBack(mgr, finishCmd)
}

// errNoHandoff: this gateway cannot hand off now, and a drain restart can
// do the job instead.
var errNoHandoff = errors.New("no handoff")

type noHandoffError struct{ why string }

func (e noHandoffError) Error() string   { return "no handoff: " + e.why }
func (e noHandoffError) Is(t error) bool { return t == errNoHandoff }

// handoff asks a serving gateway to hand over to its successor and waits
// until the successor serves and answers ping and /readyz. It does not
// wait for the old gateway's drain. errNoHandoff means the gateway cannot
// hand off now (not serving, PID 1, launchd, an old version); a handoff
// that was tried and failed is an error of its own, and the old gateway
// serves on.
func (r *ladderRun) handoff() error {
	in, p := r.in, r.p
	if in.Verdict != verdictServing {
		return noHandoffError{fmt.Sprintf("a handoff needs a serving gateway, and this one is %s", in.Verdict)}
	}
	if in.controlDeaf {
		// A handoff is asked on the control socket; a drain restart is a
		// signal, which the loop takes without it.
		return noHandoffError{fmt.Sprintf("pid %d serves but its control socket does not answer, and a handoff is asked there", in.PID)}
	}
	t0 := time.Now()
	r.say("asking pid %d to hand over to a successor (restart.mode handoff)", in.PID)
	type answer struct {
		line string
		err  error
	}
	ch := make(chan answer, 1)
	go func() {
		line, err := controlRequest(controlPath(p.Gateway.StateDir), fmt.Sprintf("handoff pid %d (hermes restart)", os.Getpid()), handoffWait(p)+time.Second)
		ch <- answer{line, err}
	}()
	var a answer
	select {
	case a = <-ch:
	case <-r.intr.done:
		r.record(evRestartDone, "ok", false, "error", "interrupted during a handoff")
		return withHint(errors.New("interrupted while the gateway hands over: the handoff goes on without this command, and either completes or leaves the old gateway serving"),
			"check with: hermes status%s", configFlag(p))
	}
	if a.err != nil {
		if strings.HasPrefix(a.err.Error(), "unknown command") {
			return noHandoffError{fmt.Sprintf("pid %d (hermes %s) does not know handoff", in.PID, in.Record.Version)}
		}
		if why, ok := strings.CutPrefix(a.err.Error(), "refused: "); ok {
			if strings.HasPrefix(why, "a handoff is already running") {
				r.record(evRestartDone, "ok", false, "error", a.err.Error())
				return withHint(fmt.Errorf("refused: %s", why), "see when the new gateway serves with: hermes status%s", configFlag(p))
			}
			return noHandoffError{why}
		}
		r.record(evRestartDone, "ok", false, "error", a.err.Error())
		tail := r.in.Manager.logTailSince(p, 20, r.logFrom)
		err := fmt.Errorf("the handoff failed: %s", strings.TrimPrefix(a.err.Error(), "failed: "))
		if tail != "" {
			err = fmt.Errorf("%w\nlast lines of the log:\n%s", err, strings.TrimRight(tail, "\n"))
		}
		return withHint(err, "the old gateway (pid %d) serves on; fix what the log says, or restart with a drain: hermes restart --mode drain%s", in.PID, configFlag(p))
	}
	newPid, _ := strconv.Atoi(strings.TrimPrefix(a.line, "ok "))
	// The successor said it serves; see for ourselves, as after any restart.
	deadline := time.Now().Add(p.Restart.ReadyTimeout)
	for {
		rec, ok := gatewayReady(p, in.Record)
		if ok && rec.PID == newPid {
			r.record(evRestartDone, "ok", true, "new_pid", newPid, "mode", modeHandoff, "total_ms", time.Since(r.t0).Milliseconds())
			sessions := 0
			if in.Gateway != nil {
				sessions = in.Gateway.ActiveSessions
			}
			r.say("handed off: pid %d (%s) -> pid %d serving on %s; %s after asking, %s in all", in.PID, in.Verdict, newPid, rec.Listen,
				fmtDur(time.Since(t0)), fmtDur(time.Since(r.t0)))
			r.say("pid %d finishes its sessions (%d when asked) in the background, within drain.timeout (%s)", in.PID, sessions, p.Drain.Timeout)
			return nil
		}
		if time.Now().After(deadline) {
			r.record(evRestartDone, "ok", false, "error", "the successor said it serves, but does not answer")
			return fmt.Errorf("pid %d said it serves (%q), but its pid file, ping and /readyz do not agree within restart.ready_timeout (%s)", newPid, a.line, p.Restart.ReadyTimeout)
		}
		select {
		case <-r.intr.done:
			return withHint(errors.New("interrupted while checking the new gateway"), "check with: hermes status%s", configFlag(p))
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// interrupted reports where a Ctrl-C stopped the ladder and what to run.
func (r *ladderRun) interrupted(finishCmd string) error {
	state := "is still running"
	if r.in.proc.state() == 0 {
		state = "has exited"
	}
	where := fmt.Sprintf("stopped at rung %d/%d", r.rung, r.rungs)
	if r.rung == 0 {
		where = fmt.Sprintf("stopped before rung 1/%d", r.rungs)
	}
	if r.lastSent != "" {
		where += " (" + r.lastSent + ")"
	}
	r.record(r.doneEvent(), "ok", false, "error", "interrupted", "rung", r.rung)
	msg := fmt.Sprintf("interrupted: %s; the gateway (pid %d) %s", where, r.in.PID, state)
	if state == "has exited" {
		msg += " and NO new gateway was started: the gateway is down"
	} else if r.lastSent != "" {
		msg += " and may still act on the signal it got"
	}
	return withHint(errors.New(msg), "finish the job with: %s", finishCmd)
}

// bringBack makes sure a fresh gateway is up and ready.
func (r *ladderRun) bringBack(mgr managerInfo, finishCmd string) error {
	p := r.p
	old := r.in.Record
	ctx, cancel := context.WithTimeout(context.Background(), p.Restart.ReadyTimeout)
	defer cancel()
	var childExit <-chan int
	t0 := time.Now()
	markRestartAsked(p.Gateway.StateDir, p.Journal.ExitFlush) // a person asked: no crash-loop delay for this start
	switch mgr.Kind {
	case managerNone:
		pid, exited, err := startDetached(p)
		if err != nil {
			r.record(r.doneEvent(), "ok", false, "error", err.Error())
			return err
		}
		childExit = exited
		r.record(evManagerAction, "manager", managerNone, "action", "start detached", "new_pid", pid)
		r.say("started hermes serve (pid %d), log %s", pid, gatewayLogPath(p.Gateway.StateDir))
	default:
		action, err := mgr.start(ctx)
		if err != nil {
			r.record(r.doneEvent(), "ok", false, "error", err.Error())
			return withHint(err, "see why with: %s", logCommand(mgr, p, 50))
		}
		r.record(evManagerAction, "manager", mgr.Kind, "action", action)
		r.say("asked %s to start it: %s", mgr.Kind, action)
	}

	// Wait for a new gateway: another pid or a later start time, answering
	// ping from its loop and 200 on /readyz.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if rec, ok := gatewayReady(p, old); ok {
			r.record(r.doneEvent(), "ok", true, "new_pid", rec.PID, "ready_ms", time.Since(t0).Milliseconds(), "total_ms", time.Since(r.t0).Milliseconds())
			if old != nil && !r.in.Stale {
				r.say("restarted: pid %d (%s) -> pid %d serving on %s; ready %s after start, %s in all",
					old.PID, r.in.Verdict, rec.PID, rec.Listen, fmtDur(time.Since(t0)), fmtDur(time.Since(r.t0)))
				return nil
			}
			was := "nothing was running"
			if r.in.Verdict != verdictNotRunning {
				was += " (" + r.in.Verdict + ")"
			}
			r.say("started: %s; pid %d serving on %s; ready %s after start, %s in all",
				was, rec.PID, rec.Listen, fmtDur(time.Since(t0)), fmtDur(time.Since(r.t0)))
			return nil
		}
		select {
		case code, ok := <-childExit:
			if ok {
				return r.startFailed(mgr, fmt.Errorf("the new gateway exited with code %d before it was ready", code), finishCmd)
			}
			childExit = nil
		case <-ctx.Done():
			return r.startFailed(mgr, fmt.Errorf("no new gateway was ready within restart.ready_timeout (%s)", p.Restart.ReadyTimeout), finishCmd)
		case <-r.intr.done:
			return withHint(errors.New("interrupted while waiting for the new gateway to become ready; it may still come up"),
				"check with: hermes status%s", configFlag(p))
		case <-tick.C:
		}
	}
}

func (r *ladderRun) startFailed(mgr managerInfo, err error, finishCmd string) error {
	r.record(r.doneEvent(), "ok", false, "error", err.Error())
	tail := mgr.logTailSince(r.p, 20, r.logFrom)
	if strings.TrimSpace(tail) == "" {
		// Nothing in its log: a gateway that could not write it (a full
		// or failing state dir) cannot say why itself.
		if why := stateDirWritable(r.p.Gateway.StateDir); why != nil {
			err = fmt.Errorf("%w\nits log is empty, and the state dir %s cannot be written: %v", err, r.p.Gateway.StateDir, why)
			return withHint(err, "free space in %s (df -h %s shows it), or fix what the error says; then run: %s",
				r.p.Gateway.StateDir, shellQuote(r.p.Gateway.StateDir), finishCmd)
		}
	} else {
		err = fmt.Errorf("%w\nlast lines of its log:\n%s", err, strings.TrimRight(tail, "\n"))
	}
	if strings.Contains(tail, "code=78") {
		// 78: the policy, the token lock or the port refuses the start,
		// and the log says which; a new try changes nothing until fixed.
		return withHint(err, "fix what the log says (check the policy with: hermes check-config%s)\nthen run: %s", configFlag(r.p), finishCmd)
	}
	return withHint(err, "see more of the log with: %s\nthen run: %s", logCommand(mgr, r.p, 50), finishCmd)
}

// stateDirWritable writes, syncs and removes a page-sized probe file in the
// state dir: the error says why the gateway cannot write there (no space
// left, a read-only or failing disk), nil when it can.
func stateDirWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".hermes-probe-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(make([]byte, 4096))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// logCommand is the command that shows the last n lines of the
// gateway's log, wherever its manager puts it.
func logCommand(m managerInfo, p *Policy, n int) string {
	if m.Kind == managerSystemd {
		return fmt.Sprintf("journalctl %s-u %s -n %d --no-pager", userFlag(m.Scope != "user"), m.Unit, n)
	}
	return fmt.Sprintf("tail -n %d %s", n, shellQuote(gatewayLogPath(p.Gateway.StateDir)))
}

// finishStop makes sure the manager does not bring the gateway back.
func (r *ladderRun) finishStop(mgr managerInfo, managed bool, finishCmd string) error {
	if mgr.Kind != managerNone {
		budget := r.p.Drain.Budget() + 2*autoWaitMargin
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		defer cancel()
		if managed {
			r.say("asking %s to stop %s (it drains up to %s)", mgr.Kind, mgr.Unit, r.p.Drain.Budget())
		}
		if err := mgr.stop(ctx); err != nil {
			r.record(r.doneEvent(), "ok", false, "error", err.Error())
			return withHint(err, "run: %s", finishCmd)
		}
		r.record(evManagerAction, "manager", mgr.Kind, "action", "stop "+mgr.Unit)
	}
	if r.in.proc == nil && !managed {
		r.say("nothing to stop: %s", r.in.Verdict)
	} else {
		r.say("stopped in %s", fmtDur(time.Since(r.t0)))
	}
	r.record(evStopDone, "ok", true, "total_ms", time.Since(r.t0).Milliseconds())
	return nil
}

// restartFailedAlert tells the operator, out of band, that hermes restart
// (or start) could not bring the gateway back: the incident no log line on
// the host will reach them for. Bounded by alerts.timeout and retries.
func restartFailedAlert(p *Policy, what string, err error) {
	if alertWebhook(p) == "" && p.Alerts.TelegramChat == 0 {
		return
	}
	log, q := newRecorder(openJournal(p))
	host, _ := os.Hostname()
	alertNow(p, log, "restart_failed", fmt.Sprintf("hermes %q on %s: hermes %s could not bring the gateway back: %s", p.Name, host, what, log.secrets.scrub(err.Error())), "error", err)
	q.flush(time.Now().Add(p.Journal.ExitFlush))
}
