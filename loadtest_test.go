package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The load benchmark's roles (bench/load.sh). The test binary doubles as
// the benchmark's tools, so they build from this module with nothing to
// install: `go test -c -o hermes.test .`, then
//
//	HERMES_TEST_ROLE=fake-upstream hermes.test -addr 127.0.0.1:9000 -chunks 100 -delay 10ms
//	HERMES_TEST_ROLE=loadgen hermes.test -url http://127.0.0.1:8642 -c 32 -duration 30s -marks marks.txt
//	HERMES_TEST_ROLE=plot hermes.test -out latency.svg drain=samples.tsv,marks.txt
//	HERMES_TEST_ROLE=report hermes.test -dir bench/out -command '...'
//	HERMES_TEST_ROLE=free-addr hermes.test -n 3
//	HERMES_TEST_ROLE=hold hermes.test -addr 127.0.0.1:8642 -n 3000 -kind idle -ready held.txt
//
// Each role parses its own flags (a leading "--" is skipped) and never runs
// as a test: TestMain hands the process to runTestRole before m.Run when
// HERMES_TEST_ROLE is set, and `go test` never sets it.

// runTestRole runs one role and returns the process's exit code: 0, 1 on a
// failure (or a failed check, for report), 2 on a usage error.
func runTestRole(role string, args []string) int {
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	roles := map[string]func([]string) error{
		"fake-upstream":  runFakeLoadUpstream,
		"loadgen":        runLoadgen,
		"plot":           runLoadPlot,
		"report":         runLoadReport,
		"free-addr":      runFreeAddr,
		"fake-successor": runFakeSuccessor,
		"fake-agent":     runFakeAgent,
		"hold":           runHold,
	}
	f, ok := roles[role]
	if !ok {
		fmt.Fprintf(os.Stderr, "hermes.test: unknown HERMES_TEST_ROLE %q (fake-upstream, loadgen, plot, report, free-addr, fake-successor, fake-agent, hold)\n", role)
		return 2
	}
	err := f(args)
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	}
	fmt.Fprintf(os.Stderr, "hermes.test %s: error: %v\n", role, err)
	return 1
}

// roleFlags is a role's flag set; parse rejects positional arguments
// unless the role takes them.
func roleFlags(role, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet(role, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: HERMES_TEST_ROLE=%s hermes.test %s\n\nFlags:\n", role, usage)
		fs.PrintDefaults()
	}
	return fs
}

func parseRoleFlags(fs *flag.FlagSet, args []string, positional bool) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if !positional && fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return errUsage
	}
	return nil
}

// untilSignal returns a channel closed at the first TERM or INT. The
// script stops its background roles with TERM, because a background job of
// a non-interactive shell starts with INT ignored.
func untilSignal() <-chan struct{} {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	go func() { <-ch; close(done) }()
	return done
}

// runFreeAddr prints n loopback addresses that were free a moment ago, all
// different (every listener is held until all are chosen).
func runFreeAddr(args []string) error {
	fs := roleFlags("free-addr", "[-n N]")
	n := fs.Int("n", 1, "how many addresses")
	if err := parseRoleFlags(fs, args, false); err != nil {
		return err
	}
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for range *n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		lns = append(lns, ln)
		fmt.Println(ln.Addr())
	}
	return nil
}

// The request headers that choose one answer's shape, so a single load
// generator can mix long streams and short answers through any proxy (a
// proxy passes headers through; hermes and nginx both do).
const (
	hdrFakeChunks = "X-Fake-Chunks" // chunks in a stream
	hdrFakeDelay  = "X-Fake-Delay"  // Go duration between two chunks
)

// fakeLoadUpstream is an OpenAI-compatible upstream built to be cheap: it is
// the "direct" ceiling the gateway and nginx are compared with. A stream is
// `chunks` SSE chunks whose content is "c<seq> " (seq 0..chunks-1, so a
// client can verify order and completeness), `delay` apart, each flushed
// on its own, then `data: [DONE]`. Buffers come from a pool; the
// non-streaming answer is built once.
type fakeLoadUpstream struct {
	chunks     int
	delay      time.Duration
	completion []byte
	bufs       sync.Pool
}

var (
	fakeChunkHead = []byte(`data: {"id":"chatcmpl-fake","object":"chat.completion.chunk","created":1700000000,"model":"fake-upstream","choices":[{"index":0,"delta":{"content":"c`)
	fakeChunkTail = []byte(" \"},\"finish_reason\":null}]}\n\n")
	fakeDone      = []byte("data: [DONE]\n\n")
)

func newFakeLoadUpstream(chunks int, delay time.Duration) *fakeLoadUpstream {
	f := &fakeLoadUpstream{chunks: chunks, delay: delay}
	f.completion, _ = json.Marshal(map[string]any{
		"id": "chatcmpl-fake", "object": "chat.completion", "created": 1700000000, "model": "fake-upstream",
		"choices": []any{map[string]any{"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": "ok"}}},
		"usage": map[string]int{"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
	})
	f.completion = append(f.completion, '\n')
	f.bufs.New = func() any { b := make([]byte, 0, 4096); return &b }
	return f
}

