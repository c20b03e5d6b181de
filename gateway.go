package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// The gateway: one goroutine (loop) owns every piece of state that changes:
// the sessions, the lifecycle state, the policy. HTTP handlers, the control
// socket and the self-pipe talk to it through g.events; what they need to
// read without it (readyz, status) comes from a snapshot the loop publishes.

type gwState string

const (
	stateStarting gwState = "starting"
	stateServing  gwState = "serving"
	stateDraining gwState = "draining"
	stateStopping gwState = "stopping" // the drain ended: closing down
)

// Drain reasons, sent to clients in the final SSE event so they know to
// reconnect, and logged as the exit reason.
const (
	reasonShutdown = "gateway_shutdown"
	reasonRestart  = "gateway_restart"
)

// snapshot is what the loop publishes for readers that must not wait on it.
type snapshot struct {
	State    gwState
	Sessions int
	Reason   string // drain reason while draining
	Policy   *Policy
}

type session struct {
	id      string
	started time.Time
	path    string
	cancel  context.CancelCauseFunc
}

// cutCause is the cancel cause of a session the drain ended.
type cutCause struct{ reason string }

func (c *cutCause) Error() string { return "session cut: " + c.reason }

// Events for the loop.
type (
	openEvent struct {
		s     *session
		reply chan bool
	}
	closeEvent struct {
		id      string
		outcome string // finished, cut, client_gone
	}
	pingEvent  struct{ reply chan gwState }
	fatalEvent struct{ err error }
)

type gateway struct {
	pid      int
	started  time.Time
	flagPath string // --config as given, for reloads
	log      *logger
	pipe     *selfPipe
	notify   *notifier
	stateDir string
	listen   string

	policy atomic.Pointer[Policy]
	snap   atomic.Pointer[snapshot]
	events chan any
	done   chan struct{} // closed when the loop has returned
	sdWD   time.Duration // systemd's watchdog period, 0 if none
	// heartbeat is the loop's last tick (unix nanoseconds), read by the watchdog.
	heartbeat atomic.Int64

	srv    *http.Server
	ln     net.Listener
	client *http.Client

	// Owned by the loop.
	state    gwState
	sessions map[string]*session
	reason   string
	exitCode int
	failure  string // why the loop ended with exitFailure
	cutDone  bool   // sessions were told to finish now
}

func newGateway(p *Policy, flagPath string, pipe *selfPipe, log *logger) *gateway {
	g := &gateway{
		pid:      os.Getpid(),
		started:  time.Now(),
		flagPath: flagPath,
		log:      log,
		pipe:     pipe,
		notify:   newNotifier(),
		stateDir: p.Gateway.StateDir,
		listen:   p.Gateway.Listen,
		events:   make(chan any, 64),
		done:     make(chan struct{}),
		sdWD:     watchdogPeriod(),
		state:    stateStarting,
		sessions: make(map[string]*session),
	}
	g.policy.Store(p)
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true // pass the client's encoding through untouched
	g.client = &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	g.publish()
	return g
}

