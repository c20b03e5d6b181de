//go:build linux

package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// smallStateDir mounts a 64 KiB tmpfs on the env's state dir (root only),
// unmounted when the test ends, and returns a function that fills it up
// and one that frees it again.
func smallStateDir(t *testing.T, e *testEnv) (fill, free func()) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipUnlessCI(t, "needs root: mounts a small tmpfs as the state dir")
	}
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", e.stateDir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size=64k,mode=700"); err != nil {
		skipUnlessCI(t, "cannot mount a tmpfs on %s: %v", e.stateDir, err)
	}
	t.Cleanup(func() {
		e.killGateway()
		if err := syscall.Unmount(e.stateDir, syscall.MNT_DETACH); err != nil {
			t.Errorf("unmounting the test's tmpfs %s: %v", e.stateDir, err)
		}
	})
	ballast := filepath.Join(e.stateDir, "ballast")
	fill = func() {
		t.Helper()
		f, err := os.OpenFile(ballast, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		b := make([]byte, 4096)
		for {
			if _, err := f.Write(b); err != nil {
				if !errors.Is(err, syscall.ENOSPC) {
					t.Fatalf("filling the state dir: %v", err)
				}
				break
			}
		}
		// And the last bytes of a block.
		for {
			if _, err := f.Write(b[:1]); err != nil {
				break
			}
		}
	}
	free = func() {
		t.Helper()
		if err := os.Remove(ballast); err != nil {
			t.Fatal(err)
		}
	}
	return fill, free
}

// TestHandoffToASuccessorThatCannotCommit: with the state dir full, the
// successor of a handoff cannot write its pid file. It must not serve,
// unmanaged: it undoes what it did and exits, the gateway before it serves
// on and says why, and status and stop find and end that gateway, before
// and after the space comes back.
func TestHandoffToASuccessorThatCannotCommit(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"20ms\"\n")
	fill, free := smallStateDir(t, e)
	g := e.startGateway()
	fill()

	out, errOut, code := e.hermes(60*time.Second, "restart")
	all := out + errOut
	if code == 0 || !strings.Contains(all, "could not take over") || !strings.Contains(all, "no space left") ||
		!strings.Contains(all, "serves on") {
		t.Errorf("hermes restart with the state dir full: rc %d\n%s", code, all)
	}
	g.waitLog("could not take over", 10*time.Second)

	// One gateway serves: the old one, found by its pid file still.
	status := func(when string) {
		t.Helper()
		out, errOut, code := e.hermes(20*time.Second, "status")
		if code != 0 || !strings.Contains(out, "serving (pid "+strconv.Itoa(g.pid())+")") {
			t.Errorf("hermes status %s: rc %d\n%s%s", when, code, out, errOut)
		}
	}
	status("with the state dir full")
	if c, body := httpGet(t, g.url+"/status"); c != 200 || !strings.Contains(body, `"pid":`+strconv.Itoa(g.pid())) || strings.Contains(body, `"handed_off":true`) {
		t.Errorf("/status after the failed handoff: %d %s", c, body)
	}
	free()
	status("after the space came back")
	out, errOut, code = e.hermes(30*time.Second, "stop")
	if code != 0 || strings.Contains(out+errOut, "nothing to stop") {
		t.Errorf("hermes stop: rc %d\n%s%s", code, out, errOut)
	}
	if c := g.wait(20 * time.Second); c != 0 {
		t.Errorf("the gateway exited %d after hermes stop, want 0", c)
	}
}

