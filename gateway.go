package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// The gateway: one goroutine, the loop, owns every piece of state that
// changes: the lifecycle state, the drain, the running policy. Its rules
// are the pure transition in loop.go; this file is the driver that feeds it
// inputs from typed channels and performs its effects, none of which
// blocks. Sessions do not pass through the loop: an atomic admission gate
// admits and counts them (session.go), and the loop reads the count.
// Health, readiness and status are answered without the loop, from what it
// publishes (routes.go), so they tell the truth when it is frozen.

type gwState string

const (
	stateStarting gwState = "starting"
	stateServing  gwState = "serving"
	stateDraining gwState = "draining"
	stateStopping gwState = "stopping" // the loop has returned: closing down
)

// Drain reasons, sent to clients in the final SSE event so they know to
// reconnect, and logged as the exit reason.
const (
	reasonShutdown = "gateway_shutdown"
	reasonRestart  = "gateway_restart"
)

// snapshot is what the loop publishes for readers that must not wait on it.
type snapshot struct {
	State  gwState
	Reason string // drain reason while draining
	Policy *Policy
}

// cutCause is the cancel cause of the sessions the drain ended.
type cutCause struct{ reason string }

func (c *cutCause) Error() string { return "session cut: " + c.reason }

type gateway struct {
	pid      int
	started  time.Time
	flagPath string // --config as given, for reloads
	log      *logger
	logq     *logQueues
	sd       *sink // sd_notify messages
	pipe     *selfPipe
	stateDir string
	listen   string
	sdWD     time.Duration // systemd's watchdog period, 0 if none

	policy atomic.Pointer[Policy]
	snap   atomic.Pointer[snapshot]
	// heartbeat is when the loop last ran (unix nanoseconds): the watchdog,
	// /healthz, /readyz and the control socket read it without the loop.
	heartbeat atomic.Int64
	gate      admission
	cutCtx    context.Context // every request's context descends from it
	cut       context.CancelCauseFunc

	// The loop's other inputs.
	pings    chan chan gwState
	reloaded chan loopInput
	fatal    chan error
	done     chan struct{} // closed when the loop has returned
	// ending decides, once, who ends the process: the loop (1) or the
	// watchdog (2). Whoever loses the race leaves the exit to the winner.
	ending atomic.Int32

	srv    *http.Server
	client *http.Client
}