func (g *gateway) publish() {
	g.snap.Store(&snapshot{State: g.state, Sessions: len(g.sessions), Reason: g.reason, Policy: g.policy.Load()})
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// loop is the gateway's own loop. It returns the process's exit code.
func (g *gateway) loop(ready func()) int {
	wake := g.pipe.wakeups()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var drainTimer, graceTimer, extendTimer <-chan time.Time
	var drainStarted time.Time

	g.state = stateServing
	g.publish()
	g.beat()
	ready()
	testFault("freeze-after-ready")
	if testFaultSet("exit-after-ready") {
		// For tests only: a gateway that fails right after start, like a
		// crash, so the crash-loop guard has something to guard against.
		g.exitCode, g.failure = exitFailure, "test fault exit-after-ready"
		return g.exitCode
	}

	for {
		select {
		case <-wake:
			for _, sig := range g.pipe.take() {
				switch sig {
				case syscall.SIGHUP:
					g.log.info("signal", "signal", "HUP", "action", "reload")
					g.reload()
				case syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT:
					name := signalName(sig)
					if testFaultSet("ignore-stop-signals") {
						g.log.warn("signal", "signal", name, "action", "ignored (HERMES_TEST_FAULT)")
						continue
					}
					if g.state == stateServing {
						g.reason, g.exitCode = reasonShutdown, exitOK
						if sig == syscall.SIGUSR1 {
							g.reason, g.exitCode = reasonRestart, exitRestart
						}
						g.log.info("signal", "signal", name, "action", "drain", "reason", g.reason, "sessions", len(g.sessions))
						drainStarted = time.Now()
						drainTimer = g.startDrain()
						extendTimer = time.After(0)
					} else if sig != syscall.SIGUSR1 && !g.cutDone {
						// A second stop request during a drain: stop now. The
						// planned action becomes a stop (TERM means stop).
						g.reason, g.exitCode = reasonShutdown, exitOK
						g.log.info("signal", "signal", name, "action", "stop-now", "sessions", len(g.sessions))
						drainTimer = nil
						graceTimer = g.cutSessions(min(g.policy.Load().Drain.Grace, 800*time.Millisecond))
					} else {
						g.log.info("signal", "signal", name, "action", "none", "state", g.state, "sessions", len(g.sessions))
					}
					g.publish()
				}
			}
		case ev := <-g.events:
			switch ev := ev.(type) {
			case openEvent:
				ok := g.state == stateServing
				if ok {
					g.sessions[ev.s.id] = ev.s
				}
				ev.reply <- ok
			case closeEvent:
				if s, ok := g.sessions[ev.id]; ok {
					delete(g.sessions, ev.id)
					if g.state != stateServing || ev.outcome != "finished" {
						g.log.info("session "+ev.outcome, "session", ev.id, "path", s.path,
							"duration", time.Since(s.started), "sessions", len(g.sessions))
					}
				}
				if g.state == stateDraining {
					g.notify.send(fmt.Sprintf("STATUS=draining: %d sessions left", len(g.sessions)))
				}
			case pingEvent:
				ev.reply <- g.state
			case fatalEvent:
				g.log.errorf("serve failed", "error", ev.err)
				g.exitCode, g.failure = exitFailure, ev.err.Error()
				return g.exitCode
			}
			g.publish()
		case <-tick.C:
			g.beat()
		case <-drainTimer:
			drainTimer = nil
			g.log.info("drain timeout", "timeout", g.policy.Load().Drain.Timeout, "sessions", len(g.sessions))
			graceTimer = g.cutSessions(g.policy.Load().Drain.Grace)
		case <-graceTimer:
			g.log.warn("drain grace over", "sessions", len(g.sessions))
			return g.exitCode
		case <-extendTimer:
			// Keep systemd's stop timeout ahead of the drain the policy allows,
			// even when a reload lengthened it after the unit was written.
			d := g.policy.Load().Drain
			left := d.Budget() - time.Since(drainStarted)
			g.notify.send("EXTEND_TIMEOUT_USEC=" + usec(max(left, 0)+autoWaitMargin))
			extendTimer = time.After(5 * time.Second)
		}
		if g.state == stateDraining && len(g.sessions) == 0 {
			g.log.info("drain end", "reason", g.reason, "duration", time.Since(drainStarted).Round(time.Millisecond))
			g.state = stateStopping
			g.publish()
			return g.exitCode
		}
	}
}

func (g *gateway) beat() {
	g.heartbeat.Store(time.Now().UnixNano())
	if g.state != stateStopping {
		g.sdWatchdog()
	}
}

// startDrain stops taking sessions and returns the drain timer.
func (g *gateway) startDrain() <-chan time.Time {
	g.state = stateDraining
	g.srv.SetKeepAlivesEnabled(false)
	d := g.policy.Load().Drain
	g.log.info("drain start", "reason", g.reason, "sessions", len(g.sessions), "timeout", d.Timeout, "grace", d.Grace)
	g.notify.send("STOPPING=1", fmt.Sprintf("STATUS=draining (%s): %d sessions left", g.reason, len(g.sessions)))
	return time.After(d.Timeout)
}

// cutSessions tells every open session to send its final event and end,
// and returns the timer after which the gateway exits regardless.
func (g *gateway) cutSessions(grace time.Duration) <-chan time.Time {
	if g.state == stateServing {
		g.state = stateDraining
	}
	g.cutDone = true
	for _, s := range g.sessions {
		s.cancel(&cutCause{reason: g.reason})
	}
	return time.After(grace)
}

// reload re-reads the policy. A bad file is logged and changes nothing.
func (g *gateway) reload() {
	old := g.policy.Load()
	g.notify.send("RELOADING=1")
	defer g.notify.send("READY=1", "STATUS=serving")
	p, err := loadPolicy(g.flagPath)
	if err != nil {
		g.log.errorf("reload failed", "error", err, "policy", old.policyLabel(), "action", "keeping the running policy")
		return
	}
	// What was bound at start stays until a restart.
	var later []string
	if p.Gateway.Listen != g.listen {
		later = append(later, "gateway.listen")
		p.Gateway.Listen = g.listen
	}
	if p.Gateway.StateDir != g.stateDir {
		later = append(later, "gateway.state_dir")
		p.Gateway.StateDir = g.stateDir
	}
	if p.Name != old.Name {
		later = append(later, "name")
		p.Name = old.Name
	}
	if len(later) > 0 {
		g.log.warn("reload partial", "keys", strings.Join(later, ","), "note", "these take effect after a restart")
	}
	g.policy.Store(p)
	g.log.info("reload ok", "policy", p.policyLabel())
}

// ServeHTTP routes: /healthz, /readyz, /status answer from the snapshot;
// /v1/... is a session.
func (g *gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/healthz":
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "ok\n")
	case r.URL.Path == "/readyz":
		w.Header().Set("Content-Type", "text/plain")
		st := g.snap.Load().State
		if st != stateServing {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintln(w, st)
	case r.URL.Path == "/status":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(g.status())
	case strings.HasPrefix(r.URL.Path, "/v1/"):
		g.serveSession(w, r)
	default:
		writeAPIError(w, http.StatusNotFound, "invalid_request_error", "unknown_url",
			fmt.Sprintf("no route for %s: the gateway serves /v1/..., /healthz, /readyz and /status", r.URL.Path))
	}
}

