//go:build linux

package main

import (
	"bufio"
	"context"
	"debug/elf"
	"fmt"
	"net"
	"net/http"
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

// No container runtime runs here (a docker CLI without a daemon, no
// podman), so the image is tested as what it is: its file layout, with
// the binary built exactly as the Containerfile says, run as the image
// runs it (PID 1 of its own pid, mount and network namespaces, chrooted
// into the layout, as user 65534, the policy from HERMES_CONFIG).

// dialInNetns connects to addr from inside the network namespace of pid:
// the socket belongs to the namespace it was made in, so this one thread
// enters it for the dial and goes back.
func dialInNetns(pid int, addr string) (net.Conn, error) {
	runtime.LockOSThread()
	self, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer self.Close()
	target, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, fmt.Errorf("entering the network namespace of pid %d: %w", pid, err)
	}
	c, derr := net.DialTimeout("tcp", addr, 2*time.Second)
	if err := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); err != nil {
		// The thread stays locked and ends with this goroutine: it is in
		// the wrong namespace for anything else.
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("leaving the network namespace: %w", err)
	}
	runtime.UnlockOSThread()
	return c, derr
}

// imageLayout builds the binary as the Containerfile's comment says and
// lays out what the image holds, under a temp dir.
func imageLayout(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	os.Chmod(root, 0o755)
	bin := filepath.Join(root, "hermes")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build -trimpath -ldflags='-s -w': %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			t.Fatalf("the binary is dynamically linked: it cannot run FROM scratch")
		}
	}
	f.Close()
	ca := "/etc/ssl/certs/ca-certificates.crt"
	if _, err := os.Stat(ca); err != nil {
		skipUnlessCI(t, "no %s to copy into the image (apt-get install ca-certificates)", ca)
	}
	copyFile(t, ca, filepath.Join(root, ca), 0o644)
	copyFile(t, filepath.Join("deploy", "container.toml"), filepath.Join(root, containerPolicyPath), 0o644)
	state := filepath.Join(root, "var", "lib", "hermes")
	copyFile(t, filepath.Join("deploy", "state", "README"), filepath.Join(state, "README"), 0o644)
	for _, d := range []string{state, filepath.Join(root, "proc"), filepath.Join(root, "dev")} {
		os.MkdirAll(d, 0o755)
	}
	// What a runtime provides: /dev/null (bind-mounted inside the mount
	// namespace below).
	os.WriteFile(filepath.Join(root, "dev", "null"), nil, 0o666)
	if err := os.Chown(state, containerUID, containerUID); err != nil {
		t.Fatal(err)
	}
	return root
}

