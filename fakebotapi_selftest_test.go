package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// fbAnswer is one answer of the fake Bot API, as a client sees it.
type fbAnswer struct {
	Status      int             `json:"-"`
	Body        string          `json:"-"`
	OK          bool            `json:"ok"`
	Result      json.RawMessage `json:"result"`
	ErrorCode   int             `json:"error_code"`
	Description string          `json:"description"`
	Parameters  *struct {
		RetryAfter int `json:"retry_after"`
	} `json:"parameters"`
}

// fbCall posts params as JSON (as hermes does) to <base>/bot<token>/<method>
// with a plain net/http client.
func fbCall(ctx context.Context, base, token, method string, params map[string]any) (fbAnswer, error) {
	b, _ := json.Marshal(params)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/bot"+token+"/"+method, strings.NewReader(string(b)))
	if err != nil {
		return fbAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	return fbDo(req)
}

func fbDo(req *http.Request) (fbAnswer, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fbAnswer{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fbAnswer{}, err
	}
	var a fbAnswer
	if err := json.Unmarshal(body, &a); err != nil {
		return fbAnswer{}, fmt.Errorf("answer %q is not JSON: %v", body, err)
	}
	a.Status, a.Body = resp.StatusCode, string(body)
	if a.Status != http.StatusOK && a.ErrorCode != a.Status {
		return a, fmt.Errorf("HTTP status %d but error_code %d", a.Status, a.ErrorCode)
	}
	return a, nil
}

// fbMust is fbCall with the fake's token, bounded in time, failing the test
// on a transport error.
func fbMust(t *testing.T, f *fakeBotAPI, method string, params map[string]any) fbAnswer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a, err := fbCall(ctx, f.URL(), f.Token(), method, params)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	return a
}

// fbWantError checks that a is the error answer code/desc.
func fbWantError(t *testing.T, what string, a fbAnswer, code int, desc string) {
	t.Helper()
	if a.OK || a.Status != code || a.ErrorCode != code || a.Description != desc {
		t.Errorf("%s: got HTTP %d %s, want %d %q", what, a.Status, a.Body, code, desc)
	}
}

// fbUpdates decodes a getUpdates result.
func fbUpdates(t *testing.T, a fbAnswer) []fakeTGUpdate {
	t.Helper()
	if !a.OK {
		t.Fatalf("getUpdates: HTTP %d %s", a.Status, a.Body)
	}
	var ups []fakeTGUpdate
	if err := json.Unmarshal(a.Result, &ups); err != nil || ups == nil {
		t.Fatalf("getUpdates result %s: not a JSON array (%v)", a.Result, err)
	}
	return ups
}

// fbPoll is a getUpdates running in the background.
type fbPoll struct {
	cancel context.CancelFunc
	done   chan struct{}
	a      fbAnswer
	err    error
}

func fbStartPoll(f *fakeBotAPI, params map[string]any) *fbPoll {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	p := &fbPoll{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(p.done)
		p.a, p.err = fbCall(ctx, f.URL(), f.Token(), "getUpdates", params)
	}()
	return p
}

// wait waits for the poll's answer, at most timeout.
func (p *fbPoll) wait(t *testing.T, timeout time.Duration) (fbAnswer, error) {
	t.Helper()
	select {
	case <-p.done:
		p.cancel()
		return p.a, p.err
	case <-time.After(timeout):
		p.cancel()
		t.Fatalf("getUpdates did not end within %s", timeout)
		return fbAnswer{}, nil
	}
}

