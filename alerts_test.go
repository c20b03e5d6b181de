package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Alerts, end to end: a real gateway posts to a fakeWebhook.

// fakeWebhook records every alert posted to it, with when it came. While
// hang is set it takes the request and never answers (a webhook that is
// down in the worst way).
type fakeWebhook struct {
	srv  *httptest.Server
	mu   sync.Mutex
	got  []alert
	raw  []string
	at   []time.Time
	hang chan struct{} // closed: answer again
	more chan struct{}
}

func newFakeWebhook(t *testing.T) *fakeWebhook {
	f := &fakeWebhook{more: make(chan struct{}, 64)}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		hang := f.hang
		f.mu.Unlock()
		if hang != nil {
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		b, _ := io.ReadAll(r.Body)
		var a alert
		json.Unmarshal(b, &a)
		f.mu.Lock()
		f.got, f.raw, f.at = append(f.got, a), append(f.raw, string(b)), append(f.at, time.Now())
		f.mu.Unlock()
		f.more <- struct{}{}
	}))
	t.Cleanup(func() {
		f.answer()
		f.srv.Close()
	})
	return f
}

func (f *fakeWebhook) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hang = make(chan struct{})
}

func (f *fakeWebhook) answer() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hang != nil {
		close(f.hang)
		f.hang = nil
	}
}

func (f *fakeWebhook) alerts() ([]alert, []string, []time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]alert(nil), f.got...), append([]string(nil), f.raw...), append([]time.Time(nil), f.at...)
}

// waitAlert waits for an alert of event (and state, if not "").
func (f *fakeWebhook) waitAlert(t *testing.T, event, state string, timeout time.Duration) alert {
	t.Helper()
	deadline := time.After(timeout)
	for {
		got, _, _ := f.alerts()
		for _, a := range got {
			if a.Event == event && (state == "" || a.State == state) {
				return a
			}
		}
		select {
		case <-f.more:
		case <-deadline:
			t.Fatalf("no %s %s alert within %s; got %+v", event, state, timeout, got)
		}
	}
}

// TestWatchdogAlert: a frozen loop delivers one watchdog alert, naming the
// frozen function, before the process exits 70; the journal says it went.
func TestWatchdogAlert(t *testing.T) {
	hook := newFakeWebhook(t)
	e := newTestEnv(t, fmt.Sprintf("[watchdog]\ntimeout = \"2s\"\nsignal_timeout = \"0s\"\n[alerts]\nwebhook_url = %q\n", hook.srv.URL+"/hook"))
	g := e.startGateway(frozen)
	if code := g.wait(20 * time.Second); code != exitWatchdog {
		t.Fatalf("exit %d, want 70:\n%s", code, g.stderr.String())
	}
	exited := time.Now()
	got, _, at := hook.alerts()
	if len(got) != 1 || got[0].Event != "watchdog" || !strings.Contains(got[0].Summary, "main.freezeLoopForTest") ||
		got[0].PID != g.pid() || got[0].Instance != "test" || got[0].Host == "" {
		t.Fatalf("alerts: %+v, want one watchdog alert naming main.freezeLoopForTest", got)
	}
	if !at[0].Before(exited) {
		t.Errorf("the alert came after the exit")
	}
	if fmt.Sprint(got[0].Detail["stuck_in"]) != "main.freezeLoopForTest" {
		t.Errorf("detail: %+v", got[0].Detail)
	}
	if !strings.Contains(readFile(t, journalPath(e.stateDir)), `"event":"alert sent"`) {
		t.Errorf("the journal does not say the alert was sent")
	}
}

