package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// The proxy path: a session's request goes to the upstream, and the answer
// comes back as it arrives.

// hopHeader reports whether a (canonical) header is hop-by-hop: it belongs
// to one connection and is never passed on.
func hopHeader(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// newUpstreamTransport is the transport to the upstream: the client's
// encoding passes through untouched, and idle connections are kept for
// reuse as many as there are sessions. Go's default keeps 2 per host: with
// more concurrent sessions than that, nearly every request dialled a new
// connection and left a socket in TIME_WAIT (14,000 in 8 s of load).
func newUpstreamTransport() *http.Transport {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true
	tr.MaxIdleConns = upstreamIdleConns
	tr.MaxIdleConnsPerHost = upstreamIdleConns
	return tr
}

// upstreamIdleConns bounds the idle upstream connections kept: a burst of
// this many sessions reuses connections afterwards; an idle one still goes
// after the transport's IdleConnTimeout (90 s).
const upstreamIdleConns = 1024

// proxy passes the request to the upstream and streams the answer back chunk
// by chunk as it arrives: SSE is never buffered. The API key is added here,
// on the upstream side only.
//
// With d (reattach.go), an answer that is a stream of events goes through
// relayStream, which numbers its events, keeps them, and lets the
// upstream outlive the client.
func (g *gateway) proxy(w *responseRecorder, r *http.Request, p *Policy, d *detachable) {
	var req upstreamReq // on the stack: nothing keeps it after the session
	if !g.upstreamRequest(w, r, p, &req) {
		return
	}
	req.keepStream = d != nil
	resp, ok := g.roundTrip(w, r, &req)
	if !ok {
		return
	}
	if d != nil && resp.StatusCode == http.StatusOK && w.sse() {
		g.relayStream(w, r, resp.Body, d)
		return
	}
	defer resp.Body.Close()
	relay(w, r, resp, g.log)
}

// dropConnectionTokens removes from h the fields its Connection header
// names (RFC 9110 7.6.1): they belong to the one connection they came on,
// like the hop-by-hop fields, and are never passed on. close and
// keep-alive name no field. It allocates nothing for the Connection
// headers clients send ("keep-alive", "close").
func dropConnectionTokens(h http.Header) {
	for _, v := range h["Connection"] {
		for v != "" {
			var tok string
			tok, v, _ = strings.Cut(v, ",")
			tok = trimOWS(tok)
			if tok == "" || strings.EqualFold(tok, "close") || strings.EqualFold(tok, "keep-alive") {
				continue
			}
			if k := canonicalKey(tok); k != "Connection" {
				delete(h, k)
			}
		}
	}
}

// upstreamReq is a request on its way to the upstream: what the client
// sent, and what the gateway adds or takes away.
type upstreamReq struct {
	ctx    context.Context
	method string
	base   string // the upstream's URL, without a trailing slash
	path   string // the client's escaped path (less /v1 when base ends in it)
	// clientPath is the client's escaped path, from which each attempt's
	// path is cut (upstreamNode.aim).
	clientPath string
	pool       *upstreamPool // the upstreams it may go to
	query      string        // the client's raw query, or ""
	header     http.Header   // the client's; hop-by-hop headers are left out when sent
	auth       string        // Authorization from the policy's key, or ""
	body       []byte        // a small body, read whole; nil when stream carries it
	pooled     *[]byte       // body's pooled buffer, or nil
	stream     io.Reader
	tap        *streamedBody // stream, when the body streams; nil when read whole
	length     int64         // the body's length, -1 unknown

	// gateway.upstream_header_timeout and upstream_idle_timeout.
	headerTimeout, idleTimeout time.Duration
	// keepStream: a stream of events in answer is kept for reattach
	// (relayStream), so its length is not the upstream's.
	keepStream bool
}

// url is the whole target URL.
func (req *upstreamReq) url() string {
	u := req.base + req.path
	if req.query != "" {
		u += "?" + req.query
	}
	return u
}

// free gives body's buffer back.
func (req *upstreamReq) free() {
	putBuf(req.pooled)
	req.pooled = nil
}

// upstreamRequest makes req the request to the upstream. A small body (a
// chat request, most of the time) is read whole first: the request then
// leaves in one system call, headers and body together. A larger one
// streams through as it comes.
//
//go:noinline
func (g *gateway) upstreamRequest(w *responseRecorder, r *http.Request, p *Policy, req *upstreamReq) bool {
	if limit := p.Gateway.MaxRequestBody; limit > 0 && r.ContentLength > limit {
		tooLarge(w, limit)
		return false
	}
	dropConnectionTokens(r.Header)
	// A body that may go to a second upstream, or whose model picks the
	// upstream, is read whole: it is replayed from memory.
	pl := g.pool(p)
	*req = upstreamReq{ctx: r.Context(), method: r.Method, clientPath: r.URL.EscapedPath(), query: r.URL.RawQuery,
		header: r.Header, stream: r.Body, length: r.ContentLength, pool: pl,
		headerTimeout: p.Gateway.UpstreamHeaderTimeout, idleTimeout: p.Gateway.UpstreamIdleTimeout}
	whole := r.ContentLength > 0 && r.ContentLength <= smallBody
	limit := int64(smallBody)
	if r.ContentLength != 0 && (pl.hasModels || (len(pl.nodes) > 1 && p.Failover.Attempts > 1)) {
		whole, limit = true, p.Gateway.MaxRequestBody
	}
	if whole {
		b, pooled, err := readBody(w, r, limit)
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				tooLarge(w, limit)
			} else if r.Context().Err() == nil {
				g.clientBodyRefused(w, r, clientBodyErr(err).(*clientBodyError))
			}
			return false
		}
		req.body, req.stream, req.pooled, req.length = b, nil, pooled, int64(len(b))
	} else if r.ContentLength != 0 {
		// A body that streams is read through streamedBody, which keeps
		// the client's read error for upstreamRefused (net/http's
		// Request.Write hides its type) and holds a chunked body to
		// gateway.max_request_body as it streams: past the limit, its read
		// fails as the client's error, and the request ends with a 413
		// (the upstream saw part of it, on a connection that closes).
		left := int64(math.MaxInt64)
		if r.ContentLength < 0 && p.Gateway.MaxRequestBody > 0 {
			left = p.Gateway.MaxRequestBody
		}
		req.tap = &streamedBody{r: r.Body, left: left}
		req.stream = req.tap
		// The transport may still be reading the request body (its final
		// EOF check) when the upstream's answer starts; without full
		// duplex the HTTP/1 server closes that body at our first write and
		// the transport then drops the upstream connection mid-stream.
		http.NewResponseController(w).EnableFullDuplex()
	}
	return true
}

