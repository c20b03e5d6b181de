package main

// The upstreams at run time: the order a request tries them in, and the
// health of each. An upstream that fails failover.fail_after times in a
// row (it cannot be reached, it answers 5xx or 429, or no head comes in
// time) is out: requests try it last, and only when every other has
// failed. While it is out, a probe off the session path (a GET of its
// health path) asks it again after each cooldown, which doubles while the
// probe fails; a probe or a request it answers brings it back in. A 429
// takes it out at once, for the Retry-After it gave.
//
// Nothing here runs on the gateway's loop: the pool is read by sessions
// (atomics and one small lock per upstream), and its events are log lines.

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// upstreamNode is one upstream and its health.
type upstreamNode struct {
	UpstreamPolicy
	client *upstreamClient // nil: net/http's Transport serves it
	gone   chan struct{}   // closed when a reload drops it: its probe ends

	requests, failures, failovers atomic.Uint64
	isOut                         atomic.Bool

	fails atomic.Int32 // consecutive failures; written under mu

	// A supervised upstream (upstream_child.go) is in the order only
	// while its run is ready; readyCh is closed when it becomes ready.
	supervised bool
	ready      atomic.Bool
	readyCh    chan struct{}
	goneCh     chan struct{} // closed when it stops being ready
	run        atomic.Uint64 // counts the runs that became ready

	mu       sync.Mutex
	outSince time.Time     // when it went out
	outUntil time.Time     // the next probe
	cooldown time.Duration // the current one
	lastErr  string
	probing  bool
	alerted  bool // its out-too-long alert fired
}

// upstreamPool is the upstreams of one policy, in the policy's order.
type upstreamPool struct {
	p         *Policy // the policy it was made for
	nodes     []*upstreamNode
	fo        FailoverPolicy
	hasModels bool // some upstream names its models: a request's model is read
	g         *gateway
}

// pool returns the upstream pool for p, making it when the policy changed
// (a reload); upstreams it keeps (same name and URL) keep their health.
func (g *gateway) pool(p *Policy) *upstreamPool {
	if pl := g.upstreams.Load(); pl != nil && pl.p == p {
		return pl
	}
	g.poolMu.Lock()
	defer g.poolMu.Unlock()
	old := g.upstreams.Load()
	if old != nil && old.p == p {
		return old
	}
	pl := &upstreamPool{p: p, fo: p.Failover, g: g}
	kept := map[*upstreamNode]bool{}
	for _, u := range p.upstreams() {
		var n *upstreamNode
		if old != nil {
			for _, o := range old.nodes {
				if o.Name == u.Name && o.URL == u.URL && !kept[o] {
					n = o
				}
			}
		}
		if n == nil {
			n = &upstreamNode{client: newUpstreamClient(strings.TrimSuffix(u.URL, "/")), gone: make(chan struct{}), readyCh: make(chan struct{}),
				supervised: len(u.Command) > 0}
		}
		n.mu.Lock()
		n.UpstreamPolicy = u
		n.mu.Unlock()
		kept[n] = true
		pl.hasModels = pl.hasModels || len(u.Models) > 0
		pl.nodes = append(pl.nodes, n)
	}
	if old != nil {
		for _, o := range old.nodes {
			if !kept[o] {
				close(o.gone)
				if o.client != nil {
					o.client.closeIdle()
				}
			}
		}
	}
	g.upstreams.Store(pl)
	return pl
}

// serves reports whether n serves model ("" when the request names none).
func (n *upstreamNode) serves(model string) bool {
	return len(n.Models) == 0 || model == "" || slices.Contains(n.Models, model)
}

