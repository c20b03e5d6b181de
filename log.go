package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// logger writes one line per lifecycle event: time, pid, event and the
// details a timeline needs. Under systemd (JOURNAL_STREAM set) it leaves the
// timestamp to the journal and prefixes the syslog priority (<6>, <4>, <3>).
// Every line also becomes a lifecycle journal line when a journal is
// attached.
//
// The line is formatted by the caller (CPU only) and handed to sinks: in the
// gateway those are outbox queues, so logging never waits on stderr or the
// disk (outbox.go); in one-shot commands the stderr sink writes at once.
// Known secrets are scrubbed from every stderr line and dropped from every
// journal line.
type logger struct {
	journald bool // stderr is connected to the systemd journal
	pid      int
	secrets  *redactor

	stderr  lineSink
	jsink   lineSink // the journal's queue, if any
	journal *journal // renders journal lines

	// tap sees every event logged (the alerter's, alerts.go); it must not
	// wait.
	tap   atomic.Pointer[func(level string, ev event, kv []any)]
	count func(ev event, kv []any) // the gateway's metrics count events (metrics.go)
}

// lineSink takes one finished line.
type lineSink interface{ put(b []byte) }

// writerSink writes each line at once (one-shot commands, tests).
type writerSink struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *writerSink) put(b []byte) {
	s.mu.Lock()
	s.w.Write(b)
	s.mu.Unlock()
}

// journalWriterSink appends each line to a journal at once.
type journalWriterSink struct{ j *journal }

func (s journalWriterSink) put(b []byte) { s.j.appendLines([][]byte{b}) }

// newLogger returns a logger that writes to w at once (no journal yet).
func newLogger(w io.Writer) *logger {
	return &logger{journald: os.Getenv("JOURNAL_STREAM") != "", pid: os.Getpid(), stderr: &writerSink{w: w}}
}

// logQueues is a gateway's asynchronous logging: one sink for stderr, one
// for the journal.
type logQueues struct {
	stderr, journal *sink
}

// newAsyncLogger returns a logger whose lines go through outbox sinks: one
// writer for w and, when j is not nil, one for the journal. It never waits
// on either.
func newAsyncLogger(w io.Writer, j *journal) (*logger, *logQueues) {
	l := newLogger(w)
	q := &logQueues{}
	q.stderr = newSink("stderr", func(batch [][]byte) error {
		for _, b := range batch {
			if _, err := w.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	q.stderr.report = func(n uint64) []byte {
		return l.stderrLine(time.Now(), levelWarn, evLogDropped, []any{"sink", "stderr", "dropped", n})
	}
	l.stderr = q.stderr
	if j != nil {
		l.attachJournal(j)
		q.journal = newSink("journal", j.appendLines)
		q.journal.report = func(n uint64) []byte {
			return j.line(time.Now(), evLogDropped.String(), map[string]any{"sink": "journal", "dropped": n, "level": levelWarn})
		}
		q.journal.onError = func(err error) {
			if err != nil {
				l.stderr.put(l.stderrLine(time.Now(), levelWarn, evJournalFailed, []any{"journal", j.path, "error", err}))
			} else {
				l.stderr.put(l.stderrLine(time.Now(), levelInfo, evJournalFailed, []any{"journal", j.path, "state", "writing again"}))
			}
		}
		l.jsink = q.journal
	}
	return l, q
}

// newRecorder returns a logger that journals events (record) through a
// queue and writes nothing to stderr: the restarter's, which prints its own
// progress for people. Flush the sink before the command exits.
func newRecorder(j *journal) (*logger, *sink) {
	l := &logger{pid: os.Getpid(), stderr: &writerSink{w: io.Discard}}
	l.attachJournal(j)
	q := newSink("journal", j.appendLines)
	l.jsink = q
	return l, q
}

// attachJournal makes every later line a journal line too, and makes the
// journal's secrets the logger's.
func (l *logger) attachJournal(j *journal) {
	l.journal = j
	l.secrets = j.secrets
	if l.jsink == nil {
		l.jsink = journalWriterSink{j}
	}
}

// flush waits for the queued lines until the deadline.
func (q *logQueues) flush(deadline time.Time) bool {
	if q == nil {
		return true
	}
	return flushAll(deadline, q.stderr, q.journal)
}

// lost is how many lines were dropped or failed, on all sinks.
func (q *logQueues) lost() uint64 {
	if q == nil {
		return 0
	}
	return q.stderr.lost() + q.journal.lost()
}

const (
	levelInfo  = "info"
	levelWarn  = "warn"
	levelError = "error"
)

// info, warn and errorf log one event. kv is a list of key, value pairs.
func (l *logger) info(ev event, kv ...any)   { l.log(levelInfo, ev, kv) }
func (l *logger) warn(ev event, kv ...any)   { l.log(levelWarn, ev, kv) }
func (l *logger) errorf(ev event, kv ...any) { l.log(levelError, ev, kv) }

func (l *logger) log(level string, ev event, kv []any) {
	if l == nil {
		return
	}
	if l.count != nil {
		l.count(ev, kv)
	}
	now := time.Now()
	l.stderr.put(l.stderrLine(now, level, ev, kv))
	if tap := l.tap.Load(); tap != nil {
		(*tap)(level, ev, kv)
	}
	if l.journal != nil && !journalSkip[ev] {
		fields := make(map[string]any, len(kv)/2+1)
		for i := 0; i+1 < len(kv); i += 2 {
			fields[fmt.Sprint(kv[i])] = kv[i+1]
		}
		if level != levelInfo {
			fields["level"] = level
		}
		l.jsink.put(l.journal.line(now, ev.String(), fields))
	}
}

// record journals an event without a stderr line: the restarter prints its
// own progress lines for people and journals the events for the timeline.
// Empty values are left out.
func (l *logger) record(ev event, kv ...any) {
	if l == nil || l.journal == nil {
		return
	}
	fields := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		if v := kv[i+1]; v != "" && v != 0 {
			fields[fmt.Sprint(kv[i])] = v
		}
	}
	l.jsink.put(l.journal.line(time.Now(), ev.String(), fields))
}

// stderrLine renders one stderr line, secrets scrubbed.
func (l *logger) stderrLine(now time.Time, level string, ev event, kv []any) []byte {
	var b strings.Builder
	if l.journald {
		b.WriteString(map[string]string{levelInfo: "<6>", levelWarn: "<4>", levelError: "<3>"}[level])
	} else {
		b.WriteString(now.UTC().Format("2006-01-02T15:04:05.000Z "))
	}
	fmt.Fprintf(&b, "hermes[%d] %s", l.pid, ev)
	if level != levelInfo && !l.journald {
		b.WriteString(" level=" + level)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%s", kv[i], logValue(kv[i+1]))
	}
	b.WriteByte('\n')
	return []byte(l.secrets.scrub(b.String()))
}

func logValue(v any) string {
	var s string
	switch x := v.(type) {
	case time.Duration:
		s = x.Round(time.Millisecond).String()
	case error:
		s = x.Error()
	default:
		s = fmt.Sprint(v)
	}
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}
