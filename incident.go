package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// `hermes events --incident`: the report an operator used to put together
// by hand after an outage. It finds the most recent incident in the
// journal, that is the events from the first abnormal one to the moment
// the gateway served again, and says in one paragraph what happened, how
// long the gateway was unavailable, which sessions were cut or re-run and
// what hermes did about it; then the incident's timeline, with the same
// cause → effect times as `hermes events` (spans).
//
// How events are grouped:
//
//   - An incident starts at an abnormal event (abnormalEvent), or a little
//     before it at its cause: the signal a frozen loop left unread, the
//     drain that timed out, the hermes restart or stop in flight, the
//     handoff asked for.
//   - It ends at the first event after which a gateway serves (a "ready",
//     including a handoff successor's; a handoff failback), nothing it
//     started is still going on (a drain cutting sessions, a Telegram
//     episode, a hermes restart waiting for its gateway: its "restart done"
//     is taken in), or, when nobody serves, at a planned stop (exit 0): the
//     gateway was stopped, not healed. A failure that leaves a gateway
//     serving (a failed handoff: the old gateway serves on) ends at once.
//   - Another abnormal event within the settle window (crash_loop.window)
//     of that end continues the same incident, unless a person asked for a
//     restart, stop or start, or a gateway was stopped (exit 0), in between: a gateway that is ready and crashes
//     again is not healed, and a crash loop is one incident, not ten.
//   - Telegram trouble (a polling conflict, failing polls) is degraded, not
//     unavailable: HTTP is served throughout. Such an episode is an incident
//     of its own kind that ends at "telegram conflict end" or "telegram poll
//     recovered" (or with the process), and reports how long the bot was
//     degraded, with an unavailability of 0.
//   - No ready after the last abnormal event: the incident is ongoing, and
//     its unavailability is counted up to the journal's last line.
//
// Unavailable is the time no gateway served, summed over the incident: from
// when the last serving gateway stopped serving (its last heartbeat when the
// watchdog or hermes restart found it frozen, its last sign of life when a
// later start found it dead, the start of a drain, an exit) to the next
// ready. Time the instance spent stopped on purpose (after an exit 0) before
// the incident does not count.

// Abnormal events. Everything else in the journal (starts, readies,
// signals, planned drains and exits, reloads, alerts) is normal, and is
// shown in an incident's timeline only when it falls inside one.
//
//	watchdog fired                  the loop froze; exit 70 follows
//	exit, code not 0 and not 75     a failure (1), the watchdog (70), a conflict (78), a panic (2)
//	serve failed                    the gateway could not serve (a socket lost, a fatal error)
//	unclean exit                    found at a start: the previous gateway died unrecorded (SIGKILL, OOM)
//	crash loop delay                the crash-loop guard held a start back
//	lock conflict                   the token lock is held by another gateway
//	handoff failed, handoff failback  a handoff's successor failed before, or died after, taking over
//	drain timeout                   a drain ran out of time: its sessions are cut
//	restart done / start done / stop done with ok=false   hermes restart, start or stop failed
//	verdict frozen, stopped, zombie, crash-looping        hermes restart or stop found the gateway unwell
//	rung sent KILL                  the restart ladder had to kill the gateway
//	memory limit                    (by name: the memory guard, where built) the gateway hit its memory limit
//	telegram conflict, telegram poll failing              degraded: the bot does not poll; HTTP serves
//
// "alert sent" and "alert failed" (by name: the alerts, where built) are
// not abnormal; inside an incident they are in its timeline and its
// actions.
func abnormalEvent(ev journalEvent) (abnormal, degraded bool) {
	switch ev.Kind {
	case evWatchdog, evServeFailed, evUncleanExit, evCrashLoopDelay, evLockConflict,
		evHandoffFailed, evHandoffFailback, evDrainTimeout:
		return true, false
	case evExit:
		code, err := strconv.Atoi(ev.str("code"))
		return err != nil || (code != exitOK && code != exitRestart), false
	case evRestartDone, evStartDone, evStopDone:
		return ev.str("ok") == "false", false
	case evVerdict:
		switch ev.str("verdict") {
		case verdictFrozen, verdictStopped, verdictZombie, verdictCrashLoop:
			return true, false
		}
	case evRungSent:
		return ev.str("signal") == "KILL", false
	case evTelegramConflict, evTelegramFailing, evTelegramStoreFailing:
		return true, true
	}
	return ev.Event == evNameMemoryLimit, false
}

// Event names other versions or builds may write; matched by name, so this
// file needs none of their code.
const (
	evNameMemoryLimit = "memory limit"
	evNameAlertSent   = "alert sent"
	evNameAlertFailed = "alert failed"
)

// Incident kinds, as --json gives them.
const (
	kindCrashLoop   = "crash-loop"
	kindWatchdog    = "watchdog"
	kindFrozen      = "frozen"
	kindUnclean     = "unclean-death"
	kindMemory      = "memory-limit"
	kindLock        = "lock-conflict"
	kindFailedStart = "failed-restart"
	kindCut         = "sessions-cut"
	kindServeFailed = "serve-failed"
	kindCrash       = "crash"
	kindTelegram    = "telegram-degraded"
)

// How an incident ended.
const (
	endReady    = "ready"     // a gateway serves again
	endServedOn = "served-on" // a gateway served throughout
	endStopped  = "stopped"   // stopped on purpose, nobody serves
	endOngoing  = "ongoing"   // not over by the journal's last line
	endRecover  = "recovered" // a degraded episode ended
)

// incident is one incident found in a journal: evs[first:last+1].
type incident struct {
	evs         []journalEvent
	first, last int
	abnormal    []int // indexes of its abnormal events
	end         string
	kind        string
	unavailable time.Duration
	downFrom    time.Time // when it became unavailable (zero: never)
	degraded    time.Duration
	sessionsCut int
	turnsCut    int
	turnsRerun  int
	actions     []string
}

