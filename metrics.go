package main

import (
	"context"
	"errors"
	"math"
	"net"
	"net/http"
	"runtime"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Metrics: GET /metrics answers in Prometheus' text exposition format
// (version 0.0.4), written here with the standard library. Like /healthz and
// /status it is answered without the loop: every number is an atomic, a
// snapshot the loop published, or the process's own (the kernel's), so a
// frozen gateway still reports its heartbeat's age.
//
// What happens on a session's path costs atomic adds and nothing else: the
// session's own responseRecorder counts its bytes and notes its first write
// (no atomics: one goroutine), and its end adds to the counters and
// histograms once. Lifecycle counts (drains, handoffs, reloads, the
// watchdog, the bot's answers) are counted in one place, by event, as the
// logger sees them (countEvent), so the loop's rules stay pure and its
// effects unchanged. Labels take values from fixed sets only: never a
// session id, a user, a path or anything from the policy, so neither
// cardinality nor a secret can leak into a scrape.
// https://prometheus.io/docs/instrumenting/exposition_formats/

// metricsContentType is the text format's media type.
const metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

// processStart is when this process started, near enough (package
// initialisation runs before main).
var processStart = time.Now()

// sessionOutcome is how a session ended: hermes_sessions_total's outcome.
type sessionOutcome uint8

const (
	sessFinished      sessionOutcome = iota // it ran to its end
	sessCut                                 // the drain cut it (it got its final event)
	sessClientGone                          // the client hung up first
	sessRefused                             // 503: the gateway was draining
	sessUpstreamError                       // no good answer from the upstream (unreachable, 5xx, broken stream)
	sessOutcomes
)

var outcomeNames = [sessOutcomes]string{"finished", "cut", "client_gone", "refused", "upstream_error"}

// upstreamKind is what went wrong with the upstream: hermes_upstream_errors_total's kind.
type upstreamKind uint8

const (
	upNone      upstreamKind = iota
	upConnect                // it could not be reached (dial, DNS, TLS handshake)
	upTimeout                // a deadline ran out
	upStatus5xx              // it answered 5xx
	upBroken                 // its stream broke after the answer began
	upOther
	upKinds
)

var upstreamKindNames = [upKinds]string{upConnect: "connect", upTimeout: "timeout", upStatus5xx: "status_5xx", upBroken: "broken_stream", upOther: "other"}

// upstreamErrKind classifies an error of the request to the upstream.
func upstreamErrKind(err error) upstreamKind {
	var ne net.Error
	var op *net.OpError
	var dns *net.DNSError
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return upTimeout
	case errors.As(err, &dns), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH),
		errors.Is(err, syscall.ENETUNREACH), errors.As(err, &op) && op.Op == "dial":
		return upConnect
	}
	return upOther
}

