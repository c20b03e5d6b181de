package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestSinkDropsAndReports: a sink whose writer is stuck never blocks put;
// what does not fit is dropped and counted, and once the writer catches up
// the count is written after the lines that made it.
func TestSinkDropsAndReports(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var out bytes.Buffer
	first := true
	s := newSink("test", func(batch [][]byte) error {
		if first {
			first = false
			<-release // a disk that stalls
		}
		mu.Lock()
		defer mu.Unlock()
		for _, b := range batch {
			out.Write(b)
		}
		return nil
	})
	s.report = func(n uint64) []byte { return []byte(fmt.Sprintf("dropped %d\n", n)) }
	const n = outboxQueue + 500
	putsDone := make(chan struct{})
	go func() {
		defer close(putsDone)
		for i := 0; i < n; i++ {
			s.put([]byte(fmt.Sprintf("line %d\n", i)))
		}
	}()
	select {
	case <-putsDone:
	case <-time.After(30 * time.Second):
		t.Fatal("put waited on a stuck writer")
	}
	if s.dropped.Load() == 0 {
		t.Fatal("a full queue dropped nothing")
	}
	close(release)
	if !s.flush(time.Now().Add(10 * time.Second)) {
		t.Fatal("the sink never caught up")
	}
	mu.Lock()
	got := out.String()
	mu.Unlock()
	want := fmt.Sprintf("dropped %d\n", s.dropped.Load())
	if !strings.HasSuffix(got, want) {
		t.Errorf("the drop count is not reported after the lines that made it: ends %q, want %q", got[max(0, len(got)-60):], want)
	}
	if lines := strings.Count(got, "line "); uint64(lines)+s.dropped.Load() != n {
		t.Errorf("%d written + %d dropped != %d sent", lines, s.dropped.Load(), n)
	}
}

// holdFlock takes an exclusive flock on path for the rest of the test, as
// another process (a shell's flock, a stopped hermes restart) would, as
// soon as the gateway is not holding it.
func holdFlock(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	// The gateway takes the lock itself for each batch it writes (its
	// "ready" line, say): wait for a moment it does not hold it.
	waitUntil(t, 10*time.Second, "the flock on "+path, func() bool { return flockExclusive(f) == nil })
	t.Cleanup(func() { f.Close() })
}

// TestLockedJournalKeepsGatewayLive is the SD-card incident: with the
// journal's and the start ledger's locks held by someone else and a burst
// of sessions whose clients hang up (each logs a line), the loop keeps
// ticking: `hermes restart` sees a serving (or draining) gateway, never a
// frozen one, walks the drain, and the streams in flight finish.
func TestLockedJournalKeepsGatewayLive(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "[echo]\nword_delay = \"50ms\"\n[drain]\ntimeout = \"20s\"\ngrace = \"1s\"\n[restart]\nready_timeout = \"20s\"\n")
	g := e.startGateway()
	holdFlock(t, journalPath(e.stateDir)+".lock")
	holdFlock(t, ledgerPath(e.stateDir)+".lock")

	long := []*stream{startStream(t, g.url, 80), startStream(t, g.url, 80)} // 4 s each
	for _, s := range long {
		s.waitLines(t, 4, 5*time.Second)
	}
	for i := 0; i < 12; i++ {
		s := startStream(t, g.url, 100)
		s.waitLines(t, 4, 5*time.Second)
		s.cancel()
	}
	g.waitLogCount("session client_gone", 12, 10*time.Second)

	out, errOut, code := e.hermes(90*time.Second, "restart")
	if code != 0 {
		t.Fatalf("restart = %d:\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "verdict: serving") && !strings.Contains(out, "verdict: draining") {
		t.Errorf("restart did not see a live gateway:\n%s", out)
	}
	if strings.Contains(out, "frozen") || strings.Contains(out, "sent KILL") {
		t.Errorf("a gateway slowed only by its journal was treated as frozen:\n%s", out)
	}
	for i, s := range long {
		if body := s.waitDone(t, 20*time.Second); !strings.Contains(body, "data: [DONE]") || strings.Contains(body, "event: error") {
			t.Errorf("stream %d in flight did not finish:\n%s", i, body)
		}
	}
	if !strings.Contains(out, "handed off") {
		t.Errorf("restart did not hand off:\n%s", out)
	}
	if gc := g.wait(20 * time.Second); gc != exitOK {
		t.Errorf("old gateway exit %d, want 0 (handed off)", gc)
	}
	e.gatewayFromPidFile()
}
