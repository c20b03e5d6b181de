package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// gatewayFromPidFile returns the gateway the pid file names, proven alive,
// and makes sure the test ends it (it was started detached by hermes).
func (e *testEnv) gatewayFromPidFile() pidRecord {
	e.t.Helper()
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil {
		e.t.Fatalf("no pid file after restart: %v", err)
	}
	if ok, _ := rec.alive(); !ok {
		e.t.Fatalf("pid file names pid %d, which is not the live gateway", rec.PID)
	}
	e.t.Cleanup(func() { killProven(rec) })
	return rec
}

// bgCommand is a hermes command running in the background.
type bgCommand struct {
	cmd    *exec.Cmd
	out    *syncBuffer
	done   chan struct{}
	code   int
	stdout *syncBuffer
}

func (e *testEnv) hermesBg(args ...string) *bgCommand {
	e.t.Helper()
	cmd := exec.Command(hermesBin, args...)
	cmd.Env = e.env
	cmd.Dir = e.dir
	b := &bgCommand{cmd: cmd, out: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = b.out, b.out
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		b.code = cmd.ProcessState.ExitCode()
		close(b.done)
	}()
	e.t.Cleanup(func() {
		select {
		case <-b.done:
		default:
			cmd.Process.Kill()
			<-b.done
		}
	})
	return b
}

func (b *bgCommand) waitOutput(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(b.out.String(), s) {
			return
		}
		select {
		case <-b.done:
			if strings.Contains(b.out.String(), s) {
				return
			}
			t.Fatalf("command exited %d without printing %q:\n%s", b.code, s, b.out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	t.Fatalf("no %q within %s:\n%s", s, timeout, b.out.String())
}

func (b *bgCommand) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-b.done:
		return b.code
	case <-time.After(timeout):
		t.Fatalf("command did not finish within %s:\n%s", timeout, b.out.String())
		return -1
	}
}

// restartPolicy is for the tests of the drain ladder: a serving gateway
// is restarted by a drain here (handoff_test.go has the handoff's).
const restartPolicy = `
[echo]
word_delay = "25ms"
[drain]
timeout = "10s"
grace = "1s"
[restart]
mode = "drain"
ready_timeout = "20s"
`

func TestRestartHealthyGatewayLetsStreamFinish(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway()
	s := startStream(t, g.url, 60) // ~1.5 s
	s.waitLines(t, 4, 5*time.Second)

	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart exit %d\n%s%s", code, out, errOut)
	}
	stream := s.waitDone(t, 10*time.Second)
	if !strings.Contains(stream, "data: [DONE]") || strings.Contains(stream, "event: error") {
		t.Errorf("the in-flight stream did not finish cleanly:\n%s", stream)
	}
	if gc := g.wait(5 * time.Second); gc != exitRestart {
		t.Errorf("old gateway exit = %d, want %d", gc, exitRestart)
	}
	rec := e.gatewayFromPidFile()
	if rec.PID == g.pid() {
		t.Errorf("no new gateway: pid %d is the old one", rec.PID)
	}
	for _, want := range []string{"verdict: serving", "sent USR1", "restarted: pid"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if code, _ := httpGet(t, g.url+"/readyz"); code != 200 {
		t.Errorf("new gateway not ready: %d", code)
	}
}

