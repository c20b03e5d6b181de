package main

// A supervised upstream: an [[upstream]] with a command is a child process
// hermes starts, watches and restarts, with the care it gives itself. It is
// ready when its health path answers; frozen when [supervise]
// frozen_after probes in a row get no answer; a frozen child, or one not
// ready within ready_timeout, is stopped by its own ladder (TERM to its
// process group, then KILL after stop_timeout) and started again, with the
// crash-loop guard's backoff ([crash_loop]) when it keeps failing. Its
// output goes to hermes's log, a line at a time, under its name; every
// step is an event with its pid and signal. While it is not ready it is
// out of the order: a request fails over to the next upstream, or waits
// for it (within upstream_header_timeout) when there is none.
//
// A handoff passes the running child to the successor (its pid, start time
// and output pipe, handoff.go): the successor proves it is the same
// process (procHandle: a pidfd on Linux) and supervises it from "go" on,
// rather than start a second one. It is stopped when hermes stops, after
// the drain, unless a successor took it.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// SupervisePolicy is [supervise]: how supervised upstreams are watched.
type SupervisePolicy struct {
	HealthEvery  time.Duration // a running child's health is asked this often
	FrozenAfter  int           // probes in a row without an answer: frozen
	ReadyTimeout time.Duration // from its start to its first answer
	StopTimeout  time.Duration // after TERM, KILL
}

type fileSupervise struct {
	HealthEvery  *string `toml:"health_every" kind:"duration"`
	FrozenAfter  *int    `toml:"frozen_after"`
	ReadyTimeout *string `toml:"ready_timeout" kind:"duration"`
	StopTimeout  *string `toml:"stop_timeout" kind:"duration"`
}

func defaultSupervise() SupervisePolicy {
	return SupervisePolicy{HealthEvery: time.Second, FrozenAfter: 3, ReadyTimeout: time.Minute, StopTimeout: 2 * time.Second}
}

func (v *validator) applySupervise(p *Policy, f *fileSupervise) {
	s := &p.Supervise
	v.dur(&s.HealthEvery, f.HealthEvery, "supervise.health_every")
	v.dur(&s.ReadyTimeout, f.ReadyTimeout, "supervise.ready_timeout")
	v.dur(&s.StopTimeout, f.StopTimeout, "supervise.stop_timeout")
	if f.FrozenAfter != nil {
		s.FrozenAfter = *f.FrozenAfter
	}
}

func (v *validator) checkSupervise(p *Policy) {
	s := p.Supervise
	if s.HealthEvery < 100*time.Millisecond || s.HealthEvery > time.Minute {
		v.fail("supervise.health_every", "%s is out of range: use 100ms to 1m", s.HealthEvery)
	}
	if s.FrozenAfter < 1 {
		v.fail("supervise.frozen_after", "%d: use at least 1", s.FrozenAfter)
	}
	if s.ReadyTimeout < time.Second {
		v.fail("supervise.ready_timeout", "%s is too short: use at least 1s", s.ReadyTimeout)
	}
	// A child is stopped after the drain, inside the margin a service
	// manager gives an exit (autoWaitMargin), beside the exit's flush.
	if most := autoWaitMargin - time.Second - p.Journal.ExitFlush; most >= 100*time.Millisecond && (s.StopTimeout < 100*time.Millisecond || s.StopTimeout > most) {
		v.fail("supervise.stop_timeout", "%s is out of range: use 100ms to %s (with journal.exit_flush %s it must fit in the %s a service manager gives an exit after the drain)",
			s.StopTimeout, most, p.Journal.ExitFlush, autoWaitMargin)
	}
}

// child is one supervised upstream's process, across its restarts.
type child struct {
	g    *gateway
	node *upstreamNode

	mu     sync.Mutex
	proc   *procHandle   // the run now; nil between runs
	pid    int           // its pid, 0 between runs
	start  uint64        // its start time, as procInfo says
	out    *os.File      // the read end of its output
	exited chan struct{} // closed when the run now ended
	code   int           // its exit code, once exited (-1: unknown, an adopted run)
	starts []time.Time   // recent starts, for the crash-loop guard

	ctx    context.Context // ends the supervision: the gateway stops, or hands over
	cancel context.CancelFunc
	done   chan struct{} // the supervision has ended
}

