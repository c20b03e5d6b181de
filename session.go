package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
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
func (g *gateway) serveSession(w http.ResponseWriter, r *http.Request) {
	if !g.gate.enter() {
		g.refuse(w)
		return
	}
	defer g.gate.leave()
	id := newID()
	started := time.Now()
	p := g.policy.Load()
	w.Header().Set("X-Hermes-Session", id)
	rec := &responseRecorder{ResponseWriter: w}
	if p.Gateway.Upstream == "" {
		serveEcho(rec, r, p.Echo.WordDelay)
	} else {
		g.proxy(rec, r, p)
	}
	ctx := r.Context()
	var cc *cutCause
	switch {
	case errors.As(context.Cause(ctx), &cc):
		g.finalEvent(rec, cc.reason, p.Drain.Grace)
		g.log.info(evSessionCut, "session", id, "path", r.URL.Path, "duration", time.Since(started), "sessions", g.gate.count()-1)
	case ctx.Err() != nil:
		g.log.info(evSessionClientGone, "session", id, "path", r.URL.Path, "duration", time.Since(started), "sessions", g.gate.count()-1)
	case !g.gate.admitting():
		g.log.info(evSessionFinished, "session", id, "path", r.URL.Path, "duration", time.Since(started), "sessions", g.gate.count()-1)
	}
}

// refuse answers a request that arrives while the gateway drains.
func (g *gateway) refuse(w http.ResponseWriter) {
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
}

func (r *responseRecorder) WriteHeader(code int) {
	r.wroteHeader = true
	r.ResponseWriter.WriteHeader(code)
}

func (r *responseRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

func (r *responseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *responseRecorder) sse() bool {
	return strings.HasPrefix(r.Header().Get("Content-Type"), "text/event-stream")
}

// finalEvent tells a client whose session the drain ended why, so it knows
// to reconnect: an SSE error event if the stream had started, else a 503.
// Both carry the same error object.
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

var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// newUpstreamTransport is the transport to the upstream: the client's
// encoding passes through untouched.
func newUpstreamTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	return tr
}

// proxy passes the request to the upstream and streams the answer back chunk
// by chunk as it arrives: SSE is never buffered. The API key is added here,
// on the upstream side only.
func (g *gateway) proxy(w *responseRecorder, r *http.Request, p *Policy) {
	base := strings.TrimSuffix(p.Gateway.Upstream, "/")
	path := r.URL.Path
	if strings.HasSuffix(base, "/v1") {
		path = strings.TrimPrefix(path, "/v1")
	}
	target := base + path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	// The transport may still be reading the request body (its final EOF
	// check) when the upstream's answer starts; without full duplex the
	// HTTP/1 server closes that body at our first write and the transport
	// then drops the upstream connection mid-stream.
	http.NewResponseController(w).EnableFullDuplex()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, r.Body)
	if err != nil {
		writeAPIError(w, http.StatusBadGateway, "server_error", "bad_upstream", "cannot build the upstream request")
		return
	}
	req.ContentLength = r.ContentLength
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	if p.Gateway.UpstreamKeyEnv != "" {
		if key := os.Getenv(p.Gateway.UpstreamKeyEnv); key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
	}
	resp, err := g.client.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		g.log.warn(evUpstreamError, "error", redactURL(err, target), "path", r.URL.Path)
		writeAPIError(w, http.StatusBadGateway, "server_error", "upstream_unreachable", "the gateway could not reach its upstream")
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF && r.Context().Err() == nil {
				g.log.warn(evUpstreamBroken, "error", err, "path", r.URL.Path)
			}
			return
		}
	}
}

// redactURL keeps the error but drops the query string of target, which may
// carry credentials some APIs take there.
func redactURL(err error, target string) string {
	msg := err.Error()
	if i := strings.Index(target, "?"); i >= 0 {
		msg = strings.ReplaceAll(msg, target, target[:i]+"?…")
	}
	return msg
}
