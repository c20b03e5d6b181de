package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const quickDrain = `
[echo]
word_delay = "20ms"
[drain]
timeout = "10s"
grace = "1s"
`

func TestTermDrainsStreamThenExitsZero(t *testing.T) {
	e := newTestEnv(t, quickDrain)
	g := e.startGateway()
	s := startStream(t, g.url, 40) // ~0.8 s of words
	s.waitLines(t, 4, 5*time.Second)

	g.signal(syscall.SIGTERM)
	g.waitLog("drain start", 5*time.Second)

	// Draining: not ready (once the loop has published the drain, a moment
	// after the log line), and new sessions are turned away with Retry-After.
	waitReadyz(t, g.url, http.StatusServiceUnavailable, 5*time.Second)
	resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"messages":[{"role":"user","content":"x"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Errorf("new session during drain: status %d Retry-After %q, want 503 with Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}

	out := s.waitDone(t, 10*time.Second)
	if !strings.Contains(out, "data: [DONE]") || !strings.Contains(out, "w39") {
		t.Errorf("stream was cut instead of finishing:\n%s", out)
	}
	if strings.Contains(out, "event: error") {
		t.Errorf("a stream that finished within the drain got a final error event:\n%s", out)
	}
	if code := g.wait(10 * time.Second); code != exitOK {
		t.Errorf("exit code = %d, want %d", code, exitOK)
	}
	log := g.stderr.String()
	for _, want := range []string{"signal signal=TERM action=drain", "drain start", "session finished", "drain end", "exit code=0"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if _, err := os.Stat(pidFilePath(e.stateDir)); !os.IsNotExist(err) {
		t.Errorf("pid file left behind after a clean exit: %v", err)
	}
}

func TestUSR1DrainsThenExitsRestart(t *testing.T) {
	e := newTestEnv(t, quickDrain)
	g := e.startGateway()
	s := startStream(t, g.url, 20)
	s.waitLines(t, 2, 5*time.Second)
	g.signal(syscall.SIGUSR1)
	out := s.waitDone(t, 10*time.Second)
	if !strings.Contains(out, "data: [DONE]") {
		t.Errorf("stream did not finish:\n%s", out)
	}
	if code := g.wait(10 * time.Second); code != exitRestart {
		t.Errorf("exit code = %d, want %d", code, exitRestart)
	}
}

func TestDrainTimeoutSendsFinalEvent(t *testing.T) {
	for _, tc := range []struct {
		sig    syscall.Signal
		reason string
		code   int
	}{
		{syscall.SIGTERM, reasonShutdown, exitOK},
		{syscall.SIGUSR1, reasonRestart, exitRestart},
	} {
		t.Run(signalName(tc.sig), func(t *testing.T) {
			e := newTestEnv(t, "[echo]\nword_delay = \"100ms\"\n[drain]\ntimeout = \"300ms\"\ngrace = \"2s\"\n")
			g := e.startGateway()
			s := startStream(t, g.url, 200) // 20 s: cannot finish within the drain
			s.waitLines(t, 2, 5*time.Second)
			g.signal(tc.sig)
			out := s.waitDone(t, 10*time.Second)
			if !strings.Contains(out, "event: error") || !strings.Contains(out, `"reason":"`+tc.reason+`"`) {
				t.Errorf("cut stream lacks the final event with reason %s:\n%s", tc.reason, out)
			}
			if strings.Contains(out, "[DONE]") {
				t.Errorf("stream claims to be done:\n%s", out)
			}
			if code := g.wait(10 * time.Second); code != tc.code {
				t.Errorf("exit code = %d, want %d", code, tc.code)
			}
			// By the gateway's own clock: signal to exit within the drain's
			// budget (timeout 300ms + grace 2s).
			log := g.stderr.String()
			if el := logLineTime(t, log, " exit ").Sub(logLineTime(t, log, "drain start")); el > 2300*time.Millisecond {
				t.Errorf("drain took %s, beyond timeout+grace", el)
			}
			if !strings.Contains(g.stderr.String(), "session cut") {
				t.Errorf("log lacks the cut session:\n%s", g.stderr.String())
			}
		})
	}
}

func TestIdleGatewayStopsAtOnce(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	g.signal(syscall.SIGINT)
	if code := g.wait(5 * time.Second); code != exitOK {
		t.Errorf("exit code = %d, want 0", code)
	}
}

func TestReloadKeepsOldPolicyOnError(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "[echo]\nword_delay = \"1ms\"\n")
	g := e.startGateway()

	// A broken policy: logged, the gateway keeps serving on the old one.
	os.WriteFile(e.policy, []byte("name = \"test\"\n[gateway]\nlisten = 12\n"), 0o600)
	g.signal(syscall.SIGHUP)
	g.waitLog("reload failed", 5*time.Second)
	if !strings.Contains(g.stderr.String(), "hermes.toml:3") || !strings.Contains(g.stderr.String(), "gateway.listen") {
		t.Errorf("reload error does not name file, line and key:\n%s", g.stderr.String())
	}
	if code, _ := httpGet(t, g.url+"/readyz"); code != 200 {
		t.Errorf("readyz after a failed reload = %d, want 200", code)
	}
	s := startStream(t, g.url, 3)
	if out := s.waitDone(t, 5*time.Second); !strings.Contains(out, "[DONE]") {
		t.Errorf("stream after failed reload:\n%s", out)
	}

	// A good one with a slower echo: applied.
	e.writePolicy("[echo]\nword_delay = \"400ms\"\n")
	g.signal(syscall.SIGHUP)
	g.waitLog("reload ok", 5*time.Second)
	start := time.Now()
	s = startStream(t, g.url, 3)
	s.waitDone(t, 10*time.Second)
	if el := time.Since(start); el < 1*time.Second {
		t.Errorf("reloaded word_delay not applied: 3 words took %s", el)
	}
	if code, _ := httpGet(t, g.url+"/readyz"); code != 200 {
		t.Errorf("readyz after reload = %d", code)
	}
}

func TestBadPolicyExits78(t *testing.T) {
	e := newTestEnv(t, "[drain]\ntimeout = \"soon\"\n")
	g := e.spawnGateway()
	if code := g.wait(10 * time.Second); code != exitConfig {
		t.Errorf("exit code = %d, want %d", code, exitConfig)
	}
	if log := g.stderr.String(); !strings.Contains(log, "drain.timeout") || !strings.Contains(log, "hermes.toml:6") {
		t.Errorf("error does not name key and line:\n%s", log)
	}
}

func TestSecondInstanceRefused(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	e2 := *e
	e2.addr = freePort(t)
	g2 := e2.spawnGateway()
	if code := g2.wait(10 * time.Second); code != exitConfig {
		t.Errorf("second instance exit = %d, want %d", code, exitConfig)
	}
	if !strings.Contains(g2.stderr.String(), fmt.Sprintf("pid %d", g.pid())) {
		t.Errorf("refusal does not name the running gateway's pid %d:\n%s", g.pid(), g2.stderr.String())
	}
}

func TestStatusEndpointsAndPidFile(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	if code, body := httpGet(t, g.url+"/healthz"); code != 200 || !strings.Contains(body, "ok") {
		t.Errorf("healthz = %d %q", code, body)
	}
	code, body := httpGet(t, g.url+"/status")
	var st gatewayStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || code != 200 {
		t.Fatalf("status = %d %q: %v", code, body, err)
	}
	if st.PID != g.pid() || st.State != stateServing || st.Policy != e.policy || st.Version == "" {
		t.Errorf("status = %+v", st)
	}
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil {
		t.Fatal(err)
	}
	start, _, err := procInfo(g.pid())
	if err != nil {
		t.Fatal(err)
	}
	boot, _ := bootID()
	if rec.PID != g.pid() || rec.StartTime != start || rec.BootID != boot {
		t.Errorf("pid file %+v, want pid %d start %d boot %s", rec, g.pid(), start, boot)
	}
	if ok, _ := rec.alive(); !ok {
		t.Error("pid file record does not prove the live gateway")
	}
}

func TestControlSocket(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	path := controlPath(e.stateDir)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("control socket mode %v, want 0600", fi.Mode().Perm())
	}
	ans, err := controlRequest(path, "ping", 2*time.Second)
	if want := fmt.Sprintf("pong %d serving", g.pid()); err != nil || ans != want {
		t.Errorf("ping = %q, %v; want %q", ans, err, want)
	}
	ans, err = controlRequest(path, "status", 2*time.Second)
	var st gatewayStatus
	if err != nil || json.Unmarshal([]byte(ans), &st) != nil || st.PID != g.pid() {
		t.Errorf("status = %q, %v", ans, err)
	}
	if _, err := controlRequest(path, "launch-missiles", 2*time.Second); err == nil || !strings.Contains(err.Error(), "unknown command") {
		t.Errorf("unknown command: %v", err)
	}
}

func TestControlSocketRefusesOtherUID(t *testing.T) {
	if os.Getuid() != 0 {
		skipUnlessCI(t, "needs root to connect as another uid: run the tests as root")
	}
	e := newTestEnv(t, "")
	e.startGateway()
	// The socket is 0600 and owned by root; let a nobody-owned copy of the
	// path be reachable by opening the directory to everyone, then connect
	// as uid 65534 through a child process.
	os.Chmod(filepath.Dir(e.dir), 0o755)
	os.Chmod(e.dir, 0o755)
	os.Chmod(e.stateDir, 0o755)
	os.Chmod(controlPath(e.stateDir), 0o777)
	cmd := execAsNobody(t, "sh", "-c", "echo ping | python3 -c 'import socket,sys;s=socket.socket(socket.AF_UNIX);s.connect(sys.argv[1]);s.sendall(b\"ping\\n\");print(s.recv(200).decode())' "+controlPath(e.stateDir))
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "refused") || strings.Contains(string(out), "pong") {
		t.Errorf("a peer of another uid got: %s", out)
	}
}

func TestEchoRejectsMalformedRequests(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	for _, tc := range []struct{ name, body, code string }{
		{"not json", `{"messages":`, "invalid_json"},
		{"no messages", `{"model":"m"}`, "missing_messages"},
		{"no user message", `{"messages":[{"role":"system","content":"hi"}]}`, "missing_user_message"},
		{"bad content", `{"messages":[{"role":"user","content":5}]}`, "invalid_content"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct {
				Error struct{ Type, Code, Message string }
			}
			json.NewDecoder(resp.Body).Decode(&body)
			if resp.StatusCode != 400 || body.Error.Code != tc.code || body.Error.Type != "invalid_request_error" {
				t.Errorf("got %d %+v, want 400 %s", resp.StatusCode, body.Error, tc.code)
			}
		})
	}
	// Non-streaming answers too.
	resp, err := http.Post(g.url+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"messages":[{"role":"user","content":[{"type":"text","text":"hello there"}]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Object  string
		Choices []struct{ Message struct{ Content string } }
	}
	json.NewDecoder(resp.Body).Decode(&out)
	if out.Object != "chat.completion" || len(out.Choices) != 1 || out.Choices[0].Message.Content != "hello there" {
		t.Errorf("non-streaming echo = %+v", out)
	}
}

// fakeUpstream is an OpenAI-compatible upstream under the test's control:
// it streams chunks only when the test releases them, records what it was
// sent and notices when a request is cancelled.
type fakeUpstream struct {
	srv       *httptest.Server
	release   chan struct{}
	gotAuth   atomic.Value
	gotPath   atomic.Value
	cancelled chan struct{}
}

func newFakeUpstream(t *testing.T) *fakeUpstream {
	f := &fakeUpstream{release: make(chan struct{}, 16), cancelled: make(chan struct{}, 16)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.gotAuth.Store(r.Header.Get("Authorization"))
		f.gotPath.Store(r.URL.Path)
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: {\"chunk\":%d}\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-f.release:
			case <-r.Context().Done():
				f.cancelled <- struct{}{}
				return
			}
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func TestProxyStreamsUnbufferedAndAddsKey(t *testing.T) {
	up := newFakeUpstream(t)
	const key = "sk-test-SECRET-4242"
	// Extra keys right after the base policy land in its [gateway] table.
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\nupstream_key_env = \"TEST_UPSTREAM_KEY\"\n", up.srv.URL+"/v1"))
	g := e.startGateway("TEST_UPSTREAM_KEY=" + key)

	resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	// The first chunk must arrive while the upstream still holds the rest.
	first := make(chan string, 1)
	go func() {
		l, _ := br.ReadString('\n')
		if strings.HasPrefix(l, "id: ") { // hermes's event id ([reattach])
			l, _ = br.ReadString('\n')
		}
		first <- l
	}()
	select {
	case l := <-first:
		if !strings.Contains(l, `"chunk":0`) {
			t.Errorf("first line %q", l)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("first chunk was buffered: it did not arrive before the upstream finished")
	}
	up.release <- struct{}{}
	up.release <- struct{}{}
	up.release <- struct{}{}
	rest, _ := io.ReadAll(br)
	if !strings.Contains(string(rest), `"chunk":2`) || !strings.Contains(string(rest), "[DONE]") {
		t.Errorf("rest of stream: %q", rest)
	}
	if got := up.gotAuth.Load(); got != "Bearer "+key {
		t.Errorf("upstream saw Authorization %q", got)
	}
	if got := up.gotPath.Load(); got != "/v1/chat/completions" {
		t.Errorf("upstream path %q, want /v1/chat/completions", got)
	}
	g.signal(syscall.SIGTERM)
	g.wait(10 * time.Second)
	if strings.Contains(g.stderr.String(), key) {
		t.Errorf("the API key appears in the log")
	}
}

// TestProxyPassesRequestThrough checks what the upstream receives: the
// method, path and query as sent, the body byte for byte (small bodies are
// read whole and sent with the head; large and chunked ones stream), the
// client's headers without the hop-by-hop ones, and the policy's key in
// place of the client's Authorization. And what the client gets back: the
// upstream's headers without its hop-by-hop ones.
func TestProxyPassesRequestThrough(t *testing.T) {
	type seen struct {
		Method, URI, Host, Body, Auth, Custom, Te, ProxyAuth, Conn string
		Length                                                     int64
		Chunked                                                    bool
	}
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Upstream", "yes")
		w.Header().Set("Keep-Alive", "timeout=5") // hop-by-hop: must not reach the client
		json.NewEncoder(w).Encode(seen{
			Method: r.Method, URI: r.RequestURI, Host: r.Host, Body: string(b),
			Auth: r.Header.Get("Authorization"), Custom: r.Header.Get("X-Custom"),
			Te: r.Header.Get("Te"), ProxyAuth: r.Header.Get("Proxy-Authorization"),
			Conn: r.Header.Get("Connection"), Length: r.ContentLength,
			Chunked: len(r.TransferEncoding) > 0,
		})
	}))
	defer upstream.Close()
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\nupstream_key_env = \"TEST_UPSTREAM_KEY\"\n", upstream.URL+"/v1"))
	g := e.startGateway("TEST_UPSTREAM_KEY=sk-policy")
	big := strings.Repeat("x", 100<<10)
	for _, tc := range []struct {
		name, method, path, body string
		chunked                  bool
	}{
		{"small POST", "POST", "/v1/chat/completions?a=1&b=%2F", `{"stream":false}`, false},
		{"GET without body", "GET", "/v1/models", "", false},
		{"8 KB POST (head and body in one writev)", "POST", "/v1/embeddings", big[:8<<10], false},
		{"large POST (streams)", "POST", "/v1/files", big, false},
		{"chunked POST", "POST", "/v1/chat/completions", `{"chunked":true}`, true},
		{"escaped path", "DELETE", "/v1/files/a%20b%2Fc", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = io.MultiReader(strings.NewReader(tc.body)) // no length: sent chunked
			}
			req, _ := http.NewRequest(tc.method, g.url+tc.path, body)
			if tc.body == "" {
				req.Body = nil
			}
			req.Header.Set("Authorization", "Bearer client-token")
			req.Header.Set("X-Custom", "kept")
			req.Header.Set("Te", "trailers")
			req.Header.Set("Proxy-Authorization", "Basic c2VjcmV0")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got seen
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatalf("status %d: %v", resp.StatusCode, err)
			}
			wantURI := strings.TrimPrefix(tc.path, "/v1")
			wantURI = "/v1" + wantURI
			if got.Method != tc.method || got.URI != wantURI || got.Body != tc.body {
				t.Errorf("upstream got %s %s with %d body bytes, want %s %s with %d", got.Method, got.URI, len(got.Body), tc.method, wantURI, len(tc.body))
			}
			if got.Host != strings.TrimPrefix(upstream.URL, "http://") {
				t.Errorf("Host %q", got.Host)
			}
			if got.Auth != "Bearer sk-policy" || got.Custom != "kept" || got.Te != "" || got.ProxyAuth != "" {
				t.Errorf("headers: Authorization %q X-Custom %q Te %q Proxy-Authorization %q", got.Auth, got.Custom, got.Te, got.ProxyAuth)
			}
			if tc.chunked != got.Chunked || (!tc.chunked && got.Length != int64(len(tc.body))) {
				t.Errorf("upstream saw length %d chunked %v", got.Length, got.Chunked)
			}
			if resp.Header.Get("X-Upstream") != "yes" || resp.Header.Get("Keep-Alive") != "" {
				t.Errorf("answer headers %v", resp.Header)
			}
		})
	}
}

