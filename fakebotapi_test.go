package main

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf16"
)

// fakeBotAPI is a test double of the Telegram Bot API
// (https://core.telegram.org/bots/api) for tests that run a real `hermes
// serve` against it: it serves <URL>/bot<token>/<method> on 127.0.0.1 and
// keeps, like Telegram, a queue of updates that getUpdates hands out and an
// offset confirms (forgets for good). What the bot sends, edits and signals
// is recorded for the test to inspect; faults are injected on demand (a
// wrong token, 429 with retry_after, 5xx, another instance polling, a
// webhook in the way, an unreachable API).
//
// Every answer is Telegram's envelope: {"ok":true,"result":...} or
// {"ok":false,"error_code":N,"description":"..."} with the HTTP status N
// (and "parameters":{"retry_after":S} for a 429). Parameters come as a
// JSON body (what hermes sends), a form body or the query string. Method
// names are case-insensitive, as on Telegram.
//
// Ids: update_id counts up from 500001 and message_id from 1001, one
// counter for every chat and for both directions, so the two kinds of id
// never look alike and a message id names one message.
//
// Everything is safe for concurrent use. A test waits for the fake with
// waitFor, which wakes at each change, never by polling or sleeping.
type fakeBotAPI struct {
	srv       *httptest.Server
	botID     int64
	closeOnce sync.Once

	mu         sync.Mutex
	changed    chan struct{} // closed (and replaced) at every change below
	closed     bool          // close was called: every request is hung up on
	token      string        // the token the path must carry
	webhook    string        // the webhook URL set, "" for none
	isDown     bool          // down(true): every request is hung up on
	conflictOn bool          // conflict(true): every getUpdates gets a 409

	nextUpdateID  int64
	nextMessageID int64
	queue         []fakeTGUpdate // not confirmed yet, update_id ascending
	confirmed     int64          // the highest offset a getUpdates confirmed
	poll          *fakePoll      // the getUpdates waiting for an update, if any

	userMsgs map[int64]fakeTGMessage // what users sent, by message_id
	botMsgs  []*botMessage           // what the bot sent, in order
	botByID  map[int64]*botMessage   // the same, by message_id
	actions  map[int64]int           // sendChatAction calls, by chat_id

	nCalls     map[string]int           // requests received, by method
	nConflicts int                      // 409s sent, for any reason
	failures   map[string][]fakeFailure // failNext's failures still to come
	times      map[string][]time.Time   // see callTimes
	arrivals   map[string][]time.Time   // every call of each method, in order
	timeNext   map[string]bool          // the next call of the method follows injected failures
	log        []string                 // every request: method, URI, body
}

// botMessage is a message the bot sent, as the fake holds it.
type botMessage struct {
	ID, ChatID int64
	ReplyTo    int64 // the message_id it replies to; 0 for none
	Text       string
	// Edits are the texts successful editMessageText calls set, in order:
	// the sent text is not among them, and the last one is Text.
	Edits []string
	Sent  time.Time
}

// fakePoll is one getUpdates waiting for an update.
type fakePoll struct {
	superseded bool // a newer getUpdates (or another instance) ended it
}

// fakeFailure is one answer failNext put in the way of a method.
type fakeFailure struct {
	status, retryAfter int
}

// The Bot API's objects, as much of them as the fake sends.
type (
	fakeTGUser struct {
		ID        int64  `json:"id"`
		IsBot     bool   `json:"is_bot"`
		FirstName string `json:"first_name"`
		Username  string `json:"username,omitempty"`
	}
	fakeTGChat struct {
		ID   int64  `json:"id"`
		Type string `json:"type"`
	}
	fakeTGMessage struct {
		MessageID int64          `json:"message_id"`
		From      *fakeTGUser    `json:"from,omitempty"`
		Chat      fakeTGChat     `json:"chat"`
		Date      int64          `json:"date"`
		EditDate  int64          `json:"edit_date,omitempty"`
		ReplyTo   *fakeTGMessage `json:"reply_to_message,omitempty"`
		Text      string         `json:"text"`
	}
	fakeTGUpdate struct {
		UpdateID int64          `json:"update_id"`
		Message  *fakeTGMessage `json:"message,omitempty"`
	}
)

