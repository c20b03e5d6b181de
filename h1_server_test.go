package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// These tests talk to a real gateway over a socket, byte by byte, the way
// clients that are not Go's do.

// rawConn dials the gateway with a deadline on everything it does.
func rawConn(t *testing.T, addr string) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	return c, bufio.NewReader(c)
}

// readAnswer reads one answer for a request with method.
func readAnswer(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading the answer: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the answer's body: %v", err)
	}
	return resp, string(b)
}

// wantClosed fails unless the server closes c (EOF or reset) with nothing
// more to read.
func wantClosed(t *testing.T, c net.Conn, br *bufio.Reader, why string) {
	t.Helper()
	b, err := br.ReadByte()
	if err == nil {
		rest, _ := br.Peek(br.Buffered())
		t.Fatalf("%s: the connection is still open and sent %q", why, append([]byte{b}, rest...))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("%s: the connection was not closed", why)
	}
}

// TestServerRefusesMalformedRequests: a request the gateway cannot read
// safely gets a 4xx or 5xx that says why, then the connection closes.
func TestServerRefusesMalformedRequests(t *testing.T) {
	e := newTestEnv(t, "")
	e.startGateway()
	for _, tc := range []struct {
		name, raw string
		status    string
		says      string // what the answer says, when not its status
	}{
		{"folded header", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", "400", ""},
		{"length and chunked", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400", ""},
		{"two lengths", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde", "400", ""},
		{"chunked ends in a bare LF", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkOf(chatBody) + "0\r\n\n", "400", "a bare LF ends the body"},
		{"empty length", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n" + chatBody, "400", ""},
		{"gzip transfer", "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "501", ""},
		{"two hosts", "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "400", ""},
		{"no host", "GET /healthz HTTP/1.1\r\n\r\n", "400", ""},
		{"http/2 line", "GET /healthz HTTP/2.0\r\nHost: x\r\n\r\n", "505", ""},
		{"connect", "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", "405", ""},
		{"head too large", "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 1100<<10) + "\r\n\r\n", "431", ""},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "400", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, e.addr)
			go c.Write([]byte(tc.raw)) // a large head may not fit the socket buffers
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("no answer: %v", err)
			}
			if !strings.HasPrefix(line, "HTTP/1.1 "+tc.status+" ") {
				t.Fatalf("answer %q, want status %s", line, tc.status)
			}
			rest, _ := io.ReadAll(br)
			if tc.says == "" {
				tc.says = tc.status + " "
			}
			if !strings.Contains(string(rest), "Connection: close") || !strings.Contains(string(rest), tc.says) {
				t.Errorf("the answer should say why and close: %q", rest)
			}
		})
	}
}

// chatBody is a chat request's body that the built-in echo answers.
const chatBody = `{"model":"m","messages":[{"role":"user","content":"one two three"}]}`

// chunkOf frames s as one chunk of a chunked body.
func chunkOf(s string) string { return fmt.Sprintf("%x\r\n%s\r\n", len(s), s) }

// TestServerKeepAlive: one connection carries pipelined requests, a
// chunked body with a trailer, a HEAD and an HTTP/1.0 request, each
// answered in order and whole; "Connection: close" then ends it.
func TestServerKeepAlive(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"1ms\"\n")
	e.startGateway()
	c, br := rawConn(t, e.addr)

	// Two requests in one write: both answered, in order.
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /status HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readAnswer(t, br, "GET"); resp.StatusCode != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("first pipelined answer: %d %q", resp.StatusCode, body)
	}
	if resp, body := readAnswer(t, br, "GET"); resp.StatusCode != 200 || !strings.Contains(body, `"state"`) {
		t.Fatalf("second pipelined answer: %d %q", resp.StatusCode, body)
	}

	// A chunked body with an extension and a trailer, then CRLF after the
	// POST (RFC 9112 2.2), then the next request.
	msg := `{"model":"m","messages":[{"role":"user","content":"one two three"}]}`
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n%x;ext=1\r\n%s\r\n%x\r\n%s\r\n0\r\nX-Trailer: t\r\n\r\n\r\n",
		10, msg[:10], len(msg)-10, msg[10:])
	resp, body := readAnswer(t, br, "POST")
	if resp.StatusCode != 200 || !strings.Contains(body, "one two three") {
		t.Fatalf("chunked request: %d %q", resp.StatusCode, body)
	}
	if resp.ContentLength < 0 {
		t.Errorf("a short answer should carry its length, not be chunked")
	}

	// HEAD: the head only.
	fmt.Fprint(c, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	if resp, body := readAnswer(t, br, "HEAD"); resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}

	// A streamed answer is chunked and ends with the stream.
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s",
		len(`{"stream":true,`)+len(msg)-1, `{"stream":true,`+msg[1:])
	resp, body = readAnswer(t, br, "POST")
	if resp.StatusCode != 200 || len(resp.TransferEncoding) == 0 || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Fatalf("stream: %d %v %q", resp.StatusCode, resp.TransferEncoding, body)
	}

	// Connection: close is the last answer on the connection.
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
	if resp, _ := readAnswer(t, br, "GET"); !resp.Close {
		t.Fatalf("the answer to Connection: close should say it closes")
	}
	wantClosed(t, c, br, "after Connection: close")

	// HTTP/1.0: closed after the answer unless it asks for keep-alive.
	c, br = rawConn(t, e.addr)
	fmt.Fprint(c, "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
	if resp, _ := readAnswer(t, br, "GET"); resp.Close || resp.Header.Get("Connection") != "keep-alive" {
		t.Fatalf("HTTP/1.0 keep-alive: close=%v Connection=%q", resp.Close, resp.Header.Get("Connection"))
	}
	fmt.Fprint(c, "GET /healthz HTTP/1.0\r\n\r\n")
	readAnswer(t, br, "GET")
	wantClosed(t, c, br, "after an HTTP/1.0 request")
}