func (f *fakeLoadUpstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
		http.Error(w, "the fake upstream serves POST /v1/chat/completions only", http.StatusNotFound)
		return
	}
	bp := f.bufs.Get().(*[]byte)
	defer f.bufs.Put(bp)
	body := bytes.NewBuffer((*bp)[:0])
	if _, err := body.ReadFrom(io.LimitReader(r.Body, 1<<20)); err != nil {
		return
	}
	var req struct {
		Stream bool `json:"stream"`
	}
	if err := json.Unmarshal(body.Bytes(), &req); err != nil {
		http.Error(w, "the body is not JSON: "+err.Error(), http.StatusBadRequest)
		return
	}
	*bp = body.Bytes()[:0] // keep the grown buffer for the next request
	if !req.Stream {
		h := w.Header()
		h["Content-Type"] = []string{"application/json"}
		h["Content-Length"] = []string{strconv.Itoa(len(f.completion))}
		w.Write(f.completion)
		return
	}
	chunks, delay := f.chunks, f.delay
	if v := r.Header.Get(hdrFakeChunks); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			http.Error(w, hdrFakeChunks+": not a count", http.StatusBadRequest)
			return
		}
		chunks = n
	}
	if v := r.Header.Get(hdrFakeDelay); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			http.Error(w, hdrFakeDelay+": not a duration", http.StatusBadRequest)
			return
		}
		delay = d
	}
	h := w.Header()
	h["Content-Type"] = []string{"text/event-stream"}
	h["Cache-Control"] = []string{"no-cache"}
	w.WriteHeader(http.StatusOK)
	fl, _ := w.(http.Flusher)
	var timer *time.Timer
	buf := *bp
	for i := range chunks {
		if i > 0 && delay > 0 {
			if timer == nil {
				timer = time.NewTimer(delay)
				defer timer.Stop()
			} else {
				timer.Reset(delay)
			}
			select {
			case <-timer.C:
			case <-r.Context().Done():
				return
			}
		}
		buf = append(strconv.AppendInt(append(buf[:0], fakeChunkHead...), int64(i), 10), fakeChunkTail...)
		if _, err := w.Write(buf); err != nil {
			return
		}
		if fl != nil {
			fl.Flush()
		}
	}
	*bp = buf[:0]
	w.Write(fakeDone)
}

func runFakeLoadUpstream(args []string) error {
	fs := roleFlags("fake-upstream", "[-addr HOST:PORT] [-chunks N] [-delay D]")
	addr := fs.String("addr", "127.0.0.1:0", "loopback `address` to listen on")
	chunks := fs.Int("chunks", 100, "chunks per stream, unless the request's "+hdrFakeChunks+" header says otherwise")
	delay := fs.Duration("delay", 10*time.Millisecond, "delay between two chunks, unless the request's "+hdrFakeDelay+" header says otherwise")
	if err := parseRoleFlags(fs, args, false); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: newFakeLoadUpstream(*chunks, *delay), ReadHeaderTimeout: 10 * time.Second}
	fmt.Println(ln.Addr())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-untilSignal():
		srv.Close()
		return nil
	case err := <-served:
		return err
	}
}

// loadOutcome is what became of one request.
type loadOutcome uint8

const (
	outOK        loadOutcome = iota
	outRefused               // HTTP 503: the gateway said no (a drain)
	outConnError             // no answer at all: connection refused, reset or closed
	outFailed                // another status, a bad body, a timeout
	outBroken                // a stream that started but was not whole
)

var loadOutcomeNames = [...]string{"ok", "refused", "conn_error", "failed", "broken"}

func (o loadOutcome) String() string { return loadOutcomeNames[o] }

// notServed says the request was turned away before it began: the span of
// such requests around a restart is the time clients were refused.
func (o loadOutcome) notServed() bool { return o == outRefused || o == outConnError }

// loadSample is one request as the load generator saw it. Times are unix
// nanoseconds; ttfb is 0 when no response arrived.
type loadSample struct {
	start, end int64
	ttfb       int64
	stream     bool
	out        loadOutcome
	detail     string // why it was not ok
}

func (s loadSample) latency() time.Duration { return time.Duration(s.end - s.start) }

// firstByte is the latency a person feels: time to the response's first
// byte, or, with no response, time to the failure.
func (s loadSample) firstByte() time.Duration {
	if s.ttfb > 0 {
		return time.Duration(s.ttfb)
	}
	return s.latency()
}

func (s loadSample) kind() string {
	if s.stream {
		return "stream"
	}
	return "short"
}

