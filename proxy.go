package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
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
func (g *gateway) proxy(w *responseRecorder, r *http.Request, p *Policy) {
	var req upstreamReq // on the stack: nothing keeps it after the session
	if !g.upstreamRequest(w, r, p, &req) {
		return
	}
	resp, ok := g.roundTrip(w, r, &req, p)
	if !ok {
		return
	}
	defer resp.Body.Close()
	relay(w, r, resp, g.log)
}

// upstreamReq is a request on its way to the upstream: what the client
// sent, and what the gateway adds or takes away.
type upstreamReq struct {
	ctx    context.Context
	method string
	base   string      // the policy's upstream, without a trailing slash
	path   string      // the client's escaped path (less /v1 when base ends in it)
	query  string      // the client's raw query, or ""
	header http.Header // the client's; hop-by-hop headers are left out when sent
	auth   string      // Authorization from the policy's key, or ""
	body   []byte      // a small body, read whole; nil when stream carries it
	pooled *[]byte     // body's pooled buffer, or nil
	stream io.Reader
	length int64 // the body's length, -1 unknown
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
	base := strings.TrimSuffix(p.Gateway.Upstream, "/")
	path := r.URL.EscapedPath()
	if strings.HasSuffix(base, "/v1") {
		path = strings.TrimPrefix(path, "/v1")
	}
	*req = upstreamReq{ctx: r.Context(), method: r.Method, base: base, path: path, query: r.URL.RawQuery,
		header: r.Header, stream: r.Body, length: r.ContentLength}
	if r.ContentLength > 0 && r.ContentLength <= smallBody {
		b, pooled, err := readBody(w, r, smallBody)
		if err != nil {
			if r.Context().Err() == nil {
				writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "bad_body", "the request body does not match its Content-Length: "+err.Error())
			}
			return false
		}
		req.body, req.stream, req.pooled = b, nil, pooled
	} else if r.ContentLength != 0 {
		// The transport may still be reading the request body (its final
		// EOF check) when the upstream's answer starts; without full
		// duplex the HTTP/1 server closes that body at our first write and
		// the transport then drops the upstream connection mid-stream.
		http.NewResponseController(w).EnableFullDuplex()
	}
	if p.Gateway.UpstreamKeyEnv != "" {
		if key := os.Getenv(p.Gateway.UpstreamKeyEnv); key != "" {
			req.auth = "Bearer " + key
		}
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

// roundTrip sends req and returns the upstream's answer with its headers
// copied to w, or answers the error itself and reports false. The request
// body's buffer goes back to the pool when nothing can read the body any
// more: at once with the session's own client, which has written the whole
// request before it reads the answer. net/http's Transport may still be
// writing the body while the answer streams, even after the session ends,
// so with it the buffer is left to the collector.
//
//go:noinline
func (g *gateway) roundTrip(w *responseRecorder, r *http.Request, req *upstreamReq, p *Policy) (*http.Response, bool) {
	var resp *http.Response
	var err error
	if uc := g.upstreamFor(strings.TrimSuffix(p.Gateway.Upstream, "/")); uc != nil {
		resp, err = uc.do(req)
		req.free()
	} else {
		var hr *http.Request
		if hr, err = req.httpRequest(); err == nil {
			resp, err = g.client.Do(hr)
		}
	}
	if err != nil {
		if r.Context().Err() != nil {
			return nil, false
		}
		why := redactURL(err, req.url())
		g.log.warn(evUpstreamError, "error", why, "path", r.URL.Path)
		g.upstreamFailed(errors.New(why))
		w.upstream = upstreamErrKind(err)
		code, msg := "upstream_unreachable", "the gateway could not reach its upstream"
		var bad *errMalformedAnswer
		if errors.As(err, &bad) {
			code, msg = "upstream_malformed", "the upstream's answer could not be read safely, so the gateway did not relay it"
		}
		writeAPIError(w, http.StatusBadGateway, "server_error", code, msg)
		return nil, false
	}
	g.upstreamAnswered()
	h := w.Header()
	for k, vs := range resp.Header {
		if !hopHeader(k) {
			h[k] = vs
		}
	}
	if resp.StatusCode >= 500 {
		w.upstream = upStatus5xx
	}
	w.WriteHeader(resp.StatusCode)
	return resp, true
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
	for {
		if waiter != nil {
			waiter.waitData()
		}
		n, err, werr := relayOnce(w, resp.Body)
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
				w.upstream = upBroken
			}
			return
		}
	}
}

// dataWaiter is a body that can wait for data without a buffer
// (upstreamBody): a stream waiting on its upstream then holds none.
type dataWaiter interface{ waitData() }

// relayOnce copies what one read of body returns, through a pooled buffer.
func relayOnce(w io.Writer, body io.Reader) (n int, err, werr error) {
	bp := getBuf(copyBuf)
	n, err = body.Read(*bp)
	if n > 0 {
		_, werr = w.Write((*bp)[:n])
	}
	putBuf(bp)
	return n, err, werr
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
