package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// The session's side of [reattach] (reattach.go): a stream a session
// starts is one its client can come back to, and a request with
// Last-Event-ID comes back to one.

// detachable is what a session that may start a stream for reattach
// knows: who started it, and the policy. Nothing is allocated for it
// until an answer turns out to be a stream of events.
type detachable struct {
	owner [32]byte
	pol   ReattachPolicy
}

// streamDetacher is an answer's body whose reads can outlive the client:
// detach moves what ends them from the client's connection to ctx, and
// reports false when the client is gone already.
type streamDetacher interface {
	detach(ctx context.Context) bool
}

// relayStream relays an answer that is a stream of events, numbering each
// (reattach.go), and owns body from here: it closes it, or a pump reads
// it on once the client has gone or another took the stream over. A body
// that cannot outlive its client (net/http's Transport's) is relayed as
// before.
func (g *gateway) relayStream(w *responseRecorder, r *http.Request, body io.ReadCloser, d *detachable) {
	det, ok := body.(streamDetacher)
	if !ok {
		defer body.Close()
		relay(w, r, &http.Response{Body: body, ContentLength: -1}, g.log)
		return
	}
	ctx, cancel := context.WithCancelCause(g.cutCtx)
	if !det.detach(ctx) {
		cancel(context.Canceled)
		body.Close()
		return
	}
	rc := http.NewResponseController(w)
	// The path is copied: r's may point into the buffer its head was read
	// into, which the stream would keep.
	st := g.streams.open(d.pol, d.owner, strings.Clone(r.URL.Path), cancel, func() { rc.SetWriteDeadline(time.Now()) })
	// The client leaving detaches the stream at once, even while the
	// upstream is silent.
	gone := onCancel(r.Context(), func() { st.lost(1) })
	defer gone.stop()
	// The kick reaches this session's connection: once the session is
	// over the stream must not keep it (nor all it holds).
	defer st.dropKick()
	waiter, _ := body.(dataWaiter)
	for {
		from, to, mine, removed, err := st.readOnce(body, waiter, 1)
		if mine && to > from {
			werr := st.writeOut(w, from, to)
			// Data that came with the stream's end is the last: the
			// server sends it with the end, in one write.
			if werr == nil && err == nil {
				werr = rc.Flush()
			}
			if werr != nil {
				st.lost(1)
				mine = false
			}
		}
		if !mine && !removed {
			// Its client went, or another took the stream over: this
			// answer ends without its end, never as a clean one (a
			// client still there, say in another tab, must see the cut),
			// and its connection closes. (A stream removed under it is
			// the drain's cut: endSession gives the final event.)
			abortAnswer(w)
		}
		switch {
		case removed || (!mine && err != nil):
			st.finish(err)
			body.Close()
			return
		case !mine:
			go st.pump(body) // nobody, or a client that came back, follows it
			return
		case err != nil:
			st.finish(err)
			st.delivered(1)
			body.Close()
			awaitDrainCut(r.Context(), err)
			if err != io.EOF && r.Context().Err() == nil {
				upstreamBroken(g.log, err, r.URL.Path)
				cutAnswer(w, err)
			}
			return
		}
	}
}

// awaitDrainCut waits, when err is the drain's cut, for the request to
// hear of it too. The drain cancels the gateway's cut context, whose
// descendants include both the stream's context and the request's, and
// the stream may hear first: the cancel under way reaches the request's
// at once, and then the session ends as the drain's cut, with its final
// event (endSession), not as an upstream that broke.
func awaitDrainCut(ctx context.Context, err error) {
	var cc *cutCause
	if errors.As(err, &cc) {
		<-ctx.Done()
	}
}

