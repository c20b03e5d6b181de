package main

import (
	"time"
)

// [reattach]: how long a stream whose client left is kept for it to come
// back with Last-Event-ID, and how much of it (reattach.go).

// ReattachPolicy is [reattach].
type ReattachPolicy struct {
	// Window is how long a stream with nobody attached is read on and
	// kept; 0: no reattach (the client leaving cancels its upstream).
	Window time.Duration
	// MaxBuffer is the most one stream keeps of its events; past it, its
	// chance of a reattach ends.
	MaxBuffer int64
	// MaxTotal is the most all streams' buffers hold together; past it,
	// the oldest lingering streams are forgotten first, then a detached
	// stream that grows overflows.
	MaxTotal int64
	// Linger is how long a stream whose end was written to its client
	// stays reattachable (at most Window: lingerFor): a write that
	// succeeded is no proof the client read it.
	Linger time.Duration
}

// lingerFor is how long a delivered stream lingers: Linger, at most Window.
func (r ReattachPolicy) lingerFor() time.Duration { return min(r.Linger, r.Window) }

type fileReattach struct {
	Window    *string `toml:"window" kind:"duration"`
	MaxBuffer *string `toml:"max_buffer"`
	MaxTotal  *string `toml:"max_total"`
	Linger    *string `toml:"linger" kind:"duration"`
}

func defaultReattach() ReattachPolicy {
	return ReattachPolicy{Window: 2 * time.Minute, MaxBuffer: 1 << 20, MaxTotal: 64 << 20, Linger: 30 * time.Second}
}

// applyReattach applies [reattach].
func (v *validator) applyReattach(p *Policy, f *fileReattach) {
	v.dur(&p.Reattach.Window, f.Window, "reattach.window")
	v.dur(&p.Reattach.Linger, f.Linger, "reattach.linger")
	v.size(&p.Reattach.MaxBuffer, f.MaxBuffer, "reattach.max_buffer")
	v.size(&p.Reattach.MaxTotal, f.MaxTotal, "reattach.max_total")
}

// size parses a size key into dst.
func (v *validator) size(dst *int64, src *string, key string) {
	if src == nil {
		return
	}
	n, err := parseSize(*src)
	if err != nil {
		v.fail(key, "%q: %v (write it like \"1MiB\" or \"256KiB\")", *src, err)
		return
	}
	*dst = n
}

// checkReattach validates [reattach] as a whole.
func (v *validator) checkReattach(p *Policy) {
	r := p.Reattach
	if r.Window > time.Hour {
		v.fail("reattach.window", "%s is too long: use at most 1h (a stream nobody reads holds its upstream and its buffer that long), or 0 for no reattach", r.Window)
	}
	if r.Window > 0 && (r.MaxBuffer < 4<<10 || r.MaxBuffer > 256<<20) {
		v.fail("reattach.max_buffer", "%q is out of range: use 4KiB to 256MiB", formatSize(r.MaxBuffer))
	}
	if r.Window > 0 && r.MaxTotal < r.MaxBuffer {
		v.fail("reattach.max_total", "%q is less than reattach.max_buffer (%q): the streams together need room for at least one", formatSize(r.MaxTotal), formatSize(r.MaxBuffer))
	}
}
