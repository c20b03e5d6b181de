//go:build linux

// The systemd harness: a real systemd (the machine's /lib/systemd/systemd,
// 252 on Debian 12) booted as PID 1 of private pid, mount, uts, ipc and
// cgroup namespaces, so the unit tests install what install-unit writes and
// drive it with systemctl, without systemd being PID 1 of the machine.
//
// How it keeps the host safe (booting the distro's full sysinit.target on a
// shared root once ran systemd-tmpfiles and wiped the host's /tmp):
//   - the manager loads units only from /etc/systemd/system (the harness's
//     state dir, bound there), /run/systemd/system and stub targets the
//     harness writes: never the distro's /lib/systemd/system;
//   - / and /proc/sys are read-only inside; /run, /tmp, /var/tmp, /var/lib,
//     /var/log and /var/cache are private tmpfs; only the state dir is
//     writable, bound back in place;
//   - cgroups: a cgroup2 view rooted at a cgroup of the harness's own
//     (hermes-harness-*), so systemd runs unified and never touches the
//     host's trees; stop removes that subtree;
//   - the network namespace is the host's, so a gateway inside listening on
//     127.0.0.1:PORT is reachable from the test.
//
// The namespaced PID 1 starts as this test binary (HERMES_TEST_ROLE=
// systemd-pid1), finishes the mounts and execs systemd. Commands run inside
// through nsenter.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	systemdPath  = "/lib/systemd/systemd"
	harnessRole  = "systemd-pid1"
	harnessState = "HERMES_HARNESS_STATE"
	harnessCg    = "HERMES_HARNESS_CGROUP"
)

// The namespaced PID 1 runs before TestMain (which would build hermes).
func init() {
	if os.Getenv("HERMES_TEST_ROLE") != harnessRole {
		return
	}
	err := harnessPID1(os.Getenv(harnessState), os.Getenv(harnessCg))
	fmt.Fprintf(os.Stderr, "systemd harness PID 1: %v\n", err)
	os.Exit(1)
}

// harness is one booted systemd. Its state dir lives under /var/lib, not
// /tmp: the units under test have PrivateTmp=yes, which hides /tmp.
type harness struct {
	t      *testing.T
	state  string
	cgroup string
	cmd    *exec.Cmd
	exited chan struct{}
	log    bytes.Buffer
}

// startHarness boots systemd. Where it cannot (not root, a tool missing) it
// skips the test saying why, or in CI fails it (skipUnlessCI): CI has all of
// these, and a CI run without them would pass without ever testing a unit
// on systemd.
func startHarness(t *testing.T) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("boots systemd: skipped with -short")
	}
	if os.Geteuid() != 0 {
		skipUnlessCI(t, "needs root: the systemd harness (sdharness_test.go) unshares pid, mount and cgroup namespaces; run the tests as root")
	}
	for _, tool := range []string{"nsenter", systemdPath, "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipUnlessCI(t, "the systemd harness needs %s (%v): apt-get install systemd util-linux", tool, err)
		}
	}
	cg2, err := cgroup2Mount()
	if err != nil {
		skipUnlessCI(t, "the systemd harness needs cgroup v2: %v", err)
	}
	state, err := os.MkdirTemp("/var/lib", "hermes-harness-")
	if err != nil {
		skipUnlessCI(t, "cannot make a harness state dir under /var/lib: %v", err)
	}
	h := &harness{t: t, state: state, exited: make(chan struct{})}
	t.Cleanup(func() {
		if t.Failed() && h.running() {
			out, _ := h.exec("journalctl", "-b", "--no-pager", "-o", "short-monotonic")
			t.Logf("journal of the harness:\n%s", out)
		}
		if err := h.stop(); err != nil {
			t.Errorf("stopping the systemd harness: %v", err)
		}
		os.RemoveAll(state)
	})
	if err := h.boot(cg2); err != nil {
		t.Fatalf("starting the systemd harness: %v\n%s", err, h.log.String())
	}
	return h
}

// cgroup2Mount is where the host mounts cgroup v2: /sys/fs/cgroup when it is
// unified, /sys/fs/cgroup/unified in the hybrid layout.
func cgroup2Mount() (string, error) {
	for _, p := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"} {
		var st unix.Statfs_t
		if unix.Statfs(p, &st) == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return p, nil
		}
	}
	return "", errors.New("neither /sys/fs/cgroup nor /sys/fs/cgroup/unified is a cgroup2 mount")
}