// TestAlertWebhookDown: with the webhook taking requests and never
// answering, a frozen gateway still exits within journal.exit_flush (1s
// here) of the watchdog firing; the alert it could not send waits in
// alerts-pending.jsonl and the next gateway sends it, marked late.
func TestAlertWebhookDown(t *testing.T) {
	hook := newFakeWebhook(t)
	hook.down()
	e := newTestEnv(t, fmt.Sprintf("[watchdog]\ntimeout = \"2s\"\nsignal_timeout = \"0s\"\n[journal]\nexit_flush = \"1s\"\n[alerts]\nwebhook_url = %q\n", hook.srv.URL))
	g := e.startGateway(frozen)
	g.waitLog("watchdog fired", 20*time.Second)
	fired := time.Now()
	if code := g.wait(20 * time.Second); code != exitWatchdog {
		t.Fatalf("exit %d, want 70", code)
	}
	// The bound is exit_flush for the stack file and exit_flush for the
	// exit (watchdog.go); the alert adds nothing to it.
	took := time.Since(fired)
	if took > 2*time.Second+time.Second {
		t.Errorf("the exit took %s after the watchdog fired, past the bound of 2 x exit_flush (2s)", took)
	}
	t.Logf("webhook down: exit %s after the watchdog fired (bound: exit_flush 1s for the exit, 0.75s of it for the alerts)", took.Round(time.Millisecond))
	pending := readFile(t, pendingAlertsPath(e.stateDir))
	if !strings.Contains(pending, `"event":"watchdog"`) {
		t.Fatalf("alerts-pending.jsonl: %q", pending)
	}
	hook.answer() // (the request it hung on may now be answered too: delivery is at least once)
	e.startGateway()
	deadline := time.After(20 * time.Second)
	for late := false; !late; {
		got, _, _ := hook.alerts()
		for _, a := range got {
			if a.Event == "watchdog" && a.Late && a.PID == g.pid() {
				late = true
			}
		}
		if !late {
			select {
			case <-hook.more:
			case <-deadline:
				t.Fatalf("no late watchdog alert from pid %d: %+v", g.pid(), got)
			}
		}
	}
	if _, err := os.Stat(pendingAlertsPath(e.stateDir)); !os.IsNotExist(err) {
		t.Errorf("alerts-pending.jsonl is still there")
	}
}

