package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// /metrics, end to end: a real hermes serve is scraped and the answer is
// read by Prometheus' own text parser (Debian's python3-prometheus-client),
// not by a parser of ours that would share our mistakes.

// promParser turns the text format into JSON: every family with its type,
// help and samples, as prometheus_client reads them.
const promParser = `
import sys, json, math
from prometheus_client.parser import text_string_to_metric_families
out = []
for f in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": f.name, "type": f.type, "help": f.documentation,
        "samples": [{"name": s.name, "labels": s.labels,
                     "value": s.value if math.isfinite(s.value) else str(s.value)} for s in f.samples]})
json.dump(out, sys.stdout)
`

const python3 = "/usr/bin/python3"

// needPromParser skips (fails, in CI) a test without the parser.
func needPromParser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(python3); err != nil {
		skipUnlessCI(t, "needs %s with prometheus_client to parse /metrics: apt-get install python3-prometheus-client", python3)
	}
	if out, err := exec.Command(python3, "-c", "import prometheus_client.parser").CombinedOutput(); err != nil {
		skipUnlessCI(t, "needs Python's prometheus_client to parse /metrics (%s): apt-get install python3-prometheus-client", bytes.TrimSpace(out))
	}
}

type promSample struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Value  any               `json:"value"` // a number, or "inf"/"nan"
}

type promFamily struct {
	Name    string       `json:"name"`
	Type    string       `json:"type"`
	Help    string       `json:"help"`
	Samples []promSample `json:"samples"`
}

// scrape is one answer of /metrics, parsed.
type scrape struct {
	raw  string
	fams []promFamily
}

// scrapeMetrics gets url/metrics, checks its content type and parses it
// with prometheus_client; a body the parser rejects fails the test.
func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	resp, err := freshClient.Get(url + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /metrics = %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/plain; version=0.0.4; charset=utf-8" {
		t.Errorf("Content-Type = %q, want the text format 0.0.4's", ct)
	}
	cmd := exec.Command(python3, "-c", promParser)
	cmd.Stdin = bytes.NewReader(body)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("prometheus_client cannot parse /metrics: %v\n%s\nbody:\n%s", err, stderr.String(), body)
	}
	var fams []promFamily
	if err := json.Unmarshal(out, &fams); err != nil {
		t.Fatalf("parser output: %v\n%s", err, out)
	}
	return scrape{raw: string(body), fams: fams}
}

// value returns the sample named name with exactly these labels (pairs).
func (s scrape) value(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.lookup(name, labels...)
	if !ok {
		t.Fatalf("/metrics has no sample %s%v:\n%s", name, labels, s.raw)
	}
	return v
}

func (s scrape) lookup(name string, labels ...string) (float64, bool) {
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, f := range s.fams {
		for _, x := range f.Samples {
			if x.Name != name || len(x.Labels) != len(want) {
				continue
			}
			match := true
			for k, v := range want {
				match = match && x.Labels[k] == v
			}
			if match {
				return sampleValue(x.Value), true
			}
		}
	}
	return 0, false
}

func sampleValue(v any) float64 {
	switch x := v.(type) {
	case float64:
		return x
	case string:
		f, _ := strconv.ParseFloat(x, 64)
		return f
	}
	return math.NaN()
}

