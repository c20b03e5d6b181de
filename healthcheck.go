package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strings"
	"syscall"
	"time"
)

// hermes healthcheck: one yes or no for a container runtime, in a bounded
// time, from inside an image that has nothing but hermes (no curl, no
// shell): Docker's HEALTHCHECK CMD ["/hermes","healthcheck"].
//
// It asks the control socket first: "status" is answered without the loop
// (control.go), from the heartbeat the loop publishes, so a frozen loop
// shows as an old heartbeat, not as silence that would cost the whole
// timeout. Where there is no control socket to ask (the state dir is not
// visible from here, another user's socket, a gateway that has not made
// one yet) it asks GET /readyz on the policy's listen address instead,
// which is answered the same way (routes.go). A gateway that answers
// neither is not running, or starting when its pid file proves a live
// process.

const healthcheckUsage = `Exit 0 when the gateway is serving and its loop ticks; 1 otherwise (frozen,
draining, starting, not running, unreachable), with one line saying why.
It asks the control socket, else GET /readyz on gateway.listen, and
answers within --timeout whatever state the gateway is in. For a container
runtime: it needs no curl and no shell in the image.

    $ hermes healthcheck
    $ hermes healthcheck --name gateway
    # Containerfile / Dockerfile:
    HEALTHCHECK CMD ["/hermes", "healthcheck"]

Exit codes: 0 healthy, 1 unhealthy (a broken policy too), 2 a bad command
line (Docker reserves 2: the HEALTHCHECK line above never has one).
`

// healthcheckTimeout bounds a whole healthcheck: the control socket gets
// statusTimeout of it, the HTTP fallback the rest. Docker's default
// HEALTHCHECK timeout is 30s and a Kubernetes exec probe's 1s: the
// fallback is rarely needed, and --timeout 1s fits an exec probe.
const healthcheckTimeout = 2 * statusTimeout

// health is a healthcheck's verdict: the one line, and whether it is healthy.
type health struct {
	ok   bool
	line string
}

func healthy(format string, args ...any) health {
	return health{ok: true, line: "healthy: " + fmt.Sprintf(format, args...)}
}

func unhealthy(verdict, format string, args ...any) health {
	return health{line: "unhealthy: " + verdict + ": " + fmt.Sprintf(format, args...)}
}

func runHealthcheck(args []string) error {
	fs := newFlagSet("healthcheck", healthcheckUsage)
	tf := addTargetFlags(fs)
	timeout := fs.Duration("timeout", healthcheckTimeout, "answer within this `DURATION` whatever the gateway does")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *timeout <= 0 {
		return usageErr("healthcheck: --timeout %s: give a positive duration, like 2s", *timeout)
	}
	var h health
	if t, err := tf.resolve("healthcheck", false); err != nil {
		h = health{line: "unhealthy: cannot tell: " + strings.ReplaceAll(err.Error(), "\n", "; ")}
	} else {
		h = checkHealth(t.p, time.Now().Add(*timeout))
	}
	fmt.Println(h.line)
	if !h.ok {
		return &exitError{code: exitFailure}
	}
	return nil
}

// checkHealth decides by the deadline, whatever the gateway does.
func checkHealth(p *Policy, deadline time.Time) health {
	ctl := controlPath(p.Gateway.StateDir)
	ans, err := controlRequest(ctl, "status", min(statusTimeout, time.Until(deadline)))
	switch {
	case err == nil:
		var gs gatewayStatus
		if jerr := json.Unmarshal([]byte(ans), &gs); jerr != nil {
			return unhealthy("unreachable", "%s answered with something that is not hermes status: %.60q", ctl, ans)
		}
		return healthOf(gs)
	case errors.Is(err, errNoAnswer):
		// status needs no loop, so silence there is a stuck runtime or a
		// gateway out of file descriptors: /readyz, answered from the
		// heartbeat, tells which.
		return viaReadyz(p, deadline, fmt.Sprintf("the control socket %s did not answer status within %s", ctl, statusTimeout), true)
	}
	why := controlProblem(ctl, err)
	return viaReadyz(p, deadline, why, false)
}

