package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestHealthTellsTheTruthWhenFrozen: /healthz and /readyz are answered
// without the loop, so a frozen loop shows: both go 503 with the
// heartbeat's age once it missed 3 ticks, and /status and the control
// socket say frozen too. (The watchdog is off here, so the frozen gateway
// stays up to be looked at.)
func TestHealthTellsTheTruthWhenFrozen(t *testing.T) {
	const policy = "[watchdog]\nheartbeat = \"500ms\"\ntimeout = \"0s\"\nsignal_timeout = \"0s\"\n"

	t.Run("ticking", func(t *testing.T) {
		e := newTestEnv(t, policy)
		g := e.startGateway()
		// Well past 3 heartbeats of uptime, the loop still ticks.
		g.waitStatus(10*time.Second, "2s of uptime", func(st gatewayStatus) bool { return st.UptimeSeconds >= 2 })
		if code, body := httpGet(t, g.url+"/healthz"); code != 200 || !strings.HasPrefix(body, "ok") {
			t.Errorf("healthz of a ticking gateway = %d %q", code, body)
		}
		if code, body := httpGet(t, g.url+"/readyz"); code != 200 {
			t.Errorf("readyz of a ticking gateway = %d %q", code, body)
		}
	})

	t.Run("frozen", func(t *testing.T) {
		e := newTestEnv(t, policy)
		g := e.startGateway(frozen)
		ready := time.Now()
		body := waitFrozen(t, g.url, 10*time.Second)
		t.Logf("/healthz said 503 %s after ready: %s", time.Since(ready).Round(time.Millisecond), strings.TrimSpace(body))
		if !strings.Contains(body, "has not ticked for") || !strings.Contains(body, "frozen after 1.5s") {
			t.Errorf("healthz body does not give the heartbeat's age: %q", body)
		}
		if code, body := httpGet(t, g.url+"/readyz"); code != 503 || !strings.Contains(body, "has not ticked for") {
			t.Errorf("readyz of a frozen gateway = %d %q, want 503 with the age", code, body)
		}
		_, body = httpGet(t, g.url+"/status")
		var st gatewayStatus
		if err := json.Unmarshal([]byte(body), &st); err != nil || !st.Frozen || st.HeartbeatAgeMS <= st.StaleAfterMS || st.StaleAfterMS != 1500 {
			t.Errorf("status of a frozen gateway = %s (%v)", body, err)
		}
		ans, err := controlRequest(controlPath(e.stateDir), "status", 2*time.Second)
		if err != nil || !strings.Contains(ans, `"frozen":true`) {
			t.Errorf("control status of a frozen gateway = %q, %v", ans, err)
		}
		// The loop's own ping goes unanswered.
		if _, err := controlRequest(controlPath(e.stateDir), "ping", 500*time.Millisecond); err == nil {
			t.Error("a frozen loop answered ping")
		}
	})
}
