package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// hermesBin is the real hermes binary, built once by TestMain (with -race
// when the tests run with -race), so every test drives the real thing. It
// is built with -tags hermes_testfault, the only kind of binary in which
// HERMES_TEST_FAULT means anything (testfault_on.go).
var hermesBin string

func TestMain(m *testing.M) {
	if role := os.Getenv("HERMES_TEST_ROLE"); role != "" {
		os.Exit(runTestRole(role, os.Args[1:]))
	}
	for _, a := range os.Args[1:] {
		// A fuzz worker runs only the fuzz target, which needs no binary:
		// building one per worker would eat the fuzzing time.
		if strings.HasPrefix(a, "-test.fuzzworker") {
			os.Exit(m.Run())
		}
	}
	// A -race binary sleeps a second as it exits (the race runtime's
	// atexit_sleep_ms, 1000 by default, time for other threads to finish a
	// report). Every hermes command a test runs would pay it: a tenth of
	// the suite's time. The hermes processes the tests start inherit this.
	if raceEnabled {
		os.Setenv("GORACE", strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=20"))
	}
	dir, err := os.MkdirTemp("", "hermes-test-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Chmod(dir, 0o755) // tests run it as other users too
	hermesBin = filepath.Join(dir, "hermes")
	args := []string{"build", "-tags", "hermes_testfault", "-o", hermesBin}
	if raceEnabled {
		args = append(args, "-race")
	}
	cmd := exec.Command("go", append(args, ".")...)
	cmd.Env = buildEnv()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building hermes:", err)
		os.Exit(1)
	}
	setParallelDefault()
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testParallel is how many tests marked t.Parallel() run at once unless
// -parallel says otherwise. They are the slow ones that spend their time
// waiting on hermes processes (a drain, a backoff, a systemd booting), not
// computing, so more of them than the machine has cores (go test's default)
// overlap well: on the 2-core machine the suite takes about half the time.
// Tests that time something against an upper bound (a watchdog, an exit
// within exit_flush) stay serial: go test runs them first, alone, before
// any parallel one.
const testParallel = 4

// setParallelDefault raises -test.parallel to testParallel when the command
// line did not set it.
func setParallelDefault() {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set && runtime.GOMAXPROCS(0) < testParallel {
		flag.Set("test.parallel", strconv.Itoa(testParallel))
	}
}

// buildEnv is the environment hermes is built in: static (no cgo), as the
// README builds it, except for -race, which needs cgo.
func buildEnv() []string {
	if raceEnabled {
		return os.Environ()
	}
	return append(os.Environ(), "CGO_ENABLED=0")
}

const syscallTERM = syscall.SIGTERM

// freePort returns a loopback address that was free a moment ago.
func freePort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for a process writing and a test
// reading, which a test can wait on: every write wakes the waiters.
type syncBuffer struct {
	mu      sync.Mutex
	b       bytes.Buffer
	written chan struct{} // closed by the next write
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.written != nil {
		close(s.written)
		s.written = nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitUntil waits until cond holds for the contents, waking at each write
// (never polling), and gives up at the timeout or when stop is closed; it
// reports whether cond held.
func (s *syncBuffer) waitUntil(timeout time.Duration, stop <-chan struct{}, cond func(string) bool) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		s.mu.Lock()
		ok := cond(s.b.String())
		if s.written == nil {
			s.written = make(chan struct{})
		}
		w := s.written
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-w:
		case <-t.C:
			return false
		case <-stop:
			return cond(s.String())
		}
	}
}

// testEnv is a private home for one test's hermes processes: a state dir, a
// policy file and an environment that points nowhere else.
type testEnv struct {
	t        testing.TB
	dir      string
	stateDir string
	policy   string
	addr     string
	env      []string
}

// newTestEnv writes a policy with the given extra TOML (top-level keys and
// tables) on top of a private listen address and state dir.
func newTestEnv(t testing.TB, extra string) *testEnv {
	t.Helper()
	dir := t.TempDir()
	e := &testEnv{t: t, dir: dir, stateDir: filepath.Join(dir, "state"), addr: freePort(t)}
	e.policy = filepath.Join(dir, "hermes.toml")
	e.writePolicy(extra)
	e.env = append(filteredEnv(), "HOME="+dir, "XDG_STATE_HOME="+filepath.Join(dir, "xdg-state"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "xdg-config"), "HERMES_CONFIG="+e.policy,
		// A registry of its own: the test's instances are the only ones
		// its commands see.
		"HERMES_REGISTRY_DIR="+filepath.Join(dir, "registry"))
	// Whatever gateway the pid file proves at the end (one hermes restart
	// started detached, say) ends with the test, whichever way it failed.
	t.Cleanup(e.killGateway)
	return e
}

// killGateway ends whatever gateway the pid file proves, if any.
func (e *testEnv) killGateway() {
	if rec, err := readPidFile(pidFilePath(e.stateDir)); err == nil {
		killProven(rec)
	}
}

// killProven ends the process rec names, only if rec still proves it, and
// waits for its exit; and the rest of its process group (a predecessor
// still draining, started like it by a test's gateway or hermes restart),
// unless that group is the test's own.
func killProven(rec pidRecord) {
	if h, err := openProc(rec.PID, rec.StartTime); err == nil {
		if pgid, err := syscall.Getpgid(rec.PID); err == nil && pgid != syscall.Getpgrp() {
			syscall.Kill(-pgid, syscall.SIGKILL)
		}
		h.signal(syscall.SIGKILL)
		h.wait(5*time.Second, -1)
		h.close()
	}
}

// filteredEnv is os.Environ without what would leak the test's surroundings
// (a systemd or launchd context, a policy) into a hermes process.
func filteredEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "HERMES_CONFIG",
			"HERMES_TEST_FAULT", "INVOCATION_ID", "LISTEN_FDS", "LISTEN_PID", "HERMES_REGISTRY_DIR":
			continue
		}
		out = append(out, kv)
	}
	return out
}

