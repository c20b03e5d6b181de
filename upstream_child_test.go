package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runFakeAgent is fakeAgent, the user's own agent process as a supervised
// upstream would run it (the test binary with HERMES_TEST_ROLE=fake-agent):
// it says so on its stdout, answers /health, and answers every chat
// completion with one event naming its pid. -exit-at-once makes it a
// process that fails at start.
func runFakeAgent(args []string) error {
	fs := roleFlags("fake-agent", "-addr HOST:PORT [-exit-at-once]")
	addr := fs.String("addr", "127.0.0.1:0", "loopback `address` to listen on")
	exitAtOnce := fs.Bool("exit-at-once", false, "exit 3 at once, as a process that cannot start")
	if err := parseRoleFlags(fs, args, false); err != nil {
		return err
	}
	if *exitAtOnce {
		fmt.Println("fake agent cannot start")
		os.Exit(3)
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	pid := os.Getpid()
	fmt.Printf("fake agent %d listening on %s\n", pid, ln.Addr())
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			w.Write([]byte("ok"))
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: {\"from\":\"agent %d\"}\n\ndata: [DONE]\n\n", pid)
	})}
	go srv.Serve(ln)
	<-untilSignal()
	return nil
}

// agentPolicy is a gateway whose first upstream is a supervised fakeAgent
// on addr, and whose second (when fallback is not "") is fallback.
func agentPolicy(t *testing.T, addr, fallback string, agentArgs ...string) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := []string{strconv.Quote(self), `"-addr"`, strconv.Quote(addr)}
	for _, a := range agentArgs {
		cmd = append(cmd, strconv.Quote(a))
	}
	s := fmt.Sprintf("upstream_header_timeout = \"2s\"\n\n[supervise]\nhealth_every = \"200ms\"\nfrozen_after = 3\nstop_timeout = \"500ms\"\nready_timeout = \"10s\"\n"+
		"\n[[upstream]]\nname = \"agent\"\nurl = \"http://%s\"\nhealth = \"/health\"\ncommand = [%s]\nenv = [\"HERMES_TEST_ROLE=fake-agent\"]\n",
		addr, strings.Join(cmd, ", "))
	if fallback != "" {
		s += fmt.Sprintf("\n[[upstream]]\nname = \"fallback\"\nurl = %q\n", fallback)
	}
	// A gateway the test's cleanup kills (SIGKILL) cannot stop its agent:
	// the test ends the agents it caused, by the address only they use.
	t.Cleanup(func() { killProcesses(t, "-addr\x00"+addr) })
	return s
}

