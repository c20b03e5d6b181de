package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"
	"time"
)

// The lifecycle journal: <state_dir>/events.jsonl, one JSON object per line
// for every lifecycle event of every hermes process that works on one
// instance (the gateway, hermes restart, hermes stop). It is what
// `hermes events` reads to print the timeline of an incident.
//
// Each line is written with one write(2) on an O_APPEND descriptor, so lines
// of several processes never interleave; a short flock on a separate lock
// file (events.jsonl.lock: the journal itself is renamed away by rotation,
// and a flock belongs to the inode) covers the size check, the rotation and
// the write together. Past journal.max_bytes the file is renamed to
// events.jsonl.1 (replacing the older one), so the journal never holds more
// than about twice max_bytes.

// event names a lifecycle event: a journal line's "event" and a log line's
// first word. It is a type of its own, not a string, so every writer (the
// gateway's logger, the restarter) can only use the constants below, and
// `hermes events` matches causes to effects by the same constants: a
// reworded log line cannot silently break a cause→effect span.
type event uint8

// The gateway's events.
const (
	evNone event = iota
	evStart
	evReady
	evSignal     // fields: signal, action
	evDrainStart // fields: reason, sessions, timeout, grace
	evDrainTimeout
	evDrainGraceOver
	evDrainEnd
	evSessionFinished   // a session that ended by itself during a drain
	evSessionCut        // the drain ended the session: it got its final event
	evSessionClientGone // the client hung up first
	evReloadOK
	evReloadPartial // keys that take effect only after a restart
	evReloadFailed
	evWatchdog       // fields: reason, stuck_in, stack_file
	evWatchdogStack  // the stack file could not be written
	evLockConflict   // fields: holder_pid, holder_instance, holder_policy
	evTokenLock      // the token lock was taken
	evTokenLockOff   // a token lock is configured but gives no token
	evCrashLoopDelay // fields: delay, starts, window
	evExit           // fields: code, reason
	evServeFailed
	evPolicyWarning
	evFileReadable
	evStartLedger
	evUpstreamError
	evUpstreamBroken
	evHandoffRequested  // fields: by
	evHandoffRefused    // fields: by, reason
	evHandoffStarted    // fields: successor
	evHandoffReady      // fields: successor, ready_ms
	evHandoffDone       // fields: successor, took_ms: it serves; this gateway drains
	evHandoffFailed     // fields: successor, reason
	evHandoffFailback   // fields: successor, code: it died after taking over; this gateway serves again
	evPredecessorExited // fields: pid (logged by the successor)
	evKeeperStart       // fields: gateway, why
	evKeeperExit        // fields: code
	evLogDropped        // fields: sink, dropped: lines a full queue dropped
	evJournalFailed     // writes to the journal fail (or work again)
	evRestartNow        // fields: by, state, sessions: hermes restart --force asked for a restart now
	evListenBusy        // fields: listen, holder, wait: gateway.listen is in use; the gateway keeps trying

	// The restarter's (hermes restart and hermes stop).
	evRestartRequested // fields: by_pid, user, force
	evStopRequested    // fields: by_pid, user, force
	evVerdict          // fields: verdict, target
	evRungSent         // fields: signal, target, wait (journaled before the signal goes)
	evExitObserved     // fields: target, code or signal
	evManagerAction    // fields: manager, action
	evRestartDone      // fields: ok, new_pid, error (new gateway ready, or not)
	evStopDone         // fields: ok, error
	evStartRequested   // fields: by_pid, user (hermes start)
	evStartDone        // fields: ok, new_pid, error
	evReloadRequested  // fields: by_pid, user, target (hermes reload)

	// Found at a start: the previous gateway of the instance died without
	// recording its exit (SIGKILL, the OOM killer, a power cut).
	evUncleanExit // fields: dead_pid, started, last_seen

	// The Telegram bot's (telegram.go).
	evTelegramPolling        // fields: bot, offset, pending: polling began (or began again)
	evTelegramStopped        // fields: why: polling stopped (a drain, a handoff)
	evTelegramConflict       // fields: conflicts, backoff: another poller uses the token; an episode began
	evTelegramConflictEnd    // fields: conflicts, lasted
	evTelegramFailing        // fields: error, backoff: polls fail (network, 5xx); an episode began
	evTelegramRecovered      // fields: failures, lasted
	evTelegramAnswered       // fields: session, update, chat, duration, parts, rerun
	evTelegramTurnCut        // fields: session, update: left for the next gateway
	evTelegramRerun          // fields: update, chat: an accepted message no gateway answered yet
	evTelegramStranger       // fields: user: a user not in allowed_users was told their id
	evTelegramError          // fields: error
	evTelegramWebhookDeleted // fields: bot, webhook_host
	evTelegramStoreFailing   // fields: error, backoff: fetched messages cannot be stored; an episode began
	evTelegramStoreRecovered // fields: failures, lasted

	evAlertSent   // fields: alert, state, to, attempts
	evAlertFailed // fields: alert, state, error
	evMemoryLimit // fields: rss, max_rss, window, action

	evClientBodyError // fields: error, path: a request body the client sent wrong (a 4xx, no mark against the upstream)
	evAcceptError     // fields: listener, error, note; at the end: state, errors, lasted

	// The upstreams' (upstream_pool.go).
	evUpstreamOut      // fields: upstream, failures, cooldown, error: taken out of the order
	evUpstreamIn       // fields: upstream, out_for, by: back in (a probe, or a request that it answered)
	evUpstreamFailover // fields: from, to, why: a request moved on before its answer's first byte

	// A supervised upstream's (upstream_child.go).
	evChildStart     // fields: upstream, child_pid, command
	evChildReady     // fields: upstream, child_pid, took
	evChildFrozen    // fields: upstream, child_pid, missed, every
	evChildSignal    // fields: upstream, child_pid, signal, why
	evChildExit      // fields: upstream, child_pid, code (-1: an adopted run, whose code only its parent saw)
	evChildCrashLoop // fields: upstream, starts, window, delay
	evChildAdopted   // fields: upstream, child_pid: a run a predecessor handed over
	evChildOutput    // fields: upstream, line: a line it wrote

	// The streams kept for reattach (reattach.go); stream is the first 8
	// of its id's 32 hex digits.
	evStreamDetached   // fields: stream, path, events, window: its client left; kept for the window
	evStreamReattached // fields: stream, path, after, events (from_pid: served from the predecessor)
	evStreamExpired    // fields: stream, path, events, window: nobody came back in time
	evStreamOverflowed // fields: stream, events, max_buffer: too large to keep
	evStreamAdopted    // fields: stream, path, events, from_pid: handed over by the predecessor, its end come

	evCount // not an event: the number of them
)

