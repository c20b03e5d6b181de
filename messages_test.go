package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Messages people read: each says what happened in a whole sentence, and
// each hint is a command that works as printed.

func TestLockHolder(t *testing.T) {
	for _, tc := range []struct{ content, want string }{
		{"restart pid 4878\n", "a restart (pid 4878)"},
		{"stop pid 12\n", "a stop (pid 12)"},
		{"pid 4878 (./hermes restart --force)\n", "a restart, stop or start (pid 4878)"}, // written by an older hermes
		{"", "a restart, stop or start"},
		{"garbage", "a restart, stop or start"},
	} {
		if got := lockHolder(tc.content); got != tc.want {
			t.Errorf("lockHolder(%q) = %q, want %q", tc.content, got, tc.want)
		}
	}
}

// TestStartFailedHintWorksAsPrinted: after a failed start, the hint names
// the command that shows the log, and that command, run as printed,
// shows it.
func TestStartFailedHintWorksAsPrinted(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state dir") // a space: the path must be quoted
	os.MkdirAll(dir, 0o700)
	os.WriteFile(gatewayLogPath(dir), []byte("first line\nthe line that says why\n"), 0o600)
	p := defaultPolicy()
	p.Gateway.StateDir = dir
	r := &ladderRun{p: p}
	err := r.startFailed(managerInfo{Kind: managerNone}, errors.New("the new gateway exited with code 1 before it was ready"), "hermes restart")
	var he *hintError
	if !errors.As(err, &he) {
		t.Fatalf("no hint: %v", err)
	}
	want := fmt.Sprintf("see more of the log with: tail -n 50 '%s'\nthen run: hermes restart", gatewayLogPath(dir))
	if he.hint != want {
		t.Fatalf("hint:\n%s\nwant:\n%s", he.hint, want)
	}
	cmd := strings.TrimPrefix(strings.Split(he.hint, "\n")[0], "see more of the log with: ")
	out, cerr := exec.Command("sh", "-c", cmd).CombinedOutput()
	if cerr != nil || !strings.Contains(string(out), "the line that says why") {
		t.Errorf("%s, run as printed: %v\n%s", cmd, cerr, out)
	}
	for _, tc := range []struct {
		m    managerInfo
		want string
	}{
		{managerInfo{Kind: managerSystemd, Unit: "hermes-gw.service", Scope: "user"}, "journalctl --user -u hermes-gw.service -n 50 --no-pager"},
		{managerInfo{Kind: managerSystemd, Unit: "hermes-gw.service", Scope: "system"}, "journalctl -u hermes-gw.service -n 50 --no-pager"},
		{managerInfo{Kind: managerLaunchd, Unit: "dev.hermes.gw", Scope: "user"}, fmt.Sprintf("tail -n 50 '%s'", gatewayLogPath(dir))},
	} {
		if got := logCommand(tc.m, p, 50); got != tc.want {
			t.Errorf("logCommand(%s %s) = %q, want %q", tc.m.Kind, tc.m.Scope, got, tc.want)
		}
	}
}

// TestRestartWhenNothingRuns: a restart with nothing to restart says it
// started one, not "restarted: nothing running (not running)".
func TestRestartWhenNothingRuns(t *testing.T) {
	e := newTestEnv(t, restartPolicy)
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
	}
	rec := e.gatewayFromPidFile()
	want := fmt.Sprintf("started: nothing was running; pid %d serving on %s; ready ", rec.PID, e.addr)
	if !strings.Contains(out, want) || strings.Contains(out, "restarted:") {
		t.Errorf("restart output lacks %q:\n%s", want, out)
	}
}

// TestStatusHintWorksAsPrinted: status's hint names the policy it read,
// so the command finds the same gateway when run as printed.
func TestStatusHintWorksAsPrinted(t *testing.T) {
	e := newTestEnv(t, "")
	out, _, code := e.hermes(20*time.Second, "status")
	if want := "\nhint:     hermes restart --config " + e.policy + "\n"; code != exitNotRunning || !strings.Contains(out, want) {
		t.Errorf("status = %d, lacks %q:\n%s", code, want, out)
	}
}
