package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// The service manager that owns the gateway, if any. hermes restarts a
// managed gateway through its manager, so the manager's state stays true
// and the restarter never depends on the dying gateway's cgroup.

// managerNone: nobody manages the gateway; hermes starts it itself.
// (managerSystemd and managerLaunchd are in unit.go.)
const managerNone = "none"

type managerInfo struct {
	Kind  string `json:"kind"`            // none, systemd, launchd
	Unit  string `json:"unit,omitempty"`  // unit name or launchd label
	Scope string `json:"scope,omitempty"` // system or user
	// systemd's view
	ActiveState string `json:"active_state,omitempty"`
	SubState    string `json:"sub_state,omitempty"`
	Result      string `json:"result,omitempty"`
	MainPID     int    `json:"main_pid,omitempty"`
	NRestarts   int    `json:"n_restarts,omitempty"`
	// launchd's view
	Plist   string `json:"plist,omitempty"`
	Loaded  bool   `json:"loaded,omitempty"`
	LastRun string `json:"last_exit,omitempty"`
}

// detectManager finds who manages this instance: a loaded systemd unit
// hermes-<name>.service (system scope first when root, else user), a
// launchd job dev.hermes.<name>, or nobody.
func detectManager(p *Policy) managerInfo {
	switch runtime.GOOS {
	case "linux":
		if _, err := os.Stat("/run/systemd/system"); err != nil {
			return managerInfo{Kind: managerNone} // systemd is not PID 1 here
		}
		scopes := []string{"user", "system"}
		if os.Geteuid() == 0 {
			scopes = []string{"system", "user"}
		}
		for _, scope := range scopes {
			m := managerInfo{Kind: managerSystemd, Unit: unitName(p.Name), Scope: scope}
			if m.refresh() && m.loaded() {
				return m
			}
		}
	case "darwin":
		for _, scope := range []string{"user", "system"} {
			m := managerInfo{Kind: managerLaunchd, Unit: launchdLabel(p.Name), Scope: scope}
			if m.refresh() {
				return m
			}
		}
	}
	return managerInfo{Kind: managerNone}
}

// systemctl runs systemctl in the manager's scope.
func (m *managerInfo) systemctl(ctx context.Context, args ...string) (string, error) {
	if m.Scope == "user" {
		args = append([]string{"--user"}, args...)
	}
	out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("systemctl %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func (m *managerInfo) command(args ...string) string {
	switch m.Kind {
	case managerSystemd:
		if m.Scope == "user" {
			return "systemctl --user " + strings.Join(args, " ")
		}
		return "systemctl " + strings.Join(args, " ")
	case managerLaunchd:
		return "launchctl " + strings.Join(args, " ")
	}
	return ""
}

func (m *managerInfo) launchdDomain() string {
	if m.Scope == "system" {
		return "system"
	}
	return fmt.Sprintf("gui/%d", os.Getuid())
}

// refresh re-reads the manager's view; false when the job is unknown.
func (m *managerInfo) refresh() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	switch m.Kind {
	case managerSystemd:
		out, err := m.systemctl(ctx, "show", "--property=LoadState,ActiveState,SubState,Result,MainPID,NRestarts", m.Unit)
		if err != nil {
			return false
		}
		props := map[string]string{}
		for _, l := range strings.Split(out, "\n") {
			if k, v, ok := strings.Cut(l, "="); ok {
				props[k] = v
			}
		}
		m.ActiveState, m.SubState, m.Result = props["ActiveState"], props["SubState"], props["Result"]
		m.MainPID, _ = strconv.Atoi(props["MainPID"])
		m.NRestarts, _ = strconv.Atoi(props["NRestarts"])
		return props["LoadState"] == "loaded"
	case managerLaunchd:
		m.Plist = launchdPlistPath(m.Scope, m.Unit)
		out, err := exec.CommandContext(ctx, "launchctl", "print", m.launchdDomain()+"/"+m.Unit).CombinedOutput()
		m.Loaded = err == nil
		if err != nil {
			_, serr := os.Stat(m.Plist)
			return serr == nil // installed but not loaded still counts
		}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(l, "pid = "); ok {
				m.MainPID, _ = strconv.Atoi(v)
			}
			if v, ok := strings.CutPrefix(l, "state = "); ok {
				m.ActiveState = v
			}
			if v, ok := strings.CutPrefix(l, "last exit code = "); ok {
				m.LastRun = v
			}
		}
		return true
	}
	return false
}

