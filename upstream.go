package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// upstreamClient speaks HTTP/1.1 to the one upstream, on the session's own
// goroutine. net/http's Transport hands every request to a writer goroutine
// and every response back from a reader goroutine per connection: two
// goroutine hand-offs per request, which profiling showed cost more than
// the proxying itself on short requests. This client writes the request and
// reads the answer on the session's goroutine: a request with its body in
// hand is written here in one system call, one whose body streams with
// net/http's Request.Write, and the answer is read with readUpstreamAnswer.
// Idle connections wait in a bounded pool. Where something else is wanted (a proxy from the
// environment), the session uses net/http's Transport instead.
type upstreamClient struct {
	origin string      // scheme://host[:port] as the policy writes it
	host   string      // the Host header
	addr   string      // host:port to dial
	tls    *tls.Config // nil for http
	dialer net.Dialer
	idle   chan *upstreamConn
}

type upstreamConn struct {
	headBuf []byte // scratch for an answer head that came in pieces
	// The header map of the answer being read, cleared for the next: an
	// answer's header is read (and its values copied) before its body,
	// and the connection is not reused before its body's end. The values
	// are new each time.
	header http.Header
	c      net.Conn
	br     *bufio.Reader

	// Made once per connection, not per request: what a cancelled request
	// runs (close), and alive's peek at the socket.
	close  func()
	raw    syscall.RawConn // nil: the connection cannot be peeked at
	peekFn func(fd uintptr) bool
	live   bool
	one    [1]byte

	// c's socket, read and written directly (raw is its RawConn); nil: c
	// is used as it is (TLS).
	sock *rawSock

	// send's state: the request's bytes (in outArr, not a new slice per
	// request), and what writing them did.
	out     net.Buffers
	outArr  [2][]byte
	sendFn  func(fd uintptr) bool
	sent    bool
	sendErr error
}

func newUpstreamConn(c net.Conn) *upstreamConn {
	pc := &upstreamConn{c: c, header: make(http.Header, 8)}
	pc.close = func() { pc.c.Close() }
	var in io.Reader = c
	if pc.sock = newRawSock(c); pc.sock != nil {
		in, pc.raw, pc.sendFn = pc.sock, pc.sock.rc, pc.writeThenWait
	} else {
		raw := c
		if tc, ok := raw.(*tls.Conn); ok {
			raw = tc.NetConn()
		}
		if sc, ok := raw.(syscall.Conn); ok {
			if rc, err := sc.SyscallConn(); err == nil {
				pc.raw = rc
			}
		}
	}
	if pc.raw != nil {
		pc.peekFn = pc.peek
	}
	pc.br = bufio.NewReaderSize(in, 4096)
	return pc
}

// writerPool holds the buffers streaming request bodies are written
// through: a connection needs one only while it writes a request, and
// 10,000 streams waiting on their upstreams hold none.
var writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4096) }}

// newUpstreamClient returns the client for base (the policy's upstream), or
// nil when net/http's Transport must do the job.
func newUpstreamClient(base string) *upstreamClient {
	u, err := url.Parse(base)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User != nil {
		return nil
	}
	if proxy, _ := http.ProxyFromEnvironment(&http.Request{URL: u}); proxy != nil {
		return nil // an HTTP proxy in the way: the Transport knows how
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	// Request targets are cut from the session's URL (the policy's base,
	// then the client's escaped path): the base must be written plainly.
	i := strings.Index(base, "://") + 3
	origin := base[:i+len(u.Host)]
	if !strings.EqualFold(origin, u.Scheme+"://"+u.Host) || u.RawPath != "" || strings.ContainsAny(base, " #") {
		return nil
	}
	c := &upstreamClient{
		origin: origin,
		host:   u.Host,
		addr:   net.JoinHostPort(u.Hostname(), port),
		dialer: net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second},
		idle:   make(chan *upstreamConn, upstreamIdleConns),
	}
	if u.Scheme == "https" {
		c.tls = &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}}
	}
	return c
}