// The Bot API's error descriptions the fake sends, word for word.
const (
	tgTerminated   = "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
	tgWebhookOn    = "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
	tgNotModified  = "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
	tgEmptyText    = "Bad Request: message text is empty"
	tgTooLong      = "Bad Request: message is too long"
	tgEditTooLong  = "Bad Request: MESSAGE_TOO_LONG"
	tgEditNotFound = "Bad Request: message to edit not found"
	tgCantEdit     = "Bad Request: message can't be edited"
	tgReplyMissing = "Bad Request: message to be replied not found"
	tgNoChat       = "Bad Request: chat not found"
	tgMaxText      = 4096 // UTF-16 code units in one message: the stricter of the two ways Telegram's limit is reported to count (see maxMessage)
)

// fakeTGMethods maps each method the fake serves, lower-cased, to its name.
var fakeTGMethods = map[string]string{}

func init() {
	for _, m := range []string{"getMe", "getUpdates", "getWebhookInfo", "setWebhook", "deleteWebhook",
		"sendMessage", "editMessageText", "sendChatAction"} {
		fakeTGMethods[strings.ToLower(m)] = m
	}
}

// newFakeBotAPI starts a fake with a token of a real token's shape
// (<bot id>:<secret>), so a test that looks for the token in logs looks for
// something that could be one. The test's cleanup ends every waiting
// getUpdates and closes the server.
func newFakeBotAPI(t *testing.T) *fakeBotAPI {
	t.Helper()
	secret := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	f := &fakeBotAPI{
		botID:         123456,
		changed:       make(chan struct{}),
		token:         "123456:TEST-" + hex.EncodeToString(secret),
		nextUpdateID:  500001,
		nextMessageID: 1001,
		userMsgs:      map[int64]fakeTGMessage{},
		botByID:       map[int64]*botMessage{},
		actions:       map[int64]int{},
		nCalls:        map[string]int{},
		failures:      map[string][]fakeFailure{},
		times:         map[string][]time.Time{},
		arrivals:      map[string][]time.Time{},
		timeNext:      map[string]bool{},
	}
	f.srv = httptest.NewServer(f) // 127.0.0.1:0
	t.Cleanup(f.close)
	return f
}

// URL is the API base to give hermes: no trailing slash, no token.
func (f *fakeBotAPI) URL() string { return f.srv.URL }

// Token is the token the fake accepts now.
func (f *fakeBotAPI) Token() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.token
}

// setToken makes tok the only token the fake accepts (the old one gets 401
// from now on): a token revoked and replaced in BotFather.
func (f *fakeBotAPI) setToken(tok string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.token = tok
	f.changedLocked()
}

// setWebhook sets a webhook, as if someone had called setWebhook with this
// token: getUpdates answers 409 until it is deleted. "" deletes it.
func (f *fakeBotAPI) setWebhook(url string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.webhook = url
	f.changedLocked()
}

// conflict(true) plays another instance of the bot polling elsewhere: a
// waiting getUpdates ends with 409 at once, and so does every getUpdates
// until conflict(false).
func (f *fakeBotAPI) conflict(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.conflictOn = on
	if on {
		f.supersedeLocked()
	}
	f.changedLocked()
}

// down(true) makes the API unreachable: every request, the waiting
// getUpdates included, has its connection closed without an answer, until
// down(false).
func (f *fakeBotAPI) down(on bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.isDown = on
	f.changedLocked()
}

// failNext makes the next n calls of method (with the right token) fail
// with status: 429 carries parameters.retry_after = retryAfter seconds,
// any other status the status's text as its description. The calls fail
// without any other effect. callTimes records when they came, and when the
// call after them came.
func (f *fakeBotAPI) failNext(method string, n int, status int, retryAfter int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		f.failures[method] = append(f.failures[method], fakeFailure{status, retryAfter})
	}
}

// close ends every waiting getUpdates (hung up on) and stops the server:
// from then on the API refuses connections. The test's cleanup calls it.
func (f *fakeBotAPI) close() {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		f.closed = true
		f.changedLocked()
		f.mu.Unlock()
		f.srv.Close() // waits for the handlers, which all end now
	})
}

