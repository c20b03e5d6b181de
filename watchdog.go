package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// The self-healing watchdog. It runs on its own goroutine, never on the
// gateway loop it watches: when the loop has not ticked for
// watchdog.timeout, or a TERM, INT or USR1 has waited unread in the
// self-pipe for longer than watchdog.signal_timeout, it writes every
// goroutine's stack to the state dir, logs the file and the function the
// loop is stuck in, and exits with exitWatchdog (70) so the manager (or
// `hermes restart`) brings a fresh gateway up.

// stackKeep is how many watchdog stack files are kept in the state dir.
const stackKeep = 5

// watchdogExit is what the watchdog needs to end the process cleanly
// without the frozen loop's deferred clean-up.
type watchdogExit func(code int, reason string)

// startWatchdog starts the watchdog. It reads watchdog.* from the running
// policy at each check, so a reload (HUP) changes or disables it; it stops
// when the loop returns (g.done).
//
// When the watchdog itself has not run for far longer than its period, the
// whole process was stopped (SIGSTOP, then SIGCONT) or starved: the loop's
// silence says nothing then, so the clocks restart from that moment and
// the loop gets its full timeout to tick again. A stopped gateway resumed
// with a TERM pending drains. The clocks are monotonic (mono.go), so a
// step of the wall clock moves nothing here.
func (g *gateway) startWatchdog(exit watchdogExit) {
	go func() {
		every := watchdogEvery(g.policy.Load().Watchdog)
		t := time.NewTimer(every)
		defer t.Stop()
		last := monoNow()
		var resumed int64
		for {
			select {
			case <-g.done:
				return
			case now := <-t.C:
				n := monoNanos(now)
				if n-last > int64(every+time.Second) {
					resumed = n
				}
				last = n
				w := g.policy.Load().Watchdog
				if reason := g.watchdogDecide(w, n, resumed); reason != "" {
					g.watchdogFire(reason, exit)
				}
				every = watchdogEvery(w)
				t.Reset(every)
			}
		}
	}()
}

// watchdogEvery is how often the watchdog checks: every 250ms, or a quarter
// of the shorter timeout when that is shorter.
func watchdogEvery(w WatchdogPolicy) time.Duration {
	every := 250 * time.Millisecond
	for _, d := range []time.Duration{w.Timeout, w.SignalTimeout} {
		if d > 0 && d/4 < every {
			every = d / 4
		}
	}
	return every
}

// watchdogDecide returns why the watchdog ends the process now, or "". A
// reason comes with the exit claimed for the watchdog: check and act are
// one decision, because the loop may be returning this very moment, and
// then the exit is the loop's.
func (g *gateway) watchdogDecide(w WatchdogPolicy, now, resumed int64) string {
	reason := g.watchdogCheck(w, now, resumed)
	if reason == "" || !g.ending.CompareAndSwap(0, endWatchdog) {
		return ""
	}
	return reason
}

// watchdogCheck returns why the loop counts as frozen at now (monoNanos,
// like the heartbeat), or "". Nothing counts from before resumed.
func (g *gateway) watchdogCheck(w WatchdogPolicy, now, resumed int64) string {
	if w.Timeout > 0 {
		silent := time.Duration(now - max(g.heartbeat.Load(), resumed))
		if silent > w.Timeout {
			return fmt.Sprintf("the gateway loop has not ticked for %s (watchdog.timeout %s)", silent.Round(time.Millisecond), w.Timeout)
		}
	}
	if w.SignalTimeout > 0 {
		unread := g.pipe.unreadFor(now)
		if resumed > 0 {
			unread = min(unread, time.Duration(now-resumed))
		}
		if unread > w.SignalTimeout {
			return fmt.Sprintf("a stop or restart signal has waited unread for %s (watchdog.signal_timeout %s)", unread.Round(time.Millisecond), w.SignalTimeout)
		}
	}
	return ""
}

