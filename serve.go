package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// hermes serve: the process around the gateway. A gateway starts one of two
// ways. Fresh: it takes the instance lock and the token lock, records its
// start, writes its pid file, waits out any crash-loop delay, then listens
// (or takes systemd's socket). As a successor in a handoff: it is handed the
// listening socket and both locks, starts its loop, says ready, and takes
// over (accepts, writes the pid file, owns the control socket) only when its
// predecessor says go. Either way it ends the same way: the exit is logged,
// recorded and flushed within journal.exit_flush, and the locks are let go
// last.

const serveUsage = `Run the gateway in the foreground.

    $ hermes serve
    $ hermes serve --config /etc/hermes/hermes.toml

Signals: TERM or INT drain and exit 0; USR1 drains and exits 75 (restart);
USR2 hands the gateway over to a successor (a restart that refuses
nothing); HUP reloads the policy; a second TERM or INT during a stop's drain
stops now; a TERM during a restart's drain turns it into a stop.
`

// runServe walks a gateway's life in its phases, each a method of
// serveProc below: the policy and the process's plumbing here, then
// takeLocks, publishStart, listen, build and serve. The exit is one deferred
// finish, whichever phase fails.
func runServe(args []string) (err error) {
	// First thing: until Notify runs, TERM/INT/HUP kill us and USR1/USR2
	// are lost.
	pipe, err := installSignals()
	if err != nil {
		return err
	}
	defer pipe.close()
	exe := executablePath() // before anyone can move a new binary into place

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
	if why, ok := keeperWanted(p); ok {
		err := runKeeper(pipe, exe, os.Args[1:], why, log)
		logq.flush(time.Now().Add(p.Journal.ExitFlush))
		return err
	}
	s := &serveProc{pipe: pipe, exe: exe, configPath: *configPath, p: p, log: log, logq: logq, sd: sd, pid: os.Getpid()}
	s.startAlerts()
	// The locks are let go last, after the exit is on record: a successor
	// that takes them finds its predecessor's exit in the ledger.
	defer func() {
		if s.exitReason == "" {
			s.exitReason = "failure"
		}
		s.finish(codeOf(err), s.exitReason, err)
		s.releaseLocks()
	}()
	if err := s.takeLocks(); err != nil {
		return err
	}
	if done, err := s.publishStart(); done || err != nil {
		return err
	}
	writeRunningPolicy(s.p) // what status and stop use if the file breaks later
	if err := s.listen(); err != nil {
		return err
	}
	return s.serve(s.build())
}

// serveProc is one hermes serve process on its way through runServe's
// phases: what each phase hands the next.
type serveProc struct {
	pipe       *selfPipe
	exe        string // the binary's path at start, for a successor
	configPath string // --config, for reloads
	p          *Policy
	log        *logger
	logq       *logQueues
	sd         *sink
	alerts     *alerter
	pid        int

	exitReason string // the exit's reason, for the log and the ledger
	exited     atomic.Bool
	pidSelf    atomic.Pointer[pidRecord] // the pid file this process wrote, removed at exit

	inh           *inheritance // set: a successor in a handoff
	keeper        *keeperLink
	inst, tokLock *os.File // the instance lock and the token lock
	ledger        startLedger
	self          pidRecord
	ln            net.Listener
	lnKind        string
}

// startAlerts makes incidents from here on alerts too (alerts.go): the
// logger hands every event to the alerter, which only queues. And it logs
// the policy's warnings.
func (s *serveProc) startAlerts() {
	s.alerts = newAlerter(s.p, s.log)
	if s.alerts != nil {
		tap := s.alerts.fromEvent
		s.log.tap.Store(&tap)
		s.alerts.sendPending(s.p.Gateway.StateDir)
	}
	for _, w := range s.p.Warnings {
		s.log.warn(evPolicyWarning, "warning", w)
	}
}

