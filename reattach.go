package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// Detached streams ([reattach]): a stream of events hermes relays is kept,
// event by event, each with an id of its own ("<stream id>-<n>"), so that
// a client whose connection broke can come back with Last-Event-ID and get
// the rest: every event after n, then the live rest, none lost, none
// twice. Its upstream is read on while nobody is attached, for
// reattach.window, into a buffer of at most reattach.max_buffer; all the
// streams' buffers together hold at most reattach.max_total.
//
// A stream is a liveStream in the gateway's streamRegistry. One producer
// fills it: the session that started it, on its own goroutine, while its
// client stays (it writes what it adds straight to its client), and a pump
// goroutine once that client has gone. Whoever is attached follows it: the
// first client (generation 1, the producer itself) or one that came back
// (generation 2, 3, ...); a newer one takes over from an older, whose
// connection may be dead without its knowing. A stream whose end was
// written to its client lingers for reattach.linger, holding no place
// in the drain: a write that succeeded is no proof the client read it (a
// phone that changed networks leaves its old connection open on this
// side), and the client may come back for the tail. A stream is removed
// when its time passes (nobody came back in its window: expired; or it
// lingered), or
// when it overflows; a tombstone then answers a late Last-Event-ID for it
// for one more window.

// streamIDLen is a stream id's length: 128 random bits, in hex.
const streamIDLen = 32

// maxTombs bounds the tombstones kept: the oldest go first.
const maxTombs = 4096

// streamRegistry is the gateway's streams, by id.
type streamRegistry struct {
	gate *admission // a detached stream holds a session's place in it
	cut  context.Context
	log  *logger

	mu        sync.Mutex
	live      map[string]*liveStream
	tombs     map[string]streamTomb
	tombIDs   []string      // the tombstones' ids, oldest first
	lingering []*liveStream // streams lingering after their end, oldest first (some since gone)

	counts reattachCounts

	// A successor takes the streams whose end came, with nobody attached
	// (reattach_handoff.go): adopting says it asked, movable wakes it.
	adopting atomic.Bool
	movable  chan struct{}
	moved    chan struct{} // a stream went to the successor
}

// wakeAdopter tells the successor's adoption a stream may be movable.
func (reg *streamRegistry) wakeAdopter() {
	if reg.adopting.Load() {
		select {
		case reg.movable <- struct{}{}:
		default:
		}
	}
}

// reattachCounts are the registry's counts, for /metrics.
type reattachCounts struct {
	detached, reattached, expired, overflowed atomic.Uint64
	detachedNow                               atomic.Int64 // streams with nobody attached now
	buffered                                  atomic.Int64 // bytes the live streams' buffers hold
}

// How a stream ended, as its tombstone says.
const (
	tombDelivered = iota
	tombExpired
	tombOverflowed
	tombRemoved // the gateway cut it (a drain's end)
	tombMoved   // handed to the successor (reattach_handoff.go)
)

type streamTomb struct {
	how   int
	owner [32]byte
	path  string
	last  int // its last event's number
	at    time.Time
	win   time.Duration
}

func newStreamRegistry(gate *admission, cut context.Context, log *logger) *streamRegistry {
	reg := &streamRegistry{gate: gate, cut: cut, log: log, live: map[string]*liveStream{}, tombs: map[string]streamTomb{}, movable: make(chan struct{}, 1), moved: make(chan struct{}, 1)}
	// A drain's cut ends every detached stream: it waits for them no
	// longer than for attached ones.
	context.AfterFunc(cut, reg.cutAll)
	return reg
}

