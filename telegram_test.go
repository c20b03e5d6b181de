package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// The Telegram bot, end to end: a real hermes serve long-polls a
// fakeBotAPI (fakebotapi_test.go) and answers through the echo upstream or
// a fakeChatUpstream, and the tests count what reached the chat.

const (
	tgAllowed  = 111 // in allowed_users
	tgOutsider = 222
	tgTokenEnv = "HERMES_TEST_BOT_TOKEN"
)

// telegramEnv is a test env whose policy has [telegram] pointed at bot,
// with gatewayKeys in [gateway] and telegramKeys in [telegram].
func telegramEnv(t *testing.T, bot *fakeBotAPI, gatewayKeys, telegramKeys string) *testEnv {
	e := newTestEnv(t, telegramPolicy(bot, gatewayKeys, telegramKeys))
	e.env = append(e.env, tgTokenEnv+"="+bot.Token())
	return e
}

func telegramPolicy(bot *fakeBotAPI, gatewayKeys, telegramKeys string) string {
	return fmt.Sprintf("%s[echo]\nword_delay = \"40ms\"\n[drain]\ntimeout = \"20s\"\ngrace = \"1s\"\n[telegram]\ntoken_env = %q\napi_base = %q\nallowed_users = [%d]\npoll_timeout = \"5s\"\nrequest_timeout = \"2s\"\n%s",
		gatewayKeys, tgTokenEnv, bot.URL(), tgAllowed, telegramKeys)
}

// fakeChatUpstream is an OpenAI-compatible upstream that streams
// "you said: <the last user message>" word by word, and records every
// request body it was sent.
type fakeChatUpstream struct {
	srv    *httptest.Server
	mu     sync.Mutex
	bodies []string
}

func newFakeChatUpstream(t *testing.T) *fakeChatUpstream {
	f := &fakeChatUpstream{}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.bodies = append(f.bodies, string(b))
		f.mu.Unlock()
		var req chatRequest
		json.Unmarshal(b, &req)
		last, _ := req.Messages[len(req.Messages)-1].text()
		w.Header().Set("Content-Type", "text/event-stream")
		for i, word := range strings.Fields("you said: " + last) {
			if i > 0 {
				word = " " + word
			}
			chunk, _ := json.Marshal(map[string]any{"choices": []any{map[string]any{"delta": map[string]any{"content": word}}}})
			fmt.Fprintf(w, "data: %s\n\n", chunk)
			w.(http.Flusher).Flush()
		}
		fmt.Fprint(w, "data: [DONE]\n\n")
	}))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeChatUpstream) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.bodies...)
}

// answered waits until the message has one reply showing want in full.
func answered(t *testing.T, bot *fakeBotAPI, chat, msg int64, want string, timeout time.Duration) botMessage {
	t.Helper()
	var got []botMessage
	ok := bot.waitFor(timeout, func() bool {
		got = bot.repliesTo(chat, msg)
		return len(got) > 0 && got[len(got)-1].Text == want
	})
	if !ok {
		t.Fatalf("message %d in chat %d: want one reply %q, got %+v", msg, chat, want, got)
	}
	return got[0]
}