func (m *managerInfo) loaded() bool { return m.ActiveState != "" }

func launchdPlistPath(scope, label string) string {
	dir, _ := unitDir(managerLaunchd, scope == "system")
	return filepath.Join(dir, label+".plist")
}

// crashLooping reports whether the manager sees a crash loop (or gave up).
func (m *managerInfo) crashLooping() bool {
	return m.Kind == managerSystemd && (m.ActiveState == "failed" || m.SubState == "auto-restart" || m.Result == "start-limit-hit")
}

// problem describes a state a person must act on, with the command that
// fixes it; "" when there is none.
func (m *managerInfo) problem() string {
	if m.Kind != managerSystemd {
		return ""
	}
	switch {
	case m.Result == "start-limit-hit":
		return fmt.Sprintf("systemd gave up starting %s (start-limit-hit); fix: %s && %s (or: hermes restart)",
			m.Unit, m.command("reset-failed", m.Unit), m.command("start", m.Unit))
	case m.ActiveState == "failed":
		return fmt.Sprintf("%s failed (result %s); fix: %s && %s (or: hermes restart)",
			m.Unit, m.Result, m.command("reset-failed", m.Unit), m.command("start", m.Unit))
	case m.SubState == "auto-restart":
		return fmt.Sprintf("%s is waiting to be restarted after a failure (restarted %d times)", m.Unit, m.NRestarts)
	}
	return ""
}

func (m *managerInfo) describe() string {
	switch m.Kind {
	case managerSystemd:
		return fmt.Sprintf("systemd %s unit %s: %s/%s", m.Scope, m.Unit, m.ActiveState, m.SubState)
	case managerLaunchd:
		if !m.Loaded {
			return fmt.Sprintf("launchd %s job %s: not loaded (plist %s)", m.Scope, m.Unit, m.Plist)
		}
		return fmt.Sprintf("launchd %s job %s: %s", m.Scope, m.Unit, m.ActiveState)
	}
	return "none (hermes starts the gateway itself)"
}

// start makes the manager start a fresh gateway (the old one has exited)
// and returns what it did, for the progress line and the journal.
func (m *managerInfo) start(ctx context.Context) (string, error) {
	switch m.Kind {
	case managerSystemd:
		// A failed or start-limit-hit unit refuses to start until reset.
		m.systemctl(ctx, "reset-failed", m.Unit)
		m.refresh()
		verb := "start"
		if m.SubState == "auto-restart" {
			// systemd keeps a start job queued until the RestartSec timer
			// fires ("should be manually restarted, not started",
			// service_start in service.c): restart skips the wait.
			verb = "restart"
		}
		_, err := m.systemctl(ctx, verb, "--no-block", m.Unit)
		return m.command("reset-failed", m.Unit) + " && " + m.command(verb, m.Unit), err
	case managerLaunchd:
		action := ""
		if !m.Loaded {
			if out, err := exec.CommandContext(ctx, "launchctl", "bootstrap", m.launchdDomain(), m.Plist).CombinedOutput(); err != nil {
				return "", fmt.Errorf("launchctl bootstrap %s %s: %v: %s", m.launchdDomain(), m.Plist, err, strings.TrimSpace(string(out)))
			}
			m.Loaded = true
			action = m.command("bootstrap", m.launchdDomain(), m.Plist) + " && "
		}
		if out, err := exec.CommandContext(ctx, "launchctl", "kickstart", m.launchdDomain()+"/"+m.Unit).CombinedOutput(); err != nil {
			return "", fmt.Errorf("launchctl kickstart %s/%s: %v: %s", m.launchdDomain(), m.Unit, err, strings.TrimSpace(string(out)))
		}
		return action + m.command("kickstart", m.launchdDomain()+"/"+m.Unit), nil
	}
	return "", fmt.Errorf("no service manager")
}

