package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tests of [reattach] on real processes: a client cut mid-answer comes
// back with Last-Event-ID and gets exactly the rest.

// withoutEventIDs is an answer without the id lines hermes adds to a
// stream's events ([reattach]): for the tests of what else it relays.
func withoutEventIDs(body string) string {
	return eventIDLine().ReplaceAllString(body, "")
}

var eventIDLine = lazyRegexp(`(?m)^id: [0-9a-f]{32}-[0-9]+\n`)

// sseEvent is one event as a client parses it (the last id line wins).
type sseEvent struct {
	id, data, event string
	ids             []string // every id line, in order
}

// sseConn is a stream of events being read, on a connection of its own.
type sseConn struct {
	resp *http.Response
	br   *bufio.Reader
}

// openSSE posts body to url's chat completions with the headers given
// (name, value, ...), on a connection of its own (closing it is the cut).
func openSSE(t *testing.T, url, body string, header ...string) (*sseConn, int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 60 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return nil, resp.StatusCode, string(b)
	}
	return &sseConn{resp: resp, br: bufio.NewReader(resp.Body)}, 200, ""
}

// next reads one event; io.EOF at a clean end.
func (c *sseConn) next() (sseEvent, error) {
	var ev sseEvent
	lines := 0
	for {
		line, err := c.br.ReadString('\n')
		if err != nil {
			if err == io.EOF && lines > 0 {
				err = io.ErrUnexpectedEOF
			}
			return ev, err
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if lines == 0 {
				continue
			}
			return ev, nil
		}
		lines++
		k, v, _ := strings.Cut(line, ":")
		v = strings.TrimPrefix(v, " ")
		switch k {
		case "id":
			ev.id = v
			ev.ids = append(ev.ids, v)
		case "data":
			ev.data = v
		case "event":
			ev.event = v
		}
	}
}

func (c *sseConn) close() { c.resp.Body.Close() }

// content is the text an event of a chat completion stream adds.
func (ev sseEvent) content(t *testing.T) string {
	if ev.data == "[DONE]" || ev.data == "" {
		return ""
	}
	var chunk struct {
		Choices []struct {
			Delta struct {
				Content string `json:"content"`
			} `json:"delta"`
		} `json:"choices"`
	}
	if err := json.Unmarshal([]byte(ev.data), &chunk); err != nil {
		t.Fatalf("event data is not a chunk: %q: %v", ev.data, err)
	}
	if len(chunk.Choices) == 0 {
		return ""
	}
	return chunk.Choices[0].Delta.Content
}

// readN reads n events and returns them.
func (c *sseConn) readN(t *testing.T, n int) []sseEvent {
	t.Helper()
	var evs []sseEvent
	for len(evs) < n {
		ev, err := c.next()
		if err != nil {
			t.Fatalf("after %d events: %v", len(evs), err)
		}
		evs = append(evs, ev)
	}
	return evs
}

// readAll reads to the stream's clean end.
func (c *sseConn) readAll(t *testing.T) []sseEvent {
	t.Helper()
	var evs []sseEvent
	for {
		ev, err := c.next()
		if err == io.EOF {
			c.close()
			return evs
		}
		if err != nil {
			t.Fatalf("after %d events the stream did not end cleanly: %v", len(evs), err)
		}
		evs = append(evs, ev)
	}
}

func wordsBody(n int) (string, []string) {
	var words []string
	for i := 0; i < n; i++ {
		words = append(words, fmt.Sprintf("w%d", i))
	}
	return fmt.Sprintf(`{"model":"m","stream":true,"messages":[{"role":"user","content":%q}]}`, strings.Join(words, " ")), words
}