// TestGatewayFoundWithoutItsPidFile: a gateway whose pid file is gone is
// still found, proven (the kernel says who holds its control socket) and
// stopped; before, status said "not running" and stop "nothing to stop"
// while it served.
func TestGatewayFoundWithoutItsPidFile(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	for _, p := range []string{pidFilePath(e.stateDir), proofPath(pidFilePath(e.stateDir))} {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	out, errOut, code := e.hermes(20*time.Second, "status")
	if code != 0 || !strings.Contains(out, "serving (pid "+strconv.Itoa(g.pid())+")") || !strings.Contains(out, "found by its control socket") {
		t.Errorf("hermes status without a pid file: rc %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = e.hermes(30*time.Second, "stop")
	if code != 0 || strings.Contains(out+errOut, "nothing to stop") {
		t.Errorf("hermes stop without a pid file: rc %d\n%s%s", code, out, errOut)
	}
	if c := g.wait(20 * time.Second); c != 0 {
		t.Errorf("the gateway exited %d after hermes stop, want 0", c)
	}
}

// TestStartWithTheStateDirFull: a gateway that cannot write its log cannot
// say why it failed; hermes start says it for it.
func TestStartWithTheStateDirFull(t *testing.T) {
	e := newTestEnv(t, "")
	fill, _ := smallStateDir(t, e)
	fill()
	out, errOut, code := e.hermes(30*time.Second, "start")
	if code == 0 || !strings.Contains(errOut, "no space left on device") || !strings.Contains(errOut, "free space in") {
		t.Errorf("hermes start with the state dir full: rc %d\n%s%s", code, out, errOut)
	}
}

// TestRestartWhenTheBinaryIsGone: a gateway whose binary was removed (as
// `go run` removes its build) cannot start a successor from it. The
// handoff is refused saying why, and hermes restart drains instead: the
// stream in flight finishes and a new gateway serves.
func TestRestartWhenTheBinaryIsGone(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "[echo]\nword_delay = \"20ms\"\n")
	bin := filepath.Join(t.TempDir(), "go-build123", "exe", "hermes")
	copyFile(t, hermesBin, bin, 0o755)
	g := e.spawnGatewayBin(bin)
	g.waitReady(20 * time.Second)
	if err := os.Remove(bin); err != nil {
		t.Fatal(err)
	}
	s := startStream(t, g.url, 50)
	s.waitLines(t, 1, 10*time.Second)
	out, errOut, code := e.hermes(60*time.Second, "restart")
	all := out + errOut
	if code != 0 || !strings.Contains(all, "is gone") || !strings.Contains(all, "go build") {
		t.Errorf("hermes restart with the binary gone: rc %d\n%s", code, all)
	}
	if text := s.waitDone(t, 30*time.Second); !strings.Contains(text, "[DONE]") {
		t.Errorf("the stream in flight did not finish:\n%s", text)
	}
	if c := g.wait(20 * time.Second); c != exitRestart {
		t.Errorf("the old gateway exited %d, want %d (a drain restart)", c, exitRestart)
	}
	if c, _ := httpGet(t, g.url+"/readyz"); c != 200 {
		t.Errorf("no gateway serves after the restart: /readyz %d", c)
	}
}

// TestStartFailureShowsOnlyItsOwnLog: the log tail a failed start prints
// is what that start wrote, not an older gateway's lines before it.
func TestStartFailureShowsOnlyItsOwnLog(t *testing.T) {
	e := newTestEnv(t, "listen_timeout = \"0s\"\n")
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	old := "2026-01-01T00:00:00.000Z hermes[1] an older gateway's line, unrelated\n"
	if err := os.WriteFile(gatewayLogPath(e.stateDir), []byte(strings.Repeat(old, 30)), 0o600); err != nil {
		t.Fatal(err)
	}
	held, err := net.Listen("tcp", e.addr) // the port is taken: the start fails
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	_, errOut, code := e.hermes(30*time.Second, "start")
	if code == 0 || !strings.Contains(errOut, "last lines of its log") || !strings.Contains(errOut, e.addr) {
		t.Fatalf("hermes start on a held port: rc %d\n%s", code, errOut)
	}
	if strings.Contains(errOut, "an older gateway's line") {
		t.Errorf("the failed start shows an older gateway's log:\n%s", errOut)
	}
}