// TestServerExpectContinue: a client that waits for 100 Continue gets it
// before it sends its body, and then its answer.
func TestServerExpectContinue(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"1ms\"\n")
	e.startGateway()
	c, br := rawConn(t, e.addr)
	msg := `{"model":"m","messages":[{"role":"user","content":"hello there"}]}`
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(msg))
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("before the body: %q %v, want 100 Continue", line, err)
	}
	if blank, _ := br.ReadString('\n'); blank != "\r\n" {
		t.Fatalf("100 Continue's head does not end: %q", blank)
	}
	fmt.Fprint(c, msg)
	if resp, body := readAnswer(t, br, "POST"); resp.StatusCode != 200 || !strings.Contains(body, "hello there") {
		t.Fatalf("after the body: %d %q", resp.StatusCode, body)
	}
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nExpect: something-else\r\n\r\n")
	if resp, _ := readAnswer(t, br, "GET"); resp.StatusCode != http.StatusExpectationFailed {
		t.Fatalf("an expectation the server cannot meet: %d, want 417", resp.StatusCode)
	}
}

// TestServerCutsOffSlowClients: with gateway.header_timeout and
// gateway.idle_timeout at 1s, a connection that sends nothing, one that
// sends half a head and one left idle after an answer are all closed;
// one whose answer streams for longer is not.
func TestServerCutsOffSlowClients(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "header_timeout = \"1s\"\nidle_timeout = \"1s\"\n[echo]\nword_delay = \"300ms\"\n")
	g := e.startGateway()
	silent, silentR := rawConn(t, e.addr)
	half, halfR := rawConn(t, e.addr)
	fmt.Fprint(half, "GET /healthz HTTP/1.1\r\nHost: x\r\n")
	idle, idleR := rawConn(t, e.addr)
	fmt.Fprint(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswer(t, idleR, "GET")
	s := startStream(t, g.url, 8) // 8 words 300ms apart: 2.1s or more

	wantClosed(t, silent, silentR, "a connection that sent nothing")
	wantClosed(t, half, halfR, "a connection that sent half a head")
	wantClosed(t, idle, idleR, "an idle keep-alive connection")
	<-s.done
	if s.err != nil || !strings.Contains(s.text(), "w7") || !strings.Contains(s.text(), "[DONE]") {
		t.Fatalf("a stream longer than both timeouts was cut: %v\n%s", s.err, s.text())
	}
}

