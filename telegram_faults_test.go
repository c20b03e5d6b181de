//go:build linux

package main

import (
	"fmt"
	"strings"
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
	bot := newFakeBotAPI(t)
	hook := newFakeWebhook(t)
	e := telegramEnv(t, bot, "", fmt.Sprintf("[alerts]\nwebhook_url = %q\n", hook.srv.URL))
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
	times := bot.callArrivals("getUpdates")
	gaps := []time.Duration{}
	for i := len(times) - 3; i < len(times); i++ {
		gaps = append(gaps, times[i].Sub(times[i-1]))
	}
	if !(gaps[2] > gaps[0]) {
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