var eventNames = [evCount]string{
	evStart: "start", evReady: "ready", evSignal: "signal",
	evDrainStart: "drain start", evDrainTimeout: "drain timeout", evDrainGraceOver: "drain grace over", evDrainEnd: "drain end",
	evSessionFinished: "session finished", evSessionCut: "session cut", evSessionClientGone: "session client_gone",
	evReloadOK: "reload ok", evReloadPartial: "reload partial", evReloadFailed: "reload failed",
	evWatchdog: "watchdog fired", evWatchdogStack: "watchdog stack file",
	evLockConflict: "lock conflict", evTokenLock: "token lock", evTokenLockOff: "token lock off",
	evCrashLoopDelay: "crash loop delay", evExit: "exit", evServeFailed: "serve failed",
	evPolicyWarning: "policy warning", evFileReadable: "file readable by others", evStartLedger: "start ledger",
	evUpstreamError: "upstream error", evUpstreamBroken: "upstream stream broken",
	evHandoffRequested: "handoff requested", evHandoffRefused: "handoff refused", evHandoffStarted: "handoff successor started",
	evHandoffReady: "handoff successor ready", evHandoffDone: "handoff done", evHandoffFailed: "handoff failed", evHandoffFailback: "handoff failback",
	evPredecessorExited: "predecessor exited", evKeeperStart: "keeper start", evKeeperExit: "keeper exit",
	evLogDropped: "log lines dropped", evJournalFailed: "journal write failed", evRestartNow: "restart now", evListenBusy: "listen busy",
	evRestartRequested: "restart requested", evStopRequested: "stop requested", evVerdict: "verdict",
	evRungSent: "rung sent", evExitObserved: "exit observed", evManagerAction: "manager action",
	evRestartDone: "restart done", evStopDone: "stop done",
	evStartRequested: "start requested", evStartDone: "start done", evReloadRequested: "reload requested",
	evUncleanExit:     "unclean exit",
	evTelegramPolling: "telegram polling", evTelegramStopped: "telegram polling stopped",
	evTelegramConflict: "telegram conflict", evTelegramConflictEnd: "telegram conflict end",
	evTelegramFailing: "telegram poll failing", evTelegramRecovered: "telegram poll recovered",
	evTelegramAnswered: "telegram answered", evTelegramTurnCut: "telegram turn cut", evTelegramRerun: "telegram rerun",
	evTelegramStranger: "telegram stranger", evTelegramError: "telegram error", evTelegramWebhookDeleted: "telegram webhook deleted",
	evTelegramStoreFailing: "telegram store failing", evTelegramStoreRecovered: "telegram store recovered",
	evAlertSent: "alert sent", evAlertFailed: "alert failed", evMemoryLimit: "memory limit",
	evClientBodyError: "client body error", evAcceptError: "accept error",
	evUpstreamOut: "upstream out", evUpstreamIn: "upstream in", evUpstreamFailover: "upstream failover",
	evChildStart: "upstream child start", evChildReady: "upstream child ready", evChildFrozen: "upstream child frozen",
	evChildSignal: "upstream child signal", evChildExit: "upstream child exit", evChildCrashLoop: "upstream child crash loop",
	evChildAdopted: "upstream child adopted", evChildOutput: "upstream output",
	evStreamDetached: "stream detached", evStreamReattached: "stream reattached",
	evStreamExpired: "stream expired", evStreamOverflowed: "stream overflowed", evStreamAdopted: "stream adopted",
}