// TestAlertsCarryNoSecret: an upstream that cannot be reached is an
// incident (upstream_down_for = 0s here); its alert, and the journal's
// record of it, carry neither the upstream key, nor the token, nor the
// webhook's own secret path.
func TestAlertsCarryNoSecret(t *testing.T) {
	hook := newFakeWebhook(t)
	secretPath := "/hook/Xq7-webhook-secret-9f2"
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n[lock]\ntoken_env = \"HERMES_TEST_LOCK_TOKEN\"\n[alerts]\nwebhook_url_env = \"HERMES_TEST_HOOK\"\nupstream_down_for = \"0s\"\n", "http://127.0.0.1:1"))
	key, token := "sk-test-upstream-key-5b9c1e", "987654:bot-token-secret-77aa"
	e.env = append(e.env, "HERMES_UPSTREAM_KEY="+key, "HERMES_TEST_LOCK_TOKEN="+token, "HERMES_TEST_HOOK="+hook.srv.URL+secretPath)
	g := e.startGateway()
	resp, err := http.Post("http://"+e.addr+"/v1/chat/completions", "application/json", strings.NewReader(`{"messages":[]}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
	}
	a := hook.waitAlert(t, "upstream_unreachable", "firing", 20*time.Second)
	if !strings.Contains(a.Summary, "has not answered") {
		t.Errorf("summary: %q", a.Summary)
	}
	g.waitLog("alert sent", 10*time.Second)
	_, raw, _ := hook.alerts()
	all := strings.Join(raw, "\n") + g.stderr.String() + readFile(t, journalPath(e.stateDir))
	for _, s := range []string{key, token, "webhook-secret"} {
		if strings.Contains(all, s) {
			t.Errorf("%q appears in an alert, the log or the journal", s)
		}
	}
}

// TestMemoryGuard: a gateway that holds 64 MiB more than it needs stays
// above limits.max_rss for limits.max_rss_window (1s): it hands over to a
// fresh successor (which holds nothing extra), a stream in flight finishes
// whole, and the operator gets an alert.
func TestMemoryGuard(t *testing.T) {
	hook := newFakeWebhook(t)
	e := newTestEnv(t, "")
	base := e.startGateway()
	rss := processRSS(t, base.pid())
	base.signal(syscall.SIGTERM)
	base.wait(20 * time.Second)
	limit := (rss + 32<<20) >> 20 // MiB: the baseline plus half the ballast
	e.writePolicy(fmt.Sprintf("[drain]\ntimeout = \"20s\"\ngrace = \"1s\"\n[limits]\nmax_rss = \"%dMiB\"\nmax_rss_window = \"1s\"\n[alerts]\nwebhook_url = %q\n", limit, hook.srv.URL))
	g := e.startGateway("HERMES_TEST_FAULT=hold-64mib")
	s := startStream(t, "http://"+e.addr, 60) // 3s at the echo's 50ms a word
	g.waitLog("memory limit", 20*time.Second)
	g.waitLog("handoff done", 30*time.Second)
	out := s.waitDone(t, 30*time.Second)
	if !strings.Contains(out, "data: [DONE]") || strings.Contains(out, "event: error") {
		t.Errorf("the stream was cut:\n%s", out)
	}
	a := hook.waitAlert(t, "memory_limit", "", 20*time.Second)
	if !strings.Contains(a.Summary, "limits.max_rss") {
		t.Errorf("alert: %+v", a)
	}
	if code := g.wait(30 * time.Second); code != exitOK && code != exitRestart {
		t.Errorf("the old gateway exited %d", code)
	}
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil || rec.PID == g.pid() {
		t.Fatalf("no successor serves: %+v %v", rec, err)
	}
	if st := statusJSONOf(t, e); st.Verdict != verdictServing || st.PID != rec.PID {
		t.Errorf("after the guard's restart: %+v", st)
	}
}

// processRSS reads a process's resident set size from /proc.
func processRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/statm", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	f := bytes.Fields(b)
	pages, _ := strconv.ParseInt(string(f[1]), 10, 64)
	return pages * int64(os.Getpagesize())
}

// TestCrashLoopAlertOncePerEpisode: a crash loop that spans several
// processes alerts once when it begins and once when it ends (a gateway
// that stayed up for crash_loop.window), not once per start.
func TestCrashLoopAlertOncePerEpisode(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	hook := newFakeWebhook(t)
	e := newTestEnv(t, fmt.Sprintf("[crash_loop]\nstarts = 1\nwindow = \"4s\"\nbase_delay = \"1s\"\nmax_delay = \"1s\"\n[alerts]\nwebhook_url = %q\n", hook.srv.URL))
	plain := e.env
	e.env = append(append([]string(nil), plain...), crashing)
	for i := 0; i < 3; i++ {
		if _, stderr, code := e.hermes(20*time.Second, "serve"); code != exitFailure {
			t.Fatalf("start %d: exit %d\n%s", i+1, code, stderr)
		}
	}
	e.env = plain
	hook.waitAlert(t, "crash_loop", "firing", 20*time.Second)
	g := e.startGateway() // no fault: it stays up
	hook.waitAlert(t, "crash_loop", "resolved", 30*time.Second)
	got, _, _ := hook.alerts()
	n := map[string]int{}
	for _, a := range got {
		n[a.Event+" "+a.State]++
	}
	if n["crash_loop firing"] != 1 || n["crash_loop resolved"] != 1 {
		t.Errorf("alerts: %v, want one firing and one resolved", n)
	}
	_ = g
}

// TestIncidentAlerts: a token held by another gateway (exit 78), a
// gateway found dead without an exit (SIGKILL), and a hermes restart that
// cannot bring the gateway back (its port is taken) each alert once.
func TestIncidentAlerts(t *testing.T) {
	hook := newFakeWebhook(t)
	policy := fmt.Sprintf("listen_timeout = \"0s\"\n[lock]\ntoken_env = \"HERMES_TEST_LOCK_TOKEN\"\n[alerts]\nwebhook_url = %q\n", hook.srv.URL)
	e := newTestEnv(t, policy)
	e.env = append(e.env, "HERMES_TEST_LOCK_TOKEN=incident-token-123456")
	g := e.startGateway()

	// The same token in another instance.
	e2 := newTestEnv(t, policy)
	e2.env = append(e2.env, "HERMES_TEST_LOCK_TOKEN=incident-token-123456")
	if code := e2.spawnGateway().wait(20 * time.Second); code != exitConfig {
		t.Fatalf("second gateway: exit %d, want 78", code)
	}
	a := hook.waitAlert(t, "lock_conflict", "", 20*time.Second)
	if !strings.Contains(a.Summary, strconv.Itoa(g.pid())) {
		t.Errorf("lock_conflict does not name the holder: %+v", a)
	}

	// SIGKILL, then a start: the unclean death is found and alerted.
	g.cmd.Process.Kill()
	g.wait(10 * time.Second)
	g2 := e.startGateway()
	a = hook.waitAlert(t, "unclean_exit", "", 20*time.Second)
	if !strings.Contains(a.Summary, strconv.Itoa(g.pid())) {
		t.Errorf("unclean_exit does not name the dead pid: %+v", a)
	}

	// Its port taken while it is down: hermes start cannot bring it back.
	g2.signal(syscall.SIGTERM)
	g2.wait(20 * time.Second)
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if _, _, code := e.hermes(60*time.Second, "restart"); code == exitOK {
		t.Fatal("restart succeeded on a taken port")
	}
	a = hook.waitAlert(t, "restart_failed", "", 20*time.Second)
	if !strings.Contains(a.Summary, "could not bring the gateway back") {
		t.Errorf("restart_failed: %+v", a)
	}
	got, raw, _ := hook.alerts()
	n := map[string]int{}
	for _, a := range got {
		n[a.Event]++
	}
	if n["lock_conflict"] != 1 || n["unclean_exit"] != 1 || n["restart_failed"] != 1 {
		t.Errorf("alerts: %v, want one of each", n)
	}
	if strings.Contains(strings.Join(raw, ""), "incident-token-123456") {
		t.Errorf("an alert carries the token")
	}
}