// httpRequest is req as net/http's, for its Transport and for bodies that
// stream.
func (req *upstreamReq) httpRequest() (*http.Request, error) {
	body := req.stream
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hr, err := http.NewRequestWithContext(req.ctx, req.method, req.url(), body)
	if err != nil {
		return nil, err
	}
	hr.ContentLength = req.length
	for k, vs := range req.header {
		if !hopHeader(k) {
			hr.Header[k] = vs
		}
	}
	if req.auth != "" {
		hr.Header.Set("Authorization", req.auth)
	}
	return hr, nil
}

// roundTrip sends req to the upstreams in their order (upstream_pool.go)
// and returns the first answer that is not a failure, with its headers
// copied to w; or it answers the error itself and reports false. A request
// moves to the next upstream on a connect error, a timeout before the
// answer's head, a 5xx or a 429, while failover.attempts and
// failover.timeout allow and its body is in memory; never after a byte of
// an answer has gone to the client. The last upstream's answer, failure
// or not, is the client's. The request body's buffer goes back to the
// pool when nothing can read the body any more: at once with the
// session's own client, which has written the whole request before it
// reads the answer. net/http's Transport may still be writing the body
// while the answer streams, even after the session ends, so with it the
// buffer is left to the collector.
//
//go:noinline
func (g *gateway) roundTrip(w *responseRecorder, r *http.Request, req *upstreamReq) (*http.Response, bool) {
	pl := req.pool
	model := ""
	if pl.hasModels {
		model = requestModel(req.body)
	}
	var buf [4]*upstreamNode
	order := pl.order(model, buf[:])
	if len(order) == 0 {
		req.free()
		writeAPIError(w, http.StatusNotFound, "invalid_request_error", "model_not_found", fmt.Sprintf("no upstream of this gateway serves the model %q", model))
		return nil, false
	}
	resp, err, transport := g.attempt(pl, order, req, r.URL.Path)
	if !transport {
		req.free()
	}
	if err != nil {
		g.upstreamRefused(w, r, req, err)
		return nil, false
	}
	g.upstreamAnswered()
	h := w.Header()
	dropConnectionTokens(resp.Header)
	for k, vs := range resp.Header {
		if !hopHeader(k) {
			h[k] = vs
		}
	}
	if resp.StatusCode >= 500 {
		w.upstream = upStatus5xx
	}
	if req.keepStream && resp.StatusCode == http.StatusOK && w.sse() {
		delete(h, "Content-Length") // each event gets an id line
	}
	w.WriteHeader(resp.StatusCode)
	return resp, true
}

