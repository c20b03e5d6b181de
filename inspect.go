package main

// The verdict on a gateway: what hermes finds when it looks at one (its
// pid file, control socket, listener and process state), before anything
// is done to it. hermes status prints it; hermes restart, stop and start
// act on it (restart.go).

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"syscall"
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