func TestRestartFrozenGatewayWithoutForce(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway("HERMES_TEST_FAULT=freeze-after-ready")
	waitFrozen(t, g.url, 10*time.Second)
	// The restarter's environment holds the fault too (a shell that
	// exported it): the gateway it starts must not inherit it.
	e.env = append(e.env, "HERMES_TEST_FAULT=freeze-after-ready")
	start := time.Now()
	out, errOut, code := e.hermes(60*time.Second, "restart")
	elapsed := time.Since(start)
	e.env = e.env[:len(e.env)-1]
	if code != 0 {
		t.Fatalf("restart exit %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{"verdict: frozen", "skip USR1", "skip TERM", "sent KILL"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if gc := g.wait(5 * time.Second); gc != 128+int(syscall.SIGKILL) {
		t.Errorf("frozen gateway ended with %d, want death by KILL", gc)
	}
	rec := e.gatewayFromPidFile()
	if rec.PID == g.pid() {
		t.Fatal("no new gateway")
	}
	// The new gateway did not inherit the fault: past 3 heartbeats it ticks.
	if st := waitStatusAt(t, "http://"+rec.Listen, nil, 10*time.Second, "2s of uptime",
		func(st gatewayStatus) bool { return st.UptimeSeconds >= 2 }); st.Frozen {
		t.Error("the gateway hermes restart started is frozen: it inherited HERMES_TEST_FAULT")
	}
	t.Logf("a frozen gateway recovered in %s (the figure is BenchmarkRestart/frozen's)", elapsed)
}

func TestRestartStoppedGateway(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway()
	g.signal(syscall.SIGSTOP)
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "verdict: stopped") {
		t.Errorf("output lacks the stopped verdict:\n%s", out)
	}
	if gc := g.wait(5 * time.Second); gc != exitRestart {
		t.Errorf("stopped gateway exit = %d, want %d (continued, drained, restarted)", gc, exitRestart)
	}
	e.gatewayFromPidFile()
}

func TestRestartEscalatesToKill(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, `
[drain]
timeout = "500ms"
grace = "500ms"
[restart]
mode = "drain"
ladder = [{ signal = "USR1", wait = "1s" }, { signal = "TERM", wait = "1s" }, { signal = "KILL", wait = "5s" }]
`)
	g := e.startGateway("HERMES_TEST_FAULT=ignore-stop-signals")
	start := time.Now()
	out, errOut, code := e.hermes(60*time.Second, "restart")
	elapsed := time.Since(start)
	if code != 0 {
		t.Fatalf("restart exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "verdict: serving") || !strings.Contains(out, "sent KILL") || !strings.Contains(out, "still running 1s after TERM") {
		t.Errorf("the ladder did not escalate to KILL after TERM's wait:\n%s", out)
	}
	if elapsed < 2*time.Second {
		t.Errorf("KILL came after %s, before the USR1 and TERM waits (2s) ran out", elapsed)
	}
	if gc := g.wait(5 * time.Second); gc != 128+int(syscall.SIGKILL) {
		t.Errorf("gateway ended with %d, want death by KILL", gc)
	}
	e.gatewayFromPidFile()
}

// startUnrelated starts a `sleep` and writes a pid file that names its pid
// but records another start time: pid reuse, as after a crash and reboot.
func startUnrelated(t testing.TB, e *testEnv) *exec.Cmd {
	t.Helper()
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	os.MkdirAll(e.stateDir, 0o700)
	boot, _ := bootID()
	start, _, _ := procInfo(sleep.Process.Pid)
	rec := pidRecord{PID: sleep.Process.Pid, StartTime: start - 1, BootID: boot}
	if err := writePidFile(pidFilePath(e.stateDir), rec); err != nil {
		t.Fatal(err)
	}
	return sleep
}

func alive(pid int) bool {
	_, st, err := procInfo(pid)
	return err == nil && st != 'Z'
}

func TestStalePidFileNamesUnrelatedProcess(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	sleep := startUnrelated(t, e)
	pid := sleep.Process.Pid

	out, _, code := e.hermes(20*time.Second, "status")
	if code != exitNotRunning || !strings.Contains(out, "stale pid file") || !strings.Contains(out, `"sleep"`) {
		t.Errorf("status = %d:\n%s", code, out)
	}
	out, errOut, code := e.hermes(20*time.Second, "stop")
	if code != 0 || !alive(pid) {
		t.Errorf("stop = %d, sleep alive %v:\n%s%s", code, alive(pid), out, errOut)
	}
	out, errOut, code = e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
	}
	if !alive(pid) {
		t.Fatal("restart signalled the unrelated process")
	}
	if rec := e.gatewayFromPidFile(); rec.PID == pid {
		t.Error("pid file still names the unrelated process")
	}
	if !alive(pid) {
		t.Fatal("the unrelated process died")
	}
}