// loadgen is the load: c workers, each sending one request after another
// over a keep-alive pool as large as c (Go's default keeps 2 idle
// connections per host: every extra request would dial anew and leave a
// TIME_WAIT socket behind).
type loadgen struct {
	url       string
	client    *http.Client
	shortFrac float64
	chunks    int
	spread    int // a stream carries chunks±spread chunks, uniformly
	delay     time.Duration
	timeout   time.Duration
	backoff   time.Duration
	short     []byte
	stream    []byte
}

func (lg *loadgen) worker(id int, stop <-chan struct{}) []loadSample {
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(id)))
	br := bufio.NewReaderSize(nil, 16<<10)
	var out []loadSample
	for {
		select {
		case <-stop:
			return out
		default:
		}
		n := 0
		if rng.Float64() >= lg.shortFrac {
			// Streams of one length would keep the workers in step: they
			// would all ask at once, once per stream, and a restart would
			// meet bursts instead of a steady flow of new requests.
			n = max(lg.chunks+rng.IntN(2*lg.spread+1)-lg.spread, 0)
		}
		s := lg.one(n > 0, n, br)
		out = append(out, s)
		if s.out != outOK && lg.backoff > 0 {
			// A refused client tries again soon, not in a tight loop: the
			// count of refusals then measures time, not CPU speed.
			select {
			case <-stop:
				return out
			case <-time.After(lg.backoff):
			}
		}
	}
}

// one sends one request, a stream of n chunks or a short answer, and
// verifies the answer by content.
func (lg *loadgen) one(stream bool, n int, br *bufio.Reader) (s loadSample) {
	s.stream = stream
	body := lg.short
	if stream {
		body = lg.stream
	}
	ctx, cancel := context.WithTimeout(context.Background(), lg.timeout)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, lg.url, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(hdrFakeChunks, strconv.Itoa(n))
	req.Header.Set(hdrFakeDelay, lg.delay.String())
	start := time.Now()
	s.start = start.UnixNano()
	defer func() { s.end = time.Now().UnixNano() }()
	resp, err := lg.client.Do(req)
	if err != nil {
		s.out, s.detail = classifyConnError(err)
		return s
	}
	defer resp.Body.Close()
	s.ttfb = int64(time.Since(start))
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		io.Copy(io.Discard, resp.Body)
		s.out, s.detail = outRefused, "503"
	case resp.StatusCode != http.StatusOK:
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 200))
		s.out, s.detail = outFailed, fmt.Sprintf("status %d: %s", resp.StatusCode, bytes.TrimSpace(b))
	case stream:
		br.Reset(resp.Body)
		if err := verifyStream(br, n); err != nil {
			s.out, s.detail = outBroken, err.Error()
		}
	default:
		if err := verifyCompletion(resp.Body); err != nil {
			s.out, s.detail = outFailed, err.Error()
		}
	}
	return s
}

// classifyConnError sorts a request that got no response: connection
// refused, reset and closed are "the gateway was not there"; a timeout or
// anything else is a failure.
func classifyConnError(err error) (loadOutcome, string) {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return outConnError, "connection refused"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return outConnError, "connection reset"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		// net/http's errServerClosedIdle (unexported): the server closed a
		// keep-alive connection as the request went out on it; a POST is
		// not retried.
		strings.Contains(err.Error(), "http: server closed idle connection"):
		return outConnError, "connection closed"
	case errors.As(err, &ne) && ne.Timeout():
		return outFailed, "timeout"
	}
	return outFailed, err.Error()
}

// verifyStream reads an SSE stream to its end and says why it is not whole:
// it must carry chunks 0..n-1 in order (the sequence number is the "c<seq>"
// content of the fake upstream), then data: [DONE], then nothing.
func verifyStream(br *bufio.Reader, n int) error {
	next, done, errEvent := 0, false, false
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return fmt.Errorf("line longer than %d bytes after chunk %d", br.Size(), next-1)
		}
		line = bytes.TrimRight(line, "\r\n")
		switch {
		case len(line) == 0:
		case bytes.HasPrefix(line, []byte("event: error")):
			errEvent = true
		case bytes.HasPrefix(line, []byte("data: ")):
			data := line[len("data: "):]
			if errEvent {
				var ev struct {
					Reason string `json:"reason"`
				}
				json.Unmarshal(data, &ev)
				return fmt.Errorf("error event %q after %d of %d chunks", ev.Reason, next, n)
			}
			if done {
				return fmt.Errorf("data after [DONE]")
			}
			if bytes.Equal(data, []byte("[DONE]")) {
				if next != n {
					return fmt.Errorf("[DONE] after %d of %d chunks", next, n)
				}
				done = true
				continue
			}
			seq, ok := chunkSeq(data)
			if !ok {
				return fmt.Errorf("chunk %d has no sequence number: %.80s", next, data)
			}
			if seq != next {
				return fmt.Errorf("chunk %d arrived where %d was due", seq, next)
			}
			next++
		}
		if err != nil {
			if err != io.EOF {
				return fmt.Errorf("read after %d of %d chunks: %w", next, n, err)
			}
			if !done {
				return fmt.Errorf("ended after %d of %d chunks without [DONE]", next, n)
			}
			return nil
		}
	}
}