// finish logs (and so journals) the exit and records it in the start
// ledger, once, whether runServe's defer or the watchdog calls it; all of
// it, queued lines included, gets journal.exit_flush and no more: a process
// that is exiting on a stalled disk still exits.
func (s *serveProc) finish(code int, reason string, err error) {
	if !s.exited.CompareAndSwap(false, true) {
		return
	}
	p, log := s.p, s.log
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
	// The alerts of an exiting gateway share its exit_flush: what is not
	// out by its first three quarters waits in alerts-pending.jsonl for the
	// next gateway. The last quarter is for the log lines that say how the
	// alerts went, written after them.
	alertsDone := make(chan struct{})
	go func() {
		s.alerts.flush(deadline.Add(-p.Journal.ExitFlush/4), p.Gateway.StateDir)
		close(alertsDone)
	}()
	runWithin(deadline, func() {
		if self := s.pidSelf.Load(); self != nil {
			removeOwnPidFile(pidFilePath(p.Gateway.StateDir), *self)
		}
		recordExit(p.Gateway.StateDir, s.pid, code, reason, time.Until(deadline))
	})
	t := time.NewTimer(time.Until(deadline))
	select {
	case <-alertsDone:
	case <-t.C:
	}
	t.Stop()
	flushAll(deadline, s.logq.stderr, s.logq.journal, s.sd)
}

func (s *serveProc) releaseLocks() {
	if s.tokLock != nil {
		s.tokLock.Close()
	}
	if s.inst != nil {
		s.inst.Close()
	}
}

// fail sets the exit's reason and returns err.
func (s *serveProc) fail(reason string, err error) error {
	s.exitReason = reason
	return err
}

// takeLocks takes the instance lock and the token lock (a successor is
// handed both), and records the start in the ledger.
func (s *serveProc) takeLocks() error {
	p, log := s.p, s.log
	var err error
	if s.inh, err = inheritedFromPredecessor(); err != nil {
		return s.fail("bad handoff", err)
	}
	if s.keeper, err = keeperFromEnv(); err != nil {
		return s.fail("bad keeper", err)
	}
	if err := os.MkdirAll(p.Gateway.StateDir, 0o700); err != nil {
		return s.fail("cannot create the state dir", fmt.Errorf("creating state dir: %w", err))
	}
	token, err := readLockToken(p)
	if err != nil {
		return s.fail("policy error", &exitError{code: exitConfig, err: err})
	}
	if token != "" {
		warnReadable(log, p)
	} else if p.Lock.TokenEnv != "" || p.Lock.TokenFile != "" {
		log.warn(evTokenLockOff, "reason", "lock.token_env and lock.token_file give no token",
			"token_env", p.Lock.TokenEnv, "token_file", p.Lock.TokenFile)
	}

	if inh := s.inh; inh != nil {
		// A successor: the locks are already its own.
		s.inst = inh.instance
		if err := sameFile(s.inst, filepath.Join(p.Gateway.StateDir, "gateway.lock")); err != nil {
			return s.fail("bad handoff", withHint(fmt.Errorf("the handed-over instance is not this policy's (gateway.state_dir changed?): %w", err),
				"a change of gateway.state_dir needs a drain restart: hermes restart --mode drain"))
		}
		if inh.token != nil && token != "" && sameFile(inh.token, tokenLockPath(p, token)) == nil {
			s.tokLock = inh.token
		} else {
			if inh.token != nil {
				inh.token.Close() // the policy names another token now, or none
			}
			if s.tokLock, err = acquireTokenLock(p, token, log); err != nil {
				return s.fail("lock conflict", err)
			}
		}
		s.ledger, err = recordStart(p.Gateway.StateDir, s.pid, time.Now(), true, p.Journal.ExitFlush)
	} else {
		if s.inst, err = lockInstance(p.Gateway.StateDir); err != nil {
			return s.fail("instance already running", &exitError{code: exitConfig, err: err})
		}
		// One token, one gateway: a conflict exits 78 before this gateway
		// counts as a start, and nothing (systemd, launchd, hermes restart)
		// loops on 78.
		if s.tokLock, err = acquireTokenLock(p, token, log); err != nil {
			return s.fail("lock conflict", err)
		}
		s.ledger, err = recordStart(p.Gateway.StateDir, s.pid, time.Now(), false, p.Journal.ExitFlush)
	}
	if err != nil {
		log.warn(evStartLedger, "error", err)
	}
	if x, ok := s.ledger.uncleanFound(s.pid); ok {
		log.errorf(evUncleanExit, "dead_pid", x.PID, "last_seen", x.Time.Local().Format(time.RFC3339), "note", x.Reason)
	}
	return nil
}