// TestTelegramAnswersAllowedUser: an allowed user's message goes upstream
// with the chat's history, and its answer streams into one reply that
// grows by edits; a stranger is told their id once and nothing of theirs
// goes upstream or into the log; a stray * is no problem (plain text); the
// HTTP gateway works beside the bot.
func TestTelegramAnswersAllowedUser(t *testing.T) {
	bot := newFakeBotAPI(t)
	up := newFakeChatUpstream(t)
	e := telegramEnv(t, bot, fmt.Sprintf("upstream = %q\n", up.srv.URL), "system_prompt = \"be brief\"\nhistory_turns = 2\n")
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)

	_, m1 := bot.userMessage(tgAllowed, tgAllowed, "hello there")
	answered(t, bot, tgAllowed, m1, "you said: hello there", 10*time.Second)
	_, m2 := bot.userMessage(tgAllowed, tgAllowed, "2*3 is _six_")
	answered(t, bot, tgAllowed, m2, "you said: 2*3 is _six_", 10*time.Second)
	reqs := up.requests()
	if len(reqs) != 2 {
		t.Fatalf("upstream got %d requests, want 2: %q", len(reqs), reqs)
	}
	var second chatRequest
	json.Unmarshal([]byte(reqs[1]), &second)
	var roles []string
	for _, m := range second.Messages {
		txt, _ := m.text()
		roles = append(roles, m.Role+":"+txt)
	}
	want := []string{"system:be brief", "user:hello there", "assistant:you said: hello there", "user:2*3 is _six_"}
	if strings.Join(roles, "|") != strings.Join(want, "|") || second.Model != "gpt-4o-mini" || !second.Stream {
		t.Errorf("second request upstream: model %q stream %v messages %q, want %q", second.Model, second.Stream, roles, want)
	}

	// A stranger, twice: one reply with their id, nothing upstream, their
	// words in no log.
	_, s1 := bot.userMessage(tgOutsider, tgOutsider, "secret plans of the stranger")
	bot.userMessage(tgOutsider, tgOutsider, "more secret plans")
	if !bot.waitFor(10*time.Second, func() bool { return len(bot.sent(tgOutsider)) > 0 }) {
		t.Fatal("the stranger got no reply")
	}
	_, m3 := bot.userMessage(tgAllowed, tgAllowed, "after the stranger")
	answered(t, bot, tgAllowed, m3, "you said: after the stranger", 10*time.Second)
	if got := bot.sent(tgOutsider); len(got) != 1 || !strings.Contains(got[0].Text, strconv.Itoa(tgOutsider)) {
		t.Errorf("the stranger got %+v, want one reply naming their id", got)
	}
	_ = s1
	for _, r := range up.requests() {
		if strings.Contains(r, "secret plans") {
			t.Errorf("the stranger's message went upstream: %s", r)
		}
	}
	if strings.Contains(g.stderr.String()+readFile(t, journalPath(e.stateDir))+readFile(t, tgStorePath(e.stateDir)), "secret plans") {
		t.Errorf("the stranger's words are in the log, journal or store")
	}

	// An answer past Telegram's 4096 characters: the first part replies
	// to the message, the rest follow it, and together they are the answer.
	long := strings.Repeat("0123456789 ", 500)[:5000]
	_, m4 := bot.userMessage(tgAllowed, tgAllowed, long)
	want4 := "you said: " + strings.Join(strings.Fields(long), " ")
	if !bot.waitFor(20*time.Second, func() bool {
		all := bot.sent(tgAllowed)
		return len(all) >= 2 && all[len(all)-2].ReplyTo == m4 && all[len(all)-2].Text+all[len(all)-1].Text == want4
	}) {
		t.Errorf("a 5010-character answer was not split into two messages that join to it: %d messages", len(bot.sent(tgAllowed)))
	}
	if r := bot.repliesTo(tgAllowed, m4); len(r) != 1 || len([]rune(r[0].Text)) > 4096 {
		t.Errorf("replies to the long message: %d", len(r))
	}

	// The HTTP gateway beside it.
	s := startStream(t, "http://"+e.addr, 3)
	s.waitDone(t, 10*time.Second)

	st := statusJSONOf(t, e)
	if st.Telegram == nil || st.Telegram.State != "polling" || st.Telegram.Bot == "" {
		t.Errorf("status telegram: %+v", st.Telegram)
	}
	if bot.chatActions(tgAllowed) < 1 {
		t.Errorf("no typing action before the answers")
	}

	// The history survives a restart, bounded to history_turns (2): the
	// next message goes upstream with the last two turns only.
	g.signal(syscall.SIGTERM)
	if code := g.wait(20 * time.Second); code != exitOK {
		t.Fatalf("stop: exit %d", code)
	}
	g = e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	_, m5 := bot.userMessage(tgAllowed, tgAllowed, "still there?")
	answered(t, bot, tgAllowed, m5, "you said: still there?", 10*time.Second)
	reqs = up.requests()
	var last chatRequest
	json.Unmarshal([]byte(reqs[len(reqs)-1]), &last)
	var users []string
	for _, m := range last.Messages {
		if m.Role == "user" {
			txt, _ := m.text()
			users = append(users, txt)
		}
	}
	if len(users) != 3 || users[0] != "after the stranger" || users[2] != "still there?" {
		t.Errorf("after a restart, upstream got the user messages %q, want the last 2 turns and the new one", users)
	}

	// Counted in UTF-16 units, the stricter reading of Telegram's limit
	// (the fake's too): 1,500 emoji are 3,010 characters of answer, but
	// 4,510 units, so two messages.
	emoji := strings.TrimSpace(strings.Repeat("😀 ", 1500))
	_, mEmoji := bot.userMessage(tgAllowed, tgAllowed, emoji)
	want5 := "you said: " + emoji
	if !bot.waitFor(20*time.Second, func() bool {
		all := bot.sent(tgAllowed)
		return len(all) >= 2 && all[len(all)-2].ReplyTo == mEmoji && all[len(all)-2].Text+all[len(all)-1].Text == want5
	}) {
		t.Errorf("an answer of 4,510 UTF-16 units was not split into two messages that join to it: %d messages", len(bot.sent(tgAllowed)))
	}
}