// TestProxyUpstreamClosedIdleConnection: an upstream that closes a
// keep-alive connection after its answer (a restart, an idle timeout)
// must not cost the next request its answer. The fake upstream answers
// one request per connection, claims keep-alive, then closes; the test
// sends the next request only once the close has happened, so the
// gateway's pooled connection is certainly dead when it is reused.
func TestProxyUpstreamClosedIdleConnection(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed := make(chan int, 16)
	go func() {
		for n := 0; ; n++ {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(c))
			if err == nil {
				io.Copy(io.Discard, req.Body)
				body := fmt.Sprintf(`{"answer":%d}`, n)
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
			}
			c.Close()
			closed <- n
		}
	}()
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n", "http://"+ln.Addr().String()))
	g := e.startGateway()
	for i := 0; i < 3; i++ {
		resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":false}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprintf(`{"answer":%d}`, i) {
			t.Fatalf("request %d: %d %s", i, resp.StatusCode, b)
		}
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatal("the upstream did not close its connection")
		}
	}
}

// TestProxyHTTPSUpstream streams through an https upstream, whose
// certificate the gateway trusts through SSL_CERT_FILE (the way a host adds
// a private CA), and checks that the upstream sees the policy's key.
func TestProxyHTTPSUpstream(t *testing.T) {
	var gotAuth atomic.Value
	up := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotAuth.Store(r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 3; i++ {
			fmt.Fprintf(w, "data: {\"chunk\":%d}\n\n", i)
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: up.Certificate().Raw}), 0o644)
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\nupstream_key_env = \"TEST_UPSTREAM_KEY\"\n", up.URL))
	g := e.startGateway("SSL_CERT_FILE="+ca, "TEST_UPSTREAM_KEY=sk-tls")
	for i := 0; i < 2; i++ { // the second reuses the pooled TLS connection
		resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), `"chunk":2`) || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	if got := gotAuth.Load(); got != "Bearer sk-tls" {
		t.Errorf("upstream saw Authorization %q", got)
	}
}

