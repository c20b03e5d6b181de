package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// Verdicts: what the gateway is doing, decided before anything is done to it.
const (
	verdictServing    = "serving"
	verdictStarting   = "starting"
	verdictDraining   = "draining"
	verdictFrozen     = "frozen"  // alive, but its loop does not answer ping
	verdictStopped    = "stopped" // SIGSTOPped (state T)
	verdictZombie     = "zombie"  // exited, not yet reaped
	verdictCrashLoop  = "crash-looping"
	verdictNotRunning = "not running"
	verdictNoFDs      = "out of file descriptors" // alive, answers nothing, holds all its descriptors: not proven frozen
)

// Asking the gateway. status is answered without its loop, from the loop's
// heartbeat: a loop that missed staleTicks heartbeats is frozen (the
// gateway reports its own threshold). A gateway whose control socket does
// not answer status at all within statusTimeout has a stuck runtime, not
// just a stuck loop: frozen too. A ping is answered by the loop itself; it
// is used after SIGCONT, to give a resumed loop the chance to tick.
const (
	statusTimeout = time.Second
	pingTimeout   = 300 * time.Millisecond
	pingTries     = 3
)

// inspection is what hermes knows about the gateway before acting.
type inspection struct {
	Verdict string      `json:"verdict"`
	Detail  string      `json:"detail,omitempty"`
	PID     int         `json:"pid,omitempty"`
	Record  *pidRecord  `json:"-"`
	Stale   bool        `json:"stale_pid_file,omitempty"`
	Manager managerInfo `json:"manager"`
	Gateway *gatewayStatus
	proc    *procHandle // open while the gateway is proven alive
	policy  *Policy
	// controlDeaf: its control socket did not answer, and the verdict
	// came from its listen address (viaListen) or its descriptors.
	controlDeaf   bool
	byControl     bool   // found by its control socket, not by its pid file (findByControl)
	listenProblem string // why the listen address did not tell, when it did not
}

// inspect finds the gateway and proves it before anything touches it: a pid
// file whose pid now belongs to another process (pid reuse) is reported as
// stale and the process is never signalled.
func inspect(p *Policy, mgr managerInfo) *inspection {
	in := &inspection{Verdict: verdictNotRunning, Manager: mgr, policy: p}
	pidPath := pidFilePath(p.Gateway.StateDir)
	rec, err := readPidFile(pidPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		in.Detail = "no pid file"
	case err != nil:
		in.Detail = err.Error()
	default:
		in.Record = &rec
		alive, _ := rec.alive()
		if !alive {
			in.Stale = true
			in.Detail = fmt.Sprintf("stale pid file: pid %d is no longer the gateway it recorded", rec.PID)
			if _, _, err := procInfo(rec.PID); err == nil {
				in.Detail += fmt.Sprintf(" (it now belongs to %q, which hermes leaves alone)", procExe(rec.PID))
			}
			break
		}
		h, err := openProc(rec.PID, rec.StartTime)
		if err != nil {
			in.Stale = true
			in.Detail = fmt.Sprintf("stale pid file: pid %d: %v", rec.PID, err)
			break
		}
		in.proc, in.PID = h, rec.PID
		switch h.state() {
		case 0:
			in.Detail = fmt.Sprintf("pid %d exited just now", rec.PID)
			h.close()
			in.proc, in.PID = nil, 0
		case 'Z':
			in.Verdict, in.Detail = verdictZombie, fmt.Sprintf("pid %d has exited but is not reaped yet", rec.PID)
		case 'T', 't':
			in.Verdict, in.Detail = verdictStopped, fmt.Sprintf("pid %d is stopped (SIGSTOP): it cannot act until continued", rec.PID)
		default:
			in.classifyLive(false)
		}
	}
	if in.proc == nil && in.Verdict == verdictNotRunning {
		in.findByControl()
	}
	if in.proc == nil && in.Verdict == verdictNotRunning && mgr.crashLooping() {
		in.Verdict = verdictCrashLoop
		in.Detail = strings.TrimSpace(in.Detail + "; " + mgr.problem())
	}
	return in
}

