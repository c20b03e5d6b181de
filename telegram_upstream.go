package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"
)

// A Telegram turn's answer: a streaming chat completion from the same
// upstream the HTTP gateway proxies to (or the built-in echo), read as it
// arrives so the reply in the chat grows with it.

// complete returns the answer's full text; partial is called with the
// text so far as it grows.
func (b *telegramBot) complete(ctx context.Context, p *Policy, msgs []map[string]string, partial func(string)) (string, error) {
	ans := newCappedAnswer(p.Telegram.MaxAnswer, partial)
	if p.echoing() {
		err := echoComplete(ctx, msgs[len(msgs)-1]["content"], p.Echo.WordDelay, ans)
		return ans.String(), err
	}
	// The policy's upstream deadlines, as on the HTTP path: the answer's
	// head within upstream_header_timeout, no silence inside it longer
	// than upstream_idle_timeout.
	cctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	started := time.Now()
	headTimeout := fmt.Errorf("upstream timeout: no answer within gateway.upstream_header_timeout (%s)", p.Gateway.UpstreamHeaderTimeout)
	idleTimeout := fmt.Errorf("upstream timeout: the answer stopped for gateway.upstream_idle_timeout (%s)", p.Gateway.UpstreamIdleTimeout)
	head := time.AfterFunc(p.Gateway.UpstreamHeaderTimeout, func() { cancel(headTimeout) })
	// Either clock may see it first: this turn's, or the upstream
	// client's own deadline on the socket (an upstreamTimeout), which
	// says the same. timedOut returns the timeout err is, or nil.
	answered := false
	timedOut := func(err error) error {
		c := context.Cause(cctx)
		var late *upstreamTimeout
		if ctx.Err() == nil && c != headTimeout && c != idleTimeout && errors.As(err, &late) {
			c = idleTimeout
			if !answered {
				c = headTimeout
			}
		}
		if ctx.Err() == nil && (c == headTimeout || c == idleTimeout) {
			b.h.upstreamFailed(upTimeout, c, started)
			return c
		}
		return nil
	}
	body, _ := json.Marshal(map[string]any{"model": p.Telegram.Model, "stream": true, "messages": msgs})
	resp, err := b.h.upstreamOpen(cctx, p, body)
	head.Stop()
	if err != nil {
		if terr := timedOut(err); terr != nil {
			return "", terr
		}
		kind := upstreamErrKind(err)
		err = fmt.Errorf("upstream unreachable: %v", withoutURL(err))
		if ctx.Err() == nil {
			b.h.upstreamFailed(kind, err, time.Now())
		}
		return "", err
	}
	defer resp.Body.Close()
	b.h.upstreamAnswered()
	answered = true
	timer := time.AfterFunc(p.Gateway.UpstreamIdleTimeout, func() { cancel(idleTimeout) })
	defer timer.Stop()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return "", fmt.Errorf("upstream answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// An upstream that ignored "stream": one JSON answer.
		if !readJSONAnswer(resp.Body, ans) {
			if terr := timedOut(nil); terr != nil {
				return "", terr
			}
			return "", errors.New("upstream answered something that is not a chat completion")
		}
		return ans.String(), nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	if done, err := readSSEAnswer(sc, func() { timer.Reset(p.Gateway.UpstreamIdleTimeout) }, ans); done {
		return ans.String(), err
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		if terr := timedOut(err); terr != nil {
			return ans.String(), terr
		}
		return ans.String(), fmt.Errorf("upstream stream broken: %v", err)
	}
	if ctx.Err() != nil {
		return ans.String(), ctx.Err()
	}
	return ans.String(), nil // ended without [DONE]: what came is the answer
}

// readJSONAnswer reads a chat completion that came as one JSON answer
// into ans; it reports false if the body is not one.
func readJSONAnswer(body io.Reader, ans *cappedAnswer) bool {
	var r struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 16<<20)).Decode(&r); err != nil || len(r.Choices) == 0 {
		return false
	}
	ans.add(r.Choices[0].Message.Content)
	return true
}

// readSSEAnswer reads a streamed chat completion's deltas into ans,
// calling alive at each line. It reports done when the answer ended in
// the stream ([DONE], an error event, or the cap); otherwise the stream
// ended or broke first, and sc.Err says which.
func readSSEAnswer(sc *bufio.Scanner, alive func(), ans *cappedAnswer) (bool, error) {
	for sc.Scan() {
		alive()
		data, ok := bytes.CutPrefix(sc.Bytes(), []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			return true, nil
		}
		var chunk struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
			} `json:"choices"`
			Error *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(data, &chunk) != nil {
			continue
		}
		if chunk.Error != nil {
			return true, fmt.Errorf("upstream: %s", chunk.Error.Message)
		}
		if len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			if !ans.add(chunk.Choices[0].Delta.Content) {
				return true, nil // cut at telegram.max_answer: the rest is not read
			}
		}
	}
	return false, nil
}

// cappedAnswer is an answer as it streams, cut at telegram.max_answer
// characters with a notice saying so.
type cappedAnswer struct {
	b       strings.Builder
	max, n  int // the cap, and the characters so far
	cut     bool
	partial func(string)
}

func newCappedAnswer(max int, partial func(string)) *cappedAnswer {
	return &cappedAnswer{max: max, partial: partial}
}

// add appends s and shows the answer so far; false once the answer is cut.
func (a *cappedAnswer) add(s string) bool {
	if a.cut {
		return false
	}
	if n := utf8.RuneCountInString(s); a.n+n <= a.max {
		a.b.WriteString(s)
		a.n += n
	} else {
		for _, r := range s {
			if a.n == a.max {
				break
			}
			a.b.WriteRune(r)
			a.n++
		}
		fmt.Fprintf(&a.b, "\n\n[answer cut at %d characters]", a.max)
		a.cut = true
	}
	a.partial(a.b.String())
	return !a.cut
}

func (a *cappedAnswer) String() string { return a.b.String() }

// echoComplete is the echo upstream's answer, word by word: the message
// itself.
func echoComplete(ctx context.Context, msg string, delay time.Duration, ans *cappedAnswer) error {
	for i, w := range strings.Fields(msg) {
		if !sleepCtx(ctx, delay) {
			return ctx.Err()
		}
		if i > 0 {
			w = " " + w
		}
		if !ans.add(w) {
			return nil
		}
	}
	return nil
}