// TestClientDisconnectCancelsUpstream: a client that goes away mid-answer
// gets its upstream request cancelled. With reattach.window = 0 that is at
// once; with a window, the stream is
// kept for its client to come back, and cancelled when the window ends
// with nobody back (the window's own test is in reattach_test.go).
func TestClientDisconnectCancelsUpstream(t *testing.T) {
	for _, window := range []string{"0s", "300ms"} {
		t.Run("window="+window, func(t *testing.T) { testClientDisconnectCancels(t, window) })
	}
}

func testClientDisconnectCancels(t *testing.T, window string) {
	up := newFakeUpstream(t)
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n[reattach]\nwindow = %q\n", up.srv.URL, window))
	g := e.startGateway()
	c, err := net.Dial("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
	br := bufio.NewReader(c)
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(l, "chunk") {
			break
		}
	}
	c.Close()
	if window != "0s" {
		g.waitLog("stream expired", 10*time.Second)
	}
	select {
	case <-up.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream request was not cancelled when the client went away")
	}
	// The session is gone from the count (it leaves just after its log line).
	g.waitLog("session client_gone", 5*time.Second)
	g.waitStatus(5*time.Second, "the disconnected session out of the count", func(st gatewayStatus) bool { return st.ActiveSessions == 0 })
}