// liveStream is one stream of events, kept for reattach.
type liveStream struct {
	reg    *streamRegistry
	id     string
	owner  [32]byte // the client key's SHA-256 that started it; zero without [auth]
	path   string
	window time.Duration
	linger time.Duration // reattach.linger
	max    int
	total  int64                   // reattach.max_total
	cancel context.CancelCauseFunc // ends its upstream
	kick   func()                  // unblocks the first client's write, once another took over

	mu   sync.Mutex
	buf  blockBuf // every event so far, with its id line
	ends []uint32 // ends[i]: where event i+1 ends in buf
	seq  int      // events numbered so far
	held []byte   // the start of an event still arriving
	// consumer is the generation attached (0: nobody); gen the newest.
	consumer, gen int
	lingering     bool  // its end was written to the client attached then
	done          bool  // the upstream's answer ended
	err           error // how: nil at its end, else the cut
	overflow      bool  // past max: no reattach; buf is scratch for the first client
	removed       bool
	slot          bool          // it holds a session's place in the gate
	wake          chan struct{} // closed when buf grows or the stream ends; made by a waiter
	timer         *time.Timer   // the window, while nobody is attached
	until         time.Time     // when the timer fires
	moving        bool          // being handed to a successor
	pins          int           // writers of buf's bytes outside st.mu
	freeLater     bool          // removed while pinned: the last unpin frees buf
	counted       int           // cap(buf) as counts.buffered has it
}