// checkWellFormed checks what holds for every scrape: every family is
// typed and documented, every name is hermes_..., counters' samples end in
// _total, and histograms' buckets are cumulative and end in +Inf = _count.
func checkWellFormed(t *testing.T, s scrape) {
	t.Helper()
	typed := map[string]bool{}
	for _, l := range strings.Split(s.raw, "\n") {
		if f := strings.Fields(l); len(f) == 4 && f[0] == "#" && f[1] == "TYPE" {
			typed[f[2]] = true
		} else if l != "" && !strings.HasPrefix(l, "#") {
			name := l[:strings.IndexAny(l, "{ ")]
			base := name
			for _, suf := range []string{"_bucket", "_sum", "_count"} {
				if b, ok := strings.CutSuffix(name, suf); ok && typed[b] {
					base = b
				}
			}
			if !typed[base] {
				t.Errorf("sample %s comes before (or without) a # TYPE line for it", name)
			}
		}
	}
	for _, f := range s.fams {
		if !strings.HasPrefix(f.Name, "hermes_") {
			t.Errorf("family %s is not named hermes_...", f.Name)
		}
		if f.Help == "" {
			t.Errorf("family %s has no # HELP", f.Name)
		}
		switch f.Type {
		case "counter", "gauge", "histogram":
		default:
			t.Errorf("family %s has type %q: want counter, gauge or histogram (a # TYPE line)", f.Name, f.Type)
		}
		for _, x := range f.Samples {
			if !strings.HasPrefix(x.Name, "hermes_") {
				t.Errorf("sample %s is not named hermes_...", x.Name)
			}
			if f.Type == "counter" && !strings.HasSuffix(x.Name, "_total") {
				t.Errorf("counter sample %s does not end in _total", x.Name)
			}
			for k := range x.Labels {
				if k == "session" || k == "path" || k == "user" || k == "chat" || k == "id" {
					t.Errorf("sample %s has a label %q: unbounded", x.Name, k)
				}
			}
		}
		if f.Type == "histogram" {
			checkHistogram(t, f)
		}
	}
}

func checkHistogram(t *testing.T, f promFamily) {
	t.Helper()
	type bucket struct {
		le float64
		n  float64
	}
	var bs []bucket
	count := math.NaN()
	for _, x := range f.Samples {
		switch x.Name {
		case f.Name + "_bucket":
			le, err := strconv.ParseFloat(x.Labels["le"], 64)
			if err != nil {
				t.Errorf("%s bucket with le=%q", f.Name, x.Labels["le"])
			}
			bs = append(bs, bucket{le, sampleValue(x.Value)})
		case f.Name + "_count":
			count = sampleValue(x.Value)
		}
	}
	sort.SliceStable(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) < 2 || !math.IsInf(bs[len(bs)-1].le, 1) {
		t.Errorf("histogram %s: no +Inf bucket: %v", f.Name, bs)
		return
	}
	for i := 1; i < len(bs); i++ {
		if bs[i].n < bs[i-1].n {
			t.Errorf("histogram %s is not cumulative: le=%g has %g, le=%g has %g", f.Name, bs[i-1].le, bs[i-1].n, bs[i].le, bs[i].n)
		}
	}
	if inf := bs[len(bs)-1].n; inf != count {
		t.Errorf("histogram %s: +Inf bucket %g, _count %g", f.Name, inf, count)
	}
}

// waitMetric scrapes until cond holds for the sample's value.
func waitMetric(t *testing.T, url string, timeout time.Duration, cond func(float64) bool, name string, labels ...string) scrape {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		s := scrapeMetrics(t, url)
		if v, ok := s.lookup(name, labels...); ok && cond(v) {
			return s
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s%v never met the condition within %s:\n%s", name, labels, timeout, s.raw)
		}
		<-tick.C
	}
}

// chatOnce posts a streaming chat completion and returns the status and
// the whole body.
func chatOnce(t *testing.T, url, words string, header ...string) (int, []byte) {
	t.Helper()
	body := fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":%q}]}`, words)
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := freshClient.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, b
}