// writePolicy (re)writes the policy file: the test's listen address and
// state dir, a quick drain, then extra. Tables in extra that repeat [drain]
// or [gateway] are not allowed (TOML); use the drainPolicy helper's output.
func (e *testEnv) writePolicy(extra string) {
	e.t.Helper()
	base := fmt.Sprintf("name = \"test\"\n[gateway]\nlisten = %q\nstate_dir = %q\n", e.addr, e.stateDir)
	if err := os.WriteFile(e.policy, []byte(base+extra), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// hermes runs a hermes command to completion and returns its output and
// exit code.
func (e *testEnv) hermes(timeout time.Duration, args ...string) (stdout, stderr string, code int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, hermesBin, args...)
	cmd.Env = e.env
	cmd.Dir = e.dir
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		e.t.Fatalf("hermes %s did not finish within %s\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), timeout, out.String(), errb.String())
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("hermes %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// gatewayProc is a running `hermes serve`.
type gatewayProc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stderr *syncBuffer
	exited chan struct{}
	code   int
	url    string
}

// startGateway starts `hermes serve` with the env's policy and waits until
// /readyz answers 200.
func (e *testEnv) startGateway(extraEnv ...string) *gatewayProc {
	e.t.Helper()
	g := e.spawnGateway(extraEnv...)
	g.waitReady(20 * time.Second)
	return g
}

func (e *testEnv) spawnGateway(extraEnv ...string) *gatewayProc {
	e.t.Helper()
	return e.spawnGatewayBin(hermesBin, extraEnv...)
}

// spawnGatewayBin starts `bin serve` (another build of hermes).
func (e *testEnv) spawnGatewayBin(bin string, extraEnv ...string) *gatewayProc {
	e.t.Helper()
	return e.spawnGatewayCmd([]string{bin, "serve"}, extraEnv...)
}

// spawnGatewayCmd starts argv, a command that runs `hermes serve` (under
// unshare, say).
func (e *testEnv) spawnGatewayCmd(argv []string, extraEnv ...string) *gatewayProc {
	e.t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(append([]string{}, e.env...), extraEnv...)
	cmd.Dir = e.dir
	// Its own process group, which the successors of a handoff join: the
	// test ends them all. Its output goes through a pipe the test reads
	// itself: a successor inherits the write end, and the test's reader
	// runs until the last of them exits, while cmd.Wait returns at the
	// gateway's own exit.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	r, w, err := os.Pipe()
	if err != nil {
		e.t.Fatal(err)
	}
	g := &gatewayProc{t: e.t, cmd: cmd, stderr: &syncBuffer{}, exited: make(chan struct{}), url: "http://" + e.addr}
	cmd.Stderr, cmd.Stdout = w, w
	if err := startRetryingBusy(cmd); err != nil {
		e.t.Fatal(err)
	}
	w.Close()
	copied := make(chan struct{})
	go func() {
		io.Copy(g.stderr, r)
		r.Close()
		close(copied)
	}()
	go func() {
		err := cmd.Wait()
		g.code = 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			g.code = ee.ExitCode()
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				g.code = 128 + int(ws.Signal())
			}
		}
		// Its last words (an exit's error and hint) may still be in the
		// pipe. When nothing of its process group is left to hold the
		// pipe's write end, read them to the end before telling the
		// test it exited; a successor it started keeps the pipe open,
		// and is not waited for.
		if syscall.Kill(-cmd.Process.Pid, 0) == syscall.ESRCH {
			select {
			case <-copied:
			case <-time.After(10 * time.Second):
			}
		}
		close(g.exited)
	}()
	e.t.Cleanup(func() {
		select {
		case <-g.exited:
		default:
			cmd.Process.Kill()
			<-g.exited
		}
		// Successors it started (a handoff) are in its process group.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if e.t.Failed() {
			e.t.Logf("gateway pid %d log:\n%s", cmd.Process.Pid, g.stderr.String())
		}
	})
	return g
}

