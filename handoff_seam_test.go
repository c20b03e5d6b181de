//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
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

// TestHandoffPredecessorSideAlone drives the predecessor's side of the
// handoff over its seam with no successor gateway: the binary at the
// gateway's path is replaced by fakeSuccessor (this test binary), which
// the gateway starts at USR2. The predecessor must hand over the listener,
// the instance lock and the peer as HERMES_HANDOFF says, say "go" only
// after "ready", report its sessions left as "drain <n> <ms>", finish its
// stream and exit 0 with no connection refused; and it must serve on when
// the successor exits before ready or says failed after go.
func TestHandoffPredecessorSideAlone(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		mode, failure string // failure: what the predecessor's log says, "" when it hands over
	}{
		{"serve", ""},
		{"exit", "exited with code 3 before it took over"},
		{"failed", "could not take over: the fake successor refuses"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			t.Parallel()
			e := newTestEnv(t, strings.Replace(handoffPolicy, `word_delay = "5ms"`, `word_delay = "20ms"`, 1))
			fdir := t.TempDir()
			bin := filepath.Join(t.TempDir(), "hermes")
			copyFile(t, hermesBin, bin, 0o755)
			g := e.spawnGatewayBin(bin, "HERMES_TEST_ROLE=fake-successor", "HERMES_FAKE_SUCCESSOR_DIR="+fdir, "HERMES_FAKE_SUCCESSOR_MODE="+tc.mode)
			g.waitReady(20 * time.Second)
			s := startStream(t, g.url, 60) // 1.2 s of words: in flight across the handoff
			s.waitLines(t, 2, 10*time.Second)
			probe := startProbe(t, g.url)
			copyFile(t, self, bin+".next", 0o755)
			if err := os.Rename(bin+".next", bin); err != nil { // cp onto a running binary fails with ETXTBSY
				t.Fatal(err)
			}
			g.signal(syscall.SIGUSR2)
			peerLog := func() string { b, _ := os.ReadFile(filepath.Join(fdir, "peer.log")); return string(b) }

			if tc.failure != "" {
				g.waitLog("handoff failed", 20*time.Second)
				if !strings.Contains(g.stderr.String(), tc.failure) {
					t.Errorf("the handoff failed, but not with %q:\n%s", tc.failure, g.stderr.String())
				}
				if out := s.waitDone(t, 20*time.Second); !strings.Contains(out, "w59") || !strings.Contains(out, "[DONE]") {
					t.Errorf("the stream did not finish on the predecessor:\n%s", out)
				}
				if code, body := httpGet(t, g.url+"/readyz"); code != 200 || g.hasExited() {
					t.Errorf("after a failed handoff the predecessor does not serve on: /readyz %d %q, exited %v", code, body, g.hasExited())
				}
				probe.stopAndCheck(t, false)
				return
			}

			g.waitLog("handoff done", 20*time.Second)
			if out := s.waitDone(t, 20*time.Second); !strings.Contains(out, "w59") || !strings.Contains(out, "[DONE]") {
				t.Errorf("the predecessor did not finish its stream while draining:\n%s", out)
			}
			if code := g.wait(20 * time.Second); code != 0 {
				t.Errorf("the predecessor exited %d, want 0", code)
			}
			waitUntil(t, 10*time.Second, "the fake successor sees the peer close", func() bool { return strings.Contains(peerLog(), "eof") })
			log := peerLog()
			want := []string{
				fmt.Sprintf("from %d ppid %d handed listen,instance,peer", g.pid(), g.pid()),
				"said go\nsaid drain 1 ",
			}
			for _, w := range want {
				if !strings.Contains(log, w) {
					t.Errorf("the fake successor's log has no %q:\n%s", w, log)
				}
			}
			if strings.Count(log, "said go") != 1 {
				t.Errorf("go said %d times:\n%s", strings.Count(log, "said go"), log)
			}
			// The instance lock went with the descriptor: the successor
			// holds it after the predecessor's exit.
			if f, err := lockInstance(e.stateDir); err == nil {
				f.Close()
				t.Errorf("nobody holds the instance lock after the handoff")
			}
			probe.stopAndCheck(t, true)
		})
	}
}

// probe asks /readyz over a new connection each time until stopped,
// counting the connections refused or failed and the answers the fake
// successor gave.
type probe struct {
	stop     chan struct{}
	done     chan struct{}
	failures []string
	fake     int
}

func startProbe(t *testing.T, url string) *probe {
	p := &probe{stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	go func() {
		defer close(p.done)
		for {
			select {
			case <-p.stop:
				return
			default:
			}
			resp, err := client.Get(url + "/readyz")
			if err != nil {
				p.failures = append(p.failures, err.Error())
				continue
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if strings.HasPrefix(string(b), "fake successor") {
				p.fake++
			}
		}
	}()
	t.Cleanup(func() {
		select {
		case <-p.stop:
		default:
			close(p.stop)
		}
		<-p.done
	})
	return p
}

// stopAndCheck stops the probe: no connection may have failed, and the
// fake successor answered some if it was to take over.
func (p *probe) stopAndCheck(t *testing.T, handedOver bool) {
	t.Helper()
	close(p.stop)
	<-p.done
	if len(p.failures) > 0 {
		t.Errorf("%d connections failed across the handoff, first: %s", len(p.failures), p.failures[0])
	}
	if handedOver && p.fake == 0 {
		t.Errorf("the successor answered nothing after the handoff")
	}
	if !handedOver && p.fake > 0 {
		t.Errorf("a successor that never took over answered %d requests", p.fake)
	}
}