// publishStart makes this process's pid record; a fresh gateway writes its
// pid file and waits out any crash-loop delay (done: a signal ended the
// wait, and the process exits with err).
func (s *serveProc) publishStart() (done bool, err error) {
	self, err := selfRecord()
	if err != nil {
		return true, err
	}
	self.Name, self.Policy, self.StateDir = s.p.Name, s.p.Path, s.p.Gateway.StateDir
	s.self = self
	if s.inh != nil {
		return false, nil
	}
	// The pid file goes up before any crash-loop delay, so `hermes status`
	// and `hermes restart` see a live gateway waiting out its backoff (and
	// can end the wait with a signal) rather than "not running". It is
	// written again with the listen address once the gateway listens.
	if err := publishPid(pidFilePath(s.p.Gateway.StateDir), self); err != nil {
		return true, s.fail("cannot write the pid file", err)
	}
	s.pidSelf.Store(&self)
	np, code, stop := crashLoopDelay(s.ledger, s.p, s.configPath, s.pipe, s.sd, s.log)
	if stop {
		s.exitReason = "stopped during crash-loop delay"
		if code == exitOK {
			return true, nil
		}
		return true, s.fail("restart requested during crash-loop delay", &exitError{code: code})
	}
	s.p = np
	return false, nil
}

// build makes the gateway of this process, whole, from what the phases
// before gathered.
func (s *serveProc) build() *gateway {
	return newGateway(gatewayParts{policy: s.p, flagPath: s.configPath, pipe: s.pipe, log: s.log, logq: s.logq, sd: s.sd,
		alerts: s.alerts, exe: s.exe, args: os.Args[1:], inst: s.inst, tokLock: s.tokLock, inh: s.inh, keeper: s.keeper,
		self: s.self, pidSelf: &s.pidSelf, ledger: s.ledger, ln: s.ln, lnKind: s.lnKind})
}

// listen takes the gateway's listening socket: the predecessor's,
// systemd's, or one of its own on gateway.listen; and logs the start.
func (s *serveProc) listen() error {
	p, log, inh := s.p, s.log, s.inh
	switch {
	case inh != nil:
		s.ln, s.lnKind = inh.listener, listenerInherited
		if inh.systemd {
			s.lnKind = listenerSystemdInherited
		}
	default:
		ln, err := systemdListener()
		if err != nil {
			return s.fail("cannot listen", err)
		}
		if ln != nil {
			s.ln, s.lnKind = ln, listenerSystemd
		} else if ln, why, err := listenOn(p, s.pipe, s.sd, log); ln == nil {
			return s.fail(why, err)
		} else {
			s.ln, s.lnKind = ln, listenerBound
		}
	}
	addr := s.ln.Addr().String()
	startKV := []any{"version", version, "name", p.Name, "policy", p.policyLabel(), "listen", addr,
		"socket", s.lnKind, "upstream", upstreamLabel(p), "state_dir", p.Gateway.StateDir}
	if inh != nil {
		startKV = append(startKV, "handoff_from", inh.from)
	}
	log.info(evStart, startKV...)
	if inh != nil && addr != p.Gateway.Listen && s.lnKind == listenerInherited {
		log.warn(evReloadPartial, "keys", "gateway.listen", "note", "the handed-over socket listens on "+addr+"; a new address needs a drain restart (hermes restart --mode drain)")
	}
	return nil
}