// userMessage queues the update of a user's text message, as Telegram
// would on a message to the bot, and wakes the waiting getUpdates. A chat
// id below zero is a group chat, any other a private one.
func (f *fakeBotAPI) userMessage(fromUserID, chatID int64, text string) (updateID, messageID int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	chat := fakeTGChat{ID: chatID, Type: "private"}
	if chatID < 0 {
		chat.Type = "group"
	}
	m := fakeTGMessage{
		MessageID: f.nextMessageID,
		From:      &fakeTGUser{ID: fromUserID, FirstName: "u"},
		Chat:      chat,
		Date:      time.Now().Unix(),
		Text:      text,
	}
	f.nextMessageID++
	u := fakeTGUpdate{UpdateID: f.nextUpdateID, Message: &m}
	f.nextUpdateID++
	f.userMsgs[m.MessageID] = m
	f.queue = append(f.queue, u)
	f.changedLocked()
	return u.UpdateID, m.MessageID
}

// sent is every message the bot sent to chatID, in order.
func (f *fakeBotAPI) sent(chatID int64) []botMessage {
	return f.botMessages(func(m *botMessage) bool { return m.ChatID == chatID })
}

// repliesTo is every message the bot sent to chatID as a reply to message
// messageID, in order. (The later parts of a split reply, sent without
// reply_parameters, are in sent, not here.)
func (f *fakeBotAPI) repliesTo(chatID, messageID int64) []botMessage {
	return f.botMessages(func(m *botMessage) bool { return m.ChatID == chatID && m.ReplyTo == messageID })
}

func (f *fakeBotAPI) botMessages(keep func(*botMessage) bool) []botMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []botMessage
	for _, m := range f.botMsgs {
		if keep(m) {
			c := *m
			c.Edits = append([]string(nil), m.Edits...)
			out = append(out, c)
		}
	}
	return out
}

// chatActions is how many sendChatAction calls chatID got.
func (f *fakeBotAPI) chatActions(chatID int64) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.actions[chatID]
}

// calls is how many requests for method arrived (any outcome, a wrong
// token, an injected failure and a hang-up included).
func (f *fakeBotAPI) calls(method string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nCalls[method]
}

// callArrivals is when every call of method arrived, in order.
func (f *fakeBotAPI) callArrivals(method string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.arrivals[method]...)
}

// callTimes is when the injected failures of method arrived and, after
// each run of them, when the next call arrived, in order: the gap before
// that call is the wait the client chose after the last failure.
func (f *fakeBotAPI) callTimes(method string) []time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Time(nil), f.times[method]...)
}

// conflicts is how many 409s the fake sent, for any reason.
func (f *fakeBotAPI) conflicts() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.nConflicts
}

// offsetConfirmed is the highest offset a getUpdates confirmed (0 if none):
// every update below it is forgotten.
func (f *fakeBotAPI) offsetConfirmed() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.confirmed
}

// pending is how many updates are not confirmed yet.
func (f *fakeBotAPI) pending() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.queue)
}

// polling reports whether a getUpdates is waiting for an update now.
func (f *fakeBotAPI) polling() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.poll != nil
}

// requestLog is every request received, one line each: HTTP method, URI
// (path and query) and body.
func (f *fakeBotAPI) requestLog() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.log...)
}

// waitFor waits until cond holds, checking it again at each change of the
// fake (a request, an update, a setting), and reports whether it held
// within the timeout. cond may call the fake's methods.
func (f *fakeBotAPI) waitFor(timeout time.Duration, cond func() bool) bool {
	t := time.NewTimer(timeout)
	defer t.Stop()
	for {
		f.mu.Lock()
		ch, closed := f.changed, f.closed
		f.mu.Unlock()
		// ch is taken before cond runs: a change while it runs closes ch.
		if cond() {
			return true
		}
		if closed {
			return false // nothing changes any more
		}
		select {
		case <-ch:
		case <-t.C:
			return cond()
		}
	}
}

// changedLocked wakes everyone waiting for a change: waitFor and the
// waiting getUpdates. f.mu is held.
func (f *fakeBotAPI) changedLocked() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// supersedeLocked ends the waiting getUpdates, if any, with a 409.
func (f *fakeBotAPI) supersedeLocked() {
	if f.poll != nil {
		f.poll.superseded = true
		f.poll = nil
		f.changedLocked()
	}
}

