package main

import (
	"context"
	"fmt"
	"os"
	"syscall"
	"time"
)

// hermes start and hermes reload: the two commands an operator of systemd
// or supervisord reaches for that restart and stop do not cover.

const startUsage = `Start the gateway if it is not running; do nothing if it is. A gateway
with a service manager (the unit or plist from install-unit) is started by
its manager, any other detached, with its output in the state dir's
gateway.log. It waits until the new gateway is ready (restart.ready_timeout).
Exit 0 when the gateway runs, 1 when it does not come up.

    $ hermes start
    $ hermes start --config /etc/hermes/hermes.toml
`

// inspectFor parses the flags of a command that acts on a gateway of the
// target instance (start, reload) and looks at what runs now.
func inspectFor(name, usage string, args []string) (*target, managerInfo, *inspection, error) {
	fs := newFlagSet(name, usage)
	tf := addTargetFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return nil, managerInfo{}, nil, err
	}
	t, err := tf.resolve(name, true)
	if err != nil {
		return nil, managerInfo{}, nil, err
	}
	mgr := detectManager(t.p)
	return t, mgr, inspect(t.p, mgr), nil
}

func runStart(args []string) error {
	t, mgr, in, err := inspectFor("start", startUsage, args)
	if err != nil {
		return err
	}
	defer in.close()
	p := t.p
	switch in.Verdict {
	case verdictServing, verdictStarting:
		fmt.Printf("already running: instance %q, pid %d (%s), listening on %s\n", p.Name, in.PID, in.Verdict, listenOf(in, p))
		return nil
	case verdictDraining:
		return withHint(fmt.Errorf("instance %q (pid %d) is draining: it is on its way out (%s)", p.Name, in.PID, in.Detail),
			"for a fresh gateway now: hermes restart%s", configFlag(p))
	case verdictNotRunning, verdictCrashLoop:
		if in.PID != 0 {
			// Alive, waiting out a crash-loop delay: it starts by itself.
			fmt.Printf("already running: instance %q, pid %d, %s\n", p.Name, in.PID, in.Detail)
			return nil
		}
	case verdictZombie:
		// Dead, only not reaped by its parent: it holds no socket and no
		// lock, and there is nothing to signal. Start as restart would.
		fmt.Printf("pid %d (the last gateway) has exited and waits to be reaped by its parent; starting a new one\n", in.PID)
	default: // frozen, stopped: something is there, and start will not touch it
		return withHint(fmt.Errorf("instance %q is %s: %s", p.Name, in.Verdict, in.Detail),
			"bring it back with: hermes restart%s", configFlag(p))
	}
	if t.renamed != nil {
		return fmt.Errorf("not starting %q: %s", p.Name, t.notRunningNote("start"))
	}
	intr, err := newInterrupter()
	if err != nil {
		return err
	}
	defer intr.close()
	lock, err := lockRestart(p, "start", false, intr)
	if err != nil {
		return err
	}
	defer lock.Close()
	rec, jq := newRecorder(openJournal(p))
	defer func() { jq.flush(time.Now().Add(p.Journal.ExitFlush)) }()
	r := &ladderRun{p: p, out: os.Stdout, t0: time.Now(), intr: intr, journal: rec, in: in, start: true,
		logFrom: fileSize(gatewayLogPath(p.Gateway.StateDir))}
	r.record(evStartRequested, "by_pid", os.Getpid(), "user", currentUser())
	r.say("start of instance %q (policy %s, manager %s)", p.Name, policyOrigin(p), mgr.Kind)
	if note := t.notRunningNote("status"); note != "" && in.Verdict == verdictNotRunning {
		r.say("%s", note)
	}
	markRestartAsked(p.Gateway.StateDir, p.Journal.ExitFlush) // a person asked: not a crash
	if err := r.bringBack(mgr, "hermes start"+configFlag(p)); err != nil {
		restartFailedAlert(p, "start", err)
		return err
	}
	return nil
}

// listenOf is the address the inspected gateway listens on.
func listenOf(in *inspection, p *Policy) string {
	if in.Gateway != nil && in.Gateway.Listen != "" {
		return in.Gateway.Listen
	}
	if in.Record != nil && in.Record.Listen != "" {
		return in.Record.Listen
	}
	return p.Gateway.Listen
}