// The bucket bounds, in seconds: sessions last from a short completion to a
// long agent stream; the first byte comes within milliseconds (echo) to
// seconds (a model thinking).
var (
	durationBuckets = newBuckets(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)
	ttfbBuckets     = newBuckets(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
)

// buckets are a histogram's upper bounds, in seconds, ascending, and the
// same as le label values.
type buckets struct {
	bounds []float64
	le     []string
}

func newBuckets(bounds ...float64) *buckets {
	if len(bounds) > maxBuckets {
		panic("metrics: too many buckets")
	}
	b := &buckets{bounds: bounds}
	for _, ub := range bounds {
		b.le = append(b.le, string(appendFloat(nil, ub)))
	}
	return b
}

// histogram counts observations per bucket (not cumulated: one add per
// observation); the exposition cumulates them. Its bounds are given at
// each call, so the zero value is ready to use.
type histogram struct {
	counts [maxBuckets + 1]atomic.Uint64 // the last is +Inf
	sumNS  atomic.Int64
}

const maxBuckets = 16

func (h *histogram) observe(b *buckets, d time.Duration) {
	s := d.Seconds()
	i := 0
	for i < len(b.bounds) && s > b.bounds[i] {
		i++
	}
	h.counts[i].Add(1)
	h.sumNS.Add(int64(d))
}

// The values of the labels counted by event.
var (
	drainReasons    = [...]string{reasonShutdown, reasonRestart, "handoff"}
	drainEndHows    = [...]string{"empty", "grace_over"}
	handoffResults  = [...]string{"ok", "failed", "refused", "failback"}
	reloadResults   = [...]string{"ok", "failed"}
	tgPollResults   = [...]string{"ok", "conflict", "error"}
	gatewayStates   = [...]gwState{stateStarting, stateServing, stateDraining, stateStopping}
	telegramStates  = [...]string{"starting", "polling", "conflict", "failing", "store_failing", "stopped"}
	hermesGoVersion = runtime.Version()
)

// metrics is the gateway's counters. The zero value is ready to use.
type metrics struct {
	sessions [sessOutcomes]atomic.Uint64
	duration histogram
	ttfb     histogram
	streamed atomic.Uint64
	upstream [upKinds]atomic.Uint64

	drains        [len(drainReasons)]atomic.Uint64
	drainEnds     [len(drainEndHows)]atomic.Uint64
	drainTimeouts atomic.Uint64
	handoffs      [len(handoffResults)]atomic.Uint64
	reloads       [len(reloadResults)]atomic.Uint64
	watchdog      atomic.Uint64
	unauthorized  atomic.Uint64 // requests refused 401 for want of a client key

	tgPolls       [len(tgPollResults)]atomic.Uint64
	tgConflicts   atomic.Uint64
	tgStoreErrors atomic.Uint64 // accepted updates the store could not write
	tgAnswers     atomic.Uint64

	// The start ledger as this gateway found it (noteStart, before it
	// serves: read only after).
	crashLoop    bool
	crashDelay   time.Duration
	startsRecent int
}

// hook has the logger count lifecycle events from now on.
func (m *metrics) hook(l *logger) {
	if l != nil {
		l.count = m.countEvent
	}
}

// countEvent counts what a lifecycle event means for the metrics. It runs
// on whichever goroutine logs (the loop's effects, the watchdog, the bot),
// so it only adds atomically.
func (m *metrics) countEvent(ev event, kv []any) {
	switch ev {
	case evDrainStart:
		r := kvString(kv, "reason")
		for i, x := range drainReasons {
			if r == x {
				m.drains[i].Add(1)
			}
		}
	case evDrainTimeout:
		m.drainTimeouts.Add(1)
	case evDrainEnd:
		m.drainEnds[0].Add(1)
	case evDrainGraceOver:
		if kvString(kv, "predecessor") == "" { // the note about a predecessor is a second line of the same end
			m.drainEnds[1].Add(1)
		}
	case evHandoffDone:
		m.handoffs[0].Add(1)
	case evHandoffFailed:
		m.handoffs[1].Add(1)
	case evHandoffRefused:
		m.handoffs[2].Add(1)
	case evHandoffFailback:
		m.handoffs[3].Add(1)
	case evReloadOK:
		m.reloads[0].Add(1)
	case evReloadFailed:
		m.reloads[1].Add(1)
	case evWatchdog:
		m.watchdog.Add(1)
	case evTelegramConflict:
		m.tgConflicts.Add(1)
	case evTelegramAnswered:
		m.tgAnswers.Add(1)
	}
}

// kvString returns the value of key in a log line's pairs, as a string
// ("" when absent or not a string or number).
func kvString(kv []any, key string) string {
	for i := 0; i+1 < len(kv); i += 2 {
		if k, _ := kv[i].(string); k == key {
			switch v := kv[i+1].(type) {
			case string:
				return v
			case int:
				return strconv.Itoa(v)
			}
		}
	}
	return ""
}

// sessionEnded counts an admitted session as it ends. ev is how endSession
// logged it (evNone: it ended by itself while the gateway serves); first
// is when its first byte went to the client (zero: none did).
//
//go:noinline
func (m *metrics) sessionEnded(s *sessionRun, ev event, first time.Time) {
	rec := &s.rec
	out := sessFinished
	switch {
	case ev == evSessionCut:
		out = sessCut
	case ev == evSessionClientGone:
		out = sessClientGone
	case rec.upstream != upNone:
		out = sessUpstreamError
	}
	if rec.upstream != upNone {
		m.upstream[rec.upstream].Add(1)
	}
	m.sessions[out].Add(1)
	m.duration.observe(durationBuckets, time.Since(s.started))
	if !first.IsZero() {
		m.ttfb.observe(ttfbBuckets, max(first.Sub(s.started), 0))
	}
	m.streamed.Add(uint64(rec.written))
}

// telegramPoll counts one long poll's result (not one cancelled by a stop).
func (m *metrics) telegramPoll(err error) {
	switch {
	case err == nil:
		m.tgPolls[0].Add(1)
	case isBotCode(err, 409):
		m.tgPolls[1].Add(1)
	default:
		m.tgPolls[2].Add(1)
	}
}

// noteStart keeps what the start ledger said of this start: whether it
// came in a crash loop, the delay it waited, and the unplanned starts
// within crash_loop.window. It is read once, here, not at each scrape.
func (m *metrics) noteStart(l startLedger, p *Policy, pid int) {
	for i := len(l.Starts) - 1; i >= 0; i-- {
		if l.Starts[i].PID == pid {
			at := l.Starts[i].Time
			m.crashLoop, m.crashDelay = l.CrashLoop(p.CrashLoop, at)
			m.startsRecent = l.counted(p.CrashLoop, at)
			return
		}
	}
}

// metricsBufs keeps the scrape's buffer between scrapes.
var metricsBufs = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// serveMetrics answers GET /metrics.
func (g *gateway) serveMetrics(w http.ResponseWriter) {
	bp := metricsBufs.Get().(*[]byte)
	pw := promWriter{b: (*bp)[:0]}
	g.writeMetrics(&pw, time.Now())
	w.Header().Set("Content-Type", metricsContentType)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(pw.b)))
	w.Write(pw.b)
	*bp = pw.b
	metricsBufs.Put(bp)
}

