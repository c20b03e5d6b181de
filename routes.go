package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// The HTTP routes. /healthz, /readyz and /status are answered from what the
// loop publishes (its state, its heartbeat), never by the loop itself, so a
// frozen loop shows: after 3 missed ticks /healthz and /readyz answer 503
// with the heartbeat's age. /v1/... is a session (session.go).

// staleTicks is how many heartbeats the loop may miss before it counts as
// frozen: for /healthz, /readyz, `hermes status` and `hermes restart`
// alike (watchdog.heartbeat documents the choice).
const staleTicks = 3

// staleAfter is how old the heartbeat may be before the loop is frozen.
func staleAfter(w WatchdogPolicy) time.Duration { return staleTicks * w.Heartbeat }

func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if g.handedOff.Load() {
		// The successor takes every new connection: this one ends after
		// this answer, cleanly, so the client's next request goes there.
		w.Header().Set("Connection", "close")
	}
	// A session streams on this goroutine: nothing else is in this frame
	// (see serveSession).
	if strings.HasPrefix(r.URL.Path, "/v1/") {
		g.serveSession(w, r)
		return
	}
	g.serveOther(w, r)
}

// serveOther answers everything but sessions.
//
//go:noinline
func (g *gateway) serveOther(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/healthz":
		g.serveProbe(w, false)
	case r.URL.Path == "/readyz":
		g.serveProbe(w, true)
	case (r.URL.Path == "/status" || r.URL.Path == "/metrics") && g.policy.Load().Auth.ProtectStatus && !g.authorize(w, r, false):
		// [auth] protect_status: a client key, or 401.
	case r.URL.Path == "/status":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(g.status())
	case r.URL.Path == "/metrics":
		g.serveMetrics(w)
	default:
		writeAPIError(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
			fmt.Sprintf("no route for %s: the gateway serves /v1/..., /healthz, /readyz, /status and /metrics", r.URL.Path))
	}
}

// heartbeatAge is how long ago the loop last ran.
func (g *gateway) heartbeatAge(now time.Time) time.Duration {
	return max(time.Duration(monoNanos(now)-g.heartbeat.Load()), 0)
}

// frozen reports whether the loop has missed staleTicks heartbeats, and why.
func (g *gateway) frozen(now time.Time) (bool, string) {
	w := g.snap.Load().Policy.Watchdog
	age := g.heartbeatAge(now)
	if age <= staleAfter(w) {
		return false, ""
	}
	return true, fmt.Sprintf("frozen: the gateway loop has not ticked for %s (heartbeat %s, frozen after %s)",
		fmtDur(age), w.Heartbeat, staleAfter(w))
}

// serveProbe answers /healthz (is the loop alive? 200 while it ticks) and
// /readyz (should traffic come here? 200 only while serving and ticking).
// A frozen loop fails both, with the heartbeat's age.
func (g *gateway) serveProbe(w http.ResponseWriter, readiness bool) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	now := time.Now()
	if frozen, why := g.frozen(now); frozen {
		w.WriteHeader(http.StatusServiceUnavailable)
		io.WriteString(w, why+"\n")
		return
	}
	if !readiness {
		fmt.Fprintf(w, "ok heartbeat_age=%s\n", fmtDur(g.heartbeatAge(now)))
		return
	}
	st := g.snap.Load().State
	if st != stateServing {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	fmt.Fprintln(w, st)
}

// gatewayStatus is the JSON of /status and the control socket's status.
// Every field is read without the loop.
type gatewayStatus struct {
	PID            int     `json:"pid"`
	State          gwState `json:"state"`
	Frozen         bool    `json:"frozen"`
	HeartbeatAgeMS int64   `json:"heartbeat_age_ms"`
	StaleAfterMS   int64   `json:"frozen_after_ms"`
	SignalUnreadMS int64   `json:"signal_unread_ms,omitempty"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	Uptime         string  `json:"uptime"`
	ActiveSessions int     `json:"active_sessions"`
	LogLinesLost   uint64  `json:"log_lines_lost"`
	Version        string  `json:"version"`
	Policy         string  `json:"policy"`
	Name           string  `json:"name"`
	Listen         string  `json:"listen"`
	Socket         string  `json:"socket,omitempty"` // where the listening socket came from
	DrainReason    string  `json:"drain_reason,omitempty"`
	// A handoff: the successor this gateway started (or handed over to),
	// and, on a successor, the predecessor still finishing its sessions.
	HandedOff   bool               `json:"handed_off,omitempty"`
	Successor   int                `json:"successor,omitempty"`
	Predecessor *predecessorStatus `json:"predecessor,omitempty"`
	// The Telegram bot, when the policy has one.
	Telegram *tgStatus `json:"telegram,omitempty"`
	// The upstreams, in the policy's order; none with the built-in echo.
	Upstreams []upstreamView `json:"upstreams,omitempty"`
}

type predecessorStatus struct {
	PID         int   `json:"pid"`
	Sessions    int   `json:"sessions"`
	DrainLeftMS int64 `json:"drain_left_ms"`
}

func (g *gateway) status() gatewayStatus {
	now := time.Now()
	s := g.snap.Load()
	up := now.Sub(g.started)
	frozen, _ := g.frozen(now)
	st := gatewayStatus{
		PID: g.pid, State: s.State, Frozen: frozen,
		HeartbeatAgeMS: g.heartbeatAge(now).Milliseconds(), StaleAfterMS: staleAfter(s.Policy.Watchdog).Milliseconds(),
		SignalUnreadMS: g.pipe.unreadFor(monoNanos(now)).Milliseconds(),
		UptimeSeconds:  up.Seconds(), Uptime: up.Round(time.Second).String(),
		ActiveSessions: g.gate.count(), LogLinesLost: g.logq.lost() + g.sd.lost(),
		Version: version, Policy: s.Policy.policyLabel(),
		Name: s.Policy.Name, Listen: g.listenAddr(), Socket: g.lnKind, DrainReason: s.Reason,
		HandedOff: s.HandedOff, Successor: s.Successor,
	}
	if g.tg != nil {
		st.Telegram = g.tg.statusNow(s.Policy, now)
	}
	st.Upstreams = g.pool(s.Policy).views(g.log.secrets.scrub)
	if pr := s.Predecessor; pr != nil {
		st.Predecessor = &predecessorStatus{PID: pr.pid, Sessions: pr.sessions}
		if !pr.until.IsZero() {
			st.Predecessor.DrainLeftMS = max(pr.until.Sub(now), 0).Milliseconds()
		}
	}
	return st
}

func (g *gateway) listenAddr() string {
	if g.ln != nil {
		return g.ln.Addr().String()
	}
	return g.listen
}
