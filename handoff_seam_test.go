//go:build linux

package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHandoffSuccessorSideAlone drives the successor's side of the handoff
// over its seam (handoff.go) with no predecessor gateway: this test is the
// parent. It hands a real hermes serve the listening socket, the instance
// lock and one end of a socketpair, as descriptors 3, 4 and 5 named in
// HERMES_HANDOFF, and speaks the protocol: the successor says ready and
// writes nothing of the instance's until "go", then says serving, owns the
// pid file and answers on the socket it was handed; TERM drains it.
func TestHandoffSuccessorSideAlone(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "")
	if err := os.MkdirAll(e.stateDir, 0o700); err != nil {
		t.Fatal(err)
	}
	inst, err := lockInstance(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer inst.Close()
	ln, err := net.Listen("tcp", e.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	lnFile, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	mine, theirs := os.NewFile(uintptr(fds[0]), "test peer"), os.NewFile(uintptr(fds[1]), "successor peer")
	defer mine.Close()

	cmd := exec.Command(hermesBin, "serve")
	cmd.Env = append(append([]string{}, e.env...), "HERMES_HANDOFF=listen,instance,peer", fmt.Sprintf("HERMES_HANDOFF_FROM=%d", os.Getpid()))
	cmd.ExtraFiles = []*os.File{lnFile, inst, theirs}
	log := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lnFile.Close()
	theirs.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	pid := cmd.Process.Pid

	lines := make(chan string, 16)
	go func() {
		sc := bufio.NewScanner(mine)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	expect := func(want string) {
		t.Helper()
		select {
		case l, ok := <-lines:
			if !ok || l != want {
				t.Fatalf("the successor said %q (open %v), want %q\n%s", l, ok, want, log.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("the successor did not say %q within 20s\n%s", want, log.String())
		}
	}
	expect(fmt.Sprintf("ready %d", pid))
	// Standing by: nothing of the instance is its own yet.
	if _, err := os.Stat(pidFilePath(e.stateDir)); err == nil {
		t.Errorf("the successor wrote the pid file before go")
	}
	if _, err := mine.WriteString("go\n"); err != nil {
		t.Fatal(err)
	}
	expect(fmt.Sprintf("serving %d", pid))
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil || rec.PID != pid {
		t.Errorf("after serving, the pid file holds %+v (%v), want pid %d", rec, err, pid)
	}
	if code, body := httpGet(t, "http://"+e.addr+"/readyz"); code != 200 || !strings.Contains(body, "serving") {
		t.Errorf("/readyz on the handed-over socket: %d %q", code, body)
	}
	// TERM drains it. (Its drain then waits for its predecessor, this
	// test, which is still alive: a successor never exits from under a
	// predecessor still finishing its sessions; the cleanup kills it.)
	cmd.Process.Signal(syscall.SIGTERM)
	if !log.waitUntil(20*time.Second, nil, func(s string) bool { return strings.Contains(s, " drain start reason=gateway_shutdown") }) {
		t.Errorf("no drain after TERM:\n%s", log.String())
	}
}
