package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The proxy's contract under upstreams and clients that misbehave: every
// test here drives the real gateway over real sockets, with a raw upstream
// that answers byte for byte what the test scripts and records every byte
// it was sent.

// fakeRawUpstream is an upstream that answers each request with what the
// test's answer function writes on the raw connection, and records the
// requests it read (their raw bytes).
type fakeRawUpstream struct {
	ln     net.Listener
	answer func(c net.Conn, req *http.Request)
	mu     sync.Mutex
	raw    []string
	got    chan *http.Request
}

func newFakeRawUpstream(t *testing.T, answer func(c net.Conn, req *http.Request)) *fakeRawUpstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &fakeRawUpstream{ln: ln, answer: answer, got: make(chan *http.Request, 64)}
	var conns sync.WaitGroup
	open := map[net.Conn]bool{}
	var omu sync.Mutex
	t.Cleanup(func() {
		ln.Close()
		omu.Lock()
		for c := range open {
			c.Close()
		}
		omu.Unlock()
		conns.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			omu.Lock()
			open[c] = true
			omu.Unlock()
			conns.Add(1)
			go func() {
				defer conns.Done()
				defer c.Close()
				var rec bytes.Buffer
				br := bufio.NewReader(io.TeeReader(c, &rec))
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.ReadAll(req.Body)
					req.Body = io.NopCloser(bytes.NewReader(body))
					u.mu.Lock()
					u.raw = append(u.raw, rec.String())
					u.mu.Unlock()
					rec.Reset()
					u.got <- req
					u.answer(c, req)
				}
			}()
		}
	}()
	return u
}

func (u *fakeRawUpstream) url() string { return "http://" + u.ln.Addr().String() }

// requests is what the upstream was sent, raw.
func (u *fakeRawUpstream) requests() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.raw...)
}

// rawGateway starts a gateway in front of up with the extra [gateway] keys.
func rawGateway(t *testing.T, up *fakeRawUpstream, extra string) (*testEnv, *gatewayProc) {
	t.Helper()
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n%s", up.url(), extra))
	return e, e.startGateway()
}

// send writes a raw request to the gateway and reads its answer head.
func send(t *testing.T, addr, raw, method string) (net.Conn, *bufio.Reader, *http.Response) {
	t.Helper()
	c, br := rawConn(t, addr)
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the answer to %q: %v", raw, err)
	}
	return c, br, resp
}

// TestBodylessAnswersDoNotHang: an answer that has no body (a length of
// 0, HEAD, 204, 304, a redirect) reaches the client at once, though the
// upstream keeps its connection open; and the connection goes on to carry
// the next request. The relay used to wait for body data that never came.
func TestBodylessAnswersDoNotHang(t *testing.T) {
	answers := map[string]string{
		"/v1/empty":    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"/v1/head":     "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\n",
		"/v1/none":     "HTTP/1.1 204 No Content\r\n\r\n",
		"/v1/same":     "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\n\r\n",
		"/v1/redirect": "HTTP/1.1 302 Found\r\nLocation: /v1/empty\r\nContent-Length: 0\r\n\r\n",
	}
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, answers[req.URL.Path])
	})
	e, _ := rawGateway(t, up, "")
	c, br := rawConn(t, e.addr)
	for _, tc := range []struct {
		method, path string
		status       int
	}{{"GET", "/v1/empty", 200}, {"HEAD", "/v1/head", 200}, {"DELETE", "/v1/none", 204}, {"GET", "/v1/same", 304}, {"GET", "/v1/redirect", 302}} {
		fmt.Fprintf(c, "%s %s HTTP/1.1\r\nHost: x\r\n\r\n", tc.method, tc.path)
		resp, body := readAnswer(t, br, tc.method)
		if resp.StatusCode != tc.status || body != "" {
			t.Fatalf("%s %s: %d %q, want %d and no body", tc.method, tc.path, resp.StatusCode, body, tc.status)
		}
		if tc.method == "HEAD" && resp.ContentLength != 5 {
			t.Errorf("HEAD: Content-Length %d, want the upstream's 5", resp.ContentLength)
		}
	}
}

// cutAfter is an upstream answer that streams SSE and breaks off: two
// events, then tail, then the connection closes.
func cutAfter(tail string) func(c net.Conn, req *http.Request) {
	return func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		for _, ev := range []string{"data: {\"n\":1}\n\n", "data: {\"n\":2}\n\n"} {
			fmt.Fprintf(c, "%x\r\n%s\r\n", len(ev), ev)
		}
		io.WriteString(c, tail)
		c.Close()
	}
}