// checkWhole checks that the events, put together, are the whole answer:
// ids 1, 2, ... of one stream, every word once and in order, [DONE] last.
func checkWhole(t *testing.T, evs []sseEvent, words []string) {
	t.Helper()
	var text strings.Builder
	stream := ""
	for i, ev := range evs {
		sid, n, ok := strings.Cut(ev.id, "-")
		if !ok || len(sid) != streamIDLen {
			t.Fatalf("event %d has id %q, not <stream id>-<n>", i+1, ev.id)
		}
		if stream == "" {
			stream = sid
		}
		if sid != stream || n != strconv.Itoa(i+1) {
			t.Fatalf("event %d has id %q: want %s-%d (an event lost or twice)", i+1, ev.id, stream, i+1)
		}
		text.WriteString(ev.content(t))
	}
	if got := strings.Fields(text.String()); strings.Join(got, " ") != strings.Join(words, " ") {
		t.Fatalf("the words put together are not the answer:\ngot  %q\nwant %q", got, words)
	}
	if last := evs[len(evs)-1]; last.data != "[DONE]" {
		t.Fatalf("the last event is %q, not [DONE]", last.data)
	}
}

// TestReattachAfterCut cuts a 40-word echo stream at several points (the
// first event, inside, the last word, the end's chunk) and comes back with
// Last-Event-ID: the two parts are the whole answer, nothing twice.
func TestReattachAfterCut(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"15ms\"\n")
	g := e.startGateway()
	body, words := wordsBody(40)
	// 43 events: the role, 40 words, the stop chunk, [DONE].
	for _, k := range []int{1, 2, 17, 41, 42} {
		c, _, _ := openSSE(t, g.url, body)
		first := c.readN(t, k)
		c.close()
		again, code, msg := openSSE(t, g.url, body, "Last-Event-ID", first[k-1].id)
		if code != 200 {
			t.Fatalf("cut after %d events: reattach got %d %s", k, code, msg)
		}
		if sid, _, _ := strings.Cut(first[0].id, "-"); again.resp.Header.Get("X-Hermes-Stream") != sid {
			t.Fatalf("X-Hermes-Stream = %q, want %q", again.resp.Header.Get("X-Hermes-Stream"), sid)
		}
		rest := again.readAll(t)
		checkWhole(t, append(first, rest...), words)
		// The stream was delivered: coming back with its last id says
		// there is nothing more (204 stops an EventSource).
		last := rest[len(rest)-1].id
		if _, code, _ := openSSE(t, g.url, body, "Last-Event-ID", last); code != http.StatusNoContent {
			t.Fatalf("after the whole stream, Last-Event-ID %s got %d, want 204", last, code)
		}
	}
	// A stream whose end went out whole lingers (reattach.linger): a
	// client whose connection died with the tail in flight (written, so
	// the gateway cannot tell) comes back for it.
	c, _, _ := openSSE(t, g.url, body)
	all := c.readAll(t)
	again, code, msg := openSSE(t, g.url, body, "Last-Event-ID", all[39].id)
	if code != 200 {
		t.Fatalf("coming back for the tail of a stream that ended: %d %s", code, msg)
	}
	checkWhole(t, append(all[:40:40], again.readAll(t)...), words)
	m := metricsText(t, g.url)
	if v := metricValue(m, `hermes_streams_total{event="reattached"}`); v != 6 {
		t.Fatalf("hermes_streams_total{event=\"reattached\"} = %v, want 6", v)
	}
	if v := metricValue(m, "hermes_streams_detached"); v != 0 {
		t.Fatalf("hermes_streams_detached = %v after every stream was delivered", v)
	}
	waitUntil(t, 10*time.Second, "hermes_sessions_active to fall to 0", func() bool {
		return metricValue(metricsText(t, g.url), "hermes_sessions_active") == 0
	})
	out, _, _ := e.hermes(10*time.Second, "events")
	if !strings.Contains(out, "stream reattached") {
		t.Fatalf("hermes events shows no stream reattached:\n%s", out)
	}
}

func metricsText(t *testing.T, url string) string {
	t.Helper()
	code, body := httpGet(t, url+"/metrics")
	if code != 200 {
		t.Fatalf("/metrics: %d", code)
	}
	return body
}

