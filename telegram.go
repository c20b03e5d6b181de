package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf16"
)

// The Telegram bot: the gateway long-polls getUpdates and answers each
// message from an allowed user as a session (counted by the admission gate,
// drained like an HTTP session), streaming the upstream's answer into the
// chat by editing one message. None of it runs on the loop: the poller, the
// dispatcher and each turn are goroutines of their own, and what the loop
// does to the bot (stop polling at a drain or a handoff, start again after
// a failback) is a flag and a cancel, never a wait.
//
// Exactly once (the store, telegram_store.go, says how it is kept on
// disk): an update is on disk before Telegram is told it can forget it; a
// turn is claimed before it starts; each reply message is recorded the
// moment Telegram accepts it, so a re-run edits it instead of sending a
// second; a reply is done only when its full text is in the chat.
//
// One poller at a time, even across a handoff: a poller holds the flock
// <state_dir>/telegram/poll.lock while it polls. The old gateway lets it go
// when it tells its successor to take over (its own long poll cancelled
// first, so Telegram never sees two), and the successor's poller takes it
// and carries on from the recorded offset. A 409 on a poll that was
// cancelled is the handover, not a conflict; a 409 on a live poll is
// another poller somewhere (another host: no flock reaches it), met with
// backoff, journaled as an episode and shown in status until it ends.

type telegramBot struct {
	h     telegramHost // all the bot may touch of its gateway (telegram_host.go)
	api   *botClient
	store *tgStore
	lock  string // poll.lock

	// What the loop sets (without waiting).
	stopped atomic.Bool // no polling, no new turns
	cancel  atomic.Pointer[context.CancelFunc]

	mu       sync.Mutex // the replayed store and the turns
	st       *tgState
	active   bool // this gateway holds poll.lock and runs turns
	sole     bool // the only writer of the store (no predecessor alive)
	running  map[int64]bool
	wake     chan struct{}
	poller   chan struct{} // closed when the running poller has let go of poll.lock
	bot      string
	stranger map[int64]time.Time

	statusMu sync.Mutex
	status   atomic.Pointer[tgStatus]
}

// tgStatus is the bot's part of /status, read without the loop.
type tgStatus struct {
	State     string    `json:"state"` // starting, polling, conflict, failing, store_failing, stopped
	Degraded  string    `json:"degraded,omitempty"`
	Bot       string    `json:"bot,omitempty"`
	LastPoll  time.Time `json:"last_poll_ok,omitempty"`
	Since     time.Time `json:"since,omitempty"` // the conflict or failure episode's start
	Conflicts int       `json:"conflicts,omitempty"`
	Failures  int       `json:"failures,omitempty"`
	LastError string    `json:"last_error,omitempty"`
	NextTry   time.Time `json:"next_try,omitempty"`
	Offset    int64     `json:"offset"`
	Pending   int       `json:"pending"`
	Answering int       `json:"answering"`
}

func pollLockPath(stateDir string) string { return filepath.Join(stateDir, "telegram", "poll.lock") }

// startTelegram starts the bot when the policy has one. A successor starts
// it too: its poller waits for poll.lock, which its predecessor lets go.
func (g *gateway) startTelegram() error {
	p := g.policy.Load()
	if !p.Telegram.Enabled() {
		return nil
	}
	token, err := telegramToken(p)
	if err != nil {
		return err
	}
	g.log.secrets.add(token)
	b, err := newTelegramBot(gatewayTelegramHost{g}, p, token, g.inh == nil)
	if err != nil {
		return err
	}
	g.tg = b
	if g.alerts != nil {
		send := func(ctx context.Context, chat int64, text string) error {
			return b.api.call(ctx, "sendMessage", map[string]any{"chat_id": chat, "text": text}, nil)
		}
		g.alerts.tg.Store(&send)
	}
	b.start()
	return nil
}

// newTelegramBot makes the bot of the policy p, on host h, with its store
// in p's state dir; sole says no predecessor is alive to share the store
// with. It does nothing before start.
func newTelegramBot(h telegramHost, p *Policy, token string, sole bool) (*telegramBot, error) {
	store, err := openTgStore(p.Gateway.StateDir)
	if err != nil {
		return nil, fmt.Errorf("opening the telegram store: %w", err)
	}
	b := &telegramBot{
		h: h, api: newBotClient(p.Telegram.APIBase, token), store: store, lock: pollLockPath(p.Gateway.StateDir),
		running: map[int64]bool{}, wake: make(chan struct{}, 1), stranger: map[int64]time.Time{},
		sole: sole, st: &tgState{ups: map[int64]*tgUpdateState{}},
	}
	b.status.Store(&tgStatus{State: "starting"})
	return b, nil
}