func (h *harness) boot(cg2 string) error {
	if err := os.MkdirAll(filepath.Join(h.state, "system"), 0o755); err != nil {
		return err
	}
	if err := writeHarnessUnits(filepath.Join(h.state, "lib")); err != nil {
		return err
	}
	h.cgroup = filepath.Join(cg2, "hermes-harness-"+filepath.Base(h.state))
	if err := os.Mkdir(h.cgroup, 0o755); err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	h.cmd = exec.Command(self)
	h.cmd.Env = append(filteredEnv(), "HERMES_TEST_ROLE="+harnessRole,
		harnessState+"="+h.state, harnessCg+"="+h.cgroup)
	h.cmd.Stdout, h.cmd.Stderr = &h.log, &h.log
	h.cmd.SysProcAttr = &syscall.SysProcAttr{
		Setsid:     true,
		Cloneflags: unix.CLONE_NEWPID | unix.CLONE_NEWNS | unix.CLONE_NEWUTS | unix.CLONE_NEWIPC,
	}
	if err := h.cmd.Start(); err != nil {
		h.cmd = nil
		return err
	}
	go func() { h.cmd.Wait(); close(h.exited) }()
	deadline := time.Now().Add(30 * time.Second)
	last := ""
	for time.Now().Before(deadline) {
		select {
		case <-h.exited:
			return fmt.Errorf("systemd exited while booting (%v)", h.cmd.ProcessState)
		default:
		}
		out, _ := h.command(5*time.Second, "systemctl", "is-system-running")
		last = strings.TrimSpace(out)
		if last == "running" || last == "degraded" {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _ := h.exec("journalctl", "-b", "--no-pager")
	return fmt.Errorf("systemd did not reach running within 30s (last: %q)\n%s", last, out)
}

// harnessPID1 is PID 1 of the new namespaces: it moves into the harness's
// cgroup, makes the cgroup namespace there, sets up the mounts and execs
// systemd. It returns only on failure.
func harnessPID1(state, cgroup string) error {
	if state == "" || cgroup == "" {
		return errors.New("no state dir or cgroup given")
	}
	// The cgroup namespace is per thread: make it on this thread, and exec
	// from it.
	runtime.LockOSThread()
	if err := os.WriteFile(filepath.Join(cgroup, "cgroup.procs"), []byte("0"), 0); err != nil {
		return fmt.Errorf("entering %s: %w", cgroup, err)
	}
	if err := unix.Unshare(unix.CLONE_NEWCGROUP); err != nil {
		return fmt.Errorf("unshare cgroup: %w", err)
	}
	type mnt struct {
		src, dst, fstype string
		flags            uintptr
		data             string
	}
	steps := []mnt{
		{"", "/", "", unix.MS_REC | unix.MS_PRIVATE, ""},
		{"proc", "/proc", "proc", unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC, ""},
		{state, "/run/.harness-state", "", unix.MS_BIND, ""}, // made after /run below
	}
	mount := func(m mnt) error {
		if err := unix.Mount(m.src, m.dst, m.fstype, m.flags, m.data); err != nil {
			return fmt.Errorf("mount %s on %s: %w", m.src, m.dst, err)
		}
		return nil
	}
	for _, m := range steps[:2] {
		if err := mount(m); err != nil {
			return err
		}
	}
	// The state dir may live under /var/lib, about to be hidden: keep it
	// reachable through the new /run, then bind it back where it was.
	if err := mount(mnt{"tmpfs", "/run", "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755"}); err != nil {
		return err
	}
	if err := os.MkdirAll(steps[2].dst, 0o755); err != nil {
		return err
	}
	if err := mount(steps[2]); err != nil {
		return err
	}
	for _, p := range []string{"/tmp", "/var/tmp", "/var/lib", "/var/log", "/var/cache"} {
		if err := mount(mnt{"tmpfs", p, "tmpfs", unix.MS_NOSUID | unix.MS_NODEV, "mode=755"}); err != nil {
			return err
		}
	}
	for _, p := range []string{"/tmp", "/var/tmp"} {
		os.Chmod(p, 0o1777)
	}
	if err := os.MkdirAll(state, 0o755); err != nil {
		return err
	}
	more := []mnt{
		{steps[2].dst, state, "", unix.MS_BIND, ""},
		{filepath.Join(state, "system"), "/etc/systemd/system", "", unix.MS_BIND, ""},
		{"", "/", "", unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY, ""},
		{"/proc/sys", "/proc/sys", "", unix.MS_BIND, ""},
		{"", "/proc/sys", "", unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY, ""},
	}
	for _, m := range more {
		if err := mount(m); err != nil {
			return err
		}
	}
	if err := unix.Mount("cgroup2", "/sys/fs/cgroup", "cgroup2", 0, "nsdelegate"); err != nil {
		if err := mount(mnt{"cgroup2", "/sys/fs/cgroup", "cgroup2", 0, ""}); err != nil {
			return err
		}
	}
	for _, d := range []string{"/run/lock", "/run/systemd/journald.conf.d", "/var/lib/systemd"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// A private journald, in RAM, that leaves the host's kernel log alone.
	if err := os.WriteFile("/run/systemd/journald.conf.d/harness.conf",
		[]byte("[Journal]\nStorage=volatile\nReadKMsg=no\n"), 0o644); err != nil {
		return err
	}
	if err := unix.Sethostname([]byte("hermes-harness")); err != nil {
		return err
	}
	// PID 1 in a container logs to a tty only on /dev/console, so it logs to
	// the private journal: `journalctl -b` inside.
	env := []string{
		"container=hermes-harness",
		"SYSTEMD_UNIT_PATH=/etc/systemd/system:/run/systemd/system:" + filepath.Join(state, "lib"),
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	null, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	unix.Dup2(int(null.Fd()), 0)
	return unix.Exec(systemdPath, []string{systemdPath, "--system", "--log-target=journal",
		"--log-level=info", "--show-status=no"}, env)
}

// writeHarnessUnits writes the only units the manager loads besides the ones
// under test: stub targets, the shutdown chain and a private journald.
func writeHarnessUnits(dir string) error {
	units := map[string]string{
		"default.target":    "[Unit]\nDescription=harness default\nRequires=sysinit.target sockets.target\nWants=multi-user.target\n",
		"multi-user.target": "[Unit]\nDescription=harness multi-user\nRequires=basic.target\nAfter=basic.target\n",
		"basic.target":      "[Unit]\nDescription=harness basic\nRequires=sysinit.target sockets.target\nAfter=sysinit.target sockets.target\n",
		"shutdown.target":   "[Unit]\nDescription=Shutdown\nDefaultDependencies=no\nRefuseManualStart=yes\n",
		"final.target":      "[Unit]\nDescription=Final Step\nDefaultDependencies=no\nRefuseManualStart=yes\nAfter=shutdown.target umount.target\n",
		"umount.target":     "[Unit]\nDescription=Unmount All Filesystems\nDefaultDependencies=no\n",
		"systemd-journald.socket": `[Unit]
Description=Journal Socket
DefaultDependencies=no
Before=sockets.target
IgnoreOnIsolate=yes
[Socket]
ListenDatagram=/run/systemd/journal/socket
ListenStream=/run/systemd/journal/stdout
PassCredentials=yes
PassSecurity=yes
ReceiveBuffer=8M
Service=systemd-journald.service
SocketMode=0666
Timestamping=us
`,
		"systemd-journald.service": `[Unit]
Description=Journal Service
DefaultDependencies=no
Requires=systemd-journald.socket
After=systemd-journald.socket
Before=sysinit.target
IgnoreOnIsolate=yes
[Service]
ExecStart=/lib/systemd/systemd-journald
Sockets=systemd-journald.socket
Restart=always
RestartSec=0
RuntimeDirectory=systemd/journal
RuntimeDirectoryPreserve=yes
StandardOutput=null
Environment=SYSTEMD_LOG_LEVEL=warning
Type=notify
`,
	}
	for _, t := range []string{"sysinit", "sockets", "paths", "timers", "slices", "local-fs", "remote-fs",
		"network", "network-online", "network-pre", "nss-lookup", "time-sync", "getty", "swap"} {
		units[t+".target"] = fmt.Sprintf("[Unit]\nDescription=harness stub %s.target\n", t)
	}
	for _, how := range []string{"poweroff", "halt", "reboot"} {
		units[how+".target"] = fmt.Sprintf(`[Unit]
Description=%[1]s
DefaultDependencies=no
Requires=systemd-%[1]s.service
After=systemd-%[1]s.service
AllowIsolate=yes
JobTimeoutSec=30min
JobTimeoutAction=%[1]s-force
`, how)
		units["systemd-"+how+".service"] = fmt.Sprintf(`[Unit]
Description=System %[1]s
DefaultDependencies=no
Requires=shutdown.target umount.target final.target
After=shutdown.target umount.target final.target
SuccessAction=%[1]s-force
`, how)
	}
	for _, d := range []string{"", "sockets.target.wants", "sysinit.target.wants"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	for name, text := range units {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			return err
		}
	}
	if err := os.Symlink("../systemd-journald.socket", filepath.Join(dir, "sockets.target.wants", "systemd-journald.socket")); err != nil {
		return err
	}
	return os.Symlink("../systemd-journald.service", filepath.Join(dir, "sysinit.target.wants", "systemd-journald.service"))
}

func (h *harness) running() bool {
	if h.cmd == nil {
		return false
	}
	select {
	case <-h.exited:
		return false
	default:
		return true
	}
}

// stop powers the manager off (its units stop as on a real shutdown), kills
// the namespace if that takes over 30 s, and removes the harness's cgroups.
func (h *harness) stop() error {
	var errs []error
	if h.cmd != nil {
		select {
		case <-h.exited:
		default:
			// SIGRTMIN+4 is systemd's own "power off", asked of PID 1
			// directly: systemctl would ask over the bus, which a loaded
			// machine's systemd has been seen to miss for 10 s.
			h.cmd.Process.Signal(syscall.Signal(34 + 4)) // SIGRTMIN is 34 on Linux
			select {
			case <-h.exited:
			case <-time.After(30 * time.Second):
				errs = append(errs, errors.New("no clean poweroff within 30s: killed the namespace"))
				h.cmd.Process.Kill() // PID 1 dies, and the kernel kills its namespace
				<-h.exited
			}
		}
	}
	if h.cgroup != "" {
		if !strings.Contains(filepath.Base(h.cgroup), "hermes-harness-") {
			return fmt.Errorf("odd harness cgroup %s: left alone", h.cgroup)
		}
		// Depth first: a cgroup goes only once its children have.
		var dirs []string
		filepath.WalkDir(h.cgroup, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			os.Remove(dirs[i])
		}
		if _, err := os.Stat(h.cgroup); err == nil {
			errs = append(errs, fmt.Errorf("could not remove %s", h.cgroup))
		}
	}
	return errors.Join(errs...)
}

// command runs a command inside the harness's namespaces, with its output.
func (h *harness) command(timeout time.Duration, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	pid := strconv.Itoa(h.cmd.Process.Pid)
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"-t", pid, "-m", "-p", "-u", "-i", "-C", "--"}, args...)...)
	cmd.Env = filteredEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%v (timed out after %s)", err, timeout)
	}
	return out.String(), err
}