var chunkSeqMarker = []byte(`"content":"c`)

// chunkSeq finds the sequence number in a fake upstream's chunk without
// decoding the JSON: the load generator must not be the bottleneck.
func chunkSeq(data []byte) (int, bool) {
	i := bytes.Index(data, chunkSeqMarker)
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(chunkSeqMarker):]
	j := 0
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	if j == 0 || j > 9 || j == len(rest) || rest[j] != ' ' {
		return 0, false
	}
	n, _ := strconv.Atoi(string(rest[:j]))
	return n, true
}

// verifyCompletion checks a short answer: one JSON chat.completion with a
// message.
func verifyCompletion(r io.Reader) error {
	var c struct {
		Object  string `json:"object"`
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(io.LimitReader(r, 1<<20)).Decode(&c); err != nil {
		return fmt.Errorf("body is not JSON: %w", err)
	}
	if c.Object != "chat.completion" || len(c.Choices) == 0 || c.Choices[0].Message.Content == "" {
		return fmt.Errorf("body is not a chat.completion with a message")
	}
	return nil
}

// loadMark is one line of the marks file: "UNIX_MS KIND LABEL...", where
// KIND is begin or end (a restart: begin before the command, end after it
// returned; the end's label may carry rc=N, the command's exit code) or
// note (a point in time, e.g. the binary upgrade).
type loadMark struct {
	ms    int64
	kind  string
	label string
}

func readMarks(path string) ([]loadMark, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var marks []loadMark
	for i, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		ms, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil || len(f) < 2 || (f[1] != "begin" && f[1] != "end" && f[1] != "note") {
			return nil, fmt.Errorf("%s:%d: want \"UNIX_MS begin|end|note LABEL\", got %q", path, i+1, line)
		}
		marks = append(marks, loadMark{ms: ms, kind: f[1], label: strings.Join(f[2:], " ")})
	}
	return marks, nil
}

// restartWindow is one restart: from its begin mark to its end mark.
type restartWindow struct {
	Label      string  `json:"label"`
	BeginMS    int64   `json:"begin_unix_ms"`
	EndMS      int64   `json:"end_unix_ms"`
	DurationMS float64 `json:"duration_ms"`
	RC         int     `json:"rc"` // the restart command's exit code (rc=N in the end mark), -1 unknown
	// Requests that started within the window widened by -settle, by outcome.
	Outcomes map[string]int `json:"outcomes"`
	// RefusedMS is the longest run of consecutive requests (by start time)
	// in the window that were all turned away (503 or no connection): from
	// the first one's start to the last one's end.
	RefusedMS float64 `json:"refused_window_ms"`
}

func restartWindows(marks []loadMark) []restartWindow {
	var ws []restartWindow
	open := -1
	for _, m := range marks {
		switch m.kind {
		case "begin":
			ws = append(ws, restartWindow{Label: m.label, BeginMS: m.ms, EndMS: -1, RC: -1})
			open = len(ws) - 1
		case "end":
			if open < 0 {
				continue
			}
			w := &ws[open]
			w.EndMS = m.ms
			w.DurationMS = float64(m.ms - w.BeginMS)
			for _, f := range strings.Fields(m.label) {
				if v, ok := strings.CutPrefix(f, "rc="); ok {
					w.RC, _ = strconv.Atoi(v)
				}
			}
			open = -1
		}
	}
	// A restart still running when the load stopped lasts to the end.
	for i := range ws {
		if ws[i].EndMS < 0 {
			ws[i].EndMS = math.MaxInt64 / 2
		}
	}
	return ws
}

