package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Alerts: one JSON object POSTed to alerts.webhook_url per incident (and,
// optionally, one Telegram message to an operator chat), so an operator
// hears of an outage from hermes, not from a user twelve minutes later.
//
// Delivery never blocks the loop: an incident is a value on a bounded
// queue (a full queue drops it and counts it), and one goroutine sends,
// each attempt bounded by alerts.timeout, with alerts.retries more after
// a failure. A process about to exit (the watchdog's exit 70, a policy or
// lock error's 78) gives its alerts the first three quarters of the
// journal.exit_flush its log lines have (the rest is for the lines saying
// how the alerts went), and no more; what did not get out by then is written to
// <state_dir>/alerts-pending.jsonl and sent by the next gateway that
// starts, marked "late". Every alert sent or given up is journaled.
//
// Episodes alert twice: when they begin ("firing") and when they end
// ("resolved"); one-off incidents once. An episode that outlives the
// process (a crash loop spans many) is kept open in <state_dir>/
// alerts-open.json, so the next process neither repeats nor loses it.
//
// No alert carries a secret: every string in it is scrubbed of the
// policy's secrets by value, and the webhook URL (which may hold a token
// of its own) is one of them.

type alert struct {
	Instance string         `json:"instance"`
	Host     string         `json:"host"`
	PID      int            `json:"pid"`
	Event    string         `json:"event"`
	State    string         `json:"state,omitempty"` // firing or resolved, for episodes
	Time     time.Time      `json:"time"`
	Summary  string         `json:"summary"`
	Detail   map[string]any `json:"detail,omitempty"`
	Late     bool           `json:"late,omitempty"` // sent by a later process: its own could not
}

const alertQueueLen = 64

type alerter struct {
	p        *Policy
	url      string
	log      *logger
	secrets  *redactor
	host     string
	tg       atomic.Pointer[func(ctx context.Context, chat int64, text string) error] // nil without a bot
	q        chan alert
	busy     sync.WaitGroup // queued or being sent
	dropped  atomic.Uint64
	sendingM sync.Mutex
	sending  *alert // the alert being sent now
	client   *http.Client
	openMu   sync.Mutex
}

// alertWebhook returns the webhook URL the policy names, or "".
func alertWebhook(p *Policy) string {
	if e := p.Alerts.WebhookURLEnv; e != "" {
		if u := strings.TrimSpace(os.Getenv(e)); u != "" {
			return u
		}
	}
	return p.Alerts.WebhookURL
}

// newAlerter returns the alerter for p, or nil when p sends no alerts.
func newAlerter(p *Policy, log *logger) *alerter {
	u := alertWebhook(p)
	if u == "" && p.Alerts.TelegramChat == 0 {
		return nil
	}
	log.secrets.add(u)
	host, _ := os.Hostname()
	a := &alerter{p: p, url: u, log: log, secrets: log.secrets, host: host, q: make(chan alert, alertQueueLen),
		client: &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}}
	go a.run()
	return a
}

func (a *alerter) hostName() string {
	if a == nil {
		h, _ := os.Hostname()
		return h
	}
	return a.host
}

// fire queues an alert. It never waits.
func (a *alerter) fire(event, state, summary string, kv ...any) {
	if a == nil {
		return
	}
	al := alert{Instance: a.p.Name, Host: a.host, PID: os.Getpid(), Event: event, State: state, Time: time.Now().UTC(),
		Summary: a.secrets.scrub(summary), Detail: map[string]any{}}
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		switch x := v.(type) {
		case error:
			v = a.secrets.scrub(x.Error())
		case string:
			v = a.secrets.scrub(x)
		case time.Duration:
			v = x.String()
		case fmt.Stringer:
			v = a.secrets.scrub(x.String())
		}
		al.Detail[fmt.Sprint(kv[i])] = v
	}
	a.enqueue(al)
}

func (a *alerter) enqueue(al alert) {
	a.busy.Add(1)
	select {
	case a.q <- al:
	default:
		a.busy.Done()
		a.dropped.Add(1)
	}
}

func (a *alerter) run() {
	for al := range a.q {
		a.sendingM.Lock()
		a.sending = &al
		a.sendingM.Unlock()
		a.deliver(al)
		a.sendingM.Lock()
		a.sending = nil
		a.sendingM.Unlock()
		a.busy.Done()
	}
}