func newStreamID() string {
	var b [streamIDLen / 2]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// open registers a new stream, with its first client attached.
func (reg *streamRegistry) open(p ReattachPolicy, owner [32]byte, path string, cancel context.CancelCauseFunc, kick func()) *liveStream {
	st := &liveStream{reg: reg, id: newStreamID(), owner: owner, path: path, window: p.Window, linger: p.lingerFor(),
		max: int(p.MaxBuffer), total: p.MaxTotal, cancel: cancel, kick: kick, consumer: 1, gen: 1}
	st.ends = make([]uint32, 0, 64) // a chat answer's events, most of the time
	reg.mu.Lock()
	reg.live[st.id] = st
	reg.mu.Unlock()
	return st
}

// readOnce reads body once, with a buffer taken only once data is there
// (waiter, when body can say so), and adds what came (add).
func (st *liveStream) readOnce(body io.Reader, waiter dataWaiter, gen int) (from, to int, mine, gone bool, err error) {
	if waiter != nil {
		waiter.waitData()
	}
	bp := getBuf(copyBuf)
	n, err := body.Read(*bp)
	from, to, mine, gone = st.add((*bp)[:n], err, gen)
	putBuf(bp)
	return from, to, mine, gone, err
}

// add takes what one read of the upstream brought (rerr: how the read
// ended) and numbers the whole events in it. It returns where the bytes
// added are in buf (for the first client to write, when it is still
// attached: mine), and whether the stream is gone (the producer stops).
func (st *liveStream) add(p []byte, rerr error, gen int) (from, to int, mine, gone bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.removed {
		return 0, 0, false, true
	}
	if st.overflow {
		st.resetBuf() // scratch for the first client: it wrote the last already
	}
	from = st.buf.len()
	st.frame(p, rerr)
	if !st.overflow && st.buf.len() > st.max {
		st.overflowed()
		if st.removed {
			return 0, 0, false, true
		}
	}
	st.account()
	st.broadcast()
	return from, st.buf.len(), gen != 0 && st.consumer == gen, false
}

// pinSeg is the bytes of buf from off to the end of its block, pinned:
// buf keeps its blocks until unpin, even if the stream is removed
// meanwhile. nil at the end. st.mu is held.
func (st *liveStream) pinSeg(off int) []byte {
	s := st.buf.seg(off)
	if len(s) > 0 {
		st.pins++
	}
	return s
}

func (st *liveStream) unpin() {
	st.mu.Lock()
	st.pins--
	if st.pins == 0 && st.freeLater {
		st.buf.free()
		st.freeLater = false
	}
	st.mu.Unlock()
}

// resetBuf empties buf: its blocks go back to the pool, or to the
// collector when someone still writes from them. st.mu is held.
func (st *liveStream) resetBuf() {
	if st.pins == 0 {
		st.buf.free()
		return
	}
	st.buf.drop()
}

// writeOut writes buf from from to to, a block at a time.
func (st *liveStream) writeOut(w io.Writer, from, to int) error {
	for from < to {
		st.mu.Lock()
		s := st.pinSeg(from)
		st.mu.Unlock()
		if len(s) == 0 {
			return nil // removed under us
		}
		s = s[:min(len(s), to-from)]
		_, err := w.Write(s)
		st.unpin()
		if err != nil {
			return err
		}
		from += len(s)
	}
	return nil
}

// frame appends p's whole events to buf, each with its id, and holds the
// start of one still arriving. At the stream's clean end (rerr io.EOF),
// what is held is passed on as it came: the upstream ended it so. At a
// cut it is dropped: a stream cut inside an event ends with whole events
// and the error event, never a half event the error's lines would join.
func (st *liveStream) frame(p []byte, rerr error) {
	final := rerr != nil
	from := p
	if len(st.held) > 0 {
		st.held = append(st.held, p...)
		from = st.held
	}
	lfOnly := bytes.IndexByte(from, '\r') < 0 // most streams: events end with "\n\n"
	for {
		var k int
		if lfOnly {
			k = eventEndLF(from)
		} else {
			k = eventEnd(from, final)
		}
		if k == 0 {
			break
		}
		st.event(from[:k])
		from = from[k:]
	}
	if (final && rerr == io.EOF) || len(from) > maxHeldEvent {
		st.buf.write(from)
	}
	if final || len(from) > maxHeldEvent {
		from = from[:0]
	}
	if len(st.held) > 0 {
		st.held = st.held[:copy(st.held, from)]
	} else if len(from) > 0 {
		st.held = append(st.held[:0], from...)
	}
}

// event appends one whole event with its id line first, so that the event
// ends as the upstream ended it ("data: [DONE]\n\n" stays the stream's
// last bytes). An event with an id of the upstream's own keeps it, and
// gets hermes's as its last line instead: the last id is the one a client
// keeps.
func (st *liveStream) event(ev []byte) {
	st.seq++
	if !hasIDLine(ev) {
		st.idLine()
		st.buf.write(ev)
	} else {
		blank := 1
		if len(ev) >= 2 && ev[len(ev)-2] == '\r' && ev[len(ev)-1] == '\n' {
			blank = 2
		}
		st.buf.write(ev[:len(ev)-blank])
		st.idLine()
		st.buf.write(newline)
	}
	if !st.overflow {
		st.ends = append(st.ends, uint32(st.buf.len()))
	}
}

// idLine appends the line "id: <stream id>-<seq>".
func (st *liveStream) idLine() {
	var line [64]byte
	b := append(line[:0], "id: "...)
	b = append(b, st.id...)
	b = append(b, '-')
	b = strconv.AppendInt(b, int64(st.seq), 10)
	st.buf.write(append(b, '\n'))
}

var idField, lfID, crID = []byte("id"), []byte("\nid"), []byte("\rid")

// hasIDLine reports whether an event has a line of the field id.
func hasIDLine(ev []byte) bool {
	if !bytes.HasPrefix(ev, idField) && !bytes.Contains(ev, lfID) && !bytes.Contains(ev, crID) {
		return false // the fast answer, most of the time
	}
	for i := 0; i+3 <= len(ev); i++ {
		if (i == 0 || ev[i-1] == '\n' || ev[i-1] == '\r') && ev[i] == 'i' && ev[i+1] == 'd' && (i+2 == len(ev) || ev[i+2] == ':' || ev[i+2] == '\n' || ev[i+2] == '\r') {
			return true
		}
	}
	return false
}

// eventEndLF is eventEnd for a b without CR.
func eventEndLF(b []byte) int {
	if len(b) > 0 && b[0] == '\n' {
		return 1 // a blank line alone
	}
	if i := bytes.Index(b, blankLF); i >= 0 {
		return i + 2
	}
	return 0
}

var blankLF = []byte("\n\n")

// eventEnd is the length of b's first whole event: up to the end of its
// first blank line, or 0 when it has none yet. A CR that ends b may be the
// start of a CRLF, unless b is the last of the stream.
func eventEnd(b []byte, final bool) int {
	start := 0 // where the line being read starts
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '\n' && c != '\r' {
			continue
		}
		end := i + 1
		if c == '\r' {
			if end == len(b) && !final {
				return 0
			}
			if end < len(b) && b[end] == '\n' {
				end++
			}
		}
		if i == start {
			return end // an empty line: the event ends with it
		}
		start = end
		i = end - 1
	}
	return 0
}