// TestMetricsWellFormed: a fresh gateway's /metrics parses, has every
// family it promises (zero where nothing happened yet), and the process's
// numbers agree with the kernel's.
func TestMetricsWellFormed(t *testing.T) {
	needPromParser(t)
	before := time.Now()
	e := newTestEnv(t, "")
	g := e.startGateway()
	s := scrapeMetrics(t, g.url)
	checkWellFormed(t, s)

	for _, name := range []string{
		"hermes_sessions_active", "hermes_sessions_total", "hermes_session_duration_seconds_count",
		"hermes_session_ttfb_seconds_count", "hermes_upstream_errors_total", "hermes_streamed_bytes_total",
		"hermes_drains_total", "hermes_drain_ends_total", "hermes_drain_timeouts_total", "hermes_handoffs_total",
		"hermes_reloads_total", "hermes_watchdog_firings_total", "hermes_loop_heartbeat_age_seconds",
		"hermes_loop_frozen_after_seconds", "hermes_crash_loop", "hermes_crash_loop_delay_seconds",
		"hermes_starts_recent", "hermes_log_lines_dropped_total", "hermes_build_info", "hermes_state",
		"hermes_connections_open", "hermes_process_resident_memory_bytes", "hermes_process_open_fds",
		"hermes_process_max_fds", "hermes_process_start_time_seconds", "hermes_process_cpu_seconds_total",
		"hermes_go_goroutines", "hermes_go_alloc_bytes_total", "hermes_go_allocs_total", "hermes_go_gc_cycles_total",
	} {
		if !strings.Contains(s.raw, "\n"+name+" ") && !strings.Contains(s.raw, "\n"+name+"{") {
			t.Errorf("no %s in /metrics", name)
		}
	}
	if strings.Contains(s.raw, "hermes_telegram_") {
		t.Errorf("telegram metrics without a bot:\n%s", s.raw)
	}
	for _, o := range outcomeNames {
		if v := s.value(t, "hermes_sessions_total", "outcome", o); v != 0 {
			t.Errorf("fresh gateway: sessions_total{outcome=%q} = %g", o, v)
		}
	}
	if v := s.value(t, "hermes_build_info", "version", version, "goversion", hermesGoVersion); v != 1 {
		t.Errorf("build_info = %g", v)
	}
	if v := s.value(t, "hermes_state", "state", "serving"); v != 1 {
		t.Errorf("state{serving} = %g", v)
	}
	if v := s.value(t, "hermes_state", "state", "draining"); v != 0 {
		t.Errorf("state{draining} = %g", v)
	}
	if v := s.value(t, "hermes_loop_frozen_after_seconds"); v != 1.5 {
		t.Errorf("frozen_after = %g, want 1.5 (3 default heartbeats)", v)
	}
	if v := s.value(t, "hermes_loop_heartbeat_age_seconds"); v < 0 || v > 1.5 {
		t.Errorf("heartbeat age of a ticking gateway = %g", v)
	}
	if v := s.value(t, "hermes_crash_loop"); v != 0 {
		t.Errorf("crash_loop = %g on a first start", v)
	}
	if v := s.value(t, "hermes_starts_recent"); v != 1 {
		t.Errorf("starts_recent = %g on a first start, want 1 (this one)", v)
	}

	// The process's numbers, against the kernel's.
	if v := s.value(t, "hermes_process_start_time_seconds"); v < float64(before.Unix()-1) || v > float64(time.Now().Unix()+1) {
		t.Errorf("process start time %g, the test started the gateway at %d", v, before.Unix())
	}
	if v := s.value(t, "hermes_go_goroutines"); v < 3 {
		t.Errorf("goroutines = %g", v)
	}
	if v := s.value(t, "hermes_process_cpu_seconds_total"); v <= 0 {
		t.Errorf("cpu seconds = %g", v)
	}
	if v := s.value(t, "hermes_process_resident_memory_bytes"); v < 1<<20 || v > 1<<30 {
		t.Errorf("resident memory = %g bytes", v)
	}
	fds := s.value(t, "hermes_process_open_fds")
	if ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.pid())); err == nil {
		if d := fds - float64(len(ents)); d < -2 || d > 2 {
			t.Errorf("open fds = %g, /proc/%d/fd has %d", fds, g.pid(), len(ents))
		}
	} else if fds < 3 {
		t.Errorf("open fds = %g", fds)
	}
}