// attempt sends req to each upstream of order in turn until one gives an
// answer that is not a failure, or the attempts, failover.timeout or the
// body's replay (a body that streams goes once) end the walk; it returns
// the last answer or error, and whether net/http's Transport sent it (the
// body's buffer may still be read). path names the request in the log.
func (g *gateway) attempt(pl *upstreamPool, order []*upstreamNode, req *upstreamReq, path string) (resp *http.Response, err error, transport bool) {
	ctx, headerTimeout := req.ctx, req.headerTimeout
	deadline := time.Now().Add(pl.fo.Timeout)
	retried := 0
	for i := 0; i < len(order); i++ {
		n := order[i]
		last := i == len(order)-1 || (req.body == nil && req.length != 0)
		req.ctx, req.headerTimeout = ctx, headerTimeout
		if !last {
			req.headerTimeout = min(headerTimeout, max(time.Until(deadline), time.Millisecond))
		}
		n.aim(req)
		n.requests.Add(1)
		transport = transport || n.client == nil
		run := n.run.Load()
		if n.supervised && !n.waitReady(ctx, req.headerTimeout) {
			// Its run is starting again: waited for within the header's
			// timeout, then the next upstream.
			resp, err = nil, &upstreamTimeout{after: req.headerTimeout, err: fmt.Errorf("supervised upstream %s is not ready", n.Name)}
		} else {
			resp, err = g.send(n, req)
		}
		why := ""
		switch {
		case err != nil && (ctx.Err() != nil || req.clientErr() != nil):
			last = true // the client's doing: no upstream to blame
		case err != nil && n.supervised && last && retried < 2 && n.waitNextRun(ctx, run, min(headerTimeout, time.Until(deadline))):
			// Its run died under the request (no answer began): the
			// next run, once ready, gets it again.
			retried++
			i--
			continue
		case err != nil:
			why = redactURL(err, req.url())
			if i > 0 || !last {
				g.log.warn(evUpstreamError, "upstream", n.Name, "error", why, "path", path)
			}
			pl.failed(n, why, 0)
		case retryable(resp.StatusCode):
			why = "HTTP " + strconv.Itoa(resp.StatusCode)
			var wait time.Duration
			if resp.StatusCode == http.StatusTooManyRequests {
				wait = retryAfter(resp.Header, time.Now())
			}
			pl.failed(n, why, wait)
		default:
			pl.answered(n)
		}
		if why == "" || last || time.Now().After(deadline) || ctx.Err() != nil {
			break
		}
		if resp != nil {
			resp.Body.Close() // nothing of it went to anyone
		}
		n.failovers.Add(1)
		g.log.info(evUpstreamFailover, "from", n.Name, "to", order[i+1].Name, "why", why)
	}
	return resp, err, transport
}