// findByControl looks for a gateway that the pid file does not name (it
// could not be written, or was lost) on the policy's control socket. The
// process is proven by the kernel's record of who holds the socket, which
// must be the pid the gateway says it is, and then opened as from a pid
// file; the detail says how it was found.
func (in *inspection) findByControl() {
	ctl := controlPath(in.policy.Gateway.StateDir)
	gs, pid, err := controlStatusProven(ctl, statusTimeout)
	if err != nil || gs.PID != pid {
		return
	}
	start, _, err := procInfo(pid)
	if err != nil {
		return
	}
	h, err := openProc(pid, start)
	if err != nil {
		return
	}
	why := in.Detail
	rec := pidRecord{PID: pid, StartTime: start, Name: gs.Name, StateDir: in.policy.Gateway.StateDir,
		Listen: gs.Listen, Control: ctl, Version: gs.Version, UID: os.Getuid()}
	in.Record, in.proc, in.PID, in.Stale, in.byControl = &rec, h, pid, false, true
	switch h.state() {
	case 0:
		h.close()
		in.proc, in.PID, in.Record = nil, 0, nil
		return
	case 'T', 't':
		in.Verdict = verdictStopped
		in.Detail = fmt.Sprintf("pid %d is stopped (SIGSTOP): it cannot act until continued", pid)
	default:
		in.classifyLive(false)
	}
	found := fmt.Sprintf("pid %d found by its control socket %s: its pid file does not name it (%s)", pid, ctl, why)
	if in.Detail == "" {
		in.Detail = found
	} else {
		in.Detail = found + "; " + in.Detail
	}
}

// classifyLive reads the gateway's heartbeat: a ticking loop is serving or
// draining (busy is not frozen: it walks the ladder with its drain); a
// stale one is frozen. resumed means the process was just continued from a
// stop: its heartbeat is as old as the stop, so the loop gets one ping, as
// long as it may take to tick, before it is judged.
func (in *inspection) classifyLive(resumed bool) {
	ctl := controlPath(in.policy.Gateway.StateDir)
	if until, ok := in.delaying(); ok {
		// Waiting out a crash-loop delay before it listens: signals work
		// (the self-pipe is up), the control socket does not exist yet.
		in.Verdict = verdictCrashLoop
		in.Detail = fmt.Sprintf("pid %d is waiting out a crash-loop delay until %s (%s from now) before it listens",
			in.PID, until.Local().Format("15:04:05"), fmtDur(time.Until(until)))
		return
	}
	if resumed {
		pingGateway(ctl, staleAfter(in.policy.Watchdog), 1)
	}
	ans, err := controlRequest(ctl, "status", statusTimeout)
	if err != nil {
		switch {
		case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED):
			// The pid file goes up before the control socket: a gateway
			// that is starting. Signals reach it already.
			in.Verdict = verdictStarting
			in.Detail = fmt.Sprintf("pid %d has no control socket yet: it is starting", in.PID)
			return
		}
		// A silent control socket alone proves nothing: a gateway out of
		// file descriptors for a moment cannot accept on it. The heartbeat
		// is also readable on the listen address: the second witness.
		if strings.HasPrefix(err.Error(), "refused: ") {
			// It answered, and refused: not this user's gateway to ask.
			in.Verdict = verdictFrozen
			in.Detail = fmt.Sprintf("pid %d is alive but its control socket does not work: %v", in.PID, err)
			return
		}
		why := fmt.Sprintf("pid %d does not answer on its control socket within %s", in.PID, statusTimeout)
		if !errors.Is(err, errNoAnswer) {
			why = fmt.Sprintf("pid %d's control socket does not work (%v)", in.PID, err)
		}
		in.controlDeaf = true
		if in.viaListen(why) {
			return
		}
		if open, limit, ok := procFDs(in.PID); ok && open >= limit-2 {
			// Neither answers, and it holds every descriptor it may: out
			// of descriptors, not proven frozen. Its loop may well act
			// on a signal: the ladder drains it first.
			in.Verdict = verdictNoFDs
			in.Detail = fmt.Sprintf("%s, nor on its listen address, and it holds %d of its %d file descriptors: out of descriptors, not proven frozen", why, open, limit)
			return
		}
		in.Verdict = verdictFrozen
		in.Detail = why + ", nor on its listen address (" + in.listenProblem + ")"
		return
	}
	var gs gatewayStatus
	if err := json.Unmarshal([]byte(ans), &gs); err != nil {
		in.Verdict = verdictFrozen
		in.Detail = fmt.Sprintf("pid %d answered its control socket with something that is not hermes status: %.60q", in.PID, ans)
		return
	}
	in.Gateway = &gs
	stale := time.Duration(gs.StaleAfterMS) * time.Millisecond
	if stale <= 0 {
		stale = staleAfter(in.policy.Watchdog)
	}
	if age := time.Duration(gs.HeartbeatAgeMS) * time.Millisecond; age > stale {
		in.Verdict = verdictFrozen
		in.Detail = fmt.Sprintf("pid %d is alive but its loop has not ticked for %s (frozen after %s)", in.PID, fmtDur(age), fmtDur(stale))
		return
	}
	switch gs.State {
	case stateServing:
		in.Verdict = verdictServing
	case stateStarting:
		in.Verdict = verdictStarting
	default:
		in.Verdict = verdictDraining
		in.Detail = fmt.Sprintf("pid %d is draining (%s): %d sessions left", in.PID, gs.DrainReason, gs.ActiveSessions)
	}
}

