package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// healthcheck runs `hermes healthcheck` with extra args, checks it kept
// its time bound and printed one line, and returns that line and the code.
func (e *testEnv) healthcheck(t *testing.T, args ...string) (string, int) {
	t.Helper()
	start := time.Now()
	out, errOut, code := e.hermes(20*time.Second, append([]string{"healthcheck"}, args...)...)
	took := time.Since(start)
	if took > healthcheckTimeout+2*time.Second {
		t.Errorf("healthcheck took %s, more than its bound %s", took.Round(time.Millisecond), healthcheckTimeout)
	}
	if strings.Count(out, "\n") != 1 || errOut != "" {
		t.Errorf("healthcheck printed %q on stdout and %q on stderr; want one line on stdout", out, errOut)
	}
	t.Logf("hermes healthcheck %s: exit %d in %s: %s", strings.Join(args, " "), code, took.Round(time.Millisecond), strings.TrimSpace(out))
	return strings.TrimSpace(out), code
}

// TestHealthcheck: exit 0 for a serving gateway; 1, saying why, for a
// frozen, a draining and an absent one, through the control socket and
// through /readyz where there is no control socket to ask.
func TestHealthcheck(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	// The watchdog is off: a frozen gateway stays up to be looked at.
	const policy = "[watchdog]\nheartbeat = \"500ms\"\ntimeout = \"0s\"\nsignal_timeout = \"0s\"\n" +
		"[echo]\nword_delay = \"50ms\"\n[drain]\ntimeout = \"20s\"\ngrace = \"1s\"\n" +
		// The draining case ends its drain by leaving its stream: with a
		// reattach window the drain would wait for the stream's 10 s.
		"[reattach]\nwindow = \"0s\"\n"

	// other is a policy for the same listen address with another state
	// dir: no control socket there, so only /readyz can answer.
	other := func(t *testing.T, e *testEnv) string {
		path := filepath.Join(e.dir, "other.toml")
		o := &testEnv{t: t, dir: e.dir, stateDir: filepath.Join(e.dir, "other-state"), addr: e.addr, policy: path}
		o.writePolicy(policy)
		return path
	}

	t.Run("serving", func(t *testing.T) {
		e := newTestEnv(t, policy)
		g := e.startGateway()
		line, code := e.healthcheck(t)
		if code != exitOK || !strings.HasPrefix(line, "healthy: serving") || !strings.Contains(line, fmt.Sprintf("pid %d", g.pid())) {
			t.Errorf("healthcheck of a serving gateway = %d %q", code, line)
		}
		line, code = e.healthcheck(t, "--config", other(t, e))
		if code != exitOK || !strings.Contains(line, "serving (http://"+e.addr+"/readyz; no control socket at") {
			t.Errorf("healthcheck by /readyz of a serving gateway = %d %q", code, line)
		}
		line, code = e.healthcheck(t, "--name", "test")
		if code != exitOK || !strings.HasPrefix(line, "healthy: serving") {
			t.Errorf("healthcheck --name test = %d %q", code, line)
		}
	})

	t.Run("frozen", func(t *testing.T) {
		e := newTestEnv(t, policy)
		g := e.startGateway(frozen)
		waitFrozen(t, g.url, 10*time.Second)
		line, code := e.healthcheck(t)
		if code != exitFailure || !strings.HasPrefix(line, "unhealthy: frozen:") || !strings.Contains(line, "has not ticked for") {
			t.Errorf("healthcheck of a frozen gateway = %d %q", code, line)
		}
		line, code = e.healthcheck(t, "--config", other(t, e))
		if code != exitFailure || !strings.HasPrefix(line, "unhealthy: frozen:") || !strings.Contains(line, "/readyz") {
			t.Errorf("healthcheck by /readyz of a frozen gateway = %d %q", code, line)
		}
	})

	t.Run("draining", func(t *testing.T) {
		e := newTestEnv(t, policy)
		g := e.startGateway()
		s := startStream(t, g.url, 200) // 10 s of words
		s.waitLines(t, 4, 5*time.Second)
		g.signal(syscall.SIGTERM)
		g.waitLog("drain start", 5*time.Second)
		waitReadyz(t, g.url, 503, 5*time.Second) // published just after the log line
		line, code := e.healthcheck(t)
		if code != exitFailure || !strings.HasPrefix(line, "unhealthy: draining:") || !strings.Contains(line, "1 sessions left") {
			t.Errorf("healthcheck of a draining gateway = %d %q", code, line)
		}
		line, code = e.healthcheck(t, "--config", other(t, e))
		if code != exitFailure || !strings.HasPrefix(line, "unhealthy: draining:") {
			t.Errorf("healthcheck by /readyz of a draining gateway = %d %q", code, line)
		}
		s.cancel()
		if code := g.wait(20 * time.Second); code != exitOK {
			t.Errorf("exit %d after the drain, want 0", code)
		}
	})

	t.Run("absent", func(t *testing.T) {
		e := newTestEnv(t, policy)
		line, code := e.healthcheck(t)
		if code != exitFailure || !strings.HasPrefix(line, "unhealthy: not running:") {
			t.Errorf("healthcheck with no gateway = %d %q", code, line)
		}
	})

	t.Run("broken policy", func(t *testing.T) {
		e := newTestEnv(t, "[drain]\ntimeout = 5\n")
		line, code := e.healthcheck(t)
		if code != exitFailure || !strings.HasPrefix(line, "unhealthy: cannot tell:") || !strings.Contains(line, "drain.timeout") {
			t.Errorf("healthcheck with a broken policy = %d %q", code, line)
		}
	})
}

// TestHealthcheckBounded: a gateway whose process is stopped (SIGSTOP)
// answers nothing at all, not even status; healthcheck still answers
// within its bound, and says frozen.
func TestHealthcheckBounded(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	g.signal(syscall.SIGSTOP)
	defer g.signal(syscall.SIGCONT)
	line, code := e.healthcheck(t, "--timeout", "1500ms")
	if code != exitFailure || !strings.HasPrefix(line, "unhealthy: frozen:") {
		t.Errorf("healthcheck of a stopped gateway = %d %q", code, line)
	}
	if _, errOut, code := e.hermes(10*time.Second, "healthcheck", "--timeout", "0s"); code != exitUsage {
		t.Errorf("--timeout 0s = %d %q, want %d", code, errOut, exitUsage)
	}
}

func TestHealthcheckDialable(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:8642": "127.0.0.1:8642", ":8642": "127.0.0.1:8642", "[::]:8642": "[::1]:8642",
		"127.0.0.1:8642": "127.0.0.1:8642", "10.0.0.5:80": "10.0.0.5:80",
	} {
		if got := dialable(in); got != want {
			t.Errorf("dialable(%q) = %q, want %q", in, got, want)
		}
	}
}