// do sends req and returns the answer, whose body gives the connection
// back to the pool once read to the end (or closes it when closed before).
// req.ctx ending closes the connection, which ends any read or write on it.
// A pooled connection the upstream has closed meanwhile is noticed before
// the request is written (a non-blocking peek), never after.
func (u *upstreamClient) do(req *upstreamReq) (*http.Response, error) {
	ctx := req.ctx
	pc, err := u.get(ctx, req.headerTimeout)
	if err != nil {
		return nil, err
	}
	stop := onCancel(ctx, pc.close)
	// One deadline for writing the request and reading the answer's head
	// (gateway.upstream_header_timeout); the body's reads get their own
	// (upstreamBody.waitData). A pooled connection keeps the last one it
	// had: one idle past it is found dead by get's look, and redialled.
	pc.c.SetDeadline(time.Now().Add(req.headerTimeout))
	if err := u.write(pc, req); err != nil {
		return u.fail(ctx, pc, stop, asUpstreamTimeout(err, req.headerTimeout))
	}
	var resp *http.Response
	m := new(answerMem)
	for {
		clear(pc.header)
		resp, pc.headBuf, err = readUpstreamAnswer(pc.br, req.method, pc.header, pc.headBuf, m)
		if err != nil {
			return u.fail(ctx, pc, stop, asUpstreamTimeout(err, req.headerTimeout))
		}
		// 1xx answers before the final one (100 Continue, 103 Early
		// Hints) carry no body: read on.
		if resp.StatusCode == http.StatusSwitchingProtocols {
			// An upgrade: hermes never asks for one (Upgrade and
			// Connection are hop-by-hop, never passed on), and what
			// follows it on the connection is not HTTP.
			return u.fail(ctx, pc, stop, &errMalformedAnswer{"the upstream switched protocols (101) though nobody asked it to"})
		}
		if resp.StatusCode >= 200 {
			break
		}
	}
	m.body = upstreamBody{rc: resp.Body, u: u, pc: pc, stop: stop, reuse: !resp.Close, idle: req.idleTimeout}
	resp.Body = &m.body
	if m.body.rc == http.NoBody {
		// Nothing to wait for (HEAD, 204, 304, a length of 0): the connection goes back now, and a relay
		// that waits for data finds the end at once.
		m.body.eof = true
		m.body.release()
	}
	return resp, nil
}

// upstreamTimeout is an upstream that did not answer within
// gateway.upstream_header_timeout (504), or went silent inside its answer
// for gateway.upstream_idle_timeout.
type upstreamTimeout struct {
	after time.Duration
	err   error
}

func (e *upstreamTimeout) Error() string {
	return fmt.Sprintf("the upstream sent nothing for %s: %v", e.after, e.err)
}
func (e *upstreamTimeout) Unwrap() error { return e.err }
func (e *upstreamTimeout) Timeout() bool { return true }

// asUpstreamTimeout marks a deadline's error as an upstreamTimeout; any
// other error is returned as it is.
func asUpstreamTimeout(err error, after time.Duration) error {
	if err != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		return &upstreamTimeout{after: after, err: err}
	}
	return err
}

// fail ends a request that got no answer: the connection is closed, and a
// cancelled request says so rather than what the close made of it.
func (u *upstreamClient) fail(ctx context.Context, pc *upstreamConn, stop cancelStop, err error) (*http.Response, error) {
	stop.stop()
	pc.c.Close()
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return nil, err
}