// overflowed ends the stream's chance of a reattach: what it keeps is over
// reattach.max_buffer. A first client still attached reads on; with
// anyone else, or nobody, the stream ends.
func (st *liveStream) overflowed() {
	st.overflow = true
	st.reg.counts.overflowed.Add(1)
	st.reg.log.warn(evStreamOverflowed, "stream", st.short(), "events", st.seq, "max_buffer", formatSize(int64(st.max)))
	if st.consumer == 1 {
		st.ends = nil // buf is scratch from the next add on
		return
	}
	st.remove(tombOverflowed)
}

// overBudget is true when the streams' buffers hold more than
// reattach.max_total together.
func (st *liveStream) overBudget() bool { return st.reg.counts.buffered.Load() > st.total }

// keepWithin is a pump's check after each read: past reattach.max_total,
// the oldest lingering streams are forgotten first; if that is not
// enough, this stream, when nobody is attached to it, can no longer be
// kept.
func (st *liveStream) keepWithin() {
	if !st.overBudget() {
		return
	}
	st.reg.trim(st.total)
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.removed && st.consumer == 0 && !st.lingering && !st.overflow && st.overBudget() {
		st.overflowed()
	}
}

// trim forgets lingering streams, oldest first, while the buffers hold
// more than total.
func (reg *streamRegistry) trim(total int64) {
	for reg.counts.buffered.Load() > total {
		reg.mu.Lock()
		if len(reg.lingering) == 0 {
			reg.mu.Unlock()
			return
		}
		st := reg.lingering[0]
		reg.lingering = reg.lingering[1:]
		reg.mu.Unlock()
		st.mu.Lock()
		if !st.removed && st.lingering {
			st.remove(tombDelivered)
		}
		st.mu.Unlock()
	}
}

// account keeps counts.buffered in step with buf.
func (st *liveStream) account() {
	if c := st.buf.capBytes() + cap(st.held); c != st.counted {
		st.reg.counts.buffered.Add(int64(c - st.counted))
		st.counted = c
	}
}

// broadcast wakes whoever waits for the stream.
func (st *liveStream) broadcast() {
	if st.wake != nil {
		close(st.wake)
		st.wake = nil
	}
}

// dropKick forgets the first client's kick: its session is over.
func (st *liveStream) dropKick() {
	st.mu.Lock()
	st.kick = nil
	st.mu.Unlock()
}

// short is the stream's id as the log has it: enough to tell streams
// apart, too little to reattach to one (the rest is 96 random bits).
func (st *liveStream) short() string { return st.id[:8] }