// superviseChildren starts supervising every upstream of p with a
// command: it adopts the ones inherited from a predecessor, and starts
// the others.
func (g *gateway) superviseChildren(p *Policy) {
	pl := g.pool(p)
	var list []*child
	var inhs []*inheritedChild
	recorded := readChildRecords(g.stateDir)
	for _, n := range pl.nodes {
		if len(n.Command) == 0 {
			continue
		}
		var inh *inheritedChild
		if g.inh != nil {
			inh = g.inh.children[n.Name]
		}
		if r, ok := recorded[n.Name]; ok && (inh == nil || inh.pid != r.PID) {
			// The run recorded last: one a predecessor started after it
			// started this gateway (its output pipe is not this one's),
			// or one of a gateway that died without stopping it (a
			// SIGKILL, the OOM killer). Adopted if it is still that
			// process, so that no second one fights it for its port.
			if inh != nil && inh.out != nil {
				inh.out.Close()
			}
			inh = &inheritedChild{pid: r.PID, start: r.Start}
		}
		list = append(list, &child{g: g, node: n})
		inhs = append(inhs, inh)
	}
	g.children.Store(&list) // before any run starts: each records them all
	for i, c := range list {
		c.begin(inhs[i], false)
	}
}

// begin starts the supervision goroutine, adopting inh when it is given
// (or resuming the run this gateway has: resumed).
func (c *child) begin(inh *inheritedChild, resumed bool) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	c.mu.Lock()
	c.ctx, c.cancel, c.done = ctx, cancel, done
	c.mu.Unlock()
	go func() {
		defer close(done)
		c.supervise(inh, resumed)
	}()
}

// supervision is the running supervision's cancel and done channel.
func (c *child) supervision() (context.CancelFunc, chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cancel, c.done
}

// supervise is a child's life: start (or adopt), wait for ready, watch,
// and when it exits, freezes or never becomes ready, stop it and start it
// again, until the gateway stops or hands it over. resumed: the run is
// this gateway's already (a failback after a handoff).
func (c *child) supervise(inh *inheritedChild, resumed bool) {
	log := c.g.log
	name := c.node.Name
	switch {
	case resumed:
		c.node.setReady(false) // ready again at its next answer
	case inh != nil && c.adopt(inh):
		log.info(evChildAdopted, "upstream", name, "child_pid", c.pid)
	case !c.run():
		return
	}
	for {
		why := c.watch()
		c.node.setReady(false)
		if c.ctx.Err() != nil {
			return // stopping or handed over: stop() or the successor takes it from here
		}
		if why != "" {
			c.ladder(why)
		}
		c.mu.Lock()
		pid, code := c.pid, c.code
		c.mu.Unlock()
		log.warn(evChildExit, "upstream", name, "child_pid", pid, "code", code)
		if !c.run() {
			return
		}
	}
}

// run starts the child again after the crash-loop guard's delay, if it
// keeps failing; it reports false when the supervision ends first.
func (c *child) run() bool {
	p := c.g.policy.Load()
	for {
		if d := c.backoff(p.CrashLoop, time.Now()); d > 0 {
			c.g.log.warn(evChildCrashLoop, "upstream", c.node.Name, "starts", len(c.starts), "window", p.CrashLoop.Window, "delay", d)
			t := time.NewTimer(d)
			select {
			case <-t.C:
			case <-c.ctx.Done():
				t.Stop()
				return false
			}
		}
		if c.ctx.Err() != nil {
			return false
		}
		err := c.spawn()
		if err == nil {
			return true
		}
		c.g.log.errorf(evChildExit, "upstream", c.node.Name, "error", err)
	}
}