// deliver sends one alert, retrying, and journals how it went.
func (a *alerter) deliver(al alert) {
	body, _ := json.Marshal(al)
	var errs []string
	if a.url != "" {
		var err error
		for try := 0; try <= a.p.Alerts.Retries; try++ {
			if try > 0 {
				time.Sleep(time.Duration(try) * 500 * time.Millisecond)
			}
			if err = a.post(body); err == nil {
				a.log.info(evAlertSent, "alert", al.Event, "state", al.State, "to", "webhook "+a.webhookHost(), "attempts", try+1, "late", al.Late)
				break
			}
		}
		if err != nil {
			errs = append(errs, "webhook: "+err.Error())
		}
	}
	if tg := a.tg.Load(); tg != nil && a.p.Alerts.TelegramChat != 0 {
		ctx, cancel := context.WithTimeout(context.Background(), a.p.Alerts.Timeout)
		err := (*tg)(ctx, a.p.Alerts.TelegramChat, "hermes alert: "+al.Summary)
		cancel()
		if err != nil {
			errs = append(errs, "telegram: "+err.Error())
		} else {
			a.log.info(evAlertSent, "alert", al.Event, "state", al.State, "to", "telegram chat", "late", al.Late)
		}
	}
	if len(errs) > 0 {
		a.log.warn(evAlertFailed, "alert", al.Event, "state", al.State, "error", a.secrets.scrub(strings.Join(errs, "; ")))
	}
}

func (a *alerter) webhookHost() string {
	if u, err := url.Parse(a.url); err == nil {
		return u.Host
	}
	return "?"
}

func (a *alerter) post(body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), a.p.Alerts.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.url, bytes.NewReader(body))
	if err != nil {
		return errors.New("alerts.webhook_url is not a URL")
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hermes/"+version)
	resp, err := a.client.Do(req)
	if err != nil {
		err = withoutURL(err)
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("no answer within alerts.timeout (%s)", a.p.Alerts.Timeout)
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode >= 300 {
		return fmt.Errorf("HTTP %d", resp.StatusCode)
	}
	return nil
}

// flush waits for the queued alerts until deadline; whatever has not gone
// out by then is written to alerts-pending.jsonl for the next gateway.
func (a *alerter) flush(deadline time.Time, stateDir string) {
	if a == nil {
		return
	}
	done := make(chan struct{})
	go func() { a.busy.Wait(); close(done) }()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return
	case <-t.C:
	}
	var left []alert
	a.sendingM.Lock()
	if a.sending != nil {
		left = append(left, *a.sending)
	}
	a.sendingM.Unlock()
	for {
		select {
		case al := <-a.q:
			left = append(left, al)
			continue
		default:
		}
		break
	}
	if len(left) == 0 {
		return
	}
	var b bytes.Buffer
	for _, al := range left {
		line, _ := json.Marshal(al)
		b.Write(line)
		b.WriteByte('\n')
	}
	f, err := os.OpenFile(pendingAlertsPath(stateDir), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err == nil {
		f.Write(b.Bytes())
		f.Close()
	}
}

func pendingAlertsPath(stateDir string) string {
	return filepath.Join(stateDir, "alerts-pending.jsonl")
}

// sendPending queues the alerts an earlier process could not send, marked
// late.
func (a *alerter) sendPending(stateDir string) {
	if a == nil {
		return
	}
	path := pendingAlertsPath(stateDir)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	os.Remove(path)
	for _, line := range bytes.Split(b, []byte("\n")) {
		var al alert
		if json.Unmarshal(line, &al) == nil && al.Event != "" {
			al.Late = true
			a.enqueue(al)
		}
	}
}

// Episodes that outlive a process.

func openAlertsPath(stateDir string) string { return filepath.Join(stateDir, "alerts-open.json") }

// episode opens (open true) or closes an episode kept on disk, and reports
// whether that changed anything: only a change alerts.
func (a *alerter) episode(stateDir, name string, open bool) bool {
	if a == nil {
		return false
	}
	a.openMu.Lock()
	defer a.openMu.Unlock()
	m := map[string]time.Time{}
	if b, err := os.ReadFile(openAlertsPath(stateDir)); err == nil {
		json.Unmarshal(b, &m)
	}
	_, was := m[name]
	if was == open {
		return false
	}
	if open {
		m[name] = time.Now().UTC()
	} else {
		delete(m, name)
	}
	b, _ := json.Marshal(m)
	writeFileAtomic(openAlertsPath(stateDir), b, 0o600)
	return true
}

// fromEvent turns a logged lifecycle event into an alert where it is an
// incident. The logger calls it for every line, from any goroutine (the
// loop's included): it only queues.
func (a *alerter) fromEvent(level string, ev event, kv []any) {
	get := func(k string) string {
		for i := 0; i+1 < len(kv); i += 2 {
			if fmt.Sprint(kv[i]) == k {
				return fmt.Sprint(kv[i+1])
			}
		}
		return ""
	}
	name := a.p.Name
	switch ev {
	case evWatchdog:
		a.fire("watchdog", "", fmt.Sprintf("hermes %q on %s: the gateway loop froze in %s (%s); the watchdog dumped its stacks and exits 70 so it is restarted", name, a.host, get("stuck_in"), get("reason")), kv...)
	case evUncleanExit:
		a.fire("unclean_exit", "", fmt.Sprintf("hermes %q on %s: the gateway before this one (pid %s) died without an exit (SIGKILL, the OOM killer, a power cut?); last seen alive %s", name, a.host, get("dead_pid"), get("last_seen")), kv...)
	case evLockConflict:
		a.fire("lock_conflict", "", fmt.Sprintf("hermes %q on %s: not started: pid %s (instance %s) holds the same token", name, a.host, get("holder_pid"), get("holder_instance")), kv...)
	case evHandoffFailed:
		a.fire("handoff_failed", "", fmt.Sprintf("hermes %q on %s: a handoff failed (%s); the old gateway serves on", name, a.host, get("reason")), kv...)
	case evCrashLoopDelay:
		// The episode's state is a file: read and written off the caller,
		// which may be any goroutine, and must not wait on the disk.
		summary := fmt.Sprintf("hermes %q on %s: crash loop: %s starts within %s; each start is delayed (now %s)", name, a.host, get("starts"), get("window"), get("delay"))
		a.busy.Add(1)
		go func() {
			defer a.busy.Done()
			if a.episode(a.p.Gateway.StateDir, "crash_loop", true) {
				a.fire("crash_loop", "firing", summary, kv...)
			}
		}()
	}
}

// A gateway that has stayed up for crash_loop.window ends a crash loop.
func (a *alerter) watchCrashLoopEnd(done <-chan struct{}) {
	if a == nil {
		return
	}
	go func() {
		t := time.NewTimer(a.p.CrashLoop.Window)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			if a.episode(a.p.Gateway.StateDir, "crash_loop", false) {
				a.fire("crash_loop", "resolved", fmt.Sprintf("hermes %q on %s: the crash loop is over: the gateway has served for %s", a.p.Name, a.host, a.p.CrashLoop.Window))
			}
		}
	}()
}