// order is the upstreams a request for model tries, in turn, at most
// failover.attempts: those in first (a weighted one at the head chosen by
// weight), then those out, the one whose cooldown ends first first.
func (pl *upstreamPool) order(model string, dst []*upstreamNode) []*upstreamNode {
	dst = dst[:0]
	var outs []*upstreamNode
	for _, n := range pl.nodes {
		if !n.serves(model) {
			continue
		}
		if n.isOut.Load() || (n.supervised && !n.ready.Load()) {
			outs = append(outs, n)
		} else {
			dst = append(dst, n)
		}
	}
	// The weighted upstreams at the head share the first attempts.
	head, total := 0, 0
	for head < len(dst) && dst[head].Weight > 0 {
		total += dst[head].Weight
		head++
	}
	if head > 1 {
		r := rand.IntN(total)
		for i := 0; i < head; i++ {
			if r -= dst[i].Weight; r < 0 {
				first := dst[i]
				copy(dst[1:i+1], dst[:i])
				dst[0] = first
				break
			}
		}
	}
	if len(outs) > 1 {
		slices.SortStableFunc(outs, func(a, b *upstreamNode) int { return a.nextProbe().Compare(b.nextProbe()) })
	}
	dst = append(dst, outs...)
	if len(dst) > pl.fo.Attempts {
		dst = dst[:pl.fo.Attempts]
	}
	return dst
}

func (n *upstreamNode) nextProbe() time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.outUntil
}

// aim points req at n: its base, the path under it, its key.
func (n *upstreamNode) aim(req *upstreamReq) {
	base := strings.TrimSuffix(n.URL, "/")
	path := req.clientPath
	if strings.HasSuffix(base, "/v1") {
		path = strings.TrimPrefix(path, "/v1")
	}
	req.base, req.path, req.auth = base, path, n.auth()
}

// auth is the Authorization n gets: "Bearer " and its key, or "".
func (n *upstreamNode) auth() string {
	if n.KeyEnv != "" {
		if key := os.Getenv(n.KeyEnv); key != "" {
			return "Bearer " + key
		}
	}
	return ""
}

// retryable reports whether an answer's status sends the request on to
// the next upstream: a 5xx or a 429.
func retryable(status int) bool { return status >= 500 || status == http.StatusTooManyRequests }

// retryAfter reads a Retry-After header (seconds, or an HTTP date) as a
// duration from now; 0 when there is none.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := h.Get("Retry-After")
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s >= 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// answered records an answer from n that is not a failure.
func (pl *upstreamPool) answered(n *upstreamNode) {
	if (n.fails.Load() == 0 && !n.isOut.Load()) || n.supervised {
		return // the way nearly every answer goes: no lock
	}
	n.mu.Lock()
	n.fails.Store(0)
	wasOut := n.isOut.Load()
	var outFor time.Duration
	if wasOut {
		outFor = time.Since(n.outSince)
		pl.backIn(n)
	}
	n.mu.Unlock()
	if wasOut {
		pl.g.log.info(evUpstreamIn, "upstream", n.Name, "out_for", outFor.Round(time.Millisecond), "by", "a request it answered")
		pl.resolved(n, outFor)
	}
}

// failed records a failure of n: why, and how long it asked to be left
// alone (a 429's Retry-After; 0 for none).
func (pl *upstreamPool) failed(n *upstreamNode, why string, wait time.Duration) {
	n.failures.Add(1)
	now := time.Now()
	n.mu.Lock()
	fails := n.fails.Add(1)
	n.lastErr = why
	// A supervised upstream's health is its supervisor's to judge.
	takeOut := !n.supervised && !n.isOut.Load() && (int(fails) >= pl.fo.FailAfter || wait > 0)
	if takeOut {
		n.cooldown = pl.fo.Cooldown
		if wait > 0 {
			n.cooldown = min(max(wait, pl.fo.Cooldown), pl.fo.CooldownMax)
		}
		n.outSince, n.outUntil = now, now.Add(n.cooldown)
		n.isOut.Store(true)
	}
	startProbe := takeOut && !n.probing
	if startProbe {
		n.probing = true
	}
	cooldown := n.cooldown
	n.mu.Unlock()
	if !takeOut {
		return
	}
	pl.g.log.warn(evUpstreamOut, "upstream", n.Name, "failures", fails, "cooldown", cooldown, "error", why)
	if startProbe {
		go pl.probe(n)
	}
	pl.allOutAlert()
}