// killProcesses ends the processes whose command line holds s.
func killProcesses(t *testing.T, s string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(b), s) {
			if pid, err := strconv.Atoi(e.Name()); err == nil {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// agentPID is the supervised upstream's pid as /status says, 0 for none.
func agentPID(t *testing.T, url string) int {
	_, body := httpGet(t, url+"/status")
	m := regexp.MustCompile(`"name":"agent","state":"in","pid":(\d+)`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	pid, _ := strconv.Atoi(m[1])
	return pid
}

// TestSupervisedUpstreamFrozenIsReplaced: the user's agent, run by hermes,
// answers once ready; its output is in hermes's log under its name. When
// it freezes (SIGSTOP), a request is answered at once by the fallback, the
// freeze is found by the health probes, the frozen run is stopped by its
// ladder and a new run started, which answers again.
func TestSupervisedUpstreamFrozenIsReplaced(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	fallback := newFakeRawUpstream(t, answerAs("fallback"))
	addr := freePort(t)
	e := newTestEnv(t, agentPolicy(t, addr, fallback.url()))
	g := e.startGateway()
	g.waitLog("upstream child ready upstream=agent", 20*time.Second)
	pid := agentPID(t, g.url)
	if code, body := postChat(t, g.url, `{"model":"m"}`); code != 200 || !strings.Contains(body, fmt.Sprintf(`"from":"agent %d"`, pid)) {
		t.Fatalf("the agent (pid %d) does not answer: %d %q", pid, code, body)
	}
	g.waitLog(fmt.Sprintf(`upstream output upstream=agent line="fake agent %d listening on`, pid), 5*time.Second)

	frozeAt := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	code, body := postChat(t, g.url, `{"model":"m"}`)
	servedIn := time.Since(frozeAt)
	// Answered by the fallback, or by the frozen run once the ladder's
	// TERM (and CONT) let it finish what it had: one answer either way.
	if code != 200 || strings.Count(body, "[DONE]") != 1 {
		t.Fatalf("a request while the agent is frozen: %d %q, want one whole answer", code, body)
	}
	g.waitLog(fmt.Sprintf("upstream child frozen level=error upstream=agent child_pid=%d", pid), 20*time.Second)
	g.waitLog(fmt.Sprintf("upstream child signal level=warn upstream=agent child_pid=%d signal=TERM", pid), 5*time.Second)
	var next int
	waitUntil(t, 20*time.Second, "a new run of the agent, ready", func() bool {
		next = agentPID(t, g.url)
		return next != 0 && next != pid
	})
	replacedIn := time.Since(frozeAt)
	if code, body := postChat(t, g.url, `{"model":"m"}`); code != 200 || !strings.Contains(body, fmt.Sprintf(`"from":"agent %d"`, next)) {
		t.Errorf("the new run (pid %d) does not answer: %d %q", next, code, body)
	}
	if syscall.Kill(pid, 0) == nil {
		t.Errorf("the frozen run (pid %d) is still alive", pid)
	}
	t.Logf("freeze to a served request: %s; freeze to the new run ready: %s", servedIn.Round(time.Millisecond), replacedIn.Round(time.Millisecond))
	evs, _, _ := e.hermes(20*time.Second, "events", "--since", "1h")
	for _, want := range []string{"upstream child start", "upstream child ready", "upstream child frozen", "upstream child signal", "upstream child exit"} {
		if !strings.Contains(evs, want) {
			t.Errorf("hermes events does not show %q:\n%s", want, evs)
		}
	}

	// hermes stops its child after its own drain.
	g.signal(syscall.SIGTERM)
	g.wait(20 * time.Second)
	if syscall.Kill(next, 0) == nil {
		t.Errorf("the agent (pid %d) outlived hermes", next)
	}
}

// TestSupervisedUpstreamCrashLoop: an agent that exits at once is started
// again and again, with the crash-loop guard's delay once it has failed
// crash_loop.starts times in the window; every exit is an event.
func TestSupervisedUpstreamCrashLoop(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, agentPolicy(t, freePort(t), "", "-exit-at-once")+"\n[crash_loop]\nstarts = 2\nwindow = \"1m\"\nbase_delay = \"200ms\"\nmax_delay = \"1s\"\n")
	g := e.startGateway()
	g.waitLog("upstream child crash loop level=warn upstream=agent starts=3 window=1m0s delay=200ms", 20*time.Second)
	g.waitLog("upstream child crash loop level=warn upstream=agent starts=4 window=1m0s delay=400ms", 20*time.Second)
	log := g.stderr.String()
	if n := strings.Count(log, "upstream child exit level=warn upstream=agent"); n < 3 {
		t.Errorf("%d exits logged, want at least 3:\n%s", n, log)
	}
	if !strings.Contains(log, `upstream output upstream=agent line="fake agent cannot start"`) {
		t.Errorf("the agent's output is not in the log:\n%s", log)
	}
	if !strings.Contains(log, "code=3") {
		t.Errorf("the exit code is not logged:\n%s", log)
	}
	g.signal(syscall.SIGTERM)
	g.wait(20 * time.Second)
}

// TestSupervisedUpstreamSurvivesHandoff: hermes restart hands the running
// agent to the successor, which adopts it (proven by its pid and start
// time) instead of starting a second one: one agent, the same pid, still
// answering.
func TestSupervisedUpstreamSurvivesHandoff(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	addr := freePort(t)
	e := newTestEnv(t, agentPolicy(t, addr, "")+"\n[restart]\nmode = \"handoff\"\nready_timeout = \"10s\"\n")
	g := e.startGateway()
	g.waitLog("upstream child ready upstream=agent", 20*time.Second)
	pid := agentPID(t, g.url)
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 || !strings.Contains(out, "handed off") {
		t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
	}
	g.waitLog(fmt.Sprintf("upstream child adopted upstream=agent child_pid=%d", pid), 10*time.Second)
	waitUntil(t, 10*time.Second, "the successor's agent ready", func() bool { return agentPID(t, g.url) == pid })
	if code, body := postChat(t, g.url, `{"model":"m"}`); code != 200 || !strings.Contains(body, fmt.Sprintf(`"from":"agent %d"`, pid)) {
		t.Errorf("after the handoff: %d %q, want the same agent (pid %d)", code, body, pid)
	}
	if n := strings.Count(g.stderr.String(), "upstream child start upstream=agent"); n != 1 {
		t.Errorf("the agent was started %d times across the handoff, want once:\n%s", n, g.stderr.String())
	}
	if n := countProcesses(t, "-addr\x00"+addr); n != 1 {
		t.Errorf("%d agents run after the handoff, want 1", n)
	}
	// The successor stops it when it stops.
	_, body := httpGet(t, g.url+"/status")
	var st gatewayStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil || st.PID == g.pid() {
		t.Fatalf("status after the handoff: %q", body)
	}
	syscall.Kill(st.PID, syscall.SIGTERM)
	waitUntil(t, 20*time.Second, "the agent stopped with the successor", func() bool { return syscall.Kill(pid, 0) != nil })
}

// countProcesses counts the processes whose command line holds s.
func countProcesses(t *testing.T, s string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	n := 0
	for _, e := range ents {
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.Contains(string(b), s) {
			n++
		}
	}
	return n
}

// TestSupervisedUpstreamOutlivesAKill: a gateway killed with SIGKILL
// cannot stop its agent; the next gateway finds the run it recorded,
// proves it is the same process, and adopts it instead of starting a
// second one that would fight it for its port.
func TestSupervisedUpstreamOutlivesAKill(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	addr := freePort(t)
	e := newTestEnv(t, agentPolicy(t, addr, ""))
	g := e.startGateway()
	g.waitLog("upstream child ready upstream=agent", 20*time.Second)
	pid := agentPID(t, g.url)
	g.signal(syscall.SIGKILL)
	g.wait(10 * time.Second)
	g2 := e.startGateway()
	g2.waitLog(fmt.Sprintf("upstream child adopted upstream=agent child_pid=%d", pid), 10*time.Second)
	waitUntil(t, 10*time.Second, "the adopted agent ready", func() bool { return agentPID(t, g2.url) == pid })
	if code, body := postChat(t, g2.url, `{"model":"m"}`); code != 200 || !strings.Contains(body, fmt.Sprintf(`"from":"agent %d"`, pid)) {
		t.Errorf("after the kill: %d %q, want the same agent (pid %d)", code, body, pid)
	}
	if strings.Contains(g2.stderr.String(), "upstream child start") {
		t.Errorf("the next gateway started a second agent:\n%s", g2.stderr.String())
	}
	g2.signal(syscall.SIGTERM)
	g2.wait(20 * time.Second)
	waitUntil(t, 10*time.Second, "the agent stopped with the gateway", func() bool { return syscall.Kill(pid, 0) != nil })
}

// TestSupervisedUpstreamKilledUnderLoad: the agent is killed (SIGKILL) ten
// times under load. With a fallback, no request fails; without one,
// requests wait for the new run (within upstream_header_timeout), and none
// fails either unless it was cut mid-answer.
func TestSupervisedUpstreamKilledUnderLoad(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	for _, withFallback := range []bool{true, false} {
		t.Run(map[bool]string{true: "fallback", false: "alone"}[withFallback], func(t *testing.T) {
			t.Parallel()
			fb := ""
			if withFallback {
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Type", "text/event-stream")
					io.WriteString(w, "data: {\"from\":\"fallback\"}\n\ndata: [DONE]\n\n")
				}))
				t.Cleanup(srv.Close)
				fb = srv.URL
			}
			// Ten kills in a few seconds are a crash loop to the guard,
			// which would delay the next start: not what this measures.
			e := newTestEnv(t, agentPolicy(t, freePort(t), fb)+"\n[crash_loop]\nstarts = 30\n")
			g := e.startGateway()
			g.waitLog("upstream child ready upstream=agent", 20*time.Second)
			stop := make(chan struct{})
			type tally struct{ ok, failed, cut int }
			results := make(chan tally, 4)
			for w := 0; w < 4; w++ {
				go func() {
					var n tally
					client := &http.Client{Timeout: 20 * time.Second}
					for {
						select {
						case <-stop:
							results <- n
							return
						default:
						}
						resp, err := client.Post(g.url+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m"}`))
						if err != nil {
							n.failed++
							continue
						}
						b, _ := io.ReadAll(resp.Body)
						resp.Body.Close()
						switch {
						case resp.StatusCode == 200 && strings.HasSuffix(string(b), "data: [DONE]\n\n"):
							n.ok++
						case resp.StatusCode == 200 && strings.Contains(string(b), "upstream_cut"):
							n.cut++ // killed mid-answer: it ends visibly
						default:
							n.failed++
							t.Logf("failed: %d %q", resp.StatusCode, b)
						}
					}
				}()
			}
			for i := 0; i < 10; i++ {
				var pid int
				waitUntil(t, 20*time.Second, "the agent ready", func() bool { pid = agentPID(t, g.url); return pid != 0 })
				syscall.Kill(pid, syscall.SIGKILL)
				waitUntil(t, 20*time.Second, "a new run", func() bool { p := agentPID(t, g.url); return p != 0 && p != pid })
			}
			close(stop)
			var all tally
			for w := 0; w < 4; w++ {
				r := <-results
				all.ok, all.failed, all.cut = all.ok+r.ok, all.failed+r.failed, all.cut+r.cut
			}
			t.Logf("10 kills under load: %d answered, %d cut mid-answer, %d failed", all.ok, all.cut, all.failed)
			g.signal(syscall.SIGTERM)
			g.wait(20 * time.Second)
			if all.failed > 0 || all.ok == 0 {
				t.Errorf("%d requests failed across 10 kills (%d answered, %d cut)", all.failed, all.ok, all.cut)
			}
		})
	}
}