// gatewayStatus is the JSON of /status and the control socket's status.
type gatewayStatus struct {
	PID            int     `json:"pid"`
	State          gwState `json:"state"`
	UptimeSeconds  float64 `json:"uptime_seconds"`
	Uptime         string  `json:"uptime"`
	ActiveSessions int     `json:"active_sessions"`
	Version        string  `json:"version"`
	Policy         string  `json:"policy"`
	Name           string  `json:"name"`
	Listen         string  `json:"listen"`
	DrainReason    string  `json:"drain_reason,omitempty"`
}

func (g *gateway) status() gatewayStatus {
	s := g.snap.Load()
	up := time.Since(g.started)
	return gatewayStatus{
		PID: g.pid, State: s.State, UptimeSeconds: up.Seconds(), Uptime: up.Round(time.Second).String(),
		ActiveSessions: s.Sessions, Version: version, Policy: s.Policy.policyLabel(),
		Name: s.Policy.Name, Listen: g.listen, DrainReason: s.Reason,
	}
}

// responseRecorder remembers what a session has written, so the final
// event can be an SSE event (stream started) or a JSON error (nothing sent).
type responseRecorder struct {
	http.ResponseWriter
	wroteHeader bool
}

func (r *responseRecorder) WriteHeader(code int) {
	r.wroteHeader = true
	r.ResponseWriter.WriteHeader(code)
}

func (r *responseRecorder) Write(b []byte) (int, error) {
	r.wroteHeader = true
	return r.ResponseWriter.Write(b)
}

