package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
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
func serveEcho(w http.ResponseWriter, r *http.Request, wordDelay time.Duration) {
	if r.URL.Path != "/v1/chat/completions" {
		writeAPIError(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
			fmt.Sprintf("the built-in echo upstream serves POST /v1/chat/completions only, not %s (set gateway.upstream for a real API)", r.URL.Path))
		return
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeAPIError(w, http.StatusMethodNotAllowed, "invalid_request_error", "method_not_allowed", "use POST")
		return
	}
	var req chatRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	if err := dec.Decode(&req); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_json", "the request body is not valid JSON: "+err.Error())
		return
	}
	if len(req.Messages) == 0 {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "missing_messages", "messages must be a non-empty array")
		return
	}
	last := ""
	found := false
	for i := len(req.Messages) - 1; i >= 0; i-- {
		if req.Messages[i].Role == "user" {
			t, err := req.Messages[i].text()
			if err != nil {
				writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "invalid_content", fmt.Sprintf("messages[%d]: %v", i, err))
				return
			}
			last, found = t, true
			break
		}
	}
	if !found {
		writeAPIError(w, http.StatusBadRequest, "invalid_request_error", "missing_user_message", "messages has no message with role \"user\" to echo")
		return
	}
	model := req.Model
	if model == "" {
		model = "hermes-echo"
	}
	words := strings.Fields(last)
	id := "chatcmpl-" + newID()
	created := time.Now().Unix()
	ctx := r.Context()
	wait := func() bool {
		if wordDelay <= 0 {
			return ctx.Err() == nil
		}
		t := time.NewTimer(wordDelay)
		defer t.Stop()
		select {
		case <-t.C:
			return true
		case <-ctx.Done():
			return false
		}
	}

	if !req.Stream {
		for range words {
			if !wait() {
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"id": id, "object": "chat.completion", "created": created, "model": model,
			"choices": []any{map[string]any{
				"index": 0, "finish_reason": "stop",
				"message": map[string]any{"role": "assistant", "content": strings.Join(words, " ")},
			}},
			"usage": map[string]any{"prompt_tokens": len(words), "completion_tokens": len(words), "total_tokens": 2 * len(words)},
		})
		return
	}

	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	chunk := func(delta map[string]any, finish any) error {
		b, _ := json.Marshal(map[string]any{
			"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
			"choices": []any{map[string]any{"index": 0, "delta": delta, "finish_reason": finish}},
		})
		if _, err := fmt.Fprintf(w, "data: %s\n\n", b); err != nil {
			return err
		}
		return rc.Flush()
	}
	if chunk(map[string]any{"role": "assistant", "content": ""}, nil) != nil {
		return
	}
	for i, word := range words {
		if !wait() {
			return
		}
		if i > 0 {
			word = " " + word
		}
		if chunk(map[string]any{"content": word}, nil) != nil {
			return
		}
	}
	if chunk(map[string]any{}, "stop") != nil {
		return
	}
	fmt.Fprint(w, "data: [DONE]\n\n")
	rc.Flush()
}
