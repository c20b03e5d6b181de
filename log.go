package main

import (
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// logger writes one line per lifecycle event: time, pid, event and the
// details a timeline needs. Under systemd (JOURNAL_STREAM set) it leaves the
// timestamp to the journal and prefixes the syslog priority (<6>, <4>, <3>).
// Every line also goes to the lifecycle journal when one is attached.
type logger struct {
	mu      sync.Mutex
	w       io.Writer
	journal bool // stderr is connected to the systemd journal
	pid     int
	sink    func(level, event string, fields map[string]any) // the lifecycle journal, if any
}

func newLogger(w io.Writer) *logger {
	return &logger{w: w, journal: os.Getenv("JOURNAL_STREAM") != "", pid: os.Getpid()}
}

const (
	levelInfo  = "info"
	levelWarn  = "warn"
	levelError = "error"
)

// info, warn and errorf log one event. kv is a list of key, value pairs.
func (l *logger) info(event string, kv ...any)   { l.log(levelInfo, event, kv) }
func (l *logger) warn(event string, kv ...any)   { l.log(levelWarn, event, kv) }
func (l *logger) errorf(event string, kv ...any) { l.log(levelError, event, kv) }

func (l *logger) log(level, event string, kv []any) {
	if l == nil {
		return
	}
	fields := make(map[string]any, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		fields[fmt.Sprint(kv[i])] = kv[i+1]
	}
	var b strings.Builder
	if l.journal {
		b.WriteString(map[string]string{levelInfo: "<6>", levelWarn: "<4>", levelError: "<3>"}[level])
	} else {
		b.WriteString(time.Now().UTC().Format("2006-01-02T15:04:05.000Z "))
	}
	fmt.Fprintf(&b, "hermes[%d] %s", l.pid, event)
	if level != levelInfo && !l.journal {
		b.WriteString(" level=" + level)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%s", kv[i], logValue(kv[i+1]))
	}
	b.WriteByte('\n')
	l.mu.Lock()
	io.WriteString(l.w, b.String())
	sink := l.sink
	l.mu.Unlock()
	if sink != nil {
		sink(level, event, fields)
	}
}

func logValue(v any) string {
	var s string
	switch x := v.(type) {
	case time.Duration:
		s = x.Round(time.Millisecond).String()
	case error:
		s = x.Error()
	case map[string]int:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, 0, len(keys))
		for _, k := range keys {
			parts = append(parts, fmt.Sprintf("%s:%d", k, x[k]))
		}
		s = strings.Join(parts, ",")
	default:
		s = fmt.Sprint(v)
	}
	if s == "" || strings.ContainsAny(s, " \t\n\"=") {
		return strconv.Quote(s)
	}
	return s
}
