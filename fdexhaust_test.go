//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOutOfFileDescriptors runs a gateway with a file limit of 256 and
// opens 300 streams at once, more than it has descriptors for. Through the
// burst its control socket answers status (the reserve descriptor), a
// client past the limit gets a clean 503, and the episode is logged. After
// it, everything works again: /metrics counts it, and `hermes restart`
// hands off with a stream in flight that finishes. Before the fix, one
// EMFILE ended the control socket's accept loop for good, and restart then
// took the gateway for frozen and killed it.
func TestOutOfFileDescriptors(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 300 connections: skipped with -short")
	}
	e := newTestEnv(t, "max_connections = 4000\n[echo]\nword_delay = \"20ms\"\n")
	g := e.spawnGatewayCmd([]string{"sh", "-c", `ulimit -n 256 && exec "$0" serve`, hermesBin})
	g.waitReady(20 * time.Second)

	// 300 streams of 100 s each: each holds one descriptor of the gateway
	// (the echo upstream is in the process) until the test closes it.
	body := `{"model":"m","stream":true,"messages":[{"role":"user","content":"` + strings.Repeat("w ", 5000) + `"}]}`
	req := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	var (
		mu       sync.Mutex
		conns    []net.Conn
		statuses = map[string]int{}
		wg       sync.WaitGroup
	)
	for i := 0; i < 300; i++ {
		c, err := net.DialTimeout("tcp", e.addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.SetDeadline(time.Now().Add(60 * time.Second))
			c.Write([]byte(req))
			br := bufio.NewReader(c)
			line, _ := br.ReadString('\n')
			status := strings.TrimSpace(line)
			if strings.Contains(status, "503") {
				// The body says which 503.
				b := make([]byte, 1024)
				n, _ := io.ReadAtLeast(br, b, 200)
				if strings.Contains(string(b[:n]), "out_of_file_descriptors") {
					status = "503 out_of_file_descriptors"
				}
			}
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		}()
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	g.waitLog("too many open files", 30*time.Second)

	// In the burst: status answers on the control socket, and says serving.
	out, errOut, code := e.hermes(20*time.Second, "status")
	if code != 0 || !strings.Contains(out, "serving") || strings.Contains(out+errOut, "control socket silent") {
		t.Errorf("hermes status while out of descriptors: rc %d\n%s%s", code, out, errOut)
	}

	// Every connection gets an answer line or waits in the backlog; once
	// 200s and 503s are in, close them all.
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		shed := statuses["503 out_of_file_descriptors"]
		mu.Unlock()
		if shed > 0 {
			break
		}
		if time.Now().After(deadline) {
			mu.Lock()
			t.Fatalf("no connection was answered 503 out_of_file_descriptors within 30s: %v", statuses)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, c := range conns {
		c.Close()
	}
	wg.Wait()
	t.Logf("answers in the burst: %v", statuses)

	// After it: metrics count the episode, and both reserves are back.
	var m string
	held := func() bool {
		_, m = httpGet(t, g.url+"/metrics")
		return strings.Contains(m, `hermes_accept_reserve_held{listener="http"} 1`) &&
			strings.Contains(m, `hermes_accept_reserve_held{listener="control"} 1`)
	}
	for deadline := time.Now().Add(10 * time.Second); !held(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			var lines []string
			for _, l := range strings.Split(m, "\n") {
				if strings.HasPrefix(l, "hermes_accept_") || strings.HasPrefix(l, "hermes_process_open_fds") || strings.HasPrefix(l, "hermes_connections_open") {
					lines = append(lines, l)
				}
			}
			t.Fatalf("both reserve descriptors not held again within 10s:\n%s", strings.Join(lines, "\n"))
		}
	}
	// The episode's end is logged at the first accept after it.
	g.waitLog("accepting again", 10*time.Second)
	if n := metricValue(m, `hermes_accept_errors_total{listener="http"}`); n < 1 {
		t.Errorf("hermes_accept_errors_total{listener=\"http\"} = %v after the burst", n)
	}
	if n := metricValue(m, `hermes_accept_reserve_used_total{listener="http"}`); n < 1 {
		t.Errorf("hermes_accept_reserve_used_total{listener=\"http\"} = %v after the burst", n)
	}
	if out, errOut, code := e.hermes(10*time.Second, "healthcheck"); code != 0 {
		t.Errorf("healthcheck after the burst: rc %d %s%s", code, out, errOut)
	}

	// And hermes restart hands off, the stream in flight finishing.
	s := startStream(t, g.url, 30)
	s.waitLines(t, 1, 10*time.Second)
	out, errOut, code = e.hermes(60*time.Second, "restart")
	if code != 0 || !strings.Contains(out+errOut, "handed off") || strings.Contains(out+errOut, "KILL") {
		t.Errorf("hermes restart after the burst: rc %d\n%s%s", code, out, errOut)
	}
	if text := s.waitDone(t, 30*time.Second); !strings.Contains(text, "[DONE]") {
		t.Errorf("the stream in flight did not finish:\n%s", text)
	}
}

// TestSilentControlSocketIsNotFrozen: a gateway whose control socket
// listens but never answers (the control-deaf fault), while its loop ticks,
// is not frozen. status and healthcheck say serving, by the heartbeat on its
// listen address, and say so; `hermes restart` drains it by signal instead
// of killing it, so the stream in flight finishes.
func TestSilentControlSocketIsNotFrozen(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"20ms\"\n")
	g := e.startGateway("HERMES_TEST_FAULT=control-deaf")

	out, errOut, code := e.hermes(20*time.Second, "status")
	if code != 0 || !strings.Contains(out, "serving") || !strings.Contains(out, "heartbeat is fresh") {
		t.Errorf("hermes status of a gateway with a silent control socket: rc %d\n%s%s", code, out, errOut)
	}
	if out, errOut, code := e.hermes(20*time.Second, "healthcheck"); code != 0 || !strings.Contains(out, "healthy: serving") {
		t.Errorf("healthcheck: rc %d %s%s", code, out, errOut)
	}

	s := startStream(t, g.url, 400) // 8 s: in flight when the restart signals
	s.waitLines(t, 1, 10*time.Second)
	out, errOut, code = e.hermes(60*time.Second, "restart")
	all := out + errOut
	if code != 0 || strings.Contains(all, "sent KILL") || strings.Contains(all, "verdict: frozen") {
		t.Errorf("hermes restart: rc %d\n%s", code, all)
	}
	if !strings.Contains(all, "control socket does not answer") {
		t.Errorf("hermes restart does not say why it did not hand off:\n%s", all)
	}
	text := s.waitDone(t, 30*time.Second)
	if !strings.Contains(text, "[DONE]") || strings.Contains(text, "event: error") {
		t.Errorf("the stream in flight did not finish cleanly:\n%s", text)
	}
	if c := g.wait(30 * time.Second); c != exitRestart {
		t.Errorf("the gateway exited %d, want %d (a drain restart)", c, exitRestart)
	}
}