// start polls and answers until the host is done.
func (b *telegramBot) start() {
	b.startPoller()
	go b.dispatcher()
}

// telegramToken reads the bot token. A token that is named but missing is
// a policy error (78): no restart brings it.
func telegramToken(p *Policy) (string, error) {
	t := p.Telegram
	tok, err := readToken(p, "telegram", t.TokenEnv, t.TokenFile)
	switch {
	case err != nil || tok != "":
		return tok, err
	case t.TokenFile == "":
		return "", &configError{File: p.policyLabel(), Key: "telegram.token_env", Msg: fmt.Sprintf("$%s is empty or not set: put the bot token from @BotFather there (for a systemd unit, in its environment file: see 'hermes help install-unit')", t.TokenEnv)}
	default:
		return "", &configError{File: p.policyLabel(), Key: "telegram.token_file", Msg: t.TokenFile + " is empty: put the bot token from @BotFather in it"}
	}
}

// The loop's side: flags and cancels, nothing that waits.

// stop stops polling and starting turns (a drain, or a handoff's "go").
// Turns in flight go on: they are sessions, and the drain waits for them.
func (b *telegramBot) stop() {
	if b == nil || b.stopped.Swap(true) {
		return
	}
	if c := b.cancel.Load(); c != nil {
		(*c)()
	}
}

// resume polls again after a handoff failed back.
func (b *telegramBot) resume() {
	if b == nil || !b.stopped.Swap(false) {
		return
	}
	b.startPoller()
}

// predecessorGone: this successor is the store's only writer from now on.
func (b *telegramBot) predecessorGone() {
	if b == nil {
		return
	}
	go func() {
		b.mu.Lock()
		b.sole = true
		if b.active {
			b.compactLocked()
		}
		b.mu.Unlock()
		b.kick()
	}()
}

func (b *telegramBot) kick() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

func (b *telegramBot) setStatus(f func(*tgStatus)) {
	b.statusMu.Lock()
	defer b.statusMu.Unlock()
	s := *b.status.Load()
	f(&s)
	b.status.Store(&s)
}

// statusNow is the status with what only the reader's clock can say: a
// poller that has made no progress for a while is alive but deaf.
func (b *telegramBot) statusNow(p *Policy, now time.Time) *tgStatus {
	s := *b.status.Load()
	deaf := 2*p.Telegram.PollTimeout + p.Telegram.RequestTimeout
	switch {
	case s.State == "conflict":
		s.Degraded = fmt.Sprintf("polling conflict: another bot instance polls this token (%d conflicts since %s)", s.Conflicts, s.Since.Local().Format("15:04:05"))
	case s.State == "failing":
		s.Degraded = fmt.Sprintf("polls fail since %s (%d failed calls): %s", s.Since.Local().Format("15:04:05"), s.Failures, s.LastError)
	case s.State == "store_failing":
		s.Degraded = fmt.Sprintf("messages cannot be stored since %s (%d failed writes), so none is accepted: %s", s.Since.Local().Format("15:04:05"), s.Failures, s.LastError)
	case s.State == "polling" && !s.LastPoll.IsZero() && now.Sub(s.LastPoll) > deaf:
		s.Degraded = fmt.Sprintf("deaf: no poll has succeeded for %s", now.Sub(s.LastPoll).Round(time.Second))
	}
	return &s
}

// describe is the bot's line in hermes status.
func (s *tgStatus) describe() string {
	var b strings.Builder
	b.WriteString(s.State)
	if s.Bot != "" {
		fmt.Fprintf(&b, " as %s", s.Bot)
	}
	if s.Degraded != "" {
		fmt.Fprintf(&b, "; DEGRADED: %s", s.Degraded)
		if !s.NextTry.IsZero() {
			fmt.Fprintf(&b, "; next try %s", s.NextTry.Local().Format("15:04:05"))
		}
	} else if s.State == "stopped" && s.LastError != "" {
		fmt.Fprintf(&b, ": %s", s.LastError)
	}
	if !s.LastPoll.IsZero() {
		fmt.Fprintf(&b, "; last poll %s", s.LastPoll.Local().Format("15:04:05"))
	}
	fmt.Fprintf(&b, "; %d answering, %d waiting", s.Answering, max(s.Pending-s.Answering, 0))
	return b.String()
}

// The poller.

