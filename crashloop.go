package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The crash-loop guard. Every gateway start and exit is recorded in
// <state_dir>/starts.json. More than crash_loop.starts starts within
// crash_loop.window is a crash loop: the gateway delays its own start by
// base_delay * 2^k (k = starts over the limit - 1), capped at max_delay.
// systemd has StartLimitBurst; launchd and bare runs have nothing, and this
// is their protection.
//
// A start that follows a planned stop or restart (the previous gateway
// exited 0 or 75), or that `hermes restart` asked for, is planned and ends
// a crash loop: a person running `hermes restart` five times, even on a
// frozen gateway the ladder had to kill, is not a crash loop, and the
// gateway they asked for starts at once.

// ledgerKeep bounds the ledger: the newest starts and exits kept.
const ledgerKeep = 50

type ledgerStart struct {
	Time    time.Time `json:"time"`
	PID     int       `json:"pid"`
	Planned bool      `json:"planned,omitempty"` // follows a planned stop or restart: not counted
	// The process's proof (as in the pid file): a later start can tell a
	// gateway that still runs (a handoff's predecessor) from one that died.
	StartTicks uint64 `json:"start_ticks,omitempty"`
	BootID     string `json:"boot_id,omitempty"`
}

type ledgerExit struct {
	Time   time.Time `json:"time"`
	PID    int       `json:"pid"`
	Code   int       `json:"code"` // codeUnclean: it died without saying how
	Reason string    `json:"reason"`
	// Found is when a later start found this exit unrecorded (Time is
	// then when the gateway was last seen alive).
	Found time.Time `json:"found,omitzero"`
}

// codeUnclean is the exit code of a gateway that died without recording
// its exit: nobody knows it (SIGKILL and the OOM killer leave none).
const codeUnclean = -1

// startLedger is the content of starts.json, oldest first. `hermes status`
// reads it with readStartLedger.
type startLedger struct {
	Starts []ledgerStart `json:"starts"`
	Exits  []ledgerExit  `json:"exits"`
	// RestartAsked is when `hermes restart` last asked for a fresh gateway;
	// the next start within restartAskedFor is planned, and consumes it.
	RestartAsked time.Time `json:"restart_asked,omitzero"`
}

// restartAskedFor bounds how long a restart's request marks the next start
// as planned (a manager may take RestartSec, the new gateway its start).
const restartAskedFor = 5 * time.Minute

// markRestartAsked records that a person asked for a fresh gateway now.
func markRestartAsked(stateDir string, wait time.Duration) {
	updateLedger(stateDir, wait, func(l *startLedger) { l.RestartAsked = time.Now().UTC() })
}

func ledgerPath(stateDir string) string { return filepath.Join(stateDir, "starts.json") }

// readStartLedger returns the recorded starts and exits of the instance
// whose state dir is given. No file is an empty ledger, not an error.
func readStartLedger(stateDir string) (startLedger, error) {
	var l startLedger
	b, err := os.ReadFile(ledgerPath(stateDir))
	if errors.Is(err, fs.ErrNotExist) {
		return l, nil
	}
	if err != nil {
		return l, err
	}
	if err := json.Unmarshal(b, &l); err != nil {
		return startLedger{}, fmt.Errorf("start ledger %s is damaged: %w", ledgerPath(stateDir), err)
	}
	return l, nil
}

// counted returns the starts within the window that count towards a crash
// loop: the unplanned ones since the latest planned start. A planned stop
// or restart (exit 0 or 75, a person or the manager acting) ends a crash
// loop: the gateway after it starts at once, and only crashes after it
// count again.
func (l startLedger) counted(cl CrashLoopPolicy, now time.Time) int {
	n := 0
	for i := len(l.Starts) - 1; i >= 0; i-- {
		s := l.Starts[i]
		if s.Planned {
			break
		}
		if now.Sub(s.Time) <= cl.Window && !s.Time.After(now) {
			n++
		}
	}
	return n
}

