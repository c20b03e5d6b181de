package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
)

// Sessions: every /v1/... request is one, admitted and counted by an atomic
// gate so that no request waits on the gateway's loop. The loop closes the
// gate when a drain starts (from then on every new request gets 503 with
// Retry-After) and waits for the count to reach zero; a session that was
// admitted is always counted, because close and enter are one atomic word.
// The drain ends sessions by cancelling the context every request descends
// from (gateway.cutCtx), with the reason as the cause.

// admission is the gate: the count of open sessions, and a closed bit.
type admission struct {
	word atomic.Int64
	// changed wakes the loop when a session ends while the gate is closed
	// (one pending wake-up is enough: the loop reads the count).
	changed chan struct{}
}

const (
	gateClosed  = int64(1) << 62
	gateWatched = int64(1) << 61 // open, but the loop wants to hear of every session's end (handed off)
	gateFlags   = gateClosed | gateWatched
)

func (a *admission) init() { a.changed = make(chan struct{}, 1) }

// enter admits a session unless the gate is closed.
func (a *admission) enter() bool {
	for {
		w := a.word.Load()
		if w&gateClosed != 0 {
			return false
		}
		if a.word.CompareAndSwap(w, w+1) {
			return true
		}
	}
}

// hold takes one more place for an admitted session's work that outlives
// it (a detached stream, reattach.go), even with the gate closed: it is
// taken while the session still holds its own, so the count never falls
// to zero between.
func (a *admission) hold() { a.word.Add(1) }

// leave ends an admitted session.
func (a *admission) leave() {
	if a.word.Add(-1)&gateFlags != 0 {
		a.wake()
	}
}

// wake tells the loop the count changed; one pending wake-up is enough.
func (a *admission) wake() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// close shuts the gate and returns the count at that moment; it only falls
// from there.
func (a *admission) close() int { return int(a.word.Or(gateClosed) &^ gateFlags) }

// watch keeps the gate open but has every session's end wake the loop.
func (a *admission) watch() { a.word.Or(gateWatched) }

func (a *admission) unwatch() { a.word.And(^gateWatched) }

func (a *admission) count() int { return int(a.word.Load() &^ gateFlags) }

func (a *admission) admitting() bool { return a.word.Load()&gateClosed == 0 }

// serveSession runs one in-flight request as a session the drain can see.
// The functions on the stack while a session streams keep small frames
// (what is cold, such as logging and errors, is in functions of their
// own): a goroutine's stack keeps its deepest size for its whole life, and
// net/http's own frames on the way to a write are deep already. Kept under
// 8 KB, 10,000 streams take 80 MB less.
func (g *gateway) serveSession(w http.ResponseWriter, r *http.Request) {
	owner, ok := g.authorizeKey(w, r, true)
	if !ok {
		return
	}
	if v := r.Header["Last-Event-Id"]; len(v) > 0 && g.policy.Load().Reattach.Window > 0 {
		g.serveReattach(w, r, owner, v[0], g.policy.Load())
		return
	}
	if !g.gate.enter() {
		g.refuse(w)
		return
	}
	defer g.gate.leave()
	s := g.beginSession(w, r)
	var d *detachable
	if s.p.Reattach.Window > 0 {
		d = &s.d
		d.owner, d.pol = owner, s.p.Reattach
	}
	if s.p.echoing() {
		g.serveEcho(&s.rec, r, s.p.Echo.WordDelay, d)
	} else {
		g.proxy(&s.rec, r, s.p, d)
	}
	g.endSession(s, r)
}

// sessionRun is one session's own state.
type sessionRun struct {
	id      string
	started time.Time
	p       *Policy
	// One allocation for the session: its recorder, and the header
	// value's slice, live in it.
	rec     responseRecorder
	idValue [1]string
	d       detachable // who may come back to its stream, with [reattach]
}

//go:noinline
func (g *gateway) beginSession(w http.ResponseWriter, r *http.Request) *sessionRun {
	s := &sessionRun{id: newID(), started: time.Now(), p: g.policy.Load()}
	s.rec.ResponseWriter = w
	s.idValue[0] = s.id
	w.Header()["X-Hermes-Session"] = s.idValue[:]
	return s
}