// downSpan is a time no gateway served.
type downSpan struct {
	from, to time.Time // to is zero while it lasts
	planned  bool      // began with a planned stop (exit 0): not an outage by itself
}

// incidentModel follows which gateways serve, event by event.
type incidentModel struct {
	serving  map[int]bool
	lastUp   time.Time
	spans    []downSpan
	telegram map[int]bool // pids with an open Telegram episode
	cutting  map[int]bool // pids whose drain timed out, until they exit
	requests map[int]bool // restarters with a request in flight
}

var (
	silentRe   = lazyRegexp(`(?:not ticked for|waited unread for) ([0-9.]+(?:ns|µs|us|ms|s|m|h)[0-9.msh]*)`)
	lastSeenRe = lazyRegexp(`last seen alive (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)`)
)

// frozenFor reads "has not ticked for 2.004s" from a watchdog reason or a
// verdict's detail.
func frozenFor(s string) time.Duration {
	if m := silentRe().FindStringSubmatch(s); m != nil {
		if d, err := time.ParseDuration(m[1]); err == nil {
			return d
		}
	}
	return 0
}

func newIncidentModel() *incidentModel {
	return &incidentModel{serving: map[int]bool{}, telegram: map[int]bool{}, cutting: map[int]bool{}, requests: map[int]bool{},
		spans: []downSpan{{planned: true}}}
}

func (m *incidentModel) up(t time.Time, pid int) {
	if len(m.serving) == 0 {
		m.spans[len(m.spans)-1].to = t
		m.lastUp = t
	}
	m.serving[pid] = true
}

// down notes that pid stops serving at t (or since, when known earlier).
func (m *incidentModel) down(t time.Time, pid int, since time.Time, planned bool) {
	if !m.serving[pid] {
		return
	}
	delete(m.serving, pid)
	if len(m.serving) > 0 {
		return
	}
	from := t
	if !since.IsZero() && since.Before(t) {
		from = since
	}
	if from.Before(m.lastUp) {
		from = m.lastUp
	}
	m.spans = append(m.spans, downSpan{from: from, planned: planned})
}

func (m *incidentModel) apply(ev journalEvent) {
	switch ev.Kind {
	case evReady:
		m.up(ev.Time, ev.PID)
	case evHandoffFailback:
		m.up(ev.Time, ev.PID)
	case evWatchdog:
		m.down(ev.Time, ev.PID, ev.Time.Add(-frozenFor(ev.str("reason"))), false)
	case evVerdict:
		if ev.str("verdict") == verdictFrozen {
			pid, _ := strconv.Atoi(ev.str("target"))
			m.down(ev.Time, pid, ev.Time.Add(-frozenFor(ev.str("detail"))), false)
		}
	case evDrainStart:
		m.down(ev.Time, ev.PID, time.Time{}, true)
	case evDrainTimeout:
		m.cutting[ev.PID] = true
	case evExit:
		code, _ := strconv.Atoi(ev.str("code"))
		m.down(ev.Time, ev.PID, time.Time{}, code == exitOK)
		delete(m.telegram, ev.PID)
		delete(m.cutting, ev.PID)
	case evExitObserved:
		pid, _ := strconv.Atoi(ev.str("target"))
		m.down(ev.Time, pid, time.Time{}, false)
		delete(m.telegram, pid)
		delete(m.cutting, pid)
	case evUncleanExit:
		pid, _ := strconv.Atoi(ev.str("dead_pid"))
		since := time.Time{}
		if t, err := time.Parse(time.RFC3339, ev.str("last_seen")); err == nil {
			since = t
		}
		m.down(ev.Time, pid, since, false)
		delete(m.telegram, pid)
		delete(m.cutting, pid)
	case evTelegramConflict, evTelegramFailing, evTelegramStoreFailing:
		m.telegram[ev.PID] = true
	case evTelegramConflictEnd, evTelegramRecovered, evTelegramStoreRecovered:
		delete(m.telegram, ev.PID)
	case evRestartRequested, evStopRequested, evStartRequested:
		m.requests[ev.PID] = true
	case evRestartDone, evStopDone, evStartDone:
		delete(m.requests, ev.PID)
	}
}

// findIncidents groups the journal's events into incidents, oldest first.
// settle is how long after an incident's end another abnormal event still
// belongs to it. Call spans(evs) first for the timeline's elapsed times.
func findIncidents(evs []journalEvent, settle time.Duration) []*incident {
	m := newIncidentModel()
	var out []*incident
	applied := 0 // events applied to m so far
	advance := func(to int) {
		for ; applied <= to && applied < len(evs); applied++ {
			m.apply(evs[applied])
		}
	}
	prevEnd := -1
	for i := 0; i < len(evs); i++ {
		if ab, _ := abnormalEvent(evs[i]); !ab {
			continue
		}
		inc := &incident{evs: evs, first: leadIn(evs, i, prevEnd+1)}
		advance(inc.first - 1)
		inFlight := map[int]bool{} // requests that belong to the incident
		for k := range m.requests {
			inFlight[k] = true
		}
		wasDown := len(m.serving) == 0
		j := inc.first
		for ; j < len(evs); j++ {
			ev := evs[j]
			advance(j)
			if ab, _ := abnormalEvent(ev); ab && j >= i {
				inc.abnormal = append(inc.abnormal, j)
			}
			switch ev.Kind {
			case evRestartRequested, evStopRequested, evStartRequested:
				inFlight[ev.PID] = true
			case evRestartDone, evStopDone, evStartDone:
				delete(inFlight, ev.PID)
			}
			if len(m.serving) == 0 {
				wasDown = true
			}
			if j < i || len(m.telegram) > 0 || len(m.cutting) > 0 {
				continue
			}
			end := incidentEnd(m, ev, wasDown)
			if end == "" {
				continue
			}
			// A request in flight (hermes restart waiting for the new
			// gateway) ends the incident with its answer, if it comes.
			if len(inFlight) > 0 {
				if k := requestDone(evs, j, inFlight, settle); k > j {
					continue
				}
			}
			next := nextAbnormal(evs, j, settle)
			if next > j {
				continue
			}
			inc.end = end
			if end == endReady {
				j = rerunsAfter(evs, inc.first, j)
			}
			break
		}
		if j >= len(evs) {
			j = len(evs) - 1
			inc.end = endOngoing
		}
		inc.last = j
		if inc.end == endServedOn && allDegraded(inc) {
			inc.end = endRecover
		}
		inc.measure(m.spans, prevEnd)
		out = append(out, inc)
		prevEnd = j
		i = j
	}
	return out
}

