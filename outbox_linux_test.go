//go:build linux

package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestFullDiskGatewayServesAndDrains: the state dir on a small tmpfs that
// fills up after start. The gateway keeps serving (its journal writes fail
// and are counted), and a TERM drains a stream in flight and exits 0.
func TestFullDiskGatewayServesAndDrains(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	if os.Geteuid() != 0 {
		skipUnlessCI(t, "needs root to mount a tmpfs for the state dir: run the tests as root")
	}
	e := newTestEnv(t, "[echo]\nword_delay = \"20ms\"\n[drain]\ntimeout = \"20s\"\ngrace = \"1s\"\n")
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", e.stateDir, "tmpfs", 0, "size=1m,mode=0700"); err != nil {
		skipUnlessCI(t, "cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(e.stateDir, syscall.MNT_DETACH) })
	g := e.startGateway()

	// Fill the filesystem to the last byte.
	fill, err := os.Create(filepath.Join(e.stateDir, "filler"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte{'x'}, 4096)
	for {
		if _, err := fill.Write(chunk); err != nil {
			break
		}
	}
	for {
		if _, err := fill.Write(chunk[:1]); err != nil {
			break
		}
	}
	fill.Close()

	// Sessions log (client_gone lines) until the journal's last page is
	// full too and its writes fail.
	for i := 0; !strings.Contains(g.stderr.String(), "journal write failed"); i++ {
		if i == 200 {
			t.Fatalf("200 sessions on a full disk and no journal write failed:\n%s", g.stderr.String())
		}
		s := startStream(t, g.url, 100)
		s.waitLines(t, 4, 5*time.Second)
		s.cancel()
		g.waitLogCount("session client_gone", i+1, 5*time.Second)
	}
	if code, body := httpGet(t, g.url+"/healthz"); code != 200 {
		t.Errorf("healthz on a full disk = %d %q", code, body)
	}
	s := startStream(t, g.url, 60)
	s.waitLines(t, 4, 5*time.Second)
	g.signal(syscall.SIGTERM)
	if body := s.waitDone(t, 20*time.Second); !strings.Contains(body, "data: [DONE]") {
		t.Errorf("the stream in flight did not finish on a full disk:\n%s", body)
	}
	if code := g.wait(15 * time.Second); code != exitOK {
		t.Errorf("exit %d, want 0 (a normal drain)", code)
	}
	for _, want := range []string{"drain end", "exit code=0"} {
		if !strings.Contains(g.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, g.stderr.String())
		}
	}
}