// viaListen reads the loop's heartbeat on the gateway's listen address (GET
// /readyz is answered from it, without the loop) when the control socket
// could not tell, and classifies by it. why says what the control socket
// did; the detail says which witness decided.
func (in *inspection) viaListen(why string) bool {
	if in.Record == nil || in.Record.Listen == "" {
		in.listenProblem = "the pid file records none"
		return false
	}
	addr := dialable(in.Record.Listen)
	code, body, err := getReadyz(addr, statusTimeout)
	if err != nil {
		in.listenProblem = fmt.Sprintf("GET http://%s/readyz: %v", addr, err)
		return false
	}
	switch {
	case strings.HasPrefix(body, "frozen"):
		in.Verdict = verdictFrozen
		in.Detail = fmt.Sprintf("%s, and GET /readyz on %s says its loop is %s", why, addr, body)
		return true
	case code == http.StatusOK && body == string(stateServing):
		in.Verdict = verdictServing
	case body == string(stateStarting):
		in.Verdict = verdictStarting
	case body == string(stateDraining) || body == string(stateStopping):
		in.Verdict = verdictDraining
	default:
		in.listenProblem = fmt.Sprintf("GET http://%s/readyz answered %d %.60q: not a hermes gateway?", addr, code, body)
		return false
	}
	in.Detail = fmt.Sprintf("%s, but its heartbeat is fresh: GET /readyz on %s answered %d %s (judged by the heartbeat, not by the control socket)", why, addr, code, body)
	return true
}

// getReadyz asks GET /readyz at addr, with one deadline for all of it.
func getReadyz(addr string, timeout time.Duration) (int, string, error) {
	cl := http.Client{Timeout: timeout, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := cl.Get("http://" + addr + "/readyz")
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the message already
		}
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	return resp.StatusCode, strings.TrimSpace(string(b)), nil
}

// delaying reports whether the inspected gateway is the latest start in
// the ledger and is still waiting out its crash-loop delay.
func (in *inspection) delaying() (time.Time, bool) {
	l, err := readStartLedger(in.policy.Gateway.StateDir)
	if err != nil || len(l.Starts) == 0 || l.Starts[len(l.Starts)-1].PID != in.PID {
		return time.Time{}, false
	}
	return l.DelayingUntil(in.policy.CrashLoop, time.Now())
}

func (in *inspection) close() {
	if in.proc != nil {
		in.proc.close()
	}
}

// ready reports whether a gateway other than old (pid and start time) is up:
// its pid file proves it, its loop answers ping and /readyz says 200.
func gatewayReady(p *Policy, old *pidRecord) (pidRecord, bool) {
	rec, err := readPidFile(pidFilePath(p.Gateway.StateDir))
	if err != nil {
		return rec, false
	}
	if old != nil && rec.PID == old.PID && rec.StartTime == old.StartTime {
		return rec, false
	}
	if ok, _ := rec.alive(); !ok {
		return rec, false
	}
	ans, err := controlRequest(controlPath(p.Gateway.StateDir), "ping", time.Second)
	if err != nil || !strings.HasSuffix(ans, string(stateServing)) {
		return rec, false
	}
	cl := http.Client{Timeout: time.Second}
	resp, err := cl.Get("http://" + rec.Listen + "/readyz")
	if err != nil {
		return rec, false
	}
	resp.Body.Close()
	return rec, resp.StatusCode == http.StatusOK
}

const statusUsage = `Show what the gateway is doing: serving, draining, frozen, stopped,
zombie, crash-looping or not running, with its manager's view.
Exit 0 when serving, 3 when not running, 1 when running but not serving.

With no policy to go by (no --config, no --name, and no file in the lookup
order of 'hermes help'), it lists every gateway on this host instead, from
the instance registry: exit 0 when one runs, 3 when none does.

    $ hermes status
    $ hermes status --name gateway
    $ hermes status --config /etc/hermes/hermes.toml --json
`