func (b *telegramBot) startPoller() {
	ctx, cancel := context.WithCancel(context.Background())
	b.cancel.Store(&cancel)
	if b.stopped.Load() {
		cancel()
		return
	}
	prev := b.poller
	done := make(chan struct{})
	b.poller = done
	go func() {
		defer close(done)
		if prev != nil {
			<-prev // the last poller has let go of poll.lock
		}
		b.poll(ctx)
	}()
}

// pollRun is one poller's memory across its polls: the backoff, and the
// episodes of trouble it is in (a conflict, failing polls, a store that
// cannot write).
type pollRun struct {
	bo                         pollBackoff
	conflict, failing, storing episode
	conflictAlerted            bool
	short                      bool // the next poll is a short one: the last one failed
}

// poll checks the token, takes poll.lock, and long-polls until ctx ends.
func (b *telegramBot) poll(ctx context.Context) {
	p := b.h.policy()
	r := &pollRun{bo: pollBackoff{max: p.Telegram.BackoffMax}}
	if !b.checkUntilOK(ctx, r) {
		return
	}
	lock, ok := b.takePollLock(ctx)
	if !ok {
		return
	}
	defer func() {
		// Any claim in progress is written before poll.lock goes: the
		// successor that takes it next sees every turn this one began.
		b.mu.Lock()
		b.active = false
		b.mu.Unlock()
		lock.Close()
		b.setStatus(func(s *tgStatus) { s.State, s.Degraded = "stopped", "" })
		b.h.log().info(evTelegramStopped, "why", b.stopWhy())
	}()
	st, ok := b.openStore(p)
	if !ok {
		return
	}
	for ctx.Err() == nil {
		p = b.h.policy()
		r.bo.max = p.Telegram.BackoffMax
		ups, err := b.getUpdates(ctx, p, st.offset, r.short)
		r.short = err != nil
		if ctx.Err() != nil {
			return // stopped: a 409 now is the successor's poll, not a conflict
		}
		b.h.polled(err)
		var wait time.Duration
		if err != nil {
			if isBotCode(err, 401) {
				b.h.fatal(tokenRefused(p))
				return
			}
			wait = b.pollError(p, r, err)
		} else {
			wait = b.pollOK(p, r, st, ups)
		}
		if wait > 0 && !sleepCtx(ctx, wait) {
			return
		}
	}
}

// checkUntilOK checks the token and the webhook until they pass, backing
// off between tries. A wrong token is a policy error, never a restart
// loop: it stops the gateway. It reports false if the poller must stop.
func (b *telegramBot) checkUntilOK(ctx context.Context, r *pollRun) bool {
	for {
		err := b.checkBot(ctx)
		if err == nil {
			break
		}
		var ce *configError
		if errors.As(err, &ce) {
			b.setStatus(func(s *tgStatus) { s.State, s.LastError = "stopped", ce.Msg })
			b.h.fatal(err)
			return false
		}
		if ctx.Err() != nil {
			return false
		}
		wait := r.bo.next()
		b.pollFailed(err, &r.failing, wait)
		if !sleepCtx(ctx, wait) {
			return false
		}
	}
	r.bo.reset()
	if n, lasted, ok := r.failing.end(time.Now()); ok {
		b.h.log().info(evTelegramRecovered, "failures", n, "lasted", lasted.Round(time.Millisecond))
	}
	return true
}

// openStore loads the bot's store (compacted, when this gateway is the
// only one) and marks the bot active; it is called with poll.lock held.
func (b *telegramBot) openStore(p *Policy) (*tgState, bool) {
	b.mu.Lock()
	st, err := b.store.load()
	if err == nil && b.sole {
		st, err = b.store.compact(p.Telegram.HistoryTurns)
	}
	if err != nil {
		b.mu.Unlock()
		b.h.log().errorf(evTelegramError, "error", err)
		return nil, false
	}
	b.st, b.active = st, true
	pending := len(st.pending())
	b.mu.Unlock()
	b.setStatus(func(s *tgStatus) { s.State, s.Bot, s.Offset, s.Pending = "polling", b.bot, st.offset, pending })
	b.h.log().info(evTelegramPolling, "bot", b.bot, "offset", st.offset, "pending", pending)
	b.kick()
	return st, true
}