// incidentEnd says how an incident could end at ev, given the gateways
// serving after it: ready again (it was down), served on, or stopped; ""
// if it cannot end there.
func incidentEnd(m *incidentModel, ev journalEvent, wasDown bool) string {
	switch {
	case len(m.serving) > 0 && wasDown:
		return endReady
	case len(m.serving) > 0:
		return endServedOn
	case ev.Kind == evExit && ev.str("code") == "0", ev.Kind == evStopDone && ev.str("ok") == "true":
		return endStopped
	}
	return ""
}

// leadIn returns where the incident whose first abnormal event is evs[i]
// starts: at its cause when that is in the journal (not before floor).
func leadIn(evs []journalEvent, i, floor int) int {
	first := i
	ev := evs[i]
	switch ev.Kind {
	case evWatchdog, evDrainTimeout:
		// The signal the frozen loop never read; the drain that timed out
		// and the signal that began it.
		for k := i - 1; k >= floor; k-- {
			p := evs[k]
			if p.PID != ev.PID {
				continue
			}
			if p.Kind == evReady || p.Kind == evStart {
				break
			}
			if p.Kind == evDrainStart || (p.Kind == evSignal && p.str("action") != "none" && p.str("signal") != "HUP") {
				first = k
			}
		}
	case evHandoffFailed, evHandoffFailback:
		for k := i - 1; k >= floor; k-- {
			if evs[k].PID == ev.PID && evs[k].Kind == evHandoffRequested {
				first = k
				break
			}
		}
	}
	// A hermes restart, stop or start in flight: it is why.
	done := map[int]bool{}
	for k := i - 1; k >= floor; k-- {
		switch evs[k].Kind {
		case evRestartDone, evStopDone, evStartDone:
			done[evs[k].PID] = true
		case evRestartRequested, evStopRequested, evStartRequested:
			if !done[evs[k].PID] && k < first {
				first = k
			}
		}
	}
	return first
}

// requestDone returns the index of the answer to a request in flight, if
// it comes within settle of evs[j]; else j.
func requestDone(evs []journalEvent, j int, inFlight map[int]bool, settle time.Duration) int {
	for k := j + 1; k < len(evs) && evs[k].Time.Sub(evs[j].Time) <= settle; k++ {
		switch evs[k].Kind {
		case evRestartDone, evStopDone, evStartDone:
			if inFlight[evs[k].PID] {
				return k
			}
		}
	}
	return j
}

// rerunWindow bounds how long after the ready that ends an incident the
// new gateway's re-runs of Telegram turns (cut or lost by the incident)
// still belong to it.
const rerunWindow = 10 * time.Second

// rerunsAfter returns the index of the last "telegram rerun" of the
// gateway whose ready ended the incident evs[first:j+1], within rerunWindow
// of that ready and before anything abnormal or a person's request; else j.
func rerunsAfter(evs []journalEvent, first, j int) int {
	r := j
	for r > first && evs[r].Kind != evReady {
		r--
	}
	last := j
	for k := j + 1; k < len(evs) && evs[k].Time.Sub(evs[r].Time) <= rerunWindow; k++ {
		if ab, _ := abnormalEvent(evs[k]); ab {
			break
		}
		switch evs[k].Kind {
		case evRestartRequested, evStopRequested, evStartRequested:
			return last
		case evTelegramRerun:
			if evs[k].PID == evs[r].PID {
				last = k
			}
		}
	}
	return last
}

// nextAbnormal returns the index of the next abnormal event within settle
// of evs[j], unless a person asked for a restart, stop or start first, or
// the gateway was stopped (exit 0); else j.
func nextAbnormal(evs []journalEvent, j int, settle time.Duration) int {
	for k := j + 1; k < len(evs) && evs[k].Time.Sub(evs[j].Time) <= settle; k++ {
		switch evs[k].Kind {
		case evRestartRequested, evStopRequested, evStartRequested:
			return j
		case evExit:
			if evs[k].str("code") == "0" {
				return j
			}
		}
		if ab, _ := abnormalEvent(evs[k]); ab {
			return k
		}
	}
	return j
}

func allDegraded(inc *incident) bool {
	for _, k := range inc.abnormal {
		if _, deg := abnormalEvent(inc.evs[k]); !deg {
			return false
		}
	}
	return true
}

func (inc *incident) events() []journalEvent { return inc.evs[inc.first : inc.last+1] }

func (inc *incident) started() time.Time { return inc.evs[inc.first].Time }
func (inc *incident) ended() time.Time   { return inc.evs[inc.last].Time }

