package main

import "testing"

// TestProxyMakesNoEmptyReads: a short answer through the gateway costs
// one write on each side and at most three reads, counted by the kernel
// (/proc/PID/io): the client's request, the upstream's answer, and the
// read that finds the client's next request not there yet. The read
// straight after the request went to the upstream, which would find
// nothing yet (EAGAIN, a system call on every request: four reads), is a
// wait armed before that write (upstreamConn.send). The same wait for the
// client's next request is not possible: bytes it sent early (pipelining)
// would be missed (TestServerPipelinedWhileAnswering).
func TestProxyMakesNoEmptyReads(t *testing.T) {
	g, ask := shortAnswerGateway(t)
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
	// The margin is for anything else the gateway reads or writes
	// meanwhile (its heartbeat), and a request that arrives in two pieces.
	if reads > 3.2 {
		t.Errorf("%.2f reads per request, want at most 3 (the request, the answer, the wait for the next)", reads)
	}
	if writes > 2.4 {
		t.Errorf("%.2f writes per request, want 2 (the request upstream, the answer)", writes)
	}
}