func (r *responseRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func (r *responseRecorder) sse() bool {
	return strings.HasPrefix(r.Header().Get("Content-Type"), "text/event-stream")
}

// serveSession runs one in-flight request as a session the drain can see.
func (g *gateway) serveSession(w http.ResponseWriter, r *http.Request) {
	s := &session{id: newID(), started: time.Now(), path: r.URL.Path}
	ctx, cancel := context.WithCancelCause(r.Context())
	defer cancel(nil)
	s.cancel = cancel
	reply := make(chan bool, 1)
	select {
	case g.events <- openEvent{s: s, reply: reply}:
	case <-r.Context().Done():
		return
	}
	var accepted bool
	select {
	case accepted = <-reply:
	case <-r.Context().Done():
		return
	}
	p := g.policy.Load()
	if !accepted {
		w.Header().Set("Retry-After", fmt.Sprint(int(p.Service.RestartSec.Seconds())+1))
		w.Header().Set("Connection", "close")
		writeAPIError(w, http.StatusServiceUnavailable, "server_error", g.snap.Load().Reason,
			"the gateway is draining for a "+strings.TrimPrefix(g.snap.Load().Reason, "gateway_")+"; retry shortly")
		return
	}
	w.Header().Set("X-Hermes-Session", s.id)
	rec := &responseRecorder{ResponseWriter: w}
	r = r.WithContext(ctx)
	if p.Gateway.Upstream == "" {
		serveEcho(rec, r, p.Echo.WordDelay)
	} else {
		g.proxy(rec, r, p)
	}
	outcome := "finished"
	var cc *cutCause
	if errors.As(context.Cause(ctx), &cc) {
		outcome = "cut"
		g.finalEvent(rec, cc.reason, p.Drain.Grace)
	} else if r.Context().Err() != nil && ctx.Err() != nil {
		outcome = "client_gone"
	}
	g.send(closeEvent{id: s.id, outcome: outcome})
}

// send hands an event to the loop, or drops it once the loop has returned.
func (g *gateway) send(ev any) {
	select {
	case g.events <- ev:
	case <-g.done:
	}
}

// sdWatchdog pings systemd's watchdog. It is called from the loop's tick
// only, so a frozen loop stops the pings and systemd sees it too.
func (g *gateway) sdWatchdog() {
	if g.sdWD > 0 {
		g.notify.send("WATCHDOG=1")
	}
}

// finalEvent tells a client whose session the drain ended why, so it knows
// to reconnect: an SSE error event if the stream had started, else a 503.
func (g *gateway) finalEvent(rec *responseRecorder, reason string, grace time.Duration) {
	rc := http.NewResponseController(rec)
	rc.SetWriteDeadline(time.Now().Add(max(grace, 100*time.Millisecond)))
	msg := "the gateway is shutting down; reconnect to continue"
	if reason == reasonRestart {
		msg = "the gateway is restarting; reconnect in a few seconds to continue"
	}
	body, _ := json.Marshal(map[string]any{
		"reason": reason,
		"error":  map[string]any{"message": msg, "type": reason, "code": reason},
	})
	if !rec.wroteHeader {
		rec.Header().Set("Connection", "close")
		rec.Header().Set("Content-Type", "application/json")
		rec.WriteHeader(http.StatusServiceUnavailable)
		rec.Write(append(body, '\n'))
		return
	}
	if rec.sse() {
		fmt.Fprintf(rec, "event: error\ndata: %s\n\n", body)
		rc.Flush()
	}
}

var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"}

// proxy passes the request to the upstream and streams the answer back chunk
// by chunk as it arrives: SSE is never buffered. The API key is added here,
// on the upstream side only.
func (g *gateway) proxy(w *responseRecorder, r *http.Request, p *Policy) {
	base := strings.TrimSuffix(p.Gateway.Upstream, "/")
	path := r.URL.Path
	if strings.HasSuffix(base, "/v1") {
		path = strings.TrimPrefix(path, "/v1")
	}
	target := base + path
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	// The transport may still be reading the request body (its final EOF
	// check) when the upstream's answer starts; without full duplex the
	// HTTP/1 server closes that body at our first write and the transport
	// then drops the upstream connection mid-stream.
	http.NewResponseController(w).EnableFullDuplex()
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, r.Body)
	if err != nil {
		writeAPIError(w, http.StatusBadGateway, "server_error", "bad_upstream", "cannot build the upstream request")
		return
	}
	req.ContentLength = r.ContentLength
	for k, vs := range r.Header {
		req.Header[k] = vs
	}
	for _, h := range hopHeaders {
		req.Header.Del(h)
	}
	if p.Gateway.UpstreamKeyEnv != "" {
		if key := os.Getenv(p.Gateway.UpstreamKeyEnv); key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
	}
	resp, err := g.client.Do(req)
	if err != nil {
		if r.Context().Err() != nil {
			return
		}
		g.log.warn("upstream error", "error", redactURL(err, target), "path", r.URL.Path)
		writeAPIError(w, http.StatusBadGateway, "server_error", "upstream_unreachable", "the gateway could not reach its upstream")
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	for _, h := range hopHeaders {
		w.Header().Del(h)
	}
	w.WriteHeader(resp.StatusCode)
	rc := http.NewResponseController(w)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return // the client went away
			}
			if rc.Flush() != nil {
				return
			}
		}
		if err != nil {
			if err != io.EOF && r.Context().Err() == nil {
				g.log.warn("upstream stream broken", "error", err, "path", r.URL.Path)
			}
			return
		}
	}
}