// serveReattach answers a request with Last-Event-ID: the rest of its
// stream, from this gateway or from the predecessor it still drains in.
// It takes no place in the gate: it starts nothing upstream, and the
// stream it follows holds one.
//
//go:noinline
func (g *gateway) serveReattach(w http.ResponseWriter, r *http.Request, owner [32]byte, last string, p *Policy) {
	id, n, ok := parseLastEventID(last)
	if !ok {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_last_event_id",
			"Last-Event-ID is not an event id of this gateway's (<stream id>-<n>): send the request without it for a new answer")
		return
	}
	st, gen, off, refusal := g.streams.attach(id, n, owner, r.URL.Path)
	if refusal == refuseUnknown {
		if g.askPredecessor(w, r, id, n, owner, p) {
			return
		}
		// The predecessor may have handed it over since.
		st, gen, off, refusal = g.streams.attach(id, n, owner, r.URL.Path)
	}
	if refusal != nil {
		refuseReattach(w, refusal)
		return
	}
	rec := &responseRecorder{ResponseWriter: w}
	startEventStream(rec, id)
	out := &httpStreamOut{rec: rec, rc: http.NewResponseController(rec)}
	err := st.follow(r.Context(), gen, off, out)
	var cc *cutCause
	switch {
	case errors.Is(err, errTakenOver):
		abortAnswer(rec)
	case errors.As(context.Cause(r.Context()), &cc):
		g.finalEvent(rec, cc.reason, p.Drain.Grace)
	}
}

// startEventStream writes the head of a stream a client came back to.
func startEventStream(w http.ResponseWriter, id string) {
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Hermes-Stream", id)
	w.WriteHeader(http.StatusOK)
}

// refuseReattach answers a Last-Event-ID it cannot follow.
func refuseReattach(w http.ResponseWriter, refusal *reattachRefusal) {
	if refusal == finishedAlready {
		// The client has the whole stream: 204 tells an EventSource to
		// stop reconnecting.
		w.WriteHeader(http.StatusNoContent)
		return
	}
	writeAPIError(w, refusal.status, "invalid_request_error", refusal.code, refusal.msg)
}

// abortAnswer ends an answer under way without its end.
func abortAnswer(rec *responseRecorder) {
	if ac, ok := rec.ResponseWriter.(answerControl); ok {
		ac.abort()
		return
	}
	panic(http.ErrAbortHandler)
}

// httpStreamOut follows a stream into a client's answer.
type httpStreamOut struct {
	rec *responseRecorder
	rc  *http.ResponseController
}

func (o *httpStreamOut) write(p []byte) error {
	if _, err := o.rec.Write(p); err != nil {
		return err
	}
	return o.rc.Flush()
}

func (o *httpStreamOut) end(cut error) {
	if cut == nil {
		return
	}
	o.rec.Write(streamEndEvent(cut))
	o.rc.Flush()
	abortAnswer(o.rec)
}

// streamEndEvent is the error event that ends a stream cut short: by its
// upstream (upstream_cut, upstream_timeout), by the drain (its reason), or
// because it could not be kept (reattach_lost).
func streamEndEvent(cut error) []byte {
	code := "upstream_cut"
	msg := "the upstream's answer broke off before its end; what came is incomplete"
	var late *upstreamTimeout
	var cc *cutCause
	var mc *movedCut
	switch {
	case errors.As(cut, &mc):
		return mc.event // as the predecessor would have ended it
	case errors.As(cut, &late):
		code = "upstream_timeout"
		msg = fmt.Sprintf("the upstream sent nothing for %s inside its answer (gateway.upstream_idle_timeout); what came is incomplete", late.after)
	case errors.As(cut, &cc):
		code, msg = cc.reason, "the gateway ended the stream as it stopped; reconnect to continue"
	case errors.Is(cut, errStreamGone):
		code, msg = "reattach_lost", "the stream could not be kept for this client (reattach.max_buffer, or the gateway stopping); what came is incomplete"
	}
	body, _ := json.Marshal(map[string]any{
		"reason": code,
		"error":  map[string]any{"message": msg, "type": "server_error", "code": code},
	})
	return fmt.Appendf(nil, "event: error\ndata: %s\n\n", body)
}