// measure counts the incident's unavailability, its degraded time, its
// cut and re-run sessions and turns, then classifies it and writes its
// actions and summary.
func (inc *incident) measure(spans []downSpan, prevEnd int) {
	start, end := inc.started(), inc.ended()
	floor := time.Time{}
	if prevEnd >= 0 {
		floor = inc.evs[prevEnd].Time
	}
	for _, s := range spans {
		to := s.to
		if to.IsZero() || to.After(end) {
			to = end // it lasts: counted up to the incident's end
		}
		if !to.After(start) {
			continue // over before the incident began
		}
		from := s.from
		if s.planned && from.Before(start) {
			from = start // stopped on purpose until the incident began
		}
		if from.Before(floor) {
			from = floor // the previous incident counted it
		}
		if to.After(from) {
			inc.unavailable += to.Sub(from)
			if inc.downFrom.IsZero() {
				inc.downFrom = from
			}
		}
	}
	for _, ev := range inc.events() {
		switch ev.Kind {
		case evSessionCut:
			inc.sessionsCut++
		case evTelegramTurnCut:
			inc.turnsCut++
		case evTelegramRerun:
			inc.turnsRerun++
		}
	}
	inc.degraded = degradedTime(inc)
	inc.classify()
	inc.actions = incidentActions(inc)
}

// degradedTime is how long the incident's Telegram episodes lasted.
func degradedTime(inc *incident) time.Duration {
	var total time.Duration
	open := map[int]time.Time{}
	for _, ev := range inc.events() {
		switch ev.Kind {
		case evTelegramConflict, evTelegramFailing, evTelegramStoreFailing:
			if _, ok := open[ev.PID]; !ok {
				open[ev.PID] = ev.Time
			}
		case evTelegramConflictEnd, evTelegramRecovered, evTelegramStoreRecovered, evExit:
			if t, ok := open[ev.PID]; ok {
				total += ev.Time.Sub(t)
				delete(open, ev.PID)
			}
		}
	}
	for _, t := range open {
		total += inc.ended().Sub(t)
	}
	return total
}

// classify names the incident after its most telling abnormal event.
func (inc *incident) classify() {
	has := map[string]bool{}
	failingExits := 0
	for _, k := range inc.abnormal {
		ev := inc.evs[k]
		switch ev.Kind {
		case evCrashLoopDelay:
			has[kindCrashLoop] = true
		case evVerdict:
			if ev.str("verdict") == verdictCrashLoop {
				has[kindCrashLoop] = true
			} else {
				has[kindFrozen] = true
			}
		case evRungSent:
			has[kindFrozen] = true
		case evWatchdog:
			has[kindWatchdog] = true
		case evUncleanExit:
			has[kindUnclean] = true
		case evLockConflict:
			has[kindLock] = true
		case evHandoffFailed, evHandoffFailback, evRestartDone, evStartDone, evStopDone:
			has[kindFailedStart] = true
		case evDrainTimeout:
			has[kindCut] = true
		case evServeFailed:
			has[kindServeFailed] = true
		case evExit:
			failingExits++
			has[kindCrash] = true
		case evTelegramConflict, evTelegramFailing, evTelegramStoreFailing:
			has[kindTelegram] = true
		default:
			if ev.Event == evNameMemoryLimit {
				has[kindMemory] = true
			}
		}
	}
	if failingExits >= 3 {
		has[kindCrashLoop] = true
	}
	for _, k := range []string{kindCrashLoop, kindWatchdog, kindFrozen, kindMemory, kindUnclean, kindLock, kindServeFailed, kindFailedStart, kindCut, kindCrash, kindTelegram} {
		if has[k] {
			inc.kind = k
			return
		}
	}
	inc.kind = kindCrash
}

// kindTitles are the kinds as the text report names them.
var kindTitles = map[string]string{
	kindCrashLoop: "crash loop", kindWatchdog: "watchdog: frozen loop", kindFrozen: "frozen gateway killed by hermes",
	kindUnclean: "unclean death", kindMemory: "memory limit", kindLock: "token-lock conflict",
	kindFailedStart: "failed restart", kindCut: "sessions cut by a drain timeout", kindServeFailed: "serve failed",
	kindCrash: "gateway crash", kindTelegram: "Telegram degraded",
}

// firstOf returns the incident's first event of kind k, or nil.
func (inc *incident) firstOf(k event) *journalEvent {
	for i := inc.first; i <= inc.last; i++ {
		if inc.evs[i].Kind == k {
			return &inc.evs[i]
		}
	}
	return nil
}

func (inc *incident) all(k event) []journalEvent {
	var out []journalEvent
	for _, ev := range inc.events() {
		if ev.Kind == k {
			out = append(out, ev)
		}
	}
	return out
}

// failingExits are the incident's exits with a failure code.
func (inc *incident) failingExits() []journalEvent {
	var out []journalEvent
	for _, ev := range inc.all(evExit) {
		if ab, _ := abnormalEvent(ev); ab {
			out = append(out, ev)
		}
	}
	return out
}

// recovery is the event that ended the incident by serving again: the last
// ready (or failback) in it.
func (inc *incident) recovery() *journalEvent {
	if inc.end != endReady {
		return nil
	}
	for i := inc.last; i >= inc.first; i-- {
		if k := inc.evs[i].Kind; k == evReady || k == evHandoffFailback {
			return &inc.evs[i]
		}
	}
	return nil
}