// ServeHTTP serves <URL>/bot<token>/<method>.
func (f *fakeBotAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	token, name, pathOK := strings.Cut(strings.TrimPrefix(r.URL.Path, "/bot"), "/")
	pathOK = pathOK && strings.HasPrefix(r.URL.Path, "/bot") && !strings.Contains(name, "/")
	method, known := fakeTGMethods[strings.ToLower(name)]
	if !known {
		method = name
	}

	f.mu.Lock()
	f.log = append(f.log, r.Method+" "+r.URL.RequestURI()+" "+string(body))
	if pathOK {
		f.nCalls[method]++
		f.arrivals[method] = append(f.arrivals[method], arrived)
	}
	hangUp := f.isDown || f.closed
	tokenOK := token == f.token
	var fail *fakeFailure
	if hangUp || !pathOK || !tokenOK || !known {
		// none of failNext's business
	} else if q := f.failures[method]; len(q) > 0 {
		fail = new(q[0])
		f.failures[method] = q[1:]
		f.times[method] = append(f.times[method], arrived)
		f.timeNext[method] = true
	} else if f.timeNext[method] {
		f.times[method] = append(f.times[method], arrived)
		delete(f.timeNext, method)
	}
	f.changedLocked()
	f.mu.Unlock()

	switch {
	case hangUp:
		hangUpOn(w)
		return
	case !pathOK:
		f.replyError(w, http.StatusNotFound, "Not Found", 0)
		return
	case !tokenOK:
		f.replyError(w, http.StatusUnauthorized, "Unauthorized", 0)
		return
	case !known:
		f.replyError(w, http.StatusNotFound, "Not Found", 0)
		return
	case fail != nil:
		desc := http.StatusText(fail.status)
		if fail.status == http.StatusTooManyRequests {
			desc = fmt.Sprintf("Too Many Requests: retry after %d", fail.retryAfter)
		}
		f.replyError(w, fail.status, desc, fail.retryAfter)
		return
	}
	p, err := fakeTGParams(r, body)
	if err != nil {
		f.replyError(w, http.StatusBadRequest, "Bad Request: "+err.Error(), 0)
		return
	}
	switch method {
	case "getMe":
		replyOK(w, fakeTGUser{ID: f.botID, IsBot: true, FirstName: "fakebot", Username: "fake_bot"})
	case "getUpdates":
		f.getUpdates(w, r, p)
	case "getWebhookInfo":
		f.mu.Lock()
		info := struct {
			URL          string `json:"url"`
			CustomCert   bool   `json:"has_custom_certificate"`
			PendingCount int    `json:"pending_update_count"`
		}{f.webhook, false, len(f.queue)}
		f.mu.Unlock()
		replyOK(w, info)
	case "setWebhook", "deleteWebhook":
		f.mu.Lock()
		f.webhook = p["url"] // deleteWebhook has none: ""
		if p["drop_pending_updates"] == "true" {
			f.queue = nil
		}
		f.changedLocked()
		f.mu.Unlock()
		replyOK(w, true)
	case "sendMessage":
		f.sendMessage(w, p)
	case "editMessageText":
		f.editMessageText(w, p)
	case "sendChatAction":
		f.sendChatAction(w, p)
	}
}

// getUpdates confirms every update below offset, then answers the queued
// ones (at most limit), waiting up to timeout seconds for one if there are
// none. It ends a getUpdates still waiting with a 409, as Telegram does, and
// is itself ended the same way by a newer one or by conflict(true).
func (f *fakeBotAPI) getUpdates(w http.ResponseWriter, r *http.Request, p fakeParams) {
	offset, err1 := p.int64("offset")
	limit, err2 := p.int64("limit")
	timeout, err3 := p.int64("timeout")
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			f.replyError(w, http.StatusBadRequest, "Bad Request: "+err.Error(), 0)
			return
		}
	}
	if limit <= 0 || limit > 100 {
		limit = 100
	}
	f.mu.Lock()
	switch {
	case f.webhook != "":
		f.mu.Unlock()
		f.replyError(w, http.StatusConflict, tgWebhookOn, 0)
		return
	case f.conflictOn:
		f.mu.Unlock()
		f.replyError(w, http.StatusConflict, tgTerminated, 0)
		return
	}
	f.supersedeLocked()
	f.confirmLocked(offset)

	me := &fakePoll{}
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(time.Duration(timeout) * time.Second)
		defer t.Stop()
		expired = t.C
	}
	for {
		// f.mu is held here.
		switch {
		case f.closed || f.isDown:
			f.unpollLocked(me)
			f.mu.Unlock()
			hangUpOn(w)
			return
		case me.superseded:
			f.mu.Unlock()
			f.replyError(w, http.StatusConflict, tgTerminated, 0)
			return
		case f.webhook != "":
			f.unpollLocked(me)
			f.mu.Unlock()
			f.replyError(w, http.StatusConflict, tgWebhookOn, 0)
			return
		}
		ups := append([]fakeTGUpdate{}, f.queue[:min(int(limit), len(f.queue))]...)
		if len(ups) > 0 || expired == nil {
			f.unpollLocked(me)
			f.mu.Unlock()
			replyOK(w, ups)
			return
		}
		if f.poll != me {
			f.poll = me
			f.changedLocked()
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-expired:
			expired = nil // one more look, then the answer
		case <-r.Context().Done():
			// The client went away: the wait ends without a trace.
			f.mu.Lock()
			f.unpollLocked(me)
			f.mu.Unlock()
			return
		}
		f.mu.Lock()
	}
}