// TestMetricsCountSessions: the counters move by exactly the sessions that
// ran: finished ones (with their exact bytes), one whose client hung up, one
// refused during a drain; the histograms count the admitted sessions that
// ended; the drain and the state show while it runs.
func TestMetricsCountSessions(t *testing.T) {
	needPromParser(t)
	// A client that leaves: gone at once (a detached stream would count,
	// TestReattachAfterCut).
	e := newTestEnv(t, "[echo]\nword_delay = \"5ms\"\n[drain]\ntimeout = \"30s\"\ngrace = \"2s\"\n[reattach]\nwindow = \"0s\"\n")
	g := e.startGateway()
	s0 := scrapeMetrics(t, g.url)
	if v := s0.value(t, "hermes_session_duration_seconds_count"); v != 0 {
		t.Fatalf("a fresh gateway counted %g sessions", v)
	}

	const n = 3
	var sent float64
	for i := 0; i < n; i++ {
		code, body := chatOnce(t, g.url, strings.Repeat("word ", 4+i))
		if code != 200 || !strings.Contains(string(body), "[DONE]") {
			t.Fatalf("session %d: %d %s", i, code, body)
		}
		sent += float64(len(body))
	}
	s1 := scrapeMetrics(t, g.url)
	checkWellFormed(t, s1)
	for o, want := range map[string]float64{"finished": n, "cut": 0, "client_gone": 0, "refused": 0, "upstream_error": 0} {
		if v := s1.value(t, "hermes_sessions_total", "outcome", o); v != want {
			t.Errorf("after %d sessions: sessions_total{%s} = %g, want %g", n, o, v, want)
		}
	}
	if v := s1.value(t, "hermes_streamed_bytes_total"); v != sent {
		t.Errorf("streamed bytes = %g, the client read %g", v, sent)
	}
	for _, h := range []string{"hermes_session_duration_seconds", "hermes_session_ttfb_seconds"} {
		if v := s1.value(t, h+"_count"); v != n {
			t.Errorf("%s_count = %g, want %d", h, v, n)
		}
		if v := s1.value(t, h+"_sum"); v <= 0 {
			t.Errorf("%s_sum = %g", h, v)
		}
	}
	// Each took well under 10 s.
	if v := s1.value(t, "hermes_session_duration_seconds_bucket", "le", "10"); v != n {
		t.Errorf("duration bucket le=10 = %g, want %d", v, n)
	}

	// A client that hangs up mid-stream.
	gone := startStream(t, g.url, 400)
	gone.waitLines(t, 2, 5*time.Second)
	gone.cancel()
	waitMetric(t, g.url, 10*time.Second, func(v float64) bool { return v >= 1 }, "hermes_sessions_total", "outcome", "client_gone")

	// A stream that outlives the drain's start, and a request refused in it.
	long := startStream(t, g.url, 4000)
	long.waitLines(t, 2, 5*time.Second)
	g.signal(syscall.SIGTERM)
	// The state is published after the loop has closed the gate (the
	// "drain start" line may come a moment before).
	waitMetric(t, g.url, 5*time.Second, func(v float64) bool { return v == 1 }, "hermes_state", "state", "draining")
	if code, body := chatOnce(t, g.url, "too late"); code != 503 {
		t.Fatalf("a request during the drain: %d %s, want 503", code, body)
	}
	s2 := scrapeMetrics(t, g.url)
	checkWellFormed(t, s2)
	for o, want := range map[string]float64{"finished": n, "cut": 0, "client_gone": 1, "refused": 1, "upstream_error": 0} {
		if v := s2.value(t, "hermes_sessions_total", "outcome", o); v != want {
			t.Errorf("in the drain: sessions_total{%s} = %g, want %g", o, v, want)
		}
	}
	for _, h := range []string{"hermes_session_duration_seconds_count", "hermes_session_ttfb_seconds_count"} {
		if v := s2.value(t, h); v != n+1 { // the refused one was never admitted; the long one has not ended
			t.Errorf("in the drain: %s = %g, want %d", h, v, n+1)
		}
	}
	if v := s2.value(t, "hermes_streamed_bytes_total"); v <= sent {
		t.Errorf("streamed bytes = %g, no more than the finished sessions' %g", v, sent)
	}
	checks := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"hermes_sessions_active", nil, 1},
		{"hermes_state", []string{"state", "draining"}, 1},
		{"hermes_state", []string{"state", "serving"}, 0},
		{"hermes_drains_total", []string{"reason", reasonShutdown}, 1},
		{"hermes_drains_total", []string{"reason", reasonRestart}, 0},
		{"hermes_drain_ends_total", []string{"how", "empty"}, 0},
		{"hermes_upstream_errors_total", []string{"kind", "connect"}, 0},
	}
	for _, c := range checks {
		if v := s2.value(t, c.name, c.labels...); v != c.want {
			t.Errorf("in the drain: %s%v = %g, want %g", c.name, c.labels, v, c.want)
		}
	}

	// A second TERM stops now: the long stream gets its final event.
	g.signal(syscall.SIGTERM)
	long.waitDone(t, 10*time.Second)
	if code := g.wait(10 * time.Second); code != 0 {
		t.Errorf("exit %d, want 0", code)
	}
}