// exec runs a command inside the harness, with its output.
func (h *harness) exec(args ...string) (string, error) {
	return h.command(60*time.Second, args...)
}

// show reads one property of a unit.
func (h *harness) show(unit, prop string) string {
	h.t.Helper()
	out, err := h.exec("systemctl", "show", "-P", prop, unit)
	if err != nil {
		h.t.Fatalf("systemctl show %s %s: %v\n%s", prop, unit, err, out)
	}
	return strings.TrimSpace(out)
}

// waitFor polls cond until it holds or timeout passes.
func (h *harness) waitFor(what string, timeout time.Duration, cond func() bool) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			h.t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSystemdHarness boots and stops the harness alone: a failure here is
// the harness's, not a unit's.
func TestSystemdHarness(t *testing.T) {
	h := startHarness(t)
	if got := h.show("systemd-journald.service", "ActiveState"); got != "active" {
		t.Errorf("journald inside is %s, want active", got)
	}
	// PID 1 inside is systemd itself.
	out, err := h.exec("cat", "/proc/1/comm")
	if err != nil || strings.TrimSpace(out) != "systemd" {
		t.Errorf("PID 1 inside: %q %v", out, err)
	}
	// The host's root is read-only inside: nothing there can be written.
	if out, err := h.exec("sh", "-c", "echo x > /etc/hermes-harness-probe"); err == nil {
		h.exec("rm", "-f", "/etc/hermes-harness-probe")
		t.Errorf("wrote to the host's /etc from inside the harness: %s", out)
	}
	// Its /tmp is its own.
	probe, err := os.CreateTemp("", "harness-probe-")
	if err != nil {
		t.Fatal(err)
	}
	probe.Close()
	defer os.Remove(probe.Name())
	if _, err := h.exec("test", "-e", probe.Name()); err == nil {
		t.Errorf("the host's %s is visible inside: /tmp is not private", probe.Name())
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(probe.Name()); err != nil {
		t.Errorf("the host's /tmp lost %s while the harness ran: %v", probe.Name(), err)
	}
	if _, err := os.Stat(h.cgroup); !os.IsNotExist(err) {
		t.Errorf("the harness's cgroup %s is still there: %v", h.cgroup, err)
	}
	h.cmd = nil // stopped: the cleanup has nothing left to do
}
