//go:build linux

package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startKeeper starts `hermes serve` as a keeper (INVOCATION_ID set, as
// systemd sets it, with restart.mode handoff) and waits until its gateway
// serves. It returns the keeper and the gateway's pid.
func startKeeper(t *testing.T, e *testEnv, extraEnv ...string) (*gatewayProc, int) {
	t.Helper()
	k := e.spawnGateway(append([]string{"INVOCATION_ID=hermes-test-keeper"}, extraEnv...)...)
	k.waitLog("keeper start", 20*time.Second)
	k.waitLog(" ready ", 20*time.Second)
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil {
		t.Fatal(err)
	}
	if rec.PID == k.pid() || parentOf(rec.PID) != k.pid() {
		t.Fatalf("the gateway (pid %d, parent %d) is not the keeper's (pid %d) child", rec.PID, parentOf(rec.PID), k.pid())
	}
	return k, rec.PID
}

func parentOf(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	p, _ := strconv.Atoi(f[1])
	return p
}

// TestKeeperKeepsThePid: under a keeper (what systemd and PID 1 get), a
// handoff moves the gateway to another process while the pid the manager
// watches stays, and under load nothing is refused. The successors come
// back to the keeper (a child subreaper) when their predecessors exit.
func TestKeeperKeepsThePid(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, handoffPolicy)
	k, gw := startKeeper(t, e)
	load := startLoad(t, k.url, 4)
	load.waitOK(t, 10)
	for i := 0; i < 3; i++ {
		out, errOut, code := e.hermes(60*time.Second, "restart")
		if code != 0 || !strings.Contains(out, "handed off") {
			t.Fatalf("restart %d = %d:\n%s%s", i+1, code, out, errOut)
		}
		load.waitOK(t, 10)
	}
	load.end()
	if len(load.failures) > 0 {
		t.Errorf("requests failed across handoffs under a keeper:\n%s", strings.Join(load.failures, "\n"))
	}
	rec, _ := readPidFile(pidFilePath(e.stateDir))
	if rec.PID == gw || k.hasExited() {
		t.Fatalf("after 3 handoffs: gateway %d (was %d), keeper exited %v", rec.PID, gw, k.hasExited())
	}
	waitGone(t, gw)
	// The first gateway has exited: its successor's parent is now the keeper.
	deadline := time.Now().Add(10 * time.Second)
	for parentOf(rec.PID) != k.pid() {
		if time.Now().After(deadline) {
			t.Fatalf("the gateway's parent is %d, not the keeper %d", parentOf(rec.PID), k.pid())
		}
		time.Sleep(20 * time.Millisecond)
	}
	// A stop through the keeper drains, and the keeper exits with the
	// gateway's code.
	s := startStream(t, k.url, 40)
	s.waitLines(t, 4, 5*time.Second)
	k.signal(syscall.SIGTERM)
	if out := s.waitDone(t, 10*time.Second); !strings.Contains(out, "[DONE]") {
		t.Errorf("TERM to the keeper cut the stream:\n%s", out)
	}
	if code := k.wait(20 * time.Second); code != exitOK {
		t.Errorf("keeper exit %d, want 0", code)
	}
}

// TestKeeperExitCodes: the keeper exits with its gateway's code, so the
// manager's rules (restart on 75, never on 78) see the gateway's exit.
func TestKeeperExitCodes(t *testing.T) {
	t.Run("USR1: a drain restart, 75", func(t *testing.T) {
		e := newTestEnv(t, handoffPolicy)
		k, _ := startKeeper(t, e)
		k.signal(syscall.SIGUSR1)
		if code := k.wait(20 * time.Second); code != exitRestart {
			t.Errorf("keeper exit %d, want %d", code, exitRestart)
		}
	})
	t.Run("the gateway killed: 137", func(t *testing.T) {
		e := newTestEnv(t, handoffPolicy)
		k, gw := startKeeper(t, e)
		syscall.Kill(gw, syscall.SIGKILL)
		if code := k.wait(20 * time.Second); code != 128+int(syscall.SIGKILL) {
			t.Errorf("keeper exit %d, want %d", code, 128+int(syscall.SIGKILL))
		}
	})
	t.Run("a policy error: 78", func(t *testing.T) {
		e := newTestEnv(t, handoffPolicy+"[lock]\ntoken_file = \"/nonexistent/token\"\n")
		k := e.spawnGateway("INVOCATION_ID=hermes-test-keeper")
		if code := k.wait(20 * time.Second); code != exitConfig {
			t.Errorf("keeper exit %d, want %d:\n%s", code, exitConfig, k.stderr.String())
		}
	})
}

