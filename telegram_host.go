package main

// The seam between the Telegram bot and the gateway it runs in. The bot
// reaches the gateway only through telegramHost: the policy of the moment,
// the lifecycle log, alerts, session accounting, the upstream path and the
// gateway's own end. Nothing else of the gateway is the bot's to touch, so
// the bot can be driven by another host in a test, and a second platform
// could sit beside it on the same seam.

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// telegramHost is what the Telegram bot needs of its gateway.
type telegramHost interface {
	// policy is the policy in force now (it changes on a reload).
	policy() *Policy
	// log is the lifecycle log, and its redactor.
	log() *logger
	// alert fires or resolves an alert (alerts.go); a no-op without [alerts].
	alert(event, state, summary string, kv ...any)
	// fatal ends the gateway for err (a token refused, a webhook in the
	// way), unless an earlier reason is already waiting.
	fatal(err error)
	// done is closed when the gateway's loop has returned.
	done() <-chan struct{}
	// cutCtx ends when a drain cuts the sessions still running.
	cutCtx() context.Context
	// snapshot is the loop's last published state: why the gateway
	// stopped taking work (a handoff, a drain), for the log.
	snapshot() *snapshot
	// self is the gateway's pid record: who claims a turn in the store.
	self() pidRecord
	// enterSession admits a turn as a session (false: the gateway drains);
	// leaveSession ends it.
	enterSession() bool
	leaveSession()
	// polled and storeFailed count a poll's outcome and a store write that
	// failed, for /metrics.
	polled(err error)
	storeFailed()
	// upstreamOpen sends a turn's chat completion (body) to the
	// upstreams, with failover, as the HTTP path does; the rest report how
	// it went, for /metrics and the upstream_unreachable alert.
	upstreamOpen(ctx context.Context, p *Policy, body []byte) (*http.Response, error)
	upstreamFailed(kind upstreamKind, err error, started time.Time)
	upstreamAnswered()
}

// gatewayTelegramHost is the gateway as the Telegram bot's host.
type gatewayTelegramHost struct{ g *gateway }

func (h gatewayTelegramHost) policy() *Policy { return h.g.policy.Load() }
func (h gatewayTelegramHost) log() *logger    { return h.g.log }
func (h gatewayTelegramHost) alert(event, state, summary string, kv ...any) {
	h.g.alerts.fire(event, state, summary, kv...)
}
func (h gatewayTelegramHost) fatal(err error) {
	select {
	case h.g.fatal <- err:
	default:
	}
}
func (h gatewayTelegramHost) done() <-chan struct{}   { return h.g.done }
func (h gatewayTelegramHost) cutCtx() context.Context { return h.g.cutCtx }
func (h gatewayTelegramHost) snapshot() *snapshot     { return h.g.snap.Load() }
func (h gatewayTelegramHost) self() pidRecord         { return h.g.self }
func (h gatewayTelegramHost) enterSession() bool      { return h.g.gate.enter() }
func (h gatewayTelegramHost) leaveSession()           { h.g.gate.leave() }
func (h gatewayTelegramHost) polled(err error)        { h.g.mx.telegramPoll(err) }
func (h gatewayTelegramHost) storeFailed()            { h.g.mx.tgStoreErrors.Add(1) }
func (h gatewayTelegramHost) upstreamOpen(ctx context.Context, p *Policy, body []byte) (*http.Response, error) {
	pl := h.g.pool(p)
	order := pl.order(p.Telegram.Model, nil)
	if len(order) == 0 {
		return nil, fmt.Errorf("no upstream serves the model %q (telegram.model)", p.Telegram.Model)
	}
	req := &upstreamReq{ctx: ctx, method: http.MethodPost, clientPath: "/v1/chat/completions", body: body, length: int64(len(body)),
		header:        http.Header{"Content-Type": {"application/json"}, "Accept": {"text/event-stream"}},
		headerTimeout: p.Gateway.UpstreamHeaderTimeout, idleTimeout: p.Gateway.UpstreamIdleTimeout}
	resp, err, _ := h.g.attempt(pl, order, req, "telegram")
	return resp, err
}
func (h gatewayTelegramHost) upstreamFailed(kind upstreamKind, err error, started time.Time) {
	h.g.mx.upstream[kind].Add(1)
	h.g.upstreamFailedSince(err, started)
}
func (h gatewayTelegramHost) upstreamAnswered() { h.g.upstreamAnswered() }