// pollError notes a failed poll (a conflict with another poller of the
// token, or any other failure) and returns how long to back off.
func (b *telegramBot) pollError(p *Policy, r *pollRun, err error) time.Duration {
	wait := r.bo.next()
	if !isBotCode(err, 409) {
		b.pollFailed(err, &r.failing, wait)
		return wait
	}
	if r.conflict.begin(time.Now()) {
		b.h.log().warn(evTelegramConflict, "conflicts", 1, "backoff", wait, "note", "another bot instance polls this token (maybe on another host); backing off")
	}
	if d := time.Since(r.conflict.since); d >= p.Alerts.TelegramConflictFor && !r.conflictAlerted {
		r.conflictAlerted = true
		b.h.alert("telegram_conflict", "firing", fmt.Sprintf("hermes %q: the bot %s has met polling conflicts for %s (%d so far): another bot instance polls its token and the bot is deaf to it", p.Name, b.bot, d.Round(time.Second), r.conflict.n), "conflicts", r.conflict.n)
	}
	b.setStatus(func(s *tgStatus) {
		s.State, s.Since, s.Conflicts, s.NextTry, s.LastError = "conflict", r.conflict.since, r.conflict.n, time.Now().Add(wait), b.scrub(err.Error())
	})
	return wait
}

// pollOK ends the episodes a good poll ends and stores the updates it
// brought. It returns how long to back off: zero unless the store failed.
func (b *telegramBot) pollOK(p *Policy, r *pollRun, st *tgState, ups []tgUpdate) time.Duration {
	now := time.Now()
	if n, lasted, ok := r.conflict.end(now); ok {
		b.h.log().info(evTelegramConflictEnd, "conflicts", n, "lasted", lasted.Round(time.Millisecond))
		if r.conflictAlerted {
			r.conflictAlerted = false
			b.h.alert("telegram_conflict", "resolved", fmt.Sprintf("hermes %q: the bot %s polls again, after %s of conflicts (%d)", p.Name, b.bot, lasted.Round(time.Second), n))
		}
	}
	if n, lasted, ok := r.failing.end(now); ok {
		b.h.log().info(evTelegramRecovered, "failures", n, "lasted", lasted.Round(time.Millisecond))
	}
	if len(ups) > 0 {
		if err := b.accept(p, st, ups); err != nil {
			// Not on disk, so not acknowledged: the same updates come
			// again with a later poll. Nothing is lost, but the bot
			// is deaf until it can write: say so, and back off.
			b.storeFailed(p, err, &r.storing, r.bo.next())
			r.short = true
			return time.Until(b.status.Load().NextTry)
		}
	}
	r.bo.reset()
	if n, lasted, ok := r.storing.end(now); ok {
		b.h.log().info(evTelegramStoreRecovered, "failures", n, "lasted", lasted.Round(time.Millisecond))
		b.h.alert("telegram_store", "resolved", fmt.Sprintf("hermes %q: the bot %s stores its messages again, after %s (%d failed writes)", p.Name, b.bot, lasted.Round(time.Second), n))
	}
	b.setStatus(func(s *tgStatus) {
		s.State, s.LastPoll, s.Since, s.Conflicts, s.Failures, s.NextTry, s.LastError = "polling", now, time.Time{}, 0, 0, time.Time{}, ""
	})
	return 0
}

// storeFailed notes updates the store could not write: the poll worked,
// but the bot cannot accept what it fetched. Logged, counted and alerted
// once when the episode begins; status says degraded throughout.
func (b *telegramBot) storeFailed(p *Policy, err error, storing *episode, wait time.Duration) {
	msg := b.scrub(err.Error())
	first := storing.begin(time.Now())
	b.h.storeFailed()
	b.setStatus(func(s *tgStatus) {
		s.State, s.Since, s.Failures, s.NextTry, s.LastError = "store_failing", storing.since, storing.n, time.Now().Add(wait), msg
	})
	if first {
		b.h.log().errorf(evTelegramStoreFailing, "error", msg, "backoff", wait, "note", "messages are fetched but cannot be stored, so none is accepted: they come again once the state dir can be written")
		b.h.alert("telegram_store", "firing", fmt.Sprintf("hermes %q: the bot %s cannot store the messages it receives (%s): it answers none until the state dir can be written", p.Name, b.bot, msg), "error", msg)
	}
}

func (b *telegramBot) stopWhy() string {
	s := b.h.snapshot()
	switch {
	case s.HandedOff && s.Successor != 0:
		return fmt.Sprintf("handed over to the successor (pid %d)", s.Successor)
	case s.HandedOff:
		return "handed over to the successor"
	case s.State == stateDraining && s.Reason != "":
		return "the gateway drains (" + s.Reason + ")"
	case s.State == stateDraining:
		return "the gateway drains"
	}
	return "the gateway stops"
}