// CrashLoop reports whether the ledger shows a crash loop at now, and the
// delay the latest start waits (or waited) because of it.
func (l startLedger) CrashLoop(cl CrashLoopPolicy, now time.Time) (bool, time.Duration) {
	n := l.counted(cl, now)
	if n <= cl.Starts {
		return false, 0
	}
	return true, backoff(cl, n-cl.Starts-1)
}

// DelayingUntil reports whether the latest start is still waiting out its
// crash-loop delay at now, and until when (for `hermes status`).
func (l startLedger) DelayingUntil(cl CrashLoopPolicy, now time.Time) (time.Time, bool) {
	if len(l.Starts) == 0 {
		return time.Time{}, false
	}
	last := l.Starts[len(l.Starts)-1]
	if _, exited := l.LastExit(last.PID); exited {
		return time.Time{}, false
	}
	loop, delay := l.CrashLoop(cl, last.Time)
	until := last.Time.Add(delay)
	return until, loop && until.After(now)
}

// backoff is min(max_delay, base_delay * 2^k).
func backoff(cl CrashLoopPolicy, k int) time.Duration {
	d := cl.BaseDelay
	for i := 0; i < k && d < cl.MaxDelay; i++ {
		d *= 2
	}
	return min(d, cl.MaxDelay)
}

// LastExit returns the exit recorded for pid, if any.
func (l startLedger) LastExit(pid int) (ledgerExit, bool) {
	for i := len(l.Exits) - 1; i >= 0; i-- {
		if l.Exits[i].PID == pid {
			return l.Exits[i], true
		}
	}
	return ledgerExit{}, false
}

// updateLedger reads, changes and writes the ledger under a flock, so a
// start and the exit of the previous gateway never lose each other's
// record. The write is atomic (temp file + rename). The lock is waited for
// at most wait (journal.exit_flush, from the caller's policy): a holder that
// never lets go costs one record, never a start or an exit.
func updateLedger(stateDir string, wait time.Duration, change func(*startLedger)) (startLedger, error) {
	return changeLedger(stateDir, wait, writeFileAtomic, change)
}

// changeLedger is updateLedger with the write it ends with.
func changeLedger(stateDir string, wait time.Duration, write func(string, []byte, os.FileMode) error, change func(*startLedger)) (startLedger, error) {
	lk, err := os.OpenFile(ledgerPath(stateDir)+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return startLedger{}, err
	}
	defer lk.Close()
	if err := flockWithin(lk, wait); err != nil {
		return startLedger{}, fmt.Errorf("locking the start ledger (waited %s): %w", wait, err)
	}
	l, err := readStartLedger(stateDir)
	if err != nil {
		l = startLedger{} // a damaged ledger is started afresh
	}
	change(&l)
	if len(l.Starts) > ledgerKeep {
		l.Starts = l.Starts[len(l.Starts)-ledgerKeep:]
	}
	if len(l.Exits) > ledgerKeep {
		l.Exits = l.Exits[len(l.Exits)-ledgerKeep:]
	}
	b, _ := json.MarshalIndent(l, "", "  ")
	if err := write(ledgerPath(stateDir), append(b, '\n'), 0o600); err != nil {
		return l, fmt.Errorf("writing start ledger: %w", err)
	}
	return l, nil
}

// recordStart adds this start. It is planned when the previous gateway's
// recorded exit was a planned stop or restart, when `hermes restart` asked
// for it, or when the caller says so (a successor in a handoff).
func recordStart(stateDir string, pid int, now time.Time, planned bool, wait time.Duration) (startLedger, error) {
	ticks, _, _ := procInfo(pid)
	boot, _ := bootID()
	// The start must not wait on the disk: the record is synced a moment
	// after, in the background. An exit's record is synced before the exit.
	return changeLedger(stateDir, wait, writeFileSyncSoon, func(l *startLedger) {
		noteUncleanExit(l, stateDir, pid, now)
		if n := len(l.Starts); n > 0 {
			if ex, ok := l.LastExit(l.Starts[n-1].PID); ok {
				planned = ex.Code == exitOK || ex.Code == exitRestart
			}
		}
		if !l.RestartAsked.IsZero() && now.Sub(l.RestartAsked) < restartAskedFor && !l.RestartAsked.After(now.Add(time.Second)) {
			planned = true
		}
		l.RestartAsked = time.Time{}
		l.Starts = append(l.Starts, ledgerStart{Time: now.UTC(), PID: pid, Planned: planned, StartTicks: ticks, BootID: boot})
	})
}