// endSession says how the session ended: the drain cut it (it gets its
// final event), the client went, or it finished during a drain.
//
//go:noinline
func (g *gateway) endSession(s *sessionRun, r *http.Request) {
	ctx := r.Context()
	first := s.rec.first // before a final event writes
	var cc *cutCause
	ev := evNone
	switch {
	case errors.As(context.Cause(ctx), &cc):
		g.finalEvent(&s.rec, cc.reason, s.p.Drain.Grace)
		ev = evSessionCut
	case ctx.Err() != nil:
		ev = evSessionClientGone
	case !g.gate.admitting():
		ev = evSessionFinished
	}
	if ev != evNone {
		g.log.info(ev, "session", s.id, "path", r.URL.Path, "duration", time.Since(s.started), "sessions", g.gate.count()-1)
	}
	g.mx.sessionEnded(s, ev, first)
}

// refuse answers a request that arrives while the gateway drains.
//
//go:noinline
func (g *gateway) refuse(w http.ResponseWriter) {
	g.mx.sessions[sessRefused].Add(1)
	s := g.snap.Load()
	reason := s.Reason
	if reason == "" {
		reason = reasonShutdown
	}
	w.Header().Set("Retry-After", fmt.Sprint(int(s.Policy.Service.RestartSec.Seconds())+1))
	w.Header().Set("Connection", "close")
	writeAPIError(w, http.StatusServiceUnavailable, reason, reason,
		"the gateway is draining for a "+strings.TrimPrefix(reason, "gateway_")+"; retry shortly")
}

// responseRecorder remembers what a session has written, so the final
// event can be an SSE event (stream started) or a JSON error (nothing sent).
type responseRecorder struct {
	http.ResponseWriter
	wroteHeader bool
	// For the metrics: the body bytes written, when the first went, and
	// what went wrong with the upstream (upstream_proxy.go).
	written  int64
	first    time.Time
	upstream upstreamKind
}

func (r *responseRecorder) WriteHeader(code int) {
	r.wroteHeader = true
	r.ResponseWriter.WriteHeader(code)
}

func (r *responseRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	if r.first.IsZero() {
		r.first = time.Now()
	}
	n, err := r.ResponseWriter.Write(b)
	r.written += int64(n)
	return n, err
}

func (r *responseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// reset forgets an answer none of which has gone out, so that another
// can be given; it reports false once some of it has.
func (r *responseRecorder) reset(ac answerControl) bool {
	if !ac.discard() {
		return false
	}
	r.wroteHeader, r.written, r.first = false, 0, time.Time{}
	return true
}

func (r *responseRecorder) sse() bool {
	return strings.HasPrefix(r.Header().Get("Content-Type"), "text/event-stream")
}

// finalEvent tells a client whose session the drain ended why, so it knows
// to reconnect: an SSE error event if the stream had started, else a 503.
// Both carry the same error object.
//
//go:noinline
func (g *gateway) finalEvent(rec *responseRecorder, reason string, grace time.Duration) {
	rc := http.NewResponseController(rec)
	rc.SetWriteDeadline(time.Now().Add(max(grace, 100*time.Millisecond)))
	msg := "the gateway is shutting down; reconnect to continue"
	if reason == reasonRestart {
		msg = "the gateway is restarting; reconnect in a few seconds to continue"
	}
	body, _ := json.Marshal(map[string]any{
		"reason": reason,
		"error":  map[string]any{"message": msg, "type": reason, "code": reason},
	})
	if !rec.wroteHeader {
		rec.Header().Set("Connection", "close")
		rec.Header().Set("Content-Type", "application/json")
		rec.WriteHeader(http.StatusServiceUnavailable)
		rec.Write(append(body, '\n'))
		return
	}
	if rec.sse() {
		fmt.Fprintf(rec, "event: error\ndata: %s\n\n", body)
		rc.Flush()
	}
}