// serve runs g: a fresh gateway takes the control socket and the pid file
// and accepts once its loop serves; a successor stands by for its
// predecessor's go. It returns when the loop ends, with the exit.
func (s *serveProc) serve(g *gateway) error {
	p, log := s.p, s.log
	var ready func()
	if s.inh == nil {
		ctl, err := listenControl(g.ctlPath)
		if err != nil {
			g.ln.Close()
			return s.fail("cannot listen on the control socket", err)
		}
		g.ctl.Store(ctl)
		self := s.self
		self.Listen, self.Control = g.ln.Addr().String(), g.ctlPath
		g.self = self
		if err := publishPid(g.pidPath, self); err != nil {
			g.ln.Close()
			ctl.Close()
			return s.fail("cannot write the pid file", err)
		}
		s.pidSelf.Store(&self)
		go g.serveControl(ctl)
		ready = func() {
			// Accept only once the loop has published "serving": a
			// connection already queued on the socket (systemd's, or a
			// client that came during a restart) is taken at once, and
			// its /readyz must not find the gateway still "starting".
			g.serveHTTP()
			g.keeper.current()
			g.sd.put([]byte("READY=1\nSTATUS=serving" + g.mainPID()))
			log.info(evReady, "listen", g.ln.Addr().String(), "pid_file", g.pidPath, "control", g.ctlPath)
		}
	} else {
		// Standing by: the loop runs and would answer /readyz 200, but
		// nothing is accepted before the predecessor says go.
		ready = g.standBy
	}
	g.startWatchdog(func(code int, reason string) {
		if ctl := g.control(); ctl != nil {
			ctl.Close() // status must not find a dead socket
		}
		s.finish(code, reason, nil)
	})

	s.alerts.watchCrashLoopEnd(g.done)
	testFaultBallast()
	g.memoryGuard(g.done)
	g.releaseAfterBursts(g.done)
	if err := g.startTelegram(); err != nil {
		g.ln.Close()
		return s.fail("telegram", err)
	}
	go stampAlive(p.Gateway.StateDir, s.pid, g.done)
	if s.inh == nil {
		g.superviseChildren(p) // a successor takes over its predecessor's at "go"
	}
	testFaultPause("slow-start")
	code, reason := g.loop(ready)
	if !g.ending.CompareAndSwap(0, endLoop) {
		// The watchdog decided first: it is writing its stack dump and
		// will end the process itself.
		select {}
	}
	if g.handedOff.Load() {
		// The streams whose end came while their client was away go to
		// the successor, which has the socket their clients come back to.
		g.streams.waitMoved(time.Now().Add(g.policy.Load().Drain.Grace))
	}
	close(g.done)
	// The supervised upstreams' runs stop after the drain: their sessions
	// are over. A successor that took them over keeps them.
	g.stopChildren(g.handedOff.Load())

	// Every session has ended or was told to; close what is left.
	if ctl := g.control(); ctl != nil {
		ctl.Close()
	}
	g.closeStreams()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if err := g.srv.Shutdown(ctx); err != nil {
		g.srv.Close()
	}
	cancel()
	s.exitReason = reason
	if code == exitOK {
		return nil
	}
	return &exitError{code: code}
}

// sameFile reports an error unless f is the file at path.
func sameFile(f *os.File, path string) error {
	a, err := f.Stat()
	if err != nil {
		return err
	}
	b, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !os.SameFile(a, b) {
		return fmt.Errorf("%s is another file", path)
	}
	return nil
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
	ups := p.upstreams()
	if len(ups) == 0 {
		return "built-in echo"
	}
	var names []string
	for _, u := range ups {
		names = append(names, u.URL)
	}
	return strings.Join(names, ", ")
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