// write sends req on pc. A request whose body is known whole (or empty)
// is written here, head and body in one system call; one whose body
// streams goes through net/http's Request.Write.
func (u *upstreamClient) write(pc *upstreamConn, req *upstreamReq) error {
	if req.body == nil && req.length != 0 {
		return u.writeStreaming(pc, req)
	}
	prefix, ok := strings.CutPrefix(req.base, u.origin) // the base's own path
	if !ok {
		return fmt.Errorf("the request is not for %s", u)
	}
	bp := getBuf(4 << 10)
	b := append((*bp)[:0], req.method...)
	b = append(b, ' ')
	start := len(b)
	b = append(append(b, prefix...), req.path...)
	if len(b) == start {
		b = append(b, '/')
	}
	if req.query != "" {
		b = append(append(b, '?'), req.query...)
	}
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, u.host...)
	b = append(b, "\r\n"...)
	for k, vs := range req.header {
		if hopHeader(k) || k == "Host" || k == "Content-Length" || (k == "Authorization" && req.auth != "") {
			continue
		}
		for _, v := range vs {
			b = append(append(append(append(b, k...), ": "...), v...), "\r\n"...)
		}
	}
	if req.auth != "" {
		b = append(append(append(b, "Authorization: "...), req.auth...), "\r\n"...)
	}
	if len(req.body) > 0 || req.method == http.MethodPost || req.method == http.MethodPut || req.method == http.MethodPatch {
		b = append(strconv.AppendInt(append(b, "Content-Length: "...), int64(len(req.body)), 10), "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if len(b)+len(req.body) <= cap(b) {
		pc.out = append(pc.outArr[:0], append(b, req.body...))
	} else {
		pc.out = append(pc.outArr[:0], b, req.body) // one writev
	}
	err := pc.send()
	pc.out, pc.outArr = nil, [2][]byte{}
	if cap(b) == cap(*bp) {
		putBuf(bp)
	}
	return err
}

// send writes pc.out and waits until the answer starts to arrive, without
// a read: the wait is armed before the request leaves, so the answer's
// arrival cannot slip past it, and the first read finds the answer there.
// A read straight after the write would find nothing yet and cost a system
// call (EAGAIN) on every request. A connection without a rawSock (TLS,
// which buffers inside) writes, and its first read waits as usual.
func (pc *upstreamConn) send() error {
	if pc.sock == nil {
		_, err := pc.out.WriteTo(pc.c)
		return err
	}
	pc.sent, pc.sendErr = false, nil
	err := pc.sock.rc.Read(pc.sendFn)
	if pc.sendErr != nil {
		return pc.sendErr
	}
	return err // the wait failed: the connection was closed (cancelled)
}

// writeThenWait is send's callback, under the connection's read lock (the
// write takes the write lock: the two are separate). The first call writes
// and asks to wait for the socket to be readable; the second says it is.
func (pc *upstreamConn) writeThenWait(uintptr) bool {
	if pc.sent {
		return true
	}
	pc.sent = true
	if len(pc.out) == 1 {
		_, pc.sendErr = pc.sock.Write(pc.out[0])
	} else {
		_, pc.sendErr = pc.out.WriteTo(pc.c) // one writev; it consumes pc.out
	}
	return pc.sendErr != nil // written: wait for the answer
}

// writeStreaming writes a request whose body streams, with net/http's
// Request.Write (chunked when its length is unknown).
func (u *upstreamClient) writeStreaming(pc *upstreamConn, req *upstreamReq) error {
	hr, err := req.httpRequest()
	if err != nil {
		return err
	}
	bw := writerPool.Get().(*bufio.Writer)
	// Each write of the body has the whole header timeout: a body that
	// streams may take longer than one deadline for all of it.
	bw.Reset(deadlineWriter{pc.c, req.headerTimeout})
	if err = hr.Write(bw); err == nil {
		err = bw.Flush()
	}
	bw.Reset(nil)
	writerPool.Put(bw)
	return err
}

// deadlineWriter writes to c with a fresh write deadline for each write.
type deadlineWriter struct {
	c     net.Conn
	every time.Duration
}

func (d deadlineWriter) Write(p []byte) (int, error) {
	d.c.SetWriteDeadline(time.Now().Add(d.every))
	return d.c.Write(p)
}