// transportRoundTrip sends req with net/http's Transport (where the own
// client cannot: a proxy from the environment), with the policy's
// timeouts: the header's as the request's deadline until the answer's
// head, the idle one on each wait of its body.
func (g *gateway) transportRoundTrip(req *upstreamReq) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.ctx)
	head := time.AfterFunc(req.headerTimeout, cancel)
	req.ctx = ctx
	hr, err := req.httpRequest()
	if err == nil {
		var resp *http.Response
		if resp, err = g.client.Do(hr); err == nil && head.Stop() {
			if resp.StatusCode == http.StatusSwitchingProtocols {
				resp.Body.Close()
				cancel()
				return nil, &errMalformedAnswer{"the upstream switched protocols (101) though nobody asked it to"}
			}
			resp.Body = newIdleBody(resp.Body, req.idleTimeout, cancel)
			return resp, nil
		}
		if err == nil {
			resp.Body.Close() // the head came, but too late
			err = context.DeadlineExceeded
		}
	}
	head.Stop()
	timedOut := ctx.Err() != nil && req.ctx.Err() == nil
	cancel()
	if timedOut || errors.Is(err, context.DeadlineExceeded) {
		return nil, &upstreamTimeout{after: req.headerTimeout, err: err}
	}
	return nil, err
}

// idleBody is a Transport's answer body whose every read has the idle
// timeout: silent for longer, its request is cancelled.
type idleBody struct {
	rc     io.ReadCloser
	idle   time.Duration
	timer  *time.Timer
	cancel context.CancelFunc
	fired  atomic.Bool
}

