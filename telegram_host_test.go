package main

import (
	"bytes"
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// The Telegram bot driven alone, through its seam (telegram_host.go): a
// fakeTelegramHost stands where a gateway would, and a fakeBotAPI where
// Telegram would. What the bot does to its host is all a host sees.

// fakeTelegramHost is a telegramHost with no gateway behind it: it records
// what the bot asks of it.
type fakeTelegramHost struct {
	p      *Policy
	logBuf *syncBuffer
	lg     *logger
	doneCh chan struct{}

	mu             sync.Mutex
	fatals         []error
	alerts         []string
	entered, left  int
	polls, answers int
}

func newFakeTelegramHost(t *testing.T, p *Policy) *fakeTelegramHost {
	h := &fakeTelegramHost{p: p, logBuf: &syncBuffer{}, doneCh: make(chan struct{})}
	h.lg = newLogger(h.logBuf)
	t.Cleanup(func() { close(h.doneCh) })
	return h
}

func (h *fakeTelegramHost) policy() *Policy { return h.p }
func (h *fakeTelegramHost) log() *logger    { return h.lg }
func (h *fakeTelegramHost) alert(event, state, summary string, kv ...any) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.alerts = append(h.alerts, event+" "+state)
}
func (h *fakeTelegramHost) fatal(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fatals = append(h.fatals, err)
}
func (h *fakeTelegramHost) done() <-chan struct{}   { return h.doneCh }
func (h *fakeTelegramHost) cutCtx() context.Context { return context.Background() }
func (h *fakeTelegramHost) snapshot() *snapshot     { return &snapshot{} }
func (h *fakeTelegramHost) self() pidRecord {
	return pidRecord{PID: 4242, StartTime: 1, BootID: "fake-boot"}
}
func (h *fakeTelegramHost) enterSession() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.entered++
	return true
}
func (h *fakeTelegramHost) leaveSession() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.left++
}
func (h *fakeTelegramHost) polled(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.polls++
}
func (h *fakeTelegramHost) storeFailed() {}
func (h *fakeTelegramHost) upstreamOpen(ctx context.Context, p *Policy, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.upstreams()[0].URL+"/v1/chat/completions", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}
func (h *fakeTelegramHost) upstreamFailed(upstreamKind, error, time.Time) {}
func (h *fakeTelegramHost) upstreamAnswered() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.answers++
}

// hostedBotPolicy is a policy with [telegram] pointed at bot and the echo
// upstream.
func hostedBotPolicy(t *testing.T, bot *fakeBotAPI) *Policy {
	p := defaultPolicy()
	p.Gateway.StateDir = t.TempDir()
	p.Echo.WordDelay = time.Millisecond
	p.Telegram.TokenEnv = "HERMES_TEST_UNUSED"
	p.Telegram.APIBase = bot.URL()
	p.Telegram.AllowedUsers = []int64{tgAllowed}
	p.Telegram.PollTimeout = time.Second
	p.Telegram.RequestTimeout = 2 * time.Second
	return p
}

// TestTelegramBotOnAFakeHost: on a host that is no gateway, the bot answers
// an allowed user's message as one session (entered and left once), and
// asks nothing else of its host.
func TestTelegramBotOnAFakeHost(t *testing.T) {
	bot := newFakeBotAPI(t)
	p := hostedBotPolicy(t, bot)
	h := newFakeTelegramHost(t, p)
	b, err := newTelegramBot(h, p, bot.Token(), true)
	if err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.stop)
	_, m := bot.userMessage(tgAllowed, tgAllowed, "hello from alone")
	answered(t, bot, tgAllowed, m, "hello from alone", 20*time.Second)
	waitUntil(t, 10*time.Second, "the turn's session left", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.left == 1
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.entered != 1 || len(h.fatals) != 0 || len(h.alerts) != 0 || h.polls == 0 {
		t.Errorf("the host saw %d sessions entered, fatals %v, alerts %v, %d polls; want 1, none, none, some", h.entered, h.fatals, h.alerts, h.polls)
	}
}

// TestTelegramBotRefusedTokenIsFatalToItsHost: Telegram's 401 is the one
// thing the bot cannot go on from: it tells its host, once, in words that
// name the key and not the token.
func TestTelegramBotRefusedTokenIsFatalToItsHost(t *testing.T) {
	bot := newFakeBotAPI(t)
	p := hostedBotPolicy(t, bot)
	h := newFakeTelegramHost(t, p)
	wrong := "999:WRONG-" + strings.Repeat("x", 20)
	b, err := newTelegramBot(h, p, wrong, true)
	if err != nil {
		t.Fatal(err)
	}
	b.start()
	t.Cleanup(b.stop)
	waitUntil(t, 20*time.Second, "the host told of the refused token", func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.fatals) > 0
	})
	h.mu.Lock()
	defer h.mu.Unlock()
	msg := h.fatals[0].Error()
	if len(h.fatals) != 1 || codeOf(h.fatals[0]) != exitConfig || !strings.Contains(msg, "telegram.token_env") || strings.Contains(msg, wrong) {
		t.Errorf("fatals %v (exit %d), want one policy error naming telegram.token_env and not the token", h.fatals, codeOf(h.fatals[0]))
	}
}