// get returns a live pooled connection, or dials a new one within timeout.
func (u *upstreamClient) get(ctx context.Context, timeout time.Duration) (*upstreamConn, error) {
	for {
		select {
		case pc := <-u.idle:
			// Every reuse looks first (one system call): an upstream that
			// restarted, or closed an idle connection, a moment ago must
			// not cost the next request its answer.
			if pc.alive() {
				return pc, nil
			}
			pc.c.Close()
			continue
		default:
		}
		return u.dial(ctx, timeout)
	}
}

// dial connects (and shakes hands, for TLS) within timeout: the connection
// is part of the wait for the answer's head.
func (u *upstreamClient) dial(ctx context.Context, timeout time.Duration) (*upstreamConn, error) {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	c, err := u.dialer.DialContext(ctx, "tcp", u.addr)
	if err != nil {
		return nil, err
	}
	if u.tls != nil {
		tc := tls.Client(c, u.tls)
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	return newUpstreamConn(c), nil
}

// alive reports whether an idle connection is still open and quiet: one
// non-blocking peek at the socket. Closed (EOF) or speaking out of turn
// (bytes nobody asked for) is dead.
func (pc *upstreamConn) alive() bool {
	if pc.br.Buffered() > 0 {
		return false
	}
	if pc.raw == nil {
		return true
	}
	pc.live = false
	if pc.raw.Read(pc.peekFn) != nil {
		return false
	}
	return pc.live
}

// peek is alive's look at the socket, under the connection's read lock.
func (pc *upstreamConn) peek(fd uintptr) bool {
	pc.live = rawPeek(fd, pc.one[:]) == syscall.EAGAIN
	return true // never wait: this is a look, not a read
}

// put returns a connection to the pool, or closes it when the pool is full.
func (u *upstreamClient) put(pc *upstreamConn) {
	select {
	case u.idle <- pc:
	default:
		pc.c.Close()
	}
}

// upstreamBody is an answer's body: read to its end, it gives the
// connection back; closed before, it closes it (what is left unread would
// be the next answer's start).
type upstreamBody struct {
	rc    io.ReadCloser
	u     *upstreamClient
	pc    *upstreamConn
	stop  cancelStop
	reuse bool
	idle  time.Duration // gateway.upstream_idle_timeout: the longest silence inside the body
	once  sync.Once
	eof   bool
}

// waitData waits until the connection has something to read (or has
// ended), without a buffer: the caller takes a buffer only then. A wait
// on the socket has gateway.upstream_idle_timeout: the deadline is set
// afresh for each, so that it bounds one silence, not the whole answer.
// A body at its end, or with data buffered, waits for nothing.
func (b *upstreamBody) waitData() {
	if b.eof || b.pc.br.Buffered() > 0 {
		return
	}
	if b.idle > 0 {
		b.pc.c.SetReadDeadline(time.Now().Add(b.idle))
	}
	b.pc.br.Peek(1) // an error here is the next Read's error
}

func (b *upstreamBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
		b.release()
	} else if err != nil {
		err = asUpstreamTimeout(err, b.idle)
	}
	return n, err
}

// detach has ctx, not the client's, close the connection when it ends
// (a stream kept for reattach, relayStream); false when the client's
// end closed it already.
func (b *upstreamBody) detach(ctx context.Context) bool {
	if !b.stop.stop() {
		return false
	}
	b.stop = onCancel(ctx, b.pc.close)
	return true
}

func (b *upstreamBody) Close() error {
	b.release()
	return nil
}

func (b *upstreamBody) release() {
	b.once.Do(func() {
		// stop reports false when ctx already closed the connection.
		if b.stop.stop() && b.eof && b.reuse {
			b.u.put(b.pc)
			return
		}
		b.pc.c.Close()
	})
}

// closeIdle closes the pooled connections (the upstream changed).
func (u *upstreamClient) closeIdle() {
	for {
		select {
		case pc := <-u.idle:
			pc.c.Close()
		default:
			return
		}
	}
}

// String names the client for messages.
func (u *upstreamClient) String() string {
	scheme := "http"
	if u.tls != nil {
		scheme = "https"
	}
	return fmt.Sprintf("%s://%s", scheme, u.addr)
}
