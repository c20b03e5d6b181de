package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Reattach across a handoff: a client that comes back to a stream while
// that stream lives in the predecessor, still draining, reaches the
// successor, which holds the listening socket now. The successor asks the
// predecessor for it over a unix socket the predecessor opened before it
// started its successor (state_dir/streams.<pid>.sock, mode 0600, removed
// at its exit), and relays what it gets. The ask is one line,
//
//	reattach <stream id> <n> <owner: hex SHA-256 of the client key> <path, quoted>
//
// answered "ok" and then frames (a type byte, a 4-byte big-endian length,
// the bytes): 'd' events, 'e' the stream's end, 'x' its cut (the bytes are
// the error event to pass on); or "error <code>", a refusal the successor
// answers as its own. The successor checks the socket's peer is the pid
// that handed over to it; the predecessor, that its peer is of its uid.
//
// The predecessor exits once its sessions, and the streams whose upstream
// it still reads, are done: a stream whose end came while nobody was
// attached would go with it. So the successor also asks "adopt", once,
// after it takes over, and the predecessor hands it each such stream as
// it comes to be, until it exits:
//
//	stream <id> <owner hex> <path, quoted> <events> <lingering 0|1> <ms left> <bytes> <ends> <cut bytes>
//
// followed by the events, their ends (4 bytes each, big-endian) and the
// error event that ends a cut stream; the successor keeps it, answers
// "ok <id>", and only then does the predecessor forget it (a client that
// asks the predecessor for it after that is sent to the successor's
// copy).

func streamsPath(stateDir string, pid int) string {
	return filepath.Join(stateDir, fmt.Sprintf("streams.%d.sock", pid))
}

// listenStreams opens the socket a successor asks for streams on. It runs
// before the successor starts (spawn), off the loop.
func (g *gateway) listenStreams() {
	if g.streamsLn.Load() != nil {
		return
	}
	path := streamsPath(g.stateDir, g.pid)
	os.Remove(path)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err == nil {
		err = os.Chmod(path, 0o600)
	}
	if err != nil {
		g.log.warn(evServeFailed, "error", fmt.Errorf("the streams socket for the successor: %w", err), "note", "a client that comes back to a stream of this gateway during the handoff gets 410")
		if ln != nil {
			ln.Close()
		}
		return
	}
	g.streamsLn.Store(ln)
	go func() {
		for {
			c, err := ln.AcceptUnix()
			if err != nil {
				return
			}
			go g.serveStreamAsk(c)
		}
	}()
}

// closeStreams closes the streams socket (and removes its file).
func (g *gateway) closeStreams() {
	if ln := g.streamsLn.Swap(nil); ln != nil {
		ln.Close()
	}
}

// serveStreamAsk answers one ask of the successor's.
func (g *gateway) serveStreamAsk(c *net.UnixConn) {
	defer c.Close()
	p := g.policy.Load()
	c.SetReadDeadline(time.Now().Add(p.Gateway.HeaderTimeout))
	line, err := bufio.NewReader(io.LimitReader(c, 8<<10)).ReadString('\n')
	if err != nil {
		return
	}
	if uid, err := peerUID(c); err != nil || (uid != os.Getuid() && uid != 0) {
		return
	}
	if strings.TrimSpace(line) == "adopt" {
		g.serveAdopt(c)
		return
	}
	id, n, owner, path, ok := parseStreamAsk(line)
	if !ok {
		fmt.Fprintf(c, "error bad_ask\n")
		return
	}
	st, gen, off, refusal := g.streams.attach(id, n, owner, path)
	if refusal != nil {
		fmt.Fprintf(c, "error %s\n", refusalCode(refusal))
		return
	}
	c.SetReadDeadline(time.Time{})
	if _, err := io.WriteString(c, "ok\n"); err != nil {
		st.lost(gen)
		return
	}
	// The successor closing its end (its client went) ends the follow.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		var one [1]byte
		c.Read(one[:])
		cancel()
	}()
	st.follow(ctx, gen, off, &socketStreamOut{c: c, timeout: p.Gateway.WriteTimeout})
}

// serveAdopt hands the successor every stream whose end came with nobody
// attached, as each comes to be, until this gateway exits.
func (g *gateway) serveAdopt(c *net.UnixConn) {
	reg := g.streams
	reg.adopting.Store(true)
	br := bufio.NewReader(c)
	for {
		for _, st := range reg.movableStreams() {
			if !g.moveStream(c, br, st) {
				return
			}
		}
		select {
		case <-reg.movable:
		case <-g.done:
			return
		}
	}
}