// writeMetrics writes every family. It reads atomics and what the loop
// published, never the loop.
func (g *gateway) writeMetrics(w *promWriter, now time.Time) {
	snap := g.snap.Load()
	g.writeLoopMetrics(w, snap, now)
	g.writeSessionMetrics(w, snap)
	g.writeAcceptMetrics(w)
	g.writeUpstreamMetrics(w, snap)
	g.writeReattachMetrics(w)
	g.writeLifecycleMetrics(w)
	if g.tg != nil {
		g.writeTelegramMetrics(w, now)
	}
	writeProcessMetrics(w)
}

// writeLoopMetrics: the build, the state and the loop's heartbeat.
func (g *gateway) writeLoopMetrics(w *promWriter, snap *snapshot, now time.Time) {
	w.family("hermes_build_info", "gauge", "Always 1: the version of hermes and of Go it was built with.")
	w.sample("hermes_build_info", 1, "version", version, "goversion", hermesGoVersion)
	w.family("hermes_state", "gauge", "1 for the gateway's current lifecycle state, 0 for the others.")
	for _, st := range gatewayStates {
		w.sample("hermes_state", b2f(snap.State == st), "state", string(st))
	}
	w.family("hermes_loop_heartbeat_age_seconds", "gauge", "How long ago the gateway's loop last ran; it ticks every watchdog.heartbeat.")
	w.sample("hermes_loop_heartbeat_age_seconds", g.heartbeatAge(now).Seconds())
	w.family("hermes_loop_frozen_after_seconds", "gauge", "The heartbeat age past which the loop counts as frozen (3 heartbeats): /healthz then answers 503.")
	w.sample("hermes_loop_frozen_after_seconds", staleAfter(snap.Policy.Watchdog).Seconds())
}