func newGateway(p *Policy, flagPath string, pipe *selfPipe, log *logger, logq *logQueues, sd *sink) *gateway {
	g := &gateway{
		pid:      os.Getpid(),
		started:  time.Now(),
		flagPath: flagPath,
		log:      log,
		logq:     logq,
		sd:       sd,
		pipe:     pipe,
		stateDir: p.Gateway.StateDir,
		listen:   p.Gateway.Listen,
		sdWD:     watchdogPeriod(),
		pings:    make(chan chan gwState, 16),
		reloaded: make(chan loopInput, 1),
		fatal:    make(chan error, 1),
		done:     make(chan struct{}),
	}
	g.gate.init()
	g.cutCtx, g.cut = context.WithCancelCause(context.Background())
	g.policy.Store(p)
	g.client = &http.Client{Transport: newUpstreamTransport(), CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	g.snap.Store(&snapshot{State: stateStarting, Policy: p})
	g.beat(time.Now())
	return g
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (g *gateway) beat(now time.Time) { g.heartbeat.Store(now.UnixNano()) }

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

// loop is the gateway's own loop. It returns the process's exit code and
// the reason.
func (g *gateway) loop(ready func()) (int, string) {
	p := g.policy.Load()
	s := newLoopState(p, g.sdWD > 0, testFaultSet("ignore-stop-signals"))
	tick := time.NewTicker(p.Watchdog.Heartbeat)
	defer tick.Stop()
	var drainT, graceT, extendT loopTimer

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
		var in loopInput
		select {
		case sig := <-g.pipe.sigs:
			g.pipe.took(sig)
			in = loopInput{kind: inSignal, sig: sig}
		case <-tick.C:
			in.kind = inTick
		case <-drainT.c:
			drainT.c = nil
			in.kind = inDrainTimer
		case <-graceT.c:
			graceT.c = nil
			in.kind = inGraceTimer
		case <-extendT.c:
			extendT.c = nil
			in.kind = inExtendTimer
		case <-g.gate.changed:
			in.kind = inSessions
		case r := <-g.reloaded:
			in = r
		case err := <-g.fatal:
			in = loopInput{kind: inFatal, err: err}
		case reply := <-g.pings:
			g.beat(time.Now())
			reply <- s.state // buffered: never waits
			continue
		}
		in.now = time.Now()
		in.sessions = g.gate.count()
		g.beat(in.now)
		fx := s.step(in)
		for i := 0; i < len(fx); i++ {
			e := fx[i]
			switch e.kind {
			case effLog:
				g.log.log(e.level, e.ev, e.kv)
			case effNotify:
				g.sd.put([]byte(strings.Join(e.lines, "\n")))
			case effStopAdmitting:
				n := g.gate.close()
				g.srv.SetKeepAlivesEnabled(false)
				fx = append(fx, s.step(loopInput{kind: inSessions, now: in.now, sessions: n})...)
			case effCut:
				g.cut(&cutCause{reason: e.reason})
			case effDrainTimer:
				drainT.arm(e.at)
			case effGraceTimer:
				graceT.arm(e.at)
			case effExtendTimer:
				extendT.arm(e.at)
			case effReload:
				go g.reload(g.policy.Load())
			case effUsePolicy:
				if e.policy.Watchdog.Heartbeat != g.policy.Load().Watchdog.Heartbeat {
					tick.Reset(e.policy.Watchdog.Heartbeat)
				}
				g.policy.Store(e.policy)
				g.log.journal.maxBytes.Store(e.policy.Journal.MaxBytes)
			case effExit:
				g.publish(s)
				return e.code, e.reason
			}
		}
		g.publish(s)
	}
}

// publish stores what readers see without the loop, when it changed.
func (g *gateway) publish(s *loopState) {
	old := g.snap.Load()
	if old.State == s.state && old.Reason == s.reason && old.Policy == s.policy {
		return
	}
	g.snap.Store(&snapshot{State: s.state, Reason: s.reason, Policy: s.policy})
}

// reload reads the policy again, off the loop, and hands the result to it.
// What was bound at start (the listen address, the state dir, the name, the
// token lock) keeps its running value until a restart; the loop says so.
func (g *gateway) reload(old *Policy) {
	in := loopInput{kind: inReloaded}
	p, err := loadPolicy(g.flagPath)
	if err != nil {
		in.err = err
	} else {
		in.later = keepBound(old, p)
		in.policy = p
	}
	select {
	case g.reloaded <- in:
	case <-g.done:
	}
}

// keepBound puts back into p the values of old that a running gateway
// cannot change, and names the keys that differed.
func keepBound(old, p *Policy) []string {
	var later []string
	if p.Gateway.Listen != old.Gateway.Listen {
		later = append(later, "gateway.listen")
		p.Gateway.Listen = old.Gateway.Listen
	}
	if p.Gateway.StateDir != old.Gateway.StateDir {
		later = append(later, "gateway.state_dir")
		p.Gateway.StateDir, p.Gateway.StateDirSet = old.Gateway.StateDir, old.Gateway.StateDirSet
	}
	if p.Name != old.Name {
		later = append(later, "name")
		p.Name = old.Name
	}
	if p.Gateway.UpstreamKeyEnv != old.Gateway.UpstreamKeyEnv {
		// The key is read from the environment, which a running process
		// cannot be given anew.
		later = append(later, "gateway.upstream_key_env")
		p.Gateway.UpstreamKeyEnv = old.Gateway.UpstreamKeyEnv
	}
	if p.Lock != old.Lock {
		for _, k := range []struct {
			name string
			a, b string
		}{
			{"lock.token_env", old.Lock.TokenEnv, p.Lock.TokenEnv},
			{"lock.token_file", old.Lock.TokenFile, p.Lock.TokenFile},
			{"lock.scope", old.Lock.Scope, p.Lock.Scope},
			{"lock.lock_dir", old.Lock.Dir, p.Lock.Dir},
		} {
			if k.a != k.b {
				later = append(later, k.name)
			}
		}
		p.Lock = old.Lock
	}
	return later
}

const serveUsage = `Run the gateway in the foreground.

    $ hermes serve
    $ hermes serve --config /etc/hermes/hermes.toml

Signals: TERM or INT drain and exit 0; USR1 drains and exits 75 (restart);
HUP reloads the policy; a second TERM or INT during a stop's drain stops
now; a TERM during a restart's drain turns it into a stop.
`

func runServe(args []string) (err error) {
	// First thing: until Notify runs, TERM/INT/HUP kill us and USR1 is lost.
	pipe, err := installSignals()
	if err != nil {
		return err
	}
	defer pipe.close()

	fs := newFlagSet("serve", serveUsage)
	configPath := fs.String("config", "", "policy `FILE` (default: see 'hermes help')")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	p, err := loadPolicy(*configPath)
	if err != nil {
		newLogger(os.Stderr).errorf(evExit, "code", exitConfig, "reason", "policy error", "error", err)
		return &exitError{code: exitConfig, err: err}
	}
	// From here on every lifecycle line is a journal line too, and lines
	// leave through queues: nothing below waits on stderr or the disk but
	// the start itself (the ledger and the pid file, before ready).
	log, logq := newAsyncLogger(os.Stderr, openJournal(p))
	sd := newNotifySink(newNotifier())
	for _, w := range p.Warnings {
		log.warn(evPolicyWarning, "warning", w)
	}

	// The exit is logged (and so journaled) and recorded in the start
	// ledger once, by the defer below or by the watchdog, and all of it,
	// queued lines included, gets journal.exit_flush and no more: a process
	// that is exiting on a stalled disk still exits.
	pid := os.Getpid()
	exitReason := ""
	var pidSelf *pidRecord
	var exited atomic.Bool
	finish := func(code int, reason string, err error) {
		if !exited.CompareAndSwap(false, true) {
			return
		}
		kv := []any{"code", code, "reason", reason}
		var ee *exitError
		if err != nil && !(errors.As(err, &ee) && ee.err == nil) {
			kv = append(kv, "error", err)
		}
		if code == exitOK || code == exitRestart {
			log.info(evExit, kv...)
		} else {
			log.errorf(evExit, kv...)
		}
		deadline := time.Now().Add(p.Journal.ExitFlush)
		runWithin(deadline, func() {
			if pidSelf != nil {
				removeOwnPidFile(pidFilePath(p.Gateway.StateDir), *pidSelf)
			}
			recordExit(p.Gateway.StateDir, pid, code, reason)
		})
		flushAll(deadline, logq.stderr, logq.journal, sd)
	}
	// The locks are let go last, after the exit is on record: a successor
	// that takes them finds its predecessor's exit in the ledger.
	var inst, tokLock *os.File
	defer func() {
		if exitReason == "" {
			exitReason = "failure"
		}
		finish(codeOf(err), exitReason, err)
		if tokLock != nil {
			tokLock.Close()
		}
		if inst != nil {
			inst.Close()
		}
	}()

	if err := os.MkdirAll(p.Gateway.StateDir, 0o700); err != nil {
		exitReason = "cannot create the state dir"
		return fmt.Errorf("creating state dir: %w", err)
	}
	inst, err = lockInstance(p.Gateway.StateDir)
	if err != nil {
		exitReason = "instance already running"
		return &exitError{code: exitConfig, err: err}
	}

	// One token, one gateway: a conflict exits 78 before this gateway counts
	// as a start, and nothing (systemd, launchd, hermes restart) loops on 78.
	token, err := readLockToken(p)
	if err != nil {
		exitReason = "policy error"
		return &exitError{code: exitConfig, err: err}
	}
	if token != "" {
		warnReadable(log, p)
	} else if p.Lock.TokenEnv != "" || p.Lock.TokenFile != "" {
		log.warn(evTokenLockOff, "reason", "lock.token_env and lock.token_file give no token",
			"token_env", p.Lock.TokenEnv, "token_file", p.Lock.TokenFile)
	}
	tokLock, err = acquireTokenLock(p, token, log)
	if err != nil {
		exitReason = "lock conflict"
		return err
	}

	// Every start goes into the ledger the crash-loop guard reads.
	ledger, lerr := recordStart(p.Gateway.StateDir, pid, time.Now())
	if lerr != nil {
		log.warn(evStartLedger, "error", lerr)
	}

	// The pid file goes up before any crash-loop delay, so `hermes status`
	// and `hermes restart` see a live gateway waiting out its backoff (and
	// can end the wait with a signal) rather than "not running". It is
	// written again with the listen address once the gateway listens.
	self, err := selfRecord()
	if err != nil {
		return err
	}
	self.Name, self.Policy = p.Name, p.Path
	pidPath := pidFilePath(p.Gateway.StateDir)
	if err := writePidFile(pidPath, self); err != nil {
		exitReason = "cannot write the pid file"
		return err
	}
	pidSelf = &self

	np, code, stop := crashLoopDelay(ledger, p, *configPath, pipe, sd, log)
	if stop {
		exitReason = "stopped during crash-loop delay"
		if code == exitOK {
			return nil
		}
		exitReason = "restart requested during crash-loop delay"
		return &exitError{code: code}
	}
	p = np

	g := newGateway(p, *configPath, pipe, log, logq, sd)
	log.info(evStart, "version", version, "name", p.Name, "policy", p.policyLabel(), "listen", p.Gateway.Listen,
		"upstream", upstreamLabel(p), "state_dir", p.Gateway.StateDir)

	ln, err := net.Listen("tcp", p.Gateway.Listen)
	if err != nil {
		exitReason = "cannot listen"
		return fmt.Errorf("listening on %s: %w", p.Gateway.Listen, err)
	}
	g.srv = &http.Server{
		Handler:           g,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return g.cutCtx },
	}

	ctlPath := controlPath(p.Gateway.StateDir)
	ctl, err := listenControl(ctlPath)
	if err != nil {
		ln.Close()
		exitReason = "cannot listen on the control socket"
		return err
	}
	self.Listen, self.Control = ln.Addr().String(), ctlPath
	if err := writePidFile(pidPath, self); err != nil {
		ln.Close()
		ctl.Close()
		exitReason = "cannot write the pid file"
		return err
	}

	go func() {
		if err := g.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			select {
			case g.fatal <- fmt.Errorf("http server: %w", err):
			default:
			}
		}
	}()
	go g.serveControl(ctl)
	g.startWatchdog(func(code int, reason string) {
		ctl.Close() // unlinks the socket: status must not find a dead one
		finish(code, reason, nil)
	})

	code, reason := g.loop(func() {
		g.sd.put([]byte(fmt.Sprintf("READY=1\nSTATUS=serving\nMAINPID=%d", g.pid)))
		log.info(evReady, "listen", ln.Addr().String(), "pid_file", pidPath, "control", ctlPath)
	})
	if !g.ending.CompareAndSwap(0, endLoop) {
		// The watchdog decided first: it is writing its stack dump and
		// will end the process itself.
		select {}
	}
	close(g.done)

	// Every session has ended or was told to; close what is left.
	ctl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if err := g.srv.Shutdown(ctx); err != nil {
		g.srv.Close()
	}
	cancel()
	exitReason = reason
	if code == exitOK {
		return nil
	}
	return &exitError{code: code}
}

// Who ends the process (gateway.ending).
const (
	endLoop     = 1
	endWatchdog = 2
)

// codeOf is the exit code err will end the process with (see exitCode).
func codeOf(err error) int {
	var ee *exitError
	var ce *configError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		return exitConfig
	}
	return exitFailure
}

func upstreamLabel(p *Policy) string {
	if p.Gateway.Upstream == "" {
		return "built-in echo"
	}
	return p.Gateway.Upstream
}

// lockInstance holds state_dir/gateway.lock for the process's life, so two
// gateways of one instance never share a pid file and control socket. The
// kernel drops the flock when the process dies: it cannot go stale.
func lockInstance(stateDir string) (*os.File, error) {
	path := filepath.Join(stateDir, "gateway.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := flockExclusive(f); err != nil {
		f.Close()
		holder := "another process"
		if rec, rerr := readPidFile(pidFilePath(stateDir)); rerr == nil {
			holder = fmt.Sprintf("pid %d (policy %s)", rec.PID, orDefault(rec.Policy, "built-in defaults"))
		}
		return nil, withHint(fmt.Errorf("another gateway already runs with state dir %s: %s", stateDir, holder),
			"stop it first with 'hermes stop', or give this one another name in its policy")
	}
	return f, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