// TestReattachAcrossRestart cuts a stream, restarts the gateway (a
// handoff), and comes back: while the answer still runs, the successor
// serves the rest from the predecessor, which drains with the stream;
// once the answer has ended, the predecessor hands the stream to the
// successor before it exits, and the successor serves it alone.
func TestReattachAcrossRestart(t *testing.T) {
	t.Run("running", func(t *testing.T) { testReattachAcrossRestart(t, false) })
	t.Run("ended", func(t *testing.T) { testReattachAcrossRestart(t, true) })
}

func testReattachAcrossRestart(t *testing.T, ended bool) {
	e := newTestEnv(t, "[echo]\nword_delay = \"40ms\"\n")
	g := e.startGateway()
	body, words := wordsBody(40)
	c, _, _ := openSSE(t, g.url, body)
	first := c.readN(t, 6)
	c.close()
	out, errOut, code := e.hermes(60*time.Second, "restart")
	if code != 0 {
		t.Fatalf("hermes restart: %d\n%s%s", code, out, errOut)
	}
	if ended {
		// The predecessor exits once its upstream's answer ended, and
		// has handed the stream over by then.
		if code := g.wait(30 * time.Second); code != 0 {
			t.Fatalf("the predecessor exited %d", code)
		}
		g.waitLog("stream adopted", 10*time.Second)
	}
	again, status, msg := openSSE(t, g.url, body, "Last-Event-ID", first[5].id)
	if status != 200 {
		t.Fatalf("reattach after the restart got %d %s", status, msg)
	}
	checkWhole(t, append(first, again.readAll(t)...), words)
	if ended {
		return
	}
	// The successor served it, from the predecessor.
	g.waitLog(fmt.Sprintf("from_pid=%d", g.pid()), 10*time.Second)
	// The predecessor's drain ends once its stream is delivered.
	if code := g.wait(30 * time.Second); code != 0 {
		t.Fatalf("the predecessor exited %d", code)
	}
}

// TestReattachRefusals: an id that is malformed, unknown, another key's,
// ahead of the stream, or expired gets a clear error, never a stream.
func TestReattachRefusals(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"50ms\"\n[auth]\nkeys_env = \"HERMES_TEST_CLIENT_KEYS\"\n[reattach]\nwindow = \"2s\"\n")
	g := e.startGateway("HERMES_TEST_CLIENT_KEYS=alice key-of-alice-0123456789,bob key-of-bob-0123456789")
	alice := []string{"Authorization", "Bearer key-of-alice-0123456789"}
	bob := []string{"Authorization", "Bearer key-of-bob-0123456789"}
	body, words := wordsBody(40)
	refused := func(who []string, id string, status int, code string) {
		t.Helper()
		_, got, msg := openSSE(t, g.url, body, append(who, "Last-Event-ID", id)...)
		if got != status || !strings.Contains(msg, `"code":"`+code+`"`) {
			t.Fatalf("Last-Event-ID %q: got %d %s, want %d %s", id, got, msg, status, code)
		}
	}
	c, _, _ := openSSE(t, g.url, body, alice...)
	first := c.readN(t, 3)
	c.close()
	sid, _, _ := strings.Cut(first[2].id, "-")
	refused(alice, "not-an-id", 400, "invalid_last_event_id")
	refused(alice, strings.Repeat("ab", 16)+"-3", 410, "stream_not_found")
	refused(bob, first[2].id, 409, "stream_foreign")
	refused(alice, sid+"-999", 409, "last_event_id_ahead")
	if _, got, _ := openSSE(t, g.url, body, "Last-Event-ID", first[2].id); got != 401 {
		t.Fatalf("no key: got %d, want 401", got)
	}
	// None of that disturbed it: alice comes back to all of it.
	again, got, msg := openSSE(t, g.url, body, append(alice, "Last-Event-ID", first[2].id)...)
	if got != 200 {
		t.Fatalf("alice's reattach: %d %s", got, msg)
	}
	checkWhole(t, append(first, again.readAll(t)...), words)

	// Expired: nobody comes back within the window (2s of a 2s answer
	// that has 40 words at 50ms: its upstream is cancelled then).
	c, _, _ = openSSE(t, g.url, body, alice...)
	first = c.readN(t, 2)
	c.close()
	waitUntil(t, 20*time.Second, "the stream to expire", func() bool {
		return metricValue(metricsText(t, g.url), `hermes_streams_total{event="expired"}`) == 1
	})
	refused(alice, first[1].id, 410, "stream_expired")
	refused(bob, first[1].id, 409, "stream_foreign")
	g.waitLog("stream expired", 5*time.Second)
}