// finish records the end of the upstream's answer: err nil at its end,
// else the cut.
func (st *liveStream) finish(err error) {
	if err == errStreamGone {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.removed || st.done {
		return
	}
	if err == io.EOF {
		err = nil
	}
	st.done, st.err = true, err
	st.broadcast()
	if st.consumer == 0 {
		st.releaseSlot()
		st.reg.wakeAdopter()
	}
}

// lost detaches generation gen, when it is the one attached: its client
// went. The stream is kept for its window (a drain's cut ends it now).
func (st *liveStream) lost(gen int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.removed || st.consumer != gen {
		return
	}
	st.consumer = 0
	if st.overflow {
		st.remove(tombOverflowed)
		return
	}
	if st.done {
		st.releaseSlot()
		st.reg.wakeAdopter()
	} else {
		st.holdSlot()
	}
	if st.reg.cut.Err() != nil {
		st.remove(tombRemoved)
		return
	}
	st.reg.counts.detached.Add(1)
	st.reg.counts.detachedNow.Add(1)
	st.reg.log.info(evStreamDetached, "stream", st.short(), "path", st.path, "events", st.seq, "window", st.window)
	st.arm(st.window)
}

// arm starts the stream's window: it is removed when d passes with nobody
// attached.
func (st *liveStream) arm(d time.Duration) {
	st.until = time.Now().Add(d)
	st.timer = time.AfterFunc(d, st.expire)
}

// holdSlot has the stream hold a session's place in the gate while its
// upstream is read, or a client that came back follows it: it lives on
// after the session that started it, and a drain waits for it as for
// any session (and no longer: the drain's cut ends it). A stream whose
// end came, with nobody attached, holds none: a drain does not wait for
// a client to come back (a handoff moves it to the successor instead,
// reattach_handoff.go).
func (st *liveStream) holdSlot() {
	if !st.slot {
		st.slot = true
		st.reg.gate.hold()
	}
}

func (st *liveStream) releaseSlot() {
	if st.slot {
		st.slot = false
		st.reg.gate.leave()
	}
}

// expire ends a stream nobody came back to within its window.
func (st *liveStream) expire() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.removed || st.consumer != 0 {
		return
	}
	if st.lingering {
		st.remove(tombDelivered) // its end went out a window ago
		return
	}
	st.reg.counts.expired.Add(1)
	st.reg.log.info(evStreamExpired, "stream", st.short(), "path", st.path, "events", st.seq, "window", st.window)
	st.remove(tombExpired)
}

// delivered records that the stream's end was written to generation gen:
// the stream lingers for reattach.linger, holding no place in the gate,
// in case the client did not read it all.
func (st *liveStream) delivered(gen int) {
	st.mu.Lock()
	if st.removed || st.consumer != gen {
		st.mu.Unlock()
		return
	}
	if st.overflow || st.linger <= 0 || st.reg.cut.Err() != nil {
		st.remove(tombDelivered)
		st.mu.Unlock()
		return
	}
	st.consumer, st.lingering = 0, true
	st.releaseSlot()
	st.arm(st.linger)
	st.reg.wakeAdopter()
	st.mu.Unlock()
	reg := st.reg
	reg.mu.Lock()
	if len(reg.lingering) > 2*len(reg.live)+64 {
		keep := reg.lingering[:0]
		for _, l := range reg.lingering {
			if l.reg.live[l.id] == l {
				keep = append(keep, l)
			}
		}
		clear(reg.lingering[len(keep):])
		reg.lingering = keep
	}
	reg.lingering = append(reg.lingering, st)
	reg.mu.Unlock()
	reg.trim(st.total)
}

// errStreamGone is the cause a removed stream's upstream is cancelled with.
var errStreamGone = errors.New("the stream was removed")

// remove takes the stream out of the registry, leaving a tombstone; st.mu
// is held.
func (st *liveStream) remove(how int) {
	st.removed = true
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if st.consumer == 0 && !st.lingering {
		st.reg.counts.detachedNow.Add(-1)
	}
	if st.pins == 0 {
		st.buf.free()
	} else {
		st.freeLater = true // the last unpin frees it
	}
	st.ends, st.held = nil, nil
	st.reg.counts.buffered.Add(-int64(st.counted))
	st.counted = 0
	st.broadcast()
	reg := st.reg
	reg.mu.Lock()
	delete(reg.live, st.id)
	reg.tomb(st.id, streamTomb{how: how, owner: st.owner, path: st.path, last: st.seq, at: time.Now(), win: st.window})
	reg.mu.Unlock()
	st.cancel(errStreamGone)
	st.releaseSlot()
}

