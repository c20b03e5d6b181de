package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

const eventsUsage = `Print the lifecycle timeline of the gateway: every start, signal, drain,
exit, watchdog, lock conflict, crash-loop delay and restart, with the time
from cause to effect (signal to exit, exit to the next ready, rung sent to
exit observed, restart requested to done).

    $ hermes events
    $ hermes events --since 1h
    $ hermes events --since yesterday
    $ hermes events --since 2026-11-23T14:00:00+01:00
    $ hermes events --json | jq 'select(.event == "exit")'

--incident prints the most recent incident instead: the events from the
first abnormal one (a watchdog exit, a crash, a crash-loop delay, an unclean
death, a lock conflict, a failed restart, a drain that cut sessions, Telegram
polling in trouble) to the gateway serving again, with a summary of what
happened, how long the gateway was unavailable, what was cut or re-run and
what hermes did:

    $ hermes events --incident
    $ hermes events --incident --json | jq .unavailable_ms
`

// journalEvent is one parsed journal line.
type journalEvent struct {
	Time     time.Time
	PID      int
	Instance string
	Event    string // as written
	Kind     event  // the same, typed; evNone for a name this version does not know
	Fields   map[string]any
	raw      []byte

	elapsed string // cause → effect, filled by spans
}

func runEvents(args []string) error {
	fs := newFlagSet("events", eventsUsage)
	tf := addTargetFlags(fs)
	var cut time.Time
	fs.Func("since", "only events since `WHEN`: "+sinceForms+" (default: all)", func(s string) (err error) {
		cut, err = parseSince(s, time.Now())
		return err
	})
	asJSON := fs.Bool("json", false, "print the journal lines as JSON, one per line")
	inc := fs.Bool("incident", false, "report the most recent incident: what happened, how long the gateway was unavailable, what hermes did, its timeline (with --json: one object)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	t, err := tf.resolve("events", false)
	if err != nil {
		return err
	}
	p := t.p
	evs, skipped, err := readJournal(p.Gateway.StateDir)
	if err != nil {
		return err
	}
	if len(evs) == 0 && skipped == 0 {
		fmt.Fprintf(os.Stderr, "hermes: no lifecycle events yet in %s\n", journalPath(p.Gateway.StateDir))
		return nil
	}
	spans(evs)
	if *inc {
		return printIncident(os.Stdout, os.Stderr, evs, cut, p, *asJSON)
	}
	if !cut.IsZero() {
		i := sort.Search(len(evs), func(i int) bool { return !evs[i].Time.Before(cut) })
		evs = evs[i:]
		if len(evs) == 0 {
			fmt.Fprintf(os.Stderr, "hermes: no lifecycle events since %s in %s\n", cut.Local().Format("2006-01-02 15:04:05"), journalPath(p.Gateway.StateDir))
			return nil
		}
	}
	if *asJSON {
		w := bufio.NewWriter(os.Stdout)
		for _, ev := range evs {
			w.Write(ev.raw)
			w.WriteByte('\n')
		}
		return w.Flush()
	}
	renderEvents(os.Stdout, evs, time.Local)
	if skipped > 0 {
		fmt.Fprintf(os.Stderr, "hermes: %d damaged journal lines skipped\n", skipped)
	}
	return nil
}

// sinceForms are the forms --since takes, for its help and its errors.
const sinceForms = "a duration back from now (90s, 5m, 2h, 3d), a date (2026-11-23), a time (2026-11-23T14:00:00Z, or 2026-11-23 14:00 local), today or yesterday"

var (
	sinceDaysRe  = lazyRegexp(`^(\d+)d(.*)$`)
	sinceLayouts = []string{"2006-01-02T15:04", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02 15:04:05"}
)

// parseSince turns what an operator types after --since into the moment
// the timeline starts: a positive duration back from now (a Go duration,
// or days: 3d, 1d12h), an RFC 3339 time, a local date or date and time, or
// today and yesterday (local midnight).
func parseSince(s string, now time.Time) (time.Time, error) {
	v := strings.TrimSpace(s)
	midnight := func(days int) time.Time {
		y, m, d := now.Date()
		return time.Date(y, m, d-days, 0, 0, 0, 0, now.Location())
	}
	switch strings.ToLower(v) {
	case "today":
		return midnight(0), nil
	case "yesterday":
		return midnight(1), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		return t, nil
	}
	if t, err := time.ParseInLocation("2006-01-02", v, now.Location()); err == nil {
		return t, nil
	}
	for _, layout := range sinceLayouts {
		if t, err := time.ParseInLocation(layout, v, now.Location()); err == nil {
			return t, nil
		}
	}
	d, err := parseDays(v)
	if _, nerr := strconv.Atoi(v); nerr == nil && v != "0" {
		return time.Time{}, fmt.Errorf("a number without a unit: write %ss, %sm, %sh or %sd", v, v, v, v)
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("not a time or a duration: use %s", sinceForms)
	}
	switch {
	case d < 0:
		return time.Time{}, fmt.Errorf("a negative duration: write how far back to go, like %s", strings.TrimPrefix(v, "-"))
	case d == 0:
		return time.Time{}, errors.New("a zero duration: leave --since out to see every event")
	}
	return now.Add(-d), nil
}

// parseDays is time.ParseDuration that also takes whole days first (3d,
// 1d12h), as operators write them.
func parseDays(s string) (time.Duration, error) {
	m := sinceDaysRe().FindStringSubmatch(s)
	if m == nil {
		return time.ParseDuration(s)
	}
	days, err := strconv.Atoi(m[1])
	if err != nil || days > 100000 {
		return 0, fmt.Errorf("%q: too many days", s)
	}
	d := time.Duration(days) * 24 * time.Hour
	if m[2] != "" {
		rest, err := time.ParseDuration(m[2])
		if err != nil || rest < 0 {
			return 0, fmt.Errorf("%q is not a duration", s)
		}
		d += rest
	}
	return d, nil
}

// readJournal reads events.jsonl.1 then events.jsonl, in time order.
// Damaged lines (a crash mid-write, a full disk) are counted and skipped.
func readJournal(stateDir string) (evs []journalEvent, skipped int, err error) {
	for _, path := range []string{journalPath(stateDir) + ".1", journalPath(stateDir)} {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("reading journal: %w", err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			if len(bytes.TrimSpace(line)) == 0 {
				continue
			}
			ev, ok := parseJournalLine(line)
			if !ok {
				skipped++
				continue
			}
			evs = append(evs, ev)
		}
	}
	// Several processes append; their clocks are one clock, but a line may
	// land a moment after a later-stamped one. Order by time, stably.
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
	return evs, skipped, nil
}

func parseJournalLine(line []byte) (journalEvent, bool) {
	var m map[string]any
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	if err := d.Decode(&m); err != nil {
		return journalEvent{}, false
	}
	ev := journalEvent{Fields: map[string]any{}, raw: append([]byte(nil), line...)}
	ts, _ := m["time"].(string)
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return journalEvent{}, false
	}
	ev.Time = t
	if n, ok := m["pid"].(json.Number); ok {
		pid, _ := n.Int64()
		ev.PID = int(pid)
	}
	ev.Instance, _ = m["instance"].(string)
	ev.Event, _ = m["event"].(string)
	if ev.Event == "" {
		return journalEvent{}, false
	}
	ev.Kind = eventNamed(ev.Event)
	for k, v := range m {
		if !reserved[k] {
			ev.Fields[k] = v
		}
	}
	return ev, true
}

func (ev journalEvent) str(k string) string {
	if v, ok := ev.Fields[k]; ok {
		return fmt.Sprint(v)
	}
	return ""
}

// spans notes on each effect the time since its cause:
//
//	signal (TERM, INT, USR1) or watchdog fired  →  exit of the same pid
//	exit                                        →  ready of the next gateway
//	rung sent                                   →  exit observed (same restarter)
//	restart requested / stop requested          →  restart done / stop done (same pid)
func spans(evs []journalEvent) {
	type cause struct {
		at   time.Time
		what string
	}
	byPID := map[int]cause{}
	requests := map[int]cause{}
	rungs := map[int]cause{}    // the restarter's last rung, by its pid
	handoffs := map[int]cause{} // a handoff asked of a gateway, by the gateway's pid
	var lastExit *journalEvent
	for i := range evs {
		ev := &evs[i]
		switch ev.Kind {
		case evSignal:
			sig := ev.str("signal")
			if sig == "HUP" || ev.str("action") == "none" || ev.str("action") == "handoff" {
				break
			}
			if _, ok := byPID[ev.PID]; !ok {
				byPID[ev.PID] = cause{ev.Time, "signal " + sig}
			}
		case evWatchdog:
			if _, ok := byPID[ev.PID]; !ok {
				byPID[ev.PID] = cause{ev.Time, "watchdog fired"}
			}
		case evRestartNow:
			if ev.str("action") != "refused" {
				byPID[ev.PID] = cause{ev.Time, "restart now"}
			}
		case evHandoffRequested:
			handoffs[ev.PID] = cause{ev.Time, "handoff requested"}
			byPID[ev.PID] = cause{ev.Time, "handoff requested"}
		case evHandoffStarted, evHandoffReady, evHandoffDone, evHandoffFailed:
			if c, ok := handoffs[ev.PID]; ok {
				ev.elapsed = since(ev.Time, c.at) + " after " + c.what
			}
			if ev.Kind == evHandoffFailed {
				delete(handoffs, ev.PID)
				delete(byPID, ev.PID)
			}
		case evDrainEnd:
			if c, ok := handoffs[ev.PID]; ok && ev.str("reason") == "handoff" {
				ev.elapsed = since(ev.Time, c.at) + " after " + c.what
			}
		case evExit:
			delete(handoffs, ev.PID)
			if c, ok := byPID[ev.PID]; ok {
				ev.elapsed = since(ev.Time, c.at) + " after " + c.what
				delete(byPID, ev.PID)
			}
			lastExit = ev
		case evReady:
			if from, _ := strconv.Atoi(ev.str("handoff_from")); from != 0 {
				if c, ok := handoffs[from]; ok {
					ev.elapsed = since(ev.Time, c.at) + fmt.Sprintf(" after handoff requested of %d", from)
				}
				break
			}
			if lastExit != nil && lastExit.PID != ev.PID {
				ev.elapsed = since(ev.Time, lastExit.Time) + fmt.Sprintf(" after exit of %d", lastExit.PID)
			}
			lastExit = nil
		case evRungSent:
			rungs[ev.PID] = cause{ev.Time, "rung " + orDefault(ev.str("signal"), ev.str("request"))}
		case evExitObserved:
			if c, ok := rungs[ev.PID]; ok {
				ev.elapsed = since(ev.Time, c.at) + " after " + c.what
				delete(rungs, ev.PID)
			}
		case evRestartRequested, evStopRequested:
			requests[ev.PID] = cause{ev.Time, ev.Kind.String()}
		case evRestartDone, evStopDone:
			if c, ok := requests[ev.PID]; ok {
				ev.elapsed = since(ev.Time, c.at) + " after " + c.what
				delete(requests, ev.PID)
			}
		}
	}
}

func since(t, cause time.Time) string {
	d := t.Sub(cause)
	switch {
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(10 * time.Millisecond).String()
	}
	return d.Round(time.Second).String()
}

// renderEvents prints the timeline table in loc.
func renderEvents(w io.Writer, evs []journalEvent, loc *time.Location) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tPID\tEVENT\tELAPSED\tDETAIL")
	for _, ev := range evs {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", ev.Time.In(loc).Format("2006-01-02 15:04:05.000"), ev.PID, ev.Event, ev.elapsed, ev.detail())
	}
	tw.Flush()
}

// detailOrder puts the fields a reader looks for first; the rest follow
// in key order.
var detailOrder = []string{"signal", "action", "code", "reason", "level", "verdict", "target", "delay", "stuck_in", "error"}

func (ev journalEvent) detail() string {
	rank := map[string]int{}
	for i, k := range detailOrder {
		rank[k] = i - len(detailOrder)
	}
	keys := make([]string, 0, len(ev.Fields))
	for k := range ev.Fields {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		ri, rj := rank[keys[i]], rank[keys[j]]
		if ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		v := ev.Fields[k]
		if m, ok := v.(map[string]any); ok {
			b, _ := json.Marshal(m)
			v = string(b)
		}
		parts = append(parts, k+"="+logValue(fmt.Sprint(v)))
	}
	return strings.Join(parts, " ")
}