// backoff is the delay before the next start: none while the starts
// within crash_loop.window are at most crash_loop.starts, then
// base_delay, doubling at each further start, up to max_delay. It records
// the start it delays.
func (c *child) backoff(cl CrashLoopPolicy, now time.Time) time.Duration {
	kept := c.starts[:0]
	for _, t := range c.starts {
		if now.Sub(t) < cl.Window {
			kept = append(kept, t)
		}
	}
	c.starts = append(kept, now)
	over := len(c.starts) - cl.Starts - 1
	if over < 0 {
		return 0
	}
	d := cl.BaseDelay
	for i := 0; i < over && d < cl.MaxDelay; i++ {
		d *= 2
	}
	return min(d, cl.MaxDelay)
}

// spawn starts a run of the child: its own process group (a signal to
// hermes's group is not its), its output to the log.
func (c *child) spawn() error {
	n := c.node
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(n.Command[0], n.Command[1:]...)
	cmd.Dir = n.Dir
	cmd.Env = childEnv(n.Env)
	cmd.Stdout, cmd.Stderr = w, w
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		r.Close()
		w.Close()
		return fmt.Errorf("starting %s: %w", filepath.Base(n.Command[0]), err)
	}
	w.Close()
	pid := cmd.Process.Pid
	start, _, _ := procInfo(pid)
	h, err := openProc(pid, start)
	exited := make(chan struct{})
	c.mu.Lock()
	c.proc, c.pid, c.start, c.out, c.exited, c.code = h, pid, start, r, exited, 0
	c.mu.Unlock()
	go func() {
		cmd.Wait()
		code := cmd.ProcessState.ExitCode()
		if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		c.mu.Lock()
		c.code = code
		c.mu.Unlock()
		close(exited)
	}()
	go c.relayOutput(r)
	c.g.log.info(evChildStart, "upstream", n.Name, "child_pid", pid, "command", filepath.Base(n.Command[0]))
	c.g.recordChildren()
	if err != nil {
		c.g.log.warn(evChildStart, "upstream", n.Name, "child_pid", pid, "note", "no process handle: "+err.Error())
	}
	return nil
}

// adopt takes over a run a predecessor started, once it is proven the
// same process; it reports false when it is not (it is left alone, and a
// new run starts).
func (c *child) adopt(inh *inheritedChild) bool {
	h, err := openProc(inh.pid, inh.start)
	if err != nil {
		c.g.log.warn(evChildAdopted, "upstream", c.node.Name, "child_pid", inh.pid, "error", "not the process handed over: "+err.Error())
		if inh.out != nil {
			inh.out.Close()
		}
		return false
	}
	exited := make(chan struct{})
	c.mu.Lock()
	c.proc, c.pid, c.start, c.out, c.exited, c.code = h, inh.pid, inh.start, inh.out, exited, -1
	c.mu.Unlock()
	go func() {
		for {
			if done, _, err := h.wait(time.Hour, -1); done || err != nil {
				close(exited)
				return
			}
		}
	}()
	if inh.out != nil {
		go c.relayOutput(inh.out)
	}
	c.g.recordChildren()
	return true
}

// relayOutput writes the child's output to hermes's log, a line at a
// time, under its name, until the pipe ends (or a handoff's deadline
// stops the read: the successor reads it from then on).
func (c *child) relayOutput(r *os.File) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), 64<<10)
	for sc.Scan() {
		c.g.log.info(evChildOutput, "upstream", c.node.Name, "line", sc.Text())
	}
}