func TestSdNotify(t *testing.T) {
	sock, msgs := fakeNotifySocket(t)
	e := newTestEnv(t, quickDrain)
	g := e.startGateway("NOTIFY_SOCKET="+sock, "JOURNAL_STREAM=8:1234")
	wantNotify(t, msgs, "READY=1")
	s := startStream(t, g.url, 10)
	s.waitLines(t, 2, 5*time.Second)
	g.signal(syscall.SIGTERM)
	wantNotify(t, msgs, "STOPPING=1", "STATUS=draining (gateway_shutdown): 1 sessions left")
	// The stop timeout systemd is told covers the whole drain plus the
	// exit's margin: timeout 10s + grace 1s + 5s, less what passed since.
	m := wantNotify(t, msgs, "EXTEND_TIMEOUT_USEC=")
	var got int64
	fmt.Sscanf(m[strings.Index(m, "EXTEND_TIMEOUT_USEC=")+len("EXTEND_TIMEOUT_USEC="):], "%d", &got)
	if want := int64(16_000_000); got > want || got < want-2_000_000 {
		t.Errorf("EXTEND_TIMEOUT_USEC=%d, want drain.timeout + drain.grace + 5s = %d, less the time since the drain began", got, want)
	}
	g.wait(10 * time.Second)
	// Under the journal: priority prefixes, no own timestamps.
	for _, l := range strings.Split(strings.TrimSpace(g.stderr.String()), "\n") {
		if !strings.HasPrefix(l, "<") {
			t.Errorf("journal line without priority prefix: %q", l)
		}
	}
}

