//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// activationSocket is what systemd's .socket unit holds: a listening socket
// on a free loopback port, as a file to pass on, and its address. This
// process never accepts on it.
func activationSocket(t *testing.T) (string, *os.File) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sock, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sock.Close() })
	return ln.Addr().String(), sock
}

// activated starts `hermes serve` the way systemd's socket activation does:
// the listening socket at fd 3, LISTEN_FDS=1 and LISTEN_PID naming the
// gateway (sh's $$, which exec keeps).
func activated(t *testing.T, e *testEnv, sock *os.File) *gatewayProc {
	t.Helper()
	g := startActivated(t, e, sock)
	g.waitLog(" ready ", 20*time.Second)
	return g
}

// startActivated is activated without waiting for the gateway to be ready;
// env is added to the test environment's.
func startActivated(t *testing.T, e *testEnv, sock *os.File, env ...string) *gatewayProc {
	t.Helper()
	cmd := exec.Command("sh", "-c", `LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=http exec "$0" serve`, hermesBin)
	cmd.Env, cmd.Dir = append(append([]string{}, e.env...), env...), e.dir
	cmd.ExtraFiles = []*os.File{sock}
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	g := &gatewayProc{t: t, cmd: cmd, stderr: log, exited: make(chan struct{})}
	go func() { cmd.Wait(); g.code = cmd.ProcessState.ExitCode(); close(g.exited) }()
	t.Cleanup(func() {
		if !g.hasExited() {
			cmd.Process.Kill()
			<-g.exited
		}
	})
	return g
}

