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
// one thing per signal: it sets the signal's bit in pending and writes one
// byte into a non-blocking pipe. A full pipe means a wake-up is already
// pending, so the write is dropped: repeated signals coalesce into state
// ("drain requested"), never a count, and the signal side never blocks.
// The gateway's loop reads the pipe, takes the pending bits and does all
// the work (see gateway.go).
type selfPipe struct {
	r       *os.File // read end, read by the loop's wake-up reader
	w       int      // write end, non-blocking
	notify  chan os.Signal
	pending atomic.Uint32
	// since is when the oldest unread stop or restart signal arrived (unix
	// nanoseconds), or 0. The watchdog reads it: a TERM that nobody reads
	// means a frozen loop.
	since atomic.Int64

	wakeOnce sync.Once
	wake     chan struct{}
}

// handledSignals are the signals hermes serve owns. signal.Notify is never
// called without a list: the runtime's own SIGURG would arrive too.
var handledSignals = []os.Signal{syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGHUP}

var sigBits = map[syscall.Signal]uint32{syscall.SIGTERM: 1, syscall.SIGINT: 2, syscall.SIGUSR1: 4, syscall.SIGHUP: 8}

// installSignals must run first thing in serve: until signal.Notify is
// called, SIGTERM, SIGINT and SIGHUP kill the process and SIGUSR1 is ignored.
func installSignals() (*selfPipe, error) {
	p := &selfPipe{notify: make(chan os.Signal, 16)}
	signal.Notify(p.notify, handledSignals...)
	var fds [2]int
	if err := unix.Pipe(fds[:]); err != nil {
		signal.Stop(p.notify)
		return nil, fmt.Errorf("creating the self-pipe: %w", err)
	}
	for _, fd := range fds {
		unix.CloseOnExec(fd)
		if err := unix.SetNonblock(fd, true); err != nil {
			signal.Stop(p.notify)
			return nil, fmt.Errorf("creating the self-pipe: %w", err)
		}
	}
	p.r = os.NewFile(uintptr(fds[0]), "self-pipe")
	p.w = fds[1]
	go p.signalSide()
	return p, nil
}

// signalSide records each signal and writes one byte. Nothing else.
func (p *selfPipe) signalSide() {
	for s := range p.notify {
		sig, ok := s.(syscall.Signal)
		if !ok {
			continue
		}
		bit := sigBits[sig]
		if bit != 1<<3 { // every handled signal but HUP asks the loop to stop
			p.since.CompareAndSwap(0, time.Now().UnixNano())
		}
		p.pending.Or(bit)
		_, err := unix.Write(p.w, []byte{byte(bit)})
		if err != nil && !errors.Is(err, unix.EAGAIN) {
			// The pipe is gone (closing down): the bit stays recorded.
			continue
		}
	}
}

// wakeups feeds the loop: one value each time the pipe has bytes to read.
// It owns no state; the loop calls take to learn which signals arrived.
// Every call returns the same channel (one reader of the pipe): the
// crash-loop delay waits on it before the loop does.
func (p *selfPipe) wakeups() <-chan struct{} {
	p.wakeOnce.Do(func() { p.wake = p.startWakeups() })
	return p.wake
}

func (p *selfPipe) startWakeups() chan struct{} {
	ch := make(chan struct{}, 1)
	go func() {
		buf := make([]byte, 64)
		for {
			if _, err := p.r.Read(buf); err != nil {
				close(ch)
				return
			}
			select {
			case ch <- struct{}{}:
			default: // a wake-up is already queued; the loop will take every bit
			}
		}
	}()
	return ch
}

// take returns the signals recorded since the last call, oldest-first order
// not kept (they are state). Only the loop calls it.
func (p *selfPipe) take() []syscall.Signal {
	bits := p.pending.Swap(0)
	p.since.Store(0)
	var out []syscall.Signal
	for _, s := range []syscall.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT} {
		if bits&sigBits[s] != 0 {
			out = append(out, s)
		}
	}
	return out
}

// unreadFor tells how long a stop or restart signal has waited unread.
func (p *selfPipe) unreadFor(now time.Time) time.Duration {
	s := p.since.Load()
	if s == 0 {
		return 0
	}
	return now.Sub(time.Unix(0, s))
}

func (p *selfPipe) close() {
	signal.Stop(p.notify)
	p.r.Close()
	unix.Close(p.w)
}