// redactURL keeps the error but drops the query string of target, which may
// carry credentials some APIs take there.
func redactURL(err error, target string) string {
	msg := err.Error()
	if i := strings.Index(target, "?"); i >= 0 {
		msg = strings.ReplaceAll(msg, target, target[:i]+"?…")
	}
	return msg
}

const serveUsage = `Run the gateway in the foreground.

    $ hermes serve
    $ hermes serve --config /etc/hermes/hermes.toml

Signals: TERM or INT drain and exit 0; USR1 drains and exits 75 (restart);
HUP reloads the policy; a second TERM or INT during a drain stops now.
`

func runServe(args []string) (err error) {
	// First thing: until Notify runs, TERM/INT/HUP kill us and USR1 is lost.
	pipe, err := installSignals()
	if err != nil {
		return err
	}
	defer pipe.close()

	fs := newFlagSet("serve", serveUsage)
	configPath := fs.String("config", "", "policy `FILE` (default: see 'hermes help')")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log := newLogger(os.Stderr)
	p, err := loadPolicy(*configPath)
	if err != nil {
		log.errorf("exit", "code", exitConfig, "reason", "policy error", "error", err)
		return &exitError{code: exitConfig, err: err}
	}
	// From here on every lifecycle log line is a journal line too.
	log.sink = openJournal(p).logSink
	for _, w := range p.Warnings {
		log.warn("policy warning", "warning", w)
	}
	if err := os.MkdirAll(p.Gateway.StateDir, 0o700); err != nil {
		log.errorf("exit", "code", exitFailure, "reason", "cannot create the state dir", "error", err)
		return fmt.Errorf("creating state dir: %w", err)
	}

	// From here on the exit is logged (and so journaled) and recorded in the
	// start ledger once, by the defer below or by the watchdog: `hermes
	// status` shows the recent exits and why, lock conflicts included.
	pid := os.Getpid()
	exitReason := ""
	var exited atomic.Bool
	logExit := func(code int, reason string, err error) {
		if !exited.CompareAndSwap(false, true) {
			return
		}
		kv := []any{"code", code, "reason", reason}
		var ee *exitError
		if err != nil && !(errors.As(err, &ee) && ee.err == nil) {
			kv = append(kv, "error", err)
		}
		if code == exitOK || code == exitRestart {
			log.info("exit", kv...)
		} else {
			log.errorf("exit", kv...)
		}
		recordExit(p.Gateway.StateDir, pid, code, reason)
	}
	defer func() {
		if exitReason == "" {
			exitReason = "failure"
		}
		logExit(codeOf(err), exitReason, err)
	}()

	inst, err := lockInstance(p.Gateway.StateDir)
	if err != nil {
		exitReason = "instance already running"
		return &exitError{code: exitConfig, err: err}
	}
	defer inst.Close()

	// One token, one gateway: a conflict exits 78 before this gateway counts
	// as a start, and nothing (systemd, launchd, hermes restart) loops on 78.
	token, err := readLockToken(p)
	if err != nil {
		exitReason = "policy error"
		return &exitError{code: exitConfig, err: err}
	}
	if token != "" {
		warnReadable(log, p)
	} else if p.Lock.TokenEnv != "" || p.Lock.TokenFile != "" {
		log.warn("token lock off", "reason", "lock.token_env and lock.token_file give no token",
			"token_env", p.Lock.TokenEnv, "token_file", p.Lock.TokenFile)
	}
	tokLock, err := acquireTokenLock(p, token, log)
	if err != nil {
		exitReason = "lock conflict"
		return err
	}
	if tokLock != nil {
		defer tokLock.Close()
	}

	// Every start goes into the ledger the crash-loop guard reads.
	ledger, lerr := recordStart(p.Gateway.StateDir, pid, time.Now())
	if lerr != nil {
		log.warn("start ledger", "error", lerr)
	}

	// The pid file goes up before any crash-loop delay, so `hermes status`
	// and `hermes restart` see a live gateway waiting out its backoff (and
	// can end the wait with a signal) rather than "not running". It is
	// written again with the listen address once the gateway listens.
	self, err := selfRecord()
	if err != nil {
		return err
	}
	self.Name, self.Policy = p.Name, p.Path
	pidPath := pidFilePath(p.Gateway.StateDir)
	if err := writePidFile(pidPath, self); err != nil {
		exitReason = "cannot write the pid file"
		return err
	}
	defer removeOwnPidFile(pidPath, self)

	if code, stop := crashLoopDelay(ledger, p, pipe, newNotifier(), log); stop {
		exitReason = "stopped during crash-loop delay"
		if code == exitOK {
			return nil
		}
		exitReason = "restart requested during crash-loop delay"
		return &exitError{code: code}
	}

	g := newGateway(p, *configPath, pipe, log)
	log.info("start", "version", version, "name", p.Name, "policy", p.policyLabel(), "listen", p.Gateway.Listen,
		"upstream", upstreamLabel(p), "state_dir", p.Gateway.StateDir)

	ln, err := net.Listen("tcp", p.Gateway.Listen)
	if err != nil {
		exitReason = "cannot listen"
		return fmt.Errorf("listening on %s: %w", p.Gateway.Listen, err)
	}
	g.ln = ln
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}

	ctlPath := controlPath(p.Gateway.StateDir)
	ctl, err := listenControl(ctlPath)
	if err != nil {
		ln.Close()
		exitReason = "cannot listen on the control socket"
		return err
	}
	self.Listen, self.Control = ln.Addr().String(), ctlPath
	if err := writePidFile(pidPath, self); err != nil {
		ln.Close()
		ctl.Close()
		exitReason = "cannot write the pid file"
		return err
	}

	go func() {
		if err := g.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			g.send(fatalEvent{err: fmt.Errorf("http server: %w", err)})
		}
	}()
	go g.serveControl(ctl)
	g.startWatchdog(func(code int, reason string) {
		ctl.Close() // unlinks the socket: status must not find a dead one
		removeOwnPidFile(pidPath, self)
		logExit(code, reason, nil)
	})

	code := g.loop(func() {
		g.notify.send("READY=1", "STATUS=serving", fmt.Sprintf("MAINPID=%d", g.pid))
		log.info("ready", "listen", ln.Addr().String(), "pid_file", pidPath, "control", ctlPath)
	})
	close(g.done)

	// Every session has ended or was told to; close what is left.
	ctl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	if err := g.srv.Shutdown(ctx); err != nil {
		g.srv.Close()
	}
	cancel()
	exitReason = map[int]string{exitOK: "planned stop", exitRestart: "planned restart", exitFailure: "failure"}[code]
	if code == exitFailure && g.failure != "" {
		exitReason = g.failure
	}
	if code == exitOK {
		return nil
	}
	return &exitError{code: code}
}