func tokenRefused(p *Policy) error {
	key := "telegram.token_env"
	if p.Telegram.TokenEnv == "" {
		key = "telegram.token_file"
	}
	return &configError{File: p.policyLabel(), Key: key, Msg: "Telegram refused the bot token (401 Unauthorized): copy it again from @BotFather (/token), then start hermes again"}
}

// checkBot calls getMe (the token) and getWebhookInfo (polling cannot work
// while a webhook is set).
func (b *telegramBot) checkBot(ctx context.Context) error {
	p := b.h.policy()
	t := p.Telegram.RequestTimeout
	var me tgUser
	cctx, cancel := context.WithTimeout(ctx, t)
	err := b.api.call(cctx, "getMe", struct{}{}, &me)
	cancel()
	if isBotCode(err, 401) || isBotCode(err, 404) {
		return tokenRefused(p)
	}
	if err != nil {
		return err
	}
	b.bot = "@" + me.Username
	var wh struct {
		URL string `json:"url"`
	}
	cctx, cancel = context.WithTimeout(ctx, t)
	err = b.api.call(cctx, "getWebhookInfo", struct{}{}, &wh)
	cancel()
	if err != nil {
		return err
	}
	if wh.URL == "" {
		return nil
	}
	host := "a URL"
	if u, err := url.Parse(wh.URL); err == nil && u.Host != "" {
		host = u.Host // the path may hold a secret
	}
	if !p.Telegram.DeleteWebhook {
		return &configError{File: p.policyLabel(), Key: "telegram.delete_webhook",
			Msg: fmt.Sprintf("the bot %s has a webhook set (to %s), and Telegram gives no updates to a poller while it is: set delete_webhook = true in [telegram] and hermes deletes it at start (the updates waiting are kept)", b.bot, host)}
	}
	cctx, cancel = context.WithTimeout(ctx, t)
	err = b.api.call(cctx, "deleteWebhook", map[string]any{"drop_pending_updates": false}, nil)
	cancel()
	if err != nil {
		return err
	}
	b.h.log().warn(evTelegramWebhookDeleted, "bot", b.bot, "webhook_host", host, "note", "as telegram.delete_webhook asks")
	return nil
}

// takePollLock waits for poll.lock (the predecessor's poller lets it go at
// a handoff) until ctx ends.
func (b *telegramBot) takePollLock(ctx context.Context) (*os.File, bool) {
	if err := os.MkdirAll(filepath.Dir(b.lock), 0o700); err != nil {
		b.h.log().errorf(evTelegramError, "error", err)
		return nil, false
	}
	f, err := os.OpenFile(b.lock, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		b.h.log().errorf(evTelegramError, "error", err)
		return nil, false
	}
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err == nil {
			return f, true
		}
		select {
		case <-ctx.Done():
			f.Close()
			return nil, false
		case <-t.C:
		}
	}
}

// getUpdates polls once: a long poll of telegram.poll_timeout, or a short
// one (short: the Bot API answers at once) after a failure, so that the
// first good poll ends the episode at once, not a long poll later.
func (b *telegramBot) getUpdates(ctx context.Context, p *Policy, offset int64, short bool) ([]tgUpdate, error) {
	wait := p.Telegram.PollTimeout
	if short {
		wait = 0
	}
	cctx, cancel := context.WithTimeout(ctx, wait+p.Telegram.RequestTimeout)
	defer cancel()
	var ups []tgUpdate
	err := b.api.call(cctx, "getUpdates", map[string]any{
		"offset": offset, "timeout": int(wait.Seconds()), "allowed_updates": []string{"message"},
	}, &ups)
	return ups, err
}

// accept records the updates and moves the offset past them, in one
// durable write. Only then may the next poll acknowledge them.
func (b *telegramBot) accept(p *Policy, st *tgState, ups []tgUpdate) error {
	allowed := map[int64]bool{}
	for _, id := range p.Telegram.AllowedUsers {
		allowed[id] = true
	}
	off := st.offset
	var recs []tgRecord
	var strangers []*tgMessage
	for _, u := range ups {
		if u.UpdateID < st.offset {
			continue
		}
		off = max(off, u.UpdateID+1)
		m := u.Message
		if m == nil || m.From == nil || m.From.IsBot {
			continue
		}
		if !allowed[m.From.ID] {
			strangers = append(strangers, m) // nothing of it is kept
			continue
		}
		if _, dup := st.ups[u.UpdateID]; dup {
			continue
		}
		recs = append(recs, tgRecord{T: "acc", U: u.UpdateID, Chat: m.Chat.ID, From: m.From.ID, Msg: m.MessageID, Text: m.Text})
	}
	recs = append(recs, tgRecord{T: "off", Off: off})
	b.mu.Lock()
	err := b.store.append(recs...)
	if err == nil {
		for _, r := range recs {
			st.apply(r)
		}
	}
	pending := len(st.pending())
	b.mu.Unlock()
	if err != nil {
		return err
	}
	b.setStatus(func(s *tgStatus) { s.Offset, s.Pending = off, pending })
	for _, m := range strangers {
		b.tellStranger(p, m)
	}
	b.kick()
	return nil
}