// loadDist is a latency distribution in milliseconds.
type loadDist struct {
	N   int     `json:"n"`
	P50 float64 `json:"p50"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func distOf(ds []time.Duration) loadDist {
	if len(ds) == 0 {
		return loadDist{}
	}
	slices.Sort(ds)
	pct := func(p float64) float64 {
		i := int(math.Ceil(p*float64(len(ds)))) - 1
		return toMS(ds[max(i, 0)])
	}
	return loadDist{N: len(ds), P50: pct(0.50), P99: pct(0.99), Max: toMS(ds[len(ds)-1])}
}

func toMS(d time.Duration) float64 { return math.Round(float64(d)/1e3) / 1e3 }

// loadPhase is what the requests of one phase (all, steady, restart) saw.
// Latencies are those of ok requests only.
type loadPhase struct {
	Requests    int            `json:"requests"`
	Outcomes    map[string]int `json:"outcomes"`
	FirstByte   loadDist       `json:"first_byte"`   // both kinds: time to the response's first byte
	Short       loadDist       `json:"short"`        // short answers: whole request
	StreamFirst loadDist       `json:"stream_first"` // streams: time to the first byte
	StreamTotal loadDist       `json:"stream_total"` // streams: whole stream
}

func phaseOf(samples []loadSample) loadPhase {
	p := loadPhase{Requests: len(samples), Outcomes: outcomeCounts(samples)}
	var first, short, sfirst, stotal []time.Duration
	for _, s := range samples {
		if s.out != outOK {
			continue
		}
		first = append(first, s.firstByte())
		if s.stream {
			sfirst = append(sfirst, s.firstByte())
			stotal = append(stotal, s.latency())
		} else {
			short = append(short, s.latency())
		}
	}
	p.FirstByte, p.Short, p.StreamFirst, p.StreamTotal = distOf(first), distOf(short), distOf(sfirst), distOf(stotal)
	return p
}

func outcomeCounts(samples []loadSample) map[string]int {
	m := make(map[string]int, len(loadOutcomeNames))
	for _, n := range loadOutcomeNames {
		m[n] = 0
	}
	for _, s := range samples {
		m[s.out.String()]++
	}
	return m
}

// loadSummary is the loadgen's JSON report.
type loadSummary struct {
	Label         string  `json:"label"`
	URL           string  `json:"url"`
	Concurrency   int     `json:"concurrency"`
	ShortFraction float64 `json:"short_fraction"`
	Chunks        int     `json:"chunks"`
	ChunkSpread   float64 `json:"chunk_spread"`
	ChunkDelayMS  float64 `json:"chunk_delay_ms"`
	SettleMS      float64 `json:"settle_ms"`
	StartUnixMS   int64   `json:"start_unix_ms"`
	Seconds       float64 `json:"seconds"`
	Requests      int     `json:"requests"`
	PerSecond     float64 `json:"requests_per_s"`
	OKPerSecond   float64 `json:"ok_per_s"`
	Streams       int     `json:"streams"`
	WholeStreams  int     `json:"whole_streams"`
	// ConnErrors splits conn_error: refused, reset, closed.
	ConnErrors map[string]int `json:"conn_errors"`
	// Errors counts the reasons of every request that was not ok (the 20
	// most frequent).
	Errors   map[string]int       `json:"errors"`
	Phases   map[string]loadPhase `json:"phases"` // all, steady, restart
	Restarts []restartWindow      `json:"restarts"`
	// RestartMS is the distribution of the restart commands' durations.
	RestartMS           loadDist `json:"restart_ms"`
	LongestRefusedMS    float64  `json:"longest_refused_window_ms"`
	RestartsFailed      int      `json:"restarts_failed"`
	RequestsUnaccounted int      `json:"requests_unaccounted"` // outcomes that do not add up: always 0
}

// summarize builds the report. A request belongs to a restart when its
// [start, end] meets the restart's [begin-settle, end+settle]; steady are
// those that meet none.
func summarize(samples []loadSample, marks []loadMark, settle time.Duration, start, stop time.Time) loadSummary {
	slices.SortFunc(samples, func(a, b loadSample) int { return int(a.start - b.start) })
	sum := loadSummary{
		StartUnixMS: start.UnixMilli(), Seconds: stop.Sub(start).Seconds(), Requests: len(samples),
		SettleMS: toMS(settle), ConnErrors: map[string]int{"refused": 0, "reset": 0, "closed": 0},
		Errors: map[string]int{}, Phases: map[string]loadPhase{},
	}
	errCount := map[string]int{}
	var steady, during []loadSample
	windows := restartWindows(marks)
	settleNS := settle.Nanoseconds()
	for _, s := range samples {
		if s.stream {
			sum.Streams++
			if s.out == outOK {
				sum.WholeStreams++
			}
		}
		if s.out != outOK {
			errCount[s.kind()+": "+s.detail]++
		}
		if s.out == outConnError {
			sum.ConnErrors[strings.TrimPrefix(s.detail, "connection ")]++
		}
		in := false
		for _, w := range windows {
			if s.end >= w.BeginMS*1e6-settleNS && s.start <= w.EndMS*1e6+settleNS {
				in = true
				break
			}
		}
		if in {
			during = append(during, s)
		} else {
			steady = append(steady, s)
		}
	}
	var restartDurations []time.Duration
	for i := range windows {
		w := &windows[i]
		lo, hi := w.BeginMS*1e6-settleNS, w.EndMS*1e6+settleNS
		var in []loadSample
		for _, s := range samples {
			if s.start >= lo && s.start <= hi {
				in = append(in, s)
			}
		}
		w.Outcomes = outcomeCounts(in)
		w.RefusedMS = longestRefused(in)
		sum.LongestRefusedMS = max(sum.LongestRefusedMS, w.RefusedMS)
		if w.RC != 0 {
			sum.RestartsFailed++
		}
		if w.EndMS < math.MaxInt64/2 {
			restartDurations = append(restartDurations, time.Duration(w.EndMS-w.BeginMS)*time.Millisecond)
		}
	}
	sum.Restarts = windows
	sum.RestartMS = distOf(restartDurations)
	sum.Phases["all"] = phaseOf(samples)
	sum.Phases["steady"] = phaseOf(steady)
	sum.Phases["restart"] = phaseOf(during)
	total := 0
	for _, n := range sum.Phases["all"].Outcomes {
		total += n
	}
	sum.RequestsUnaccounted = len(samples) - total
	if secs := sum.Seconds; secs > 0 {
		sum.PerSecond = math.Round(float64(len(samples))/secs*10) / 10
		sum.OKPerSecond = math.Round(float64(sum.Phases["all"].Outcomes["ok"])/secs*10) / 10
	}
	type kv struct {
		k string
		n int
	}
	var errs []kv
	for k, n := range errCount {
		errs = append(errs, kv{k, n})
	}
	slices.SortFunc(errs, func(a, b kv) int { return b.n - a.n })
	for _, e := range errs[:min(len(errs), 20)] {
		sum.Errors[e.k] = e.n
	}
	return sum
}

// longestRefused is the longest run of consecutive samples (sorted by
// start) all turned away, from the first one's start to the last one's end.
func longestRefused(samples []loadSample) float64 {
	var best time.Duration
	first := -1
	for i, s := range samples {
		if !s.out.notServed() {
			first = -1
			continue
		}
		if first < 0 {
			first = i
		}
		best = max(best, time.Duration(s.end-samples[first].start))
	}
	return toMS(best)
}

func runLoadgen(args []string) error {
	fs := roleFlags("loadgen", "-url BASE [-c N] [-duration D] [-short F] [-marks FILE] [-samples FILE] [-out FILE]")
	base := fs.String("url", "", "base `URL` of the target (POST BASE/v1/chat/completions)")
	conc := fs.Int("c", 32, "concurrent workers (and keep-alive connections)")
	duration := fs.Duration("duration", 30*time.Second, "how long to send new requests (TERM or INT stops earlier); in-flight ones then finish")
	shortFrac := fs.Float64("short", 0.5, "fraction of requests that are short, non-streaming answers")
	chunks := fs.Int("chunks", 100, "chunks per stream, on average (sent as "+hdrFakeChunks+")")
	spread := fs.Float64("spread", 0.5, "a stream has chunks×(1±spread) chunks, uniformly, so workers do not march in step")
	delay := fs.Duration("delay", 10*time.Millisecond, "delay between chunks (sent as "+hdrFakeDelay+")")
	timeout := fs.Duration("timeout", 60*time.Second, "per-request timeout")
	backoff := fs.Duration("backoff", 20*time.Millisecond, "a worker's pause after a request that was not ok")
	settle := fs.Duration("settle", time.Second, "a request within this of a restart counts as during the restart")
	marksPath := fs.String("marks", "", "marks `FILE` (lines \"UNIX_MS begin|end|note LABEL\"), read at the end")
	samplesPath := fs.String("samples", "", "write every request to this TSV `FILE`")
	outPath := fs.String("out", "", "write the JSON summary to `FILE` (default stdout)")
	label := fs.String("label", "", "the run's name in the summary")
	if err := parseRoleFlags(fs, args, false); err != nil {
		return err
	}
	if *base == "" || *conc < 1 || *shortFrac < 0 || *shortFrac > 1 || *spread < 0 || *spread > 1 {
		fs.Usage()
		return errUsage
	}
	msg := `[{"role":"user","content":"hello"}]`
	lg := &loadgen{
		url: strings.TrimSuffix(*base, "/") + "/v1/chat/completions", shortFrac: *shortFrac,
		chunks: *chunks, spread: int(*spread * float64(*chunks)), delay: *delay, timeout: *timeout, backoff: *backoff,
		short:  []byte(`{"model":"fake","stream":false,"messages":` + msg + `}`),
		stream: []byte(`{"model":"fake","stream":true,"messages":` + msg + `}`),
		client: &http.Client{Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			MaxIdleConns:        *conc,
			MaxIdleConnsPerHost: *conc,
			IdleConnTimeout:     90 * time.Second,
			DisableCompression:  true,
		}},
	}
	stop := make(chan struct{})
	sig := untilSignal()
	go func() {
		select {
		case <-sig:
		case <-time.After(*duration):
		}
		close(stop)
	}()
	start := time.Now()
	results := make([][]loadSample, *conc)
	var wg sync.WaitGroup
	for i := range *conc {
		wg.Go(func() { results[i] = lg.worker(i, stop) })
	}
	<-stop
	stopped := time.Now()
	wg.Wait()
	var samples []loadSample
	for _, r := range results {
		samples = append(samples, r...)
	}
	marks, err := readMarks(*marksPath)
	if err != nil {
		return err
	}
	sum := summarize(samples, marks, *settle, start, stopped)
	sum.Label, sum.URL, sum.Concurrency, sum.ShortFraction = *label, *base, *conc, *shortFrac
	sum.Chunks, sum.ChunkSpread, sum.ChunkDelayMS = *chunks, *spread, toMS(*delay)
	if *samplesPath != "" {
		if err := writeSamples(*samplesPath, samples); err != nil {
			return err
		}
	}
	out, _ := json.MarshalIndent(sum, "", "  ")
	out = append(out, '\n')
	if *outPath == "" {
		_, err = os.Stdout.Write(out)
		return err
	}
	return os.WriteFile(*outPath, out, 0o644)
}

// samplesHeader names the columns of the samples file: start as unix ms,
// latencies in ms, first byte 0 when no response came.
const samplesHeader = "start_unix_ms\tlatency_ms\tfirst_byte_ms\tkind\toutcome\tdetail"

func writeSamples(path string, samples []loadSample) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, samplesHeader)
	clean := strings.NewReplacer("\t", " ", "\n", " ", "\r", " ")
	for _, s := range samples {
		fmt.Fprintf(w, "%.3f\t%.3f\t%.3f\t%s\t%s\t%s\n", float64(s.start)/1e6, toMS(s.latency()), toMS(time.Duration(s.ttfb)),
			s.kind(), s.out, clean.Replace(s.detail))
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// readSamples reads a samples file back (for the plot).
func readSamples(path string) ([]loadSample, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	var out []loadSample
	line := 0
	for sc.Scan() {
		line++
		if line == 1 {
			if sc.Text() != samplesHeader {
				return nil, fmt.Errorf("%s: not a samples file (header %q)", path, sc.Text())
			}
			continue
		}
		f := strings.SplitN(sc.Text(), "\t", 6)
		if len(f) < 5 {
			return nil, fmt.Errorf("%s:%d: %d columns, want 6", path, line, len(f))
		}
		startMS, err1 := strconv.ParseFloat(f[0], 64)
		latMS, err2 := strconv.ParseFloat(f[1], 64)
		fbMS, err3 := strconv.ParseFloat(f[2], 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", path, line, err)
		}
		s := loadSample{start: int64(startMS * 1e6), stream: f[3] == "stream", ttfb: int64(fbMS * 1e6)}
		s.end = s.start + int64(latMS*1e6)
		o := slices.Index(loadOutcomeNames[:], f[4])
		if o < 0 {
			return nil, fmt.Errorf("%s:%d: unknown outcome %q", path, line, f[4])
		}
		s.out = loadOutcome(o)
		if len(f) == 6 {
			s.detail = f[5]
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

func TestVerifyStream(t *testing.T) {
	chunk := func(i int) string {
		return string(fakeChunkHead) + strconv.Itoa(i) + string(fakeChunkTail)
	}
	whole := chunk(0) + chunk(1) + chunk(2) + string(fakeDone)
	for _, tc := range []struct {
		name, body string
		want       string // "" for whole
	}{
		{"whole", whole, ""},
		{"crlf lines", strings.ReplaceAll(whole, "\n", "\r\n"), ""},
		{"a chunk missing", chunk(0) + chunk(2) + string(fakeDone), "chunk 2 arrived where 1 was due"},
		{"out of order", chunk(1) + chunk(0) + chunk(2) + string(fakeDone), "chunk 1 arrived where 0 was due"},
		{"cut before [DONE]", chunk(0) + chunk(1) + chunk(2), "ended after 3 of 3 chunks without [DONE]"},
		{"cut mid-line", chunk(0) + chunk(1)[:40], "no sequence number"},
		{"[DONE] too early", chunk(0) + string(fakeDone), "[DONE] after 1 of 3 chunks"},
		{"final error event", chunk(0) + "event: error\ndata: {\"reason\":\"gateway_restart\"}\n\n", `error event "gateway_restart" after 1 of 3 chunks`},
		{"data after [DONE]", whole + chunk(3), "data after [DONE]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyStream(bufio.NewReader(strings.NewReader(tc.body)), 3)
			got := ""
			if err != nil {
				got = err.Error()
			}
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("verifyStream = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestLoadgenAgainstFakeUpstream runs one short request and one stream of
// each shape through the real client path, and shows that a stream the
// server cuts counts as broken and a 503 as refused.
func TestLoadgenAgainstFakeUpstream(t *testing.T) {
	up := newFakeLoadUpstream(100, time.Second)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Header.Get("X-Test") {
		case "cut":
			// A stream that stops at chunk 2 of 5 with no error: the
			// client sees a clean end, and must still call it broken.
			w.Header().Set("Content-Type", "text/event-stream")
			for i := range 2 {
				fmt.Fprintf(w, "%s%d%s", fakeChunkHead, i, fakeChunkTail)
			}
		case "refuse":
			http.Error(w, "draining", http.StatusServiceUnavailable)
		default:
			up.ServeHTTP(w, r)
		}
	}))
	defer srv.Close()
	lg := &loadgen{url: srv.URL + "/v1/chat/completions", client: srv.Client(), delay: time.Millisecond,
		timeout: 10 * time.Second, short: []byte(`{"stream":false}`), stream: []byte(`{"stream":true}`)}
	br := bufio.NewReader(nil)
	for _, stream := range []bool{false, true} {
		if s := lg.one(stream, 5, br); s.out != outOK || s.ttfb <= 0 || s.end < s.start {
			t.Errorf("stream=%v: %+v, want ok", stream, s)
		}
	}
	for hdr, want := range map[string]loadOutcome{"cut": outBroken, "refuse": outRefused} {
		lg.client = &http.Client{Transport: headerTransport{"X-Test", hdr}}
		if s := lg.one(true, 5, br); s.out != want {
			t.Errorf("%s: %v (%s), want %v", hdr, s.out, s.detail, want)
		}
	}
	srv.Close()
	lg.client = srv.Client()
	if s := lg.one(false, 0, br); s.out != outConnError || s.detail != "connection refused" {
		t.Errorf("closed server: %v (%s), want conn_error (connection refused)", s.out, s.detail)
	}
}

// headerTransport adds one header to every request.
type headerTransport struct{ k, v string }

func (h headerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	r = r.Clone(r.Context())
	r.Header.Set(h.k, h.v)
	return http.DefaultTransport.RoundTrip(r)
}

func TestSummarizeRestarts(t *testing.T) {
	base := time.UnixMilli(1_700_000_000_000)
	at := func(msOff int64) int64 { return base.Add(time.Duration(msOff) * time.Millisecond).UnixNano() }
	req := func(from, to int64, out loadOutcome) loadSample {
		return loadSample{start: at(from), end: at(to), ttfb: int64(time.Millisecond), out: out}
	}
	samples := []loadSample{
		req(0, 5, outOK),       // steady
		req(9000, 9500, outOK), // meets the restart (settle 1s before 10s)
		req(10100, 10101, outRefused),
		req(10200, 10201, outConnError),
		req(10300, 10305, outRefused), // refused run: 10100 .. 10305
		req(10400, 10410, outOK),
		req(10500, 10501, outRefused), // a run of one
		req(20000, 20005, outOK),      // steady
	}
	bm := base.UnixMilli()
	marks := []loadMark{
		{bm + 10000, "begin", "restart-1"}, {bm + 10600, "end", "restart-1 rc=0"},
		{bm + 15000, "note", "upgrade"},
		{bm + 15100, "begin", "restart-2"}, {bm + 15200, "end", "restart-2 rc=1"},
	}
	s := summarize(samples, marks, time.Second, base, base.Add(21*time.Second))
	if got, want := s.Phases["steady"].Requests, 2; got != want {
		t.Errorf("steady requests = %d, want %d", got, want)
	}
	if got, want := s.Phases["restart"].Requests, 6; got != want {
		t.Errorf("requests during restarts = %d, want %d", got, want)
	}
	if got, want := s.LongestRefusedMS, 205.0; got != want {
		t.Errorf("longest refused window = %v ms, want %v", got, want)
	}
	if got, want := s.RestartsFailed, 1; got != want {
		t.Errorf("restarts failed = %d, want %d", got, want)
	}
	if got := s.Restarts[0].Outcomes; got["refused"] != 3 || got["conn_error"] != 1 || got["ok"] != 2 {
		t.Errorf("restart 1 outcomes = %v", got)
	}
	if s.RequestsUnaccounted != 0 || s.ConnErrors["refused"] != 0 || s.ConnErrors["closed"] != 0 {
		t.Errorf("unaccounted %d, conn errors %v", s.RequestsUnaccounted, s.ConnErrors)
	}
}

// TestParseWrk reads a wrk run as load.sh saves it, with the proxy's CPU
// line it appends.
func TestParseWrk(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wrk.txt")
	os.WriteFile(path, []byte(`Running 5s test @ http://127.0.0.1:1/v1/chat/completions
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.90ms    2.01ms  30.12ms   80.00%
    Req/Sec     8.20k   500.00     9.00k    75.00%
  Latency Distribution
     50%    3.62ms
     75%    4.50ms
     90%    6.00ms
     99%   12.59ms
  40460 requests in 5.00s, 146.80MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:   8092.00
Transfer/sec:     29.36MB
Proxy CPU seconds: 3.642
`), 0o644)
	w, err := parseWrk(path)
	if err != nil {
		t.Fatal(err)
	}
	if w.rps != 8092 || w.p50 != 3.62 || w.p99 != 12.59 || w.requests != 40460 || w.errors != 3 || w.cpu != 3.642 {
		t.Errorf("parsed %+v", w)
	}
	if got := w.cpuPerRequest(); got < 90 || got > 90.1 {
		t.Errorf("CPU per request %.2f µs, want 90.01", got)
	}
}