// controlProblem says, in a few words, why the control socket was no use.
func controlProblem(ctl string, err error) string {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "no control socket at " + ctl
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens on " + ctl
	case errors.Is(err, fs.ErrPermission):
		return "the control socket " + ctl + " is not ours to use"
	}
	return fmt.Sprintf("control socket %s: %v", ctl, err)
}

// healthOf judges the status the gateway published.
func healthOf(gs gatewayStatus) health {
	age := time.Duration(gs.HeartbeatAgeMS) * time.Millisecond
	stale := time.Duration(gs.StaleAfterMS) * time.Millisecond
	if gs.Frozen || (stale > 0 && age > stale) {
		return unhealthy(verdictFrozen, "pid %d is alive but its loop has not ticked for %s (frozen after %s)", gs.PID, fmtDur(age), fmtDur(stale))
	}
	switch gs.State {
	case stateServing:
		if gs.HandedOff {
			// Only in the moment before the successor's socket replaces
			// this one's: the next check reaches the successor.
			return unhealthy(verdictDraining, "pid %d has handed over to pid %d and drains", gs.PID, gs.Successor)
		}
		return healthy("serving, pid %d, loop ticked %s ago, %d sessions, listening on %s", gs.PID, fmtDur(age), gs.ActiveSessions, gs.Listen)
	case stateStarting:
		return unhealthy(verdictStarting, "pid %d is starting", gs.PID)
	case stateDraining:
		reason := gs.DrainReason
		if reason == "" {
			reason = "a stop"
		}
		return unhealthy(verdictDraining, "pid %d is draining (%s): %d sessions left", gs.PID, reason, gs.ActiveSessions)
	}
	return unhealthy(string(gs.State), "pid %d is %s", gs.PID, gs.State)
}

// viaReadyz asks GET /readyz on gateway.listen; why says why the control
// socket could not be asked. silent: it was asked, and said nothing; if
// /readyz says nothing either, the process's runtime is stuck: frozen.
func viaReadyz(p *Policy, deadline time.Time, why string, silent bool) health {
	addr := dialable(p.Gateway.Listen)
	left := time.Until(deadline)
	if left <= 0 {
		return unhealthy("unreachable", "%s, and no time was left to ask http://%s/readyz", why, addr)
	}
	code, body, err := getReadyz(addr, left)
	if err != nil {
		var ne net.Error
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			if pid, ok := livePid(p); ok {
				return unhealthy(verdictStarting, "pid %d runs but has no control socket and does not listen on %s yet (%s)", pid, addr, why)
			}
			return unhealthy(verdictNotRunning, "%s, and nothing listens on %s", why, addr)
		case errors.As(err, &ne) && ne.Timeout() && silent:
			return unhealthy(verdictFrozen, "%s, and http://%s/readyz did not answer within %s either", why, addr, fmtDur(left))
		case errors.As(err, &ne) && ne.Timeout():
			return unhealthy("unreachable", "%s, and http://%s/readyz did not answer within %s", why, addr, fmtDur(left))
		}
		return unhealthy("unreachable", "%s, and http://%s/readyz: %v", why, addr, err)
	}
	if code == http.StatusOK && body == string(stateServing) {
		return healthy("serving (http://%s/readyz; %s)", addr, why)
	}
	switch {
	case strings.HasPrefix(body, "frozen"):
		return unhealthy(verdictFrozen, "http://%s/readyz: %s", addr, strings.TrimPrefix(body, "frozen: "))
	case body == string(stateDraining) || body == string(stateStopping) || body == string(stateStarting):
		v := body
		if v == string(stateStopping) {
			v = verdictDraining
		}
		return unhealthy(v, "http://%s/readyz answered %d %s", addr, code, body)
	}
	return unhealthy("unreachable", "http://%s/readyz answered %d %.60q: not a hermes gateway?", addr, code, body)
}

// dialable turns a listen address into one to connect to: a wildcard
// host (0.0.0.0 in a container) is reached on loopback.
func dialable(listen string) string {
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		return listen
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::", "[::]":
		host = "::1"
	}
	return net.JoinHostPort(host, port)
}

// livePid is the pid the pid file proves alive, if any.
func livePid(p *Policy) (int, bool) {
	rec, err := readPidFile(pidFilePath(p.Gateway.StateDir))
	if err != nil {
		return 0, false
	}
	if ok, _ := rec.alive(); !ok {
		return 0, false
	}
	return rec.PID, true
}