// TestSocketActivation: the gateway serves on the socket systemd passed
// (not on gateway.listen), and a drain restart queues the connections that
// arrive meanwhile on that socket, for the next gateway, instead of
// refusing them: the socket outlives every gateway.
func TestSocketActivation(t *testing.T) {
	addr, sock := activationSocket(t)
	url := "http://" + addr
	e := newTestEnv(t, strings.Replace(restartPolicy, `word_delay = "25ms"`, `word_delay = "20ms"`, 1))

	g := activated(t, e, sock)
	if !strings.Contains(g.stderr.String(), `socket="systemd socket activation"`) || !strings.Contains(g.stderr.String(), "listen="+addr) {
		t.Fatalf("the gateway did not take the activated socket:\n%s", g.stderr.String())
	}
	s := startStream(t, url, 40) // 0.8 s
	s.waitLines(t, 4, 5*time.Second)
	g.signal(syscall.SIGUSR1) // a drain restart
	g.waitLog("drain start", 5*time.Second)

	// A request during the drain: connected by the kernel, queued.
	type result struct {
		code int
		body string
		err  error
	}
	queued := make(chan result, 1)
	go func() {
		resp, err := freshClient.Post(url+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"messages":[{"role":"user","content":"queued not refused"}]}`))
		if err != nil {
			queued <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		queued <- result{code: resp.StatusCode, body: string(b)}
	}()
	if out := s.waitDone(t, 10*time.Second); !strings.Contains(out, "[DONE]") {
		t.Errorf("the stream in flight was cut:\n%s", out)
	}
	if code := g.wait(10 * time.Second); code != exitRestart {
		t.Fatalf("exit %d, want %d", code, exitRestart)
	}
	select {
	case r := <-queued:
		t.Fatalf("the request made during the drain was answered by the draining gateway: %+v", r)
	default:
	}
	// The manager starts the next gateway on the same socket.
	activated(t, e, sock)
	select {
	case r := <-queued:
		if r.err != nil || r.code != http.StatusOK || !strings.Contains(r.body, "queued not refused") {
			t.Errorf("the queued request: %d %q %v, want 200 from the next gateway", r.code, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the queued request was never answered")
	}
}

// TestQueuedProbeMeetsAServingGateway: a connection that waits on the
// socket while the gateway starts (on systemd's socket, or from a client
// during a restart) is accepted only once the gateway serves, so its
// /readyz answers 200 "serving", never 503 "starting". The slow-start
// fault holds the gateway 500 ms between opening its sockets and starting
// its loop, a window that is otherwise microseconds wide (CI hit it once).
func TestQueuedProbeMeetsAServingGateway(t *testing.T) {
	addr, sock := activationSocket(t)
	c, err := net.Dial("tcp", addr) // the kernel connects it; nobody accepts yet
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET /readyz HTTP/1.1\r\nHost: hermes\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	e := newTestEnv(t, "")
	g := startActivated(t, e, sock, "HERMES_TEST_FAULT=slow-start")
	c.SetDeadline(time.Now().Add(20 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("the queued /readyz: %v\n%s", err, g.stderr.String())
	}
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(body)) != string(stateServing) {
		t.Errorf("the queued /readyz answered %d %q, want 200 %q", resp.StatusCode, body, stateServing)
	}
}

// TestListenAddressHeldByAnotherProcess: a port another program holds
// (here: this test process) is tried for gateway.listen_timeout, then the
// gateway exits 78 (no restart loop) with one message naming the holder's
// pid, and a hint with the command that shows it and the policy file to
// change; no doubled "listen tcp ..." prefix. (A test policy's extra
// lines land in its [gateway].)
func TestListenAddressHeldByAnotherProcess(t *testing.T) {
	e := newTestEnv(t, "listen_timeout = \"300ms\"\n")
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	g := e.spawnGateway()
	if code := g.wait(20 * time.Second); code != exitConfig {
		t.Fatalf("exit %d, want %d:\n%s", code, exitConfig, g.stderr.String())
	}
	_, port, _ := net.SplitHostPort(e.addr)
	log := g.stderr.String()
	for _, want := range []string{
		fmt.Sprintf("hermes: error: cannot listen on %s: it is in use by pid %d (", e.addr, os.Getpid()),
		"; waited 300ms for it to be free\n",
		fmt.Sprintf("hermes: hint: see it with: %s\n", portHolderCommand(port, true)),
		"    or move this gateway to another port: set gateway.listen in " + e.policy + "\n",
		fmt.Sprintf("listen busy level=warn listen=%s holder=\"pid %d (", e.addr, os.Getpid()),
		"exit level=error code=78",
	} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "listen tcp") || strings.Count(log, e.addr+": ") > 2 {
		t.Errorf("the address is repeated in the message:\n%s", log)
	}

	// docs/gateway.md shows this message, for a python3 holding 8642 for
	// the policy in /etc/hermes: the same lines, those details aside.
	var msg []string
	for _, l := range strings.Split(log, "\n") {
		if strings.HasPrefix(l, "hermes: ") || strings.HasPrefix(l, "    or ") {
			msg = append(msg, l)
		}
	}
	got := strings.Join(msg, "\n")
	got = regexp.MustCompile(`pid \d+ \([^)]*\)`).ReplaceAllString(got, "pid 22833 (python3)")
	got = strings.NewReplacer(e.addr, "127.0.0.1:8642", ":"+port, ":8642", "300ms", "5s", e.policy, "/etc/hermes/hermes.toml").Replace(got)
	if want := strings.Join(docFenced(t, "docs/gateway.md", "port clash:", "```"), "\n"); got != want {
		t.Errorf("docs/gateway.md shows:\n%s\nthe gateway says (details replaced):\n%s", want, got)
	}
}

// TestListenAddressHeldByAnotherGateway: the holder is a hermes gateway of
// another instance: the message names it by its state dir.
func TestListenAddressHeldByAnotherGateway(t *testing.T) {
	first := newTestEnv(t, "")
	first.startGateway()
	e := newTestEnv(t, "")
	e.addr = first.addr
	e.writePolicy("listen_timeout = \"200ms\"\n")
	g := e.spawnGateway()
	if code := g.wait(20 * time.Second); code != exitConfig {
		t.Fatalf("exit %d, want %d:\n%s", code, exitConfig, g.stderr.String())
	}
	rec := first.gatewayFromPidFile()
	want := fmt.Sprintf("it is in use by pid %d, the hermes gateway \"test\" (state dir %s)", rec.PID, first.stateDir)
	if !strings.Contains(g.stderr.String(), want) {
		t.Errorf("log lacks %q:\n%s", want, g.stderr.String())
	}
}

// TestListenAddressFreedWhileWaiting: a port that is let go within
// gateway.listen_timeout (the gateway before this one closing it) costs
// the wait and nothing else.
func TestListenAddressFreedWhileWaiting(t *testing.T) {
	e := newTestEnv(t, "listen_timeout = \"15s\"\n")
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	g := e.spawnGateway()
	g.waitLog("listen busy", 20*time.Second)
	ln.Close()
	g.waitReady(20 * time.Second)
	g.waitLog("listen busy listen="+e.addr+" state=\"free now\"", 5*time.Second)
}