func TestRestartNothingRunningStartsGateway(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
	}
	rec := e.gatewayFromPidFile()
	if c, _ := httpGet(t, "http://"+rec.Listen+"/readyz"); c != 200 {
		t.Errorf("readyz = %d", c)
	}
	// status now: serving, exit 0, JSON with the paths scripts need.
	sout, _, scode := e.hermes(20*time.Second, "status", "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(sout), &st); err != nil || scode != 0 {
		t.Fatalf("status --json = %d %q: %v", scode, sout, err)
	}
	if st.Verdict != verdictServing || st.PID != rec.PID || st.StateDir != e.stateDir || st.PidFile != pidFilePath(e.stateDir) || st.Policy != e.policy {
		t.Errorf("status = %+v", st)
	}
}

func TestRestartWithBadPolicyTouchesNothing(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway()
	e.writePolicy(restartPolicy + "\n[watchdog]\ntimeout = \"x\"\n")
	out, errOut, code := e.hermes(60*time.Second, "restart", "--force")
	if code != exitConfig || !strings.Contains(errOut, "watchdog.timeout") {
		t.Errorf("restart with a bad policy = %d:\n%s%s", code, out, errOut)
	}
	if strings.Contains(out, "sent") || !alive(g.pid()) {
		t.Errorf("restart with a bad policy touched the gateway:\n%s", out)
	}
}

func TestRestartFailsWhenNewGatewayCannotStart(t *testing.T) {
	e := newTestEnv(t, "listen_timeout = \"200ms\"\n"+restartPolicy)
	// Someone else holds the gateway's port: the new gateway exits 78.
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != exitFailure {
		t.Fatalf("restart = %d, want %d:\n%s%s", code, exitFailure, out, errOut)
	}
	for _, want := range []string{"exited with code 78", "last lines of its log", fmt.Sprintf("in use by pid %d (", os.Getpid()),
		"hint: fix what the log says (check the policy with: hermes check-config --config " + e.policy + ")\n    then run: hermes restart"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("failure output lacks %q:\n%s", want, errOut)
		}
	}
}

func TestTwoRestartsAtOnce(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway()
	s := startStream(t, g.url, 120) // ~3 s: the first restart waits on it
	s.waitLines(t, 2, 5*time.Second)
	first := e.hermesBg("restart")
	first.waitOutput(t, "sent USR1", 20*time.Second)

	out, errOut, code := e.hermes(20*time.Second, "restart")
	if code != exitFailure {
		t.Errorf("second restart = %d, want %d", code, exitFailure)
	}
	// The first is named by what it is, not by its command line.
	want := fmt.Sprintf("hermes: error: a restart (pid %d) is already in progress\nhermes: hint: wait for it to finish, or queue behind it with: hermes restart --wait --config %s\n", first.cmd.Process.Pid, e.policy)
	if errOut != want {
		t.Errorf("second restart:\n%s%s\nwant:\n%s", out, errOut, want)
	}
	if strings.Contains(out, "sent") {
		t.Errorf("second restart sent a signal:\n%s", out)
	}
	if c := first.wait(t, 60*time.Second); c != 0 {
		t.Fatalf("first restart = %d:\n%s", c, first.out.String())
	}
	e.gatewayFromPidFile()
	if out := s.waitDone(t, 10*time.Second); !strings.Contains(out, "[DONE]") {
		t.Errorf("stream cut:\n%s", out)
	}
}

