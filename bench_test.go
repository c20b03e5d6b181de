package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkExitDetection measures the time from the moment a process dies
// (SIGKILL sent) to the ladder noticing, with the ladder's own wait (pidfd
// poll on Linux, kqueue on macOS) against the sleep loop it replaces
// (kill(pid, 0) every 10 ms), in one run so the ratio is what counts.
func BenchmarkExitDetection(b *testing.B) {
	b.Run("pidfd", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			cmd, h := startSleeper(b)
			b.StartTimer()
			h.signal(syscall.SIGKILL)
			exited, _, err := h.wait(5*time.Second, -1)
			b.StopTimer()
			if !exited || err != nil {
				b.Fatalf("exit not seen: %v", err)
			}
			h.close()
			cmd.Wait()
		}
	})
	b.Run("sleep-poll-10ms", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			cmd, h := startSleeper(b)
			b.StartTimer()
			h.signal(syscall.SIGKILL)
			for h.state() != 0 && h.state() != 'Z' {
				time.Sleep(10 * time.Millisecond)
			}
			b.StopTimer()
			h.close()
			cmd.Wait()
		}
	})
}

func startSleeper(b *testing.B) (*exec.Cmd, *procHandle) {
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	start, _, err := procInfo(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	h, err := openProc(cmd.Process.Pid, start)
	if err != nil {
		b.Fatal(err)
	}
	return cmd, h
}

// BenchmarkStartReady times `hermes serve` from exec to READY=1 on its
// notify socket (the listener bound, the state written, the loop running),
// and reports the idle gateway's resident memory right after. Both are
// targets: start to ready in single-digit milliseconds, idle RSS at most
// 10 MB. The binary is the static one (CGO_ENABLED=0) the README builds.
func BenchmarkStartReady(b *testing.B) {
	var rss []float64
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		e := newTestEnv(b, "")
		sock, msgs := fakeNotifySocket(b)
		b.StartTimer()
		g := e.spawnGateway("NOTIFY_SOCKET=" + sock)
		wantNotify(b, msgs, "READY=1")
		b.StopTimer()
		rss = append(rss, float64(vmRSS(g.pid()))/1024)
		g.signal(syscall.SIGTERM)
		g.wait(10 * time.Second)
	}
	sort.Float64s(rss)
	b.ReportMetric(rss[len(rss)/2], "idle-RSS-MiB")
}

// BenchmarkRestart times the whole `hermes restart`, from the command's
// start to a new gateway ready (ping and /readyz), on the default ladder,
// for a healthy idle gateway and for one whose loop has been frozen for 3 s
// (the target: ready within 300 ms). It reports the median and the worst.
func BenchmarkRestart(b *testing.B) {
	for _, tc := range []struct {
		name  string
		fault string
	}{{"idle", ""}, {"frozen", "freeze-after-ready"}} {
		b.Run(tc.name, func(b *testing.B) {
			e := newTestEnv(b, "")
			var times []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				var g *gatewayProc
				if i == 0 || tc.fault != "" {
					e.killGateway()
					g = e.startGateway("HERMES_TEST_FAULT=" + tc.fault)
				}
				if tc.fault != "" {
					g.waitStatus(20*time.Second, "a loop frozen for 3s", func(st gatewayStatus) bool { return st.HeartbeatAgeMS >= 3000 })
				}
				b.StartTimer()
				t0 := time.Now()
				out, errOut, code := e.hermes(60*time.Second, "restart")
				times = append(times, time.Since(t0))
				b.StopTimer()
				if code != 0 {
					b.Fatalf("restart = %d\n%s%s", code, out, errOut)
				}
				if g != nil {
					g.wait(5 * time.Second)
				}
				e.gatewayFromPidFile()
			}
			e.killGateway()
			sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "median-ms")
			b.ReportMetric(float64(times[len(times)-1].Microseconds())/1000, "max-ms")
		})
	}
}

// BenchmarkStreamProxy streams one 100-chunk SSE answer per op from a
// fakeUpstream, directly and through a real `hermes serve`, in one run: the
// ratio is hermes's streaming overhead. The gateway's resident memory after
// the run is reported too.
func BenchmarkStreamProxy(b *testing.B) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		chunk := []byte(`data: {"object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"word "}}]}` + "\n\n")
		for i := 0; i < 100; i++ {
			w.Write(chunk)
			fl.Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
	defer up.Close()
	benchProxy(b, up.URL, `{"stream":true,"messages":[{"role":"user","content":"hi"}]}`, 100*80)
}