// tellStranger answers a user who is not in allowed_users with their id,
// at most once per stranger_reply_every. Their message goes nowhere.
func (b *telegramBot) tellStranger(p *Policy, m *tgMessage) {
	now := time.Now()
	b.mu.Lock()
	last, seen := b.stranger[m.From.ID]
	if seen && now.Sub(last) < p.Telegram.StrangerReplyEvery {
		b.mu.Unlock()
		return
	}
	if len(b.stranger) > 10000 {
		clear(b.stranger) // bounded: a flood of strangers costs replies, not memory
	}
	b.stranger[m.From.ID] = now
	b.mu.Unlock()
	b.h.log().info(evTelegramStranger, "user", m.From.ID)
	go func() {
		ctx, cancel := context.WithTimeout(b.h.cutCtx(), p.Telegram.RequestTimeout*3)
		defer cancel()
		text := fmt.Sprintf("This bot answers only the users its operator allowed. Your Telegram user id is %d: send it to the operator, who can add it to telegram.allowed_users.", m.From.ID)
		b.api.callRetry(ctx, p.Telegram.RequestTimeout, "sendMessage", map[string]any{"chat_id": m.Chat.ID, "text": text}, nil)
	}()
}

// The dispatcher starts turns: for each chat, its earliest update not
// answered, one at a time (a chat's history needs the answer before).

func (b *telegramBot) dispatcher() {
	t := time.NewTicker(time.Second) // a claim of another gateway may end without a word
	defer t.Stop()
	for {
		select {
		case <-b.wake:
		case <-t.C:
		case <-b.h.done():
			return
		}
		b.dispatch()
	}
}

func (b *telegramBot) dispatch() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.active || b.stopped.Load() {
		return
	}
	p := b.h.policy()
	if b.sole && b.store.written() > compactAbove {
		b.compactLocked()
	}
	pend := b.st.pending()
	if !b.sole {
		// A predecessor still answers some: read its progress.
		if st, err := b.store.load(); err == nil {
			st.offset = max(st.offset, b.st.offset)
			*b.st = *st
			pend = b.st.pending()
		}
	}
	seen := map[int64]bool{}
	for _, u := range pend {
		chat := u.acc.Chat
		if seen[chat] {
			continue
		}
		seen[chat] = true
		if b.running[chat] {
			continue
		}
		if c := u.claim; c != nil && c.PID != b.h.self().PID && claimAlive(c) {
			continue // another gateway's turn, still running
		}
		if !b.h.enterSession() {
			return // draining: the next gateway answers it
		}
		rerun := u.claim != nil || len(u.sent) > 0
		claim := tgRecord{T: "claim", U: u.acc.U, PID: b.h.self().PID, Start: b.h.self().StartTime, Boot: b.h.self().BootID}
		if err := b.store.append(claim); err != nil {
			b.h.leaveSession()
			b.h.log().errorf(evTelegramError, "error", err)
			return
		}
		u.claim = &claim
		b.running[chat] = true
		msgs := b.messages(p, u)
		sent := make(map[int]int64, len(u.sent))
		for k, v := range u.sent {
			sent[k] = v
		}
		if rerun {
			b.h.log().info(evTelegramRerun, "update", u.acc.U, "chat", chat)
		}
		b.setStatus(func(s *tgStatus) { s.Answering++ })
		go b.turn(p, u.acc, msgs, sent, rerun)
	}
}

// compactLocked compacts the store (b.mu held; this gateway its only
// writer) and takes the state it holds.
func (b *telegramBot) compactLocked() {
	st, err := b.store.compact(b.h.policy().Telegram.HistoryTurns)
	if err != nil {
		b.h.log().warn(evTelegramError, "error", "compacting the telegram store: "+err.Error())
		return
	}
	st.offset = max(st.offset, b.st.offset)
	*b.st = *st // the same object: the poller holds it
}

