package main

import (
	"context"
	"sync"
)

// onCancel runs f once ctx ends, like context.AfterFunc, and returns what
// undoes it. A request served by hermes's own server (h1_server.go) has its
// connection's context, which carries a cancelSlot: arming the slot costs
// nothing, where AfterFunc allocates three objects on every request. A
// context of any other kind (a request's own child context, the Telegram
// side's) gets AfterFunc.
func onCancel(ctx context.Context, f func()) cancelStop {
	if s, ok := ctx.Value(cancelSlotKey{}).(*cancelSlot); ok && s.ctx == ctx && s.arm(f) {
		return cancelStop{slot: s}
	}
	return cancelStop{after: context.AfterFunc(ctx, f)}
}

// cancelStop undoes an onCancel.
type cancelStop struct {
	slot  *cancelSlot
	after func() bool
}

// stop keeps f from running, and reports false when it was too late: ctx
// ended, and f ran or runs.
func (s cancelStop) stop() bool {
	if s.slot != nil {
		return s.slot.disarm()
	}
	return s.after()
}

type cancelSlotKey struct{}

// cancelSlot holds the one function to run when a client connection's
// context ends (the client went away, or the gateway cut its sessions). It
// registers with the context once, on first use, not once per request.
type cancelSlot struct {
	ctx context.Context // the connection's: the slot is in it

	mu         sync.Mutex
	f          func()
	registered bool
	ended      bool
}

// withCancelSlot returns ctx carrying a slot for itself.
func withCancelSlot(ctx context.Context, s *cancelSlot) context.Context {
	s.ctx = context.WithValue(ctx, cancelSlotKey{}, s)
	return s.ctx
}

// arm sets f, and reports false when the slot is taken or ctx has ended
// (then onCancel falls back to AfterFunc, which runs f at once).
func (s *cancelSlot) arm(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f != nil || s.ended {
		return false
	}
	s.f = f
	if !s.registered {
		s.registered = true
		context.AfterFunc(s.ctx, s.fire)
	}
	return true
}

// disarm takes f back, and reports false when it already ran.
func (s *cancelSlot) disarm() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.f == nil {
		return false
	}
	s.f = nil
	return true
}

// fire runs when ctx ends (on AfterFunc's goroutine).
func (s *cancelSlot) fire() {
	s.mu.Lock()
	f := s.f
	s.f, s.ended = nil, true
	s.mu.Unlock()
	if f != nil {
		f()
	}
}
