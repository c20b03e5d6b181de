//go:build linux

package main

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestTelegramStoreFailureIsReported: with the state dir full, the updates
// a poll fetches cannot be stored. Nothing is lost (they are not
// acknowledged, and come again), but the bot is deaf: status, the log,
// /metrics and an alert say so, the poller backs off instead of fetching
// them every second, and once the space is back the message is answered,
// once, and every sign of trouble clears.
func TestTelegramStoreFailureIsReported(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	hook := newFakeWebhook(t)
	// backoff_max 4s: the gaps still grow, and the test waits seconds,
	// not a minute, for its polls.
	e := telegramEnv(t, bot, "", fmt.Sprintf("backoff_max = \"4s\"\n[alerts]\nwebhook_url = %q\n", hook.srv.URL))
	fill, free := smallStateDir(t, e)
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	fill()

	// A message longer than a page: its record cannot fit in what is left
	// of a page the store already has.
	long := "hello while the disk is full " + strings.Repeat("x", 4000)
	_, m := bot.userMessage(tgAllowed, tgAllowed, long)
	g.waitLog("telegram store failing", 20*time.Second)
	start := bot.calls("getUpdates")
	if !bot.waitFor(30*time.Second, func() bool { return bot.calls("getUpdates") >= start+3 }) {
		t.Fatal("the poller stopped while the store failed")
	}
	if gaps := lastGaps(bot.callArrivals("getUpdates"), 3); !(gaps[2] > gaps[0]) {
		t.Errorf("no backoff while the store fails: gaps between polls %v", gaps)
	}
	out, _, _ := e.hermes(20*time.Second, "status")
	if !strings.Contains(out, "telegram: store_failing") || !strings.Contains(out, "DEGRADED: messages cannot be stored") {
		t.Errorf("status while the store fails:\n%s", out)
	}
	_, metrics := httpGet(t, g.url+"/metrics")
	if metricValue(metrics, "hermes_telegram_store_errors_total") < 1 || metricValue(metrics, `hermes_telegram_state{state="store_failing"}`) != 1 {
		t.Errorf("metrics while the store fails:\n%s", grepLines(metrics, "hermes_telegram_"))
	}
	hook.waitAlert(t, "telegram_store", "firing", 20*time.Second)
	if n := strings.Count(g.stderr.String(), "telegram store failing"); n != 1 {
		t.Errorf("the store failure was logged %d times, want once per episode", n)
	}

	free()
	answered(t, bot, tgAllowed, m, long, 30*time.Second)
	g.waitLog("telegram store recovered", 20*time.Second)
	hook.waitAlert(t, "telegram_store", "resolved", 20*time.Second)
	if got := bot.repliesTo(tgAllowed, m); len(got) != 1 {
		t.Errorf("%d replies to the message, want exactly one: %+v", len(got), got)
	}
	out, _, _ = e.hermes(20*time.Second, "status")
	if !strings.Contains(out, "telegram: polling") || strings.Contains(out, "DEGRADED") {
		t.Errorf("status after the store came back:\n%s", out)
	}
}

// TestTelegramDegradedClearsOnFirstGoodPoll: after polls fail, the next
// poll is a short one, so the first good poll clears DEGRADED at once
// instead of a long poll (telegram.poll_timeout) later.
func TestTelegramDegradedClearsOnFirstGoodPoll(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	e := telegramEnv(t, bot, "", "")
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	n := len(bot.requestLog())
	bot.failNext("getUpdates", 2, 502, 0)
	g.waitLog("telegram poll failing", 20*time.Second)
	g.waitLog("telegram poll recovered", 20*time.Second)
	out, _, _ := e.hermes(20*time.Second, "status")
	if strings.Contains(out, "DEGRADED") {
		t.Errorf("status right after the first good poll:\n%s", out)
	}
	// The poll that recovered was a short one.
	var after []string
	for _, l := range bot.requestLog()[n:] {
		if strings.Contains(strings.ToLower(l), "getupdates") {
			after = append(after, l)
		}
	}
	if len(after) < 3 || !strings.Contains(after[2], `"timeout":0`) {
		t.Errorf("getUpdates after the failures (want the third short, timeout 0):\n%s", strings.Join(after, "\n"))
	}
}