func TestCtrlCDuringLadder(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway()
	s := startStream(t, g.url, 400) // 10 s: the drain outlasts the test's patience
	s.waitLines(t, 2, 5*time.Second)
	r := e.hermesBg("restart")
	r.waitOutput(t, "sent USR1", 20*time.Second)
	start := time.Now()
	r.cmd.Process.Signal(syscall.SIGINT)
	code := r.wait(t, 10*time.Second)
	if code != exitFailure {
		t.Errorf("interrupted restart = %d, want %d", code, exitFailure)
	}
	t.Logf("Ctrl-C stopped the ladder %s after it", time.Since(start).Round(time.Millisecond))
	out := r.out.String()
	for _, want := range []string{"interrupted: stopped at rung 1/3", "USR1 sent to pid", fmt.Sprintf("the gateway (pid %d) is still running", g.pid()), "hint: finish the job with: hermes restart"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "sent TERM") || strings.Contains(out, "sent KILL") {
		t.Errorf("the ladder kept escalating after Ctrl-C:\n%s", out)
	}
	// The gateway is left draining, not killed.
	if !alive(g.pid()) {
		t.Error("the gateway died")
	}
}

func TestStopIsPlannedAndFinal(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway()
	s := startStream(t, g.url, 20)
	s.waitLines(t, 2, 5*time.Second)
	out, errOut, code := e.hermes(60*time.Second, "stop")
	if code != 0 {
		t.Fatalf("stop = %d:\n%s%s", code, out, errOut)
	}
	if gc := g.wait(5 * time.Second); gc != exitOK {
		t.Errorf("gateway exit = %d, want 0 (planned stop)", gc)
	}
	if !strings.Contains(out, "sent TERM") || strings.Contains(out, "USR1") {
		t.Errorf("stop did not drain with TERM:\n%s", out)
	}
	if out := s.waitDone(t, 5*time.Second); !strings.Contains(out, "[DONE]") {
		t.Errorf("stream cut by stop:\n%s", out)
	}
	if _, err := os.Stat(pidFilePath(e.stateDir)); !os.IsNotExist(err) {
		t.Error("pid file left after stop")
	}
	sout, _, scode := e.hermes(20*time.Second, "status")
	if scode != exitNotRunning || !strings.Contains(sout, "not running") {
		t.Errorf("status after stop = %d:\n%s", scode, sout)
	}
}

func TestStatusVerdicts(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway("HERMES_TEST_FAULT=freeze-after-ready")
	waitFrozen(t, g.url, 10*time.Second)
	out, _, code := e.hermes(20*time.Second, "status")
	if code != exitFailure || !strings.Contains(out, "frozen") || !strings.Contains(out, "hermes restart") {
		t.Errorf("status of a frozen gateway = %d:\n%s", code, out)
	}
	g.signal(syscall.SIGSTOP)
	out, _, code = e.hermes(20*time.Second, "status", "--json")
	var st statusJSON
	json.Unmarshal([]byte(out), &st)
	if code != exitFailure || st.Verdict != verdictStopped || st.PID != g.pid() {
		t.Errorf("status of a stopped gateway = %d %+v", code, st)
	}
	g.signal(syscall.SIGKILL)
	g.wait(5 * time.Second)
}

// TestRestartLogsEachRungOnce checks the progress output format a person
// reads: one line per rung with the elapsed time, and a summary.
func TestRestartProgressLines(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	e.startGateway()
	out, _, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatal(out)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "hermes: [") {
			t.Errorf("progress line without elapsed time: %q", sc.Text())
		}
		n++
	}
	if n < 4 || !strings.Contains(out, "restarted: ") {
		t.Errorf("progress:\n%s", out)
	}
	e.gatewayFromPidFile()
}