// backIn puts n back in the order; n.mu is held.
func (pl *upstreamPool) backIn(n *upstreamNode) {
	n.isOut.Store(false)
	n.fails.Store(0)
	n.outSince, n.outUntil, n.cooldown = time.Time{}, time.Time{}, 0
}

// probe asks n, while it is out, after each cooldown, until it answers
// (back in), it is back in by a request, or a reload drops it.
func (pl *upstreamPool) probe(n *upstreamNode) {
	defer func() {
		n.mu.Lock()
		n.probing = false
		n.mu.Unlock()
	}()
	for {
		n.mu.Lock()
		if !n.isOut.Load() {
			n.mu.Unlock()
			return
		}
		wait := time.Until(n.outUntil)
		if !n.alerted && pl.g.alerts != nil {
			wait = min(wait, time.Until(n.outSince.Add(pl.p.Alerts.UpstreamDownFor)))
		}
		n.mu.Unlock()
		t := time.NewTimer(max(wait, 0))
		select {
		case <-t.C:
		case <-n.gone:
			t.Stop()
			return
		}
		pl.outTooLong(n)
		if time.Now().Before(n.nextProbe()) {
			continue // woken for the alert, not the probe
		}
		err := pl.ask(n, pl.fo.ProbeTimeout)
		n.mu.Lock()
		if !n.isOut.Load() {
			n.mu.Unlock()
			return
		}
		if err == nil {
			outFor := time.Since(n.outSince)
			pl.backIn(n)
			n.mu.Unlock()
			pl.g.log.info(evUpstreamIn, "upstream", n.Name, "out_for", outFor.Round(time.Millisecond), "by", "probe")
			pl.resolved(n, outFor)
			return
		}
		n.cooldown = min(2*n.cooldown, pl.fo.CooldownMax)
		n.outUntil = time.Now().Add(n.cooldown)
		n.lastErr = err.Error()
		n.mu.Unlock()
	}
}

// ask is one probe of n: a GET of its health path, within timeout. Any
// answer but a 5xx or a 429 is health.
func (pl *upstreamPool) ask(n *upstreamNode, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	path := n.Health
	if path == "" {
		path = "/v1/models"
	}
	req := &upstreamReq{ctx: ctx, method: http.MethodGet, clientPath: path, header: http.Header{},
		headerTimeout: timeout, idleTimeout: timeout}
	if n.Health != "" {
		req.base, req.path, req.auth = strings.TrimSuffix(n.URL, "/"), path, n.auth()
	} else {
		n.aim(req)
	}
	resp, err := pl.g.send(n, req)
	if err != nil {
		return fmt.Errorf("probe: %s", redactURL(err, req.url()))
	}
	resp.Body.Close()
	if retryable(resp.StatusCode) {
		return fmt.Errorf("probe: HTTP %d", resp.StatusCode)
	}
	return nil
}

// send is one attempt of req at n, with the own client or the Transport.
func (g *gateway) send(n *upstreamNode, req *upstreamReq) (*http.Response, error) {
	if n.client != nil {
		return n.client.do(req)
	}
	return g.transportRoundTrip(req)
}

// allOutAlert fires when every upstream is out (with more than one: one
// alone has upstream_unreachable).
func (pl *upstreamPool) allOutAlert() {
	if pl.g.alerts == nil || len(pl.nodes) < 2 {
		return
	}
	for _, n := range pl.nodes {
		if !n.isOut.Load() {
			return
		}
	}
	if pl.g.allOut.CompareAndSwap(false, true) {
		pl.g.alerts.fire("upstreams_out", "firing", fmt.Sprintf("hermes %q on %s: every upstream is out (%d): requests go to them anyway, in the order their cooldowns end", pl.p.Name, pl.g.alerts.host, len(pl.nodes)))
	}
}

