package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkDetachedStreams measures what N streams kept for reattach cost
// while nobody is attached (N = $HERMES_BENCH_DETACHED, default 1,000):
// each client reads its stream's first event and hangs up, and once the
// gateway counts all N detached (hermes_streams_detached), the gateway's
// memory is read against what it was before: resident (VmRSS), and the
// Go runtime's live heap and stacks (/metrics), beside what the streams'
// buffers hold (hermes_streams_buffer_bytes). "echo": the built-in echo
// upstream; "upstream": a fake one, whose connection each stream keeps.
// The gateway is a build with -tags hermes_pprof, so that each reading
// follows a garbage collection (/debug/pprof/heap?gc=1); with
// $HERMES_BENCH_HEAPPROFILE=DIR it writes the heap profiles there.
//
//	go test -run '^$' -bench DetachedStreams -benchtime 1x .
func BenchmarkDetachedStreams(b *testing.B) {
	n := 1000
	if s := os.Getenv("HERMES_BENCH_DETACHED"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	const chunks, every = 40, time.Second
	up := fakeSSEUpstream(chunks, every)
	up.Start()
	defer up.Close()
	const keep = "[drain]\ntimeout = \"2s\"\ngrace = \"1s\"\n[reattach]\nwindow = \"10m\"\n"
	bin := buildPprofBinary(b)
	for _, tc := range []struct{ name, policy string }{
		{"echo", fmt.Sprintf("[echo]\nword_delay = %q\n", every) + keep},
		{"upstream", fmt.Sprintf("upstream = %q\n", up.URL) + keep},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				e := newTestEnv(b, tc.policy)
				pprof := freePort(b)
				g := e.spawnGatewayBin(bin, "HERMES_PPROF="+pprof)
				g.waitReady(20 * time.Second)
				detachFlood(b, e.addr, 1, chunks) // the pools and the first of everything
				waitDetached(b, g.url, 1)
				before := memFigures(b, g, pprof, tc.name+"-before")
				detachFlood(b, e.addr, n, chunks)
				waitDetached(b, g.url, n+1)
				after := memFigures(b, g, pprof, tc.name+"-after")
				g.signal(syscall.SIGTERM)
				g.wait(60 * time.Second)
				per := func(k string) float64 { return (after[k] - before[k]) / float64(n) }
				b.ReportMetric(per("rss"), "rss-B/stream")
				b.ReportMetric(per("heap")+per("stacks"), "heap+stack-B/stream")
				b.ReportMetric(per("buffers"), "buffer-B/stream")
				b.Logf("%s: %d streams detached: per stream %.0f B resident, %.0f B live heap + %.0f B stacks, of which the buffers %.0f B; %.1f goroutines",
					tc.name, n, per("rss"), per("heap"), per("stacks"), per("buffers"), per("goroutines"))
			}
		})
	}
}

// buildPprofBinary builds hermes with -tags hermes_pprof (its pprof
// endpoint on $HERMES_PPROF), for the benchmarks that read its memory.
func buildPprofBinary(b *testing.B) string {
	bin := filepath.Join(b.TempDir(), "hermes-pprof")
	build := exec.Command("go", "build", "-tags", "hermes_pprof", "-o", bin, ".")
	build.Env = buildEnv()
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("go build -tags hermes_pprof: %v\n%s", err, out)
	}
	return bin
}

// detachFlood opens n streams, reads each one's first event, and hangs up.
func detachFlood(b *testing.B, addr string, n, words int) {
	first := func(line string) bool { return strings.HasPrefix(line, "data:") }
	for _, c := range holdFlood(b, addr, n, streamRequest(words), first) {
		c.Close()
	}
}

// waitDetached waits until the gateway counts n streams detached, and has
// let go of their clients' connections (a stream's session hands it to a
// pump at its next read of the upstream).
func waitDetached(b *testing.B, url string, n int) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, m := httpGet(b, url+"/metrics")
		// This scrape's own connection is the one left open.
		if int(metricValue(m, "hermes_streams_detached")) >= n && metricValue(m, "hermes_connections_open") <= 1 {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("hermes_streams_detached = %v, want %d", metricValue(m, "hermes_streams_detached"), n)
		}
		time.Sleep(50 * time.Millisecond) // a poll of /metrics: no event to wait on from outside
	}
}

// memFigures reads the gateway's memory, right after a garbage collection:
// its RSS, and from /metrics the live heap, the stacks, the streams'
// buffers and the goroutines.
func memFigures(b *testing.B, g *gatewayProc, pprof, name string) map[string]float64 {
	code, prof := httpGet(b, "http://"+pprof+"/debug/pprof/heap?gc=1")
	if code != 200 {
		b.Fatalf("the pprof endpoint: %d", code)
	}
	if dir := os.Getenv("HERMES_BENCH_HEAPPROFILE"); dir != "" {
		os.WriteFile(filepath.Join(dir, name+".pb.gz"), []byte(prof), 0o644)
	}
	_, m := httpGet(b, g.url+"/metrics")
	return map[string]float64{
		"rss":        float64(vmRSS(g.pid())) * 1024,
		"heap":       metricValue(m, "hermes_go_heap_live_bytes"),
		"stacks":     metricValue(m, "hermes_go_stack_bytes"),
		"buffers":    metricValue(m, "hermes_streams_buffer_bytes"),
		"goroutines": metricValue(m, "hermes_go_goroutines"),
	}
}
