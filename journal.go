package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
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

// Journal event names. The gateway's come from its log lines (the logger's
// sink); the restarter records its own with (*journal).record. `hermes
// events` computes the elapsed time between cause and effect from them:
// signal → exit (same pid), exit → ready (next gateway), restart requested →
// restart done and stop requested → stop done (same requesting pid).
const (
	// The gateway's.
	evStart          = "start"
	evReady          = "ready"
	evSignal         = "signal" // fields: signal, action
	evDrainStart     = "drain start"
	evDrainEnd       = "drain end"
	evSessionCut     = "session cut"
	evReloadOK       = "reload ok"
	evReloadFailed   = "reload failed"
	evWatchdog       = "watchdog fired"   // fields: reason, stuck_in, stack_file
	evLockConflict   = "lock conflict"    // fields: holder_pid, holder_instance, holder_policy
	evCrashLoopDelay = "crash loop delay" // fields: delay, starts, window
	evExit           = "exit"             // fields: code, reason

	// The restarter's (hermes restart and hermes stop).
	evRestartRequested = "restart requested" // fields: by_pid, user, force
	evStopRequested    = "stop requested"    // fields: by_pid, user, force
	evVerdict          = "verdict"           // fields: verdict, target
	evRungSent         = "rung sent"         // fields: signal, target, wait
	evExitObserved     = "exit observed"     // fields: target, code or signal
	evManagerAction    = "manager action"    // fields: manager, action
	evRestartDone      = "restart done"      // fields: ok, new_pid, error (new gateway ready, or not)
	evStopDone         = "stop done"         // fields: ok, error
)

// journalSkip are log events that are not lifecycle events: they would push
// the lifecycle history out of a bounded journal.
var journalSkip = map[string]bool{"upstream error": true}

func journalPath(stateDir string) string { return filepath.Join(stateDir, "events.jsonl") }

type journal struct {
	path     string
	maxBytes int64
	pid      int
	instance string
	secrets  []string // values never to be written (upstream key, lock token)
	mu       sync.Mutex
}

// openJournal returns the journal of p's instance. Nothing is opened until
// the first record; a journal that cannot be written is silently skipped:
// it must never stop a gateway or a restart.
func openJournal(p *Policy) *journal {
	j := &journal{
		path:     journalPath(p.Gateway.StateDir),
		maxBytes: p.Journal.MaxBytes,
		pid:      os.Getpid(),
		instance: p.Name,
	}
	if p.Gateway.UpstreamKeyEnv != "" {
		j.addSecret(os.Getenv(p.Gateway.UpstreamKeyEnv))
	}
	if tok, err := readLockToken(p); err == nil {
		j.addSecret(tok)
	}
	return j
}

func (j *journal) addSecret(s string) {
	if s = strings.TrimSpace(s); s != "" {
		j.secrets = append(j.secrets, s)
	}
}

// logSink is the logger's sink: every lifecycle log line becomes a journal
// line, with its level when it is not info.
func (j *journal) logSink(level, event string, fields map[string]any) {
	if journalSkip[event] {
		return
	}
	if level != levelInfo {
		fields["level"] = level
	}
	j.record(event, fields)
}

// record appends one event. fields hold only what the caller chose to log;
// any value that contains a known secret is dropped all the same.
func (j *journal) record(event string, fields map[string]any) {
	if j == nil {
		return
	}
	line := j.line(time.Now(), event, fields)
	j.mu.Lock()
	defer j.mu.Unlock()
	j.append(line)
}

// reserved are the keys every line has; a field with one of these names is
// written with a trailing underscore.
var reserved = map[string]bool{"time": true, "pid": true, "instance": true, "event": true}

// line renders one journal line: time, pid, instance and event first, then
// the fields in key order.
func (j *journal) line(now time.Time, event string, fields map[string]any) []byte {
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
	enc(event)
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := journalValue(fields[k])
		if j.secret(v) {
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
	case string, bool, int, int64, uint64, float64, map[string]int:
		return v
	case fmt.Stringer:
		return x.String()
	default:
		return fmt.Sprint(v)
	}
}

// secret reports whether v holds a known secret anywhere in it.
func (j *journal) secret(v any) bool {
	if len(j.secrets) == 0 {
		return false
	}
	s := fmt.Sprint(v)
	for _, sec := range j.secrets {
		if strings.Contains(s, sec) {
			return true
		}
	}
	return false
}

// append writes one line under the journal's flock, rotating first when the
// line would take the file past maxBytes.
func (j *journal) append(line []byte) error {
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
	// the middle of an append) must not freeze the gateway's loop, nor the
	// watchdog that would heal it: after a short wait, append without the
	// lock (one O_APPEND write is still whole) and leave rotation for later.
	locked := flockWithin(lk, journalLockWait) == nil
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if st, err := f.Stat(); err == nil && locked && st.Size() > 0 && st.Size()+int64(len(line)) > j.maxBytes {
		f.Close()
		if err := os.Rename(j.path, j.path+".1"); err != nil {
			return err
		}
		if f, err = os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600); err != nil {
			return err
		}
	}
	_, err = f.Write(line) // one write(2): O_APPEND keeps it whole
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// journalLockWait bounds the wait for the journal's and the ledger's flock.
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
