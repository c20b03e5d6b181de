package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

const handoffPolicy = `
[echo]
word_delay = "5ms"
[drain]
timeout = "20s"
grace = "1s"
[restart]
mode = "handoff"
ready_timeout = "10s"
`

// loadClient drives constant mixed load at a gateway: workers with their
// own keep-alive pools, each looping over a stream of 30 words (checked
// whole, to the last word and [DONE]) and a short non-streaming request.
// Every request that is not answered whole is a failure, a 503 included.
type loadClient struct {
	ok       atomic.Int64
	mu       sync.Mutex
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
	progress chan struct{}
}

func startLoad(t *testing.T, url string, workers int) *loadClient {
	l := &loadClient{stop: make(chan struct{}), progress: make(chan struct{}, 1)}
	words := make([]string, 30)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	streamBody := fmt.Sprintf(`{"stream":true,"messages":[{"role":"user","content":%q}]}`, strings.Join(words, " "))
	shortBody := `{"messages":[{"role":"user","content":"short answer"}]}`
	for i := 0; i < workers; i++ {
		l.wg.Add(1)
		go func(i int) {
			defer l.wg.Done()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2}, Timeout: 30 * time.Second}
			for n := 0; ; n++ {
				select {
				case <-l.stop:
					return
				default:
				}
				stream := (i+n)%2 == 0
				body := shortBody
				if stream {
					body = streamBody
				}
				resp, err := client.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
				if err != nil {
					l.fail("worker %d: %v", i, err)
					continue
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case err != nil:
					l.fail("worker %d: reading: %v (%d bytes)", i, err, len(b))
				case resp.StatusCode != 200:
					l.fail("worker %d: status %d: %s", i, resp.StatusCode, b)
				case stream && (!strings.Contains(string(b), ` w29"`) || !strings.HasSuffix(string(b), "data: [DONE]\n\n")):
					l.fail("worker %d: broken stream: %.200q", i, b)
				case !stream && !strings.Contains(string(b), `"content":"short answer"`):
					l.fail("worker %d: bad answer: %.200q", i, b)
				default:
					l.ok.Add(1)
					select {
					case l.progress <- struct{}{}:
					default:
					}
				}
			}
		}(i)
	}
	t.Cleanup(l.end)
	return l
}

func (l *loadClient) fail(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.failures = append(l.failures, fmt.Sprintf(format, args...))
}

// waitOK waits until n more requests have succeeded.
func (l *loadClient) waitOK(t *testing.T, n int64) {
	t.Helper()
	want := l.ok.Load() + n
	deadline := time.After(30 * time.Second)
	for l.ok.Load() < want {
		select {
		case <-l.progress:
		case <-deadline:
			t.Fatalf("the load made no progress: %d ok, %d failures: %v", l.ok.Load(), len(l.failures), l.failures)
		}
	}
}

func (l *loadClient) end() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}

// TestHandoffUnderLoad: five handoffs (hermes restart, restart.mode
// handoff) while workers keep streams and short requests going on
// keep-alive connections: not one request fails, is refused or is cut.
func TestHandoffUnderLoad(t *testing.T) {
	e := newTestEnv(t, handoffPolicy)
	g := e.startGateway()
	load := startLoad(t, g.url, 6)
	load.waitOK(t, 20)
	pids := map[int]bool{g.pid(): true}
	for i := 0; i < 5; i++ {
		out, errOut, code := e.hermes(60*time.Second, "restart")
		if code != 0 || !strings.Contains(out, "handed off: pid") {
			t.Fatalf("restart %d = %d:\n%s%s", i+1, code, out, errOut)
		}
		rec, _ := readPidFile(pidFilePath(e.stateDir))
		if pids[rec.PID] {
			t.Fatalf("restart %d: the pid file still names pid %d", i+1, rec.PID)
		}
		pids[rec.PID] = true
		load.waitOK(t, 20)
	}
	load.end()
	t.Logf("%d requests answered whole across 5 handoffs", load.ok.Load())
	if len(load.failures) > 0 {
		t.Errorf("%d requests failed across the handoffs:\n%s", len(load.failures), strings.Join(load.failures, "\n"))
	}
	if code := g.wait(30 * time.Second); code != exitOK {
		t.Errorf("the first gateway exited %d, want 0 (handed off)", code)
	}
	log := g.stderr.String()
	if !strings.Contains(log, fmt.Sprintf("hermes[%d] exit code=0 reason=\"handed off to pid", g.pid())) {
		t.Errorf("the first gateway's exit reason:\n%s", log)
	}
	if strings.Contains(log, "session cut") {
		t.Errorf("a handoff cut a session:\n%s", log)
	}
	e.gatewayFromPidFile()
}

