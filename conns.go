package main

import (
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// connTracker counts the gateway's client connections and ends them cleanly
// once the gateway has handed off.
//
// A handed-off gateway must not refuse a request and must not cut one. It
// keeps serving whatever arrives on the connections it already has, and
// every response then carries "Connection: close" (routes.go), so a busy
// client moves to the successor on its next request. What it must not do
// is close a keep-alive connection the moment it goes idle: a client may
// be writing its next request into it at that very moment (the race HTTP/1.1
// leaves open, and the one net/http's SetKeepAlivesEnabled(false) runs into
// by closing idle connections at once; HAProxy's idle-close-on-response
// exists for it too). So a connection is closed only after it has been idle
// for idleCloseAfter, longer than any busy client leaves a connection idle
// between two requests, and the gateway exits once none is left.
type connTracker struct {
	open    atomic.Int64
	conns   sync.Map // net.Conn -> *connInfo
	changed func()   // wakes the loop when a connection closes (handed off)
	closing atomic.Bool
}

type connInfo struct {
	idleSince atomic.Int64 // unix ns; 0 while a request is in progress
}

// idleCloseAfter: a handed-off gateway closes a connection idle this long.
const idleCloseAfter = time.Second

// hook is the server's ConnState. It never blocks: a lookup and atomics.
func (t *connTracker) hook(c net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		t.open.Add(1)
		t.conns.Store(c, &connInfo{})
	case http.StateActive:
		if ci, ok := t.conns.Load(c); ok {
			ci.(*connInfo).idleSince.Store(0)
		}
	case http.StateIdle:
		if ci, ok := t.conns.Load(c); ok {
			ci.(*connInfo).idleSince.Store(time.Now().UnixNano())
		}
	case http.StateClosed, http.StateHijacked:
		if _, ok := t.conns.LoadAndDelete(c); ok {
			t.open.Add(-1)
			if t.closing.Load() && t.changed != nil {
				t.changed()
			}
		}
	}
}

func (t *connTracker) count() int { return int(t.open.Load()) }

// closeIdle closes the connections idle since before now-d.
func (t *connTracker) closeIdle(now time.Time, d time.Duration) {
	cut := now.Add(-d).UnixNano()
	t.conns.Range(func(k, v any) bool {
		if s := v.(*connInfo).idleSince.Load(); s != 0 && s <= cut {
			k.(net.Conn).Close()
		}
		return true
	})
}