// TestCutStreamEndsVisibly: an SSE answer the upstream cuts mid-chunk, or
// with a chunk size that is not one, reaches the client as what it is:
// both events, an "event: error" naming upstream_cut, and then no clean
// end (no last chunk) and a closed connection. It used to end with a
// clean 0 chunk, kept alive: a truncated answer that looked whole.
func TestCutStreamEndsVisibly(t *testing.T) {
	for name, tail := range map[string]string{"mid-chunk": "40\r\nonly-half", "bad chunk size": "zz\r\n"} {
		t.Run(name, func(t *testing.T) {
			up := newFakeRawUpstream(t, cutAfter(tail))
			e, g := rawGateway(t, up, "")
			c, br, resp := send(t, e.addr, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", "POST")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d, want the upstream's 200", resp.StatusCode)
			}
			raw, err := io.ReadAll(resp.Body)
			if err == nil {
				t.Errorf("the body ended cleanly; want the stream cut (no last chunk)")
			}
			body := withoutEventIDs(string(raw))
			want := "data: {\"n\":1}\n\ndata: {\"n\":2}\n\nevent: error\ndata: "
			if !strings.HasPrefix(string(body), want) || !strings.Contains(string(body), `"code":"upstream_cut"`) {
				t.Fatalf("the body %q, want both events and then an upstream_cut error event", body)
			}
			wantClosed(t, c, br, "after a cut stream")
			g.waitLog("upstream stream broken", 5*time.Second)
		})
	}
}

// TestCutBeforeAnythingIs502: an answer that breaks before any of its
// body could be relayed (a chunk size that is not one) is a 502, not an
// answer of the bytes buffered so far.
func TestCutBeforeAnythingIs502(t *testing.T) {
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"a\":\r\nzz\r\n")
		c.Close()
	})
	e, _ := rawGateway(t, up, "")
	_, _, resp := send(t, e.addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 502 || !strings.Contains(string(body), `"code":"upstream_cut"`) {
		t.Fatalf("%d %q, want 502 upstream_cut", resp.StatusCode, body)
	}
}

// TestCutJSONAnswerIsAborted: a non-SSE answer cut after its head went out
// ends without its last chunk (chunked) or short of its Content-Length,
// and the connection closes: the client's HTTP library reports the cut.
func TestCutJSONAnswerIsAborted(t *testing.T) {
	big := strings.Repeat("x", 8<<10) // more than the server buffers before its head
	answers := map[string]string{
		"/v1/chunked": fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n40\r\nhalf", len(big), big),
		"/v1/length":  "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"half\":",
	}
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, answers[req.URL.Path])
		c.Close()
	})
	e, _ := rawGateway(t, up, "")
	for path := range answers {
		c, br, resp := send(t, e.addr, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
		if resp.StatusCode != 200 {
			t.Fatalf("%s: status %d, want 200 (the head had gone out)", path, resp.StatusCode)
		}
		if b, err := io.ReadAll(resp.Body); err == nil {
			t.Fatalf("%s: the body (%d bytes) ended cleanly; want it cut", path, len(b))
		}
		wantClosed(t, c, br, path)
	}
}