// TestHandoffByUSR2 keeps a stream in flight across a handoff asked for by
// signal; the successor then shows the predecessor draining, until it is
// gone.
func TestHandoffByUSR2(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, strings.Replace(handoffPolicy, `word_delay = "5ms"`, `word_delay = "30ms"`, 1))
	g := e.startGateway()
	s := startStream(t, g.url, 60) // 1.8 s
	s.waitLines(t, 4, 5*time.Second)
	g.signal(syscall.SIGUSR2)
	g.waitLog("handoff done", 10*time.Second)
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil || rec.PID == g.pid() {
		t.Fatalf("pid file after the handoff: %+v %v", rec, err)
	}
	st := waitStatusAt(t, g.url, nil, 10*time.Second, "the successor showing its predecessor",
		func(st gatewayStatus) bool {
			return st.PID == rec.PID && st.Predecessor != nil && st.Predecessor.Sessions == 1
		})
	if st.Predecessor.PID != g.pid() || st.Predecessor.DrainLeftMS <= 0 {
		t.Errorf("predecessor in the successor's status = %+v", st.Predecessor)
	}
	if out := s.waitDone(t, 10*time.Second); !strings.Contains(out, "data: [DONE]") || strings.Contains(out, "event: error") {
		t.Errorf("the stream did not survive the handoff:\n%s", out)
	}
	if code := g.wait(10 * time.Second); code != exitOK {
		t.Errorf("old gateway exit %d", code)
	}
	waitStatusAt(t, g.url, nil, 10*time.Second, "the predecessor gone", func(st gatewayStatus) bool { return st.Predecessor == nil })
	out, _, _ := e.hermes(20*time.Second, "events", "--since", "1m")
	for _, want := range []string{"handoff requested", "handoff successor ready", "after handoff requested of", "handoff done", "predecessor exited"} {
		if !strings.Contains(out, want) {
			t.Errorf("hermes events lacks %q:\n%s", want, out)
		}
	}
	e.gatewayFromPidFile()
}

// TestHandoffSuccessorFails: a successor that never becomes ready, or dies
// first, is killed and the old gateway serves on; hermes restart says so,
// exits 1 and prints the log's tail; a handoff_failed alert says why.
func TestHandoffSuccessorFails(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	for _, tc := range []struct{ fault, want string }{
		{"never-ready", "was not ready within restart.ready_timeout (1s)"},
		{"exit-after-ready", "exited with code 1 before it took over"},
	} {
		t.Run(tc.fault, func(t *testing.T) {
			hook := newFakeWebhook(t)
			e := newTestEnv(t, strings.Replace(handoffPolicy, `ready_timeout = "10s"`, `ready_timeout = "1s"`, 1)+
				fmt.Sprintf("[alerts]\nwebhook_url = %q\n", hook.srv.URL+"/hook"))
			g := e.startGateway("HERMES_TEST_SUCCESSOR_FAULT=" + tc.fault)
			out, errOut, code := e.hermes(60*time.Second, "restart")
			if code != exitFailure || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "serves on") {
				t.Errorf("restart with a failing successor = %d:\n%s%s", code, out, errOut)
			}
			if !strings.Contains(errOut, "last lines of the log") && !strings.Contains(errOut, "hint:") {
				t.Errorf("no log tail or hint:\n%s", errOut)
			}
			g.waitLog("handoff failed", 5*time.Second)
			a := hook.waitAlert(t, "handoff_failed", "", 10*time.Second)
			if !strings.Contains(a.Summary, tc.want) || !strings.Contains(a.Summary, "the old gateway serves on") || a.PID != g.pid() {
				t.Errorf("handoff_failed alert: %+v, want the reason %q from pid %d", a, tc.want, g.pid())
			}
			// The old gateway is the gateway, untouched.
			rec, err := readPidFile(pidFilePath(e.stateDir))
			if err != nil || rec.PID != g.pid() {
				t.Errorf("pid file after a failed handoff names %d (%v), want the old gateway %d", rec.PID, err, g.pid())
			}
			if code, _ := httpGet(t, g.url+"/readyz"); code != 200 {
				t.Errorf("readyz after a failed handoff = %d", code)
			}
			if s := startStream(t, g.url, 3); !strings.Contains(s.waitDone(t, 5*time.Second), "[DONE]") {
				t.Error("the old gateway does not serve after a failed handoff")
			}
			if ans, err := controlRequest(controlPath(e.stateDir), "ping", 2*time.Second); err != nil || !strings.Contains(ans, fmt.Sprint(g.pid())) {
				t.Errorf("control socket after a failed handoff: %q %v", ans, err)
			}
			// And no successor is left behind.
			m := handoffSuccessorRe.FindStringSubmatch(g.stderr.String())
			if m == nil {
				t.Fatalf("no successor started:\n%s", g.stderr.String())
			}
			var pid int
			fmt.Sscan(m[1], &pid)
			waitGone(t, pid)
			if g.hasExited() {
				t.Errorf("the old gateway exited: %d", g.code)
			}
		})
	}
}