// writeSessionMetrics: sessions, connections, client keys and the
// upstream's errors.
func (g *gateway) writeSessionMetrics(w *promWriter, snap *snapshot) {
	m := &g.mx
	w.family("hermes_sessions_active", "gauge", "Sessions in flight (the admission gate's count; Telegram turns, and streams kept for reattach, included).")
	w.sample("hermes_sessions_active", float64(g.gate.count()))
	w.family("hermes_connections_open", "gauge", "Open client connections.")
	w.sample("hermes_connections_open", float64(g.conns.count()))
	w.family("hermes_client_requests_total", "counter", "/v1/ requests by the [auth] client key they came with, by its name (never the key).")
	for _, k := range snap.Policy.Auth.ring.keysOf() {
		w.sampleU("hermes_client_requests_total", k.requests.Load(), "key", k.name)
	}
	w.family("hermes_client_unauthorized_total", "counter", "Requests refused 401: no client key, or one the gateway does not know.")
	w.sampleU("hermes_client_unauthorized_total", m.unauthorized.Load())
	w.family("hermes_connections_refused_total", "counter", "Client connections answered 503 and closed because gateway.max_connections were open.")
	w.sample("hermes_connections_refused_total", float64(g.conns.refused.Load()))
	w.counterVec("hermes_sessions_total", "Sessions (/v1/... requests) by how they ended: finished, cut by a drain, client_gone, refused (503 while draining), upstream_error.",
		"outcome", outcomeNames[:], m.sessions[:])
	w.histogram("hermes_session_duration_seconds", "How long admitted sessions lasted, observed as they end.", durationBuckets, &m.duration)
	w.histogram("hermes_session_ttfb_seconds", "Time from a session's start to its first byte written to the client, observed as the session ends.", ttfbBuckets, &m.ttfb)
	w.family("hermes_streamed_bytes_total", "counter", "Response body bytes sessions wrote to their clients.")
	w.sampleU("hermes_streamed_bytes_total", m.streamed.Load())
	w.counterVec("hermes_upstream_errors_total", "Sessions whose upstream failed, by kind: connect, timeout, status_5xx, broken_stream, other.",
		"kind", upstreamKindNames[upConnect:], m.upstream[upConnect:])
}

var noReattachCounts reattachCounts

// writeReattachMetrics: the streams kept for reattach ([reattach]).
func (g *gateway) writeReattachMetrics(w *promWriter) {
	c := &noReattachCounts
	if g.streams != nil {
		c = &g.streams.counts
	}
	w.family("hermes_streams_total", "counter", "Streams of events by what happened to them: detached (their client left; kept for reattach.window), reattached (a client came back with Last-Event-ID), expired (nobody came back in time), overflowed (past reattach.max_buffer: no reattach).")
	w.sampleU("hermes_streams_total", c.detached.Load(), "event", "detached")
	w.sampleU("hermes_streams_total", c.reattached.Load(), "event", "reattached")
	w.sampleU("hermes_streams_total", c.expired.Load(), "event", "expired")
	w.sampleU("hermes_streams_total", c.overflowed.Load(), "event", "overflowed")
	w.family("hermes_streams_detached", "gauge", "Streams kept with no client attached now (each holds a place in hermes_sessions_active).")
	w.sample("hermes_streams_detached", float64(c.detachedNow.Load()))
	w.family("hermes_streams_buffer_bytes", "gauge", "Bytes the kept streams' buffers hold (their capacity).")
	w.sample("hermes_streams_buffer_bytes", float64(c.buffered.Load()))
}

// writeUpstreamMetrics: each upstream's state and counts, by its name.
func (g *gateway) writeUpstreamMetrics(w *promWriter, snap *snapshot) {
	pl := g.pool(snap.Policy)
	if len(pl.nodes) == 0 {
		return
	}
	w.family("hermes_upstream_up", "gauge", "1 while the upstream is in the order, 0 while it is out (failover.fail_after failures in a row, or a 429): tried last, and probed.")
	for _, n := range pl.nodes {
		w.sample("hermes_upstream_up", b2f(!n.isOut.Load()), "upstream", n.Name)
	}
	w.family("hermes_upstream_requests_total", "counter", "Attempts sent to the upstream (a request that fails over counts at each upstream it tried).")
	for _, n := range pl.nodes {
		w.sampleU("hermes_upstream_requests_total", n.requests.Load(), "upstream", n.Name)
	}
	w.family("hermes_upstream_failures_total", "counter", "Attempts that failed: no connection, no answer head in time, a 5xx or a 429.")
	for _, n := range pl.nodes {
		w.sampleU("hermes_upstream_failures_total", n.failures.Load(), "upstream", n.Name)
	}
	w.family("hermes_upstream_failovers_total", "counter", "Requests that moved from the upstream to the next one before any byte of an answer.")
	for _, n := range pl.nodes {
		w.sampleU("hermes_upstream_failovers_total", n.failovers.Load(), "upstream", n.Name)
	}
}