func newIdleBody(rc io.ReadCloser, idle time.Duration, cancel context.CancelFunc) *idleBody {
	b := &idleBody{rc: rc, idle: idle, cancel: cancel}
	b.timer = time.AfterFunc(idle, func() { b.fired.Store(true); cancel() })
	return b
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF && b.fired.Load() {
		err = &upstreamTimeout{after: b.idle, err: err}
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.cancel()
	return err
}

// upstreamRefused answers a request that got no answer from the upstream.
// What the client did wrong (its body) is its own 4xx and no mark against
// the upstream; what the upstream did is a 502, or a 504 when it did not
// answer in time.
//
//go:noinline
func (g *gateway) upstreamRefused(w *responseRecorder, r *http.Request, req *upstreamReq, err error) {
	if r.Context().Err() != nil {
		return
	}
	ce := req.clientErr()
	if ce != nil || errors.As(err, &ce) {
		g.clientBodyRefused(w, r, ce)
		return
	}
	why := redactURL(err, req.url())
	g.log.warn(evUpstreamError, "error", why, "path", r.URL.Path)
	g.upstreamFailed(errors.New(why))
	w.upstream = upstreamErrKind(err)
	status, code, msg := http.StatusBadGateway, "upstream_unreachable", "the gateway could not reach its upstream"
	var bad *errMalformedAnswer
	var late *upstreamTimeout
	switch {
	case errors.As(err, &bad):
		code, msg = "upstream_malformed", "the upstream's answer could not be read safely, so the gateway did not relay it"
	case errors.As(err, &late):
		w.upstream = upTimeout
		status, code = http.StatusGatewayTimeout, "upstream_timeout"
		msg = fmt.Sprintf("the upstream did not answer within %s (gateway.upstream_header_timeout)", late.after)
	}
	writeAPIError(w, status, "server_error", code, msg)
}

// clientBodyRefused answers a request whose body its client did not send
// right: a 4xx, logged as the client's, touching no upstream health. The
// connection closes: where the body stopped, the next request cannot be
// found.
func (g *gateway) clientBodyRefused(w *responseRecorder, r *http.Request, ce *clientBodyError) {
	g.log.info(evClientBodyError, "error", ce.err, "path", r.URL.Path)
	writeClientBodyError(w, ce)
}

// writeClientBodyError is the answer to a body its client did not send
// right, and its connection closes: where the body stopped, the next
// request cannot be found.
func writeClientBodyError(w http.ResponseWriter, ce *clientBodyError) {
	w.Header().Set("Connection", "close")
	code, msg := "bad_body", "the request body could not be read: "+ce.err.Error()
	switch ce.code {
	case http.StatusRequestTimeout:
		code, msg = "body_timeout", "the request body stopped arriving before its end (gateway.body_timeout)"
	case http.StatusRequestEntityTooLarge:
		code, msg = "request_too_large", ce.err.Error()
	}
	writeAPIError(w, ce.code, "invalid_request_error", code, msg)
}

// tooLarge answers a request whose Content-Length is over
// gateway.max_request_body, before any of it goes anywhere (nginx: 413).
//
//go:noinline
func tooLarge(w http.ResponseWriter, limit int64) {
	w.Header().Set("Connection", "close")
	writeAPIError(w, http.StatusRequestEntityTooLarge, "invalid_request_error", "request_too_large",
		fmt.Sprintf("the request body is larger than this gateway takes (gateway.max_request_body = %q)", formatSize(limit)))
}

// streamedBody is a request body that streams to the upstream, held to
// left bytes, keeping the first client error its reads met. The transport
// may read it on a goroutine of its own: the error is kept atomically.
type streamedBody struct {
	r    io.Reader
	left int64
	err  atomic.Pointer[clientBodyError]
}

func (l *streamedBody) Read(p []byte) (int, error) {
	if l.left <= 0 {
		// One byte more tells a body of exactly the limit from a longer one.
		var one [1]byte
		if n, err := l.r.Read(one[:]); n == 0 {
			return 0, l.keep(err)
		}
		return 0, l.keep(&clientBodyError{code: http.StatusRequestEntityTooLarge, err: errors.New("the request body is larger than gateway.max_request_body")})
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, l.keep(err)
}

func (l *streamedBody) keep(err error) error {
	var ce *clientBodyError
	if err != nil && err != io.EOF && errors.As(err, &ce) {
		l.err.CompareAndSwap(nil, ce)
	}
	return err
}

// clientErr is the client's body error that ended the request, if any.
func (req *upstreamReq) clientErr() *clientBodyError {
	if req.tap == nil {
		return nil
	}
	return req.tap.err.Load()
}

// relay copies the answer's body. What a stream carries leaves as it
// arrives: each read from the upstream is written and flushed at once (a
// read returns what the upstream had sent, several events when several
// came together). An answer of known length is not a stream: the server
// sends it once, at the end.
func relay(w *responseRecorder, r *http.Request, resp *http.Response, log *logger) {
	streaming := resp.ContentLength < 0 || w.sse()
	rc := http.NewResponseController(w)
	waiter, _ := resp.Body.(dataWaiter)
	// A stream of events is passed on an event at a time: the part of an
	// event a read brings waits for its end, so that a stream cut inside
	// an event ends with whole events and the error event, never with a
	// half event the error's lines would join.
	var held *[]byte
	if w.sse() {
		held = new([]byte)
	}
	for {
		if waiter != nil {
			waiter.waitData()
		}
		n, err, werr := relayOnce(w, resp.Body, held)
		if werr == nil && err == io.EOF && held != nil && len(*held) > 0 {
			_, werr = w.Write(*held) // the upstream ended there: pass on what it sent
		}
		if werr != nil {
			return // the client went away
		}
		// Data that came with the stream's end is the last: the server
		// sends it with the end of the stream when this returns, in one
		// write instead of two, and nothing waits.
		if n > 0 && streaming && err == nil && rc.Flush() != nil {
			return
		}
		if err != nil {
			if err != io.EOF && r.Context().Err() == nil {
				upstreamBroken(log, err, r.URL.Path)
				cutAnswer(w, err)
			}
			return
		}
	}
}

// answerControl is what the gateway's server (h1Response) lets a session
// do with an answer that went wrong: forget one not yet sent, or end one
// under way without its end.
type answerControl interface {
	discard() bool
	abort()
}

// cutAnswer ends an answer whose upstream broke or went silent before its
// end. Nothing sent yet: a 502 (504 for silence) replaces it. Once its
// head has gone out, the client must see the cut for what it is: an SSE
// stream gets an "event: error" naming it (upstream_cut or
// upstream_timeout), and then any answer ends without its end (no last
// chunk, or short of its Content-Length) and its connection closes, as
// Go's ReverseProxy does: never a clean end of a truncated answer.
//
//go:noinline
func cutAnswer(w *responseRecorder, err error) {
	w.upstream = upBroken
	status, code := http.StatusBadGateway, "upstream_cut"
	msg := "the upstream's answer broke off before its end; what came is incomplete"
	var late *upstreamTimeout
	if errors.As(err, &late) {
		w.upstream = upTimeout
		status, code = http.StatusGatewayTimeout, "upstream_timeout"
		msg = fmt.Sprintf("the upstream sent nothing for %s inside its answer (gateway.upstream_idle_timeout); what came is incomplete", late.after)
	}
	ac, ok := w.ResponseWriter.(answerControl)
	if !ok {
		panic(http.ErrAbortHandler) // the server ends the connection
	}
	// A stream keeps the events that came, whole, and then says why it
	// ends; any other answer cut before its head went out is a 502 (a
	// part of a JSON document is no answer), and one cut later is
	// aborted without its last chunk, so no client takes it for whole.
	if w.sse() {
		body, _ := json.Marshal(map[string]any{
			"reason": code,
			"error":  map[string]any{"message": msg, "type": "server_error", "code": code},
		})
		fmt.Fprintf(w, "event: error\ndata: %s\n\n", body)
		ac.abort()
		return
	}
	if w.reset(ac) {
		w.Header().Set("Connection", "close")
		writeAPIError(w, status, "server_error", code, msg)
		return
	}
	ac.abort()
}

// dataWaiter is a body that can wait for data without a buffer
// (upstreamBody): a stream waiting on its upstream then holds none.
type dataWaiter interface{ waitData() }

// relayOnce copies what one read of body returns, through a pooled buffer;
// with held, whole events only (writeEvents).
func relayOnce(w io.Writer, body io.Reader, held *[]byte) (n int, err, werr error) {
	bp := getBuf(copyBuf)
	n, err = body.Read(*bp)
	if n > 0 {
		if held != nil {
			werr = writeEvents(w, held, (*bp)[:n])
		} else {
			_, werr = w.Write((*bp)[:n])
		}
	}
	putBuf(bp)
	return n, err, werr
}

// maxHeldEvent bounds the part of one event a stream holds back: an event
// longer than this is passed on as it comes.
const maxHeldEvent = 1 << 20

// writeEvents writes what of held and then p ends whole events and keeps
// the rest in held. Most reads end on an event's end, and hold nothing.
func writeEvents(w io.Writer, held *[]byte, p []byte) error {
	from := *held
	if len(from) > 0 {
		from = append(from, p...)
	} else {
		from = p
	}
	k := eventsEnd(from)
	if len(from)-k > maxHeldEvent {
		k = len(from)
	}
	var err error
	if k > 0 {
		_, err = w.Write(from[:k])
	}
	if len(*held) > 0 {
		*held = from[:copy(from, from[k:])]
	} else if k < len(from) {
		*held = append((*held)[:0], from[k:]...)
	}
	return err
}

// eventsEnd is the length of b's whole events: up to the end of its last
// blank line (two line ends in a row; a line ends with CRLF, LF or CR), or
// 0 when it has none.
func eventsEnd(b []byte) int {
	for i := len(b) - 1; i > 0; i-- {
		if b[i] != '\n' && b[i] != '\r' {
			continue
		}
		// b[i] ends a line; a blank line ends at i when the line end
		// before it ends right at the one that ends at i.
		j := i
		if b[j] == '\n' && j > 0 && b[j-1] == '\r' {
			j--
		}
		if j == 0 {
			return 0
		}
		if c := b[j-1]; c == '\n' || c == '\r' {
			return i + 1
		}
	}
	return 0
}

//go:noinline
func upstreamBroken(log *logger, err error, path string) {
	log.warn(evUpstreamBroken, "error", err, "path", path)
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
