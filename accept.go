package main

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Accepting connections through a moment of file-descriptor exhaustion.
//
// Both of the gateway's listeners (clients on gateway.listen, hermes's own
// commands on the control socket) accept through an acceptor. An accept
// error that passes (EMFILE, ENFILE, ECONNABORTED, ENOBUFS, ENOMEM) is
// waited out with a backoff from 5 ms to 1 s and retried, as net/http does;
// only a closed listener ends the loop. A listener that returned on the
// first EMFILE would leave the gateway deaf for the rest of its life, and
// `hermes restart` would then take a healthy gateway for a frozen one.
//
// Each acceptor also keeps one descriptor in reserve (/dev/null, opened at
// start). When the process is out of descriptors, the reserve is closed to
// accept the connection waiting, and opened again once there is room (at
// the next accept, and as each of the listener's connections closes): the
// control socket can then always answer status, and a client past the limit
// gets a clean 503 and a close instead of a connection left in the backlog
// until it times out (the practice of nginx and HAProxy, whose workers
// otherwise spin on EMFILE). The first error of an episode is logged with
// what it means, the end of the episode with how many there were; both
// listeners' counts are in /metrics.
type acceptor struct {
	name    string // "http" or "control", for the log and the metrics
	reserve fdReserve
	errs    atomic.Int64 // accept errors waited out, all time
	shed    atomic.Int64 // connections accepted on the reserve while out of descriptors
	log     func(first bool, err error, episode int64, lasted time.Duration)
}

// newAcceptor makes an acceptor with its reserve descriptor open. log is
// called at the first error of an episode (first true) and at its end.
func newAcceptor(name string, log func(first bool, err error, episode int64, lasted time.Duration)) *acceptor {
	a := &acceptor{name: name, log: log}
	a.reserve.fill()
	return a
}

// loop accepts until accept fails for good (a closed listener, or done
// says the server stops), handing each connection to serve. When accept
// fails for want of descriptors and the reserve holds one, the connection
// waiting is accepted on the reserve and handed to exhausted instead.
func (a *acceptor) loop(accept func() (net.Conn, error), done func() bool, serve, exhausted func(net.Conn)) error {
	var (
		backoff time.Duration
		episode int64
		since   time.Time
	)
	for {
		nc, err := accept()
		if err == nil {
			if episode > 0 {
				a.end(episode, since)
				episode, backoff = 0, 0
			}
			a.reserve.refill() // one atomic load while it is held
			serve(nc)
			continue
		}
		if done() || !acceptErrorPasses(err) {
			if episode > 0 {
				a.end(episode, since)
			}
			return err
		}
		a.errs.Add(1)
		if episode == 0 {
			since = time.Now()
			if a.log != nil {
				a.log(true, err, 0, 0)
			}
		}
		episode++
		if outOfFDs(err) && a.reserve.spend() {
			nc, err := accept()
			if err == nil {
				a.shed.Add(1)
				exhausted(nc)
			}
			a.reserve.refill() // fails while still out: tried again at the next accept
			if err == nil {
				continue
			}
		}
		backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
		time.Sleep(backoff)
		a.reserve.refill()
	}
}

func (a *acceptor) end(episode int64, since time.Time) {
	if a.log != nil {
		a.log(false, nil, episode, time.Since(since))
	}
}

// acceptErrorPasses reports the accept errors a server waits out: a
// timeout, the system's Temporary ones (EMFILE, ENFILE, ECONNABORTED,
// EAGAIN, EINTR...), and memory or buffer exhaustion.
func acceptErrorPasses(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	return outOfFDs(err) || errors.Is(err, syscall.ENOBUFS) || errors.Is(err, syscall.ENOMEM) ||
		errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPROTO)
}

// outOfFDs reports an error for want of file descriptors: the process's
// (EMFILE) or the system's (ENFILE).
func outOfFDs(err error) bool {
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE)
}

// fdReserve is one open descriptor kept to be given up when there are no
// others.
type fdReserve struct {
	mu       sync.Mutex
	f        *os.File
	empty    atomic.Bool // f is nil: refill has work to do
	retrying atomic.Bool // a retryFill goroutine is running
}

// fill opens the reserve if it is not open; it fails quietly while the
// process is still out of descriptors.
func (r *fdReserve) fill() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f != nil {
		return
	}
	if f, err := os.Open(os.DevNull); err == nil {
		r.f = f
		r.empty.Store(false)
	} else {
		r.empty.Store(true)
	}
}

// refill is fill for the moment a descriptor was just closed: one atomic
// load when the reserve is open, as it nearly always is. When it cannot
// fill yet, a goroutine tries again with a backoff until it can: the
// descriptors come back when connections close, not at the next accept,
// and a listener nobody connects to again (the control socket after one
// status in a burst) must have its reserve back for the next burst.
func (r *fdReserve) refill() {
	if !r.empty.Load() {
		return
	}
	r.fill()
	if r.empty.Load() && r.retrying.CompareAndSwap(false, true) {
		go r.retryFill()
	}
}

// retryFill fills the reserve as soon as a descriptor is free: every 5 ms at
// first, then at most every second.
func (r *fdReserve) retryFill() {
	for {
		for wait := 5 * time.Millisecond; r.empty.Load(); wait = min(2*wait, time.Second) {
			time.Sleep(wait)
			r.fill()
		}
		r.retrying.Store(false)
		// A spend between the loop's last look and the Store found a
		// retry still running and left the work to it: take it up.
		if !r.empty.Load() || !r.retrying.CompareAndSwap(false, true) {
			return
		}
	}
}

// spend closes the reserve, reporting whether there was one to close.
func (r *fdReserve) spend() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.f == nil {
		return false
	}
	r.f.Close()
	r.f = nil
	r.empty.Store(true)
	return true
}

// held reports whether the reserve is open.
func (r *fdReserve) held() bool { return !r.empty.Load() }
