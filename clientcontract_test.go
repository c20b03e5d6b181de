package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// The client side of the proxy's contract, on real sockets: what a bad or
// greedy client gets (as nginx would answer it, or better), and that none
// of it reaches the upstream.

// okUpstream answers every request 200 "ok".
func okUpstream(t *testing.T) *fakeRawUpstream {
	return newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
}

// refusedRaw sends raw on a new connection and wants the status, and a
// closed connection after it.
func refusedRaw(t *testing.T, addr, raw string, status int) string {
	t.Helper()
	c, br, resp := send(t, addr, raw, "GET")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("%.60q: %d %q, want %d", raw, resp.StatusCode, body, status)
	}
	wantClosed(t, c, br, fmt.Sprintf("after a %d", status))
	return string(body)
}

// TestDotSegmentsReachNothing: a path with a "." or ".." segment, raw or
// escaped, is a 400 and reaches nothing: "/v1/../admin" would otherwise
// reach a path of the upstream's host outside /v1/ with the policy's key.
func TestDotSegmentsReachNothing(t *testing.T) {
	up := okUpstream(t)
	e, _ := rawGateway(t, up, "upstream_key_env = \"HERMES_TEST_KEY\"\n")
	for _, path := range []string{"/v1/../admin", "/v1/%2e%2e/admin", "/v1/%2E%2e/admin", "/v1/./models", "/v1/.%2e/.%2E/x", "/v1/a/..", "/v1/..;/admin", "/v1/a%2f..%2fadmin"} {
		refusedRaw(t, e.addr, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n", 400)
	}
	if got := up.requests(); len(got) != 0 {
		t.Fatalf("the upstream was reached: %q", got)
	}
	// A dot inside a name is no segment.
	if code, body := httpGet(t, "http://"+e.addr+"/v1/models/gpt-3.5-turbo"); code != 200 || body != "ok" {
		t.Fatalf("a dotted model name: %d %q", code, body)
	}
}

// TestMethodsAreChecked: methods are case-sensitive tokens; a lower-case
// or malformed one is a 400 and an unknown one a 501 (nginx: 400 for
// both), and none reaches the upstream.
func TestMethodsAreChecked(t *testing.T) {
	up := okUpstream(t)
	e, _ := rawGateway(t, up, "")
	refusedRaw(t, e.addr, "get /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 400)
	refusedRaw(t, e.addr, "M-SEARCH /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 400)
	refusedRaw(t, e.addr, "BREW /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 501)
	if got := up.requests(); len(got) != 0 {
		t.Fatalf("the upstream was reached: %q", got)
	}
}

// TestHeadLimits: a request line over 8 KiB is a 414, a header line over
// 8 KiB or a head over 32 KiB a 431 (nginx's large_client_header_buffers
// 4 8k), read no further than the limit; one within them is served.
func TestHeadLimits(t *testing.T) {
	up := okUpstream(t)
	e, _ := rawGateway(t, up, "")
	long := strings.Repeat("a", 9<<10)
	refusedRaw(t, e.addr, "GET /v1/"+long+" HTTP/1.1\r\nHost: x\r\n\r\n", 414)
	refusedRaw(t, e.addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Long: "+long+"\r\n\r\n", 431)
	var many strings.Builder
	for i := range 6 {
		fmt.Fprintf(&many, "X-Field-%d: %s\r\n", i, strings.Repeat("b", 6<<10))
	}
	refusedRaw(t, e.addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\n"+many.String()+"\r\n", 431)
	// An unfinished head is refused once it passes the limit, not kept
	// whole: the client need not finish it to get its answer.
	c, br := rawConn(t, e.addr)
	io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: x\r\n")
	for range 40 {
		if _, err := fmt.Fprintf(c, "X-More: %s\r\n", strings.Repeat("c", 1000)); err != nil {
			break // refused and closed: what is read next says so
		}
	}
	if resp, _ := readAnswer(t, br, "GET"); resp.StatusCode != 431 {
		t.Fatalf("an unfinished head over 32 KiB: %d, want 431", resp.StatusCode)
	}
	within := strings.Repeat("d", 7<<10)
	c, br = rawConn(t, e.addr)
	fmt.Fprintf(c, "GET /v1/%s HTTP/1.1\r\nHost: x\r\nX-Within: %s\r\n\r\n", within[:6<<10], within)
	if resp, body := readAnswer(t, br, "GET"); resp.StatusCode != 200 || body != "ok" {
		t.Fatalf("a head within the limits: %d %q", resp.StatusCode, body)
	}
}

// TestBodyTimeout: a client that announces a body and stops sending it
// gets a 408 after gateway.body_timeout, and the upstream sees nothing of
// the request, whether the body is small (read whole first) or streams.
func TestBodyTimeout(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	up := okUpstream(t)
	e, g := rawGateway(t, up, "body_timeout = \"1s\"\n")
	for _, length := range []int{100, 1 << 20} {
		c, br := rawConn(t, e.addr)
		fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{\"model\":", length)
		resp, body := readAnswer(t, br, "POST")
		if resp.StatusCode != 408 || !strings.Contains(body, `"code":"body_timeout"`) {
			t.Fatalf("a body of %d that stalls: %d %q, want 408 body_timeout", length, resp.StatusCode, body)
		}
		wantClosed(t, c, br, "after a body timeout")
	}
	g.waitLog("client body error", 5*time.Second)
	// The small body is read whole before anything leaves; the large one
	// streams, so its head went on, but never the whole request: its
	// upstream connection closes short of the announced length.
	for _, r := range up.requests() {
		if strings.Contains(r, "Content-Length: 100\r\n") || len(r) >= 1<<20 {
			t.Fatalf("the upstream got a whole request from a stalled body: %.200q", r)
		}
	}
	if strings.Contains(g.stderr.String(), "upstream error") {
		t.Errorf("the client's stall was logged as the upstream's:\n%s", g.stderr.String())
	}
}

// TestWriteTimeout: a client that reads nothing of a stream is cut off
// after gateway.write_timeout, and its upstream request ends with it: it
// no longer holds the session and the upstream connection for good.
func TestWriteTimeout(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	upstreamDone := make(chan error, 1)
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		ev := "data: " + strings.Repeat("x", 16<<10) + "\n\n"
		chunk := fmt.Sprintf("%x\r\n%s\r\n", len(ev), ev)
		for {
			c.SetWriteDeadline(time.Now().Add(time.Minute))
			if _, err := io.WriteString(c, chunk); err != nil {
				upstreamDone <- err
				return
			}
		}
	})
	e, g := rawGateway(t, up, "write_timeout = \"1s\"\n")
	c, _ := rawConn(t, e.addr)
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetReadBuffer(4 << 10)
	}
	io.WriteString(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	select {
	case err := <-upstreamDone:
		t.Logf("the upstream's write ended: %v", err)
	case <-time.After(time.Minute):
		t.Fatalf("a client that reads nothing still holds its stream after a minute (write_timeout 1s)\n%s", g.stderr.String())
	}
	g.waitLog("session client_gone", 10*time.Second)
}

// TestMaxConnections: past gateway.max_connections a new connection gets a
// 503 too_many_connections and is closed, without being served; once one
// closes, a new one is served again; /metrics counts the refused.
func TestMaxConnections(t *testing.T) {
	up := okUpstream(t)
	e, _ := rawGateway(t, up, "max_connections = 2\n")
	held := make([]net.Conn, 2)
	for i := range held {
		c, br := rawConn(t, e.addr)
		io.WriteString(c, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
		if resp, _ := readAnswer(t, br, "GET"); resp.StatusCode != 200 {
			t.Fatalf("connection %d: %d", i, resp.StatusCode)
		}
		held[i] = c
	}
	body := refusedRaw(t, e.addr, "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 503)
	if !strings.Contains(body, `"code":"too_many_connections"`) {
		t.Fatalf("the refusal: %q", body)
	}
	held[0].Close()
	held[1].Close()
	// The gateway notices the closes as it reads them: wait for a
	// connection to be served again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, br := rawConn(t, e.addr)
		io.WriteString(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, m := readAnswer(t, br, "GET")
		c.Close()
		if resp.StatusCode == 200 {
			if !strings.Contains(m, "\nhermes_connections_refused_total ") || strings.Contains(m, "\nhermes_connections_refused_total 0\n") {
				t.Fatalf("/metrics does not count the refused connection")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("still refused after the held connections closed: %d", resp.StatusCode)
		}
	}
}