// TestMetricsUpstreamErrors: sessions whose upstream failed are counted as
// upstream_error, by kind: a 5xx, a stream that broke, an upstream that
// cannot be reached.
func TestMetricsUpstreamErrors(t *testing.T) {
	needPromParser(t)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		switch r.Header.Get("X-Test") {
		case "500":
			http.Error(w, `{"error":"overloaded"}`, http.StatusInternalServerError)
		case "broken":
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"partial\":true}\n\n")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the connection drops mid-stream
		default:
			w.Header().Set("Content-Type", "text/event-stream")
			fmt.Fprint(w, "data: {\"ok\":true}\n\ndata: [DONE]\n\n")
		}
	}))
	t.Cleanup(up.Close)
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n", up.URL))
	g := e.startGateway()
	if code, _ := chatOnce(t, g.url, "hi"); code != 200 {
		t.Fatalf("a good session: %d", code)
	}
	if code, _ := chatOnce(t, g.url, "hi", "X-Test", "500"); code != 500 {
		t.Fatalf("upstream 500 passed on as %d", code)
	}
	chatOnce(t, g.url, "hi", "X-Test", "broken")
	s := scrapeMetrics(t, g.url)
	checkWellFormed(t, s)
	for _, c := range []struct {
		name, k, v string
		want       float64
	}{
		{"hermes_sessions_total", "outcome", "finished", 1},
		{"hermes_sessions_total", "outcome", "upstream_error", 2},
		{"hermes_upstream_errors_total", "kind", "status_5xx", 1},
		{"hermes_upstream_errors_total", "kind", "broken_stream", 1},
		{"hermes_upstream_errors_total", "kind", "connect", 0},
		{"hermes_upstream_errors_total", "kind", "timeout", 0},
		{"hermes_upstream_errors_total", "kind", "other", 0},
	} {
		if v := s.value(t, c.name, c.k, c.v); v != c.want {
			t.Errorf("%s{%s=%q} = %g, want %g", c.name, c.k, c.v, v, c.want)
		}
	}

	// Nothing listens where the second gateway's upstream is.
	e2 := newTestEnv(t, fmt.Sprintf("upstream = %q\n", "http://"+freePort(t)))
	g2 := e2.startGateway()
	if code, body := chatOnce(t, g2.url, "hi"); code != 502 {
		t.Fatalf("unreachable upstream: %d %s, want 502", code, body)
	}
	s2 := scrapeMetrics(t, g2.url)
	if v := s2.value(t, "hermes_upstream_errors_total", "kind", "connect"); v != 1 {
		t.Errorf("upstream_errors_total{connect} = %g, want 1\n%s", v, s2.raw)
	}
	if v := s2.value(t, "hermes_sessions_total", "outcome", "upstream_error"); v != 1 {
		t.Errorf("sessions_total{upstream_error} = %g, want 1", v)
	}
}

