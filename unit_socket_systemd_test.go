//go:build linux

package main

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestUnitSystemdSocketHarness: install-unit --socket under a real systemd
// (the harness). systemd holds gateway.listen and passes it to the gateway;
// while no gateway runs, after a drain restart or a kill -9, a new
// connection waits in the socket's queue and is answered by the next
// gateway, where without the socket unit it would be refused. hermes stop
// stops the socket too, and uninstall-unit removes both units.
func TestUnitSystemdSocketHarness(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	h := startHarness(t)
	const name = "sdsocket"
	svc, sock := unitName(name), socketUnitName(name)
	addr := freePort(t)
	bin := filepath.Join(h.state, "bin", "hermes")
	policy := filepath.Join(h.state, "hermes.toml")
	copyFile(t, hermesBin, bin, 0o755)
	if err := os.WriteFile(policy, []byte(harnessPolicy(name, addr)), 0o644); err != nil {
		t.Fatal(err)
	}
	url := "http://" + addr

	// First a gateway on its own socket, as install-unit without --socket
	// runs it; then --socket, which cannot take the address from it.
	if out, err := h.exec(bin, "install-unit", "--system", "--run-as", "root", "--config", policy, "--enable"); err != nil {
		t.Fatalf("install-unit --enable: %v\n%s", err, out)
	}
	if code, body := httpGet(t, url+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	out, err := h.exec(bin, "install-unit", "--system", "--run-as", "root", "--socket", "--config", policy, "--enable")
	if err != nil {
		t.Fatalf("install-unit --socket --enable: %v\n%s", err, out)
	}
	move := "systemctl stop " + svc + " && systemctl start " + sock + " " + svc
	if !strings.Contains(out, "updated: /etc/systemd/system/"+svc) || !strings.Contains(out, "wrote: /etc/systemd/system/"+sock) ||
		!strings.Contains(out, "holds gateway.listen itself") || !strings.Contains(out, move) {
		t.Errorf("install-unit --socket over a running gateway said:\n%s", out)
	}
	if got := h.show(svc, "ActiveState") + " " + h.show(sock, "ActiveState") + " " + h.show(sock, "UnitFileState"); got != "active inactive enabled" {
		t.Errorf("service, socket, socket enablement: %s; want active inactive enabled", got)
	}
	if out, err := h.exec("sh", "-c", move); err != nil {
		t.Fatalf("%s: %v\n%s", move, err, out)
	}
	for _, u := range []string{svc, sock} {
		if got := h.show(u, "ActiveState"); got != "active" {
			t.Fatalf("%s: ActiveState=%s after %s", u, got, move)
		}
	}
	if got := h.show(svc, "TriggeredBy"); got != sock {
		t.Errorf("%s TriggeredBy=%q, want %s", svc, got, sock)
	}
	if code, body := httpGet(t, url+"/readyz"); code != 200 {
		t.Fatalf("/readyz: %d %s", code, body)
	}
	journal, _ := h.exec("journalctl", "--no-pager", "-o", "cat", "-u", svc)
	if !strings.Contains(journal, listenerSystemd) {
		t.Errorf("the gateway did not say it serves on systemd's socket (%q):\n%s", listenerSystemd, journal)
	}

	t.Run("a handoff keeps systemd's socket", func(t *testing.T) {
		c := startAsking(url)
		out, err := h.exec(bin, "restart", "--config", policy)
		if err != nil || !strings.Contains(out, "handed off") {
			c.stop()
			t.Fatalf("hermes restart: %v\n%s", err, out)
		}
		c.waitAnswers(t, 5, 10*time.Second)
		if r := c.stop(); len(r.errs) > 0 || r.busy > 0 {
			t.Errorf("across the handoff: %d failed (first %v), %d refused with 503", len(r.errs), r.errs, r.busy)
		}
	})

	t.Run("a drain restart refuses no connection", func(t *testing.T) {
		// The stream keeps the old gateway draining for 2 s; it exits 75,
		// and systemd starts the next after RestartSec (1 s). Meanwhile a
		// client connects again and again.
		mainPid := h.show(svc, "MainPID")
		s := startStream(t, url, 40)
		s.waitLines(t, 4, 10*time.Second)
		c := startAsking(url)
		out, err := h.exec(bin, "restart", "--mode", "drain", "--config", policy)
		if err != nil {
			c.stop()
			t.Fatalf("hermes restart --mode drain: %v\n%s", err, out)
		}
		if body := s.waitDone(t, 15*time.Second); !strings.Contains(body, "data: [DONE]") {
			t.Errorf("the stream did not finish across the restart:\n%s", body)
		}
		h.waitFor("a new gateway", 20*time.Second, func() bool {
			return h.show(svc, "ActiveState") == "active" && h.show(svc, "MainPID") != mainPid
		})
		c.waitAnswers(t, 5, 10*time.Second)
		r := c.stop()
		t.Logf("%d answers (%d refused with 503 by the draining gateway); the slowest took %s", r.ok+r.busy, r.busy, r.slowest.Round(time.Millisecond))
		if len(r.errs) > 0 {
			t.Errorf("%d connections failed across the restart, the first: %v", len(r.errs), r.errs[0])
		}
		if r.slowest < 500*time.Millisecond {
			t.Errorf("no answer waited for the next gateway (the slowest took %s, with RestartSec=1s between the two)", r.slowest)
		}
	})

	t.Run("kill -9: a connection waits for the next gateway", func(t *testing.T) {
		mainPid := h.show(svc, "MainPID")
		if out, err := h.exec("systemctl", "kill", "--signal=KILL", svc); err != nil {
			t.Fatalf("systemctl kill: %v\n%s", err, out)
		}
		h.waitFor("no gateway running", 10*time.Second, func() bool {
			return h.show(svc, "MainPID") == "0"
		})
		sent := time.Now()
		code, _ := httpGet(t, url+"/readyz")
		t.Logf("answered %s after the gateway was gone (RestartSec=1s)", time.Since(sent).Round(time.Millisecond))
		if code != 200 {
			t.Errorf("/readyz through the socket after kill -9: %d", code)
		}
		if h.show(svc, "MainPID") == mainPid || h.show(sock, "ActiveState") != "active" {
			t.Errorf("MainPID %s -> %s, socket %s", mainPid, h.show(svc, "MainPID"), h.show(sock, "ActiveState"))
		}
	})

	t.Run("hermes stop stops the socket, hermes restart starts both", func(t *testing.T) {
		if out, err := h.exec(bin, "stop", "--config", policy); err != nil {
			t.Fatalf("hermes stop: %v\n%s", err, out)
		}
		for _, u := range []string{svc, sock} {
			if got := h.show(u, "ActiveState"); got != "inactive" {
				t.Errorf("%s: ActiveState=%s after hermes stop", u, got)
			}
		}
		if c, err := net.DialTimeout("tcp", addr, 2*time.Second); err == nil {
			c.Close()
			t.Errorf("%s still takes connections after hermes stop: a connection would start the gateway again", addr)
		}
		if out, err := h.exec(bin, "restart", "--config", policy); err != nil {
			t.Fatalf("hermes restart of the stopped gateway: %v\n%s", err, out)
		}
		h.waitFor("the gateway back", 20*time.Second, func() bool { return h.show(svc, "ActiveState") == "active" })
		if got := h.show(sock, "ActiveState"); got != "active" {
			t.Errorf("%s: ActiveState=%s after hermes restart", sock, got)
		}
		if code, _ := httpGet(t, url+"/readyz"); code != 200 {
			t.Errorf("/readyz after hermes restart: %d", code)
		}
	})

	t.Run("uninstall-unit removes both", func(t *testing.T) {
		out, err := h.exec(bin, "uninstall-unit", "--system", "--config", policy)
		if err != nil {
			t.Fatalf("uninstall-unit: %v\n%s", err, out)
		}
		for _, u := range []string{svc, sock} {
			if !strings.Contains(out, "removed: /etc/systemd/system/"+u) {
				t.Errorf("uninstall-unit did not remove %s:\n%s", u, out)
			}
			if got := h.show(u, "LoadState"); got != "not-found" {
				t.Errorf("%s: LoadState=%s after uninstall", u, got)
			}
		}
	})
}

// asker asks a gateway for short answers, one after another, each on a new
// connection, until stopped: a client that keeps coming back.
type asker struct {
	mu      sync.Mutex
	r       askResults
	answers chan struct{}
	done    chan struct{}
	ended   chan struct{}
}

type askResults struct {
	ok, busy int           // 200s, and 503s from a draining gateway
	errs     []error       // connections that failed, or other answers
	slowest  time.Duration // the longest a 200 took
}

func startAsking(url string) *asker {
	a := &asker{answers: make(chan struct{}, 1024), done: make(chan struct{}), ended: make(chan struct{})}
	go func() {
		defer close(a.ended)
		for {
			select {
			case <-a.done:
				return
			default:
			}
			t0 := time.Now()
			resp, err := freshClient.Post(url+"/v1/chat/completions", "application/json",
				strings.NewReader(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
			took := time.Since(t0)
			a.mu.Lock()
			switch {
			case err != nil:
				a.r.errs = append(a.r.errs, err)
			case resp.StatusCode == 200:
				a.r.ok++
				a.r.slowest = max(a.r.slowest, took)
			case resp.StatusCode == 503 && resp.Header.Get("Retry-After") != "":
				a.r.busy++
			default:
				a.r.errs = append(a.r.errs, fmt.Errorf("status %d", resp.StatusCode))
			}
			a.mu.Unlock()
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					select {
					case a.answers <- struct{}{}:
					default: // nobody waits for so many
					}
				}
			}
		}
	}()
	return a
}

// waitAnswers waits for n more 200s.
func (a *asker) waitAnswers(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	for len(a.answers) > 0 {
		<-a.answers
	}
	deadline := time.After(timeout)
	for i := 0; i < n; i++ {
		select {
		case <-a.answers:
		case <-deadline:
			t.Fatalf("%d answers in %s, want %d", i, timeout, n)
		}
	}
}

func (a *asker) stop() askResults {
	close(a.done)
	<-a.ended
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.r
}