// incidentActions lists what hermes (and the people running it) did, in
// the order it happened.
func incidentActions(inc *incident) []string {
	var out []string
	for _, ev := range inc.events() {
		switch ev.Kind {
		case evWatchdog:
			if f := ev.str("stack_file"); f != "" {
				out = append(out, fmt.Sprintf("watchdog dumped the stacks of pid %d to %s", ev.PID, f))
			} else {
				out = append(out, fmt.Sprintf("watchdog fired in pid %d (the stack file could not be written)", ev.PID))
			}
		case evExit:
			switch code := ev.str("code"); code {
			case "70":
				out = append(out, fmt.Sprintf("pid %d exited 70 for the service manager to restart it", ev.PID))
			case "78":
				out = append(out, fmt.Sprintf("pid %d exited 78 (%s): no manager restarts on 78", ev.PID, ev.str("reason")))
			}
		case evCrashLoopDelay:
			out = append(out, fmt.Sprintf("crash-loop guard delayed the start of pid %d by %s (%s starts in %s, limit %s)", ev.PID, ev.str("delay"), ev.str("starts"), ev.str("window"), ev.str("limit")))
		case evUncleanExit:
			out = append(out, fmt.Sprintf("the start of pid %d recorded the unclean exit of pid %s", ev.PID, ev.str("dead_pid")))
		case evRestartRequested, evStopRequested, evStartRequested:
			what := strings.TrimSuffix(ev.Event, " requested")
			out = append(out, fmt.Sprintf("hermes %s (pid %d) asked for by %s", what, ev.PID, orDefault(ev.str("user"), "?")))
		case evVerdict:
			if ab, _ := abnormalEvent(ev); ab {
				out = append(out, fmt.Sprintf("hermes found pid %s %s", ev.str("target"), ev.str("verdict")))
			}
		case evRungSent:
			out = append(out, fmt.Sprintf("restart ladder: rung %s sent %s to pid %s", orDefault(ev.str("rung"), "?"), orDefault(ev.str("signal"), ev.str("request")), ev.str("target")))
		case evExitObserved:
			out = append(out, fmt.Sprintf("exit of pid %s observed%s", ev.str("target"), elapsedNote(ev)))
		case evManagerAction:
			a := fmt.Sprintf("hermes (pid %d) asked %s to %s", ev.PID, orDefault(ev.str("manager"), "?"), ev.str("action"))
			if ev.str("manager") == managerNone {
				a = fmt.Sprintf("hermes (pid %d): %s", ev.PID, ev.str("action"))
			}
			if p := ev.str("new_pid"); p != "" {
				a += ", pid " + p
			}
			out = append(out, a)
		case evRestartDone, evStartDone, evStopDone:
			what := strings.TrimSuffix(ev.Event, " done")
			if ev.str("ok") == "false" {
				out = append(out, fmt.Sprintf("hermes %s failed: %s", what, ev.str("error")))
			} else if p := ev.str("new_pid"); p != "" {
				out = append(out, fmt.Sprintf("hermes %s done: pid %s ready", what, p))
			} else {
				out = append(out, fmt.Sprintf("hermes %s done", what))
			}
		case evHandoffFailed:
			out = append(out, fmt.Sprintf("handoff failed (%s); pid %d served on", ev.str("reason"), ev.PID))
		case evHandoffFailback:
			out = append(out, fmt.Sprintf("handoff failback: successor %s died (code %s) after taking over; pid %d served again", ev.str("successor"), ev.str("code"), ev.PID))
		case evDrainTimeout:
			out = append(out, fmt.Sprintf("drain of pid %d timed out after %s and cut its sessions", ev.PID, ev.str("timeout")))
		case evTelegramConflict, evTelegramFailing, evTelegramStoreFailing:
			out = append(out, fmt.Sprintf("Telegram polling of pid %d backed off (%s)", ev.PID, ev.str("backoff")))
		case evTelegramRerun:
			// counted, not listed
		default:
			switch ev.Event {
			case evNameAlertSent:
				out = append(out, "alert sent"+detailNote(ev))
			case evNameAlertFailed:
				out = append(out, "alert failed"+detailNote(ev))
			}
		}
	}
	return out
}

func elapsedNote(ev journalEvent) string {
	if ev.elapsed == "" {
		return ""
	}
	return " " + ev.elapsed
}

func detailNote(ev journalEvent) string {
	if d := ev.detail(); d != "" {
		return " (" + d + ")"
	}
	return ""
}

// incDur is a duration as the timeline writes it.
func incDur(d time.Duration) string { return since(time.Unix(0, 0).Add(d), time.Unix(0, 0)) }

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// incidentSummary is the one paragraph: what happened, how long the gateway
// was unavailable, what was cut or re-run, what hermes did. Times are
// written in loc.
func incidentSummary(inc *incident, loc *time.Location) string {
	w := &sentences{clock: func(t time.Time) string { return t.In(loc).Format("15:04:05.000") }, loc: loc}
	w.what(inc)
	w.end(inc)
	w.toll(inc)
	return strings.Join(w.s, " ")
}

// sentences is an incident's summary as it is written: what happened, how
// it ended, what it cost.
type sentences struct {
	s     []string
	clock func(time.Time) string
	loc   *time.Location
}

func (w *sentences) add(f string, a ...any) { w.s = append(w.s, fmt.Sprintf(f, a...)) }

// what says what happened, by the incident's kind.
func (w *sentences) what(inc *incident) {
	switch inc.kind {
	case kindCrashLoop:
		w.whatCrashLoop(inc)
	case kindWatchdog:
		w.whatWatchdog(inc)
	case kindFrozen:
		w.whatFrozen(inc)
	case kindMemory:
		for _, ev := range inc.events() {
			if ev.Event == evNameMemoryLimit {
				w.add("Gateway pid %d hit its memory limit (%s).", ev.PID, ev.detail())
				break
			}
		}
	case kindUnclean:
		w.whatUnclean(inc)
	case kindLock:
		l := inc.firstOf(evLockConflict)
		w.add("Gateway pid %d could not take the token lock (scope %s): pid %s of instance %s holds it.", l.PID, orDefault(l.str("scope"), "?"), orDefault(l.str("holder_pid"), "?"), orDefault(l.str("holder_instance"), "?"))
	case kindServeFailed:
		f := inc.firstOf(evServeFailed)
		w.add("Gateway pid %d failed to serve: %s.", f.PID, f.str("error"))
	case kindFailedStart:
		w.whatFailedStart(inc)
	case kindCut:
		w.whatCut(inc)
	case kindCrash:
		if exits := inc.failingExits(); len(exits) > 0 {
			x := exits[0]
			w.add("Gateway pid %d exited %s (%s).", x.PID, x.str("code"), x.str("reason"))
		}
	case kindTelegram:
		w.whatTelegram(inc)
	}
}

