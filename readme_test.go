//go:build linux

// The README's demo and build lines, run as a newcomer runs them, so the
// first things anyone pastes cannot rot. Linux only: the demo is pasted
// into bash on a pseudo-terminal opened with Linux's ioctls, and the
// promise of a static binary is about ELF (a macOS binary always links
// libSystem).

package main

import (
	"bytes"
	"context"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestReadmeDemo pastes the README's one-minute demo into bash and checks
// what it promises: the stream survives `kill -TERM` to its last word and
// [DONE], the log shows the drain, hermes exits 0 and bash says so.
//
// Two things differ from a newcomer's run, both on purpose:
//   - `go` is a fake (fakeGoBuild, first in PATH) that copies the hermes
//     this test run built (TestMain) to where `go build -o FILE .` would
//     put it: the temp dir has no source, and a second build would cost a
//     minute for nothing the release build test does not cover.
//   - The demo's hard-coded 127.0.0.1:8642 is replaced by a free loopback
//     port, which HERMES_CONFIG's policy (newTestEnv) also listens on, with
//     a private state dir: tests run in parallel beside other gateways.
//
// It runs twice: pasted into an interactive bash on a pseudo-terminal (job
// control on, history expansion on, as in a terminal window) and as a bash
// script. A demo that signals a job spec (`kill %1`) rather than the
// gateway's pid, or whose jobs are not the gateway itself, reports a
// status other than 0 or never ends; one that starts curl before the
// gateway listens has no stream; either fails here.
func TestReadmeDemo(t *testing.T) {
	block := strings.Join(readmeBlock(t, "demo:"), "\n") + "\n"
	for _, tool := range []string{"bash", "curl"} {
		if _, err := exec.LookPath(tool); err != nil {
			skipUnlessCI(t, "the README demo runs %s, which is not installed: apt-get install %s", tool, tool)
		}
	}
	const addr = "127.0.0.1:8642"
	if strings.Count(block, addr) == 0 || strings.Count(block, "8642") != strings.Count(block, addr) {
		t.Fatalf("the demo must name the gateway's address only as %s (the test replaces it):\n%s", addr, block)
	}
	m := regexp.MustCompile(`seq -s' ' 1 (\d+)`).FindStringSubmatch(block)
	if m == nil {
		t.Fatalf("the demo's message is no longer `seq -s' ' 1 N`; teach this test the words it sends:\n%s", block)
	}
	words, _ := strconv.Atoi(m[1])

	for _, c := range []struct {
		name string
		run  func(t *testing.T, e *testEnv, script string) (string, int)
	}{
		{"pasted into an interactive bash", pasteIntoBash},
		{"run as a bash script", runBashScript},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, "")
			script := strings.ReplaceAll(block, addr, e.addr)
			fakeGoBuild(t, e)
			out, code := c.run(t, e, script)
			checkDemo(t, e, out, code, words)
		})
	}
}

// fakeGoBuild puts a program named go first in the env's PATH that stands in
// for `go build -o FILE .` by copying hermesBin to FILE, and refuses any
// other command line.
func fakeGoBuild(t *testing.T, e *testEnv) {
	t.Helper()
	dir := filepath.Join(e.dir, "fake-go")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	script := fmt.Sprintf(`#!/bin/sh
# fakeGoBuild (readme_test.go): copies the hermes the test run built.
if [ "$#" = 4 ] && [ "$1" = build ] && [ "$2" = -o ] && [ "$4" = . ]; then
	exec cp %q "$3"
fi
echo "fake go: the demo may run only 'go build -o FILE .', not: go $*" >&2
exit 1
`, hermesBin)
	if err := os.WriteFile(filepath.Join(dir, "go"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	for i, kv := range e.env {
		if strings.HasPrefix(kv, "PATH=") {
			e.env[i] = "PATH=" + dir + ":" + kv[len("PATH="):]
			return
		}
	}
	e.env = append(e.env, "PATH="+dir+":/usr/bin:/bin")
}

// demoTimeout bounds a whole run of the demo: normally 4 s (a second before
// the TERM, then the rest of the 3 s stream).
const demoTimeout = 60 * time.Second

// runBashScript runs the demo with `bash -s`, reading it from stdin as a
// paste does, and returns everything bash and its jobs wrote.
func runBashScript(t *testing.T, e *testEnv, script string) (string, int) {
	ctx, cancel := context.WithTimeout(context.Background(), demoTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "--norc", "--noprofile", "-s")
	cmd.Dir, cmd.Env = e.dir, e.env
	cmd.Stdin = strings.NewReader(script)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 5 * time.Second // a job left holding the output
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("the demo did not finish within %s:\n%s", demoTimeout, out.String())
	}
	if errors.Is(err, exec.ErrWaitDelay) {
		t.Fatalf("bash exited, but a process it started (the gateway?) still held its output %s later:\n%s", cmd.WaitDelay, out.String())
	}
	return out.String(), exitCodeOf(t, err)
}

// pasteIntoBash starts an interactive bash on a new pseudo-terminal, waits
// for its prompt, writes the demo and `exit` into the terminal as a paste
// would, and returns what the terminal showed once bash and every process
// holding the terminal are gone.
func pasteIntoBash(t *testing.T, e *testEnv, script string) (string, int) {
	master, slave := openPty(t)
	const prompt = "demo-prompt$ "
	cmd := exec.Command("bash", "--norc", "--noprofile", "-i")
	cmd.Dir = e.dir
	cmd.Env = append(append([]string{}, e.env...), "PS1="+prompt, "TERM=dumb", "HISTFILE=/dev/null")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()
	var screen syncBuffer
	shown := make(chan struct{})
	go func() {
		io.Copy(&screen, master) // ends with EIO once the last holder of the terminal is gone
		close(shown)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cmd.Process.Signal(syscall.SIGHUP) // bash passes a hangup on to its jobs
			cmd.Process.Kill()
		}
		master.Close()
	})

	if !screen.waitUntil(20*time.Second, shown, func(s string) bool { return strings.Contains(s, prompt) }) {
		t.Fatalf("no prompt from bash:\n%s", screen.String())
	}
	if _, err := io.WriteString(master, script+"exit\n"); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(demoTimeout)
	var err error
	select {
	case err = <-exited:
	case <-deadline:
		t.Fatalf("bash did not exit within %s:\n%s", demoTimeout, screen.String())
	}
	stopped = true
	select {
	case <-shown:
	case <-deadline:
		t.Fatalf("bash exited, but something still holds its terminal after %s:\n%s", demoTimeout, screen.String())
	}
	return screen.String(), exitCodeOf(t, err)
}

