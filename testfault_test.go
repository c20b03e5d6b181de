package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestReleaseBuildIgnoresTestFaults builds hermes as a release (no
// hermes_testfault tag): the fault code is not in the binary at all, and a
// gateway started with HERMES_TEST_FAULT set serves and ticks as usual.
func TestReleaseBuildIgnoresTestFaults(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	if testing.Short() {
		t.Skip("builds a second binary")
	}
	bin := filepath.Join(t.TempDir(), "hermes-release")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("building the release binary: %v", err)
	}
	nm, err := exec.Command("go", "tool", "nm", bin).Output()
	if err != nil {
		t.Fatalf("go tool nm: %v", err)
	}
	if strings.Contains(string(nm), "freezeLoopForTest") {
		t.Error("the release binary holds the test-fault code")
	}
	for _, fault := range []string{"freeze-after-ready", "exit-after-ready", "ignore-stop-signals"} {
		t.Run(fault, func(t *testing.T) {
			e := newTestEnv(t, "")
			g := e.spawnGatewayBin(bin, "HERMES_TEST_FAULT="+fault)
			g.waitReady(20 * time.Second)
			// Past 3 heartbeats: a fault would show as frozen or gone by now.
			g.waitStatus(10*time.Second, "2s of uptime", func(st gatewayStatus) bool { return st.UptimeSeconds >= 2 })
			if code, body := httpGet(t, g.url+"/healthz"); code != 200 {
				t.Errorf("healthz = %d %q: the release binary acted on %s", code, body, fault)
			}
			g.signal(syscallTERM)
			if code := g.wait(10 * time.Second); code != exitOK {
				t.Errorf("TERM: exit %d, want 0\n%s", code, g.stderr.String())
			}
		})
	}
}