// whatCrashLoop says the crash loop: the exits and the delays the guard set.
func (w *sentences) whatCrashLoop(inc *incident) {
	exits := inc.failingExits()
	delays := inc.all(evCrashLoopDelay)
	var ds []string
	for _, d := range delays {
		ds = append(ds, d.str("delay"))
	}
	what := "The gateway crash-looped"
	if len(exits) > 0 {
		span := exits[len(exits)-1].Time.Sub(exits[0].Time)
		what += fmt.Sprintf(": %s with a failure in %s", plural(len(exits), "gateway exited", "gateways exited"), incDur(span))
		what += " (" + exitCodes(exits) + ")"
	}
	if len(ds) > 0 {
		what += fmt.Sprintf("; the crash-loop guard delayed %s (%s)", plural(len(ds), "start", "starts"), strings.Join(ds, ", "))
	}
	w.add("%s.", what)
}

// whatWatchdog says where the loop froze, and the stacks.
func (w *sentences) whatWatchdog(inc *incident) {
	wd := inc.firstOf(evWatchdog)
	reason := strings.NewReplacer(" (", ", ", ")", "").Replace(wd.str("reason"))
	w.add("The gateway's loop froze in %s (pid %d; watchdog: %s).", orDefault(wd.str("stuck_in"), "an unknown function"), wd.PID, reason)
	if f := wd.str("stack_file"); f != "" {
		w.add("The watchdog dumped the stacks to %s and exited 70.", f)
	} else {
		w.add("The watchdog could not write the stacks, and exited 70.")
	}
}

// whatFrozen says hermes restart's verdict and the ladder's hardest rung.
func (w *sentences) whatFrozen(inc *incident) {
	v := inc.firstOf(evVerdict)
	if v != nil && v.str("verdict") != "" {
		w.add("hermes (pid %d) found gateway pid %s %s (%s).", v.PID, v.str("target"), v.str("verdict"), orDefault(v.str("detail"), "no detail"))
	}
	if r := inc.firstOf(evRungSent); r != nil {
		for _, x := range inc.all(evRungSent) {
			if x.str("signal") == "KILL" {
				r = &x
				break
			}
		}
		w.add("The restart ladder sent %s to pid %s.", orDefault(r.str("signal"), r.str("request")), r.str("target"))
	}
}

// whatUnclean says a gateway that died without recording its exit.
func (w *sentences) whatUnclean(inc *incident) {
	u := inc.firstOf(evUncleanExit)
	why := u.str("note")
	if m := lastSeenRe().FindStringSubmatchIndex(why); m != nil {
		why = strings.TrimSuffix(strings.TrimSpace(why[:m[0]]), ";")
	}
	const died = "it died without recording its exit"
	if strings.HasPrefix(why, died) {
		why = "died without recording its exit" + strings.TrimPrefix(why, died)
	} else {
		why = "ended without recording its exit: " + why
	}
	seen := ""
	if t, err := time.Parse(time.RFC3339, u.str("last_seen")); err == nil {
		seen = "; it was last seen alive at " + t.In(w.loc).Format("15:04:05")
	}
	w.add("Gateway pid %s %s%s; the next start (pid %d) found it at %s.", u.str("dead_pid"), why, seen, u.PID, w.clock(u.Time))
}

// whatFailedStart says a failed handoff, failback or start.
func (w *sentences) whatFailedStart(inc *incident) {
	if f := inc.firstOf(evHandoffFailed); f != nil {
		w.add("The handoff of pid %d to successor %s failed: %s.", f.PID, f.str("successor"), f.str("reason"))
	}
	if f := inc.firstOf(evHandoffFailback); f != nil {
		w.add("Successor pid %s died (code %s) after it took over from pid %d.", f.str("successor"), f.str("code"), f.PID)
	}
	for _, k := range []event{evRestartDone, evStartDone, evStopDone} {
		for _, d := range inc.all(k) {
			if d.str("ok") == "false" {
				w.add("hermes %s (pid %d) failed: %s.", strings.TrimSuffix(d.Event, " done"), d.PID, d.str("error"))
			}
		}
	}
}

// whatCut says a drain that ran out and cut sessions.
func (w *sentences) whatCut(inc *incident) {
	d := inc.firstOf(evDrainTimeout)
	why := ""
	if ds := inc.firstOf(evDrainStart); ds != nil && ds.PID == d.PID {
		why = " (" + ds.str("reason") + ")"
	}
	w.add("The drain of pid %d%s ran past drain.timeout %s with %s open; they were cut.", d.PID, why, d.str("timeout"), plural(atoi(d.str("sessions")), "session", "sessions"))
}

// whatTelegram says the bot's polling and storing troubles.
func (w *sentences) whatTelegram(inc *incident) {
	for _, ev := range inc.events() {
		switch ev.Kind {
		case evTelegramConflict:
			w.add("Telegram polling of pid %d met a conflict: another poller uses the bot token.", ev.PID)
		case evTelegramFailing:
			w.add("Telegram polls of pid %d failed (%s).", ev.PID, ev.str("error"))
		case evTelegramConflictEnd:
			w.add("The conflict ended after %s (%s).", ev.str("lasted"), plural(atoi(ev.str("conflicts")), "conflict", "conflicts"))
		case evTelegramRecovered:
			w.add("Polling recovered after %s (%s).", ev.str("lasted"), plural(atoi(ev.str("failures")), "failure", "failures"))
		case evTelegramStoreFailing:
			w.add("The bot of pid %d could not store the messages it received (%s): none was accepted until it could.", ev.PID, ev.str("error"))
		case evTelegramStoreRecovered:
			w.add("Storing worked again after %s (%s).", ev.str("lasted"), plural(atoi(ev.str("failures")), "failed write", "failed writes"))
		}
	}
}