// watch waits for the run to be ready, then watches it. It returns why
// the run must be stopped ("" when it exited by itself, or the
// supervision ended).
func (c *child) watch() string {
	p := c.g.policy.Load()
	s := p.Supervise
	c.mu.Lock()
	exited, pid := c.exited, c.pid
	c.mu.Unlock()
	started := time.Now()
	tick := time.NewTicker(s.HealthEvery)
	defer tick.Stop()
	ready, missed := c.node.ready.Load(), 0
	for {
		select {
		case <-exited:
			return ""
		case <-c.ctx.Done():
			return ""
		case <-tick.C:
		}
		ok := c.g.upstreams.Load().ask(c.node, min(s.HealthEvery, p.Failover.ProbeTimeout)) == nil
		switch {
		case ok && !ready:
			ready, missed = true, 0
			c.node.setReady(true)
			c.g.log.info(evChildReady, "upstream", c.node.Name, "child_pid", pid, "took", time.Since(started).Round(time.Millisecond))
		case ok:
			missed = 0
		case !ready && time.Since(started) >= s.ReadyTimeout:
			return fmt.Sprintf("not ready within supervise.ready_timeout (%s)", s.ReadyTimeout)
		case ready:
			if missed++; missed >= s.FrozenAfter {
				c.g.log.errorf(evChildFrozen, "upstream", c.node.Name, "child_pid", pid, "missed", missed, "every", s.HealthEvery)
				return fmt.Sprintf("frozen: %d health probes in a row unanswered", missed)
			}
		}
	}
}

// ladder stops the run: TERM to its process group, then KILL once
// supervise.stop_timeout has passed. Only the proven process (and its
// group, while it lives) is signalled.
func (c *child) ladder(why string) {
	c.mu.Lock()
	h, pid, exited := c.proc, c.pid, c.exited
	c.mu.Unlock()
	if pid == 0 {
		return
	}
	wait := c.g.policy.Load().Supervise.StopTimeout
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		select {
		case <-exited:
			return
		default:
		}
		c.g.log.warn(evChildSignal, "upstream", c.node.Name, "child_pid", pid, "signal", signalName(sig), "why", why)
		if h == nil || h.signal(sig) != nil {
			return // not proven, or gone: nothing to signal
		}
		unix.Kill(-pid, sig) // the rest of its group, its workers
		unix.Kill(-pid, syscall.SIGCONT)
		t := time.NewTimer(wait)
		select {
		case <-exited:
			t.Stop()
			return
		case <-t.C:
		}
	}
	<-exited
}

// stopChildren ends every child's supervision and stops the children,
// together, within supervise.stop_timeout each; none when a successor
// took them over (handedOver).
func (g *gateway) stopChildren(handedOver bool) {
	var wg sync.WaitGroup
	for _, c := range g.childList() {
		cancel, done := c.supervision()
		cancel()
		<-done
		if handedOver {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.ladder("hermes stops")
			c.mu.Lock()
			pid, code := c.pid, c.code
			c.mu.Unlock()
			g.log.info(evChildExit, "upstream", c.node.Name, "child_pid", pid, "code", code)
		}()
	}
	wg.Wait()
	if !handedOver && len(g.childList()) > 0 {
		os.Remove(childRecordsPath(g.stateDir))
	}
}

// childRecord is a run as state_dir/children.json keeps it, so that the
// next gateway finds a run the last one could not stop (it was killed).
type childRecord struct {
	PID   int    `json:"pid"`
	Start uint64 `json:"start"`
}

func childRecordsPath(stateDir string) string { return filepath.Join(stateDir, "children.json") }

// recordChildren writes every run's pid and start time (on the
// supervisor's goroutine: never the loop's).
func (g *gateway) recordChildren() {
	recs := map[string]childRecord{}
	for _, c := range g.childList() {
		c.mu.Lock()
		if c.pid != 0 {
			recs[c.node.Name] = childRecord{PID: c.pid, Start: c.start}
		}
		c.mu.Unlock()
	}
	b, _ := json.Marshal(recs)
	if err := writeFileAtomic(childRecordsPath(g.stateDir), b, 0o600); err != nil {
		g.log.warn(evChildStart, "error", fmt.Errorf("recording the supervised upstreams' pids: %w", err))
	}
}

// readChildRecords is what the last gateway recorded; none when nothing is.
func readChildRecords(stateDir string) map[string]childRecord {
	var recs map[string]childRecord
	if b, err := os.ReadFile(childRecordsPath(stateDir)); err == nil {
		json.Unmarshal(b, &recs)
	}
	return recs
}