// stop makes the manager stop the gateway for good (it will not bring it
// back): systemctl stop, or launchctl bootout. A socket unit that holds
// the gateway's address (install-unit --socket) stops first: left
// listening, the next connection would start the gateway again.
func (m *managerInfo) stop(ctx context.Context) error {
	switch m.Kind {
	case managerSystemd:
		units := []string{m.Unit}
		sock := strings.TrimSuffix(m.Unit, ".service") + ".socket"
		if out, err := m.systemctl(ctx, "show", "--property=LoadState", "--value", sock); err == nil && strings.TrimSpace(out) == "loaded" {
			units = []string{sock, m.Unit}
		}
		_, err := m.systemctl(ctx, append([]string{"stop"}, units...)...)
		return err
	case managerLaunchd:
		if !m.Loaded {
			return nil
		}
		out, err := exec.CommandContext(ctx, "launchctl", "bootout", m.launchdDomain()+"/"+m.Unit).CombinedOutput()
		if err != nil {
			return fmt.Errorf("launchctl bootout %s/%s: %v: %s", m.launchdDomain(), m.Unit, err, strings.TrimSpace(string(out)))
		}
		return nil
	}
	return nil
}

// logTail returns the last lines of the gateway's log, wherever it goes.
func (m *managerInfo) logTail(p *Policy, n int) string { return m.logTailSince(p, n, 0) }

// logTailSince is logTail of what the log file got after its first from
// bytes: what a command's own start or handoff wrote, never the lines of an
// older, unrelated gateway. (The journal of a unit is the unit's already.)
func (m *managerInfo) logTailSince(p *Policy, n int, from int64) string {
	if m.Kind == managerSystemd {
		args := []string{"-u", m.Unit, "-n", strconv.Itoa(n), "--no-pager", "-o", "short-precise"}
		if m.Scope == "user" {
			args = append([]string{"--user"}, args...)
		}
		out, err := exec.Command("journalctl", args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
	}
	return tailFileFrom(gatewayLogPath(p.Gateway.StateDir), n, from)
}

// fileSize is the size of path, 0 when it cannot be read.
func fileSize(path string) int64 {
	if st, err := os.Stat(path); err == nil {
		return st.Size()
	}
	return 0
}

func gatewayLogPath(stateDir string) string { return filepath.Join(stateDir, "gateway.log") }

func tailFile(path string, n int) string { return tailFileFrom(path, n, 0) }

// tailFileFrom is the last n lines of path after its first from bytes (all
// of it, if the file is now shorter: it was rotated or replaced).
func tailFileFrom(path string, n int, from int64) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	if from > 0 && from <= int64(len(b)) {
		b = b[from:]
	}
	if len(strings.TrimSpace(string(b))) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n") + "\n"
}

// startDetached starts `hermes serve` with the same policy, detached: its
// own session, stdin /dev/null, output appended to the state dir's log. It
// returns the child's pid and a channel closed when the child exits (with
// its exit code), so a start that fails at once is noticed.
func startDetached(p *Policy) (int, <-chan int, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, nil, fmt.Errorf("finding the hermes binary: %w", err)
	}
	if err := os.MkdirAll(p.Gateway.StateDir, 0o700); err != nil {
		return 0, nil, err
	}
	logf, err := os.OpenFile(gatewayLogPath(p.Gateway.StateDir), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return 0, nil, fmt.Errorf("opening gateway log: %w", err)
	}
	defer logf.Close()
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, nil, err
	}
	defer devnull.Close()
	args := []string{"serve"}
	if p.Path != "" {
		args = append(args, "--config", p.Path)
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	// Nothing of a manager's context leaks into a gateway it does not
	// manage, and no test fault into a gateway that a test did not start.
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "NOTIFY_SOCKET", "JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", "INVOCATION_ID",
			"HERMES_TEST_FAULT":
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("starting %s serve: %w", exe, err)
	}
	exited := make(chan int, 1)
	go func() {
		cmd.Wait()
		exited <- cmd.ProcessState.ExitCode()
		close(exited)
	}()
	return cmd.Process.Pid, exited, nil
}