// end says how the incident ended.
func (w *sentences) end(inc *incident) {
	add, clock := w.add, w.clock
	// How it ended.
	switch inc.end {
	case endReady:
		r := inc.recovery()
		if r.Kind == evHandoffFailback {
			add("Pid %d served again at %s.", r.PID, clock(r.Time))
		} else {
			after := ""
			if r.elapsed != "" {
				after = ", " + r.elapsed
			}
			for _, a := range inc.all(evManagerAction) {
				if a.str("new_pid") == strconv.Itoa(r.PID) || (a.str("new_pid") == "" && a.Time.Before(r.Time)) {
					after += ", started by " + managerWho(a)
				}
			}
			starts := 0
			for _, ev := range inc.all(evStart) {
				if ev.Time.After(inc.evs[inc.abnormal[0]].Time) || ev.Time.Equal(inc.evs[inc.abnormal[0]].Time) {
					starts++
				}
			}
			if starts > 1 {
				add("After %s, gateway pid %d was ready at %s%s and stayed up.", plural(starts, "start", "starts"), r.PID, clock(r.Time), after)
			} else {
				add("A new gateway (pid %d) was ready at %s%s.", r.PID, clock(r.Time), after)
			}
		}
	case endServedOn:
		add("A gateway served throughout.")
	case endRecover:
		add("HTTP was served throughout; the bot was degraded for %s.", incDur(inc.degraded))
	case endStopped:
		x := inc.evs[inc.last]
		if x.Kind == evStopDone {
			add("hermes stop (pid %d) then stopped the gateway; none was ready since.", x.PID)
		} else {
			add("Gateway pid %d was then stopped (exit 0, %s); none was ready since.", x.PID, x.str("reason"))
		}
	case endOngoing:
		add("It is not over: no gateway has been ready since (the journal ends at %s).", clock(inc.ended()))
	}
}

// toll says what the incident cost (unavailability, sessions cut) and what
// hermes did.
func (w *sentences) toll(inc *incident) {
	add, clock := w.add, w.clock
	if inc.unavailable > 0 {
		u := "Unavailable " + incDur(inc.unavailable)
		if inc.end == endOngoing {
			u = "Unavailable for at least " + incDur(inc.unavailable)
		}
		add("%s (from %s).", u, clock(inc.downFrom))
	} else if inc.end != endRecover {
		add("Never unavailable.")
	}
	// Sessions.
	var cut []string
	if inc.sessionsCut > 0 {
		cut = append(cut, plural(inc.sessionsCut, "session was cut", "sessions were cut"))
	}
	if inc.turnsCut > 0 {
		cut = append(cut, plural(inc.turnsCut, "Telegram turn was cut", "Telegram turns were cut"))
	}
	if inc.turnsRerun > 0 {
		cut = append(cut, plural(inc.turnsRerun, "Telegram turn was re-run", "Telegram turns were re-run"))
	}
	if len(cut) > 0 {
		add("%s.", capitalize(strings.Join(cut, "; ")))
	} else {
		add("No session was recorded as cut.")
	}
	if d := hermesDid(inc); d != "" {
		add("hermes: %s.", d)
	}
}

// hermesDid says in short what hermes did about the incident.
func hermesDid(inc *incident) string {
	var did []string
	seen := map[string]bool{}
	put := func(s string) {
		if !seen[s] {
			seen[s] = true
			did = append(did, s)
		}
	}
	var delays []string
	for _, ev := range inc.events() {
		switch ev.Kind {
		case evWatchdog:
			put("watchdog exit 70")
		case evExit:
			if ev.str("code") == "70" {
				put("watchdog exit 70")
			}
		case evCrashLoopDelay:
			delays = append(delays, ev.str("delay"))
		case evUncleanExit:
			put("unclean exit found at the next start")
		case evRungSent:
			put("restart ladder rung " + orDefault(ev.str("signal"), ev.str("request")) + " sent")
		case evExitObserved:
			put("exit observed")
		case evManagerAction:
			put("new gateway started by " + managerWho(ev))
		case evHandoffFailed:
			put("handoff given up, the old gateway served on")
		case evHandoffFailback:
			put("failback to the old gateway")
		case evDrainTimeout:
			put("drain cut at drain.timeout")
		case evLockConflict:
			put("exit 78 on the lock conflict (no restart loop)")
		case evRestartDone, evStartDone:
			if ev.str("ok") == "false" {
				put(strings.TrimSuffix(ev.Event, " done") + " reported failure")
			}
		case evTelegramConflict, evTelegramFailing, evTelegramStoreFailing:
			put("Telegram polling backed off")
		default:
			switch ev.Event {
			case evNameAlertSent:
				put("alert sent")
			case evNameAlertFailed:
				put("alert failed")
			}
		}
	}
	if len(delays) > 0 {
		put(fmt.Sprintf("crash-loop delay of %s", strings.Join(delays, ", ")))
	}
	if r := inc.recovery(); r != nil && r.Kind == evReady && inc.kind != kindFailedStart {
		managed := len(inc.all(evManagerAction)) > 0
		if !managed && (seen["watchdog exit 70"] || inc.kind == kindCrashLoop || inc.kind == kindCrash || inc.kind == kindUnclean) {
			put("restart by the service manager")
		}
	}
	return strings.Join(did, "; ")
}

// managerWho names who a "manager action" had start the gateway.
func managerWho(ev journalEvent) string {
	if m := ev.str("manager"); m != "" && m != managerNone {
		return m + " (" + ev.str("action") + ")"
	}
	return "hermes (" + ev.str("action") + ")"
}