// TestRestartJournalSequence: restarts in each state leave a journal from
// which `hermes events` prints the causal chain, restarter and gateways
// interleaved.
func TestRestartJournalSequence(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, restartPolicy)
	seqOf := func(evs []journalEvent, from int) string {
		var seq []string
		for _, ev := range evs[from:] {
			s := ev.Event
			if v, ok := ev.Fields["verdict"]; ok {
				s += "=" + fmt.Sprint(v)
			}
			if v, ok := ev.Fields["signal"]; ok && ev.Kind == evRungSent {
				s += "=" + fmt.Sprint(v)
			}
			seq = append(seq, s)
		}
		return strings.Join(seq, "|")
	}
	for _, tc := range []struct {
		name  string
		fault string
		want  string
	}{
		{"nothing running", "", "restart requested|verdict=not running|manager action|start|ready|restart done"},
		{"serving", "none", "restart requested|verdict=serving|rung sent=USR1|signal|drain start|drain end|exit|exit observed|manager action|start|ready|restart done"},
		{"frozen", "freeze-after-ready", "restart requested|verdict=frozen|rung sent=KILL|exit observed|manager action|start|ready|restart done"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.fault != "" {
				e.hermes(30*time.Second, "stop", "--force") // the previous case's gateway
				g := e.startGateway("HERMES_TEST_FAULT=" + tc.fault)
				if tc.fault == "freeze-after-ready" {
					waitFrozen(t, g.url, 10*time.Second)
				}
			}
			before, _, _ := readJournal(e.stateDir)
			if out, errOut, code := e.hermes(60*time.Second, "restart"); code != 0 {
				t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
			}
			e.gatewayFromPidFile()
			evs, _, err := readJournal(e.stateDir)
			if err != nil {
				t.Fatal(err)
			}
			from := len(before)
			// The test's own gateway start is not part of the restart.
			for from < len(evs) && evs[from].Kind != evRestartRequested {
				from++
			}
			if got := seqOf(evs, from); got != tc.want {
				t.Errorf("journal after restart:\n got %s\nwant %s", got, tc.want)
			}
			out, _, code := e.hermes(20*time.Second, "events", "--since", "1m")
			if code != 0 || !strings.Contains(out, "after restart requested") {
				t.Errorf("hermes events = %d:\n%s", code, out)
			}
		})
	}
}

// TestRestartForceGivesFinalEvent: --force does not wait out the drain, but
// open streams still get their final event, and the gateway exits on its
// own instead of being killed. A restart --force asks the gateway's loop
// for a restart now: the final event says gateway_restart, the gateway
// exits 75 and journals a restart. A stop --force sends TERM twice (stop
// now): gateway_shutdown, exit 0.
func TestRestartForceGivesFinalEvent(t *testing.T) {
	for _, tc := range []struct {
		cmd, reason, exitReason, progress string
		code                              int
	}{
		{"restart", reasonRestart, "planned restart", "to restart now: open streams get their final event", exitRestart},
		{"stop", reasonShutdown, "planned stop", "sent TERM again: stop now", exitOK},
	} {
		t.Run(tc.cmd, func(t *testing.T) {
			e := newTestEnv(t, "[echo]\nword_delay = \"100ms\"\n[drain]\ntimeout = \"60s\"\ngrace = \"5s\"\n[restart]\nready_timeout = \"20s\"\n")
			g := e.startGateway()
			s := startStream(t, g.url, 300) // 30 s
			s.waitLines(t, 2, 5*time.Second)
			start := time.Now()
			out, errOut, code := e.hermes(60*time.Second, tc.cmd, "--force")
			took := time.Since(start)
			if code != 0 {
				t.Fatalf("%s --force = %d:\n%s%s", tc.cmd, code, out, errOut)
			}
			body := s.waitDone(t, 5*time.Second)
			if !strings.Contains(body, "event: error") || !strings.Contains(body, `"reason":"`+tc.reason+`"`) || !strings.Contains(body, `"type":"`+tc.reason+`"`) {
				t.Errorf("the stream cut by %s --force lacks its final event with reason %s:\n%s", tc.cmd, tc.reason, body)
			}
			if gc := g.wait(5 * time.Second); gc != tc.code {
				t.Errorf("gateway exit = %d, want %d (stopped now, not killed)", gc, tc.code)
			}
			if !strings.Contains(out, tc.progress) || strings.Contains(out, "sent KILL") {
				t.Errorf("%s --force output lacks %q:\n%s", tc.cmd, tc.progress, out)
			}
			exit := fmt.Sprintf(`"pid":%d,"instance":"test","event":"exit","code":%d,"reason":%q`, g.pid(), tc.code, tc.exitReason)
			if j, _ := os.ReadFile(journalPath(e.stateDir)); !strings.Contains(string(j), exit) {
				t.Errorf("the journal lacks %s:\n%s", exit, j)
			}
			t.Logf("%s --force took %s", tc.cmd, took)
			if tc.cmd == "restart" {
				e.gatewayFromPidFile()
				if out, _, _ := e.hermes(20*time.Second, "events"); !strings.Contains(out, "after restart now") {
					t.Errorf("hermes events does not time the exit from the restart now:\n%s", out)
				}
			}
		})
	}
}