// TestClientGoneBeforeUpstreamAnswers: a client that leaves while the
// upstream has not said a word yet still cancels the upstream request
// (the server watches the connection once a request has run a moment).
func TestClientGoneBeforeUpstreamAnswers(t *testing.T) {
	asked, cancelled := make(chan struct{}, 1), make(chan struct{}, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		asked <- struct{}{}
		select {
		case <-r.Context().Done():
			cancelled <- struct{}{}
		case <-time.After(30 * time.Second):
		}
	}))
	defer up.Close()
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n", up.URL))
	g := e.startGateway()
	c, _ := rawConn(t, e.addr)
	fmt.Fprint(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	select {
	case <-asked:
	case <-time.After(10 * time.Second):
		t.Fatal("the request never reached the upstream")
	}
	c.Close()
	select {
	case <-cancelled:
	case <-time.After(10 * time.Second):
		t.Fatal("the upstream request was not cancelled when the client went away")
	}
	g.waitLog("session client_gone", 5*time.Second)
}

// TestIdleTimeoutAppliesOnReload: gateway.idle_timeout lowered by a reload
// closes a connection left idle, with no restart.
func TestIdleTimeoutAppliesOnReload(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "")
	g := e.startGateway()
	c, br := rawConn(t, e.addr)
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	readAnswer(t, br, "GET")
	e.writePolicy("idle_timeout = \"1s\"\n")
	g.signal(syscall.SIGHUP)
	g.waitLog("reload ok", 5*time.Second)
	wantClosed(t, c, br, "an idle connection after idle_timeout was lowered to 1s")
}

// TestMalformedUpstreamAnswerIs502: an upstream answer whose length could
// be read two ways, or that comes in a transfer coding hermes does not
// read, is not relayed; the client gets a 502 and the log says what was
// wrong.
func TestMalformedUpstreamAnswerIs502(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	answers := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 30\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nok",
	}
	var served atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				io.Copy(io.Discard, req.Body)
				fmt.Fprint(c, answers[int(served.Add(1)-1)%len(answers)])
			}()
		}
	}()
	e := newTestEnv(t, fmt.Sprintf("upstream = \"http://%s\"\n", ln.Addr()))
	g := e.startGateway()
	for _, logged := range []string{"two different Content-Lengths", "a transfer coding hermes does not read"} {
		resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":false}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway || !strings.Contains(string(body), `"code":"upstream_malformed"`) {
			t.Fatalf("answer %d %q, want 502 upstream_malformed (%s)", resp.StatusCode, body, logged)
		}
		g.waitLog(logged, 5*time.Second)
	}
}

// TestServerPipelinedWhileAnswering: a request that arrives while the one
// before it is still being answered (pipelining, in separate writes) is
// answered too, at once. The server must not lose sight of bytes that
// came before it waits for them: a wait armed after they arrived would
// never wake.
func TestServerPipelinedWhileAnswering(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"1ms\"\n")
	e.startGateway()
	c, br := rawConn(t, e.addr)
	words := strings.TrimSpace(strings.Repeat("word ", 20))
	msg := `{"stream":true,"messages":[{"role":"user","content":"` + words + `"}]}`
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(msg), msg)
	// The answer's first line: the server has read the request and runs
	// its handler, which streams for 20 ms more.
	first, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	rest := bufio.NewReader(io.MultiReader(strings.NewReader(first), br))
	if resp, body := readAnswer(t, rest, "POST"); resp.StatusCode != 200 || !strings.HasSuffix(body, "data: [DONE]\n\n") {
		t.Fatalf("the stream: %d %q", resp.StatusCode, body)
	}
	if resp, body := readAnswer(t, rest, "GET"); resp.StatusCode != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("the request sent while the stream ran: %d %q", resp.StatusCode, body)
	}
}

