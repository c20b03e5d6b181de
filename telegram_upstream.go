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
	"os"
	"strings"
	"time"
)

// A Telegram turn's answer: a streaming chat completion from the same
// upstream the HTTP gateway proxies to (or the built-in echo), read as it
// arrives so the reply in the chat grows with it.

// complete returns the answer's full text; partial is called with the
// text so far as it grows.
func (b *telegramBot) complete(ctx context.Context, p *Policy, msgs []map[string]string, partial func(string)) (string, error) {
	if p.Gateway.Upstream == "" {
		return echoComplete(ctx, msgs[len(msgs)-1]["content"], p.Echo.WordDelay, partial)
	}
	body, _ := json.Marshal(map[string]any{"model": p.Telegram.Model, "stream": true, "messages": msgs})
	base := strings.TrimSuffix(p.Gateway.Upstream, "/")
	target := base + "/v1/chat/completions"
	if strings.HasSuffix(base, "/v1") {
		target = base + "/chat/completions"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(body))
	if err != nil {
		return "", errors.New("upstream: bad gateway.upstream")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "text/event-stream")
	if k := p.Gateway.UpstreamKeyEnv; k != "" {
		if key := os.Getenv(k); key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
	}
	resp, err := b.g.client.Do(req)
	if err != nil {
		err = fmt.Errorf("upstream unreachable: %v", withoutURL(err))
		if ctx.Err() == nil {
			b.g.upstreamFailed(err)
		}
		return "", err
	}
	defer resp.Body.Close()
	b.g.upstreamAnswered()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return "", fmt.Errorf("upstream answered HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(msg)))
	}
	if !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		// An upstream that ignored "stream": one JSON answer.
		var r struct {
			Choices []struct {
				Message struct {
					Content string `json:"content"`
				} `json:"message"`
			} `json:"choices"`
		}
		if err := json.NewDecoder(io.LimitReader(resp.Body, 16<<20)).Decode(&r); err != nil || len(r.Choices) == 0 {
			return "", errors.New("upstream answered something that is not a chat completion")
		}
		return r.Choices[0].Message.Content, nil
	}
	var text strings.Builder
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Bytes()
		data, ok := bytes.CutPrefix(line, []byte("data:"))
		if !ok {
			continue
		}
		data = bytes.TrimSpace(data)
		if string(data) == "[DONE]" {
			return text.String(), nil
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
			return text.String(), fmt.Errorf("upstream: %s", chunk.Error.Message)
		}
		if len(chunk.Choices) > 0 && chunk.Choices[0].Delta.Content != "" {
			text.WriteString(chunk.Choices[0].Delta.Content)
			partial(text.String())
		}
	}
	if err := sc.Err(); err != nil && ctx.Err() == nil {
		return text.String(), fmt.Errorf("upstream stream broken: %v", err)
	}
	if ctx.Err() != nil {
		return text.String(), ctx.Err()
	}
	return text.String(), nil // ended without [DONE]: what came is the answer
}

// echoComplete is the echo upstream's answer, word by word: the message
// itself.
func echoComplete(ctx context.Context, msg string, delay time.Duration, partial func(string)) (string, error) {
	var text strings.Builder
	for i, w := range strings.Fields(msg) {
		if !sleepCtx(ctx, delay) {
			return text.String(), ctx.Err()
		}
		if i > 0 {
			text.WriteByte(' ')
		}
		text.WriteString(w)
		partial(text.String())
	}
	return text.String(), nil
}