// TestReattachOverflow: a stream past reattach.max_buffer with nobody
// attached ends, and its id gets 410; one whose client stays reads on.
func TestReattachOverflow(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"2ms\"\n[reattach]\nmax_buffer = \"4KiB\"\n")
	g := e.startGateway()
	body, words := wordsBody(150) // about 28 KB of events
	c, _, _ := openSSE(t, g.url, body)
	all := c.readAll(t)
	checkWhole(t, all, words)

	c, _, _ = openSSE(t, g.url, body)
	first := c.readN(t, 2)
	c.close()
	waitUntil(t, 20*time.Second, "the detached stream to overflow", func() bool {
		return metricValue(metricsText(t, g.url), `hermes_streams_total{event="overflowed"}`) == 2
	})
	_, code, msg := openSSE(t, g.url, body, "Last-Event-ID", first[1].id)
	if code != 410 || !strings.Contains(msg, "stream_overflowed") {
		t.Fatalf("reattach to an overflowed stream: %d %s", code, msg)
	}
	waitUntil(t, 10*time.Second, "the buffers to be given back", func() bool {
		m := metricsText(t, g.url)
		return metricValue(m, "hermes_streams_buffer_bytes") == 0 && metricValue(m, "hermes_sessions_active") == 0
	})
}

// TestReattachProxied: the same through a real upstream, whose own ids
// stay in its events (hermes's comes last, the one a client keeps), and
// which is read on while the client is away.
func TestReattachProxied(t *testing.T) {
	const n = 30
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.Copy(io.Discard, req.Body)
		fmt.Fprint(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
		chunk := func(s string) { fmt.Fprintf(c, "%x\r\n%s\r\n", len(s), s) }
		for i := 0; i < n; i++ {
			chunk(fmt.Sprintf("id: up-%d\ndata: {\"choices\":[{\"delta\":{\"content\":\" w%d\"}}]}\n\n", i, i))
			time.Sleep(10 * time.Millisecond) // the fake upstream's pace
		}
		chunk("data: [DONE]\n\n")
		fmt.Fprint(c, "0\r\n\r\n")
	})
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\n", up.url()))
	g := e.startGateway()
	body, _ := wordsBody(1)
	var words []string
	for i := 0; i < n; i++ {
		words = append(words, fmt.Sprintf("w%d", i))
	}
	c, _, _ := openSSE(t, g.url, body)
	first := c.readN(t, 4)
	c.close()
	if ids := first[0].ids; len(ids) != 2 || ids[0] != "up-0" {
		t.Fatalf("the first event's id lines are %q: want the upstream's, then hermes's", ids)
	}
	again, code, msg := openSSE(t, g.url, body, "Last-Event-ID", first[3].id)
	if code != 200 {
		t.Fatalf("reattach: %d %s", code, msg)
	}
	checkWhole(t, append(first, again.readAll(t)...), words)
	if len(up.got) != 1 {
		t.Fatalf("the upstream was asked %d times: a reattach must not ask it again", len(up.got))
	}
}

// TestReattachOff: reattach.window = 0 keeps the behaviour before it: no
// ids, and a Last-Event-ID is the upstream's business.
func TestReattachOff(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"1ms\"\n[reattach]\nwindow = \"0s\"\n")
	g := e.startGateway()
	body, words := wordsBody(5)
	c, _, _ := openSSE(t, g.url, body, "Last-Event-ID", strings.Repeat("ab", 16)+"-1")
	evs := c.readAll(t)
	var text strings.Builder
	for _, ev := range evs {
		if ev.id != "" {
			t.Fatalf("an event has an id with reattach off: %q", ev.id)
		}
		text.WriteString(ev.content(t))
	}
	if got := strings.Join(strings.Fields(text.String()), " "); got != strings.Join(words, " ") {
		t.Fatalf("got %q", got)
	}
}