// upstreamWatch notices the upstream unreachable for longer than
// alerts.upstream_down_after: every request that got no answer at all
// counts, every answer ends it. Atomics only: it is on the request path.
type upstreamWatch struct {
	since   atomic.Int64 // monoNanos of the first failure in a row; 0 when answering
	alerted atomic.Bool
}

func (g *gateway) upstreamFailed(err error) { g.upstreamFailedSince(err, time.Now()) }

// upstreamFailedSince is upstreamFailed for an upstream silent since
// started (a request that timed out): it has been down since then.
func (g *gateway) upstreamFailedSince(err error, started time.Time) {
	w := &g.upWatch
	now := monoNow()
	w.since.CompareAndSwap(0, monoNanos(started))
	p := g.policy.Load()
	down := time.Duration(now - w.since.Load())
	if g.alerts != nil && down >= p.Alerts.UpstreamDownFor && w.alerted.CompareAndSwap(false, true) {
		g.alerts.fire("upstream_unreachable", "firing", fmt.Sprintf("hermes %q on %s: the upstream has not answered for %s: %s", p.Name, g.alerts.host, down.Round(time.Second), g.log.secrets.scrub(err.Error())), "error", err)
	}
}

func (g *gateway) upstreamAnswered() {
	w := &g.upWatch
	if w.since.Load() == 0 {
		return
	}
	since := w.since.Swap(0)
	if w.alerted.CompareAndSwap(true, false) && since != 0 {
		p := g.policy.Load()
		g.alerts.fire("upstream_unreachable", "resolved", fmt.Sprintf("hermes %q on %s: the upstream answers again, after %s", p.Name, g.alerts.host, time.Duration(monoNow()-since).Round(time.Second)))
	}
}

// alertNow sends one alert from a command about to exit (hermes restart
// that failed), within alerts.timeout per attempt and alerts.retries.
func alertNow(p *Policy, log *logger, event, summary string, kv ...any) {
	a := newAlerter(p, log)
	if a == nil {
		return
	}
	a.fire(event, "", summary, kv...)
	a.flush(time.Now().Add(time.Duration(p.Alerts.Retries+1)*p.Alerts.Timeout+time.Second), p.Gateway.StateDir)
}