// confirmLocked forgets the updates a getUpdates offset confirms: those
// below a positive offset; all but the last -offset for a negative one.
func (f *fakeBotAPI) confirmLocked(offset int64) {
	switch {
	case offset == 0:
		return
	case offset < 0:
		if drop := len(f.queue) + int(offset); drop > 0 {
			f.queue = f.queue[drop:]
		}
		if len(f.queue) > 0 {
			offset = f.queue[0].UpdateID
		} else {
			offset = f.nextUpdateID
		}
	default:
		i := 0
		for i < len(f.queue) && f.queue[i].UpdateID < offset {
			i++
		}
		f.queue = f.queue[i:]
	}
	f.confirmed = max(f.confirmed, offset)
	f.changedLocked()
}

// unpollLocked unregisters me as the waiting getUpdates, if it still is.
func (f *fakeBotAPI) unpollLocked(me *fakePoll) {
	if f.poll == me {
		f.poll = nil
		f.changedLocked()
	}
}

// checkText answers the Bot API's error for a message text it refuses
// (empty, longer than tgMaxText: tooLong, bad entities) and reports false.
func (f *fakeBotAPI) checkText(w http.ResponseWriter, p fakeParams, tooLong string) (string, bool) {
	text := p["text"]
	desc := ""
	switch {
	case text == "":
		desc = tgEmptyText
	case len(utf16.Encode([]rune(text))) > tgMaxText:
		desc = tooLong
	default:
		desc = fakeTGParseEntities(p["parse_mode"], text)
	}
	if desc != "" {
		f.replyError(w, http.StatusBadRequest, desc, 0)
		return "", false
	}
	return text, true
}