// TestProxyManyStreamsComplete is the regression test for streams cut short
// when the upstream answers while the transport still checks the request
// body's end: every one of many streams must arrive whole.
func TestProxyManyStreamsComplete(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; i < 100; i++ {
			fmt.Fprintf(w, "data: {\"n\":%d}\n\n", i)
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n", up.URL))
	g := e.startGateway()
	for i := 0; i < 500; i++ {
		resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true,"messages":[]}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
			t.Fatalf("stream %d arrived cut short (%d bytes)", i, len(b))
		}
	}
	if strings.Contains(g.stderr.String(), "upstream stream broken") {
		t.Errorf("gateway logged broken upstream streams:\n%s", g.stderr.String())
	}
}

// TestReloadNamesKeysThatNeedARestart: a reload applies what it can
// (journal.max_bytes among them) and names the keys bound at start.
func TestReloadNamesKeysThatNeedARestart(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	e.writePolicy("[lock]\nscope = \"other\"\n[journal]\nmax_bytes = 8192\n")
	g.signal(syscall.SIGHUP)
	g.waitLog("reload ok", 5*time.Second)
	log := g.stderr.String()
	if !strings.Contains(log, "reload partial level=warn keys=lock.scope") {
		t.Errorf("the reload does not say lock.scope needs a restart:\n%s", log)
	}
	if strings.Contains(log, "journal.max_bytes") {
		t.Errorf("journal.max_bytes is applied by a reload, yet named as needing a restart:\n%s", log)
	}
}