// tomb keeps a tombstone, the oldest going past maxTombs; reg.mu is held.
func (reg *streamRegistry) tomb(id string, t streamTomb) {
	if _, ok := reg.tombs[id]; !ok {
		reg.tombIDs = append(reg.tombIDs, id)
	}
	reg.tombs[id] = t
	for len(reg.tombIDs) > maxTombs {
		delete(reg.tombs, reg.tombIDs[0])
		reg.tombIDs = reg.tombIDs[1:]
	}
}

// snapshot is the live streams now. A stream's lock is taken only
// without reg.mu held (remove takes reg.mu under the stream's).
func (reg *streamRegistry) snapshot() []*liveStream {
	reg.mu.Lock()
	defer reg.mu.Unlock()
	all := make([]*liveStream, 0, len(reg.live))
	for _, st := range reg.live {
		all = append(all, st)
	}
	return all
}

// cutAll ends the detached streams: the drain's time is up.
func (reg *streamRegistry) cutAll() {
	for _, st := range reg.snapshot() {
		st.mu.Lock()
		if !st.removed && st.consumer == 0 {
			st.remove(tombRemoved)
		}
		st.mu.Unlock()
	}
}

// A refusal of a Last-Event-ID: the status and the OpenAI-shaped error.
type reattachRefusal struct {
	status    int
	code, msg string
}

func (r *reattachRefusal) Error() string { return r.code + ": " + r.msg }

var (
	refuseUnknown = &reattachRefusal{410, "stream_not_found", "no stream with this Last-Event-ID is kept by this gateway: it ended more than reattach.window ago, or was never this gateway's; send the request again without Last-Event-ID for a new answer"}
	refuseForeign = &reattachRefusal{409, "stream_foreign", "this stream was started by another client key, or for another path: only the request that started it may reattach to it"}
	refuseAhead   = &reattachRefusal{409, "last_event_id_ahead", "Last-Event-ID names an event this stream has not sent yet"}
	refuseExpired = &reattachRefusal{410, "stream_expired", "the stream was kept for reattach.window after its client left, and nobody came back in time; send the request again without Last-Event-ID for a new answer"}
	refuseOver    = &reattachRefusal{410, "stream_overflowed", "the stream grew past reattach.max_buffer while nobody read it, so it could not be kept; send the request again without Last-Event-ID for a new answer"}
	refuseEnded   = &reattachRefusal{410, "stream_ended", "the stream ended, and its end was delivered; its events are no longer kept"}
	refuseCut     = &reattachRefusal{410, "stream_cut", "the gateway ended the stream as it stopped; send the request again without Last-Event-ID for a new answer"}
	// refuseMoved: the stream went to the successor; it answers instead.
	refuseMoved = &reattachRefusal{410, "stream_moved", "the stream was handed to the gateway that took over from this one"}
	// finishedAlready is no refusal: the client has every event (204).
	finishedAlready = &reattachRefusal{204, "", ""}
)