// serveH1ForTest serves h on a loopback socket with h1Server itself, for
// what no handler of the gateway's does (they are h1Server's test doubles).
func serveH1ForTest(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newH1Server(h, t.Context(), &connTracker{}, func() h1Limits {
		return h1Limits{head: 10 * time.Second, idle: 10 * time.Second, body: 10 * time.Second, write: 10 * time.Second, conns: 64}
	}, nil)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestServerClosesAfterShortBody: an answer shorter than the
// Content-Length its handler set leaves the client unable to find the
// next answer's start, so the connection closes after it, and a request
// pipelined behind it is not answered on it.
func TestServerClosesAfterShortBody(t *testing.T) {
	addr := serveH1ForTest(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		io.WriteString(w, "abc")
	})
	c, br := rawConn(t, addr)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	if string(b) != "abc" || err != io.ErrUnexpectedEOF {
		t.Fatalf("body %q, %v; want \"abc\" cut short (io.ErrUnexpectedEOF)", b, err)
	}
	wantClosed(t, c, br, "after an answer short of its Content-Length")
}

// TestServerClosesAfterUnreadChunkedBody: a handler that answers without
// reading a chunked body leaves an unknown length unread, so the answer
// says Connection: close and the connection closes, even for a small body.
func TestServerClosesAfterUnreadChunkedBody(t *testing.T) {
	e := newTestEnv(t, "")
	e.startGateway()
	c, br := rawConn(t, e.addr)
	io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
		chunkOf(strings.Repeat("a", 1000))+"0\r\n\r\n")
	resp, body := readAnswer(t, br, "GET")
	if resp.StatusCode != 200 || !strings.Contains(body, "ok") {
		t.Fatalf("answer %d %q", resp.StatusCode, body)
	}
	if !resp.Close {
		t.Fatalf("the answer should say Connection: close after a chunked body nobody read")
	}
	wantClosed(t, c, br, "after a chunked body nobody read")
}

// TestServerHalfClosedClientGetsNoMore: a client that shuts its sending
// side while a request runs is gone to the server (the watch reads its
// end), as to nginx and net/http: the request is cancelled, and the client
// gets nothing more: no answer its handler never chose (an empty 200), and
// none to what it pipelined, whose head is already in the connection's
// buffer (so the next head's read cannot be what stops it).
func TestServerHalfClosedClientGetsNoMore(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"100ms\"\n")
	e.startGateway()
	for _, tc := range []struct {
		name, stream string
		answers      int // a stream's head goes out before its client leaves
	}{{"answer", "false", 0}, {"stream", "true", 1}} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := rawConn(t, e.addr)
			body := `{"stream":` + tc.stream + `,"model":"m","messages":[{"role":"user","content":"` + strings.Repeat("w ", 40) + `"}]}`
			fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%sGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", len(body), body)
			c.(*net.TCPConn).CloseWrite()
			all, err := io.ReadAll(br)
			if err != nil {
				t.Fatalf("reading to the connection's end: %v", err)
			}
			if n := strings.Count(string(all), "HTTP/1.1 "); n != tc.answers {
				t.Fatalf("%d answers to a client that left during the first request; want %d:\n%s", n, tc.answers, all)
			}
			if strings.Contains(string(all), "data: [DONE]") || strings.Contains(string(all), `"finish_reason":"stop"`) {
				t.Fatalf("the answer ran to its end for a client that had gone:\n%s", all)
			}
		})
	}
}