// noteUncleanExit records the exit of the previous gateway if it died
// without recording one: it is not running any more (proven, as with a
// pid file), and the ledger has no exit for it. Its time is when it was
// last seen alive: its alive stamp or its last journal line, whichever is
// later, else its start.
func noteUncleanExit(l *startLedger, stateDir string, pid int, now time.Time) {
	n := len(l.Starts)
	if n == 0 {
		return
	}
	prev := l.Starts[n-1]
	if prev.PID == pid {
		return
	}
	if _, ok := l.LastExit(prev.PID); ok {
		return
	}
	if prev.BootID != "" {
		rec := pidRecord{PID: prev.PID, StartTime: prev.StartTicks, BootID: prev.BootID}
		if alive, state := rec.alive(); alive && state != 'Z' {
			return // a handoff's predecessor, still draining
		}
	} else if _, _, err := procInfo(prev.PID); err == nil {
		return // an older ledger without proof: alive or reused, say nothing
	}
	seen := prev.Time
	if t, ok := aliveStamp(stateDir, prev.PID); ok && t.After(seen) {
		seen = t
	}
	if t, ok := lastJournalLine(stateDir, prev.PID); ok && t.After(seen) {
		seen = t
	}
	why := "it died without recording its exit (SIGKILL, the OOM killer, a power cut?)"
	if prev.BootID != "" {
		if boot, err := bootID(); err == nil && boot != prev.BootID {
			why = "the host restarted without stopping it (a power cut, a crash of the host?)"
		}
	}
	l.Exits = append(l.Exits, ledgerExit{Time: seen.UTC(), PID: prev.PID, Code: codeUnclean,
		Reason: why + "; last seen alive " + seen.Local().Format("2006-01-02 15:04:05"), Found: now.UTC()})
}

// uncleanFound returns the unclean exit this start (pid) found, if any.
func (l startLedger) uncleanFound(pid int) (ledgerExit, bool) {
	n := len(l.Starts)
	if n < 2 || l.Starts[n-1].PID != pid {
		return ledgerExit{}, false
	}
	if x, ok := l.LastExit(l.Starts[n-2].PID); ok && x.Code == codeUnclean && !x.Found.Before(l.Starts[n-1].Time.Add(-time.Second)) {
		return x, true
	}
	return ledgerExit{}, false
}

// The alive stamp, <state_dir>/alive: the gateway's pid, its mtime touched
// every aliveEvery, so that a gateway that dies without a word leaves the
// time it was last seen. It is written by a goroutine of its own, never by
// the loop: a stalled disk delays the stamp, nothing else.
const aliveEvery = 10 * time.Second

func alivePath(stateDir string) string { return filepath.Join(stateDir, "alive") }

func stampAlive(stateDir string, pid int, done <-chan struct{}) {
	path := alivePath(stateDir)
	if os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o600) != nil {
		return
	}
	t := time.NewTicker(aliveEvery)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			os.Chtimes(path, now, now)
		}
	}
}

// aliveStamp returns when pid was last seen alive by its stamp.
func aliveStamp(stateDir string, pid int) (time.Time, bool) {
	path := alivePath(stateDir)
	b, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(pid) {
		return time.Time{}, false
	}
	st, err := os.Stat(path)
	if err != nil {
		return time.Time{}, false
	}
	return st.ModTime(), true
}

