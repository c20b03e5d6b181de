package main

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// The gateway: one goroutine, the loop, owns every piece of state that
// changes: the lifecycle state, the drain, the running policy, a handoff.
// Its rules are the pure transition in loop.go; this file is the driver
// that feeds it inputs from typed channels and performs its effects, none
// of which blocks (anything that could, such as starting a successor,
// writing the pid file or reading the policy, runs on a goroutine of its own
// and reports back as an input). Sessions do not pass through the loop: an
// atomic admission gate admits and counts them (session.go), and the loop
// reads the count. Health, readiness and status are answered without the
// loop, from what it publishes (routes.go), so they tell the truth when it
// is frozen. serve.go starts and ends the process around it.

// snapshot is what the loop publishes for readers that must not wait on it.
type snapshot struct {
	State       gwState
	Reason      string // drain reason while draining
	Policy      *Policy
	HandedOff   bool
	Successor   int // the successor a handoff started (or handed over to)
	Predecessor *predecessor
}

// cutCause is the cancel cause of the sessions the drain ended.
type cutCause struct{ reason string }

func (c *cutCause) Error() string { return "session cut: " + c.reason }

type gateway struct {
	pid      int
	started  time.Time
	flagPath string // --config as given, for reloads
	log      *logger
	logq     *logQueues
	sd       *sink // sd_notify messages
	pipe     *selfPipe
	stateDir string
	listen   string
	sdWD     time.Duration // systemd's watchdog period, 0 if none

	// What serve.go set up, and a handoff hands over.
	exe, ctlPath, pidPath string
	args                  []string
	inst, tokLock         *os.File
	ln                    net.Listener
	lnKind                string
	lnClosed              atomic.Bool // this gateway stopped accepting (handed off)
	spare                 *os.File    // the listening socket, kept while handed off, to fail back
	ctl                   atomic.Pointer[controlSocket]
	self                  pidRecord
	pidSelf               *atomic.Pointer[pidRecord] // the pid file serve.go removes at exit
	noHandoff             string                     // why this gateway cannot hand off, or ""
	inh                   *inheritance               // what a predecessor handed this gateway
	keeper                *keeperLink                // the process the service manager watches, if any

	policy atomic.Pointer[Policy]
	snap   atomic.Pointer[snapshot]
	// heartbeat is when the loop last ran (monoNanos): the watchdog,
	// /healthz, /readyz and the control socket read it without the loop.
	heartbeat atomic.Int64
	gate      admission
	mx        metrics // GET /metrics (metrics.go)
	conns     connTracker
	handedOff atomic.Bool     // responses say Connection: close
	cutCtx    context.Context // every request's context descends from it
	cut       context.CancelCauseFunc

	// The loop's other inputs.
	pings     chan chan gwState
	reloaded  chan loopInput
	fatal     chan error
	handoffs  chan handoffReq // asked for on the control socket
	nows      chan handoffReq // restart-now, asked for on the control socket
	handoffIn chan loopInput  // a handoff's progress, from its goroutines
	done      chan struct{}   // closed when the loop has returned
	// ending decides, once, who ends the process: the loop (1) or the
	// watchdog (2). Whoever loses the race leaves the exit to the winner.
	ending atomic.Int32

	// Owned by the loop.
	succ      *successorProc
	replies   map[int]chan string
	nextReply int

	tg      *telegramBot // nil without [telegram]
	alerts  *alerter     // nil without [alerts]
	upWatch upstreamWatch
	srv     *h1Server
	httpAcc *acceptor    // gateway.listen's accept loop (accept.go)
	ctlAcc  *acceptor    // the control socket's, across reclaims
	client  *http.Client // net/http's Transport: where the upstream client cannot serve
	// The upstreams of the running policy and their health
	// (upstream_pool.go), made again when a reload changes them.
	upstreams atomic.Pointer[upstreamPool]
	poolMu    sync.Mutex
	allOut    atomic.Bool              // the every-upstream-is-out alert fired
	children  atomic.Pointer[[]*child] // the supervised upstreams' runs (upstream_child.go)
	// The streams a client may come back to (reattach.go), and the socket
	// a successor asks for them on (reattach_handoff.go).
	streams   *streamRegistry
	streamsLn atomic.Pointer[net.UnixListener]
}