// TestDrainBoundsDetachedStreams: a stop waits for a detached stream no
// longer than drain.timeout, as for an attached one, though its window is
// longer.
func TestDrainBoundsDetachedStreams(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"100ms\"\n[drain]\ntimeout = \"1s\"\ngrace = \"500ms\"\n[reattach]\nwindow = \"10m\"\n")
	g := e.startGateway()
	body, _ := wordsBody(200) // 20 s of answer
	c, _, _ := openSSE(t, g.url, body)
	c.readN(t, 2)
	c.close()
	waitUntil(t, 10*time.Second, "the stream to detach", func() bool {
		return metricValue(metricsText(t, g.url), "hermes_streams_detached") == 1
	})
	g.signal(syscall.SIGTERM)
	if code := g.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	if log := g.stderr.String(); !strings.Contains(log, "drain timeout") {
		t.Fatalf("the drain did not end at its timeout:\n%s", log)
	}
}

// TestReattachTakesOver: a client that comes back while the gateway still
// counts the first one attached (its connection may be dead without
// either side knowing) takes the stream over; the first answer ends
// without a clean end, so a first client still there knows it was cut.
func TestReattachTakesOver(t *testing.T) {
	e := newTestEnv(t, "[echo]\nword_delay = \"30ms\"\n")
	g := e.startGateway()
	body, words := wordsBody(40)
	c, _, _ := openSSE(t, g.url, body)
	first := c.readN(t, 3)
	again, code, msg := openSSE(t, g.url, body, "Last-Event-ID", first[2].id)
	if code != 200 {
		t.Fatalf("reattach: %d %s", code, msg)
	}
	checkWhole(t, append(first, again.readAll(t)...), words)
	for {
		_, err := c.next()
		if err == io.EOF {
			t.Fatal("the first client's answer ended cleanly after another took its stream over")
		}
		if err != nil {
			break
		}
	}
	c.close()
}

// TestEventFraming: the events found in what an upstream sends, whatever
// its line ends, each numbered once; a held start of an event waits for
// its end; an id of the upstream's own stays, hermes's last.
func TestEventFraming(t *testing.T) {
	reg := newStreamRegistry(new(admission), context.Background(), nil)
	for _, tc := range []struct{ name, in, want string }{
		{"lf", "data: a\n\ndata: b\n\n", "id: S-1\ndata: a\n\nid: S-2\ndata: b\n\n"},
		{"crlf", "data: a\r\n\r\ndata: b\r\n\r\n", "id: S-1\ndata: a\r\n\r\nid: S-2\ndata: b\r\n\r\n"},
		{"cr", "data: a\r\rdata: b\r\r", "id: S-1\ndata: a\r\rid: S-2\ndata: b\r\r"},
		{"own id", "id: up-7\ndata: a\n\n", "id: up-7\ndata: a\nid: S-1\n\n"},
		{"comment", ": ping\n\n", "id: S-1\n: ping\n\n"},
		{"data id", "data: {\"id\":\"x\"}\n\n", "id: S-1\ndata: {\"id\":\"x\"}\n\n"},
		{"clean end inside an event", "data: a\n\ndata: b\n", "id: S-1\ndata: a\n\ndata: b\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := reg.open(defaultReattach(), [32]byte{}, "/", func(error) {}, nil)
			// One byte a read: every event arrives in pieces.
			for i := 0; i < len(tc.in); i++ {
				var err error
				if i == len(tc.in)-1 {
					err = io.EOF
				}
				st.add([]byte{tc.in[i]}, err, 1)
			}
			got := strings.ReplaceAll(string(st.buf.appendTo(nil, 0)), st.id, "S")
			if got != tc.want {
				t.Fatalf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
}