// movableStreams are the streams to hand over now; each is marked moving.
func (reg *streamRegistry) movableStreams() []*liveStream {
	all := reg.snapshot()
	out := all[:0]
	for _, st := range all {
		st.mu.Lock()
		if !st.removed && st.done && st.consumer == 0 && !st.moving && !st.overflow {
			st.moving = true
			out = append(out, st)
		}
		st.mu.Unlock()
	}
	return out
}

// moveStream sends one stream to the successor, and forgets it once the
// successor has it.
func (g *gateway) moveStream(c *net.UnixConn, br *bufio.Reader, st *liveStream) bool {
	st.mu.Lock()
	if st.removed || st.consumer != 0 {
		st.moving = false
		st.mu.Unlock()
		return true
	}
	buf, ends := st.buf.appendTo(nil, 0), append([]uint32(nil), st.ends...)
	var cut []byte
	if st.err != nil {
		cut = streamEndEvent(st.err)
	}
	left := max(time.Until(st.until), time.Millisecond)
	head := fmt.Sprintf("stream %s %x %s %d %d %d %d %d %d\n", st.id, st.owner, strconv.Quote(st.path), st.seq,
		b2i(st.lingering), left.Milliseconds(), len(buf), len(ends), len(cut))
	st.mu.Unlock()
	p := g.policy.Load()
	c.SetDeadline(time.Now().Add(p.Gateway.WriteTimeout))
	msg := append([]byte(head), buf...)
	for _, e := range ends {
		msg = binary.BigEndian.AppendUint32(msg, e)
	}
	msg = append(msg, cut...)
	_, err := c.Write(msg)
	var ack string
	if err == nil {
		ack, err = br.ReadString('\n')
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.moving = false
	if err != nil || strings.TrimSpace(ack) != "ok "+st.id {
		return false
	}
	if !st.removed && st.consumer == 0 {
		st.remove(tombMoved)
	}
	g.streams.wakeMoved()
	return true
}

// wakeMoved tells waitMoved a stream went.
func (reg *streamRegistry) wakeMoved() {
	select {
	case reg.moved <- struct{}{}:
	default:
	}
}

// waitMoved waits, until deadline, for the successor to take every
// stream whose end came with nobody attached: a gateway that hands over
// waits for it before it exits (drain.grace at most).
func (reg *streamRegistry) waitMoved(deadline time.Time) {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	for reg.hasMovable() {
		reg.wakeAdopter()
		select {
		case <-reg.moved:
		case <-t.C:
			return
		}
	}
}

// hasMovable reports whether a stream is left to hand over.
func (reg *streamRegistry) hasMovable() bool {
	for _, st := range reg.snapshot() {
		st.mu.Lock()
		movable := !st.removed && st.done && st.consumer == 0 && !st.overflow
		st.mu.Unlock()
		if movable {
			return true
		}
	}
	return false
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// adoptStreams is the successor's side of "adopt": it keeps each stream
// the predecessor hands over, until the predecessor exits (within its
// drain's budget).
func (g *gateway) adoptStreams(from int) {
	p := g.policy.Load()
	c, err := net.DialTimeout("unix", streamsPath(g.stateDir, from), p.Gateway.UpstreamHeaderTimeout)
	if err != nil {
		return // a predecessor without streams to hand over
	}
	defer c.Close()
	uc := c.(*net.UnixConn)
	if unixPeerPID(uc) != from {
		return
	}
	c.SetDeadline(time.Now().Add(p.Drain.Budget() + p.Restart.ReadyTimeout))
	if _, err := io.WriteString(c, "adopt\n"); err != nil {
		return
	}
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		m, err := readMovedStream(br, line)
		if err != nil {
			g.log.warn(evServeFailed, "error", fmt.Errorf("a stream handed over by pid %d: %w", from, err))
			return
		}
		g.streams.adopt(m, g.policy.Load().Reattach)
		g.log.info(evStreamAdopted, "stream", m.id[:8], "path", m.path, "events", m.seq, "from_pid", from)
		if _, err := fmt.Fprintf(c, "ok %s\n", m.id); err != nil {
			return
		}
	}
}

// movedStream is a stream as the predecessor hands it over.
type movedStream struct {
	id, path  string
	owner     [32]byte
	seq       int
	lingering bool
	left      time.Duration
	buf       []byte
	ends      []uint32
	cut       []byte
}

func readMovedStream(br *bufio.Reader, line string) (*movedStream, error) {
	f := strings.Fields(line)
	if len(f) != 10 || f[0] != "stream" || len(f[1]) != streamIDLen {
		return nil, fmt.Errorf("not a stream: %.80q", line)
	}
	m := &movedStream{id: f[1]}
	var nums [6]int
	for i := range nums {
		n, err := strconv.Atoi(f[4+i])
		if err != nil || n < 0 || n > maxStreamFrame {
			return nil, fmt.Errorf("not a stream: %.80q", line)
		}
		nums[i] = n
	}
	b, err := hex.DecodeString(f[2])
	if err != nil || len(b) != len(m.owner) {
		return nil, fmt.Errorf("not a stream's owner: %.80q", line)
	}
	copy(m.owner[:], b)
	if m.path, err = strconv.Unquote(f[3]); err != nil {
		return nil, fmt.Errorf("not a stream's path: %.80q", line)
	}
	m.seq, m.lingering, m.left = nums[0], nums[1] == 1, time.Duration(nums[2])*time.Millisecond
	m.buf = make([]byte, nums[3])
	raw := make([]byte, 4*nums[4])
	m.cut = make([]byte, nums[5])
	for _, part := range [][]byte{m.buf, raw, m.cut} {
		if _, err := io.ReadFull(br, part); err != nil {
			return nil, err
		}
	}
	for i := 0; i < nums[4]; i++ {
		m.ends = append(m.ends, binary.BigEndian.Uint32(raw[4*i:]))
	}
	if len(m.ends) > m.seq || (len(m.ends) > 0 && int(m.ends[len(m.ends)-1]) > len(m.buf)) {
		return nil, fmt.Errorf("stream %s: its event ends do not fit its events", m.id[:8])
	}
	return m, nil
}

// movedCut is how a stream handed over ended: the error event its
// predecessor would have ended it with.
type movedCut struct{ event []byte }

func (m *movedCut) Error() string { return "the stream was cut before it was handed over" }

// adopt keeps a stream the predecessor handed over: its end came, and
// nobody is attached.
func (reg *streamRegistry) adopt(m *movedStream, p ReattachPolicy) {
	st := &liveStream{reg: reg, id: m.id, owner: m.owner, path: m.path, window: p.Window, linger: p.lingerFor(), max: int(p.MaxBuffer),
		total: p.MaxTotal, cancel: func(error) {}, ends: m.ends, seq: m.seq, gen: 1,
		done: true, lingering: m.lingering}
	st.buf.write(m.buf)
	if len(m.cut) > 0 {
		st.err = &movedCut{event: m.cut}
	}
	if len(st.ends) < st.seq {
		st.overflow = true // its early events are not all there
	}
	st.mu.Lock()
	st.account()
	if !st.lingering {
		reg.counts.detachedNow.Add(1)
	}
	st.arm(m.left)
	st.mu.Unlock()
	reg.mu.Lock()
	reg.live[st.id] = st
	if st.lingering {
		reg.lingering = append(reg.lingering, st)
	}
	reg.mu.Unlock()
}

func parseStreamAsk(line string) (id string, n int, owner [32]byte, path string, ok bool) {
	f := strings.SplitN(strings.TrimSpace(line), " ", 5)
	if len(f) != 5 || f[0] != "reattach" || len(f[1]) != streamIDLen {
		return
	}
	var err error
	if n, err = strconv.Atoi(f[2]); err != nil || n < 0 {
		return
	}
	if b, err := hex.DecodeString(f[3]); err != nil || len(b) != len(owner) {
		return
	} else {
		copy(owner[:], b)
	}
	if path, err = strconv.Unquote(f[4]); err != nil {
		return
	}
	return f[1], n, owner, path, true
}

// The refusals by code, as a successor passes on a predecessor's.
var refusals = []*reattachRefusal{refuseUnknown, refuseForeign, refuseAhead, refuseExpired, refuseOver, refuseEnded, refuseCut, refuseMoved, finishedAlready}

func refusalCode(r *reattachRefusal) string {
	if r == finishedAlready {
		return "finished"
	}
	return r.code
}

func refusalOf(code string) *reattachRefusal {
	for _, r := range refusals {
		if refusalCode(r) == code {
			return r
		}
	}
	return refuseUnknown
}

// socketStreamOut follows a stream into frames for a successor.
type socketStreamOut struct {
	c       net.Conn
	timeout time.Duration
}

func (o *socketStreamOut) frame(kind byte, p []byte) error {
	var head [5]byte
	head[0] = kind
	binary.BigEndian.PutUint32(head[1:], uint32(len(p)))
	o.c.SetWriteDeadline(time.Now().Add(o.timeout))
	if _, err := o.c.Write(head[:]); err != nil {
		return err
	}
	_, err := o.c.Write(p)
	return err
}

func (o *socketStreamOut) write(p []byte) error { return o.frame('d', p) }

func (o *socketStreamOut) end(cut error) {
	if cut == nil {
		o.frame('e', nil)
		return
	}
	o.frame('x', streamEndEvent(cut))
}

// errPredecessorGone cuts a stream relayed from a predecessor that ended
// before the stream did.
var errPredecessorGone = errors.New("the gateway before this one ended before the stream did")

// maxStreamFrame bounds one frame from a predecessor.
const maxStreamFrame = 64 << 20

// askPredecessor serves a Last-Event-ID this gateway does not know from
// the predecessor it took over from, while that one drains. It reports
// false when there is no predecessor to ask (the request is then refused
// as unknown).
func (g *gateway) askPredecessor(w http.ResponseWriter, r *http.Request, id string, n int, owner [32]byte, p *Policy) bool {
	if g.inh == nil {
		return false
	}
	from := g.inh.from
	c, err := net.DialTimeout("unix", streamsPath(g.stateDir, from), p.Gateway.UpstreamHeaderTimeout)
	if err != nil {
		return false
	}
	defer c.Close()
	if pid := unixPeerPID(c.(*net.UnixConn)); pid != from {
		return false // not the predecessor's: someone else's socket at its path
	}
	c.SetDeadline(time.Now().Add(p.Gateway.UpstreamHeaderTimeout))
	if _, err := fmt.Fprintf(c, "reattach %s %d %x %s\n", id, n, owner, strconv.Quote(r.URL.Path)); err != nil {
		return false
	}
	br := bufio.NewReader(c)
	line, err := br.ReadString('\n')
	if err != nil {
		return false
	}
	if code, ok := strings.CutPrefix(strings.TrimSpace(line), "error "); ok {
		if code == refuseMoved.code {
			return false // the stream is this gateway's now: the caller looks again
		}
		refuseReattach(w, refusalOf(code))
		return true
	}
	if strings.TrimSpace(line) != "ok" {
		return false
	}
	c.SetDeadline(time.Time{})
	rec := &responseRecorder{ResponseWriter: w}
	startEventStream(rec, id)
	rc := http.NewResponseController(rec)
	g.streams.counts.reattached.Add(1)
	g.log.info(evStreamReattached, "stream", id[:8], "path", r.URL.Path, "after", n, "from_pid", from)
	var head [5]byte
	var buf []byte
	for {
		c.SetReadDeadline(time.Now().Add(p.Gateway.UpstreamIdleTimeout))
		_, err := io.ReadFull(br, head[:])
		size := binary.BigEndian.Uint32(head[1:])
		if err == nil && size > maxStreamFrame {
			err = errors.New("a frame too large")
		}
		if err == nil {
			if cap(buf) < int(size) {
				buf = make([]byte, size)
			}
			buf = buf[:size]
			_, err = io.ReadFull(br, buf)
		}
		if err != nil || head[0] == 'x' {
			if err != nil {
				buf = streamEndEvent(errPredecessorGone)
			}
			rec.Write(buf)
			rc.Flush()
			abortAnswer(rec)
			return true
		}
		if head[0] == 'e' {
			return true
		}
		if _, err := rec.Write(buf); err != nil || rc.Flush() != nil {
			return true // the client went: the predecessor sees this end close
		}
	}
}

// unixPeerPID is the pid at the other end of c, from the kernel; 0 when
// it cannot tell.
func unixPeerPID(c *net.UnixConn) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	pid := 0
	raw.Control(func(fd uintptr) {
		if p, err := socketPeerPID(int(fd)); err == nil {
			pid = p
		}
	})
	return pid
}