// TestSessionCutBeforeFirstByteGets503: a session the drain ends before the
// upstream said anything gets a 503 with the drain's reason, never a 200.
func TestSessionCutBeforeFirstByteGets503(t *testing.T) {
	hold := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select { // no headers, no byte, until the client or the test gives up
		case <-r.Context().Done():
		case <-hold:
		}
	}))
	defer up.Close()
	defer close(hold)
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n[drain]\ntimeout = \"300ms\"\ngrace = \"2s\"\n", up.URL))
	g := e.startGateway()
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"stream":true}`))
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{code: resp.StatusCode, body: string(b)}
	}()
	g.waitStatus(5*time.Second, "the session open", func(st gatewayStatus) bool { return st.ActiveSessions == 1 })
	g.signal(syscall.SIGUSR1)
	r := <-res
	if r.err != nil || r.code != 503 || !strings.Contains(r.body, `"type":"gateway_restart"`) {
		t.Errorf("session cut before its first byte: %d %q %v, want 503 with type gateway_restart", r.code, r.body, r.err)
	}
	if code := g.wait(10 * time.Second); code != exitRestart {
		t.Errorf("exit %d, want %d", code, exitRestart)
	}
}

// TestRefusalMatchesFinalEvent: a request refused during a drain (503)
// carries the same error object type and code as the final event of a
// stream the drain cut, for a stop and for a restart.
func TestRefusalMatchesFinalEvent(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	type apiError struct {
		Error struct{ Type, Code string }
	}
	for _, tc := range []struct {
		name   string
		drain  syscall.Signal // starts the drain
		cut    syscall.Signal // then cuts the stream (0: drain.timeout does)
		reason string
	}{
		{"stop", syscall.SIGTERM, syscall.SIGTERM, reasonShutdown},
		{"restart", syscall.SIGUSR1, 0, reasonRestart},
	} {
		t.Run(tc.name, func(t *testing.T) {
			timeout := "20s"
			if tc.cut == 0 {
				timeout = "1s"
			}
			e := newTestEnv(t, fmt.Sprintf("[echo]\nword_delay = \"50ms\"\n[drain]\ntimeout = %q\n", timeout))
			g := e.startGateway()
			s := startStream(t, g.url, 100)
			s.waitLines(t, 4, 5*time.Second)
			g.signal(tc.drain)
			g.waitLog("drain start", 5*time.Second)
			// The gate is closed before the log line, but /readyz says 503
			// only once the loop has published the drain, a moment after it.
			waitReadyz(t, g.url, http.StatusServiceUnavailable, 5*time.Second)
			resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var refused apiError
			if err := json.Unmarshal(b, &refused); err != nil || resp.StatusCode != 503 {
				t.Fatalf("refusal = %d %s (%v), want 503 with an error object", resp.StatusCode, b, err)
			}
			if tc.cut != 0 {
				g.signal(tc.cut)
			}
			out := s.waitDone(t, 10*time.Second)
			var final apiError
			for _, l := range strings.Split(out, "\n") {
				if d, ok := strings.CutPrefix(l, "data: "); ok && strings.Contains(d, `"error"`) {
					json.Unmarshal([]byte(d), &final)
				}
			}
			if refused.Error != final.Error || final.Error.Type != tc.reason || final.Error.Code != tc.reason {
				t.Errorf("refusal's error %+v, final event's %+v; want both type and code %s\nstream:\n%s", refused.Error, final.Error, tc.reason, out)
			}
		})
	}
}

// TestStderrScrubsSecrets: a known secret that slips into a log line (here
// an upstream URL that holds the key) is replaced on stderr and left out
// of the journal.
func TestStderrScrubsSecrets(t *testing.T) {
	const key = "sk-scrub-me-0123456789"
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n", "http://127.0.0.1:1/"+key))
	g := e.startGateway("HERMES_UPSTREAM_KEY=" + key)
	resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	g.waitLog("upstream error", 5*time.Second)
	g.signal(syscall.SIGTERM)
	g.wait(10 * time.Second)
	if log := g.stderr.String(); strings.Contains(log, key) || !strings.Contains(log, redacted) {
		t.Errorf("stderr holds the key, or does not show it was redacted:\n%s", log)
	}
	j, _ := os.ReadFile(journalPath(e.stateDir))
	if strings.Contains(string(j), key) {
		t.Errorf("the journal holds the key:\n%s", j)
	}
}

func TestLoggerScrubs(t *testing.T) {
	var b bytes.Buffer
	l := newLogger(&b)
	l.secrets = &redactor{}
	l.secrets.add("tok-123456:secret")
	l.warn(evUpstreamError, "error", errors.New(`Post "https://api.example/bottok-123456:secret/x": dial tcp: refused`))
	if strings.Contains(b.String(), "tok-123456:secret") || !strings.Contains(b.String(), "bot"+redacted+"/x") {
		t.Errorf("line not scrubbed: %s", b.String())
	}
}

// TestControlSocketUIDCheckForNonRootGateway: a gateway run by an ordinary
// user (here nobody) answers that user and root, and refuses any other
// uid, even with the socket's mode opened up.
func TestControlSocketUIDCheckForNonRootGateway(t *testing.T) {
	if os.Getuid() != 0 {
		skipUnlessCI(t, "needs root to run the gateway and its clients as other users: run the tests as root")
	}
	dir, err := os.MkdirTemp("", "hermes-uid-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	os.Chown(state, 65534, 65534)
	addr := freePort(t)
	policy := filepath.Join(dir, "hermes.toml")
	os.WriteFile(policy, []byte(fmt.Sprintf("name = \"uid\"\n[gateway]\nlisten = %q\nstate_dir = %q\n", addr, state)), 0o644)
	registry := filepath.Join(dir, "registry")
	os.Mkdir(registry, 0o755)
	os.Chmod(registry, 0o1777)
	env := append(filteredEnv(), "HOME="+dir, "HERMES_CONFIG="+policy, "HERMES_REGISTRY_DIR="+registry)

	gw := execAsNobody(t, hermesBin, "serve")
	gw.Env = env
	log := &syncBuffer{}
	gw.Stdout, gw.Stderr = log, log
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Process.Kill(); gw.Wait() })
	if !log.waitUntil(20*time.Second, nil, func(s string) bool { return strings.Contains(s, " ready ") }) {
		t.Fatalf("gateway as nobody not ready:\n%s", log.String())
	}
	os.Chmod(controlPath(state), 0o777) // only the uid check is left to refuse

	status := func(uid uint32) string {
		cmd := exec.Command(hermesBin, "status")
		cmd.Env = env
		if uid != 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		}
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	if out := status(12345); !strings.Contains(out, "refused") || strings.Contains(out, "gateway:  serving") {
		t.Errorf("uid 12345 against nobody's gateway got:\n%s", out)
	}
	for _, uid := range []uint32{65534, 0} {
		if out := status(uid); !strings.Contains(out, "gateway:  serving") {
			t.Errorf("uid %d against nobody's gateway got:\n%s", uid, out)
		}
	}
}

// TestAfterTheLoopReturned: a request or a ping that arrives once the loop
// has returned (the gateway is closing down) is answered at once, never
// left waiting on a loop that is gone.
func TestAfterTheLoopReturned(t *testing.T) {
	p := defaultPolicy()
	p.Gateway.StateDir = t.TempDir()
	pipe, err := installSignals()
	if err != nil {
		t.Fatal(err)
	}
	defer pipe.close()
	log, q := newAsyncLogger(io.Discard, nil)
	g := newGateway(gatewayParts{policy: p, pipe: pipe, log: log, logq: q})
	g.gate.close()
	close(g.done)

	rec := httptest.NewRecorder()
	g.ServeHTTP(rec, httptest.NewRequest("POST", "/v1/chat/completions", strings.NewReader(`{}`)))
	if rec.Code != 503 || rec.Header().Get("Retry-After") == "" {
		t.Errorf("a request after the loop returned: %d, want 503 with Retry-After", rec.Code)
	}

	sock := filepath.Join(t.TempDir(), "c.sock")
	ln, err := listenControl(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go g.serveControl(ln)
	ans, err := controlRequest(sock, "ping", 5*time.Second)
	if err != nil || !strings.HasSuffix(ans, string(stateStopping)) {
		t.Errorf("a ping after the loop returned = %q, %v; want an answer saying stopping", ans, err)
	}
}

// TestEchoStreamIsValidJSON: every data line of an echo stream is one JSON
// chunk, and the deltas put back together are the words sent, escapes and
// all.
func TestEchoStreamIsValidJSON(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"1ms\"\n")
	g := e.startGateway()
	words := "plain \"quoted\" back\\slash tab\there ünïcødé 日本 emoji\U0001F600 \x01ctl"
	body, _ := json.Marshal(map[string]any{"stream": true, "model": "m\"odel", "messages": []any{map[string]any{"role": "user", "content": words}}})
	resp, err := http.Post(g.url+"/v1/chat/completions", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var got strings.Builder
	done := false
	for sc.Scan() {
		line, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if line == "[DONE]" {
			done = true
			continue
		}
		var c struct {
			Object  string
			Model   string
			Choices []struct {
				Delta        struct{ Content string }
				FinishReason *string `json:"finish_reason"`
			}
		}
		if err := json.Unmarshal([]byte(line), &c); err != nil || c.Object != "chat.completion.chunk" || c.Model != "m\"odel" || len(c.Choices) != 1 {
			t.Fatalf("bad chunk %q: %v", line, err)
		}
		got.WriteString(c.Choices[0].Delta.Content)
	}
	if want := strings.Join(strings.Fields(words), " "); got.String() != want || !done {
		t.Errorf("deltas = %q (done %v), want %q", got.String(), done, want)
	}
}

// waitReadyz polls /readyz until it answers status (a state published by
// the loop, with no event to wait on from outside).
func waitReadyz(t *testing.T, url string, status int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not answer %d within %s", status, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
