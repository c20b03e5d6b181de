package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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
	// Incidents from here on are alerts too (alerts.go): the logger hands
	// every event to the alerter, which only queues.
	alerts := newAlerter(p, log)
	if alerts != nil {
		tap := alerts.fromEvent
		log.tap.Store(&tap)
		alerts.sendPending(p.Gateway.StateDir)
	}
	for _, w := range p.Warnings {
		log.warn(evPolicyWarning, "warning", w)
	}

	// The exit is logged (and so journaled) and recorded in the start
	// ledger once, by the defer below or by the watchdog, and all of it,
	// queued lines included, gets journal.exit_flush and no more: a process
	// that is exiting on a stalled disk still exits.
	pid := os.Getpid()
	exitReason := ""
	var pidSelf atomic.Pointer[pidRecord]
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
		// The alerts of an exiting gateway share its exit_flush: what is
		// not out by its first three quarters waits in alerts-pending.jsonl
		// for the next gateway. The last quarter is for the log lines that
		// say how the alerts went, written after them.
		alertsDone := make(chan struct{})
		go func() {
			alerts.flush(deadline.Add(-p.Journal.ExitFlush/4), p.Gateway.StateDir)
			close(alertsDone)
		}()
		runWithin(deadline, func() {
			if self := pidSelf.Load(); self != nil {
				removeOwnPidFile(pidFilePath(p.Gateway.StateDir), *self)
			}
			recordExit(p.Gateway.StateDir, pid, code, reason, time.Until(deadline))
		})
		t := time.NewTimer(time.Until(deadline))
		select {
		case <-alertsDone:
		case <-t.C:
		}
		t.Stop()
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

	inh, err := inheritedFromPredecessor()
	if err != nil {
		exitReason = "bad handoff"
		return err
	}
	keeper, err := keeperFromEnv()
	if err != nil {
		exitReason = "bad keeper"
		return err
	}
	if err := os.MkdirAll(p.Gateway.StateDir, 0o700); err != nil {
		exitReason = "cannot create the state dir"
		return fmt.Errorf("creating state dir: %w", err)
	}
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

	var ledger startLedger
	if inh != nil {
		// A successor: the locks are already its own.
		inst = inh.instance
		if err := sameFile(inst, filepath.Join(p.Gateway.StateDir, "gateway.lock")); err != nil {
			exitReason = "bad handoff"
			return withHint(fmt.Errorf("the handed-over instance is not this policy's (gateway.state_dir changed?): %w", err),
				"a change of gateway.state_dir needs a drain restart: hermes restart --mode drain")
		}
		if inh.token != nil && token != "" && sameFile(inh.token, tokenLockPath(p, token)) == nil {
			tokLock = inh.token
		} else {
			if inh.token != nil {
				inh.token.Close() // the policy names another token now, or none
			}
			if tokLock, err = acquireTokenLock(p, token, log); err != nil {
				exitReason = "lock conflict"
				return err
			}
		}
		ledger, err = recordStart(p.Gateway.StateDir, pid, time.Now(), true, p.Journal.ExitFlush)
	} else {
		if inst, err = lockInstance(p.Gateway.StateDir); err != nil {
			exitReason = "instance already running"
			return &exitError{code: exitConfig, err: err}
		}
		// One token, one gateway: a conflict exits 78 before this gateway
		// counts as a start, and nothing (systemd, launchd, hermes restart)
		// loops on 78.
		if tokLock, err = acquireTokenLock(p, token, log); err != nil {
			exitReason = "lock conflict"
			return err
		}
		ledger, err = recordStart(p.Gateway.StateDir, pid, time.Now(), false, p.Journal.ExitFlush)
	}
	if err != nil {
		log.warn(evStartLedger, "error", err)
	}
	if x, ok := ledger.uncleanFound(pid); ok {
		log.errorf(evUncleanExit, "dead_pid", x.PID, "last_seen", x.Time.Local().Format(time.RFC3339), "note", x.Reason)
	}

	self, err := selfRecord()
	if err != nil {
		return err
	}
	self.Name, self.Policy, self.StateDir = p.Name, p.Path, p.Gateway.StateDir
	pidPath := pidFilePath(p.Gateway.StateDir)
	ctlPath := controlPath(p.Gateway.StateDir)
	if inh == nil {
		// The pid file goes up before any crash-loop delay, so `hermes
		// status` and `hermes restart` see a live gateway waiting out its
		// backoff (and can end the wait with a signal) rather than "not
		// running". It is written again with the listen address once the
		// gateway listens.
		if err := publishPid(pidPath, self); err != nil {
			exitReason = "cannot write the pid file"
			return err
		}
		pidSelf.Store(&self)
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
	}

	writeRunningPolicy(p) // what status and stop use if the file breaks later
	g := newGateway(p, *configPath, pipe, log, logq, sd)
	g.mx.noteStart(ledger, p, pid)
	g.exe, g.args, g.inst, g.tokLock, g.inh, g.keeper = exe, os.Args[1:], inst, tokLock, inh, keeper
	g.self, g.pidSelf, g.ctlPath, g.pidPath = self, &pidSelf, ctlPath, pidPath
	g.noHandoff = handoffPossible()

	switch {
	case inh != nil:
		g.ln, g.lnKind = inh.listener, listenerInherited
		if inh.systemd {
			g.lnKind = listenerSystemdInherited
		}
	default:
		ln, err := systemdListener()
		if err != nil {
			exitReason = "cannot listen"
			return err
		}
		if ln != nil {
			g.ln, g.lnKind = ln, listenerSystemd
		} else if ln, why, err := listenOn(p, pipe, sd, log); ln == nil {
			exitReason = why
			return err
		} else {
			g.ln, g.lnKind = ln, listenerBound
		}
	}
	startKV := []any{"version", version, "name", p.Name, "policy", p.policyLabel(), "listen", g.ln.Addr().String(),
		"socket", g.lnKind, "upstream", upstreamLabel(p), "state_dir", p.Gateway.StateDir}
	if inh != nil {
		startKV = append(startKV, "handoff_from", inh.from)
	}
	log.info(evStart, startKV...)
	if inh != nil && g.ln.Addr().String() != p.Gateway.Listen && g.lnKind == listenerInherited {
		log.warn(evReloadPartial, "keys", "gateway.listen", "note", "the handed-over socket listens on "+g.ln.Addr().String()+"; a new address needs a drain restart (hermes restart --mode drain)")
	}
	autoConns := maxConnsFor(0) // the file limit's, read once
	g.srv = newH1Server(g, g.cutCtx, &g.conns, func() h1Limits {
		p := g.policy.Load()
		l := h1Limits{head: p.Gateway.HeaderTimeout, idle: p.Gateway.IdleTimeout,
			body: p.Gateway.BodyTimeout, write: p.Gateway.WriteTimeout, conns: p.Gateway.MaxConnections}
		if l.conns == 0 {
			l.conns = autoConns
		}
		return l
	}, g.httpAcc)

	var ready func()
	if inh == nil {
		ctl, err := listenControl(ctlPath)
		if err != nil {
			g.ln.Close()
			exitReason = "cannot listen on the control socket"
			return err
		}
		g.ctl.Store(ctl)
		self.Listen, self.Control = g.ln.Addr().String(), ctlPath
		g.self = self
		if err := publishPid(pidPath, self); err != nil {
			g.ln.Close()
			ctl.Close()
			exitReason = "cannot write the pid file"
			return err
		}
		pidSelf.Store(&self)
		go g.serveControl(ctl)
		ready = func() {
			// Accept only once the loop has published "serving": a
			// connection already queued on the socket (systemd's, or a
			// client that came during a restart) is taken at once, and
			// its /readyz must not find the gateway still "starting".
			g.serveHTTP()
			g.keeper.current()
			g.sd.put([]byte("READY=1\nSTATUS=serving" + g.mainPID()))
			log.info(evReady, "listen", g.ln.Addr().String(), "pid_file", pidPath, "control", ctlPath)
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
		finish(code, reason, nil)
	})

	g.alerts = alerts
	alerts.watchCrashLoopEnd(g.done)
	testFaultBallast()
	g.memoryGuard(g.done)
	if err := g.startTelegram(); err != nil {
		exitReason = "telegram"
		g.ln.Close()
		return err
	}
	go stampAlive(p.Gateway.StateDir, pid, g.done)
	testFaultPause("slow-start")
	code, reason := g.loop(ready)
	if !g.ending.CompareAndSwap(0, endLoop) {
		// The watchdog decided first: it is writing its stack dump and
		// will end the process itself.
		select {}
	}
	close(g.done)

	// Every session has ended or was told to; close what is left.
	if ctl := g.control(); ctl != nil {
		ctl.Close()
	}
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