// TestMetricsFrozenGateway: /metrics is answered without the loop, so a
// frozen gateway still reports, and its heartbeat's age grows past the
// frozen threshold. (The watchdog is off: the gateway stays to be looked
// at.)
func TestMetricsFrozenGateway(t *testing.T) {
	needPromParser(t)
	e := newTestEnv(t, "[watchdog]\nheartbeat = \"500ms\"\ntimeout = \"0s\"\nsignal_timeout = \"0s\"\n")
	g := e.startGateway(frozen)
	s := waitMetric(t, g.url, 10*time.Second, func(v float64) bool { return v > 1.5 }, "hermes_loop_heartbeat_age_seconds")
	checkWellFormed(t, s)
	if v := s.value(t, "hermes_loop_frozen_after_seconds"); v != 1.5 {
		t.Errorf("frozen_after = %g, want 1.5", v)
	}
	age := s.value(t, "hermes_loop_heartbeat_age_seconds")
	// Still growing: the loop has not run since.
	later := waitMetric(t, g.url, 10*time.Second, func(v float64) bool { return v >= age+0.5 }, "hermes_loop_heartbeat_age_seconds")
	if code, _ := httpGet(t, g.url+"/healthz"); code != 503 {
		t.Errorf("healthz = %d while /metrics says the heartbeat is %gs old", code, later.value(t, "hermes_loop_heartbeat_age_seconds"))
	}
}

// TestMetricsHoldNoSecret: with an upstream key and a bot token in use, no
// part of either shows in /metrics, and the bot's metrics are there.
func TestMetricsHoldNoSecret(t *testing.T) {
	needPromParser(t)
	const key = "sk-metrics-secret-0123456789abcdef"
	bot := newFakeBotAPI(t)
	up := newFakeChatUpstream(t)
	e := telegramEnv(t, bot, fmt.Sprintf("upstream = %q\nupstream_key_env = \"TEST_UPSTREAM_KEY\"\n", up.srv.URL), "")
	g := e.startGateway("TEST_UPSTREAM_KEY=" + key)
	g.waitLog("telegram polling", 10*time.Second)
	_, m := bot.userMessage(tgAllowed, tgAllowed, "hello metrics")
	answered(t, bot, tgAllowed, m, "you said: hello metrics", 10*time.Second)
	if code, body := chatOnce(t, g.url, "over http"); code != 200 {
		t.Fatalf("session: %d %s", code, body)
	}
	s := waitMetric(t, g.url, 10*time.Second, func(v float64) bool { return v == 1 }, "hermes_telegram_answers_total")
	checkWellFormed(t, s)

	tok := bot.Token()
	secrets := []string{key, key[len(key)-12:], tok}
	if _, after, ok := strings.Cut(tok, ":"); ok {
		secrets = append(secrets, after)
	}
	for _, x := range secrets {
		if strings.Contains(s.raw, x) {
			t.Errorf("/metrics holds a secret (%.6s...):\n%s", x, s.raw)
		}
	}
	for _, c := range []struct {
		name   string
		labels []string
		ok     func(float64) bool
	}{
		{"hermes_telegram_state", []string{"state", "polling"}, func(v float64) bool { return v == 1 }},
		{"hermes_telegram_polls_total", []string{"result", "ok"}, func(v float64) bool { return v >= 1 }},
		{"hermes_telegram_polls_total", []string{"result", "conflict"}, func(v float64) bool { return v == 0 }},
		{"hermes_telegram_conflicts_total", nil, func(v float64) bool { return v == 0 }},
		{"hermes_telegram_last_poll_age_seconds", nil, func(v float64) bool { return v >= 0 && v < 30 }},
		{"hermes_telegram_pending", nil, func(v float64) bool { return v == 0 }},
		{"hermes_sessions_total", []string{"outcome", "finished"}, func(v float64) bool { return v == 1 }},
	} {
		if v := s.value(t, c.name, c.labels...); !c.ok(v) {
			t.Errorf("%s%v = %g", c.name, c.labels, v)
		}
	}
}