// openPty opens a new pseudo-terminal pair (posix_openpt, unlockpt,
// ptsname, as in pty(7)).
func openPty(t *testing.T) (master, slave *os.File) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		skipUnlessCI(t, "no pseudo-terminals here (%v): the demo is pasted into bash on one", err)
	}
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		master.Close()
		t.Fatalf("unlockpt: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		master.Close()
		t.Fatalf("ptsname: %v", err)
	}
	slave, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		master.Close()
		t.Fatal(err)
	}
	// Wide enough that readline never wraps a line of the demo.
	unix.IoctlSetWinsize(int(slave.Fd()), unix.TIOCSWINSZ, &unix.Winsize{Row: 50, Col: 250})
	return master, slave
}

func exitCodeOf(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("bash: %v", err)
	return -1
}

var (
	sseData     = regexp.MustCompile(`data: (\{[^\r\n]*\}|\[DONE\])`)
	termInDemo  = regexp.MustCompile(`hermes\[\d+\] signal signal=TERM action=drain [^\r\n]*sessions=1`)
	exitInDemo  = regexp.MustCompile(`hermes\[\d+\] exit code=0 reason="planned stop"`)
	drainInDemo = regexp.MustCompile(`hermes\[\d+\] drain end `)
)

// checkDemo holds the demo's output to the README's promises.
func checkDemo(t *testing.T, e *testEnv, out string, code, words int) {
	t.Helper()
	defer func() {
		if t.Failed() {
			t.Logf("what the demo showed:\n%s", out)
		}
	}()
	if code != 0 {
		t.Errorf("bash exited %d, want 0", code)
	}
	// The demo's gateway is the test's: its policy, its port.
	if !strings.Contains(out, "policy="+e.policy) || !strings.Contains(out, "listen="+e.addr) {
		t.Fatalf("the demo's gateway did not run on the test's policy %s and address %s", e.policy, e.addr)
	}

	// The whole answer: every word in order, then [DONE], no error event.
	var answer strings.Builder
	done := -1
	for _, m := range sseData.FindAllStringSubmatchIndex(out, -1) {
		data := out[m[2]:m[3]]
		if data == "[DONE]" {
			if done >= 0 {
				t.Errorf("two data: [DONE]")
			}
			done = m[0]
			continue
		}
		if done >= 0 {
			t.Errorf("an event after data: [DONE]: %s", data)
		}
		var chunk struct {
			Choices []struct {
				Delta struct{ Content string }
			}
		}
		if err := json.Unmarshal([]byte(data), &chunk); err != nil || len(chunk.Choices) != 1 {
			t.Fatalf("a stream event that is not a chat completion chunk (%v): %s", err, data)
		}
		answer.WriteString(chunk.Choices[0].Delta.Content)
	}
	var want []string
	for i := 1; i <= words; i++ {
		want = append(want, strconv.Itoa(i))
	}
	if got := answer.String(); got != strings.Join(want, " ") {
		t.Errorf("the stream carried %q, want the %d words %q", got, words, strings.Join(want, " "))
	}
	if done < 0 {
		t.Errorf("the stream has no data: [DONE]")
	}
	if strings.Contains(out, "event: error") {
		t.Errorf("the stream ended with an error event, not with its last word")
	}

	// The TERM came while the stream ran, and the gateway drained it.
	term := termInDemo.FindStringIndex(out)
	switch {
	case term == nil:
		t.Errorf("no log line `signal signal=TERM action=drain ... sessions=1`: the TERM did not reach the gateway mid-stream")
	case done >= 0 && term[0] > done:
		t.Errorf("the TERM arrived after the stream's [DONE]: nothing was drained")
	}
	if !drainInDemo.MatchString(out) || !exitInDemo.MatchString(out) {
		t.Errorf("the log lacks `drain end` or `exit code=0 reason=\"planned stop\"`")
	}
	if !strings.Contains(out, "hermes exited with status 0") {
		t.Errorf("the demo did not print `hermes exited with status 0`")
	}
	if strings.Contains(out, "Terminated") {
		t.Errorf("the shell reported a job Terminated: the TERM went to something other than the gateway")
	}
}

