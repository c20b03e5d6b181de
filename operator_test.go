package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The operator's paths (issue 11): the pid file tools can read, a gateway
// reached when its policy broke or was renamed, every gateway on the host
// listed, start, reload and logs, and a death without an exit on record.

// TestPidFileIsThePlainPid: the pid file holds the plain pid and nothing
// else, so `kill -HUP $(cat gateway.pid)` (and monit, start-stop-daemon,
// supervisord's pidproxy) work; the proof is in gateway.pid.json beside it,
// and both go when the gateway exits.
func TestPidFileIsThePlainPid(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	path := pidFilePath(e.stateDir)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != strconv.Itoa(g.pid())+"\n" {
		t.Fatalf("pid file holds %q, want the pid %d and a newline", b, g.pid())
	}
	proof, err := os.ReadFile(proofPath(path))
	if err != nil {
		t.Fatal(err)
	}
	var rec pidRecord
	if err := json.Unmarshal(proof, &rec); err != nil || rec.PID != g.pid() || rec.StateDir != e.stateDir || rec.BootID == "" {
		t.Errorf("proof %q: %v", proof, err)
	}
	out, err := exec.Command("bash", "-c", "kill -HUP $(cat "+path+")").CombinedOutput()
	if err != nil {
		t.Fatalf("kill -HUP $(cat gateway.pid): %v %s", err, out)
	}
	g.waitLog("reload ok", 10*time.Second)
	g.signal(syscall.SIGTERM)
	if code := g.wait(20 * time.Second); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	for _, p := range []string{path, proofPath(path)} {
		if _, err := os.Stat(p); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s left behind after a clean exit (%v)", p, err)
		}
	}

	// The files of an older hermes (a handoff from it) still read: the
	// JSON alone, or the pid and the JSON; a plain pid without a proof is
	// not believed.
	old, _ := json.Marshal(rec)
	for _, content := range []string{string(old), strconv.Itoa(rec.PID) + "\n" + string(old) + "\n"} {
		os.WriteFile(path, []byte(content), 0o644)
		if got, err := readPidFile(path); err != nil || got.PID != rec.PID {
			t.Errorf("older pid file %q: %+v %v", content, got, err)
		}
	}
	if _, err := parsePidFile([]byte("12\n" + string(old))); err == nil {
		t.Errorf("a first line that is not the record's pid was accepted")
	}
	os.WriteFile(path, []byte("12\n"), 0o644)
	if _, err := readPidFile(path); err == nil || !strings.Contains(err.Error(), "no proof") {
		t.Errorf("a plain pid without its proof: %v", err)
	}
}

// TestBrokenPolicyAfterStart: the policy file breaks while the gateway
// runs. status and stop still reach it (with the policy it runs with, and
// a word that the file is broken); restart and reload refuse without
// touching it, and say it runs on.
func TestBrokenPolicyAfterStart(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	os.WriteFile(e.policy, []byte("name = \"test\"\n[drain]\ntimeout = \n"), 0o600)

	out, errOut, code := e.hermes(20*time.Second, "status")
	if code != exitOK || !strings.Contains(out, "gateway:  serving") || !strings.Contains(errOut, "the policy file is broken") ||
		!strings.Contains(errOut, fmt.Sprintf("(pid %d)", g.pid())) {
		t.Errorf("status: exit %d\n%s\n%s", code, out, errOut)
	}
	for _, cmd := range []string{"restart", "reload", "start"} {
		out, errOut, code = e.hermes(20*time.Second, cmd)
		if code != exitConfig || !strings.Contains(errOut, "still runs with the policy it loaded before") ||
			!strings.Contains(errOut, "hermes stop --name test") {
			t.Errorf("%s: exit %d\n%s\n%s", cmd, code, out, errOut)
		}
		if g.hasExited() {
			t.Fatalf("%s with a broken policy ended the gateway", cmd)
		}
	}
	out, errOut, code = e.hermes(60*time.Second, "stop")
	if code != exitOK || !strings.Contains(errOut, "the policy file is broken") {
		t.Errorf("stop: exit %d\n%s\n%s", code, out, errOut)
	}
	if c := g.wait(20 * time.Second); c != exitOK {
		t.Errorf("the gateway exited %d after stop, want 0", c)
	}
}