// lastJournalLine returns the time of pid's last line in the journal.
func lastJournalLine(stateDir string, pid int) (time.Time, bool) {
	evs, _, err := readJournal(stateDir)
	if err != nil {
		return time.Time{}, false
	}
	for i := len(evs) - 1; i >= 0; i-- {
		if evs[i].PID == pid {
			return evs[i].Time, true
		}
	}
	return time.Time{}, false
}

// recordExit adds this process's exit, just before it exits.
func recordExit(stateDir string, pid, code int, reason string, wait time.Duration) {
	updateLedger(stateDir, wait, func(l *startLedger) {
		l.Exits = append(l.Exits, ledgerExit{Time: time.Now().UTC(), PID: pid, Code: code, Reason: reason})
	})
}

// crashLoopDelay waits out the backoff the ledger calls for, before the
// gateway listens. Signals work while it waits, in the order they came:
// TERM or INT ends the wait with a planned stop (stop=true, exitOK), USR1
// with a planned restart, and HUP reloads the policy, so a fixed policy is
// the one the gateway starts with (and its crash_loop settings decide what
// is left of the wait). It returns the policy to start with. The wait is on
// the self-pipe and a timer, never a blind sleep.
func crashLoopDelay(l startLedger, p *Policy, flagPath string, pipe *selfPipe, sd *sink, log *logger) (np *Policy, code int, stop bool) {
	started := time.Now()
	loop, delay := l.CrashLoop(p.CrashLoop, started)
	if !loop {
		return p, 0, false
	}
	starts := l.counted(p.CrashLoop, started)
	log.warn(evCrashLoopDelay, "delay", delay, "starts", starts, "window", p.CrashLoop.Window, "limit", p.CrashLoop.Starts)
	sd.put([]byte(fmt.Sprintf("STATUS=crash loop: delaying start by %s\nEXTEND_TIMEOUT_USEC=%s", delay, usec(delay+autoWaitMargin))))
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-timer.C:
			return p, 0, false
		case sig := <-pipe.sigs:
			pipe.took(sig)
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT:
				log.info(evSignal, "signal", signalName(sig), "action", "stop", "state", "crash-loop delay")
				return p, exitOK, true
			case syscall.SIGUSR1:
				log.info(evSignal, "signal", signalName(sig), "action", "restart", "state", "crash-loop delay")
				return p, exitRestart, true
			case syscall.SIGHUP:
				log.info(evSignal, "signal", signalName(sig), "action", "reload", "state", "crash-loop delay")
				fresh, err := loadPolicy(flagPath)
				if err != nil {
					log.errorf(evReloadFailed, "error", err, "policy", p.policyLabel(), "action", "keeping the running policy")
					continue
				}
				// Nothing is bound yet but the instance and token locks,
				// and the ledger and pid file in the state dir.
				listen := fresh.Gateway.Listen
				if later := keepBound(p, fresh); len(later) > 0 {
					fresh.Gateway.Listen = listen
					if rest := without(later, "gateway.listen"); len(rest) > 0 {
						log.warn(evReloadPartial, "keys", joinKeys(rest), "note", "changed, but these take effect only after a restart (hermes restart)")
					}
				}
				p = fresh
				log.info(evReloadOK, "policy", p.policyLabel())
				_, d := l.CrashLoop(p.CrashLoop, started)
				left := time.Until(started.Add(d))
				if !timer.Stop() {
					return p, 0, false // it fired meanwhile
				}
				timer.Reset(max(left, 0))
				sd.put([]byte(fmt.Sprintf("STATUS=crash loop: delaying start by %s\nEXTEND_TIMEOUT_USEC=%s", max(left, 0).Round(time.Millisecond), usec(max(left, 0)+autoWaitMargin))))
			default:
				log.info(evSignal, "signal", signalName(sig), "action", "none", "state", "crash-loop delay")
			}
		}
	}
}

func without(keys []string, k string) []string {
	var out []string
	for _, x := range keys {
		if x != k {
			out = append(out, x)
		}
	}
	return out
}