// TestFakeBotAPI holds the fake Bot API to the real one's behaviour, over
// real HTTP, so the tests that run hermes against it test the real thing.
func TestFakeBotAPI(t *testing.T) {
	const bound = 10 * time.Second // for what should happen at once

	t.Run("token", func(t *testing.T) {
		f := newFakeBotAPI(t)
		if !strings.HasPrefix(f.Token(), "123456:TEST-") || len(f.Token()) != len("123456:TEST-")+32 {
			t.Errorf("token %q is not shaped like a real one", f.Token())
		}
		a, err := fbCall(context.Background(), f.URL(), "123456:WRONG", "getMe", nil)
		if err != nil {
			t.Fatal(err)
		}
		fbWantError(t, "wrong token", a, 401, "Unauthorized")
		if a.Body != `{"ok":false,"error_code":401,"description":"Unauthorized"}` {
			t.Errorf("401 body %s", a.Body)
		}
		old := f.Token()
		f.setToken("654321:NEW-token")
		a, _ = fbCall(context.Background(), f.URL(), old, "getMe", nil)
		fbWantError(t, "the replaced token", a, 401, "Unauthorized")
		if a := fbMust(t, f, "getMe", nil); !a.OK {
			t.Errorf("the new token: %s", a.Body)
		}
		if f.calls("getMe") != 3 {
			t.Errorf("calls(getMe) = %d, want 3", f.calls("getMe"))
		}
	})

	t.Run("getMe and unknown methods", func(t *testing.T) {
		f := newFakeBotAPI(t)
		a := fbMust(t, f, "getMe", nil)
		if string(a.Result) != `{"id":123456,"is_bot":true,"first_name":"fakebot","username":"fake_bot"}` {
			t.Errorf("getMe: %s", a.Body)
		}
		if a := fbMust(t, f, "GETME", nil); !a.OK {
			t.Errorf("method names are case-insensitive on Telegram: %s", a.Body)
		}
		fbWantError(t, "unknown method", fbMust(t, f, "sendTelepathy", nil), 404, "Not Found")
		resp, err := http.Get(f.URL() + "/nobot")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 404 {
			t.Errorf("a path without /bot<token>/: HTTP %d", resp.StatusCode)
		}
	})

	t.Run("long poll", func(t *testing.T) {
		f := newFakeBotAPI(t)
		p := fbStartPoll(f, map[string]any{"timeout": 50})
		if !f.waitFor(bound, f.polling) {
			t.Fatal("the getUpdates is not waiting")
		}
		start := time.Now()
		u, m := f.userMessage(42, 42, "hello")
		a, err := p.wait(t, bound)
		if err != nil {
			t.Fatal(err)
		}
		ups := fbUpdates(t, a)
		if len(ups) != 1 || ups[0].UpdateID != u || ups[0].Message.MessageID != m || ups[0].Message.Text != "hello" {
			t.Errorf("got %s, want update %d with message %d", a.Result, u, m)
		}
		if d := time.Since(start); d > bound {
			t.Errorf("the update took %s to arrive", d)
		}
		want := fmt.Sprintf(`[{"update_id":%d,"message":{"message_id":%d,"from":{"id":42,"is_bot":false,"first_name":"u"},"chat":{"id":42,"type":"private"},"date":%d,"text":"hello"}}]`,
			u, m, ups[0].Message.Date)
		if string(a.Result) != want || time.Since(time.Unix(ups[0].Message.Date, 0)) > time.Minute {
			t.Errorf("update JSON\n got %s\nwant %s", a.Result, want)
		}
		if f.polling() {
			t.Error("still polling after answering")
		}

		// Nothing comes: the answer is [] after the timeout.
		start = time.Now()
		a = fbMust(t, f, "getUpdates", map[string]any{"offset": u + 1, "timeout": 1})
		if d := time.Since(start); d < time.Second || string(a.Result) != "[]" {
			t.Errorf("an empty long poll answered %s after %s, want [] after 1s", a.Result, d)
		}

		// The client goes away: the wait ends without a trace.
		p = fbStartPoll(f, map[string]any{"offset": u + 1, "timeout": 50})
		if !f.waitFor(bound, f.polling) {
			t.Fatal("the getUpdates is not waiting")
		}
		p.cancel()
		if !f.waitFor(bound, func() bool { return !f.polling() }) {
			t.Error("a cancelled getUpdates still waits")
		}
		if _, err := p.wait(t, bound); !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled poll: %v", err)
		}
		if f.conflicts() != 0 || f.pending() != 0 {
			t.Errorf("after a cancelled poll: %d conflicts, %d pending", f.conflicts(), f.pending())
		}
	})

	t.Run("offsets", func(t *testing.T) {
		f := newFakeBotAPI(t)
		u1, m1 := f.userMessage(7, 7, "one")
		u2, _ := f.userMessage(7, 7, "two")
		u3, _ := f.userMessage(8, 8, "three")
		if u2 != u1+1 || u3 != u2+1 || u1 == m1 {
			t.Errorf("update ids %d %d %d (message id %d)", u1, u2, u3, m1)
		}
		ups := fbUpdates(t, fbMust(t, f, "getUpdates", nil))
		if len(ups) != 3 || ups[0].UpdateID != u1 || ups[2].UpdateID != u3 {
			t.Fatalf("without an offset: %+v", ups)
		}
		// Unconfirmed: they come again, limit caps them.
		ups = fbUpdates(t, fbMust(t, f, "getUpdates", map[string]any{"offset": 0, "limit": 2}))
		if len(ups) != 2 || ups[0].UpdateID != u1 || ups[1].UpdateID != u2 {
			t.Fatalf("again with limit 2: %+v", ups)
		}
		if f.pending() != 3 || f.offsetConfirmed() != 0 {
			t.Errorf("nothing confirmed yet, but pending %d, offset %d", f.pending(), f.offsetConfirmed())
		}
		ups = fbUpdates(t, fbMust(t, f, "getUpdates", map[string]any{"offset": u2}))
		if len(ups) != 2 || ups[0].UpdateID != u2 || ups[1].UpdateID != u3 {
			t.Fatalf("offset u2: %+v", ups)
		}
		if f.pending() != 2 || f.offsetConfirmed() != u2 {
			t.Errorf("offset u2 confirmed: pending %d, offset %d", f.pending(), f.offsetConfirmed())
		}
		// Forgotten for good: offset 0 does not bring u1 back. As a form
		// in the query string, too.
		resp, err := http.Get(f.URL() + "/bot" + f.Token() + "/getUpdates?offset=0")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.Contains(string(body), fmt.Sprint(u1)) || !strings.Contains(string(body), fmt.Sprint(u2)) {
			t.Errorf("after confirming u2, offset 0 gives %s", body)
		}
		ups = fbUpdates(t, fbMust(t, f, "getUpdates", map[string]any{"offset": u3 + 1}))
		if len(ups) != 0 || f.pending() != 0 || f.offsetConfirmed() != u3+1 {
			t.Errorf("all confirmed: %+v, pending %d, offset %d", ups, f.pending(), f.offsetConfirmed())
		}
		// A negative offset keeps the last -offset.
		f.userMessage(7, 7, "four")
		u5, _ := f.userMessage(7, 7, "five")
		ups = fbUpdates(t, fbMust(t, f, "getUpdates", map[string]any{"offset": -1}))
		if len(ups) != 1 || ups[0].UpdateID != u5 || f.pending() != 1 {
			t.Errorf("offset -1: %+v, pending %d", ups, f.pending())
		}
	})

	t.Run("a newer getUpdates ends the older", func(t *testing.T) {
		f := newFakeBotAPI(t)
		older := fbStartPoll(f, map[string]any{"timeout": 50})
		if !f.waitFor(bound, f.polling) {
			t.Fatal("the getUpdates is not waiting")
		}
		newer := fbStartPoll(f, map[string]any{"timeout": 50})
		a, err := older.wait(t, bound)
		if err != nil {
			t.Fatal(err)
		}
		fbWantError(t, "the older getUpdates", a, 409, "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running")
		if !f.waitFor(bound, f.polling) {
			t.Fatal("the newer getUpdates is not waiting")
		}
		u, _ := f.userMessage(1, 1, "for the newer")
		a, err = newer.wait(t, bound)
		if err != nil {
			t.Fatal(err)
		}
		if ups := fbUpdates(t, a); len(ups) != 1 || ups[0].UpdateID != u {
			t.Errorf("the newer getUpdates: %s", a.Body)
		}
		if f.conflicts() != 1 || f.calls("getUpdates") != 2 {
			t.Errorf("conflicts %d, getUpdates calls %d; want 1, 2", f.conflicts(), f.calls("getUpdates"))
		}
	})

	t.Run("conflict", func(t *testing.T) {
		f := newFakeBotAPI(t)
		p := fbStartPoll(f, map[string]any{"timeout": 50})
		if !f.waitFor(bound, f.polling) {
			t.Fatal("the getUpdates is not waiting")
		}
		f.conflict(true) // another instance starts polling: it ends ours
		a, err := p.wait(t, bound)
		if err != nil {
			t.Fatal(err)
		}
		fbWantError(t, "waiting when another instance polls", a, 409, tgTerminated)
		f.userMessage(1, 1, "hi")
		for range 2 {
			fbWantError(t, "while another instance polls", fbMust(t, f, "getUpdates", map[string]any{"timeout": 50}), 409, tgTerminated)
		}
		if f.conflicts() != 3 || f.pending() != 1 {
			t.Errorf("conflicts %d, pending %d; want 3, 1", f.conflicts(), f.pending())
		}
		f.conflict(false)
		if ups := fbUpdates(t, fbMust(t, f, "getUpdates", nil)); len(ups) != 1 {
			t.Errorf("after conflict(false): %+v", ups)
		}
	})

	t.Run("failNext", func(t *testing.T) {
		f := newFakeBotAPI(t)
		f.failNext("sendMessage", 2, 429, 7)
		f.failNext("getMe", 1, 502, 0)
		for i := range 2 {
			a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": 5, "text": "x"})
			fbWantError(t, fmt.Sprint("injected 429 #", i), a, 429, "Too Many Requests: retry after 7")
			if a.Parameters == nil || a.Parameters.RetryAfter != 7 {
				t.Errorf("429 without retry_after 7: %s", a.Body)
			}
		}
		if a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": 5, "text": "x"}); !a.OK {
			t.Errorf("after the failures: %s", a.Body)
		}
		fbMust(t, f, "sendMessage", map[string]any{"chat_id": 5, "text": "y"})
		ts := f.callTimes("sendMessage")
		if len(ts) != 3 || ts[1].Before(ts[0]) || ts[2].Before(ts[1]) {
			t.Errorf("callTimes = %v, want the 2 failures and the call after them", ts)
		}
		if len(f.sent(5)) != 2 || f.calls("sendMessage") != 4 {
			t.Errorf("sent %d, calls %d; want 2, 4", len(f.sent(5)), f.calls("sendMessage"))
		}
		a := fbMust(t, f, "getMe", nil)
		fbWantError(t, "injected 502", a, 502, "Bad Gateway")
		if a.Parameters != nil {
			t.Errorf("a 502 with parameters: %s", a.Body)
		}
		if a := fbMust(t, f, "getMe", nil); !a.OK {
			t.Errorf("getMe after its failure: %s", a.Body)
		}
	})

	t.Run("sendMessage", func(t *testing.T) {
		f := newFakeBotAPI(t)
		const chat = 99
		_, m := f.userMessage(chat, chat, "question")
		a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": "answer, part 1",
			"reply_parameters": map[string]any{"message_id": m}})
		var got fakeTGMessage
		json.Unmarshal(a.Result, &got)
		if !a.OK || got.MessageID <= m || got.Chat.ID != chat || got.Text != "answer, part 1" ||
			got.ReplyTo == nil || got.ReplyTo.MessageID != m || got.ReplyTo.Text != "question" || got.From == nil || !got.From.IsBot {
			t.Errorf("sendMessage answered %s", a.Body)
		}
		// The next part, without reply_parameters, sent as a form.
		resp, err := http.PostForm(f.URL()+"/bot"+f.Token()+"/sendMessage", url.Values{"chat_id": {fmt.Sprint(chat)}, "text": {"part 2"}})
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		replies, sent := f.repliesTo(chat, m), f.sent(chat)
		if len(replies) != 1 || replies[0].Text != "answer, part 1" || replies[0].ID != got.MessageID || replies[0].ReplyTo != m {
			t.Errorf("repliesTo = %+v", replies)
		}
		if len(sent) != 2 || sent[1].Text != "part 2" || sent[1].ReplyTo != 0 || sent[0].Sent.IsZero() {
			t.Errorf("sent = %+v", sent)
		}
		// The older reply_to_message_id, and a reply to nothing.
		if a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": "legacy", "reply_to_message_id": m}); !a.OK {
			t.Errorf("reply_to_message_id: %s", a.Body)
		}
		if len(f.repliesTo(chat, m)) != 2 {
			t.Errorf("reply_to_message_id not recorded: %+v", f.repliesTo(chat, m))
		}
		fbWantError(t, "a reply to nothing", fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": "x",
			"reply_parameters": map[string]any{"message_id": 424242}}), 400, "Bad Request: message to be replied not found")
		// What Telegram refuses.
		fbWantError(t, "empty text", fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": ""}), 400, "Bad Request: message text is empty")
		fbWantError(t, "4097 characters", fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": strings.Repeat("é", 4097)}), 400, "Bad Request: message is too long")
		if a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": strings.Repeat("é", 4096)}); !a.OK {
			t.Errorf("4096 characters: %s", a.Body)
		}
		for _, mode := range []string{"Markdown", "MarkdownV2"} {
			a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": "2*3 is 6", "parse_mode": mode})
			if a.Status != 400 || !strings.HasPrefix(a.Description, "Bad Request: can't parse entities") {
				t.Errorf("an unbalanced * in %s: %s", mode, a.Body)
			}
		}
		if a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": "*bold* _it_ `c*de`", "parse_mode": "Markdown"}); !a.OK {
			t.Errorf("balanced Markdown: %s", a.Body)
		}
		if a := fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": "2*3 is 6."}); !a.OK {
			t.Errorf("plain text: %s", a.Body)
		}
		if a := fbMust(t, f, "sendChatAction", map[string]any{"chat_id": chat, "action": "typing"}); !a.OK || string(a.Result) != "true" {
			t.Errorf("sendChatAction: %s", a.Body)
		}
		if f.chatActions(chat) != 1 || f.chatActions(chat+1) != 0 {
			t.Errorf("chatActions = %d", f.chatActions(chat))
		}
	})

	t.Run("editMessageText", func(t *testing.T) {
		f := newFakeBotAPI(t)
		const chat = 3
		_, m := f.userMessage(chat, chat, "q")
		var sent fakeTGMessage
		json.Unmarshal(fbMust(t, f, "sendMessage", map[string]any{"chat_id": chat, "text": "draft"}).Result, &sent)
		for _, text := range []string{"draft 2", "final"} {
			a := fbMust(t, f, "editMessageText", map[string]any{"chat_id": chat, "message_id": sent.MessageID, "text": text})
			var got fakeTGMessage
			json.Unmarshal(a.Result, &got)
			if !a.OK || got.MessageID != sent.MessageID || got.Text != text || got.EditDate == 0 {
				t.Errorf("edit to %q: %s", text, a.Body)
			}
		}
		fbWantError(t, "the same text", fbMust(t, f, "editMessageText", map[string]any{"chat_id": chat, "message_id": sent.MessageID, "text": "final"}),
			400, "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message")
		fbWantError(t, "an unknown message", fbMust(t, f, "editMessageText", map[string]any{"chat_id": chat, "message_id": 777777, "text": "x"}),
			400, "Bad Request: message to edit not found")
		fbWantError(t, "another chat", fbMust(t, f, "editMessageText", map[string]any{"chat_id": chat + 1, "message_id": sent.MessageID, "text": "x"}),
			400, "Bad Request: message to edit not found")
		fbWantError(t, "the user's message", fbMust(t, f, "editMessageText", map[string]any{"chat_id": chat, "message_id": m, "text": "x"}),
			400, "Bad Request: message can't be edited")
		got := f.sent(chat)
		if len(got) != 1 || got[0].Text != "final" || strings.Join(got[0].Edits, "|") != "draft 2|final" {
			t.Errorf("sent = %+v", got)
		}
	})

	t.Run("webhook", func(t *testing.T) {
		f := newFakeBotAPI(t)
		f.userMessage(1, 1, "queued")
		f.setWebhook("https://example.com/hook")
		a := fbMust(t, f, "getWebhookInfo", nil)
		if string(a.Result) != `{"url":"https://example.com/hook","has_custom_certificate":false,"pending_update_count":1}` {
			t.Errorf("getWebhookInfo: %s", a.Body)
		}
		for range 2 {
			fbWantError(t, "getUpdates with a webhook", fbMust(t, f, "getUpdates", map[string]any{"timeout": 50}), 409,
				"Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first")
		}
		if a := fbMust(t, f, "deleteWebhook", map[string]any{"drop_pending_updates": false}); !a.OK || string(a.Result) != "true" {
			t.Errorf("deleteWebhook: %s", a.Body)
		}
		a = fbMust(t, f, "getWebhookInfo", nil)
		if !strings.Contains(string(a.Result), `"url":""`) {
			t.Errorf("getWebhookInfo after deleteWebhook: %s", a.Body)
		}
		if ups := fbUpdates(t, fbMust(t, f, "getUpdates", nil)); len(ups) != 1 {
			t.Errorf("after deleteWebhook: %+v", ups)
		}
		f.setWebhook("https://example.com/hook")
		fbMust(t, f, "deleteWebhook", map[string]any{"drop_pending_updates": true})
		if f.pending() != 0 || f.conflicts() != 2 {
			t.Errorf("drop_pending_updates: pending %d; conflicts %d, want 2", f.pending(), f.conflicts())
		}
	})

	t.Run("down and close", func(t *testing.T) {
		f := newFakeBotAPI(t)
		p := fbStartPoll(f, map[string]any{"timeout": 50})
		if !f.waitFor(bound, f.polling) {
			t.Fatal("the getUpdates is not waiting")
		}
		f.down(true)
		if _, err := p.wait(t, bound); err == nil {
			t.Error("a waiting getUpdates got an answer from an API that is down")
		}
		if a, err := fbCall(context.Background(), f.URL(), f.Token(), "getMe", nil); err == nil {
			t.Errorf("getMe got an answer from an API that is down: %s", a.Body)
		}
		f.down(false)
		if a := fbMust(t, f, "getMe", nil); !a.OK {
			t.Errorf("getMe after down(false): %s", a.Body)
		}
		f.close()
		if _, err := fbCall(context.Background(), f.URL(), f.Token(), "getMe", nil); err == nil {
			t.Error("an answer after close")
		}
	})

	t.Run("request log", func(t *testing.T) {
		f := newFakeBotAPI(t)
		fbMust(t, f, "sendMessage", map[string]any{"chat_id": 1, "text": "logged text"})
		log := f.requestLog()
		if len(log) != 1 || !strings.HasPrefix(log[0], "POST /bot"+f.Token()+"/sendMessage ") || !strings.Contains(log[0], `"logged text"`) {
			t.Errorf("requestLog = %q", log)
		}
	})

	// The test's cleanup ends a waiting getUpdates: nothing outlives it.
	var p *fbPoll
	t.Run("cleanup", func(t *testing.T) {
		f := newFakeBotAPI(t)
		p = fbStartPoll(f, map[string]any{"timeout": 50})
		if !f.waitFor(bound, f.polling) {
			t.Fatal("the getUpdates is not waiting")
		}
	})
	if _, err := p.wait(t, bound); err == nil {
		t.Error("the getUpdates waiting at cleanup got an answer, not a hang-up")
	}
}