// TestClientBodyErrorIsNotAnOutage: a client's malformed chunked body is a
// 400 for that client: the upstream is not blamed (no upstream error
// logged or counted), and the next request is served as usual.
func TestClientBodyErrorIsNotAnOutage(t *testing.T) {
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	e, g := rawGateway(t, up, "")
	_, _, resp := send(t, e.addr, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "POST")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"code":"bad_body"`) {
		t.Fatalf("%d %q, want 400 bad_body", resp.StatusCode, body)
	}
	g.waitLog("client body error", 5*time.Second)
	if code, body := httpGet(t, "http://"+e.addr+"/v1/models"); code != 200 || body != "ok" {
		t.Fatalf("the next request: %d %q", code, body)
	}
	_, m := httpGet(t, "http://"+e.addr+"/metrics")
	for _, line := range strings.Split(m, "\n") {
		if strings.HasPrefix(line, "hermes_upstream_errors_total{") && !strings.HasSuffix(line, " 0") {
			t.Errorf("the client's error counted against the upstream: %s", line)
		}
	}
	if strings.Contains(g.stderr.String(), "upstream error") {
		t.Errorf("the client's error was logged as the upstream's:\n%s", g.stderr.String())
	}
}

// TestRequestBodyLimit: a body over gateway.max_request_body gets 413 and
// none of it goes upstream, whether its length is announced or it comes
// chunked; a body within the limit goes through.
func TestRequestBodyLimit(t *testing.T) {
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	e, _ := rawGateway(t, up, "max_request_body = \"1KiB\"\n")
	big := strings.Repeat("x", 2048)
	_, _, resp := send(t, e.addr, fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(big), big), "POST")
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 413 || !strings.Contains(string(body), "request_too_large") {
		t.Fatalf("Content-Length over the limit: %d %q, want 413", resp.StatusCode, body)
	}
	_, _, resp = send(t, e.addr, fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n", len(big), big), "POST")
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 413 {
		t.Fatalf("a chunked body over the limit: %d %q, want 413", resp.StatusCode, body)
	}
	// The announced length is refused before anything goes upstream; a
	// chunked body streams, so the upstream may see up to the limit of
	// it, but never a whole request: its connection closes before the
	// last chunk.
	for _, r := range up.requests() {
		if strings.Contains(r, big) || strings.HasSuffix(r, "\r\n0\r\n\r\n") {
			t.Fatalf("the upstream got the body over the limit: %q…", r[:min(len(r), 200)])
		}
	}
	small := strings.Repeat("y", 1024)
	_, _, resp = send(t, e.addr, fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(small), small), "POST")
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("a body at the limit: %d %q, want the upstream's 200", resp.StatusCode, body)
	}
}

// TestUpstreamTimeouts: an upstream that never begins its answer gets the
// client a 504 upstream_timeout after gateway.upstream_header_timeout; one
// that goes silent inside a stream for gateway.upstream_idle_timeout ends
// it visibly (an error event naming upstream_timeout, no clean end).
func TestUpstreamTimeouts(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	hold := make(chan struct{})
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		if req.URL.Path == "/v1/stream" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
			ev := "data: {\"n\":1}\n\n"
			fmt.Fprintf(c, "%x\r\n%s\r\n", len(ev), ev)
		}
		<-hold
	})
	// Registered after the upstream's, so it runs first: the held
	// answers return before the upstream's cleanup waits for them.
	t.Cleanup(func() { close(hold) })
	e, _ := rawGateway(t, up, "upstream_header_timeout = \"1s\"\nupstream_idle_timeout = \"1s\"\n")
	_, _, resp := send(t, e.addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 504 || !strings.Contains(string(body), `"code":"upstream_timeout"`) {
		t.Fatalf("an upstream that never answers: %d %q, want 504 upstream_timeout", resp.StatusCode, body)
	}
	c, br, resp := send(t, e.addr, "GET /v1/stream HTTP/1.1\r\nHost: x\r\n\r\n", "GET")
	raw, err := io.ReadAll(resp.Body)
	body := withoutEventIDs(string(raw))
	if err == nil || !strings.HasPrefix(body, "data: {\"n\":1}\n\nevent: error\n") || !strings.Contains(string(body), `"code":"upstream_timeout"`) {
		t.Fatalf("a stream gone silent: %d %q (%v), want its event, an upstream_timeout error event and a cut", resp.StatusCode, body, err)
	}
	wantClosed(t, c, br, "after a silent stream")
}

// TestUnrequestedUpgradeIs502: a 101 the gateway never asked for is not
// relayed (what follows it is not HTTP), and the client's connection
// carries its next request as usual.
func TestUnrequestedUpgradeIs502(t *testing.T) {
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		if req.URL.Path == "/v1/upgrade" {
			io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello")
			c.Close()
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	e, _ := rawGateway(t, up, "")
	c, br := rawConn(t, e.addr)
	io.WriteString(c, "GET /v1/upgrade HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
	resp, body := readAnswer(t, br, "GET")
	if resp.StatusCode != 502 || !strings.Contains(body, "upstream_malformed") {
		t.Fatalf("an unrequested upgrade: %d %q, want 502", resp.StatusCode, body)
	}
	if up := up.requests(); len(up) != 1 || strings.Contains(strings.ToLower(up[0]), "\r\nupgrade:") {
		t.Fatalf("the upstream was asked to upgrade: %q", up)
	}
	if !resp.Close {
		io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, body := readAnswer(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("the next request: %d %q", resp.StatusCode, body)
		}
	}
}

// TestConnectionNamedHeadersStay: the fields a Connection header names
// belong to that hop: the client's do not reach the upstream, the
// upstream's do not reach the client.
func TestConnectionNamedHeadersStay(t *testing.T) {
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: X-Up-Hop\r\nX-Up-Hop: secret\r\nX-Up-Kept: yes\r\nContent-Length: 2\r\n\r\nok")
	})
	e, _ := rawGateway(t, up, "")
	_, _, resp := send(t, e.addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, X-Client-Hop\r\nX-Client-Hop: private\r\nX-Client-Kept: yes\r\n\r\n", "GET")
	io.ReadAll(resp.Body)
	if resp.Header.Get("X-Up-Hop") != "" || resp.Header.Get("X-Up-Kept") != "yes" {
		t.Errorf("the client got the upstream's header %v", resp.Header)
	}
	got := up.requests()
	if len(got) != 1 || strings.Contains(got[0], "X-Client-Hop") || !strings.Contains(got[0], "X-Client-Kept: yes") {
		t.Errorf("the upstream got %q", got)
	}
}

// TestEventsEnd: the whole events of a read end at its last blank line,
// whatever line ends the stream uses.
func TestEventsEnd(t *testing.T) {
	for in, want := range map[string]int{
		"":                       0,
		"data: a":                0,
		"data: a\n":              0,
		"data: a\n\n":            9,
		"data: a\n\ndata: b":     9,
		"data: a\r\n\r\ndata: b": 11,
		"data: a\r\rdata: b":     9,
		"data: a\r\n":            0,
		"data: a\n\r\n":          10,
		"data: a\r\n\ndata: b\n": 10,
		"\n\n":                   2,
	} {
		if got := eventsEnd([]byte(in)); got != want {
			t.Errorf("eventsEnd(%q) = %d, want %d", in, got, want)
		}
	}
}