// TestMetricsHistogramBuckets: an observation exactly on a bound counts in
// that bound's bucket (le is "less or equal"), and past the last in +Inf.
func TestMetricsHistogramBuckets(t *testing.T) {
	var h histogram
	b := newBuckets(0.1, 1)
	for _, d := range []time.Duration{0, 100 * time.Millisecond, 101 * time.Millisecond, time.Second, 2 * time.Second} {
		h.observe(b, d)
	}
	var w promWriter
	w.histogram("hermes_x_seconds", "x", b, &h)
	want := `# HELP hermes_x_seconds x
# TYPE hermes_x_seconds histogram
hermes_x_seconds_bucket{le="0.1"} 2
hermes_x_seconds_bucket{le="1"} 4
hermes_x_seconds_bucket{le="+Inf"} 5
hermes_x_seconds_sum 3.201
hermes_x_seconds_count 5
`
	if got := string(w.b); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

// TestMetricsEscaping: label values and help text are escaped as the text
// format asks.
func TestMetricsEscaping(t *testing.T) {
	var w promWriter
	w.family("hermes_x", "gauge", "a \\ and\na newline")
	w.sample("hermes_x", 1, "v", "q\"b\\n\n")
	want := "# HELP hermes_x a \\\\ and\\na newline\n# TYPE hermes_x gauge\nhermes_x{v=\"q\\\"b\\\\n\\n\"} 1\n"
	if got := string(w.b); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestMetricsHotPathAllocs: what a session adds to the metrics allocates
// nothing, and a scrape allocates little.
func TestMetricsHotPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	var m metrics
	s := &sessionRun{started: time.Now(), rec: responseRecorder{written: 100}}
	first := time.Now()
	if n := testing.AllocsPerRun(100, func() { m.sessionEnded(s, evNone, first) }); n != 0 {
		t.Errorf("sessionEnded allocates %g times", n)
	}
	rec := &responseRecorder{ResponseWriter: discardWriter{}}
	buf := []byte("data: x\n\n")
	if n := testing.AllocsPerRun(100, func() { rec.Write(buf) }); n != 0 {
		t.Errorf("responseRecorder.Write allocates %g times", n)
	}

	g := &gateway{}
	g.snap.Store(&snapshot{State: stateServing, Policy: defaultPolicy()})
	g.beat(time.Now())
	var w promWriter
	n := testing.AllocsPerRun(20, func() {
		w.b = w.b[:0]
		g.writeMetrics(&w, time.Now())
	})
	t.Logf("a scrape: %d bytes, %g allocations", len(w.b), n)
	if n > 20 {
		t.Errorf("a scrape allocates %g times", n)
	}
}

type discardWriter struct{}

func (discardWriter) Header() http.Header         { return http.Header{} }
func (discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (discardWriter) WriteHeader(int)             {}

// TestDocsNameRealMetrics: every metric the README, the docs and the policy
// example name (an alert rule, a dashboard hint) is one a gateway serves,
// Telegram's included, so a renamed metric cannot leave a dead rule in the
// docs. Build tags (hermes_testfault, hermes_pprof) look like metrics and
// are not.
func TestDocsNameRealMetrics(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	files := []string{"README.md", "hermes.toml.example"}
	docs, err := filepath.Glob("docs/*.md")
	if err != nil || len(docs) == 0 {
		t.Fatalf("docs/*.md: %v (%d files)", err, len(docs))
	}
	files = append(files, docs...)
	nameRe := regexp.MustCompile(`\bhermes_[a-z_]*[a-z]`)
	named := map[string]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nameRe.FindAllString(string(b), -1) {
			if n != "hermes_testfault" && n != "hermes_pprof" {
				named[n] = f
			}
		}
	}
	if len(named) < 10 {
		t.Fatalf("the docs name %d metrics: %v", len(named), named)
	}
	bot := newFakeBotAPI(t)
	up := newFakeRawUpstream(t, answerAs("up")) // the per-upstream metrics need one
	e := telegramEnv(t, bot, "", upstreamTables("up", up.url()))
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	_, m := httpGet(t, g.url+"/metrics")
	for n, f := range named {
		if !strings.Contains(m, "\n# TYPE "+n+" ") {
			t.Errorf("%s names the metric %s, which /metrics does not serve", f, n)
		}
	}
}