// TestTelegramStreamsByEdits: with the echo upstream's word delay, an
// answer that takes seconds grows by edits, at most one a second, and ends
// with the full text; a reply past 4096 characters is split.
func TestTelegramStreamsByEdits(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	e := telegramEnv(t, bot, "", "")
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	words := strings.Fields(strings.Repeat("word ", 60))
	_, m := bot.userMessage(tgAllowed, tgAllowed, strings.Join(words, " "))
	r := answered(t, bot, tgAllowed, m, strings.Join(words, " "), 20*time.Second)
	r = bot.repliesTo(tgAllowed, m)[0]
	if len(r.Edits) < 1 {
		t.Errorf("the reply was not streamed by edits: %+v", r)
	}
	if len(bot.repliesTo(tgAllowed, m)) != 1 {
		t.Errorf("%d replies, want 1", len(bot.repliesTo(tgAllowed, m)))
	}
	if len(r.Edits) > 2*3+2 { // 60 words at 40ms: 2.4s, so about 3 edits
		t.Errorf("%d edits for a 2.4s answer: edit_every (1s) not kept", len(r.Edits))
	}
}

func TestSplitMessage(t *testing.T) {
	long := strings.Repeat("abcdefghi ", 1000) // 10000 characters
	for _, tc := range []struct {
		in    string
		n     int
		parts int
	}{
		{"short", 4096, 1},
		{strings.Repeat("x", 4096), 4096, 1},
		{strings.Repeat("x", 4097), 4096, 2},
		{long, 4096, 3},
		{strings.Repeat("é", 5000), 4096, 2}, // characters, not bytes
		{strings.Repeat("😀", 2048), 4096, 1}, // UTF-16 units: two per emoji
		{strings.Repeat("😀", 2049), 4096, 2},
		{"x" + strings.Repeat("😀", 2048), 4096, 2}, // never half an emoji
		{strings.Repeat("😀 ", 1500), 4096, 2},      // 3000 characters, 4500 units
		{strings.Repeat("😀", 3), 1, 3},             // a part below one character
	} {
		parts := splitMessage(tc.in, tc.n)
		if len(parts) != tc.parts || strings.Join(parts, "") != tc.in {
			t.Errorf("splitMessage(%d chars, %d) = %d parts, want %d, and the parts must join back", len([]rune(tc.in)), tc.n, len(parts), tc.parts)
		}
		for _, p := range parts {
			if n := len(utf16.Encode([]rune(p))); (n > tc.n && tc.n > 1) || n == 0 || !utf8.ValidString(p) {
				t.Errorf("a part of %d UTF-16 units (valid UTF-8: %v)", n, utf8.ValidString(p))
			}
		}
	}
	if parts := splitMessage(long, 4096); !strings.HasSuffix(parts[0], " ") {
		t.Errorf("the cut is not at a space: %q", parts[0][len(parts[0])-20:])
	}
}

func readFile(t *testing.T, path string) string {
	b, _ := os.ReadFile(path)
	return string(b)
}