// writeAcceptMetrics: each listener's accept errors and fd reserve.
func (g *gateway) writeAcceptMetrics(w *promWriter) {
	var accs []*acceptor
	for _, a := range []*acceptor{g.httpAcc, g.ctlAcc} {
		if a != nil {
			accs = append(accs, a)
		}
	}
	w.family("hermes_accept_errors_total", "counter", "Accept errors waited out, by listener (http: gateway.listen, control: hermes's own commands); EMFILE among them means the gateway ran out of file descriptors.")
	for _, a := range accs {
		w.sample("hermes_accept_errors_total", float64(a.errs.Load()), "listener", a.name)
	}
	w.family("hermes_accept_reserve_used_total", "counter", "Connections accepted on the reserve file descriptor while the gateway had no other: answered 503 (http) or served (control).")
	for _, a := range accs {
		w.sample("hermes_accept_reserve_used_total", float64(a.shed.Load()), "listener", a.name)
	}
	w.family("hermes_accept_reserve_held", "gauge", "1 while the listener's reserve file descriptor is open, ready for the next moment without descriptors.")
	for _, a := range accs {
		w.sample("hermes_accept_reserve_held", b2f(a.reserve.held()), "listener", a.name)
	}
}

// writeLifecycleMetrics: drains, handoffs, reloads, the watchdog, the
// crash-loop guard and the log queues.
func (g *gateway) writeLifecycleMetrics(w *promWriter) {
	m := &g.mx
	w.counterVec("hermes_drains_total", "Drains started, by reason (a handoff's predecessor drains with reason handoff).", "reason", drainReasons[:], m.drains[:])
	w.family("hermes_drain_timeouts_total", "counter", "Drains that reached drain.timeout and cut the sessions left.")
	w.sampleU("hermes_drain_timeouts_total", m.drainTimeouts.Load())
	w.counterVec("hermes_drain_ends_total", "Drains ended: empty (every session had ended) or grace_over (sessions cut and drain.grace ran out). The process exits right after.",
		"how", drainEndHows[:], m.drainEnds[:])
	w.counterVec("hermes_handoffs_total", "Handoffs by result: ok (the successor serves), failed, refused, failback (the successor died after taking over).",
		"result", handoffResults[:], m.handoffs[:])
	w.counterVec("hermes_reloads_total", "Policy reloads by result.", "result", reloadResults[:], m.reloads[:])
	w.family("hermes_watchdog_firings_total", "counter", "Times the watchdog found the loop frozen; the process exits 70 right after.")
	w.sampleU("hermes_watchdog_firings_total", m.watchdog.Load())
	w.family("hermes_crash_loop", "gauge", "1 when this gateway started in a crash loop (and waited out a delay), else 0.")
	w.sample("hermes_crash_loop", b2f(m.crashLoop))
	w.family("hermes_crash_loop_delay_seconds", "gauge", "The crash-loop delay this gateway waited before it listened.")
	w.sample("hermes_crash_loop_delay_seconds", m.crashDelay.Seconds())
	w.family("hermes_starts_recent", "gauge", "Unplanned gateway starts within crash_loop.window, as the start ledger said at this start.")
	w.sample("hermes_starts_recent", float64(m.startsRecent))
	w.family("hermes_log_lines_dropped_total", "counter", "Log, journal and sd_notify lines dropped or failed because a queue was full or a write failed.")
	w.sampleU("hermes_log_lines_dropped_total", g.logq.lost()+g.sd.lost())
}