func (g *gatewayProc) pid() int { return g.cmd.Process.Pid }

// startRetryingBusy starts cmd, trying again while exec fails with
// ETXTBSY: a binary a test has just copied stays "busy" while a process
// another test forks at that moment still holds the copy's descriptor,
// until that process execs (golang.org/issue/22315). Each try is an
// event: the other process's exec ends it.
func startRetryingBusy(cmd *exec.Cmd) error {
	for try := 0; ; try++ {
		err := cmd.Start()
		if !errors.Is(err, syscall.ETXTBSY) || try == 50 {
			return err
		}
		time.Sleep(10 * time.Millisecond)
		// A Cmd starts once: the next try is a copy of it.
		next := exec.Command(cmd.Path, cmd.Args[1:]...)
		next.Env, next.Dir, next.SysProcAttr = cmd.Env, cmd.Dir, cmd.SysProcAttr
		next.Stdin, next.Stdout, next.Stderr, next.ExtraFiles = cmd.Stdin, cmd.Stdout, cmd.Stderr, cmd.ExtraFiles
		*cmd = *next
	}
}

// waitReady waits for the gateway's own "ready" line, then checks that
// /readyz agrees.
func (g *gatewayProc) waitReady(timeout time.Duration) {
	g.t.Helper()
	ready := fmt.Sprintf("hermes[%d] ready", g.pid())
	if !g.stderr.waitUntil(timeout, g.exited, func(s string) bool { return strings.Contains(s, ready) }) {
		select {
		case <-g.exited:
			g.t.Fatalf("gateway exited with %d before it was ready:\n%s", g.code, g.stderr.String())
		default:
		}
		g.t.Fatalf("gateway not ready within %s:\n%s", timeout, g.stderr.String())
	}
	if code, body := httpGet(g.t, g.url+"/readyz"); code != 200 {
		g.t.Fatalf("the gateway logged ready, but /readyz = %d %q:\n%s", code, body, g.stderr.String())
	}
}