// TestCtrlCWhileQueuedBehindRestart: a `restart --wait` queued behind
// another restart gives up on Ctrl-C at once, and then never signals the
// gateway (not the old one, nor the one the first restart brings up).
func TestCtrlCWhileQueuedBehindRestart(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	g := e.startGateway()
	// The restart in progress: its lock, held here.
	os.MkdirAll(e.stateDir, 0o700)
	holdFlock(t, e.stateDir+"/restart.lock")
	r := e.hermesBg("restart", "--wait")
	r.waitOutput(t, "waiting up to", 20*time.Second)
	start := time.Now()
	r.cmd.Process.Signal(syscall.SIGINT)
	code := r.wait(t, 10*time.Second)
	t.Logf("queued restart gave up %s after Ctrl-C", time.Since(start).Round(time.Millisecond))
	if code == 0 || !strings.Contains(r.out.String(), "interrupted while waiting") || !strings.Contains(r.out.String(), "nothing was done") {
		t.Errorf("queued restart after Ctrl-C = %d:\n%s", code, r.out.String())
	}
	if strings.Contains(r.out.String(), "sent") || strings.Contains(g.stderr.String(), "signal signal=") {
		t.Errorf("the called-off restart signalled the gateway:\n%s\n%s", r.out.String(), g.stderr.String())
	}
	if !alive(g.pid()) {
		t.Error("the gateway died")
	}
}

// TestPidFileFromAnotherBootIsStale: a pid file whose pid and start time
// match a live process, but whose boot id is another boot's, is stale (the
// same pid and start tick recur after a reboot); nothing is signalled.
func TestPidFileFromAnotherBootIsStale(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	sleep := exec.Command("sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleep.Process.Kill(); sleep.Wait() })
	start, _, _ := procInfo(sleep.Process.Pid)
	os.MkdirAll(e.stateDir, 0o700)
	rec := pidRecord{PID: sleep.Process.Pid, StartTime: start, BootID: "00000000-0000-0000-0000-000000000000"}
	if err := writePidFile(pidFilePath(e.stateDir), rec); err != nil {
		t.Fatal(err)
	}
	if ok, _ := rec.alive(); ok {
		t.Fatal("alive() ignores the boot id")
	}
	out, _, code := e.hermes(20*time.Second, "status")
	if code != exitNotRunning || !strings.Contains(out, "stale pid file") {
		t.Errorf("status = %d:\n%s", code, out)
	}
	out, errOut, code := e.hermes(20*time.Second, "stop", "--force")
	if code != 0 || !alive(sleep.Process.Pid) || strings.Contains(out, "sent") {
		t.Errorf("stop --force = %d, sleep alive %v:\n%s%s", code, alive(sleep.Process.Pid), out, errOut)
	}
}