// grepLines is the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTgStoreAppendCutShort: an append that the disk cuts short (ENOSPC
// halfway through a record) leaves no torn line for the next record to be
// glued to: once there is room again, the next record replays.
func TestTgStoreAppendCutShort(t *testing.T) {
	e := newTestEnv(t, "")
	fill, free := smallStateDir(t, e)
	s, err := openTgStore(e.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.f.Close()
	if err := s.append(tgRecord{T: "acc", U: 1, Chat: 7, Text: "before"}); err != nil {
		t.Fatal(err)
	}
	fill()
	if err := s.append(tgRecord{T: "acc", U: 2, Chat: 7, Text: strings.Repeat("x", 9000)}); err == nil {
		t.Fatal("a 9 KB record fitted in a full 64 KiB tmpfs")
	}
	free()
	if err := s.append(tgRecord{T: "acc", U: 3, Chat: 7, Text: "after"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.load()
	if err != nil {
		t.Fatal(err)
	}
	if st.ups[1] == nil || st.ups[2] != nil || st.ups[3] == nil {
		t.Errorf("replayed updates %v, want 1 and 3 (2 was never stored)", keysOf(st.ups))
	}
}

func keysOf[V any](m map[int64]V) []int64 {
	var out []int64
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestTelegramAnswerIsCapped: an upstream that answers 10 MB is cut at
// telegram.max_answer: a few messages, not thousands, ending with a notice
// that says so; hermes stops reading the upstream; the chat's history on
// disk stays small.
func TestTelegramAnswerIsCapped(t *testing.T) {
	bot := newFakeBotAPI(t)
	stopped := make(chan error, 1)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		chunk := `data: {"choices":[{"delta":{"content":"` + strings.Repeat("y", 1000) + `"}}]}` + "\n\n"
		for i := 0; i < 10000; i++ { // 10 MB
			if _, err := io.WriteString(w, chunk); err != nil {
				stopped <- err
				return
			}
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
		stopped <- nil
	}))
	t.Cleanup(up.Close)
	e := telegramEnv(t, bot, fmt.Sprintf("upstream = %q\n", up.URL), "max_answer = 5000\n")
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	_, m := bot.userMessage(tgAllowed, tgAllowed, "tell me everything")
	g.waitLog("telegram answered", 30*time.Second)
	replies := bot.repliesTo(tgAllowed, m)
	all := bot.sent(tgAllowed)
	if len(all) > 3 || len(replies) == 0 {
		t.Fatalf("%d messages sent to the chat (%d replying), want 2 (5000 characters and the notice)", len(all), len(replies))
	}
	last := all[len(all)-1].Text
	t.Logf("%d messages to the chat, the last %d bytes", len(all), len(last))
	if !strings.HasSuffix(last, "[answer cut at 5000 characters]") {
		t.Errorf("the last message ends %q, want the cut notice", last[max(len(last)-80, 0):])
	}
	select {
	case err := <-stopped:
		if err == nil {
			t.Error("hermes read the whole 10 MB answer")
		}
	case <-time.After(30 * time.Second):
		t.Error("the upstream was still being read 30s after the answer was cut")
	}
	if fi, err := os.Stat(tgStorePath(e.stateDir)); err != nil || fi.Size() > 64<<10 {
		t.Errorf("the chat's history on disk: %v, %v (want under 64 KiB)", fi.Size(), err)
	}
}

// TestTelegramHungUpstreamTimesOut: an upstream that accepts and never
// answers ends a Telegram turn after gateway.upstream_header_timeout with
// an error notice in the chat, counts as a timeout, fires the
// upstream-unreachable alert, and the chat's next message is answered.
func TestTelegramHungUpstreamTimesOut(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	hook := newFakeWebhook(t)
	release := make(chan struct{})
	var hung atomic.Bool
	hung.Store(true)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hung.Load() {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, `data: {"choices":[{"delta":{"content":"back"}}]}`+"\n\ndata: [DONE]\n\n")
	}))
	t.Cleanup(func() { close(release); up.Close() })
	e := telegramEnv(t, bot, fmt.Sprintf("upstream = %q\nupstream_header_timeout = \"1s\"\n", up.URL),
		fmt.Sprintf("[alerts]\nwebhook_url = %q\nupstream_down_for = \"1s\"\n", hook.srv.URL))
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	_, m1 := bot.userMessage(tgAllowed, tgAllowed, "are you there")
	if !bot.waitFor(30*time.Second, func() bool {
		r := bot.repliesTo(tgAllowed, m1)
		return len(r) > 0 && strings.Contains(r[len(r)-1].Text, "upstream timeout")
	}) {
		t.Fatalf("no timeout notice in the chat: %+v", bot.repliesTo(tgAllowed, m1))
	}
	hook.waitAlert(t, "upstream_unreachable", "firing", 20*time.Second)
	_, metrics := httpGet(t, g.url+"/metrics")
	if metricValue(metrics, `hermes_upstream_errors_total{kind="timeout"}`) < 1 {
		t.Errorf("the timeout was not counted:\n%s", grepLines(metrics, "hermes_upstream_errors_total"))
	}
	hung.Store(false)
	_, m2 := bot.userMessage(tgAllowed, tgAllowed, "and now")
	answered(t, bot, tgAllowed, m2, "back", 30*time.Second)
}

// TestTelegramStopIsNotAHandover: a plain stop is journaled as what it is.
func TestTelegramStopIsNotAHandover(t *testing.T) {
	bot := newFakeBotAPI(t)
	e := telegramEnv(t, bot, "", "")
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	if out, errOut, code := e.hermes(30*time.Second, "stop"); code != 0 {
		t.Fatalf("hermes stop: rc %d %s%s", code, out, errOut)
	}
	g.wait(20 * time.Second)
	evs, _, _ := e.hermes(20*time.Second, "events", "--json")
	line := grepLines(evs, `"event":"telegram polling stopped"`)
	if line == "" || strings.Contains(line, "handed over") {
		t.Errorf("the stop journaled as %q", line)
	}
}