func (g *gatewayProc) signal(sig syscall.Signal) {
	g.t.Helper()
	if err := g.cmd.Process.Signal(sig); err != nil {
		g.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits for the gateway to exit and returns its exit code.
func (g *gatewayProc) wait(timeout time.Duration) int {
	g.t.Helper()
	select {
	case <-g.exited:
		return g.code
	case <-time.After(timeout):
		g.t.Fatalf("gateway did not exit within %s:\n%s", timeout, g.stderr.String())
		return -1
	}
}

// waitLog waits until the gateway's log contains s.
func (g *gatewayProc) waitLog(s string, timeout time.Duration) {
	g.t.Helper()
	if !g.stderr.waitUntil(timeout, g.exited, func(log string) bool { return strings.Contains(log, s) }) {
		g.t.Fatalf("gateway log has no %q after %s (exited: %v):\n%s", s, timeout, g.hasExited(), g.stderr.String())
	}
}

// waitLogCount waits until the gateway's log contains s at least n times.
func (g *gatewayProc) waitLogCount(s string, n int, timeout time.Duration) {
	g.t.Helper()
	if !g.stderr.waitUntil(timeout, g.exited, func(log string) bool { return strings.Count(log, s) >= n }) {
		g.t.Fatalf("gateway log has fewer than %d %q after %s:\n%s", n, s, timeout, g.stderr.String())
	}
}

func (g *gatewayProc) hasExited() bool {
	select {
	case <-g.exited:
		return true
	default:
		return false
	}
}

// stream is a client's SSE stream read line by line in the background.
type stream struct {
	resp   *http.Response
	mu     sync.Mutex
	lines  []string
	more   chan struct{} // closed by the next line
	done   chan struct{}
	err    error
	cancel context.CancelFunc
}

// startStream posts a streaming chat completion echoing n words.
func startStream(t *testing.T, url string, words int) *stream {
	t.Helper()
	var msg []string
	for i := 0; i < words; i++ {
		msg = append(msg, fmt.Sprintf("w%d", i))
	}
	body := fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":%q}]}`, strings.Join(msg, " "))
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		cancel()
		t.Fatalf("starting stream: %v", err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		cancel()
		t.Fatalf("stream: status %d: %s", resp.StatusCode, b)
	}
	s := &stream{resp: resp, done: make(chan struct{}), cancel: cancel}
	go func() {
		defer close(s.done)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.mu.Lock()
			s.lines = append(s.lines, sc.Text())
			if s.more != nil {
				close(s.more)
				s.more = nil
			}
			s.mu.Unlock()
		}
		s.err = sc.Err()
		resp.Body.Close()
	}()
	t.Cleanup(cancel)
	return s
}

func (s *stream) text() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// waitDone waits for the stream to end and returns everything it carried.
func (s *stream) waitDone(t *testing.T, timeout time.Duration) string {
	t.Helper()
	select {
	case <-s.done:
		return s.text()
	case <-time.After(timeout):
		t.Fatalf("stream did not end within %s; so far:\n%s", timeout, s.text())
		return ""
	}
}

// waitLines waits until the stream has carried at least n lines, waking
// at each line.
func (s *stream) waitLines(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	tm := time.NewTimer(timeout)
	defer tm.Stop()
	for {
		s.mu.Lock()
		got := len(s.lines)
		if s.more == nil {
			s.more = make(chan struct{})
		}
		more := s.more
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-more:
		case <-s.done:
			if strings.Count(s.text(), "\n")+1 < n {
				t.Fatalf("stream ended after fewer than %d lines:\n%s", n, s.text())
			}
			return
		case <-tm.C:
			t.Fatalf("stream carried fewer than %d lines within %s:\n%s", n, timeout, s.text())
		}
	}
}

// waitFrozen waits until the gateway at url calls its own loop frozen:
// /healthz answers 503 once the heartbeat is older than 3 ticks. A gateway
// whose loop froze a moment ago is not frozen yet, by design.
func waitFrozen(t testing.TB, url string, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := freshClient.Get(url + "/healthz")
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusServiceUnavailable {
				return string(b)
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s/healthz never said frozen within %s (last: %v)", url, timeout, err)
		}
		<-tick.C
	}
}

func copyFile(t *testing.T, src, dst string, perm os.FileMode) {
	t.Helper()
	in, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, perm)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// freshClient opens a new connection for every request, as a new client
// would: a pooled keep-alive connection may still lead to a gateway that
// handed off (which answers it, rightly, then closes it).
var freshClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func httpGet(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := freshClient.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// fakeNotifySocket is a datagram socket standing in for systemd's
// NOTIFY_SOCKET; it returns the socket path and the messages received.
func fakeNotifySocket(t testing.TB) (string, <-chan string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sdn") // short: a socket path has ~100 bytes
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	msgs := make(chan string, 64)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	return sock, msgs
}

// wantNotify waits for a message that contains every one of want, and
// returns it.
func wantNotify(t testing.TB, msgs <-chan string, want ...string) string {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case m := <-msgs:
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(m, w)
			}
			if ok {
				return m
			}
		case <-deadline:
			t.Fatalf("no sd_notify message with %q", want)
			return ""
		}
	}
}

// waitUntil polls cond until it holds, or fails the test after timeout.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue is the value of one sample in a /metrics text, or -1.
func metricValue(text, sample string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}