func statusJSONOf(t *testing.T, e *testEnv) statusJSON {
	t.Helper()
	out, errOut, _ := e.hermes(20*time.Second, "status", "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s\n%s", err, out, errOut)
	}
	return st
}

// tgTraffic sends messages from a few users' chats until stopped, and
// remembers each (chat, message id, text) so the test can count answers.
type tgTraffic struct {
	bot  *fakeBotAPI
	mu   sync.Mutex
	msgs []tgSentMsg
	stop chan struct{}
	done chan struct{}
}

type tgSentMsg struct {
	chat, id int64
	text     string
}

// startTraffic sends a message every gap, round robin over the chats.
func startTraffic(bot *fakeBotAPI, chats []int64, gap time.Duration) *tgTraffic {
	tr := &tgTraffic{bot: bot, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(tr.done)
		tick := time.NewTicker(gap)
		defer tick.Stop()
		for i := 0; ; i++ {
			chat := chats[i%len(chats)]
			text := fmt.Sprintf("message %d from %d", i, chat)
			_, id := bot.userMessage(chat, chat, text)
			tr.mu.Lock()
			tr.msgs = append(tr.msgs, tgSentMsg{chat, id, text})
			tr.mu.Unlock()
			select {
			case <-tr.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return tr
}

func (tr *tgTraffic) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.msgs)
}

// finish stops sending and waits until every message has its full answer,
// then checks that each was answered exactly once.
func (tr *tgTraffic) finish(t *testing.T, timeout time.Duration) {
	t.Helper()
	close(tr.stop)
	<-tr.done
	tr.mu.Lock()
	msgs := append([]tgSentMsg(nil), tr.msgs...)
	tr.mu.Unlock()
	complete := func(m tgSentMsg) bool {
		r := tr.bot.repliesTo(m.chat, m.id)
		return len(r) > 0 && r[len(r)-1].Text == m.text
	}
	tr.bot.waitFor(timeout, func() bool {
		for _, m := range msgs {
			if !complete(m) {
				return false
			}
		}
		return true
	})
	bad := 0
	for _, m := range msgs {
		r := tr.bot.repliesTo(m.chat, m.id)
		if len(r) != 1 || r[0].Text != m.text {
			bad++
			var texts []string
			for _, x := range r {
				texts = append(texts, x.Text)
			}
			t.Errorf("%q (chat %d, message %d): %d replies %q, want exactly one with the full text", m.text, m.chat, m.id, len(r), texts)
		}
	}
	t.Logf("%d messages, %d not answered exactly once", len(msgs), bad)
}

// TestTelegramExactlyOnceAcrossRestarts: messages keep arriving while the
// gateway restarts in drain mode, hands off, and is killed with SIGKILL
// and started again; every message is answered exactly once, with its
// full text. No poll ever meets a 409 from the gateway's own successor.
func TestTelegramExactlyOnceAcrossRestarts(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	e := telegramEnv(t, bot, "", "")
	e.startGateway().waitLog("telegram polling", 10*time.Second)
	chats := []int64{tgAllowed}
	tr := startTraffic(bot, chats, 150*time.Millisecond)

	// A drain restart: the old gateway stops polling at once, finishes its
	// turns, exits; hermes restart starts a new one.
	waitTraffic(t, tr, 5)
	if out, errOut, code := e.hermes(60*time.Second, "restart", "--mode", "drain"); code != exitOK {
		t.Fatalf("restart --mode drain: exit %d\n%s\n%s", code, out, errOut)
	}
	// A handoff: the successor polls only once the old one let go.
	waitTraffic(t, tr, tr.count()+5)
	if out, errOut, code := e.hermes(60*time.Second, "restart", "--mode", "handoff"); code != exitOK {
		t.Fatalf("restart --mode handoff: exit %d\n%s\n%s", code, out, errOut)
	}
	waitTraffic(t, tr, tr.count()+5)
	tr.finish(t, 60*time.Second)

	// SIGKILL mid-answer: a long message is being streamed into its reply
	// (sent, and edited at least once) when the gateway dies. The next
	// gateway finds it accepted and unanswered, and finishes that same
	// reply; messages sent while no gateway runs are answered too.
	words := strings.TrimSpace(strings.Repeat("long ", 80))
	_, long := bot.userMessage(tgAllowed, tgAllowed, words)
	if !bot.waitFor(20*time.Second, func() bool {
		r := bot.repliesTo(tgAllowed, long)
		return len(r) == 1 && len(r[0].Edits) >= 1 && r[0].Text != words
	}) {
		t.Fatalf("the long answer did not start streaming: %+v", bot.repliesTo(tgAllowed, long))
	}
	rec, err := readPidFile(pidFilePath(e.stateDir))
	if err != nil {
		t.Fatal(err)
	}
	killProven(rec)
	tr2 := startTraffic(bot, chats, 150*time.Millisecond)
	waitTraffic(t, tr2, 3)
	if out, errOut, code := e.hermes(60*time.Second, "start"); code != exitOK {
		t.Fatalf("start after SIGKILL: exit %d\n%s\n%s", code, out, errOut)
	}
	waitTraffic(t, tr2, tr2.count()+5)
	tr2.msgs = append(tr2.msgs, tgSentMsg{tgAllowed, long, words})
	tr2.finish(t, 60*time.Second)

	evs := readFile(t, journalPath(e.stateDir))
	if strings.Contains(evs, `"telegram conflict"`) {
		t.Errorf("a poll met a conflict across the restarts:\n%s", evs)
	}
	if !strings.Contains(evs, `"telegram rerun"`) {
		t.Errorf("the answer cut by SIGKILL was not re-run")
	}
	if n := strings.Count(evs, `"event":"telegram polling stopped"`); n < 2 {
		t.Errorf("polling stopped %d times, want at the drain and at the handoff", n)
	}
}

// waitTraffic waits until n messages have been sent.
func waitTraffic(t *testing.T, tr *tgTraffic, n int) {
	t.Helper()
	if !tr.bot.waitFor(20*time.Second, func() bool { return tr.count() >= n }) {
		t.Fatalf("only %d messages sent, want %d", tr.count(), n)
	}
}

// TestTelegramConflictBacksOff: another poller (on another host: no
// flock reaches it) makes every poll a 409. The gateway backs off (each
// wait longer than the last), logs the episode once, shows it in status
// as degraded, and resumes by itself when the conflict ends.
func TestTelegramConflictBacksOff(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	hook := newFakeWebhook(t)
	const operator = 555
	// backoff_max 4s: the gaps still grow (0.5-1s, 1-2s, 2-4s), and
	// the test waits seconds, not a minute, for its polls.
	e := telegramEnv(t, bot, "", fmt.Sprintf("backoff_max = \"4s\"\n[alerts]\nwebhook_url = %q\ntelegram_conflict_for = \"2s\"\ntelegram_chat = %d\n", hook.srv.URL, operator))
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	bot.conflict(true)
	g.waitLog("telegram conflict", 20*time.Second)
	start := bot.calls("getUpdates")
	if !bot.waitFor(30*time.Second, func() bool { return bot.calls("getUpdates") >= start+4 }) {
		t.Fatalf("the gateway stopped polling during the conflict")
	}
	if gaps := lastGaps(bot.callArrivals("getUpdates"), 3); !(gaps[2] > gaps[0]) {
		t.Errorf("no backoff: gaps between polls %v", gaps)
	}
	out, _, _ := e.hermes(20*time.Second, "status")
	if !strings.Contains(out, "telegram: conflict") || !strings.Contains(out, "DEGRADED: polling conflict") {
		t.Errorf("status during the conflict:\n%s", out)
	}
	if n := strings.Count(g.stderr.String(), "telegram conflict "); n != 1 {
		t.Errorf("the conflict was logged %d times, want once per episode:\n%s", n, g.stderr.String())
	}
	// Past alerts.telegram_conflict_for, the operator hears of it, once.
	hook.waitAlert(t, "telegram_conflict", "firing", 30*time.Second)
	bot.conflict(false)
	g.waitLog("telegram conflict end", 90*time.Second)
	hook.waitAlert(t, "telegram_conflict", "resolved", 30*time.Second)
	if got, _, _ := hook.alerts(); len(got) != 2 {
		t.Errorf("alerts: %+v, want one firing and one resolved", got)
	}
	// The same two went to the operator's chat through the bot.
	if !bot.waitFor(20*time.Second, func() bool { return len(bot.sent(operator)) == 2 }) || !strings.HasPrefix(bot.sent(operator)[0].Text, "hermes alert: ") {
		t.Errorf("operator chat: %+v", bot.sent(operator))
	}
	_, m := bot.userMessage(tgAllowed, tgAllowed, "are you back")
	answered(t, bot, tgAllowed, m, "are you back", 20*time.Second)
	out, _, _ = e.hermes(20*time.Second, "status")
	if !strings.Contains(out, "telegram: polling") || strings.Contains(out, "DEGRADED") {
		t.Errorf("status after the conflict:\n%s", out)
	}
	evOut, _, _ := e.hermes(20*time.Second, "events")
	if !strings.Contains(evOut, "telegram conflict ") || !strings.Contains(evOut, "telegram conflict end") {
		t.Errorf("events lack the episode:\n%s", evOut)
	}
}

// TestTelegramWrongTokenExits78: Telegram answers 401: a policy error,
// exit 78 (no unit restarts it), said plainly, and the token is nowhere.
func TestTelegramWrongTokenExits78(t *testing.T) {
	bot := newFakeBotAPI(t)
	e := telegramEnv(t, bot, "", "")
	wrong := "987654:WRONG-" + strings.Repeat("z", 30)
	for i, kv := range e.env {
		if strings.HasPrefix(kv, tgTokenEnv+"=") {
			e.env[i] = tgTokenEnv + "=" + wrong
		}
	}
	g := e.spawnGateway()
	if code := g.wait(30 * time.Second); code != exitConfig {
		t.Fatalf("exit %d, want 78:\n%s", code, g.stderr.String())
	}
	log := g.stderr.String()
	if !strings.Contains(log, "Telegram refused the bot token (401 Unauthorized)") || !strings.Contains(log, "telegram.token_env") {
		t.Errorf("the log does not say what is wrong:\n%s", log)
	}
	if strings.Contains(log+readFile(t, journalPath(e.stateDir)), wrong) {
		t.Errorf("the token is in the log or journal")
	}
}

// TestTelegramWebhook: a bot with a webhook cannot poll: exit 78 saying
// so, unless delete_webhook asks hermes to delete it.
func TestTelegramWebhook(t *testing.T) {
	bot := newFakeBotAPI(t)
	bot.setWebhook("https://hooks.example.org/secret-path")
	e := telegramEnv(t, bot, "", "")
	g := e.spawnGateway()
	if code := g.wait(30 * time.Second); code != exitConfig {
		t.Fatalf("exit %d, want 78:\n%s", code, g.stderr.String())
	}
	if log := g.stderr.String(); !strings.Contains(log, "delete_webhook = true") || strings.Contains(log, "secret-path") {
		t.Errorf("the log does not offer delete_webhook, or shows the webhook's path:\n%s", log)
	}
	e.writePolicy(telegramPolicy(bot, "", "delete_webhook = true\n"))
	g = e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	_, m := bot.userMessage(tgAllowed, tgAllowed, "hooked")
	answered(t, bot, tgAllowed, m, "hooked", 20*time.Second)
}

// TestTelegramRetryAfter: a 429 on sendMessage is waited out for its
// retry_after, and the reply still arrives once.
func TestTelegramRetryAfter(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	e := telegramEnv(t, bot, "", "")
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	bot.failNext("sendMessage", 1, 429, 2)
	_, m := bot.userMessage(tgAllowed, tgAllowed, "patience")
	answered(t, bot, tgAllowed, m, "patience", 20*time.Second)
	times := bot.callTimes("sendMessage")
	if len(times) < 2 || times[1].Sub(times[0]) < 2*time.Second {
		t.Errorf("sendMessage retried after %v, want at least the 2s of retry_after (calls %v)", times[1].Sub(times[0]), times)
	}
	if n := len(bot.repliesTo(tgAllowed, m)); n != 1 {
		t.Errorf("%d replies, want 1", n)
	}
}

// TestTelegramTokenNeverShown: with the Bot API unreachable (connections
// closed without an answer, so every error is a *url.Error holding the
// URL, token and all), the token is in no log line, journal line, status
// output or events output.
func TestTelegramTokenNeverShown(t *testing.T) {
	bot := newFakeBotAPI(t)
	bot.down(true)
	e := telegramEnv(t, bot, "", "")
	g := e.startGateway()
	g.waitLog("telegram poll failing", 20*time.Second)
	out, errOut, _ := e.hermes(20*time.Second, "status")
	jout, _, _ := e.hermes(20*time.Second, "status", "--json")
	evOut, _, _ := e.hermes(20*time.Second, "events")
	_, body := httpGet(t, "http://"+e.addr+"/status")
	all := g.stderr.String() + readFile(t, journalPath(e.stateDir)) + out + errOut + jout + evOut + body
	if !strings.Contains(out, "DEGRADED: polls fail") {
		t.Errorf("status does not show the failing polls:\n%s", out)
	}
	tok := bot.Token()
	secret := tok[strings.Index(tok, ":")+1:]
	if strings.Contains(all, secret) {
		t.Errorf("the token appears:\n%s", all)
	}
	bot.down(false)
	g.waitLog("telegram poll recovered", 90*time.Second)
	if os.Getenv("HERMES_TEST_SHOW") != "" {
		t.Log(g.stderr.String(), out)
	}
}

// TestTelegramCutTurnIsRerun: an answer longer than the drain is cut by
// the drain's timeout; the next gateway re-runs it into the same reply,
// which ends with the full text: one reply, nothing lost.
func TestTelegramCutTurnIsRerun(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	e := newTestEnv(t, strings.Replace(telegramPolicy(bot, "", ""), "timeout = \"20s\"", "timeout = \"1s\"", 1))
	e.env = append(e.env, tgTokenEnv+"="+bot.Token())
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	words := strings.TrimSpace(strings.Repeat("slow ", 100)) // 4s at 40ms a word
	_, m := bot.userMessage(tgAllowed, tgAllowed, words)
	if !bot.waitFor(20*time.Second, func() bool { return len(bot.repliesTo(tgAllowed, m)) == 1 }) {
		t.Fatal("the answer did not start")
	}
	g.signal(syscall.SIGTERM)
	if code := g.wait(20 * time.Second); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	if !strings.Contains(g.stderr.String(), "telegram turn cut") {
		t.Fatalf("the drain did not cut the turn:\n%s", g.stderr.String())
	}
	if r := bot.repliesTo(tgAllowed, m); len(r) != 1 || r[0].Text == words {
		t.Fatalf("before the restart: %+v", r)
	}
	g = e.startGateway()
	g.waitLog("telegram rerun", 10*time.Second)
	answered(t, bot, tgAllowed, m, words, 20*time.Second)
	if r := bot.repliesTo(tgAllowed, m); len(r) != 1 {
		t.Errorf("%d replies after the re-run, want the one reply edited", len(r))
	}
}

// TestTelegramTokenLock: with [telegram] set, the token lock guards the
// bot token: a second gateway with the same token (another instance, its
// own state dir) exits 78 naming the first.
func TestTelegramTokenLock(t *testing.T) {
	bot := newFakeBotAPI(t)
	e1 := telegramEnv(t, bot, "", "")
	g1 := e1.startGateway()
	g1.waitLog("telegram polling", 10*time.Second)
	e2 := telegramEnv(t, bot, "", "")
	g2 := e2.spawnGateway()
	if code := g2.wait(20 * time.Second); code != exitConfig {
		t.Fatalf("second gateway: exit %d, want 78:\n%s", code, g2.stderr.String())
	}
	if log := g2.stderr.String(); !strings.Contains(log, "lock conflict") || !strings.Contains(log, strconv.Itoa(g1.pid())) {
		t.Errorf("the second gateway does not name the holder:\n%s", log)
	}
}

// lastGaps is the n intervals between the last n+1 of times.
func lastGaps(times []time.Time, n int) []time.Duration {
	var gaps []time.Duration
	for i := len(times) - n; i < len(times); i++ {
		gaps = append(gaps, times[i].Sub(times[i-1]))
	}
	return gaps
}
