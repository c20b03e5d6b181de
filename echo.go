package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// The built-in echo upstream: an OpenAI-compatible POST /v1/chat/completions
// that streams the last user message back one word per echo.word_delay, so a
// new user can try streaming, drain and restart with no key and no network.

type chatMessage struct {
	Role    string          `json:"role"`
	Content json.RawMessage `json:"content"`
}

type chatRequest struct {
	Model    string        `json:"model"`
	Messages []chatMessage `json:"messages"`
	Stream   bool          `json:"stream"`
}

// text returns a message's text: content is a string or an array of parts.
func (m chatMessage) text() (string, error) {
	var s string
	if err := json.Unmarshal(m.Content, &s); err == nil {
		return s, nil
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(m.Content, &parts); err != nil {
		return "", fmt.Errorf("content must be a string or an array of content parts")
	}
	var b strings.Builder
	for _, p := range parts {
		if p.Type == "text" {
			b.WriteString(p.Text)
			b.WriteByte(' ')
		}
	}
	return b.String(), nil
}

// writeAPIError writes an OpenAI-style error body.
func writeAPIError(w http.ResponseWriter, status int, typ, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"message": msg, "type": typ, "code": code, "param": nil,
	}})
}

// serveEcho is the echo upstream. It returns when the answer is complete or
// r's context ends (client gone, or the drain cut the session).
//
// The functions on the stack while the answer streams keep small frames,
// and what runs once (reading and checking the request) is in functions of
// their own that have returned by then: see serveSession.
//
// With d ([reattach]), a stream is read from an echoReader on d's context
// and relayed as any upstream's is (relayStream): its client may leave
// and come back.
func (g *gateway) serveEcho(w *responseRecorder, r *http.Request, wordDelay time.Duration, d *detachable) {
	e := startEcho(w, r, wordDelay)
	if e == nil {
		return
	}
	if d != nil && e.stream {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		g.relayStream(w, r, &echoReader{e: e, first: true}, d)
		return
	}
	e.run()
	e.stop()
}

// echoReader is an echo stream as an upstream's body: each read returns
// the next word's chunk, once its delay has passed. The delay is waited
// out in waitData (dataWaiter), before the reader takes a buffer: a
// stream waiting for its next word holds none.
type echoReader struct {
	e              *echoAnswer
	started, ended bool
	first          bool
	word           string // the next word, once waited for
	waited         bool   // word's delay has passed (or the wait failed: cut)
	cut            bool
	pooled         *[]byte
	out            []byte
}

// waitData waits out the next word's delay.
func (x *echoReader) waitData() {
	if len(x.out) > 0 || !x.started || x.ended || x.waited {
		return
	}
	x.word = x.e.next()
	x.waited = true
	if x.word != "" && !x.e.wait(x.first) {
		x.cut = true
	}
}

func (x *echoReader) Read(p []byte) (int, error) {
	if len(x.out) == 0 {
		x.free()
		if x.started && !x.ended {
			x.waitData() // a caller that did not wait
		}
		var b *[]byte
		switch {
		case x.ended:
			return 0, io.EOF
		case !x.started:
			x.started = true
			b = x.e.startChunk()
		case x.cut:
			return 0, context.Cause(x.e.ctx)
		case x.word == "":
			x.ended = true
			b = x.e.endChunk()
		default:
			b = x.e.wordChunk(x.word, x.first)
			x.first = false
		}
		x.waited = false
		x.pooled, x.out = b, *b
	}
	n := copy(p, x.out)
	x.out = x.out[n:]
	if len(x.out) == 0 {
		x.free() // a stream waiting for its next word holds no chunk
	}
	return n, nil
}

// detach has the echo wait on ctx, not on the client's connection, and
// lets go of the client's answer (the reader never writes to it): a
// stream the client left must not keep its connection's buffers.
func (x *echoReader) detach(ctx context.Context) bool {
	x.e.ctx, x.e.w, x.e.rc = ctx, nil, nil
	return true
}

func (x *echoReader) free() {
	if x.pooled != nil {
		chunkPool.Put(x.pooled)
		x.pooled = nil
	}
}

func (x *echoReader) Close() error {
	x.free()
	x.e.stop()
	return nil
}

// echoAnswer is one echo answer in progress.
type echoAnswer struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	ctx     context.Context
	id      string
	created int64
	model   string
	stream  bool
	text    string // the user's message
	rest    string // what is still to be said of it
	delay   time.Duration
	t       *time.Timer // one timer for the whole answer
}

// startEcho reads and checks an echo request. On a bad request it writes
// the error answer and returns nil.
//
//go:noinline
func startEcho(w http.ResponseWriter, r *http.Request, delay time.Duration) *echoAnswer {
	if r.URL.Path != "/v1/chat/completions" {
		writeAPIError(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
			fmt.Sprintf("the built-in echo upstream serves POST /v1/chat/completions only, not %s (set gateway.upstream for a real API)", r.URL.Path))
		return nil
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "use POST")
		return nil
	}
	body, pooled, err := readBody(w, r, 1<<20)
	if err != nil {
		writeClientBodyError(w, clientBodyErr(err).(*clientBodyError))
		return nil
	}
	ask := decodeEcho(body)
	putBuf(pooled)
	if ask.code != "" {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", ask.code, ask.text)
		return nil
	}
	e := &echoAnswer{w: w, ctx: r.Context(), id: "chatcmpl-" + newID(), created: time.Now().Unix(),
		model: ask.model, stream: ask.stream, text: ask.text, rest: ask.text, delay: delay}
	if delay > 0 {
		e.t = time.NewTimer(delay)
	}
	if e.stream {
		e.rc = http.NewResponseController(w)
	}
	return e
}

