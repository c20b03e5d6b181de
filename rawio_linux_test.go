package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestProxyMakesNoEmptyReads: a short answer through the gateway costs one
// read and one write on each side, counted by the kernel (/proc/PID/io):
// the client's request, the upstream's answer, and a write of each. The
// reads that would find nothing yet, straight after the request went to
// the upstream and straight after the answer went to the client (EAGAIN,
// a system call each on every request: four reads instead of two), are
// waits armed before those writes (rawio.go, send, awaitRequest).
func TestProxyMakesNoEmptyReads(t *testing.T) {
	up := httptest.NewServer(newFakeLoadUpstream(5, 0))
	defer up.Close()
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n", up.URL))
	g := e.startGateway()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	ask := func() {
		resp, err := client.Post(g.url+"/v1/chat/completions", "application/json",
			strings.NewReader(`{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}]}`))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), "chatcmpl-fake") {
			t.Fatalf("answer: %d %q", resp.StatusCode, b)
		}
	}
	ask() // the connections are open and pooled from here on
	const n = 400
	r0, w0, ok := procSyscalls(g.pid())
	if !ok {
		t.Fatalf("no /proc/%d/io to count the gateway's system calls", g.pid())
	}
	for i := 0; i < n; i++ {
		ask()
	}
	r1, w1, _ := procSyscalls(g.pid())
	reads, writes := float64(r1-r0)/n, float64(w1-w0)/n
	t.Logf("per request: %.2f reads, %.2f writes", reads, writes)
	// 2 each; the margin is for anything else the gateway reads or writes
	// meanwhile (its heartbeat), and a request that arrives in two pieces.
	if reads > 2.4 {
		t.Errorf("%.2f reads per request, want 2 (the request, the answer)", reads)
	}
	if writes > 2.4 {
		t.Errorf("%.2f writes per request, want 2 (the request upstream, the answer)", writes)
	}
}