// writeTelegramMetrics: the bot's poller and answers.
func (g *gateway) writeTelegramMetrics(w *promWriter, now time.Time) {
	m, b := &g.mx, g.tg
	st := b.status.Load()
	w.family("hermes_telegram_state", "gauge", "1 for the Telegram poller's current state, 0 for the others.")
	for _, s := range telegramStates {
		w.sample("hermes_telegram_state", b2f(st.State == s), "state", s)
	}
	w.family("hermes_telegram_polls_total", "counter", "getUpdates long polls by result: ok, conflict (409: another poller on the token), error.")
	for i := range m.tgPolls {
		w.sampleU("hermes_telegram_polls_total", m.tgPolls[i].Load(), "result", tgPollResults[i])
	}
	w.family("hermes_telegram_conflicts_total", "counter", "Polling-conflict episodes begun (another bot instance polls the token); every 409 is a conflict poll.")
	w.sampleU("hermes_telegram_conflicts_total", m.tgConflicts.Load())
	w.family("hermes_telegram_store_errors_total", "counter", "Polls whose messages could not be stored (the state dir fails): not accepted, fetched again later.")
	w.sampleU("hermes_telegram_store_errors_total", m.tgStoreErrors.Load())
	w.family("hermes_telegram_answers_total", "counter", "Telegram messages answered.")
	w.sampleU("hermes_telegram_answers_total", m.tgAnswers.Load())
	w.family("hermes_telegram_last_poll_age_seconds", "gauge", "How long ago a poll last succeeded (absent before the first).")
	if !st.LastPoll.IsZero() {
		w.sample("hermes_telegram_last_poll_age_seconds", max(now.Sub(st.LastPoll), 0).Seconds())
	}
	w.family("hermes_telegram_pending", "gauge", "Accepted messages not answered yet (those being answered included).")
	w.sample("hermes_telegram_pending", float64(st.Pending))
	w.family("hermes_telegram_answering", "gauge", "Messages being answered now.")
	w.sample("hermes_telegram_answering", float64(st.Answering))
}

// writeProcessMetrics: the process and the Go runtime.
func writeProcessMetrics(w *promWriter) {
	ps := readProcStats()
	w.family("hermes_process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch, in seconds.")
	w.sample("hermes_process_start_time_seconds", float64(processStart.UnixNano())/1e9)
	if ps.cpu >= 0 {
		w.family("hermes_process_cpu_seconds_total", "counter", "User and system CPU time the process spent, in seconds.")
		w.sample("hermes_process_cpu_seconds_total", ps.cpu)
	}
	if ps.rss >= 0 {
		w.family("hermes_process_resident_memory_bytes", "gauge", "Resident memory size in bytes"+ps.rssNote+".")
		w.sample("hermes_process_resident_memory_bytes", ps.rss)
	}
	if ps.fds >= 0 {
		w.family("hermes_process_open_fds", "gauge", "Open file descriptors.")
		w.sample("hermes_process_open_fds", ps.fds)
	}
	if ps.maxFDs >= 0 {
		w.family("hermes_process_max_fds", "gauge", "The limit on open file descriptors (RLIMIT_NOFILE).")
		w.sample("hermes_process_max_fds", ps.maxFDs)
	}
	w.family("hermes_go_goroutines", "gauge", "Goroutines that currently exist.")
	w.sample("hermes_go_goroutines", float64(runtime.NumGoroutine()))
	rt := readGoRuntime()
	w.family("hermes_go_alloc_bytes_total", "counter", "Bytes allocated on the heap since the process started.")
	w.sampleU("hermes_go_alloc_bytes_total", rt[0].Value.Uint64())
	w.family("hermes_go_allocs_total", "counter", "Heap objects allocated since the process started.")
	w.sampleU("hermes_go_allocs_total", rt[1].Value.Uint64())
	w.family("hermes_go_gc_cycles_total", "counter", "Garbage collections completed since the process started.")
	w.sampleU("hermes_go_gc_cycles_total", rt[2].Value.Uint64())
	w.family("hermes_go_heap_live_bytes", "gauge", "Heap bytes of the objects the last garbage collection found live.")
	w.sampleU("hermes_go_heap_live_bytes", rt[3].Value.Uint64())
	w.family("hermes_go_stack_bytes", "gauge", "Bytes of goroutine stacks.")
	w.sampleU("hermes_go_stack_bytes", rt[4].Value.Uint64())
}