// waitGone waits until pid no longer runs (a zombie is gone too: it runs
// nothing).
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("pid %d is still running", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHandoffRefusedWhileOneRuns: a handoff asked for while one runs is
// refused and the refusal says so, on the control socket and for USR2.
func TestHandoffRefusedWhileOneRuns(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, strings.Replace(handoffPolicy, `ready_timeout = "10s"`, `ready_timeout = "3s"`, 1))
	g := e.startGateway("HERMES_TEST_SUCCESSOR_FAULT=never-ready")
	first := make(chan error, 1)
	go func() {
		_, err := controlRequest(controlPath(e.stateDir), "handoff test-first", 20*time.Second)
		first <- err
	}()
	g.waitLog("handoff successor started", 5*time.Second)
	_, err := controlRequest(controlPath(e.stateDir), "handoff test-second", 5*time.Second)
	if err == nil || !strings.Contains(err.Error(), "refused: a handoff is already running") {
		t.Errorf("a second handoff during one: %v, want it refused", err)
	}
	g.signal(syscall.SIGUSR2)
	g.waitLog("handoff refused level=warn by=USR2", 5*time.Second)
	if err := <-first; err == nil || !strings.Contains(err.Error(), "failed:") {
		t.Errorf("the first handoff (never-ready successor): %v, want it failed", err)
	}
}

// TestHandoffBinaryUpgrade: a new binary moved over the path the gateway
// was started from is what the successor runs: `mv new hermes && hermes
// restart` upgrades with no refused request, and /status shows the new
// version.
func TestHandoffBinaryUpgrade(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	if testing.Short() {
		t.Skip("builds a second binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "hermes")
	copyFile(t, hermesBin, bin, 0o755)
	next := filepath.Join(dir, "hermes.next")
	args := []string{"build", "-tags", "hermes_testfault", "-ldflags", "-X main.version=9.9.9-upgraded", "-o", next}
	if raceEnabled {
		args = append(args, "-race")
	}
	build := exec.Command("go", append(args, ".")...)
	build.Env = buildEnv()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building the upgrade: %v\n%s", err, out)
	}
	e := newTestEnv(t, handoffPolicy)
	g := e.spawnGatewayBin(bin)
	g.waitReady(20 * time.Second)
	load := startLoad(t, g.url, 4)
	load.waitOK(t, 10)
	if err := os.Rename(next, bin); err != nil { // cp onto a running binary fails with ETXTBSY
		t.Fatal(err)
	}
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 || !strings.Contains(out, "handed off") {
		t.Fatalf("restart after the upgrade = %d:\n%s%s", code, out, errOut)
	}
	load.waitOK(t, 10)
	load.end()
	if len(load.failures) > 0 {
		t.Errorf("requests failed across the upgrade:\n%s", strings.Join(load.failures, "\n"))
	}
	_, body := httpGet(t, g.url+"/status")
	var st gatewayStatus
	json.Unmarshal([]byte(body), &st)
	if st.Version != "9.9.9-upgraded" || st.PID == g.pid() {
		t.Errorf("after the upgrade /status = %s, want version 9.9.9-upgraded from a new pid", body)
	}
	e.gatewayFromPidFile()
}

var handoffSuccessorRe = regexp.MustCompile(`handoff successor started successor=(\d+)`)

// TestHandoffFailback: a successor that dies right after it took over
// leaves no gap for long: the old gateway, which kept a descriptor of the
// socket and the locks, serves again and takes back its pid file and
// control socket.
func TestHandoffFailback(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, handoffPolicy)
	g := e.startGateway("HERMES_TEST_SUCCESSOR_FAULT=crash-after-takeover")
	e.hermes(60*time.Second, "restart") // the successor says it serves, then crashes
	g.waitLog("handoff failback", 10*time.Second)
	if g.hasExited() {
		t.Fatalf("the old gateway exited: %d\n%s", g.code, g.stderr.String())
	}
	st := waitStatusAt(t, g.url, nil, 10*time.Second, "the old gateway serving again", func(st gatewayStatus) bool {
		return st.PID == g.pid() && st.State == stateServing && !st.HandedOff
	})
	if s := startStream(t, g.url, 5); !strings.Contains(s.waitDone(t, 5*time.Second), "[DONE]") {
		t.Errorf("no stream after the failback (status %+v)", st)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec, err := readPidFile(pidFilePath(e.stateDir))
		ans, perr := controlRequest(controlPath(e.stateDir), "ping", time.Second)
		if err == nil && rec.PID == g.pid() && perr == nil && strings.Contains(ans, fmt.Sprint(g.pid())) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid file (%+v, %v) and control socket (%q, %v) not taken back", rec, err, ans, perr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