// compactAbove is the store's size past which a gateway that is its only
// writer compacts it while it runs.
const compactAbove = 4 << 20

func claimAlive(c *tgRecord) bool {
	ok, state := pidRecord{PID: c.PID, StartTime: c.Start, BootID: c.Boot}.alive()
	return ok && state != 'Z'
}

// messages is what goes upstream: the system prompt, the chat's history
// and the new message.
func (b *telegramBot) messages(p *Policy, u *tgUpdateState) []map[string]string {
	var msgs []map[string]string
	if p.Telegram.SystemPrompt != "" {
		msgs = append(msgs, map[string]string{"role": "system", "content": p.Telegram.SystemPrompt})
	}
	for _, h := range b.st.history(u.acc.Chat, u.acc.U, p.Telegram.HistoryTurns) {
		msgs = append(msgs, map[string]string{"role": "user", "content": h.acc.Text}, map[string]string{"role": "assistant", "content": h.done.Text})
	}
	return append(msgs, map[string]string{"role": "user", "content": u.acc.Text})
}

// A turn: one message answered.

func (b *telegramBot) turn(p *Policy, acc tgRecord, msgs []map[string]string, sent map[int]int64, rerun bool) {
	id, started := newID(), time.Now()
	ctx := b.h.cutCtx() // the drain's cut ends the turn; the next gateway re-runs it
	defer func() {
		b.mu.Lock()
		delete(b.running, acc.Chat)
		b.mu.Unlock()
		b.setStatus(func(s *tgStatus) { s.Answering-- })
		b.h.leaveSession()
		b.kick()
	}()
	cctx, cancel := context.WithTimeout(ctx, p.Telegram.RequestTimeout)
	b.api.call(cctx, "sendChatAction", map[string]any{"chat_id": acc.Chat, "action": "typing"}, nil)
	cancel()

	r := &tgReply{b: b, p: p, u: acc.U, chat: acc.Chat, replyTo: acc.Msg, sent: sent, shown: map[int]string{}}
	var text string
	var err error
	isErr := false
	if strings.TrimSpace(acc.Text) == "" {
		text, isErr = "hermes passes on text messages only.", true
	} else {
		text, err = b.complete(ctx, p, msgs, func(partial string) { r.update(ctx, partial, false) })
	}
	if ctx.Err() != nil {
		b.h.log().info(evTelegramTurnCut, "session", id, "update", acc.U, "note", "left for the next gateway")
		return
	}
	if err != nil {
		b.h.log().warn(evUpstreamError, "session", id, "error", b.scrub(err.Error()))
		text, isErr = "hermes could not get an answer from the model ("+b.scrub(err.Error())+"). Send your message again.", true
	} else if strings.TrimSpace(text) == "" {
		text, isErr = "(the model sent an empty answer)", true
	}
	for {
		err := r.update(ctx, text, true)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			b.h.log().info(evTelegramTurnCut, "session", id, "update", acc.U, "note", "left for the next gateway")
			return
		}
		b.h.log().warn(evTelegramError, "session", id, "error", b.scrub(err.Error()))
		if !sleepCtx(ctx, 5*time.Second) {
			return
		}
	}
	done := tgRecord{T: "done", U: acc.U, Text: text, Err: isErr}
	if err := b.store.append(done); err != nil {
		b.h.log().errorf(evTelegramError, "error", err)
		return
	}
	b.mu.Lock()
	if u := b.st.ups[acc.U]; u != nil {
		u.done = &done
	}
	pending := len(b.st.pending())
	b.mu.Unlock()
	b.setStatus(func(s *tgStatus) { s.Pending = pending })
	b.h.log().info(evTelegramAnswered, "session", id, "update", acc.U, "chat", acc.Chat, "duration", time.Since(started).Round(time.Millisecond), "parts", len(r.sent), "rerun", rerun)
}

func (b *telegramBot) scrub(s string) string { return b.h.log().secrets.scrub(s) }

// tgReply is a reply in the chat: one message per maxMessage, grown by
// edits as the answer streams.
type tgReply struct {
	b        *telegramBot
	p        *Policy
	u        int64
	chat     int64
	replyTo  int64
	sent     map[int]int64 // part -> message id
	shown    map[int]string
	lastEdit time.Time
}