// readGoRuntime reads the allocation and collection counters, the live
// heap and the stacks (no stop-the-world, unlike runtime.ReadMemStats).
func readGoRuntime() []rtmetrics.Sample {
	s := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/allocs:objects"}, {Name: "/gc/cycles/total:gc-cycles"},
		{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/stacks:bytes"}}
	rtmetrics.Read(s)
	return s
}

// procStats is what the kernel says of the process; -1 is unknown.
type procStats struct {
	cpu, rss, fds, maxFDs float64
	rssNote               string // how rss was measured, where it is not the current size
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// promWriter appends the text exposition format to b.
type promWriter struct{ b []byte }

// family writes a family's HELP and TYPE lines.
func (w *promWriter) family(name, typ, help string) {
	w.b = append(w.b, "# HELP "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	for i := 0; i < len(help); i++ {
		switch c := help[i]; c {
		case '\\':
			w.b = append(w.b, `\\`...)
		case '\n':
			w.b = append(w.b, `\n`...)
		default:
			w.b = append(w.b, c)
		}
	}
	w.b = append(w.b, "\n# TYPE "...)
	w.b = append(w.b, name...)
	w.b = append(w.b, ' ')
	w.b = append(w.b, typ...)
	w.b = append(w.b, '\n')
}

// labels writes name{k="v",...}; kv is label name, value pairs.
func (w *promWriter) labels(name string, kv []string) {
	w.b = append(w.b, name...)
	if len(kv) == 0 {
		return
	}
	w.b = append(w.b, '{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			w.b = append(w.b, ',')
		}
		w.b = append(w.b, kv[i]...)
		w.b = append(w.b, `="`...)
		v := kv[i+1]
		for j := 0; j < len(v); j++ {
			switch c := v[j]; c {
			case '\\':
				w.b = append(w.b, `\\`...)
			case '"':
				w.b = append(w.b, `\"`...)
			case '\n':
				w.b = append(w.b, `\n`...)
			default:
				w.b = append(w.b, c)
			}
		}
		w.b = append(w.b, '"')
	}
	w.b = append(w.b, '}')
}

// sample writes one sample with a float value.
func (w *promWriter) sample(name string, v float64, kv ...string) {
	w.labels(name, kv)
	w.b = append(w.b, ' ')
	w.b = appendFloat(w.b, v)
	w.b = append(w.b, '\n')
}

// sampleU writes one sample with an integer value (a counter).
// counterVec writes a counter family with one label: a sample for each of
// values, counted in counts (the same length, the same order).
func (w *promWriter) counterVec(name, help, label string, values []string, counts []atomic.Uint64) {
	w.family(name, "counter", help)
	for i := range counts {
		w.sampleU(name, counts[i].Load(), label, values[i])
	}
}

func (w *promWriter) sampleU(name string, v uint64, kv ...string) {
	w.labels(name, kv)
	w.b = append(w.b, ' ')
	w.b = strconv.AppendUint(w.b, v, 10)
	w.b = append(w.b, '\n')
}

// histogram writes a histogram family: cumulative buckets, +Inf, sum and
// count (the count is the +Inf bucket's, so the two always agree).
func (w *promWriter) histogram(name, help string, b *buckets, h *histogram) {
	w.family(name, "histogram", help)
	var cum uint64
	for i, le := range b.le {
		cum += h.counts[i].Load()
		w.sampleU2(name, "_bucket", cum, "le", le)
	}
	cum += h.counts[len(b.le)].Load()
	w.sampleU2(name, "_bucket", cum, "le", "+Inf")
	w.b = append(w.b, name...)
	w.sample("_sum", float64(h.sumNS.Load())/1e9)
	w.b = append(w.b, name...)
	w.sampleU("_count", cum)
}

// sampleU2 writes a sample whose name is name+suffix, without joining them.
func (w *promWriter) sampleU2(name, suffix string, v uint64, kv ...string) {
	w.b = append(w.b, name...)
	w.sampleU(suffix, v, kv...)
}

// appendFloat formats v as the text format wants it (+Inf, -Inf, NaN).
func appendFloat(b []byte, v float64) []byte {
	switch {
	case math.IsInf(v, 1):
		return append(b, "+Inf"...)
	case math.IsInf(v, -1):
		return append(b, "-Inf"...)
	case math.IsNaN(v):
		return append(b, "NaN"...)
	}
	return strconv.AppendFloat(b, v, 'g', -1, 64)
}