// echoAsk is a decoded echo request: the text to say back, the model to
// name and whether to stream; or, when code is set, why it is refused
// (text is then the message).
type echoAsk struct {
	model, text, code string
	stream            bool
}

// decodeEcho decodes an echo request's body.
func decodeEcho(body []byte) echoAsk {
	var req chatRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return echoAsk{code: "invalid_json", text: "the request body is not valid JSON: " + err.Error()}
	}
	if len(req.Messages) == 0 {
		return echoAsk{code: "missing_messages", text: "messages must be a non-empty array"}
	}
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role != "user" {
			continue
		}
		t, err := req.Messages[i].text()
		if err != nil {
			return echoAsk{code: "invalid_content", text: fmt.Sprintf("messages[%d]: %v", i, err)}
		}
		ask := echoAsk{model: req.Model, text: t, stream: req.Stream}
		if ask.model == "" {
			ask.model = "hermes-echo"
		}
		return ask
	}
	return echoAsk{code: "missing_user_message", text: "messages has no message with role \"user\" to echo"}
}

// run says the message back, a word at a time, as a stream or whole.
func (e *echoAnswer) run() {
	if !e.stream {
		for first := true; e.next() != ""; first = false {
			if !e.wait(first) {
				return
			}
		}
		echoWhole(e.w, e.id, e.created, e.model, strings.Fields(e.text))
		return
	}
	if e.start() != nil {
		return
	}
	for first := true; ; first = false {
		word := e.next()
		if word == "" {
			break
		}
		if !e.wait(first) || e.word(word, first) != nil {
			return
		}
	}
	e.end()
}

// next takes the next word of what is still to be said ("" at the end),
// with the words split as strings.Fields splits them.
func (e *echoAnswer) next() string {
	s := strings.TrimLeftFunc(e.rest, unicode.IsSpace)
	i := strings.IndexFunc(s, unicode.IsSpace)
	if i < 0 {
		e.rest = ""
		return s
	}
	e.rest = s[i:]
	return s[:i]
}

func (e *echoAnswer) stop() {
	if e.t != nil {
		e.t.Stop()
	}
}

// wait waits one word's delay; false when the session ended meanwhile.
func (e *echoAnswer) wait(first bool) bool {
	if e.t == nil {
		return e.ctx.Err() == nil
	}
	if !first {
		e.t.Reset(e.delay)
	}
	select {
	case <-e.t.C:
		return true
	case <-e.ctx.Done():
		return false
	}
}

//go:noinline
func (e *echoAnswer) start() error {
	e.w.Header().Set("Content-Type", "text/event-stream")
	e.w.Header().Set("Cache-Control", "no-cache")
	e.w.WriteHeader(http.StatusOK)
	return e.send(e.startChunk())
}

func (e *echoAnswer) startChunk() *[]byte {
	b := e.chunk()
	*b = append(*b, `{"role":"assistant","content":""},"finish_reason":null}]}`+"\n\n"...)
	return b
}

func (e *echoAnswer) word(word string, first bool) error { return e.send(e.wordChunk(word, first)) }

func (e *echoAnswer) wordChunk(word string, first bool) *[]byte {
	b := e.chunk()
	*b = append(*b, `{"content":"`...)
	if !first {
		*b = append(*b, ' ')
	}
	*b = append(appendJSONChars(*b, word), `"},"finish_reason":null}]}`+"\n\n"...)
	return b
}

//go:noinline
func (e *echoAnswer) end() { e.send(e.endChunk()) }

func (e *echoAnswer) endChunk() *[]byte {
	b := e.chunk()
	*b = append(*b, `{},"finish_reason":"stop"}]}`+"\n\ndata: [DONE]\n\n"...)
	return b
}

// chunk starts a chunk of the stream in a pooled buffer: a stream that
// waits between words holds no buffer of its own.
func (e *echoAnswer) chunk() *[]byte {
	b := chunkPool.Get().(*[]byte)
	*b = appendJSONString(append((*b)[:0], `data: {"id":`...), e.id)
	*b = append(*b, `,"object":"chat.completion.chunk","created":`...)
	*b = strconv.AppendInt(*b, e.created, 10)
	*b = append(*b, `,"model":`...)
	*b = appendJSONString(*b, e.model)
	*b = append(*b, `,"choices":[{"index":0,"delta":`...)
	return b
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// send writes and flushes a chunk and gives its buffer back.
func (e *echoAnswer) send(b *[]byte) error {
	_, err := e.w.Write(*b)
	chunkPool.Put(b)
	if err != nil {
		return err
	}
	return e.rc.Flush()
}

// echoWhole answers a request that did not ask for a stream.
//
//go:noinline
func echoWhole(w http.ResponseWriter, id string, created int64, model string, words []string) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"id": id, "object": "chat.completion", "created": created, "model": model,
		"choices": []any{map[string]any{
			"index": 0, "finish_reason": "stop",
			"message": map[string]any{"role": "assistant", "content": strings.Join(words, " ")},
		}},
		"usage": map[string]any{"prompt_tokens": len(words), "completion_tokens": len(words), "total_tokens": 2 * len(words)},
	})
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced.
func appendJSONString(b []byte, s string) []byte {
	return append(appendJSONChars(append(b, '"'), s), '"')
}

// appendJSONChars appends s escaped as the inside of a JSON string.
func appendJSONChars(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == '\n':
			b = append(b, '\\', 'n')
		case r == '\r':
			b = append(b, '\\', 'r')
		case r == '\t':
			b = append(b, '\\', 't')
		case r < 0x20:
			b = append(b, '\\', 'u', '0', '0', hex[r>>4], hex[r&0xf])
		default:
			b = utf8.AppendRune(b, r) // a bad byte comes as U+FFFD
		}
	}
	return b
}