const reloadUsage = `Reload the policy of the running gateway: the file is checked first (a
broken one changes nothing), then the gateway gets HUP (through its service
manager when it has one: systemctl reload), and this waits for its answer.
Keys that a running gateway cannot change (gateway.listen, gateway.state_dir,
name, gateway.upstream_key_env, lock.*) are named; they need a restart.
Exit 0 when the gateway took the policy, 78 when the policy is refused, 3
when no gateway runs.

    $ hermes reload
    $ hermes reload --config /etc/hermes/hermes.toml
`

func runReload(args []string) error {
	t, mgr, in, err := inspectFor("reload", reloadUsage, args)
	if err != nil {
		return err
	}
	defer in.close()
	p := t.p
	switch in.Verdict {
	case verdictServing, verdictDraining, verdictStarting:
	case verdictNotRunning, verdictZombie:
		if in.PID == 0 {
			msg := fmt.Sprintf("instance %q is not running: nothing to reload", p.Name)
			if note := t.notRunningNote("reload"); note != "" {
				msg += "\n" + note
			}
			fmt.Fprintln(os.Stderr, "hermes: "+msg)
			fmt.Fprintf(os.Stderr, "hermes: hint: start it with: hermes start%s\n", configFlag(p))
			return &exitError{code: exitNotRunning}
		}
	default:
		return withHint(fmt.Errorf("instance %q is %s: a reload needs a gateway that acts on signals (%s)", p.Name, in.Verdict, in.Detail),
			"bring it back with: hermes restart%s", configFlag(p))
	}
	t0 := time.Now()
	rec, jq := newRecorder(openJournal(p))
	defer func() { jq.flush(time.Now().Add(p.Journal.ExitFlush)) }()
	rec.record(evReloadRequested, "by_pid", os.Getpid(), "user", currentUser(), "target", in.PID)
	how := ""
	if mgr.Kind == managerSystemd && mgr.loaded() {
		ctx, cancel := context.WithTimeout(context.Background(), p.Watchdog.SignalTimeout)
		_, err := mgr.systemctl(ctx, "reload", mgr.Unit)
		cancel()
		if err != nil {
			return withHint(err, "see why with: %s", mgr.command("status", mgr.Unit))
		}
		how = mgr.command("reload", mgr.Unit)
	} else {
		if err := in.proc.signal(syscall.SIGHUP); err != nil {
			return fmt.Errorf("sending HUP to pid %d: %w", in.PID, err)
		}
		how = fmt.Sprintf("HUP to pid %d", in.PID)
	}
	fmt.Printf("reload of instance %q: %s; waiting for its answer\n", p.Name, how)
	// The gateway journals the outcome. It acts on a signal within
	// watchdog.signal_timeout or its own watchdog ends it; the policy file
	// is read off its loop, so one more timeout covers a slow disk.
	deadline := t0.Add(2 * p.Watchdog.SignalTimeout)
	for {
		if ev, ok := reloadOutcome(p.Gateway.StateDir, t0); ok {
			switch ev.Kind {
			case evReloadOK:
				fmt.Printf("reloaded: the gateway runs with %s now\n", p.policyLabel())
				return nil
			case evReloadPartial:
				fmt.Printf("reloaded, except: %v (%v); apply those with: hermes restart%s\n", ev.Fields["keys"], ev.Fields["note"], configFlag(p))
				return nil
			default:
				return &exitError{code: exitConfig, err: fmt.Errorf("the gateway refused the policy and runs on with the one it had: %v", ev.Fields["error"])}
			}
		}
		if time.Now().After(deadline) {
			return withHint(fmt.Errorf("the gateway (pid %d) did not report on the reload within %s", in.PID, 2*p.Watchdog.SignalTimeout),
				"see what it is doing with: hermes status%s", configFlag(p))
		}
		time.Sleep(20 * time.Millisecond) // polling the journal file: it is the gateway's only report
	}
}

// reloadOutcome finds the gateway's report of a reload since t0: failed,
// partial (some keys wait for a restart; the gateway journals that just
// before its "reload ok"), or ok.
func reloadOutcome(stateDir string, t0 time.Time) (journalEvent, bool) {
	evs, _, err := readJournal(stateDir)
	if err != nil {
		return journalEvent{}, false
	}
	var ok, partial *journalEvent
	for i := range evs {
		if evs[i].Time.Before(t0.Add(-time.Millisecond)) {
			continue
		}
		switch evs[i].Kind {
		case evReloadFailed:
			return evs[i], true
		case evReloadPartial:
			partial = &evs[i]
		case evReloadOK:
			ok = &evs[i]
		}
	}
	switch {
	case ok != nil && partial != nil:
		return *partial, true
	case ok != nil:
		return *ok, true
	}
	return journalEvent{}, false
}