// attach attaches a client that came back with Last-Event-ID <id>-<n>:
// the stream, its new generation and where in buf event n+1 starts; or
// why not.
func (reg *streamRegistry) attach(id string, n int, owner [32]byte, path string) (*liveStream, int, int, *reattachRefusal) {
	reg.mu.Lock()
	st := reg.live[id]
	t, tomb := reg.tombs[id]
	reg.mu.Unlock()
	if st == nil {
		switch {
		case !tomb || time.Since(t.at) > t.win:
			return nil, 0, 0, refuseUnknown
		case t.owner != owner || t.path != path:
			return nil, 0, 0, refuseForeign
		case t.how == tombDelivered && n == t.last:
			return nil, 0, 0, finishedAlready
		case t.how == tombDelivered:
			return nil, 0, 0, refuseEnded
		case t.how == tombExpired:
			return nil, 0, 0, refuseExpired
		case t.how == tombOverflowed:
			return nil, 0, 0, refuseOver
		case t.how == tombMoved:
			return nil, 0, 0, refuseMoved
		}
		return nil, 0, 0, refuseCut
	}
	if st.owner != owner || st.path != path {
		return nil, 0, 0, refuseForeign
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.removed:
		return nil, 0, 0, refuseCut // it ended as it was looked up
	case st.overflow:
		return nil, 0, 0, refuseOver
	case n > st.seq:
		return nil, 0, 0, refuseAhead
	case st.done && n == st.seq && st.consumer == 0:
		return nil, 0, 0, finishedAlready
	}
	off := 0
	if n > 0 {
		off = int(st.ends[n-1])
	}
	old := st.consumer
	st.gen++
	st.consumer = st.gen
	if st.timer != nil {
		st.timer.Stop()
		st.timer = nil
	}
	if old == 0 && !st.lingering {
		reg.counts.detachedNow.Add(-1)
	}
	st.lingering = false
	if old == 1 && st.kick != nil {
		st.kick() // the first client's write may wait on a dead connection
	}
	st.holdSlot()
	st.broadcast() // an older follower sees it is not the one any more
	reg.counts.reattached.Add(1)
	reg.log.info(evStreamReattached, "stream", st.short(), "path", path, "after", n, "events", st.seq)
	return st, st.gen, off, nil
}

// streamOut is where a follower writes: a client's answer, or a successor
// asking on a client's behalf (reattach_handoff.go).
type streamOut interface {
	write(p []byte) error // write and flush
	end(cut error)        // the stream ended: cleanly (nil), or cut
}

// errTakenOver ends a follower whose stream another client took over.
var errTakenOver = errors.New("another client reattached to the stream")

// follow writes, from offset off, what the stream holds and then what it
// gets, until its end; it returns early when out fails (the client went:
// the stream is detached again), ctx ends, or a newer client took over.
func (st *liveStream) follow(ctx context.Context, gen, off int, out streamOut) error {
	for {
		st.mu.Lock()
		switch {
		case st.consumer != gen:
			st.mu.Unlock()
			return errTakenOver
		case st.removed:
			st.mu.Unlock()
			out.end(errStreamGone)
			return errStreamGone
		case off < st.buf.len():
			b := st.pinSeg(off)
			off += len(b)
			st.mu.Unlock()
			err := out.write(b)
			st.unpin()
			if err != nil {
				st.lost(gen)
				return err
			}
			continue
		case st.done:
			err := st.err
			st.mu.Unlock()
			st.delivered(gen)
			out.end(err)
			return nil
		}
		if st.wake == nil {
			st.wake = make(chan struct{})
		}
		wake := st.wake
		st.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			st.lost(gen)
			return ctx.Err()
		}
	}
}

// pump reads the upstream on for a stream whose first client has gone.
func (st *liveStream) pump(body io.ReadCloser) {
	defer body.Close()
	waiter, _ := body.(dataWaiter)
	for {
		_, _, _, gone, err := st.readOnce(body, waiter, 0)
		if err != nil {
			st.finish(err)
			return
		}
		if gone {
			return
		}
		st.keepWithin()
	}
}

var newline = []byte{'\n'}

// parseLastEventID splits "<stream id>-<n>".
func parseLastEventID(v string) (id string, n int, ok bool) {
	if len(v) < streamIDLen+2 || v[streamIDLen] != '-' {
		return "", 0, false
	}
	id = v[:streamIDLen]
	if _, err := hex.DecodeString(id); err != nil {
		return "", 0, false
	}
	n, err := strconv.Atoi(v[streamIDLen+1:])
	if err != nil || n < 0 || v[streamIDLen+1] == '+' {
		return "", 0, false
	}
	return id, n, true
}