// codeOf is the exit code err will end the process with (see exitCode).
func codeOf(err error) int {
	var ee *exitError
	var ce *configError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.As(err, &ce):
		return exitConfig
	}
	return exitFailure
}

func upstreamLabel(p *Policy) string {
	if p.Gateway.Upstream == "" {
		return "built-in echo"
	}
	return p.Gateway.Upstream
}

// lockInstance holds state_dir/gateway.lock for the process's life, so two
// gateways of one instance never share a pid file and control socket. The
// kernel drops the flock when the process dies: it cannot go stale.
func lockInstance(stateDir string) (*os.File, error) {
	path := filepath.Join(stateDir, "gateway.lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	if err := flockExclusive(f); err != nil {
		f.Close()
		holder := "another process"
		if rec, rerr := readPidFile(pidFilePath(stateDir)); rerr == nil {
			holder = fmt.Sprintf("pid %d (policy %s)", rec.PID, orDefault(rec.Policy, "built-in defaults"))
		}
		return nil, withHint(fmt.Errorf("another gateway already runs with state dir %s: %s", stateDir, holder),
			"stop it first with 'hermes stop', or give this one another name in its policy")
	}
	return f, nil
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// testFault blocks the calling goroutine forever when HERMES_TEST_FAULT
// names the fault. It exists for tests only: it is how the test suite makes
// a gateway whose loop is frozen. Never set HERMES_TEST_FAULT in production.
// The faults: freeze-after-ready (the loop blocks forever right after
// READY) and exit-after-ready (the gateway exits 1 right after READY, like
// a crash; see loop).
func testFault(name string) {
	if testFaultSet(name) {
		freezeLoopForTest()
	}
}

// testFaultSet reports whether the test-only fault is enabled. The faults:
// freeze-after-ready (the loop blocks forever once ready) and
// ignore-stop-signals (the loop drops TERM, INT and USR1 but answers ping).
func testFaultSet(name string) bool { return os.Getenv("HERMES_TEST_FAULT") == name }

// freezeLoopForTest is named so that a stack dump says plainly what froze.
func freezeLoopForTest() {
	block := make(chan struct{})
	<-block
}