func (f *fakeBotAPI) sendMessage(w http.ResponseWriter, p fakeParams) {
	chatID, err := p.int64("chat_id")
	if err != nil || chatID == 0 {
		f.replyError(w, http.StatusBadRequest, tgNoChat, 0)
		return
	}
	text, ok := f.checkText(w, p, tgTooLong)
	if !ok {
		return
	}
	// reply_parameters (Bot API 7.0) or the older reply_to_message_id.
	var rp struct {
		MessageID                int64 `json:"message_id"`
		AllowSendingWithoutReply bool  `json:"allow_sending_without_reply"`
	}
	if s := p["reply_parameters"]; s != "" {
		if err := json.Unmarshal([]byte(s), &rp); err != nil {
			f.replyError(w, http.StatusBadRequest, "Bad Request: can't parse reply parameters JSON object", 0)
			return
		}
	} else {
		if rp.MessageID, err = p.int64("reply_to_message_id"); err != nil {
			f.replyError(w, http.StatusBadRequest, "Bad Request: "+err.Error(), 0)
			return
		}
		rp.AllowSendingWithoutReply = p["allow_sending_without_reply"] == "true"
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if rp.MessageID != 0 {
		if _, ok := f.messageLocked(chatID, rp.MessageID); !ok {
			if !rp.AllowSendingWithoutReply {
				replyTGError(w, http.StatusBadRequest, tgReplyMissing, 0)
				return
			}
			rp.MessageID = 0 // sent as a plain message
		}
	}
	m := &botMessage{ID: f.nextMessageID, ChatID: chatID, ReplyTo: rp.MessageID, Text: text, Sent: time.Now()}
	f.nextMessageID++
	f.botMsgs = append(f.botMsgs, m)
	f.botByID[m.ID] = m
	f.changedLocked()
	replyOK(w, f.botMessageJSONLocked(m))
}

func (f *fakeBotAPI) editMessageText(w http.ResponseWriter, p fakeParams) {
	if p["inline_message_id"] != "" {
		f.replyError(w, http.StatusBadRequest, tgEditNotFound, 0)
		return
	}
	chatID, err := p.int64("chat_id")
	if err != nil || chatID == 0 {
		f.replyError(w, http.StatusBadRequest, tgNoChat, 0)
		return
	}
	id, err := p.int64("message_id")
	if err != nil || id == 0 {
		f.replyError(w, http.StatusBadRequest, tgEditNotFound, 0)
		return
	}
	text, ok := f.checkText(w, p, tgEditTooLong)
	if !ok {
		return
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	m, ok := f.botByID[id]
	switch {
	case ok && m.ChatID == chatID:
	case f.userMsgs[id].Chat.ID == chatID:
		replyTGError(w, http.StatusBadRequest, tgCantEdit, 0) // not the bot's own
		return
	default:
		replyTGError(w, http.StatusBadRequest, tgEditNotFound, 0)
		return
	}
	if m.Text == text {
		replyTGError(w, http.StatusBadRequest, tgNotModified, 0)
		return
	}
	m.Text = text
	m.Edits = append(m.Edits, text)
	f.changedLocked()
	out := f.botMessageJSONLocked(m)
	out.EditDate = time.Now().Unix()
	replyOK(w, out)
}

// fakeTGActions are the chat actions the Bot API knows.
var fakeTGActions = map[string]bool{
	"typing": true, "upload_photo": true, "record_video": true, "upload_video": true,
	"record_voice": true, "upload_voice": true, "upload_document": true, "choose_sticker": true,
	"find_location": true, "record_video_note": true, "upload_video_note": true,
}

func (f *fakeBotAPI) sendChatAction(w http.ResponseWriter, p fakeParams) {
	chatID, err := p.int64("chat_id")
	if err != nil || chatID == 0 {
		f.replyError(w, http.StatusBadRequest, tgNoChat, 0)
		return
	}
	if !fakeTGActions[p["action"]] {
		f.replyError(w, http.StatusBadRequest, "Bad Request: wrong parameter action in request", 0)
		return
	}
	f.mu.Lock()
	f.actions[chatID]++
	f.changedLocked()
	f.mu.Unlock()
	replyOK(w, true)
}

// messageLocked is message id in chatID, whoever sent it, as the Bot API
// shows it.
func (f *fakeBotAPI) messageLocked(chatID, id int64) (fakeTGMessage, bool) {
	if m, ok := f.userMsgs[id]; ok && m.Chat.ID == chatID {
		return m, true
	}
	if m, ok := f.botByID[id]; ok && m.ChatID == chatID {
		return f.botMessageJSONLocked(m), true
	}
	return fakeTGMessage{}, false
}

// botMessageJSONLocked is m as the Bot API shows it: from the bot, with the
// message it replies to (one level deep, as Telegram does).
func (f *fakeBotAPI) botMessageJSONLocked(m *botMessage) fakeTGMessage {
	chat := fakeTGChat{ID: m.ChatID, Type: "private"}
	if m.ChatID < 0 {
		chat.Type = "group"
	}
	out := fakeTGMessage{
		MessageID: m.ID,
		From:      &fakeTGUser{ID: f.botID, IsBot: true, FirstName: "fakebot", Username: "fake_bot"},
		Chat:      chat,
		Date:      m.Sent.Unix(),
		Text:      m.Text,
	}
	if m.ReplyTo != 0 {
		if orig, ok := f.messageLocked(m.ChatID, m.ReplyTo); ok {
			orig.ReplyTo = nil
			out.ReplyTo = &orig
		}
	}
	return out
}

// fakeTGParseEntities is the description of the 400 Telegram answers when
// text does not parse in parse_mode, "" when it does. The check is partial
// but never wrong about what it rejects: an unclosed *, _ or ` (Markdown,
// MarkdownV2) and, in MarkdownV2, a reserved character not escaped. HTML is
// accepted as it is. So a text like "2*3 is 6." passes only as plain text.
func fakeTGParseEntities(mode, text string) string {
	v2 := strings.EqualFold(mode, "MarkdownV2")
	switch {
	case mode == "", strings.EqualFold(mode, "HTML"):
		return ""
	case v2, strings.EqualFold(mode, "Markdown"):
	default:
		return "Bad Request: unsupported parse_mode"
	}
	open := map[byte]int{} // an open entity's mark → the byte offset it starts at
	for i := 0; i < len(text); i++ {
		c := text[i]
		_, inCode := open['`']
		switch {
		case c == '\\':
			i++ // the next character is literal
		case c == '`' || !inCode && (c == '*' || c == '_'):
			if _, ok := open[c]; ok {
				delete(open, c)
			} else {
				open[c] = i
			}
		case v2 && !inCode && strings.IndexByte(".!-=+#{}", c) >= 0:
			return fmt.Sprintf("Bad Request: can't parse entities: Character '%c' is reserved and must be escaped with the preceding '\\'", c)
		}
	}
	first := -1
	for _, at := range open {
		if first < 0 || at < first {
			first = at
		}
	}
	if first >= 0 {
		return fmt.Sprintf("Bad Request: can't parse entities: Can't find end of the entity starting at byte offset %d", first)
	}
	return ""
}

// fakeTGParams gathers a request's parameters from the query string and
// the body: JSON, urlencoded or multipart, as the Bot API takes them.
func fakeTGParams(r *http.Request, body []byte) (fakeParams, error) {
	p := fakeParams{}
	for k, v := range r.URL.Query() {
		p[k] = v[0]
	}
	if len(body) == 0 {
		return p, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch ct {
	case "application/json":
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(body, &obj); err != nil {
			return nil, fmt.Errorf("can't parse JSON object")
		}
		for k, raw := range obj {
			var s string
			switch {
			case string(raw) == "null":
				delete(p, k)
			case json.Unmarshal(raw, &s) == nil:
				p[k] = s
			default:
				p[k] = string(raw)
			}
		}
	case "application/x-www-form-urlencoded", "multipart/form-data":
		r.Body = io.NopCloser(bytes.NewReader(body))
		if err := r.ParseMultipartForm(1 << 20); err != nil && err != http.ErrNotMultipart {
			return nil, fmt.Errorf("can't parse request body")
		}
		for k, v := range r.PostForm {
			p[k] = v[0]
		}
	}
	return p, nil
}

// fakeParams is a request's parameters, each as text: a JSON string as its
// value, any other JSON value (a number, true, an object) as its JSON.
type fakeParams map[string]string

// int64 is parameter name as an integer, 0 when absent.
func (p fakeParams) int64(name string) (int64, error) {
	s := p[name]
	if s == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid %s specified", name)
	}
	return n, nil
}

// replyOK answers {"ok":true,"result":result}.
func replyOK(w http.ResponseWriter, result any) {
	b, err := json.Marshal(struct {
		OK     bool `json:"ok"`
		Result any  `json:"result"`
	}{true, result})
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(b)
}

// replyError answers the Bot API's error envelope, counting the 409s.
func (f *fakeBotAPI) replyError(w http.ResponseWriter, code int, desc string, retryAfter int) {
	if code == http.StatusConflict {
		f.mu.Lock()
		f.nConflicts++
		f.changedLocked()
		f.mu.Unlock()
	}
	replyTGError(w, code, desc, retryAfter)
}

// replyTGError answers {"ok":false,...} with HTTP status code, and
// parameters.retry_after for a 429.
func replyTGError(w http.ResponseWriter, code int, desc string, retryAfter int) {
	type parameters struct {
		RetryAfter int `json:"retry_after"`
	}
	e := struct {
		OK          bool        `json:"ok"`
		ErrorCode   int         `json:"error_code"`
		Description string      `json:"description"`
		Parameters  *parameters `json:"parameters,omitempty"`
	}{false, code, desc, nil}
	if code == http.StatusTooManyRequests {
		e.Parameters = &parameters{retryAfter}
	}
	b, _ := json.Marshal(e)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(b)
}

// hangUpOn closes the request's connection without an answer: an API that
// cannot be reached (or a proxy that gave up).
func hangUpOn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if conn, _, err := hj.Hijack(); err == nil {
			conn.Close()
			return
		}
	}
	panic(http.ErrAbortHandler) // the server closes the connection, answering nothing
}