// BenchmarkShortProxy asks for one short (non-streaming) answer per op, as
// BenchmarkStreamProxy streams: a chat completion from the load script's
// fake upstream, directly and through a real `hermes serve`.
func BenchmarkShortProxy(b *testing.B) {
	up := httptest.NewServer(newFakeLoadUpstream(1, 0))
	defer up.Close()
	benchProxy(b, up.URL, `{"model":"m","stream":false,"messages":[{"role":"user","content":"hi"}]}`, 100)
}

// benchProxy posts body to upstream, directly and through a gateway in
// front of it, and wants an answer of at least least bytes back per op,
// on one client and on parallel ones; through the gateway it reports the gateway's own
// cost per answer (gatewayCost) and, at the end, its resident memory.
func benchProxy(b *testing.B, upstream, body string, least int64) {
	e := newTestEnv(b, fmt.Sprintf("upstream = %q\n", upstream))
	g := e.startGateway()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	ask := func(b *testing.B, base string) {
		resp, err := client.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n < least {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
	for _, tc := range []struct{ name, base string }{{"direct", upstream}, {"hermes", g.url}} {
		b.Run(tc.name, func(b *testing.B) {
			cost := gatewayCost(b, g, tc.base == g.url)
			for i := 0; i < b.N; i++ {
				ask(b, tc.base)
			}
			cost(b.N)
		})
		b.Run(tc.name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					ask(b, tc.base)
				}
			})
		})
	}
	if rss := vmRSS(g.pid()); rss > 0 {
		b.Logf("gateway VmRSS after the run: %d KiB", rss)
	}
}

// gatewayCost reads the gateway's own counters (/metrics) now, and returns
// what reports, after n streams through it, its CPU time and heap
// allocations per stream: the figures a regression on the proxy path moves
// first. It reports nothing for a run that did not go through the gateway.
func gatewayCost(b *testing.B, g *gatewayProc, through bool) func(n int) {
	names := []string{"hermes_process_cpu_seconds_total", "hermes_go_allocs_total", "hermes_go_alloc_bytes_total"}
	if !through {
		return func(int) {}
	}
	before := counters(b, g.url, names...)
	r0, w0, sys := procSyscalls(g.pid())
	return func(n int) {
		r1, w1, _ := procSyscalls(g.pid())
		after := counters(b, g.url, names...)
		per := func(i int) float64 { return (after[i] - before[i]) / float64(n) }
		b.ReportMetric(per(0)*1e6, "gateway-CPU-µs/stream")
		b.ReportMetric(per(1), "gateway-allocs/stream")
		b.ReportMetric(per(2), "gateway-B/stream")
		if sys { // read(2) and write(2) calls: a wait that became a read shows here
			b.ReportMetric(float64(r1-r0)/float64(n), "gateway-reads/stream")
			b.ReportMetric(float64(w1-w0)/float64(n), "gateway-writes/stream")
		}
	}
}

// counters reads unlabelled samples from /metrics (one scrape also counts,
// a little, in what it measures).
func counters(b testing.TB, url string, names ...string) []float64 {
	b.Helper()
	resp, err := freshClient.Get(url + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	raw, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	vals := make([]float64, len(names))
	for i, name := range names {
		_, rest, ok := strings.Cut(string(raw), "\n"+name+" ")
		line, _, _ := strings.Cut(rest, "\n")
		v, err := strconv.ParseFloat(line, 64)
		if !ok || err != nil {
			b.Fatalf("/metrics has no sample %s:\n%s", name, raw)
		}
		vals[i] = v
	}
	return vals
}

// BenchmarkConcurrentStreams holds N concurrent SSE streams open through a
// real `hermes serve` (N = $HERMES_BENCH_STREAMS, default 10,000) and
// reports the gateway's peak resident memory (VmHWM), per stream and in
// all, with the errors. "echo": the built-in echo upstream (one
// connection per session); "upstream": a fake OpenAI-compatible upstream
// (two connections per session: the client's and the upstream's). Every
// stream runs 20 chunks 200 ms apart, and all N are open at once before
// any ends; each must arrive whole, ending in [DONE].
//
//	go test -run '^$' -bench ConcurrentStreams -benchtime 1x .
func BenchmarkConcurrentStreams(b *testing.B) {
	n := 10000
	if s := os.Getenv("HERMES_BENCH_STREAMS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	// Open files: the soft limit up to the hard one (the gateways started
	// here inherit it). A stream through the fake upstream takes two
	// descriptors in the gateway and two in this process (its client and
	// the upstream's server side): that case runs as many streams as fit.
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	fit := func(perStream int) int { return min(n, (int(lim.Cur)-1024)/perStream) }
	const chunks, every = 20, 200 * time.Millisecond
	up := fakeSSEUpstream(chunks, every)
	up.Config.ReadHeaderTimeout = time.Minute
	up.Start()
	defer up.Close()
	for _, tc := range []struct {
		name, policy string
		n            int
	}{
		{"echo", fmt.Sprintf("[echo]\nword_delay = %q\n", every), fit(1)},
		{"upstream", fmt.Sprintf("upstream = %q\n", up.URL), fit(2)},
	} {
		n := tc.n
		// The default max_connections is half the file limit (a session
		// may need an upstream connection too): these streams are counted.
		tc.policy = fmt.Sprintf("max_connections = %d\n", n+64) + tc.policy
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				e := newTestEnv(b, tc.policy)
				g := e.startGateway()
				idle := vmHWM(g.pid())
				started, ok, failed := streamFlood(b, e.addr, n, chunks)
				peak := vmHWM(g.pid())
				g.signal(syscall.SIGTERM)
				g.wait(60 * time.Second)
				b.ReportMetric(float64(peak)/1024, "peak-RSS-MiB")
				b.ReportMetric(float64(peak-idle)*1024/float64(n), "bytes/stream")
				b.ReportMetric(float64(failed), "errors")
				b.Logf("%s: %d streams open at once, %d whole, %d failed; gateway peak RSS %d MiB (idle %d MiB)",
					tc.name, started, ok, failed, peak/1024, idle/1024)
				if failed > 0 || started < n {
					b.Errorf("%d of %d streams failed; %d were open at once", failed, n, started)
				}
			}
		})
	}
}