// TestReadmeReleaseBuild runs the README's release build line (the block
// marked `release build:`) and checks that the binary is what the README
// says: static (no program interpreter, no needed libraries), stripped
// (no symbol table, no DWARF), free of the build machine's paths
// (-trimpath), and a working hermes. The line is read from README.md, so
// the README and this test cannot drift apart; only its output file is
// changed, from ./hermes to a temp dir, so that the test leaves the
// checkout alone. The cross builds (marked `cross builds:`) are checked to
// be that same line with GOOS and GOARCH set, for the four targets; they
// are not built here (vet builds the darwin side of the code in CI).
func TestReadmeReleaseBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary of its own: skipped with -short")
	}
	t.Parallel()
	release := readmeBlock(t, "release build:")
	if len(release) != 1 {
		t.Fatalf("the release build block must be one line, not %q", release)
	}
	line := release[0]
	const output = " -o hermes ."
	if !strings.HasSuffix(line, output) {
		t.Fatalf("the release build line must end in %q (the test replaces the output): %s", output, line)
	}

	targets := map[string]bool{"linux/amd64": false, "linux/arm64": false, "darwin/amd64": false, "darwin/arm64": false}
	for _, cross := range readmeBlock(t, "cross builds:") {
		m := regexp.MustCompile(`GOOS=(\w+) GOARCH=(\w+)`).FindStringSubmatch(cross)
		if m == nil {
			t.Errorf("a cross build line without GOOS= GOARCH=: %s", cross)
			continue
		}
		goos, goarch := m[1], m[2]
		want := strings.Replace(line, "CGO_ENABLED=0 ", "CGO_ENABLED=0 GOOS="+goos+" GOARCH="+goarch+" ", 1)
		want = strings.TrimSuffix(want, output) + " -o hermes-" + goos + "-" + goarch + " ."
		if cross != want {
			t.Errorf("cross build line\n  %s\nis not the release line with GOOS and GOARCH:\n  %s", cross, want)
		}
		targets[goos+"/"+goarch] = true
	}
	for target, listed := range targets {
		if !listed {
			t.Errorf("the README lists no cross build for %s", target)
		}
	}

	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "hermes")
	cmd := exec.Command("bash", "-c", strings.TrimSuffix(line, output)+" -o '"+bin+"' .")
	cmd.Dir = wd
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "GOOS", "GOARCH", "CGO_ENABLED": // the host's build, as the line itself says
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("the binary has a program interpreter (PT_INTERP): it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the binary needs shared libraries (DT_NEEDED) %v (%v)", libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("the binary has a symbol table: not built with -ldflags=-s")
	}
	for _, s := range f.Sections {
		if strings.HasPrefix(s.Name, ".debug_") || strings.HasPrefix(s.Name, ".zdebug_") {
			t.Errorf("the binary has DWARF (%s): not built with -ldflags=-w", s.Name)
			break
		}
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(wd+"/")) {
		t.Errorf("the binary holds the checkout's path %s: not built with -trimpath", wd)
	}
	out, err := exec.Command(bin, "version").CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "hermes ") {
		t.Errorf("%s version: %v %q", bin, err, out)
	}
	t.Logf("%s: %d bytes", line, len(data))
}

// TestReadmePolicyError runs check-config on the README's example of a bad
// policy and compares what it prints with what the README shows, so the
// example cannot drift from the real message.
func TestReadmePolicyError(t *testing.T) {
	want := strings.Join(readmeFenced(t, "policy error:", "```"), "\n")
	src, err := os.ReadFile(filepath.Join("testdata", "readme", "bad-policy.toml"))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "hermes.toml")
	if err := os.WriteFile(path, src, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(hermesBin, "check-config", "--config", path)
	cmd.Env = filteredEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitConfig {
		t.Fatalf("check-config of the README's bad policy: %v, want exit %d", err, exitConfig)
	}
	got := strings.TrimRight(strings.ReplaceAll(stderr.String(), path, "/etc/hermes/hermes.toml"), "\n")
	if got != want {
		t.Errorf("the README shows:\n%s\ncheck-config prints:\n%s", want, got)
	}
}