// outTooLong fires n's alert once it has been out alerts.upstream_down_for.
func (pl *upstreamPool) outTooLong(n *upstreamNode) {
	if pl.g.alerts == nil || len(pl.nodes) < 2 {
		return
	}
	n.mu.Lock()
	fire := n.isOut.Load() && !n.alerted && time.Since(n.outSince) >= pl.p.Alerts.UpstreamDownFor
	if fire {
		n.alerted = true
	}
	why := n.lastErr
	n.mu.Unlock()
	if fire {
		pl.g.alerts.fire("upstream_out", "firing", fmt.Sprintf("hermes %q on %s: upstream %s has been out for %s: %s", pl.p.Name, pl.g.alerts.host, n.Name, pl.p.Alerts.UpstreamDownFor, pl.g.log.secrets.scrub(why)), "upstream", n.Name)
	}
}

// resolved ends n's alerts when it is back in.
func (pl *upstreamPool) resolved(n *upstreamNode, outFor time.Duration) {
	if pl.g.alerts == nil {
		return
	}
	n.mu.Lock()
	was := n.alerted
	n.alerted = false
	n.mu.Unlock()
	if was {
		pl.g.alerts.fire("upstream_out", "resolved", fmt.Sprintf("hermes %q on %s: upstream %s is back in, after %s out", pl.p.Name, pl.g.alerts.host, n.Name, outFor.Round(time.Second)), "upstream", n.Name)
	}
	if pl.g.allOut.CompareAndSwap(true, false) {
		pl.g.alerts.fire("upstreams_out", "resolved", fmt.Sprintf("hermes %q on %s: upstream %s is back in", pl.p.Name, pl.g.alerts.host, n.Name))
	}
}

// requestModel is the model a chat request's body names, or "".
func requestModel(body []byte) string {
	var m struct {
		Model string `json:"model"`
	}
	json.Unmarshal(body, &m)
	return m.Model
}

// upstreamView is one upstream as /status shows it.
type upstreamView struct {
	Name      string    `json:"name"`
	State     string    `json:"state"`         // in or out (a supervised one: out while its run is not ready)
	PID       int       `json:"pid,omitempty"` // a supervised upstream's run
	Requests  uint64    `json:"requests"`
	Failures  uint64    `json:"failures"`
	OutSince  time.Time `json:"out_since,omitzero"`
	NextProbe time.Time `json:"next_probe,omitzero"`
	LastError string    `json:"last_error,omitempty"`
}

// views is the pool as /status shows it.
func (pl *upstreamPool) views(scrub func(string) string) []upstreamView {
	var out []upstreamView
	for _, n := range pl.nodes {
		n.mu.Lock()
		v := upstreamView{Name: n.Name, State: "in", Requests: n.requests.Load(), Failures: n.failures.Load(), LastError: scrub(n.lastErr)}
		if n.isOut.Load() {
			v.State, v.OutSince, v.NextProbe = "out", n.outSince, n.outUntil
		} else if n.supervised && !n.ready.Load() {
			v.State = "out"
		}
		n.mu.Unlock()
		for _, c := range pl.g.childList() {
			if c.node == n {
				c.mu.Lock()
				v.PID = c.pid
				c.mu.Unlock()
			}
		}
		out = append(out, v)
	}
	return out
}

// describe is one upstream for hermes status.
func (v upstreamView) describe() string {
	s := fmt.Sprintf("%s %s, %d requests, %d failed", v.Name, v.State, v.Requests, v.Failures)
	if v.PID != 0 {
		s = fmt.Sprintf("%s %s (pid %d), %d requests, %d failed", v.Name, v.State, v.PID, v.Requests, v.Failures)
	}
	if v.State == "out" {
		s += fmt.Sprintf(" (out for %s, next probe in %s", fmtDur(time.Since(v.OutSince)), fmtDur(max(time.Until(v.NextProbe), 0)))
		if v.LastError != "" {
			s += ": " + v.LastError
		}
		s += ")"
	}
	return s
}