// maxMessage is Telegram's limit on a message's text: "4096 characters".
// Whether it counts characters or UTF-16 code units (where a character
// outside the Basic Multilingual Plane, such as most emoji, is two) is
// documented nowhere and reported both ways, so hermes counts UTF-16
// units, the stricter: a part within that is within either.
const maxMessage = 4096

// update shows text. Before final, at most once per telegram.edit_every,
// and a refused edit is left for the next; final retries (honouring a
// 429's retry_after) until every part shows the full text.
func (r *tgReply) update(ctx context.Context, text string, final bool) error {
	if !final && len(r.sent) > 0 && time.Since(r.lastEdit) < r.p.Telegram.EditEvery {
		return nil
	}
	t := r.p.Telegram.RequestTimeout
	for i, part := range splitMessage(text, maxMessage) {
		if mid, ok := r.sent[i]; ok {
			if r.shown[i] == part {
				continue
			}
			params := map[string]any{"chat_id": r.chat, "message_id": mid, "text": part}
			var err error
			if final {
				err = r.b.api.callRetry(ctx, t, "editMessageText", params, nil)
			} else {
				cctx, cancel := context.WithTimeout(ctx, t)
				err = r.b.api.call(cctx, "editMessageText", params, nil)
				cancel()
			}
			if err != nil && !notModified(err) {
				if final {
					return err
				}
				break
			}
			r.shown[i] = part
			continue
		}
		params := map[string]any{"chat_id": r.chat, "text": part}
		if i == 0 {
			params["reply_parameters"] = map[string]any{"message_id": r.replyTo, "allow_sending_without_reply": true}
		}
		var m tgMessage
		if err := r.b.api.callRetry(ctx, t, "sendMessage", params, &m); err != nil {
			return err
		}
		// On disk at once: a re-run edits this message instead of
		// sending a second reply.
		if err := r.b.store.append(tgRecord{T: "sent", U: r.u, Part: i, Msg: m.MessageID}); err != nil {
			return err
		}
		r.b.mu.Lock()
		if u := r.b.st.ups[r.u]; u != nil {
			u.sent[i] = m.MessageID
		}
		r.b.mu.Unlock()
		r.sent[i], r.shown[i] = m.MessageID, part
	}
	r.lastEdit = time.Now()
	return nil
}

// splitMessage cuts text into parts of at most n UTF-16 code units (see
// maxMessage; a part holds one character at least), never inside a
// character, at a line break or a space where there is one in the last
// quarter of a part. One pass over each part: a long answer is split again
// at every edit.
func splitMessage(text string, n int) []string {
	var parts []string
	for {
		end, units := len(text), 0 // end: where this part stops, in bytes
		for i, r := range text {
			// An invalid byte decodes as U+FFFD and goes out as one unit.
			if units += utf16.RuneLen(r); units > n && i > 0 {
				end = i
				break
			}
		}
		if end == len(text) {
			return append(parts, text)
		}
		best := end
		if j := strings.LastIndexAny(text[:end], "\n "); j > end*3/4 {
			best = j + 1
		}
		parts = append(parts, text[:best])
		text = text[best:]
	}
}

// episode is a run of failures of one kind: logged once when it begins
// and once when it ends, with its count.
type episode struct {
	since time.Time
	n     int
}

func (e *episode) begin(now time.Time) bool {
	e.n++
	if e.since.IsZero() {
		e.since = now
		return true
	}
	return false
}

func (e *episode) end(now time.Time) (int, time.Duration, bool) {
	if e.since.IsZero() {
		return 0, 0, false
	}
	n, d := e.n, now.Sub(e.since)
	*e = episode{}
	return n, d, true
}

// pollBackoff is exponential from 1s, capped, with jitter: never a tight loop.
type pollBackoff struct {
	max time.Duration
	n   int
}

func (b *pollBackoff) next() time.Duration {
	d := time.Second << min(b.n, 16)
	b.n++
	d = min(d, b.max)
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

func (b *pollBackoff) reset() { b.n = 0 }

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// pollFailed notes a failed call of the poller (network, 5xx): logged
// once when the episode begins, shown in status throughout.
func (b *telegramBot) pollFailed(err error, failing *episode, wait time.Duration) {
	msg := b.scrub(err.Error())
	first := failing.begin(time.Now())
	// Status first: whoever reads the log line finds it already failing.
	b.setStatus(func(s *tgStatus) {
		s.State, s.Since, s.Failures, s.NextTry, s.LastError = "failing", failing.since, failing.n, time.Now().Add(wait), msg
	})
	if first {
		b.h.log().warn(evTelegramFailing, "error", msg, "backoff", wait)
	}
}