// eventNamed returns the event with that name, or evNone.
func eventNamed(name string) event {
	for e, n := range eventNames {
		if n == name && n != "" {
			return event(e)
		}
	}
	return evNone
}

func (e event) String() string {
	if e < evCount && eventNames[e] != "" {
		return eventNames[e]
	}
	return fmt.Sprintf("event(%d)", int(e))
}

// journalSkip are log events that are not lifecycle events: they would push
// the lifecycle history out of a bounded journal.
var journalSkip = map[event]bool{evUpstreamError: true, evUpstreamFailover: true, evChildOutput: true}

func journalPath(stateDir string) string { return filepath.Join(stateDir, "events.jsonl") }

type journal struct {
	path     string
	maxBytes atomic.Int64 // follows the running policy (a reload changes it)
	pid      int
	instance string
	secrets  *redactor
}

// openJournal returns the journal of p's instance. Nothing is opened until
// the first append; a journal that cannot be written is counted, never
// fatal: it must never stop a gateway or a restart.
func openJournal(p *Policy) *journal {
	j := &journal{
		path:     journalPath(p.Gateway.StateDir),
		pid:      os.Getpid(),
		instance: p.Name,
		secrets:  policySecrets(p),
	}
	j.maxBytes.Store(p.Journal.MaxBytes)
	return j
}

// record appends one event now, synchronously. The gateway and the
// restarter never call it: their lines go through a logger's outbox.
func (j *journal) record(ev event, fields map[string]any) error {
	return j.appendLines([][]byte{j.line(time.Now(), ev.String(), fields)})
}

// reserved are the keys every line has; a field with one of these names is
// written with a trailing underscore.
var reserved = map[string]bool{"time": true, "pid": true, "instance": true, "event": true}

// line renders one journal line: time, pid, instance and event first, then
// the fields in key order. A field whose value holds a known secret is
// left out whole.
func (j *journal) line(now time.Time, name string, fields map[string]any) []byte {
	var b bytes.Buffer
	enc := func(v any) {
		x, err := json.Marshal(v)
		if err != nil {
			x, _ = json.Marshal(fmt.Sprint(v))
		}
		b.Write(x)
	}
	b.WriteString(`{"time":`)
	enc(now.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(&b, `,"pid":%d,"instance":`, j.pid)
	enc(j.instance)
	b.WriteString(`,"event":`)
	enc(name)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := journalValue(fields[k])
		if j.secrets.holds(fmt.Sprint(v)) {
			continue
		}
		name := k
		if reserved[k] {
			name = k + "_"
		}
		b.WriteByte(',')
		enc(name)
		b.WriteByte(':')
		enc(v)
	}
	b.WriteString("}\n")
	return b.Bytes()
}

// journalValue makes a log value JSON-friendly: durations as "1.5s", errors
// as their message; numbers, strings and booleans as they are.
func journalValue(v any) any {
	switch x := v.(type) {
	case time.Duration:
		return x.Round(time.Millisecond).String()
	case error:
		return x.Error()
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano)
	case string, bool, int, int64, uint64, float64:
		return v
	case fmt.Stringer:
		return x.String()
	default:
		return fmt.Sprint(v)
	}
}

// appendLines writes lines under the journal's flock, rotating first when
// they would take the file past max_bytes. All of them go in one write(2)
// on an O_APPEND descriptor, so they land whole, between other processes'
// lines, never inside one.
func (j *journal) appendLines(lines [][]byte) error {
	dir := filepath.Dir(j.path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	lk, err := os.OpenFile(j.path+".lock", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer lk.Close() // closing the last fd releases the flock
	// A holder that never lets go (a hermes restart stopped with Ctrl-Z in
	// the middle of an append, a shell's flock) must not stop the journal
	// for good: after a short wait, append without the lock (one O_APPEND
	// write is still whole) and leave rotation for later. This wait is on
	// the journal's writer, never on the gateway's loop.
	locked := flockWithin(lk, journalLockWait) == nil
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	var buf []byte
	if len(lines) == 1 {
		buf = lines[0]
	} else {
		buf = bytes.Join(lines, nil)
	}
	if st, err := f.Stat(); err == nil && locked && st.Size() > 0 && st.Size()+int64(len(buf)) > j.maxBytes.Load() {
		f.Close()
		if err := os.Rename(j.path, j.path+".1"); err != nil {
			return err
		}
		if f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			return err
		}
	}
	_, err = f.Write(buf) // one write(2): O_APPEND keeps it whole
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// journalLockWait bounds the wait for the journal's and the ledger's flock.
// Only writers wait on it (the journal sink, the exit-time ledger update),
// each within its own deadline.
const journalLockWait = 500 * time.Millisecond

// flockWithin takes an exclusive flock on f, waiting at most d.
func flockWithin(f *os.File, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		err := flockExclusive(f)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(2 * time.Millisecond)
	}
}