// exitCodes says "exit 1: test fault exit-after-ready" for exits alike.
func exitCodes(exits []journalEvent) string {
	var parts []string
	n := map[string]int{}
	for _, x := range exits {
		k := "exit " + x.str("code") + ": " + x.str("reason")
		if n[k] == 0 {
			parts = append(parts, k)
		}
		n[k]++
	}
	for i, p := range parts {
		if n[p] > 1 {
			parts[i] = fmt.Sprintf("%d× %s", n[p], p)
		}
	}
	return strings.Join(parts, "; ")
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// incidentJSON is the incident for machines (hermes events --incident --json).
type incidentJSON struct {
	Kind          string            `json:"kind"`
	Title         string            `json:"title"`
	Started       string            `json:"started"`
	Ended         string            `json:"ended"`
	End           string            `json:"end"` // ready, served-on, recovered, stopped, ongoing
	Ongoing       bool              `json:"ongoing"`
	DurationMS    int64             `json:"duration_ms"`
	UnavailableMS int64             `json:"unavailable_ms"`
	UnavailableAt string            `json:"unavailable_from,omitempty"`
	DegradedMS    int64             `json:"degraded_ms"`
	Summary       string            `json:"summary"`
	SessionsCut   int               `json:"sessions_cut"`
	TurnsCut      int               `json:"turns_cut"`
	TurnsRerun    int               `json:"turns_rerun"`
	PIDs          []int             `json:"pids"`
	Actions       []string          `json:"actions"`
	Events        []json.RawMessage `json:"events"`
	Elapsed       map[string]string `json:"elapsed,omitempty"` // event index → cause → effect time
}

func (inc *incident) json(loc *time.Location) incidentJSON {
	j := incidentJSON{
		Kind: inc.kind, Title: kindTitles[inc.kind], End: inc.end, Ongoing: inc.end == endOngoing,
		Started: inc.started().UTC().Format(time.RFC3339Nano), Ended: inc.ended().UTC().Format(time.RFC3339Nano),
		DurationMS: inc.ended().Sub(inc.started()).Milliseconds(), UnavailableMS: inc.unavailable.Milliseconds(),
		DegradedMS: inc.degraded.Milliseconds(), Summary: incidentSummary(inc, loc),
		SessionsCut: inc.sessionsCut, TurnsCut: inc.turnsCut, TurnsRerun: inc.turnsRerun,
		Actions: inc.actions, PIDs: []int{}, Events: []json.RawMessage{},
	}
	if !inc.downFrom.IsZero() {
		j.UnavailableAt = inc.downFrom.UTC().Format(time.RFC3339Nano)
	}
	if j.Actions == nil {
		j.Actions = []string{}
	}
	seen := map[int]bool{}
	for i, ev := range inc.events() {
		if !seen[ev.PID] {
			seen[ev.PID] = true
			j.PIDs = append(j.PIDs, ev.PID)
		}
		j.Events = append(j.Events, json.RawMessage(bytes.TrimSpace(ev.raw)))
		if ev.elapsed != "" {
			if j.Elapsed == nil {
				j.Elapsed = map[string]string{}
			}
			j.Elapsed[strconv.Itoa(i)] = ev.elapsed
		}
	}
	sort.Ints(j.PIDs)
	return j
}

// renderIncident prints the report: a headline, the summary paragraph,
// what hermes did, and the incident's timeline, in loc.
func renderIncident(w io.Writer, inc *incident, loc *time.Location) {
	stamp := func(t time.Time) string { return t.In(loc).Format("2006-01-02 15:04:05.000") }
	head := fmt.Sprintf("Incident: %s, %s to %s", kindTitles[inc.kind], stamp(inc.started()), inc.ended().In(loc).Format("15:04:05.000"))
	switch inc.end {
	case endOngoing:
		head += ", ongoing"
	}
	if inc.unavailable > 0 {
		head += "; unavailable " + incDur(inc.unavailable)
	} else if inc.degraded > 0 {
		head += "; degraded " + incDur(inc.degraded)
	}
	fmt.Fprintln(w, head)
	fmt.Fprintln(w)
	for _, l := range wrap(incidentSummary(inc, loc), 88) {
		fmt.Fprintln(w, l)
	}
	if len(inc.actions) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "What hermes did:")
		for _, a := range inc.actions {
			fmt.Fprintln(w, "  - "+a)
		}
	}
	fmt.Fprintln(w)
	renderEvents(w, inc.events(), loc)
}

// wrap breaks a paragraph into lines of at most width columns (a word
// longer than that gets a line of its own).
func wrap(s string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(s) {
		switch {
		case line == "":
			line = w
		case len([]rune(line))+1+len([]rune(w)) > width:
			lines = append(lines, line)
			line = w
		default:
			line += " " + w
		}
	}
	if line != "" {
		lines = append(lines, line)
	}
	return lines
}

// printIncident is `hermes events --incident [--since WHEN] [--json]`: the
// most recent incident (that lasted past cut, when set), or one line saying
// there is none.
func printIncident(w, errw io.Writer, evs []journalEvent, cut time.Time, p *Policy, asJSON bool) error {
	settle := p.CrashLoop.Window
	if settle <= 0 {
		settle = 2 * time.Minute
	}
	incs := findIncidents(evs, settle)
	var last *incident
	if n := len(incs); n > 0 && (cut.IsZero() || !incs[n-1].ended().Before(cut)) {
		last = incs[n-1]
	}
	if last == nil {
		since := ""
		if !cut.IsZero() {
			since = " since " + cut.Local().Format("2006-01-02 15:04:05")
		}
		if asJSON {
			fmt.Fprintln(w, "null")
		}
		fmt.Fprintf(errw, "hermes: no incident%s in %s (%d events): no abnormal event\n", since, journalPath(p.Gateway.StateDir), len(evs))
		return nil
	}
	if asJSON {
		b, err := json.MarshalIndent(last.json(time.Local), "", "  ")
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	renderIncident(w, last, time.Local)
	return nil
}