type statusJSON struct {
	Verdict        string       `json:"verdict"`
	Detail         string       `json:"detail,omitempty"`
	PID            int          `json:"pid,omitempty"`
	UptimeSeconds  float64      `json:"uptime_seconds,omitempty"`
	ActiveSessions int          `json:"active_sessions"`
	Listen         string       `json:"listen,omitempty"`
	Manager        managerInfo  `json:"manager"`
	Problem        string       `json:"problem,omitempty"`
	Name           string       `json:"name"`
	Policy         string       `json:"policy"`
	StateDir       string       `json:"state_dir"`
	PidFile        string       `json:"pid_file"`
	StalePidFile   bool         `json:"stale_pid_file,omitempty"`
	CrashLoop      bool         `json:"crash_loop"`
	CrashLoopDelay string       `json:"crash_loop_delay,omitempty"`
	RecentExits    []ledgerExit `json:"recent_exits,omitempty"`
	UnitFile       string       `json:"unit_file,omitempty"`
	UnitDiffers    bool         `json:"unit_differs_from_policy,omitempty"`
	Version        string       `json:"version"`
	// A handoff in progress or just done.
	Successor   int                `json:"successor,omitempty"`
	Telegram    *tgStatus          `json:"telegram,omitempty"`
	Predecessor *predecessorStatus `json:"predecessor,omitempty"`
}

func runStatus(args []string) error {
	fs := newFlagSet("status", statusUsage)
	tf := addTargetFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tf.name == "" && *tf.config == "" {
		if path, err := findPolicy(""); err == nil && path == "" {
			return statusOfHost(*asJSON)
		}
	}
	t, err := tf.resolve("status", false)
	if errors.Is(err, errNoSuchName) {
		// As for any gateway that is not running: 3, with why.
		return &exitError{code: exitNotRunning, err: err}
	}
	if err != nil {
		return err
	}
	p := t.p
	in := inspect(p, detectManager(p))
	defer in.close()
	st, unitNote := gatherStatus(p, in)
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Println(string(b))
	} else {
		printStatus(st, in, t, unitNote)
	}
	return statusExit(in)
}

// gatherStatus is what status says of the gateway of p, inspected as in:
// the verdict, the gateway's own numbers, the ledger's recent exits, and a
// note on the installed unit.
func gatherStatus(p *Policy, in *inspection) (st statusJSON, unitNote string) {
	st = statusJSON{
		Verdict: in.Verdict, Detail: in.Detail, PID: in.PID, Manager: in.Manager, Problem: in.Manager.problem(),
		Name: p.Name, Policy: p.policyLabel(), StateDir: p.Gateway.StateDir,
		PidFile: pidFilePath(p.Gateway.StateDir), StalePidFile: in.Stale, Version: version,
	}
	if g := in.Gateway; g != nil {
		st.UptimeSeconds, st.ActiveSessions, st.Listen = g.UptimeSeconds, g.ActiveSessions, g.Listen
		st.Predecessor, st.Telegram = g.Predecessor, g.Telegram
		if !g.HandedOff {
			st.Successor = g.Successor
		}
	}
	if l, err := readStartLedger(p.Gateway.StateDir); err == nil {
		if loop, delay := l.CrashLoop(p.CrashLoop, time.Now()); loop {
			st.CrashLoop, st.CrashLoopDelay = true, delay.String()
		}
		st.RecentExits = l.Exits[max(0, len(l.Exits)-5):]
	}
	if path, o, differs, err := installedUnitDrift(p); path != "" {
		st.UnitFile, st.UnitDiffers = path, differs
		switch {
		case err != nil:
			unitNote = fmt.Sprintf("%s: %v", path, err)
		case differs:
			flags := map[bool]string{true: " --system", false: ""}[strings.HasPrefix(path, "/etc/") || strings.HasPrefix(path, "/Library/")]
			if o.Socket {
				flags += " --socket"
			}
			unitNote = fmt.Sprintf("%s no longer matches the policy; rewrite it with: hermes install-unit%s%s", path, flags, configFlag(p))
		default:
			unitNote = path + " (matches the policy)"
		}
	}
	return st, unitNote
}