// handChildren pauses the supervision at a handover: the successor
// supervises from now on; the output pipe is its to read.
func (g *gateway) handChildren() {
	for _, c := range g.childList() {
		cancel, _ := c.supervision()
		cancel()
		c.mu.Lock()
		if c.out != nil {
			c.out.SetReadDeadline(time.Now())
		}
		c.mu.Unlock()
	}
}

// takeChildrenBack resumes the supervision after a failback: the runs go
// on as they were.
func (g *gateway) takeChildrenBack() {
	for _, c := range g.childList() {
		_, done := c.supervision()
		<-done
		c.mu.Lock()
		if c.out != nil {
			c.out.SetReadDeadline(time.Time{})
			go c.relayOutput(c.out)
		}
		c.mu.Unlock()
		c.begin(nil, true)
	}
}

// inheritedChild is a supervised upstream's run a predecessor handed over.
type inheritedChild struct {
	pid   int
	start uint64
	out   *os.File
}

// handoffChildren is what a successor needs of the children: a name of the
// form child:NAME:PID:START for each, with its output pipe as the file.
func (g *gateway) handoffChildren() (names []string, files []*os.File) {
	for _, c := range g.childList() {
		c.mu.Lock()
		if c.pid != 0 && c.out != nil {
			select {
			case <-c.exited:
			default:
				names = append(names, fmt.Sprintf("child:%s:%d:%d", c.node.Name, c.pid, c.start))
				files = append(files, c.out)
			}
		}
		c.mu.Unlock()
	}
	return names, files
}

// parseChildName reads a child:NAME:PID:START name.
func parseChildName(s string) (name string, pid int, start uint64, ok bool) {
	f := strings.Split(s, ":")
	if len(f) != 4 || f[0] != "child" {
		return "", 0, 0, false
	}
	pid, err1 := strconv.Atoi(f[2])
	start, err2 := strconv.ParseUint(f[3], 10, 64)
	return f[1], pid, start, err1 == nil && err2 == nil && pid > 0
}

// childEnv is a child's environment: hermes's, less what is hermes's own
// (a handoff's, systemd's), plus the upstream's env.
func childEnv(extra []string) []string {
	env := environWithout("NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
		envKeeper, envKeeperFD, envHandoff, envHandoffFrom, envHandoffSocket)
	return append(env, extra...)
}

// setReady marks a supervised upstream ready (in the order) or not.
func (n *upstreamNode) setReady(ready bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ready.Load() == ready {
		return
	}
	n.ready.Store(ready)
	if ready {
		n.run.Add(1)
		close(n.readyCh)
		n.goneCh = make(chan struct{})
	} else {
		n.readyCh = make(chan struct{})
		if n.goneCh != nil {
			close(n.goneCh)
			n.goneCh = nil
		}
	}
}

// waitReady waits up to d for a supervised upstream to be ready.
func (n *upstreamNode) waitReady(ctx context.Context, d time.Duration) bool {
	if n.ready.Load() {
		return true
	}
	n.mu.Lock()
	ch := n.readyCh
	n.mu.Unlock()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ch:
		return true
	case <-t.C:
	case <-ctx.Done():
	}
	return n.ready.Load()
}

// childList is the supervised upstreams' children, once supervision began.
func (g *gateway) childList() []*child {
	if l := g.children.Load(); l != nil {
		return *l
	}
	return nil
}

// waitNextRun waits up to d for a run after run to be ready: the one that
// replaces a run that died under a request.
func (n *upstreamNode) waitNextRun(ctx context.Context, run uint64, d time.Duration) bool {
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	for {
		if n.ready.Load() && n.run.Load() > run {
			return true
		}
		n.mu.Lock()
		ch := n.readyCh
		if n.ready.Load() {
			ch = n.goneCh // ready, but the same run: wait for it to go (its exit), then the next
		}
		n.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
}