// gatewayParts is everything a gateway needs to exist, as runServe's
// phases (serve.go) gather it: the policy, the process's plumbing, the
// locks, the listening socket and who this process is. newGateway makes a
// whole gateway of it; nothing is filled in afterwards.
type gatewayParts struct {
	policy   *Policy
	flagPath string // --config as given, for reloads
	pipe     *selfPipe
	log      *logger
	logq     *logQueues
	sd       *sink
	alerts   *alerter // nil without [alerts]

	exe           string   // the binary's path at start, for a successor
	args          []string // the arguments a successor gets
	inst, tokLock *os.File // the instance lock and the token lock
	inh           *inheritance
	keeper        *keeperLink
	self          pidRecord
	pidSelf       *atomic.Pointer[pidRecord] // the pid file this process wrote
	ledger        startLedger                // for the crash-loop metrics

	ln     net.Listener // nil only in tests that serve no socket
	lnKind string
}

func newGateway(c gatewayParts) *gateway {
	p := c.policy
	g := &gateway{
		pid:       os.Getpid(),
		started:   time.Now(),
		flagPath:  c.flagPath,
		log:       c.log,
		logq:      c.logq,
		sd:        c.sd,
		pipe:      c.pipe,
		stateDir:  p.Gateway.StateDir,
		listen:    p.Gateway.Listen,
		sdWD:      watchdogPeriod(),
		pings:     make(chan chan gwState, 16),
		reloaded:  make(chan loopInput, 1),
		fatal:     make(chan error, 1),
		handoffs:  make(chan handoffReq, 4),
		nows:      make(chan handoffReq, 4),
		handoffIn: make(chan loopInput, 16),
		done:      make(chan struct{}),
		replies:   map[int]chan string{},

		exe: c.exe, args: c.args, inst: c.inst, tokLock: c.tokLock, inh: c.inh, keeper: c.keeper,
		self: c.self, pidSelf: c.pidSelf, alerts: c.alerts, ln: c.ln, lnKind: c.lnKind,
		ctlPath: controlPath(p.Gateway.StateDir), pidPath: pidFilePath(p.Gateway.StateDir),
		noHandoff: handoffPossible(),
	}
	if g.pidSelf == nil {
		g.pidSelf = new(atomic.Pointer[pidRecord])
	}
	g.gate.init()
	g.httpAcc = newAcceptor("http", g.logAcceptErrors("http"))
	g.ctlAcc = newAcceptor("control", g.logAcceptErrors("control"))
	g.mx.hook(c.log)
	g.mx.noteStart(c.ledger, p, g.pid)
	g.conns.changed = g.gate.wake
	g.cutCtx, g.cut = context.WithCancelCause(context.Background())
	g.streams = newStreamRegistry(&g.gate, g.cutCtx, c.log)
	g.policy.Store(p)
	g.client = &http.Client{Transport: newUpstreamTransport(), CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	autoConns := maxConnsFor(0) // the file limit's, read once
	g.srv = newH1Server(g, g.cutCtx, &g.conns, func() h1Limits {
		p := g.policy.Load()
		l := h1Limits{head: p.Gateway.HeaderTimeout, idle: p.Gateway.IdleTimeout,
			body: p.Gateway.BodyTimeout, write: p.Gateway.WriteTimeout, conns: p.Gateway.MaxConnections}
		if l.conns == 0 {
			l.conns = autoConns
		}
		return l
	}, g.httpAcc)
	g.snap.Store(&snapshot{State: stateStarting, Policy: p})
	g.beat(time.Now())
	return g
}

// newID names a session (X-Hermes-Session, log lines): unique enough to
// tell sessions apart in a journal, and not a secret, so it costs no
// system call (math/rand/v2's generator is per thread).
func newID() string {
	var b [8]byte
	var h [16]byte
	binary.LittleEndian.PutUint64(b[:], rand.Uint64())
	hex.Encode(h[:], b[:])
	return string(h[:])
}

func (g *gateway) beat(now time.Time) { g.heartbeat.Store(monoNanos(now)) }

func (g *gateway) control() *controlSocket { return g.ctl.Load() }

// tell hands a loop input over from a goroutine of the gateway's, or drops
// it once the loop has returned.
func (g *gateway) tell(in loopInput) {
	select {
	case g.handoffIn <- in:
	case <-g.done:
	}
}

// foreground reports whether a person may be watching this gateway's
// stderr and pressing Ctrl-C: stderr is a terminal, or no service manager
// runs it (a manager's INT is never a person's).
func foreground() bool {
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 && fi.Name() != "null" {
		return true
	}
	for _, k := range []string{"INVOCATION_ID", "NOTIFY_SOCKET", "JOURNAL_STREAM", envKeeper} {
		if os.Getenv(k) != "" {
			return false
		}
	}
	x := os.Getenv("XPC_SERVICE_NAME") // launchd
	return x == "" || x == "0"
}

// publish stores what readers see without the loop, when it changed.
func (g *gateway) publish(s *loopState) {
	old := g.snap.Load()
	succ := s.successor
	if s.handoff != nil {
		succ = s.handoff.pid
	}
	var pred *predecessor
	if s.pred != nil {
		cp := *s.pred
		pred = &cp
	}
	if old.State == s.state && old.Reason == s.reason && old.Policy == s.policy && old.HandedOff == s.handedOff &&
		old.Successor == succ && samePredecessor(old.Predecessor, pred) {
		return
	}
	g.snap.Store(&snapshot{State: s.state, Reason: s.reason, Policy: s.policy, HandedOff: s.handedOff, Successor: succ, Predecessor: pred})
}

func samePredecessor(a, b *predecessor) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// serveHTTP starts accepting on the listening socket.
func (g *gateway) serveHTTP() {
	go func() {
		err := g.srv.Serve(g.ln)
		if err == nil || errors.Is(err, http.ErrServerClosed) || g.lnClosed.Load() {
			return
		}
		select {
		case g.fatal <- fmt.Errorf("http server: %w", err):
		default:
		}
	}()
}

// stopAccepting closes this process's descriptor of the listening socket.
// The socket itself stays open where another holds it (the successor, or
// systemd), so nothing is refused; connections already here go on.
func (g *gateway) stopAccepting() {
	if g.lnClosed.CompareAndSwap(false, true) {
		g.ln.Close() // close(2) of this descriptor, never shutdown(2)
	}
}

// reload reads the policy again, off the loop, and hands the result to it.
// What was bound at start (the listen address, the state dir, the name, the
// token lock) keeps its running value until a restart; the loop says so.
func (g *gateway) reload(old *Policy) {
	in := loopInput{kind: inReloaded}
	p, err := loadPolicy(g.flagPath)
	if err != nil {
		in.err = err
	} else {
		in.later = keepBound(old, p)
		in.policy = p
		writeRunningPolicy(p)
	}
	select {
	case g.reloaded <- in:
	case <-g.done:
	}
}

// keepBound puts back into p the values of old that a running gateway
// cannot change, and names the keys that differed.
func keepBound(old, p *Policy) []string {
	var later []string
	if p.Gateway.Listen != old.Gateway.Listen {
		later = append(later, "gateway.listen")
		p.Gateway.Listen = old.Gateway.Listen
	}
	if p.Gateway.StateDir != old.Gateway.StateDir {
		later = append(later, "gateway.state_dir")
		p.Gateway.StateDir, p.Gateway.StateDirSet = old.Gateway.StateDir, old.Gateway.StateDirSet
	}
	if p.Name != old.Name {
		later = append(later, "name")
		p.Name = old.Name
	}
	if p.Gateway.UpstreamKeyEnv != old.Gateway.UpstreamKeyEnv {
		// The key is read from the environment, which a running process
		// cannot be given anew.
		later = append(later, "gateway.upstream_key_env")
		p.Gateway.UpstreamKeyEnv = old.Gateway.UpstreamKeyEnv
	}
	if p.Lock != old.Lock {
		for _, k := range []struct {
			name string
			a, b string
		}{
			{"lock.token_env", old.Lock.TokenEnv, p.Lock.TokenEnv},
			{"lock.token_file", old.Lock.TokenFile, p.Lock.TokenFile},
			{"lock.scope", old.Lock.Scope, p.Lock.Scope},
			{"lock.lock_dir", old.Lock.Dir, p.Lock.Dir},
		} {
			if k.a != k.b {
				later = append(later, k.name)
			}
		}
		p.Lock = old.Lock
	}
	return later
}

// mainPID is the sd_notify line that names this gateway systemd's main
// process, or nothing under a keeper (the keeper is, for good).
func (g *gateway) mainPID() string {
	if g.keeper != nil {
		return ""
	}
	return fmt.Sprintf("\nMAINPID=%d", g.pid)
}