// printStatus prints st for a person.
func printStatus(st statusJSON, in *inspection, t *target, unitNote string) {
	p := t.p
	fmt.Printf("gateway:  %s", st.Verdict)
	if st.PID != 0 {
		fmt.Printf(" (pid %d)", st.PID)
	}
	fmt.Println()
	if st.Detail != "" && (st.Verdict != verdictServing || in.controlDeaf || in.byControl) {
		fmt.Printf("detail:   %s\n", st.Detail)
	}
	if g := in.Gateway; g != nil {
		fmt.Printf("uptime:   %s\nsessions: %d active\nlisten:   %s\n", g.Uptime, g.ActiveSessions, g.Listen)
		if pr := g.Predecessor; pr != nil {
			fmt.Printf("handoff:  pid %d (the gateway before this one) finishes %d sessions, %s of its drain left\n",
				pr.PID, pr.Sessions, fmtDur(time.Duration(pr.DrainLeftMS)*time.Millisecond))
		}
		if st.Successor != 0 {
			fmt.Printf("handoff:  handing over to pid %d\n", st.Successor)
		}
		if tg := g.Telegram; tg != nil {
			fmt.Printf("telegram: %s\n", tg.describe())
		}
	}
	fmt.Printf("manager:  %s\n", in.Manager.describe())
	if unitNote != "" {
		fmt.Printf("unit:     %s\n", unitNote)
	}
	if st.Problem != "" {
		fmt.Printf("problem:  %s\n", st.Problem)
	}
	if st.CrashLoop {
		fmt.Printf("crash loop: more than %d starts in %s; the next start waits %s\n", p.CrashLoop.Starts, p.CrashLoop.Window, st.CrashLoopDelay)
	}
	if len(st.RecentExits) > 0 {
		fmt.Println("recent exits:")
		for i := len(st.RecentExits) - 1; i >= 0; i-- {
			x := st.RecentExits[i]
			code := fmt.Sprintf("code %-3d", x.Code)
			if x.Code == codeUnclean {
				code = "unclean "
			}
			fmt.Printf("          %s  pid %-7d %s %s\n", x.Time.Local().Format("2006-01-02 15:04:05"), x.PID, code, x.Reason)
		}
	}
	fmt.Printf("policy:   %s (instance %q)\nstate:    %s\n", policyOrigin(p), p.Name, st.StateDir)
	if st.Verdict == verdictNotRunning {
		if note := t.notRunningNote("status"); note != "" {
			fmt.Printf("note:     %s\n", note)
		}
	}
	switch st.Verdict {
	case verdictFrozen:
		fmt.Printf("hint:     hermes restart%s   # recovers a frozen gateway, no --force needed\n", configFlag(p))
	case verdictStopped:
		fmt.Printf("hint:     kill -CONT %d   # or: hermes restart%s\n", st.PID, configFlag(p))
	case verdictNotRunning, verdictCrashLoop:
		fmt.Printf("hint:     hermes restart%s\n", configFlag(p))
	}
}

// statusExit is status's exit: 0 serving, 3 not running, else 1.
func statusExit(in *inspection) error {
	switch in.Verdict {
	case verdictServing:
		return nil
	case verdictNotRunning, verdictZombie:
		return &exitError{code: exitNotRunning}
	case verdictCrashLoop:
		if in.PID == 0 {
			return &exitError{code: exitNotRunning}
		}
	}
	return &exitError{code: exitFailure}
}

// statusOfHost lists every gateway in the instance registry.
func statusOfHost(asJSON bool) error {
	rows := instanceRows(listInstances())
	// The instance of the policy in hand (the built-in defaults: no file
	// was found) first, then the gateways that run, then those gone.
	mine := defaultPolicy().Gateway.StateDir
	rank := func(r instanceRow) int {
		switch {
		case r.StateDir == mine:
			return 0
		case !strings.HasPrefix(r.State, "gone"):
			return 1
		}
		return 2
	}
	sort.SliceStable(rows, func(i, j int) bool { return rank(rows[i]) < rank(rows[j]) })
	running := 0
	for _, r := range rows {
		if !strings.HasPrefix(r.State, "gone") {
			running++
		}
	}
	if asJSON {
		b, _ := json.MarshalIndent(map[string]any{"instances": rows}, "", "  ")
		fmt.Println(string(b))
	} else if len(rows) == 0 {
		fmt.Println("no hermes gateway is running on this host (no policy file found either: see 'hermes help')")
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPID\tUSER\tLISTEN\tSTATE\tSESSIONS\tPOLICY")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\n", r.Name, r.PID, r.User, r.Listen, r.State, r.Sessions, r.Policy)
		}
		tw.Flush()
		fmt.Println("details: hermes status --name NAME")
	}
	if running == 0 {
		return &exitError{code: exitNotRunning}
	}
	return nil
}
