package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
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
	e := newTestEnv(b, fmt.Sprintf("upstream = %q\n", up.URL))
	g := e.startGateway()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	body := `{"stream":true,"messages":[{"role":"user","content":"hi"}]}`
	stream := func(b *testing.B, base string) {
		resp, err := client.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || n < 100*80 {
			b.Fatalf("status %d, %d bytes", resp.StatusCode, n)
		}
	}
	for _, tc := range []struct{ name, base string }{{"direct", up.URL}, {"hermes", g.url}} {
		b.Run(tc.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				stream(b, tc.base)
			}
		})
		b.Run(tc.name+"-parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					stream(b, tc.base)
				}
			})
		})
	}
	if rss := vmRSS(g.pid()); rss > 0 {
		b.Logf("gateway VmRSS after the run: %d KiB", rss)
	}
}

// vmRSS reads a process's resident set size in KiB (Linux), or 0.
func vmRSS(pid int) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			n, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return n
		}
	}
	return 0
}