// TestContainerImageLayout: the image's layout, run as the image runs:
// it serves on 0.0.0.0:8642 in its own network namespace, hermes
// healthcheck inside says healthy, and a TERM to PID 1 drains a stream
// to [DONE] and exits 0.
func TestContainerImageLayout(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	if os.Geteuid() != 0 {
		skipUnlessCI(t, "needs root to unshare namespaces and chroot: run the tests as root")
	}
	for _, tool := range []string{"unshare", "nsenter", "chroot", "ip", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipUnlessCI(t, "%s is missing (util-linux, coreutils, iproute2, mount)", tool)
		}
	}
	root := imageLayout(t)
	e := newTestEnv(t, "")
	// PATH as Docker sets it: nothing is there in the image, but unshare
	// and sh run before the chroot.
	inside := []string{"HERMES_CONFIG=" + containerPolicyPath, "HOME=/", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
	script := fmt.Sprintf("ip link set lo up && mount --bind /dev/null %s/dev/null && exec chroot --userspec=%d:%d %s /hermes serve",
		root, containerUID, containerUID, root)
	g := e.spawnGatewayCmd([]string{"unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc=" + filepath.Join(root, "proc"), "sh", "-c", script},
		append(inside, "XDG_STATE_HOME=", "XDG_CONFIG_HOME=", "HERMES_REGISTRY_DIR=")...)
	g.waitLog(" ready ", 20*time.Second)
	pid1 := childOf(t, g.pid())
	if log := g.stderr.String(); !strings.Contains(log, `why="PID 1"`) {
		t.Errorf("no keeper as PID 1 in the image:\n%s", log)
	}
	if b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid1)); !strings.Contains(string(b), fmt.Sprintf("\nUid:\t%d\t", containerUID)) {
		t.Errorf("PID 1 does not run as %d:\n%s", containerUID, b)
	}

	// hermes healthcheck, as Docker runs it: in the container's namespaces
	// and root, as its user, with its environment.
	hc := exec.Command("nsenter", "-t", strconv.Itoa(pid1), "-p", "-m", "-n", "-r", "-w",
		"-S", strconv.Itoa(containerUID), "-G", strconv.Itoa(containerUID), "/hermes", "healthcheck")
	hc.Env = inside
	out, err := hc.CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "healthy: serving") || !strings.Contains(string(out), ":8642") {
		t.Errorf("hermes healthcheck in the container: %v: %s", err, out)
	}

	client := &http.Client{Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
			return dialInNetns(pid1, addr)
		},
	}}
	resp, err := client.Get("http://127.0.0.1:8642/readyz")
	if err != nil {
		t.Fatalf("GET /readyz in the container's network: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("/readyz = %d", resp.StatusCode)
	}
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("word ", 60) + `"}]}`
	resp, err = client.Post("http://127.0.0.1:8642/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("stream: %v %v", resp, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	var lines []string
	for len(lines) < 4 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	syscall.Kill(pid1, syscall.SIGTERM) // docker stop: STOPSIGNAL to PID 1
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if got := strings.Join(lines, "\n"); !strings.Contains(got, "data: [DONE]") || strings.Contains(got, "event: error") {
		t.Errorf("TERM to PID 1 of the image cut the stream:\n%s", got)
	}
	if code := g.wait(30 * time.Second); code != exitOK {
		t.Errorf("PID 1 exit %d, want 0:\n%s", code, g.stderr.String())
	}
	// The state volume holds what it should, written as 65534.
	for _, name := range []string{"events.jsonl", "starts.json"} {
		if st, err := os.Stat(filepath.Join(root, "var", "lib", "hermes", name)); err != nil {
			t.Errorf("the state volume lacks %s: %v", name, err)
		} else if uid := st.Sys().(*syscall.Stat_t).Uid; uid != containerUID {
			t.Errorf("%s belongs to uid %d, want %d", name, uid, containerUID)
		}
	}
}

// TestPID1ReapsAdoptedOrphans: a process orphaned inside the namespace (a
// `docker exec` that left a child behind) is adopted by PID 1, hermes's
// keeper, which reaps it when it exits: no zombie is left.
func TestPID1ReapsAdoptedOrphans(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	if _, err := exec.LookPath("nsenter"); err != nil {
		skipUnlessCI(t, "nsenter is missing (util-linux)")
	}
	e := newTestEnv(t, handoffPolicy)
	g, pid1 := asPID1(t, e)
	// sh starts a subshell that starts sleep and exits at once: sleep's
	// parent is gone, and the namespace's init adopts it.
	out, err := exec.Command("nsenter", "-t", strconv.Itoa(pid1), "-p", "sh", "-c", "(sleep 2 </dev/null >/dev/null 2>&1 &); exit 0").CombinedOutput()
	if err != nil {
		t.Fatalf("nsenter: %v: %s", err, out)
	}
	var orphan int
	deadline := time.Now().Add(5 * time.Second)
	for orphan == 0 && time.Now().Before(deadline) {
		// Any of PID 1's threads may become the parent: each thread has its
		// own children file, so look at every task's.
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid1))
		for _, task := range tasks {
			b, _ := os.ReadFile(task)
			for _, f := range strings.Fields(string(b)) {
				if c, _ := strconv.Atoi(f); procComm(c) == "sleep" {
					orphan = c
				}
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if orphan == 0 {
		t.Fatalf("the orphaned sleep was not adopted by PID 1 (pid %d)", pid1)
	}
	// It exits after 2s; PID 1 must reap it.
	deadline = time.Now().Add(5 * time.Second)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", orphan))
		if err != nil || procComm(orphan) != "sleep" {
			break // reaped: gone from /proc
		}
		if time.Now().After(deadline) {
			t.Fatalf("the adopted orphan %d was not reaped: %s", orphan, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// And the gateway serves on, and stops as it should.
	if code, _ := httpGet(t, g.url+"/readyz"); code != 200 {
		t.Errorf("/readyz = %d after reaping an orphan", code)
	}
	syscall.Kill(pid1, syscall.SIGTERM)
	if code := g.wait(20 * time.Second); code != exitOK {
		t.Errorf("PID 1 exit %d, want 0", code)
	}
}

func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}
