package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHeldConnections measures what a connection the gateway holds
// costs it, after a garbage collection: n streams in flight on the echo
// upstream, each read by its client as it comes ("stream"), and n
// keep-alive connections idle after one request each ("idle"). Figures
// per connection: resident memory, live heap and goroutine stacks, read
// against the same gateway before (n = $HERMES_BENCH_HELD, 2,000).
//
//	go test -run '^$' -bench HeldConnections -benchtime 1x .
func BenchmarkHeldConnections(b *testing.B) {
	n := 2000
	if s := os.Getenv("HERMES_BENCH_HELD"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	bin := buildPprofBinary(b)
	const words, every = 60, time.Second
	for _, tc := range []struct {
		name string
		req  string
		held func(line string) bool // the line after which a connection is held
	}{
		{"stream", streamRequest(words), func(l string) bool { return strings.HasPrefix(l, "data:") }},
		{"idle", "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", func(l string) bool { return strings.HasPrefix(l, "ok") }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				e := newTestEnv(b, fmt.Sprintf("max_connections = %d\n[echo]\nword_delay = %q\n[drain]\ntimeout = \"1s\"\ngrace = \"1s\"\n", n+64, every))
				pprof := freePort(b)
				g := e.spawnGatewayBin(bin, "HERMES_PPROF="+pprof)
				g.waitReady(20 * time.Second)
				first := holdFlood(b, e.addr, 1, tc.req, tc.held) // the pools and the first of everything
				before := memFigures(b, g, pprof, "held-"+tc.name+"-before")
				conns := holdFlood(b, e.addr, n, tc.req, tc.held)
				after := memFigures(b, g, pprof, "held-"+tc.name+"-after")
				for _, c := range append(conns, first...) {
					c.Close()
				}
				g.signal(syscall.SIGTERM)
				g.wait(60 * time.Second)
				per := func(k string) float64 { return (after[k] - before[k]) / float64(n) }
				b.ReportMetric(per("rss"), "rss-B/conn")
				b.ReportMetric(per("heap"), "heap-B/conn")
				b.ReportMetric(per("stacks"), "stack-B/conn")
				b.Logf("%s: %d connections held: per connection %.0f B resident, %.0f B live heap + %.0f B stacks; %.1f goroutines",
					tc.name, n, per("rss"), per("heap"), per("stacks"), per("goroutines"))
			}
		})
	}
}

// streamRequest is a streamed chat request for the echo of words words.
func streamRequest(words int) string {
	body, _ := wordsBody(words)
	return fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// holdFlood opens n connections, sends req on each and reads until held
// says so, then returns them open (the reads of a stream's rest are left
// to the socket buffers: the gateway's memory is what is measured).
func holdFlood(b *testing.B, addr string, n int, req string, held func(string) bool) []net.Conn {
	conns := make([]net.Conn, n)
	errs := make(chan error, n)
	dial := make(chan struct{}, 128)
	for i := range conns {
		dial <- struct{}{}
		go func() {
			defer func() { <-dial }()
			c, err := net.DialTimeout("tcp", addr, 30*time.Second)
			if err != nil {
				errs <- err
				return
			}
			conns[i] = c
			c.SetDeadline(time.Now().Add(time.Minute))
			io.WriteString(c, req)
			br := bufio.NewReaderSize(c, 512)
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					errs <- err
					return
				}
				if held(line) {
					errs <- nil
					return
				}
			}
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			b.Fatalf("a connection was not held: %v", err)
		}
	}
	return conns
}
