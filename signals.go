package main

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// selfPipe is the only way a signal reaches the gateway.
//
// The signal side (the goroutine that drains signal.Notify's channel) does
// one thing per signal: it writes the signal's number, one byte, into a
// non-blocking pipe. A reader hands the bytes to the loop in the order they
// were written, as typed values on sigs. Nothing else happens on the signal
// side: all the work is the loop's.
//
// Order. The pipe keeps every order it is given. Go's runtime, though,
// keeps signals that arrive within the same few microseconds in a bitmask
// and hands such a batch over in signal-number order (runtime/sigqueue.go:
// signal_recv), and the kernel does the same for standard signals pending
// together: `kill -TERM p; kill -USR1 p` typed on one line may reach any Go
// program as USR1 then TERM. No user-space pipe can undo that, so the
// gateway's rules (loop.go) are built to commute: any two different
// signals have the same outcome in either order.
//
// A full pipe. 64 KiB of unread signals means a loop frozen for a long
// time (the watchdog ends such a gateway); even then nothing is lost but
// repeats: a signal that does not fit waits, in arrival order, in a list
// that holds each signal at most once, and is written as soon as the
// reader makes room. Only repeats of the same signal coalesce.
type selfPipe struct {
	r      *os.File // read end, read by reader
	w      int      // write end, non-blocking, written by the signal side only
	notify chan os.Signal
	sigs   chan syscall.Signal // to the loop, in arrival order
	space  chan struct{}       // the reader made room in the pipe
	stop   chan struct{}       // closed by close: the reader stops forwarding

	// The watchdog's view: a stop or restart signal written but not yet
	// taken by the loop (see unreadFor). arrived and taken count such
	// signals; waiting is since when the oldest of them waits (monoNanos).
	arrived, taken atomic.Uint64
	waiting        atomic.Int64

	sideDone  chan struct{}
	closeOnce sync.Once
}

// handledSignals are the signals hermes serve owns. signal.Notify is never
// called without a list: the runtime's own SIGURG would arrive too.
var handledSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGHUP}

// stopsLoop reports whether a signal asks the loop to end (drain, stop):
// the watchdog counts such a signal that nobody reads as a frozen loop.
func stopsLoop(s syscall.Signal) bool { return s != syscall.SIGHUP }

// installSignals must run first thing in serve: until signal.Notify is
// called, SIGTERM, SIGINT and SIGHUP kill the process and SIGUSR1 is ignored.
func installSignals() (*selfPipe, error) {
	p := &selfPipe{
		notify:   make(chan os.Signal, 64),
		sigs:     make(chan syscall.Signal, 64),
		space:    make(chan struct{}, 1),
		stop:     make(chan struct{}),
		sideDone: make(chan struct{}),
	}
	signal.Notify(p.notify, handledSignals...)
	var fds [2]int
	if err := unix.Pipe(fds[:]); err != nil {
		signal.Stop(p.notify)
		return nil, fmt.Errorf("creating the self-pipe: %w", err)
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	if err := unix.SetNonblock(fds[1], true); err != nil {
		signal.Stop(p.notify)
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, fmt.Errorf("creating the self-pipe: %w", err)
	}
	p.r = os.NewFile(uintptr(fds[0]), "self-pipe")
	p.w = fds[1]
	go p.signalSide()
	go p.reader()
	return p, nil
}

// signalSide writes one byte per signal, in arrival order. Nothing else.
func (p *selfPipe) signalSide() {
	defer close(p.sideDone)
	var waiting []byte // did not fit in the pipe: each signal at most once, in order
	flush := func() {
		for len(waiting) > 0 {
			if _, err := unix.Write(p.w, waiting[:1]); err != nil {
				return // still full (EAGAIN): the reader will say when there is room
			}
			waiting = waiting[1:]
		}
	}
	for {
		select {
		case s, ok := <-p.notify:
			if !ok {
				return
			}
			sig, ok := s.(syscall.Signal)
			if !ok {
				continue
			}
			b := byte(sig)
			flush()
			if len(waiting) > 0 {
				if !containsByte(waiting, b) {
					waiting = append(waiting, b)
					p.arrive(sig)
				}
				continue
			}
			p.arrive(sig)
			if _, err := unix.Write(p.w, []byte{b}); err != nil {
				if errors.Is(err, unix.EAGAIN) {
					waiting = append(waiting, b)
				}
			}
		case <-p.space:
			flush()
		}
	}
}

func containsByte(bs []byte, b byte) bool {
	for _, x := range bs {
		if x == b {
			return true
		}
	}
	return false
}

// arrive records, for the watchdog, a stop or restart signal that the loop
// has not taken yet.
func (p *selfPipe) arrive(sig syscall.Signal) {
	if !stopsLoop(sig) {
		return
	}
	p.arrived.Add(1)
	p.waiting.CompareAndSwap(0, monoNow())
}

// reader hands the pipe's bytes to the loop in order. When the loop does
// not take them (frozen), it blocks here, the pipe fills, and the signal
// side keeps what does not fit.
func (p *selfPipe) reader() {
	buf := make([]byte, 64)
	for {
		n, err := p.r.Read(buf)
		if n > 0 {
			select {
			case p.space <- struct{}{}:
			default:
			}
		}
		for _, b := range buf[:n] {
			select {
			case p.sigs <- syscall.Signal(b):
			case <-p.stop:
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// took is called by the loop (or the crash-loop delay) for every signal it
// takes from sigs, so that unreadFor stays true.
func (p *selfPipe) took(sig syscall.Signal) {
	if !stopsLoop(sig) {
		return
	}
	now := monoNow()
	t := p.taken.Add(1)
	if t != p.arrived.Load() {
		// More are waiting; the loop just made progress, so the next one
		// counts from now.
		p.waiting.Store(now)
		return
	}
	p.waiting.Store(0)
	if p.arrived.Load() != t {
		// One arrived between the two loads: it waits from now at the latest.
		p.waiting.CompareAndSwap(0, now)
	}
}

// unreadFor tells how long a stop or restart signal has waited for the
// loop to take it: 0 when none waits.
func (p *selfPipe) unreadFor(now int64) time.Duration {
	s := p.waiting.Load()
	if s == 0 {
		return 0
	}
	return max(time.Duration(now-s), 0)
}

// close stops signal delivery and then closes the pipe. signal.Stop
// guarantees that no more signals are sent on notify, so the signal side
// ends, and only then is the write end closed: it never writes to a closed
// (or reused) descriptor.
func (p *selfPipe) close() {
	p.closeOnce.Do(func() {
		signal.Stop(p.notify)
		close(p.notify)
		<-p.sideDone
		close(p.stop)
		unix.Close(p.w)
		p.r.Close()
	})
}
