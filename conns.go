package main

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// connTracker counts the gateway's client connections, knows which are idle
// or sending a request head and since when (h1Server records it, and its
// sweeper applies gateway.idle_timeout and gateway.header_timeout), and ends
// them cleanly once the gateway has handed off.
//
// A handed-off gateway must not refuse a request and must not cut one. It
// keeps serving whatever arrives on the connections it already has, and
// every response then carries "Connection: close" (routes.go), so a busy
// client moves to the successor on its next request. What it must not do
// is close a keep-alive connection the moment it goes idle: a client may
// be writing its next request into it at that very moment (the race HTTP/1.1
// leaves open, and the one a drain's closeKeepAlive runs into by closing
// idle connections at once; HAProxy's idle-close-on-response
// exists for it too). So a connection is closed only after it has been idle
// for idleCloseAfter, longer than any busy client leaves a connection idle
// between two requests, and the gateway exits once none is left.
type connTracker struct {
	open    atomic.Int64
	refused atomic.Int64 // connections refused past gateway.max_connections
	conns   sync.Map     // net.Conn -> *connInfo
	changed func()       // wakes the loop when a connection closes (handed off)
	closing atomic.Bool
}

type connInfo struct {
	nc        net.Conn
	accepted  int64        // monoNanos
	served    atomic.Bool  // it has carried a request
	idleSince atomic.Int64 // monoNanos; 0 unless waiting for a request
	headSince atomic.Int64 // monoNanos; 0 unless reading a request head
	// writeSince: monoNanos; 0 unless a write to the client waits.
	writeSince atomic.Int64
}

// idleCloseAfter: a handed-off gateway closes a connection idle this long.
const idleCloseAfter = time.Second

// add tracks a new connection: idle until its first request arrives, and
// on the head timeout's clock from now (a client that connects and sends
// nothing is as slow as one that sends half a head).
func (t *connTracker) add(c net.Conn) *connInfo {
	now := monoNow()
	ci := &connInfo{nc: c, accepted: now}
	ci.idleSince.Store(now)
	ci.headSince.Store(now)
	t.open.Add(1)
	t.conns.Store(c, ci)
	return ci
}

// remove forgets a closed connection, and wakes the loop when a handed-off
// gateway waits for its last one.
func (t *connTracker) remove(c net.Conn) {
	if _, ok := t.conns.LoadAndDelete(c); ok {
		t.open.Add(-1)
		if t.closing.Load() && t.changed != nil {
			t.changed()
		}
	}
}

func (t *connTracker) count() int { return int(t.open.Load()) }

// closeIdle closes the connections idle since before now-d.
func (t *connTracker) closeIdle(now time.Time, d time.Duration) {
	cut := monoNanos(now.Add(-d))
	t.conns.Range(func(_, v any) bool {
		if ci := v.(*connInfo); ci.idle(cut) {
			ci.nc.Close()
		}
		return true
	})
}

// closeKeepAlive closes, when keep-alives are turned off, the idle
// connections that have carried a request, and those that have carried
// none for newAfter: one accepted a moment ago is likely carrying its first
// request, which gets its answer (with Connection: close) instead of a
// reset. net/http's rule, and its 5 s.
func (t *connTracker) closeKeepAlive(now time.Time) {
	cut, fresh := monoNanos(now), monoNanos(now.Add(-newAfter))
	t.conns.Range(func(_, v any) bool {
		if ci := v.(*connInfo); ci.idle(cut) && (ci.served.Load() || ci.accepted <= fresh) {
			ci.nc.Close()
		}
		return true
	})
}

const newAfter = 5 * time.Second

// closeStale closes the connections idle for longer than idle, and those
// sending a request head for longer than head.
func (t *connTracker) closeStale(now time.Time, to h1Limits) {
	idleCut, headCut := monoNanos(now.Add(-to.idle)), monoNanos(now.Add(-to.head))
	writeCut := monoNanos(now.Add(-to.write))
	t.conns.Range(func(_, v any) bool {
		ci := v.(*connInfo)
		if ci.idle(idleCut) {
			ci.nc.Close()
		} else if s := ci.headSince.Load(); s != 0 && s <= headCut {
			ci.nc.Close()
		} else if s := ci.writeSince.Load(); s != 0 && s <= writeCut {
			ci.nc.Close() // a client that reads nothing of its answer
		}
		return true
	})
}

// closeAll closes every connection.
func (t *connTracker) closeAll() {
	t.conns.Range(func(_, v any) bool {
		v.(*connInfo).nc.Close()
		return true
	})
}

func (ci *connInfo) idle(cut int64) bool {
	s := ci.idleSince.Load()
	return s != 0 && s <= cut
}
