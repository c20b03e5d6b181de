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
	// The upstream client keeps the policy's deadlines, as on the HTTP
	// path (each attempt's head within upstream_header_timeout, no silence
	// inside the answer longer than upstream_idle_timeout), and says so
	// with an upstreamTimeout. No clock of the turn's own: it would cut a
	// failover to the next upstream short. timedOut is the timeout err
	// is, told for the chat, or nil.
	started := time.Now()
	answered := false
	timedOut := func(err error) error {
		var late *upstreamTimeout
		if ctx.Err() != nil || !errors.As(err, &late) {
			return nil
		}
		t := fmt.Errorf("upstream timeout: the answer stopped for gateway.upstream_idle_timeout (%s)", p.Gateway.UpstreamIdleTimeout)
		if !answered {
			t = fmt.Errorf("upstream timeout: no answer within gateway.upstream_header_timeout (%s)", p.Gateway.UpstreamHeaderTimeout)
		}
		b.h.upstreamFailed(upTimeout, t, started)
		return t
	}
	body, _ := json.Marshal(map[string]any{"model": p.Telegram.Model, "stream": true, "messages": msgs})
	resp, err := b.h.upstreamOpen(ctx, p, body)
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
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return "", fmt.Errorf("upstream answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// An upstream that ignored "stream": one JSON answer.
		if err := readJSONAnswer(resp.Body, ans); err != nil {
			if terr := timedOut(err); terr != nil {
				return "", terr
			}
			return "", errors.New("upstream answered something that is not a chat completion")
		}
		return ans.String(), nil
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	if done, err := readSSEAnswer(sc, ans); done {
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
// into ans; the error says why it is not one.
func readJSONAnswer(body io.Reader, ans *cappedAnswer) error {
	var r struct {
		Choices []struct {
			Message struct {
				Content string `json:"content"`
			} `json:"message"`
		} `json:"choices"`
	}
	if err := json.NewDecoder(io.LimitReader(body, 16<<20)).Decode(&r); err != nil {
		return err
	}
	if len(r.Choices) == 0 {
		return errors.New("no choices")
	}
	ans.add(r.Choices[0].Message.Content)
	return nil
}

// readSSEAnswer reads a streamed chat completion's deltas into ans. It
// reports done when the answer ended in
// the stream ([DONE], an error event, or the cap); otherwise the stream
// ended or broke first, and sc.Err says which.
func readSSEAnswer(sc *bufio.Scanner, ans *cappedAnswer) (bool, error) {
	for sc.Scan() {
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