// noPolicyEnv is e's environment without a policy anywhere in the lookup
// order (no HERMES_CONFIG, an empty XDG config home), and a directory with
// no hermes.toml to run in.
func noPolicyEnv(t *testing.T, e *testEnv) ([]string, string) {
	var env []string
	for _, kv := range e.env {
		if !strings.HasPrefix(kv, "HERMES_CONFIG=") {
			env = append(env, kv)
		}
	}
	return env, t.TempDir()
}

func runIn(t *testing.T, dir string, env []string, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(hermesBin, args...)
	cmd.Env, cmd.Dir = env, dir
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// TestStatusListsEveryInstance: with no policy to go by, status lists every
// gateway on the host from the registry, whoever started it and from
// wherever: here one of root's and one of nobody's; --name reaches either
// one; a stopped one leaves the list.
func TestStatusListsEveryInstance(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a gateway as another user")
	}
	// A registry every user can reach, as the real one is.
	top, err := os.MkdirTemp("", "hermes-registry-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(top) })
	os.Chmod(top, 0o755)
	registry := filepath.Join(top, "instances")
	e := newTestEnv(t, "")
	e.env = append(e.env, "HERMES_REGISTRY_DIR="+registry)
	g := e.startGateway()
	env, elsewhere := noPolicyEnv(t, e)

	// nobody's gateway, its policy and state in a dir of its own.
	dir, err := os.MkdirTemp("", "hermes-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	state := filepath.Join(dir, "state")
	os.Mkdir(state, 0o755)
	os.Chown(state, 65534, 65534)
	policy := filepath.Join(dir, "hermes.toml")
	addr := freePort(t)
	os.WriteFile(policy, []byte(fmt.Sprintf("name = \"other\"\n[gateway]\nlisten = %q\nstate_dir = %q\n", addr, state)), 0o644)
	gw := execAsNobody(t, hermesBin, "serve", "--config", policy)
	gw.Env = append(append([]string{}, env...), "HOME="+dir)
	log := &syncBuffer{}
	gw.Stdout, gw.Stderr = log, log
	if err := gw.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { gw.Process.Kill(); gw.Wait() })
	if !log.waitUntil(20*time.Second, nil, func(s string) bool { return strings.Contains(s, " ready ") }) {
		t.Fatalf("gateway as nobody not ready:\n%s", log.String())
	}

	// A dead gateway's entry, named to sort first: it is listed last.
	dead := exec.Command("true")
	dead.Run()
	t.Setenv("HERMES_REGISTRY_DIR", registry)
	os.Mkdir(filepath.Join(dir, "dead-state"), 0o755) // kept: a dead entry with no state dir is dropped
	if err := register(pidRecord{PID: dead.Process.Pid, StartTime: 1, Name: "aaa-dead", StateDir: filepath.Join(dir, "dead-state"), Listen: "127.0.0.1:1", UID: 0}); err != nil {
		t.Fatal(err)
	}

	out, code := runIn(t, elsewhere, env, "status")
	if code != exitOK || !strings.Contains(out, "NAME") {
		t.Fatalf("status with no policy: exit %d\n%s", code, out)
	}
	if d, s := strings.Index(out, "aaa-dead"), strings.Index(out, "serving"); d < 0 || s < 0 || d < s {
		t.Errorf("status lists the dead gateway before the ones that run:\n%s", out)
	}
	os.RemoveAll(filepath.Join(dir, "dead-state")) // and the next listing drops the entry
	checkReadmeStatusTable(t, out)
	for _, want := range [][]string{
		{"test", strconv.Itoa(g.pid()), "root", e.addr, "serving", "0", e.policy},
		{"other", strconv.Itoa(gw.Process.Pid), "nobody", addr, "serving", "0", policy},
	} {
		found := false
		for _, l := range strings.Split(out, "\n") {
			found = found || strings.Join(strings.Fields(l), " ") == strings.Join(want, " ")
		}
		if !found {
			t.Errorf("the list lacks the row %q:\n%s", want, out)
		}
	}
	out, code = runIn(t, elsewhere, env, "status", "--name", "other")
	if code != exitOK || !strings.Contains(out, "gateway:  serving") || !strings.Contains(out, fmt.Sprintf("(pid %d)", gw.Process.Pid)) {
		t.Errorf("status --name other: exit %d\n%s", code, out)
	}
	out, code = runIn(t, elsewhere, env, "status", "--name", "nosuch")
	// A name the registry does not know is a gateway that is not
	// running (a stopped one leaves the registry): 3, as for any other.
	if code != exitNotRunning || !strings.Contains(out, `no gateway named "nosuch"`) || !strings.Contains(out, "other: pid") {
		t.Errorf("status --name nosuch: exit %d, want %d\n%s", code, exitNotRunning, out)
	}
	// A target that is not running names the ones that are.
	stopped := newTestEnv(t, "")
	stopped.env = append(stopped.env, "HERMES_REGISTRY_DIR="+registry)
	out, _, code = stopped.hermes(20*time.Second, "status")
	if code != exitNotRunning || !strings.Contains(out, "gateways running on this host") || !strings.Contains(out, "hermes status --name NAME") {
		t.Errorf("status of a stopped instance: exit %d\n%s", code, out)
	}

	if out, code := runIn(t, elsewhere, env, "stop", "--name", "other"); code != exitOK {
		t.Fatalf("stop --name other: exit %d\n%s", code, out)
	}
	gw.Wait()
	if out, code := runIn(t, elsewhere, env, "stop", "--name", "test"); code != exitOK {
		t.Fatalf("stop --name test: exit %d\n%s", code, out)
	}
	g.wait(20 * time.Second)
	out, code = runIn(t, elsewhere, env, "status")
	if code != exitNotRunning || !strings.Contains(out, "no hermes gateway is running on this host") {
		t.Errorf("status with none running: exit %d\n%s", code, out)
	}
}

func envValue(env []string, key string) string {
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// TestRenamedInstanceIsNamed: the policy's name changes under a running
// gateway (its state dir follows the name). The commands of the new name
// find the old gateway, say so, and restart refuses to start a second one
// on the port the first still holds; stop --name, then start, works.
func TestRenamedInstanceIsNamed(t *testing.T) {
	e := newTestEnv(t, "")
	write := func(name string) {
		os.WriteFile(e.policy, []byte(fmt.Sprintf("name = %q\n[gateway]\nlisten = %q\n[drain]\ntimeout = \"5s\"\ngrace = \"1s\"\n", name, e.addr)), 0o600)
	}
	write("before")
	g := e.startGateway()
	write("after")
	out, _, code := e.hermes(20*time.Second, "status")
	if code != exitNotRunning || !strings.Contains(out, `runs as "before"`) || !strings.Contains(out, "hermes stop --name before") {
		t.Errorf("status after the rename: exit %d\n%s", code, out)
	}
	out, errOut, code := e.hermes(30*time.Second, "restart")
	if code == exitOK || !strings.Contains(out+errOut, `runs as "before"`) || g.hasExited() {
		t.Errorf("restart after the rename: exit %d\n%s\n%s", code, out, errOut)
	}
	if out, errOut, code := e.hermes(30*time.Second, "stop", "--name", "before"); code != exitOK {
		t.Fatalf("stop --name before: exit %d\n%s\n%s", code, out, errOut)
	}
	g.wait(20 * time.Second)
	out, errOut, code = e.hermes(30*time.Second, "start")
	if code != exitOK || !strings.Contains(out, "started:") {
		t.Fatalf("start: exit %d\n%s\n%s", code, out, errOut)
	}
	out, _, code = e.hermes(30*time.Second, "status", "--json")
	var st statusJSON
	if json.Unmarshal([]byte(out), &st) != nil || code != exitOK || st.Name != "after" {
		t.Errorf("status after start: exit %d\n%s", code, out)
	}
	e.hermes(30*time.Second, "stop")
}

// TestStartAndReload: start is idempotent; reload checks the file first,
// reports what the gateway did with it, and names keys that need a
// restart.
func TestStartAndReload(t *testing.T) {
	e := newTestEnv(t, "[drain]\ntimeout = \"5s\"\ngrace = \"1s\"\n")
	out, errOut, code := e.hermes(30*time.Second, "start")
	if code != exitOK || !strings.Contains(out, "started: nothing was running;") {
		t.Fatalf("start: exit %d\n%s\n%s", code, out, errOut)
	}
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil {
		t.Fatal(err)
	}
	out, _, code = e.hermes(30*time.Second, "start")
	if code != exitOK || !strings.Contains(out, fmt.Sprintf("already running: instance \"test\", pid %d", rec.PID)) {
		t.Errorf("second start: exit %d\n%s", code, out)
	}

	e.writePolicy("[drain]\ntimeout = \"7s\"\ngrace = \"1s\"\n")
	out, errOut, code = e.hermes(30*time.Second, "reload")
	if code != exitOK || !strings.Contains(out, "reloaded: the gateway runs with") {
		t.Errorf("reload: exit %d\n%s\n%s", code, out, errOut)
	}
	e.addr = freePort(t) // a new listen address: needs a restart
	e.writePolicy("[drain]\ntimeout = \"7s\"\ngrace = \"1s\"\n")
	out, errOut, code = e.hermes(30*time.Second, "reload")
	if code != exitOK || !strings.Contains(out, "reloaded, except: gateway.listen") {
		t.Errorf("reload of gateway.listen: exit %d\n%s\n%s", code, out, errOut)
	}
	os.WriteFile(e.policy, []byte("name = \"test\"\n[drain]\ntimeout = \"soon\"\n"), 0o600)
	out, errOut, code = e.hermes(30*time.Second, "reload")
	if code != exitConfig || !strings.Contains(errOut, "drain.timeout") {
		t.Errorf("reload of a broken policy: exit %d\n%s\n%s", code, out, errOut)
	}
	if ok, _ := rec.alive(); !ok {
		t.Fatal("the gateway is gone after the reloads")
	}
	e.writePolicy("[drain]\ntimeout = \"5s\"\ngrace = \"1s\"\n")
	if out, errOut, code := e.hermes(30*time.Second, "stop"); code != exitOK {
		t.Errorf("stop: exit %d\n%s\n%s", code, out, errOut)
	}
	out, errOut, code = e.hermes(30*time.Second, "reload")
	if code != exitNotRunning || !strings.Contains(errOut, "not running: nothing to reload") {
		t.Errorf("reload with nothing running: exit %d\n%s\n%s", code, out, errOut)
	}
}

// TestLogsAcrossRotation: logs -n reads the rotated file and the current
// one as one log; logs -f follows the name through a rotation.
func TestLogsAcrossRotation(t *testing.T) {
	e := newTestEnv(t, "")
	os.MkdirAll(e.stateDir, 0o700)
	path := gatewayLogPath(e.stateDir)
	os.WriteFile(path+".1", []byte("old 1\nold 2\nold 3\n"), 0o600)
	os.WriteFile(path, []byte("new 1\nnew 2\n"), 0o600)
	out, errOut, code := e.hermes(10*time.Second, "logs", "-n", "3")
	if code != exitOK || out != "old 3\nnew 1\nnew 2\n" {
		t.Errorf("logs -n 3: exit %d %q %s", code, out, errOut)
	}

	cmd := exec.Command(hermesBin, "logs", "-f", "-n", "1")
	cmd.Env = e.env
	buf := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = buf, buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	waitFor := func(s string) {
		t.Helper()
		if !buf.waitUntil(10*time.Second, nil, func(out string) bool { return strings.Contains(out, s) }) {
			t.Fatalf("logs -f never printed %q:\n%s", s, buf.String())
		}
	}
	waitFor("new 2\n")
	appendTo := func(p, s string) {
		f, _ := os.OpenFile(p, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		f.WriteString(s)
		f.Close()
	}
	appendTo(path, "new 3\n")
	waitFor("new 3\n")
	os.Rename(path, path+".1") // a rotator moves it away and starts a new one
	appendTo(path+".1", "late line of the old file\n")
	appendTo(path, "first of the next\n")
	waitFor("first of the next\n")
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Errorf("logs -f after Ctrl-C: %v", err)
	}
	if got := buf.String(); strings.Count(got, "new 3") != 1 || !strings.Contains(got, "late line of the old file") {
		t.Errorf("logs -f printed:\n%s", got)
	}

	os.Remove(path)
	os.Remove(path + ".1")
	_, errOut, code = e.hermes(10*time.Second, "logs")
	if code != exitFailure || !strings.Contains(errOut, "has no log file") || !strings.Contains(errOut, "hermes events") {
		t.Errorf("logs with no file: exit %d %s", code, errOut)
	}
}

// TestUncleanDeathRecorded: a gateway killed by SIGKILL records no exit;
// the next start finds that, records it as an unclean exit with the time
// the old one was last seen alive, and status and events show it.
func TestUncleanDeathRecorded(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	dead := g.pid()
	g.signal(syscall.SIGKILL)
	g.wait(10 * time.Second)
	g2 := e.startGateway()
	g2.waitLog("unclean exit", 10*time.Second)

	out, _, code := e.hermes(20*time.Second, "status")
	if code != exitOK || !strings.Contains(out, fmt.Sprintf("pid %-7d unclean", dead)) || !strings.Contains(out, "last seen alive") {
		t.Errorf("status after an unclean death: exit %d\n%s", code, out)
	}
	out, _, _ = e.hermes(20*time.Second, "events")
	if !strings.Contains(out, "unclean exit") || !strings.Contains(out, strconv.Itoa(dead)) {
		t.Errorf("events after an unclean death:\n%s", out)
	}
	// A planned stop leaves nothing unclean behind.
	e.hermes(30*time.Second, "stop")
	g2.wait(20 * time.Second)
	g3 := e.startGateway()
	defer g3.signal(syscall.SIGTERM)
	l, err := readStartLedger(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, x := range l.Exits {
		if x.Code == codeUnclean {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d unclean exits in the ledger, want 1: %+v", n, l.Exits)
	}
}

// TestInstallUnitChecks: a system unit refuses a binary under /tmp (which
// PrivateTmp hides from it) and a --run-as user who does not exist; each
// error says what to run instead.
func TestInstallUnitChecks(t *testing.T) {
	e := newTestEnv(t, "")
	if !underTmp(hermesBin) {
		t.Skipf("the test binary %s is not under /tmp", hermesBin)
	}
	unit := "/etc/systemd/system/" + unitFileName(managerSystemd, "test")
	_, errOut, code := e.hermes(10*time.Second, "install-unit", "--systemd", "--system", "--run-as", "root", "--systemd-version", "252")
	if code != exitFailure || !strings.Contains(errOut, "PrivateTmp=yes") || !strings.Contains(errOut, "sudo install -m 0755") {
		t.Errorf("install-unit --system from /tmp: exit %d\n%s", code, errOut)
	}
	if _, err := os.Stat(unit); err == nil {
		os.Remove(unit)
		t.Errorf("a refused install-unit wrote %s", unit)
	}
	// --print touches nothing, but says on stderr that the unit as printed
	// would not work (the README's promise).
	out, errOut, code := e.hermes(10*time.Second, "install-unit", "--systemd", "--system", "--run-as", "root", "--systemd-version", "252", "--print")
	if code != exitOK || !strings.Contains(out, "ExecStart=") || !strings.Contains(errOut, "warning: a system unit cannot use files under /tmp") {
		t.Errorf("install-unit --system --print from /tmp: exit %d\nstderr:\n%s", code, errOut)
	}
	_, errOut, code = e.hermes(10*time.Second, "install-unit", "--systemd", "--system", "--run-as", "nosuchuser-hermes",
		"--unit-dir", t.TempDir(), "--systemd-version", "252")
	if code != exitUsage || !strings.Contains(errOut, `no user "nosuchuser-hermes"`) || !strings.Contains(errOut, "useradd") {
		t.Errorf("install-unit --run-as nosuchuser: exit %d\n%s", code, errOut)
	}
}

// TestUserUnitWithoutUserBus: with no user service manager to reach,
// install-unit --enable says so and gives commands that work as printed
// (with --user), and uninstall-unit finishes (it stops the gateway the way
// hermes stop does, then removes the file).
func TestUserUnitWithoutUserBus(t *testing.T) {
	e := newTestEnv(t, "")
	e.env = append(e.env, "XDG_RUNTIME_DIR=") // no user bus here
	home := envValue(e.env, "XDG_CONFIG_HOME")
	_, errOut, code := e.hermes(10*time.Second, "install-unit", "--systemd", "--user", "--enable", "--systemd-version", "252")
	if code == exitOK || !strings.Contains(errOut, "XDG_RUNTIME_DIR is not set") ||
		!strings.Contains(errOut, "systemctl --user daemon-reload && systemctl --user enable --now hermes-test.service") {
		t.Errorf("install-unit --enable without a user bus: exit %d\n%s", code, errOut)
	}
	unitFile := filepath.Join(home, "systemd", "user", "hermes-test.service")
	if _, err := os.Stat(unitFile); err != nil {
		t.Fatalf("the unit was not written: %v", err)
	}
	g := e.startGateway()
	out, errOut, code := e.hermes(60*time.Second, "uninstall-unit", "--systemd", "--user")
	if code != exitOK || !strings.Contains(out, "removed: "+unitFile) {
		t.Errorf("uninstall-unit without a user bus: exit %d\n%s\n%s", code, out, errOut)
	}
	if c := g.wait(20 * time.Second); c != exitOK {
		t.Errorf("the gateway exited %d, want a drained 0", c)
	}
}

// TestPolicyFromCurrentDirectoryIsNamed: a command that found its policy as
// ./hermes.toml says so, since that is the one lookup that changes with
// where the command runs.
func TestPolicyFromCurrentDirectoryIsNamed(t *testing.T) {
	e := newTestEnv(t, "")
	g := e.startGateway()
	env, _ := noPolicyEnv(t, e)
	out, code := runIn(t, e.dir, env, "status")
	if code != exitOK || !strings.Contains(out, "(./hermes.toml: found in the current directory)") {
		t.Errorf("status in the policy's directory: exit %d\n%s", code, out)
	}
	out, code = runIn(t, e.dir, env, "stop")
	if code != exitOK || !strings.Contains(out, "found in the current directory") {
		t.Errorf("stop in the policy's directory: exit %d\n%s", code, out)
	}
	g.wait(20 * time.Second)
}

// checkReadmeStatusTable: the README's example of the host-wide table has
// the header and the last line of the real one, out, and rows of its shape.
func checkReadmeStatusTable(t *testing.T, out string) {
	t.Helper()
	want := readmeFenced(t, "status table:", "```")
	got := strings.Split(strings.TrimRight(out, "\n"), "\n")
	fields := func(l string) string { return strings.Join(strings.Fields(l), " ") }
	if len(want) < 3 || fields(want[0]) != fields(got[0]) || want[len(want)-1] != got[len(got)-1] {
		t.Errorf("the README's status table:\n%s\ndiffers in its header or last line from the real one:\n%s", strings.Join(want, "\n"), out)
		return
	}
	cols := len(strings.Fields(want[0]))
	for _, row := range want[1 : len(want)-1] {
		f := strings.Fields(row)
		if len(f) != cols {
			t.Errorf("the README's status row %q has %d columns, the header %d", row, len(f), cols)
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil || f[4] != "serving" {
			t.Errorf("the README's status row %q: want a pid and the state serving", row)
		}
	}
}