// streamFlood opens n streams (raw connections: the client's own memory
// stays small), waits until all n have their first chunk, then reads them
// to the end. It returns how many were open at once, whole, and failed.
func streamFlood(b *testing.B, addr string, n, chunks int) (started, ok, failed int) {
	words := make([]string, chunks)
	for i := range words {
		words[i] = fmt.Sprintf("w%d", i)
	}
	body := fmt.Sprintf(`{"stream":true,"messages":[{"role":"user","content":%q}]}`, strings.Join(words, " "))
	req := fmt.Sprintf("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	var mu sync.Mutex
	var opened, good, bad int
	allOpen := make(chan struct{})
	var wg sync.WaitGroup
	dial := make(chan struct{}, 256) // a steady ramp, within the listen backlog
	for i := 0; i < n; i++ {
		wg.Add(1)
		dial <- struct{}{}
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, 30*time.Second)
			if err == nil {
				_, err = io.WriteString(c, req)
			}
			<-dial
			if err != nil {
				mu.Lock()
				bad++
				mu.Unlock()
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Minute))
			br := bufio.NewReaderSize(c, 512)
			first := true
			for {
				line, err := br.ReadString('\n')
				if err != nil {
					mu.Lock()
					bad++
					mu.Unlock()
					return
				}
				if first && strings.HasPrefix(line, "data:") {
					first = false
					mu.Lock()
					opened++
					if opened == n {
						close(allOpen)
					}
					mu.Unlock()
				}
				if strings.HasPrefix(line, "data: [DONE]") {
					mu.Lock()
					good++
					mu.Unlock()
					return
				}
			}
		}()
	}
	select {
	case <-allOpen:
	case <-time.After(2 * time.Minute):
	}
	mu.Lock()
	started = opened
	mu.Unlock()
	wg.Wait()
	return started, good, bad
}

// vmRSS and vmHWM read a process's resident set size and its peak, in
// KiB (Linux), or 0.
func vmRSS(pid int) int { return procStatusKB(pid, "VmRSS:") }

// procSyscalls returns the read and write system calls process pid has
// made (syscr and syscw of /proc/PID/io: read(2) and write(2), not recv or
// send), and false where there is no such file.
func procSyscalls(pid int) (reads, writes int64, ok bool) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, 0, false
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(l, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscr":
			reads = n
		case "syscw":
			writes = n
		}
	}
	return reads, writes, true
}

func vmHWM(pid int) int { return procStatusKB(pid, "VmHWM:") }

// procStatusKB reads one kB figure of /proc/PID/status.
func procStatusKB(pid int, key string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, key); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}

// fakeSSEUpstream is an unstarted upstream that answers every request with
// a stream of chunks events, one each every, then [DONE].
func fakeSSEUpstream(chunks int, every time.Duration) *httptest.Server {
	return httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		t := time.NewTicker(every)
		defer t.Stop()
		for i := 0; i < chunks; i++ {
			fmt.Fprintf(w, "data: {\"choices\":[{\"delta\":{\"content\":\"w%d \"}}]}\n\n", i)
			fl.Flush()
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "data: [DONE]\n\n")
	}))
}