// watchdogFire dumps the stacks, says where the loop is stuck and ends the
// process with exitWatchdog. The stack file gets journal.exit_flush to
// reach the disk, and the exit (log, ledger, queued lines) as much again:
// a frozen loop on a stalled disk is still ended within twice that.
func (g *gateway) watchdogFire(reason string, exit watchdogExit) {
	stacks := allStacks()
	fn, at, state := loopFrame(stacks)
	path := filepath.Join(g.stateDir, fmt.Sprintf("watchdog-%d-%d.stack", time.Now().Unix(), g.pid))
	header := fmt.Sprintf("hermes watchdog: pid %d, %s\nreason: %s\nloop stuck in: %s at %s [%s]\n\n",
		g.pid, time.Now().UTC().Format(time.RFC3339Nano), reason, fn, at, state)
	var werr error
	if !runWithin(time.Now().Add(g.policy.Load().Journal.ExitFlush), func() {
		if werr = os.WriteFile(path, append([]byte(header), stacks...), 0o600); werr == nil {
			pruneStackFiles(g.stateDir, stackKeep)
		}
	}) {
		werr = fmt.Errorf("writing %s: the disk did not answer within journal.exit_flush", path)
	}
	if werr != nil {
		g.log.errorf(evWatchdogStack, "error", werr)
		path = ""
	}
	g.log.errorf(evWatchdog, "reason", reason, "stuck_in", fn, "at", at, "blocked", state, "stack_file", path)
	g.sd.put([]byte(fmt.Sprintf("STATUS=watchdog: loop stuck in %s; exiting %d", fn, exitWatchdog)))
	exit(exitWatchdog, "watchdog: loop stuck in "+fn)
	// os.Exit below run is justified here and only here: the deferred
	// clean-up of runServe would run on the loop's goroutine, and that
	// goroutine is the one that is frozen. exit above did what those defers
	// would (pid file, ledger, exit log, flushing the queued lines).
	os.Exit(exitWatchdog)
}

// allStacks returns every goroutine's stack, growing the buffer until it
// holds them all.
func allStacks() []byte {
	buf := make([]byte, 256<<10)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		if len(buf) >= 64<<20 {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// loopFrame finds the goroutine running the gateway loop and returns its
// innermost hermes function (e.g. "main.freezeLoopForTest") and where.
func loopFrame(stacks []byte) (fn, at, state string) {
	for _, g := range strings.Split(string(stacks), "\n\n") {
		if !strings.Contains(g, "main.(*gateway).loop(") {
			continue
		}
		lines := strings.Split(g, "\n")
		for i, l := range lines {
			if !strings.HasPrefix(l, "main.") {
				continue
			}
			fn = l
			if j := strings.LastIndex(fn, "("); j > 0 {
				fn = fn[:j]
			}
			if i+1 < len(lines) {
				at = strings.TrimSpace(lines[i+1])
				if j := strings.LastIndex(at, " +0x"); j > 0 {
					at = at[:j]
				}
			}
			return fn, at, goroutineState(lines[0])
		}
	}
	return "unknown (no gateway loop goroutine found)", "?", "?"
}

// goroutineState returns "chan receive" from "goroutine 1 [chan receive]:".
func goroutineState(header string) string {
	i, j := strings.Index(header, "["), strings.LastIndex(header, "]")
	if i < 0 || j < i {
		return ""
	}
	s := header[i+1 : j]
	if k := strings.Index(s, ","); k > 0 { // "select, 2 minutes"
		s = s[:k]
	}
	return s
}

// pruneStackFiles keeps the newest keep watchdog stack files.
func pruneStackFiles(stateDir string, keep int) {
	files, _ := filepath.Glob(filepath.Join(stateDir, "watchdog-*.stack"))
	if len(files) <= keep {
		return
	}
	type f struct {
		path string
		mod  time.Time
	}
	var fs []f
	for _, p := range files {
		if st, err := os.Stat(p); err == nil {
			fs = append(fs, f{p, st.ModTime()})
		}
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].mod.After(fs[j].mod) })
	for _, x := range fs[min(keep, len(fs)):] {
		os.Remove(x.path)
	}
}