// childOf returns the (first) child process of pid.
func childOf(t *testing.T, pid int) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
		if f := strings.Fields(string(b)); len(f) > 0 {
			c, _ := strconv.Atoi(f[0])
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d has no child", pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// asPID1 starts hermes serve as PID 1 of a new pid namespace and returns
// it with the host pid of that PID 1.
func asPID1(t *testing.T, e *testEnv) (*gatewayProc, int) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnlessCI(t, "needs root to unshare a pid namespace: run the tests as root")
	}
	g := e.spawnGatewayCmd([]string{"unshare", "--pid", "--fork", "--mount-proc", "--kill-child", hermesBin, "serve"})
	g.waitLog(" ready ", 20*time.Second)
	return g, childOf(t, g.pid())
}

// TestPID1: hermes serve as PID 1 of a pid namespace (a container) keeps
// PID 1 as its keeper, so a handoff works there too (when PID 1 exits, the
// kernel kills the namespace: a gateway that is PID 1 could not hand off).
// Signals from outside reach it (PID 1 gets only the signals it handles),
// and TERM drains a stream to [DONE].
func TestPID1(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, strings.Replace(handoffPolicy, `word_delay = "5ms"`, `word_delay = "30ms"`, 1))
	g, pid1 := asPID1(t, e)
	if !strings.Contains(g.stderr.String(), "keeper start") || !strings.Contains(g.stderr.String(), `why="PID 1"`) {
		t.Fatalf("no keeper as PID 1:\n%s", g.stderr.String())
	}
	s := startStream(t, g.url, 40)
	s.waitLines(t, 4, 5*time.Second)
	syscall.Kill(pid1, syscall.SIGUSR2) // the keeper passes it to the gateway
	g.waitLog("handoff done", 10*time.Second)
	if out := s.waitDone(t, 10*time.Second); !strings.Contains(out, "[DONE]") {
		t.Errorf("the stream did not survive a handoff as PID 1:\n%s", out)
	}
	s = startStream(t, g.url, 40)
	s.waitLines(t, 4, 5*time.Second)
	syscall.Kill(pid1, syscall.SIGTERM)
	if out := s.waitDone(t, 10*time.Second); !strings.Contains(out, "[DONE]") || strings.Contains(out, "event: error") {
		t.Errorf("TERM to PID 1 cut the stream:\n%s", out)
	}
	if code := g.wait(20 * time.Second); code != exitOK {
		t.Errorf("PID 1 exit %d, want 0:\n%s", code, g.stderr.String())
	}
}

// TestPID1WithoutKeeperFallsBack: with restart.mode = "drain" there is no
// keeper, and a gateway that is PID 1 cannot hand off: USR2 says why and
// drains to a restart (exit 75) instead, for the container runtime to
// restart it.
func TestPID1WithoutKeeperFallsBack(t *testing.T) {
	e := newTestEnv(t, strings.Replace(handoffPolicy, `mode = "handoff"`, `mode = "drain"`, 1))
	g, pid1 := asPID1(t, e)
	s := startStream(t, g.url, 40)
	s.waitLines(t, 4, 5*time.Second)
	syscall.Kill(pid1, syscall.SIGUSR2)
	if out := s.waitDone(t, 10*time.Second); !strings.Contains(out, "[DONE]") {
		t.Errorf("the stream was cut by the fallback:\n%s", out)
	}
	if code := g.wait(20 * time.Second); code != exitRestart {
		t.Errorf("exit %d, want %d (a drain restart)", code, exitRestart)
	}
	for _, want := range []string{"handoff refused", "PID 1 of a pid namespace", "drain restart instead of a handoff"} {
		if !strings.Contains(g.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, g.stderr.String())
		}
	}
}