// TestReadmeCommandError: the README's example of a bad flag is what
// hermes prints, and exits 2.
func TestReadmeCommandError(t *testing.T) {
	want := strings.Join(readmeFenced(t, "command error:", "```"), "\n")
	cmd := exec.Command(hermesBin, "restart", "--bogus")
	cmd.Env = filteredEnv()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != exitUsage {
		t.Fatalf("hermes restart --bogus: %v, want exit %d", err, exitUsage)
	}
	if got := strings.TrimRight(stderr.String(), "\n"); got != want {
		t.Errorf("the README shows:\n%s\nhermes prints:\n%s", want, got)
	}
}

// TestReadmeCommandTable: the README's table of commands names every
// command hermes has and no other, and every flag a row shows is a flag
// of that row's command, as its help lists it.
func TestReadmeCommandTable(t *testing.T) {
	section := readmeBetween(t, "## Commands\n", "\n\n|")
	e := newTestEnv(t, "")
	cmdRe, flagRe := regexp.MustCompile("hermes ([a-z][a-z-]*)"), regexp.MustCompile(`(?:^|[ \x60\[])--([a-z][a-z-]*)`)
	seen := map[string]bool{}
	rows := 0
	for _, row := range strings.Split(section, "\n") {
		cells := strings.Split(row, "|")
		if len(cells) < 4 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`hermes ") {
			continue
		}
		rows++
		var cmds []string
		for _, m := range cmdRe.FindAllStringSubmatch(cells[1], -1) {
			cmds = append(cmds, m[1])
			seen[m[1]] = true
		}
		helps := ""
		for _, c := range cmds {
			out, _, code := e.hermes(20*time.Second, "help", c)
			if code != exitOK {
				t.Errorf("the README's row %q: hermes help %s: exit %d", strings.TrimSpace(cells[1]), c, code)
			}
			helps += out
		}
		for _, m := range flagRe.FindAllStringSubmatch(row, -1) {
			if !regexp.MustCompile(`(?m)^  -` + m[1] + `\b`).MatchString(helps) {
				t.Errorf("the README's row for %v shows --%s, which hermes help %v does not list", cmds, m[1], cmds)
			}
		}
	}
	names := commandNames()
	for _, n := range names {
		if !seen[n] {
			t.Errorf("hermes has the command %s, which the README's table of commands lacks", n)
		}
		delete(seen, n)
	}
	for n := range seen {
		t.Errorf("the README's table of commands shows hermes %s, which hermes does not have", n)
	}
	if rows < 10 {
		t.Fatalf("found %d rows in the README's table of commands", rows)
	}
}

// TestReadmeSinceForms: every form of --since the README lists is one
// `hermes events --since` takes (and a form it does not take fails, so
// the check can fail).
func TestReadmeSinceForms(t *testing.T) {
	para := readmeBetween(t, "`hermes events --since` takes", "\n\n")
	var forms []string
	for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(para, -1) {
		forms = append(forms, m[1])
	}
	if len(forms) < 6 {
		t.Fatalf("found %d forms in the --since paragraph: %q", len(forms), forms)
	}
	e := newTestEnv(t, "")
	for _, f := range append(forms, "last tuesday") {
		_, errOut, code := e.hermes(20*time.Second, "events", "--since", f)
		if wantOK := f != "last tuesday"; (code == exitOK) != wantOK {
			t.Errorf("hermes events --since %q: exit %d %s", f, code, errOut)
		}
	}
}

// TestReadmeFinalEvent: a stream that cannot finish within drain.timeout
// ends with the final event the README shows, byte for byte.
func TestReadmeFinalEvent(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	want := strings.Join(readmeFenced(t, "final event:", "```"), "\n")
	e := newTestEnv(t, "[echo]\nword_delay = \"50ms\"\n[drain]\ntimeout = \"500ms\"\ngrace = \"0s\"\n")
	g := e.startGateway()
	s := startStream(t, g.url, 400) // 20 s
	s.waitLines(t, 2, 10*time.Second)
	g.signal(syscall.SIGTERM)
	body := strings.TrimRight(s.waitDone(t, 20*time.Second), "\n")
	if !strings.HasSuffix(body, "\n"+want) {
		t.Errorf("the README shows the final event:\n%s\nthe stream ends:\n%s", want, body[max(0, len(body)-400):])
	}
	g.wait(20 * time.Second)
}
