package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// The Telegram Bot API client: HTTPS and JSON, standard library only.
//
// The Bot API puts the token in the URL path (/bot<token>/getUpdates), and
// Go's *url.Error prints the whole URL in every network error. So no error
// that leaves this file carries a URL: a network error is rebuilt from the
// method and the error underneath, and the logger scrubs the token by
// value besides (it is one of the policy's secrets).

type botClient struct {
	base string // api_base + "/bot" + token: never printed
	http *http.Client
}

func newBotClient(apiBase, token string) *botClient {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 8
	return &botClient{base: strings.TrimRight(apiBase, "/") + "/bot" + token, http: &http.Client{Transport: tr}}
}

// botError is an answer of the Bot API that says ok: false.
type botError struct {
	Method     string
	Code       int
	Desc       string
	RetryAfter time.Duration // 429: how long Telegram asks us to wait
}

func (e *botError) Error() string {
	return fmt.Sprintf("telegram %s: %d %s", e.Method, e.Code, e.Desc)
}

// botNetError is a call that got no answer: the network, a timeout, a
// response that is not the Bot API's. It never holds the URL.
type botNetError struct {
	Method string
	Err    string
}

func (e *botNetError) Error() string { return "telegram " + e.Method + ": " + e.Err }

func isBotCode(err error, code int) bool {
	var be *botError
	return errors.As(err, &be) && be.Code == code
}

// notModified is Telegram's answer to an edit that changes nothing: for
// hermes, the message already says what it should.
func notModified(err error) bool {
	var be *botError
	return errors.As(err, &be) && be.Code == 400 && strings.Contains(be.Desc, "message is not modified")
}

// call invokes method with params as JSON and decodes the result into out.
func (c *botClient) call(ctx context.Context, method string, params any, out any) error {
	body, err := json.Marshal(params)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+"/"+method, bytes.NewReader(body))
	if err != nil {
		return &botNetError{Method: method, Err: "bad telegram.api_base"}
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		return netError(method, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return netError(method, err)
	}
	var r struct {
		OK          bool            `json:"ok"`
		Result      json.RawMessage `json:"result"`
		ErrorCode   int             `json:"error_code"`
		Description string          `json:"description"`
		Parameters  struct {
			RetryAfter int `json:"retry_after"`
		} `json:"parameters"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return &botNetError{Method: method, Err: fmt.Sprintf("HTTP %d with a body that is not the Bot API's", resp.StatusCode)}
	}
	if !r.OK {
		code := r.ErrorCode
		if code == 0 {
			code = resp.StatusCode
		}
		return &botError{Method: method, Code: code, Desc: r.Description, RetryAfter: time.Duration(r.Parameters.RetryAfter) * time.Second}
	}
	if out != nil {
		if err := json.Unmarshal(r.Result, out); err != nil {
			return &botNetError{Method: method, Err: "unexpected result: " + err.Error()}
		}
	}
	return nil
}

// netError drops the URL from a network error.
func netError(method string, err error) error {
	err = withoutURL(err)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &botNetError{Method: method, Err: "timed out"}
	case errors.Is(err, context.Canceled):
		return &botNetError{Method: method, Err: "cancelled"}
	}
	return &botNetError{Method: method, Err: err.Error()}
}

// callRetry is call that honours a 429's retry_after (and retries a 5xx or
// a network error once a second) until ctx ends.
func (c *botClient) callRetry(ctx context.Context, timeout time.Duration, method string, params any, out any) error {
	for {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		err := c.call(cctx, method, params, out)
		cancel()
		if err == nil || ctx.Err() != nil {
			return err
		}
		var be *botError
		wait := time.Second
		switch {
		case errors.As(err, &be) && be.Code == 429:
			wait = max(be.RetryAfter, time.Second)
		case errors.As(err, &be) && be.Code < 500:
			return err // the request is wrong: retrying will not help
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// The Bot API's types, as far as hermes reads them.
type tgUser struct {
	ID       int64  `json:"id"`
	IsBot    bool   `json:"is_bot"`
	Username string `json:"username"`
}

type tgChat struct {
	ID int64 `json:"id"`
}

type tgMessage struct {
	MessageID int64   `json:"message_id"`
	From      *tgUser `json:"from"`
	Chat      tgChat  `json:"chat"`
	Text      string  `json:"text"`
}

type tgUpdate struct {
	UpdateID int64      `json:"update_id"`
	Message  *tgMessage `json:"message"`
}
