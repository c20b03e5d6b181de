//go:build linux

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// harnessPolicy is the policy of a gateway under the harness: a drain
// short enough for tests, and a RestartSec of 1 s.
func harnessPolicy(name, addr string) string {
	return fmt.Sprintf(`name = %q
[gateway]
listen = %q
[drain]
timeout = "5s"
grace = "1s"
[service]
restart_sec = "1s"
`, name, addr)
}

// TestUnitSystemdHarness installs the generated unit in a real systemd 252
// and holds it to its promises: READY=1 makes it active, kill -9 brings it
// back after RestartSec, stop drains a stream in flight within
// TimeoutStopSec, exit 78 is not restarted in a loop, uninstall-unit
// removes it. The binary and the policy sit in awkward paths (spaces,
// quotes, a backslash, $ and %), so the unit's escaping is proven on
// systemd itself.
// `hermes restart` run inside brings a new MainPID while a stream in flight
// finishes, and recovers a frozen gateway through systemd.
func TestUnitSystemdHarness(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	h := startHarness(t)
	const name = "sdtest"
	unit := unitName(name)
	addr := freePort(t)
	bin := filepath.Join(h.state, "bin $PATH 100%", "hermes")
	policy := filepath.Join(h.state, `policy "q" 'it' \ $HOME %n`, "hermes.toml")
	copyFile(t, hermesBin, bin, 0o755)
	goodPolicy := harnessPolicy(name, addr)
	if err := os.MkdirAll(filepath.Dir(policy), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(policy, []byte(goodPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr

	start := time.Now()
	out, err := h.exec(bin, "install-unit", "--system", "--run-as", "root", "--config", policy, "--enable")
	if err != nil {
		t.Fatalf("install-unit --system --enable: %v\n%s", err, out)
	}
	if !strings.Contains(out, "wrote: /etc/systemd/system/"+unit) {
		t.Errorf("install-unit said %q", out)
	}
	t.Logf("install-unit --enable took %s", time.Since(start).Round(time.Millisecond))
	if _, err := os.Stat(filepath.Join(h.state, "system", unit)); err != nil {
		t.Fatalf("the unit is not in /etc/systemd/system: %v", err)
	}

	t.Run("active through READY=1", func(t *testing.T) {
		// Type=notify: active/running only after the gateway sent READY=1.
		if got := h.show(unit, "ActiveState") + "/" + h.show(unit, "SubState"); got != "active/running" {
			t.Fatalf("state %s after enable --now, want active/running", got)
		}
		if got := h.show(unit, "Type"); got != "notify" {
			t.Errorf("Type=%s", got)
		}
		if code, body := httpGet(t, url+"/readyz"); code != 200 {
			t.Errorf("/readyz from the host: %d %s", code, body)
		}
		if got := h.show(unit, "TimeoutStopUSec"); got != "11s" {
			t.Errorf("TimeoutStopUSec=%s, want 11s (drain 5s + grace 1s + 5s)", got)
		}
		if got := h.show(unit, "StatusText"); got != "serving" {
			t.Errorf("StatusText=%q, want serving", got)
		}
	})

	t.Run("kill -9 restarts after RestartSec", func(t *testing.T) {
		pid := h.show(unit, "MainPID")
		before, _ := strconv.Atoi(h.show(unit, "NRestarts"))
		killed := time.Now()
		if out, err := h.exec("kill", "-9", pid); err != nil {
			t.Fatalf("kill -9 %s: %v\n%s", pid, err, out)
		}
		h.waitFor("a new gateway after kill -9", 20*time.Second, func() bool {
			n, _ := strconv.Atoi(h.show(unit, "NRestarts"))
			return n > before && h.show(unit, "ActiveState") == "active" && h.show(unit, "MainPID") != pid
		})
		back := time.Since(killed)
		t.Logf("back %s after kill -9 (MainPID %s -> %s)", back.Round(time.Millisecond), pid, h.show(unit, "MainPID"))
		if back < 900*time.Millisecond {
			t.Errorf("restarted after %s, before RestartSec=1s", back)
		}
		if code, _ := httpGet(t, url+"/readyz"); code != 200 {
			t.Errorf("/readyz after the restart: %d", code)
		}
	})

	// The gateway's pid, from its pid file inside the harness.
	gatewayPid := func() string {
		out, _ := h.exec("sh", "-c", "head -c 200 /var/lib/hermes/"+name+"/gateway.pid | tr -dc '0-9 :,\n' | grep -o '[0-9][0-9]*' | head -1")
		return strings.TrimSpace(out)
	}

	t.Run("hermes restart hands off with a stream in flight", func(t *testing.T) {
		// The unit's main process is the keeper, and stays: the gateway
		// moves to a new process among its children, and systemd sees no
		// restart and no failure. (A successor made main by MAINPID= would
		// be "alien" to systemd, which then SIGKILLs the whole cgroup at
		// the next stop: see handoff_keeper.go.)
		mainPid := h.show(unit, "MainPID")
		pid := gatewayPid()
		restarts := h.show(unit, "NRestarts")
		s := startStream(t, url, 40) // 40 words at 50ms: 2s, inside drain.timeout
		s.waitLines(t, 4, 10*time.Second)
		out, err := h.exec(bin, "restart", "--config", policy)
		if err != nil {
			t.Fatalf("hermes restart: %v\n%s", err, out)
		}
		if !strings.Contains(out, "handed off: pid "+pid) {
			t.Errorf("restart output:\n%s", out)
		}
		newPid := gatewayPid()
		if newPid == pid || h.show(unit, "MainPID") != mainPid || h.show(unit, "ActiveState") != "active" || h.show(unit, "SubState") != "running" {
			t.Errorf("gateway %s -> %s, MainPID %s -> %s, %s/%s", pid, newPid, mainPid, h.show(unit, "MainPID"), h.show(unit, "ActiveState"), h.show(unit, "SubState"))
		}
		if got := h.show(unit, "NRestarts"); got != restarts {
			t.Errorf("NRestarts %s -> %s: systemd counted a handoff as a restart", restarts, got)
		}
		body := s.waitDone(t, 15*time.Second)
		if !strings.Contains(body, "data: [DONE]") || strings.Contains(body, "event: error") {
			t.Errorf("the stream did not finish across the handoff:\n%s", body)
		}
		// The old gateway drains and exits; the unit stays as it was.
		h.waitFor("the old gateway gone", 20*time.Second, func() bool {
			out, _ := h.exec("sh", "-c", "kill -0 "+pid+" 2>/dev/null && echo alive")
			return !strings.Contains(out, "alive")
		})
		if h.show(unit, "ActiveState") != "active" || h.show(unit, "MainPID") != mainPid || h.show(unit, "NRestarts") != restarts {
			t.Errorf("after the old gateway exited: %s MainPID %s NRestarts %s", h.show(unit, "ActiveState"), h.show(unit, "MainPID"), h.show(unit, "NRestarts"))
		}
		if code, _ := httpGet(t, url+"/readyz"); code != 200 {
			t.Errorf("/readyz after the handoff: %d", code)
		}
	})

	t.Run("systemctl stop during a handoff's drain drains both gateways", func(t *testing.T) {
		// KillMode=mixed: once the main process (the successor) exits,
		// systemd kills what is left in the cgroup, a predecessor still
		// draining included. So the successor waits for it.
		old := startStream(t, url, 60) // 3 s, on the gateway about to hand off
		old.waitLines(t, 4, 10*time.Second)
		if out, err := h.exec(bin, "restart", "--config", policy); err != nil {
			t.Fatalf("hermes restart: %v\n%s", err, out)
		}
		fresh := startStream(t, url, 30) // 1.5 s, on the successor
		fresh.waitLines(t, 4, 10*time.Second)
		if out, err := h.exec("systemctl", "stop", unit); err != nil {
			t.Fatalf("systemctl stop: %v\n%s", err, out)
		}
		for name, s := range map[string]*stream{"predecessor's": old, "successor's": fresh} {
			if body := s.waitDone(t, 15*time.Second); !strings.Contains(body, "data: [DONE]") || strings.Contains(body, "event: error") {
				t.Errorf("the %s stream was cut by the stop:\n%s", name, body)
			}
		}
		if got := h.show(unit, "Result"); got != "success" {
			t.Errorf("Result=%s after the stop, want success", got)
		}
		if out, err := h.exec("systemctl", "start", unit); err != nil {
			t.Fatalf("systemctl start: %v\n%s", err, out)
		}
	})

	t.Run("hermes restart --mode drain while a stream is in flight", func(t *testing.T) {
		// A drain restart: the gateway exits 75, the keeper with it, and
		// systemd starts the unit again (RestartForceExitStatus=75).
		pid, mainPid := gatewayPid(), h.show(unit, "MainPID")
		s := startStream(t, url, 40) // 40 words at 50ms: 2s, inside drain.timeout
		s.waitLines(t, 4, 10*time.Second)
		out, err := h.exec(bin, "restart", "--mode", "drain", "--config", policy)
		if err != nil {
			t.Fatalf("hermes restart: %v\n%s", err, out)
		}
		body := s.waitDone(t, 15*time.Second)
		if !strings.Contains(body, "data: [DONE]") || strings.Contains(body, "event: error") {
			t.Errorf("the stream did not finish across the restart:\n%s", body)
		}
		newPid := gatewayPid()
		if newPid == pid || newPid == "" || h.show(unit, "MainPID") == mainPid || h.show(unit, "ActiveState") != "active" {
			t.Errorf("gateway %s -> %s, MainPID %s -> %s, %s: no new gateway", pid, newPid, mainPid, h.show(unit, "MainPID"), h.show(unit, "ActiveState"))
		}
		for _, want := range []string{"manager systemd", "verdict: serving", "sent USR1", "restarted: pid " + pid} {
			if !strings.Contains(out, want) {
				t.Errorf("restart output lacks %q:\n%s", want, out)
			}
		}
		st, _ := h.exec(bin, "status", "--config", policy)
		if !strings.Contains(st, "serving (pid "+newPid+")") || !strings.Contains(st, "matches the policy") {
			t.Errorf("status after restart:\n%s", st)
		}
	})

	t.Run("hermes restart of a frozen gateway", func(t *testing.T) {
		h.exec("systemctl", "set-environment", "HERMES_TEST_FAULT=freeze-after-ready")
		if out, err := h.exec("systemctl", "restart", unit); err != nil {
			t.Fatalf("systemctl restart: %v\n%s", err, out)
		}
		h.exec("systemctl", "unset-environment", "HERMES_TEST_FAULT")
		pid := h.show(unit, "MainPID")
		waitFrozen(t, url, 10*time.Second)
		t0 := time.Now()
		out, err := h.exec(bin, "restart", "--config", policy)
		took := time.Since(t0)
		if err != nil {
			t.Fatalf("hermes restart: %v\n%s", err, out)
		}
		t.Logf("frozen gateway under systemd back and ready in %s", took.Round(time.Millisecond))
		if !strings.Contains(out, "verdict: frozen") || !strings.Contains(out, "sent KILL") {
			t.Errorf("restart output:\n%s", out)
		}
		if newPid := h.show(unit, "MainPID"); newPid == pid || h.show(unit, "ActiveState") != "active" {
			t.Errorf("no new gateway: MainPID %s -> %s", pid, newPid)
		}
		if code, _ := httpGet(t, url+"/readyz"); code != 200 {
			t.Errorf("/readyz after recovering a frozen gateway: %d", code)
		}
	})

	t.Run("stop drains a stream in flight", func(t *testing.T) {
		s := startStream(t, url, 50) // 50 words at 50ms: 2.5s, inside drain.timeout
		s.waitLines(t, 4, 10*time.Second)
		stopped := time.Now()
		if out, err := h.exec("systemctl", "stop", unit); err != nil {
			t.Fatalf("systemctl stop: %v\n%s", err, out)
		}
		took := time.Since(stopped)
		t.Logf("systemctl stop took %s", took.Round(time.Millisecond))
		body := s.waitDone(t, 15*time.Second)
		if !strings.Contains(body, "data: [DONE]") || !strings.Contains(body, "w49") {
			t.Errorf("the stream was cut by the stop:\n%s", body)
		}
		if got := h.show(unit, "Result"); got != "success" {
			t.Errorf("Result=%s after a drained stop, want success (exit 0, not a timeout or kill)", got)
		}
		if got := h.show(unit, "ActiveState"); got != "inactive" {
			t.Errorf("ActiveState=%s after stop", got)
		}
	})

	t.Run("exit 78 is not restarted", func(t *testing.T) {
		broken := strings.Replace(goodPolicy, `timeout = "5s"`, `timeout = "soon"`, 1)
		if err := os.WriteFile(policy, []byte(broken), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, err := h.exec("systemctl", "start", unit); err == nil {
			t.Fatalf("systemctl start with a broken policy succeeded:\n%s", out)
		}
		// systemd decides at the exit: a restart to come shows as SubState
		// auto-restart (for RestartSec), no restart as failed/failed.
		if got := h.show(unit, "ExecMainStatus"); got != strconv.Itoa(exitConfig) {
			t.Errorf("ExecMainStatus=%s, want %d", got, exitConfig)
		}
		if got := h.show(unit, "ActiveState") + "/" + h.show(unit, "SubState"); got != "failed/failed" {
			t.Errorf("state %s, want failed/failed (auto-restart would mean a restart is coming)", got)
		}
		if got := h.show(unit, "NRestarts"); got != "0" {
			t.Errorf("NRestarts=%s: systemd restarted a gateway that exited %d", got, exitConfig)
		}
		journal, _ := h.exec("journalctl", "--no-pager", "-o", "cat", "-u", unit)
		if n := strings.Count(journal, "status=78/CONFIG"); n != 1 {
			t.Errorf("the gateway exited 78 %d times, want once:\n%s", n, journal)
		}
	})

	t.Run("runs as --run-as with its StateDirectory", func(t *testing.T) {
		// A second instance as nobody: systemd creates /var/lib/hermes/<name>
		// for it and names it in $STATE_DIRECTORY, the gateway's default.
		if err := os.Chmod(h.state, 0o755); err != nil {
			t.Fatal(err)
		}
		const name2 = "sdnobody"
		addr2 := freePort(t)
		policy2 := filepath.Join(h.state, "nobody.toml")
		if err := os.WriteFile(policy2, []byte(fmt.Sprintf("name = %q\n[gateway]\nlisten = %q\n", name2, addr2)), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := h.exec(bin, "install-unit", "--system", "--run-as", "nobody", "--config", policy2, "--enable")
		if err != nil {
			t.Fatalf("install-unit --run-as nobody: %v\n%s", err, out)
		}
		if got := h.show(unitName(name2), "ActiveState"); got != "active" {
			t.Fatalf("ActiveState=%s", got)
		}
		if code, _ := httpGet(t, "http://"+addr2+"/readyz"); code != 200 {
			t.Errorf("/readyz: %d", code)
		}
		owner, _ := h.exec("stat", "-c", "%U", "/var/lib/hermes/"+name2+"/gateway.pid")
		if strings.TrimSpace(owner) != "nobody" {
			t.Errorf("the pid file in /var/lib/hermes/%s is owned by %q, want nobody", name2, owner)
		}
		if out, err := h.exec(bin, "uninstall-unit", "--system", "--name", name2); err != nil {
			t.Errorf("uninstall-unit --name: %v\n%s", err, out)
		}
	})

	t.Run("uninstall-unit", func(t *testing.T) {
		if err := os.WriteFile(policy, []byte(goodPolicy), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := h.exec(bin, "uninstall-unit", "--system", "--config", policy)
		if err != nil || !strings.Contains(out, "removed: /etc/systemd/system/"+unit) {
			t.Fatalf("uninstall-unit: %v\n%s", err, out)
		}
		if got := h.show(unit, "LoadState"); got != "not-found" {
			t.Errorf("LoadState=%s after uninstall, want not-found", got)
		}
	})
}
