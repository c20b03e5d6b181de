package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// h1Server is the gateway's HTTP/1.1 server for its clients.
//
// It replaced net/http's Server, whose per-request work cost more CPU than
// the proxying itself on short streams (issue 10's profiles): a goroutine
// started on every request to notice a client leaving, and six deadline
// changes per request. The parts that need care are not rewritten here:
// requests are parsed by net/http's own ReadRequest (header syntax, Content-
// Length and Transfer-Encoding rules, chunked bodies), and handlers are
// ordinary http.Handlers with ResponseController working as before. What is
// this server's own:
//
//   - Timeouts are swept, not armed per request: every connection records
//     when it went idle or began sending a request head, and one sweeper a
//     second closes those idle longer than gateway.idle_timeout, or slower
//     than gateway.header_timeout to send a head (the slowloris guard).
//   - A client that leaves is noticed by a read of the connection, as
//     net/http does, but that read starts only once a request has run for
//     clientWatchAfter. A session that ends sooner never pays for it; one
//     that runs longer (any real model's stream) is cancelled within
//     clientWatchAfter of its client leaving, or at once by a failed write.
//   - Connections are tracked in the gateway's connTracker directly, which
//     the drain and the handoff read.
type h1Server struct {
	handler  http.Handler
	base     context.Context
	conns    *connTracker
	timeouts func() h1Limits // the policy's, read at each sweep and request
	acc      *acceptor       // accepts through a moment without file descriptors (accept.go)

	noKeepAlive atomic.Bool
	lingering   atomic.Int64 // refused connections lingering (refuseOver)
	shutting    atomic.Bool
	mu          sync.Mutex
	ln          net.Listener
	stopSweep   chan struct{}
	sweepOnce   sync.Once
}

// clientWatchAfter: a request still running this long starts watching its
// connection for the client leaving.
const clientWatchAfter = 50 * time.Millisecond

// keptHeadBuf is the largest scratch space for a head in pieces that a
// connection keeps for its next request (the read buffer's size).
const keptHeadBuf = 4 << 10

// maxDiscardBody is the most of an unread request body read and thrown
// away to keep the connection; with more left it is closed instead.
const maxDiscardBody = 256 << 10

// h1Limits are the policy's limits for clients: the deadlines for a
// request head (gateway.header_timeout), between requests (idle_timeout),
// for each wait inside a request body (body_timeout: 408 after it), and
// for each write of an answer (write_timeout: a client that reads nothing
// this long is cut off); and the most connections held at once
// (max_connections, resolved: past it a new one is answered 503).
type h1Limits struct {
	head, idle, body, write time.Duration
	conns                   int
}

func newH1Server(h http.Handler, base context.Context, conns *connTracker, timeouts func() h1Limits, acc *acceptor) *h1Server {
	if acc == nil {
		acc = newAcceptor("http", nil)
	}
	return &h1Server{handler: h, base: base, conns: conns, timeouts: timeouts, acc: acc,
		stopSweep: make(chan struct{})}
}

// overAnswer is what a connection past gateway.max_connections gets.
const overAnswer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 152\r\n\r\n" +
	`{"error":{"code":"too_many_connections","message":"the gateway holds as many connections as it takes (gateway.max_connections)","type":"server_error"}}` + "\n"

// maxLingering bounds the refused connections that linger at once; past
// it, a refused connection is closed at once.
const maxLingering = 64

// refuseOver answers a connection past gateway.max_connections 503 and
// closes it, without taking it into memory (no goroutine to serve it, no
// buffers). Its client may have sent a request already: the write side
// closes first and what it sent is read and dropped for a moment, so that
// its kernel does not reset the connection before the answer is read.
func (s *h1Server) refuseOver(nc net.Conn) {
	s.conns.refused.Add(1)
	nc.SetDeadline(time.Now().Add(time.Second))
	io.WriteString(nc, overAnswer)
	cw, ok := nc.(interface{ CloseWrite() error })
	if !ok || s.lingering.Add(1) > maxLingering {
		if ok {
			s.lingering.Add(-1)
		}
		nc.Close()
		return
	}
	cw.CloseWrite()
	go func() {
		defer s.lingering.Add(-1)
		var b [512]byte
		for {
			if _, err := nc.Read(b[:]); err != nil {
				break
			}
		}
		nc.Close()
	}()
}

// Serve accepts connections on ln until it is closed. It returns
// http.ErrServerClosed after Shutdown or Close.
func (s *h1Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.shutting.Load() {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.ln = ln
	s.mu.Unlock()
	go s.sweep()
	err := s.acc.loop(ln.Accept, s.shutting.Load, s.serveConn, s.shed)
	if s.shutting.Load() {
		return http.ErrServerClosed
	}
	return err
}

// serveConn serves one accepted connection, or refuses it past
// gateway.max_connections.
func (s *h1Server) serveConn(nc net.Conn) {
	if max := s.timeouts().conns; max > 0 && s.conns.open.Load() >= int64(max) {
		s.refuseOver(nc)
		return
	}
	c := &h1Conn{srv: s, nc: nc}
	c.info = s.conns.add(nc)
	go c.serve()
}

// shedAnswer is what a connection accepted on the reserve descriptor gets
// while the process is out of file descriptors.
const shedAnswer = "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 142\r\n\r\n" +
	`{"error":{"code":"out_of_file_descriptors","message":"the gateway is out of file descriptors for a moment: try again","type":"server_error"}}` + "\n"

// shed answers a connection taken on the reserve descriptor 503 and closes
// it at once, so the descriptor is free again: what its client sent in the
// first moment is read and dropped first, so that the close does not reset
// the connection before the answer is read.
func (s *h1Server) shed(nc net.Conn) {
	s.conns.refused.Add(1)
	nc.SetDeadline(time.Now().Add(10 * time.Millisecond))
	io.WriteString(nc, shedAnswer)
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		var b [4096]byte
		nc.Read(b[:])
	}
	nc.Close()
}

// SetKeepAlivesEnabled(false) makes every later answer close its
// connection, and closes the connections idle now (closeKeepAlive).
func (s *h1Server) SetKeepAlivesEnabled(on bool) {
	s.noKeepAlive.Store(!on)
	if !on {
		s.conns.closeKeepAlive(time.Now())
	}
}

// Shutdown stops accepting, closes idle connections, and waits until every
// connection has ended or ctx is done.
func (s *h1Server) Shutdown(ctx context.Context) error {
	s.stop()
	s.noKeepAlive.Store(true)
	wait := time.Millisecond
	for {
		s.conns.closeIdle(time.Now(), 0)
		if s.conns.count() == 0 {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		wait = min(2*wait, 50*time.Millisecond)
	}
}

// Close closes the listener and every connection.
func (s *h1Server) Close() error {
	s.stop()
	s.conns.closeAll()
	return nil
}

func (s *h1Server) stop() {
	s.mu.Lock()
	s.shutting.Store(true)
	if s.ln != nil {
		s.ln.Close()
	}
	s.mu.Unlock()
	s.sweepOnce.Do(func() { close(s.stopSweep) })
}

// sweep closes, once a second, the connections idle longer than
// gateway.idle_timeout and those sending a request head for longer than
// gateway.header_timeout.
func (s *h1Server) sweep() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.stopSweep:
			return
		case now := <-t.C:
			s.conns.closeStale(now, s.timeouts())
		}
	}
}

// h1Conn is one client connection. Its requests are served one after
// another on its own goroutine.
type h1Conn struct {
	srv  *h1Server
	nc   net.Conn
	rw   io.ReadWriter // nc, or its socket read and written directly (connIO)
	info *connInfo
	br   *bufio.Reader
	bw   *bufio.Writer
	lr   h1Reader
	addr string

	// The client watch (see h1Server). mu guards what the watching
	// goroutine shares with the request's.
	watch     *time.Timer
	mu        sync.Mutex
	watchWant bool               // the timer fired before the body's end
	watching  bool               // a watch read runs, or ran and is not collected
	reqDone   bool               // the request ended: a watch must not start
	bodyDone  bool               // the request body was read to its end
	ctx       context.Context    // the requests': ends with the connection or the gateway's cut
	cancel    context.CancelFunc // ends ctx: the client is gone
	resp      h1Response         // the running request's answer
	slot      cancelSlot         // in ctx: what the running request's upstream closes with (onCancel)
	req       http.Request       // the running request, and its header map
	reqHeader http.Header
	watchEnd  chan struct{}
	hasByte   bool // the watch read a byte of the next request
	oneByte   [1]byte
	readErr   error // the watch's read failed: the client is gone

	lastPost bool
	fixed    h1FixedBody   // the running request's body, when it has a length
	url      url.URL       // the running request's URL, when its target is a plain path
	tmpl     *http.Request // carries ctx into each request
	headBuf  []byte        // scratch for a head that came in pieces
}

// h1Reader reads the connection for the bufio.Reader: first a byte the
// watch read, and never more than remain bytes (the request head's limit).
type h1Reader struct {
	c      *h1Conn
	remain int64
	// body is gateway.body_timeout while a request body is read, else 0:
	// each wait for its bytes then has that long.
	body time.Duration
}

func (r *h1Reader) Read(p []byte) (int, error) {
	c := r.c
	if c.hasByte {
		c.hasByte = false
		p[0] = c.oneByte[0]
		return 1, nil
	}
	if c.readErr != nil {
		return 0, c.readErr
	}
	if r.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.remain {
		p = p[:r.remain]
	}
	if r.body > 0 {
		c.nc.SetReadDeadline(time.Now().Add(r.body))
	}
	n, err := c.rw.Read(p)
	r.remain -= int64(n)
	return n, err
}

// endBodyDeadline ends the body's read deadline, if its reads had one.
func (r *h1Reader) endBodyDeadline() {
	if r.body > 0 {
		r.body = 0
		r.c.nc.SetReadDeadline(time.Time{})
	}
}

// h1Writer is what a connection's answers are written through: each write
// is on the clock the sweep holds to gateway.write_timeout.
type h1Writer struct{ c *h1Conn }

func (w h1Writer) Write(p []byte) (int, error) {
	ci := w.c.info
	ci.writeSince.Store(monoNow())
	n, err := w.c.rw.Write(p)
	ci.writeSince.Store(0)
	return n, err
}

const unlimited = 1<<63 - 1

func (c *h1Conn) serve() {
	defer c.close()
	defer func() {
		// A bug here must cost one connection, not the gateway and every
		// session on it.
		if v := recover(); v != nil {
			buf := make([]byte, 64<<10)
			buf = buf[:runtime.Stack(buf, false)]
			log.Printf("http: panic serving %v: %v\n%s", c.addr, v, buf)
		}
	}()
	c.addr = c.nc.RemoteAddr().String()
	c.ctx, c.cancel = context.WithCancel(c.srv.base)
	c.ctx = withCancelSlot(c.ctx, &c.slot)
	c.reqHeader = make(http.Header, 8)
	c.tmpl = (&http.Request{}).WithContext(c.ctx)
	c.lr = h1Reader{c: c, remain: unlimited}
	c.rw = connIO(c.nc)
	c.watchEnd = make(chan struct{}, 1)
	c.watch = time.AfterFunc(time.Hour, c.watchFired)
	c.watch.Stop()
	for {
		req, err := c.readRequest()
		if err != nil {
			c.refuse(err)
			return
		}
		if !c.serveOne(req) {
			return
		}
	}
}

func (c *h1Conn) close() {
	if c.cancel != nil {
		c.cancel()
	}
	if c.watch != nil {
		c.watch.Stop()
	}
	c.nc.Close()
	c.srv.conns.remove(c.nc)
	c.srv.acc.reserve.refill()
}

// h1Error is a request the server answers itself, and why.
type h1Error struct {
	code int
	text string
}

func (e *h1Error) Error() string { return e.text }

var errClientGone = errors.New("client connection ended")

// readRequest waits for the next request and reads its head.
func (c *h1Conn) readRequest() (*http.Request, error) {
	for {
		if c.br == nil || c.br.Buffered() == 0 {
			c.releaseReader()
			c.releaseWriter()
			c.info.idleSince.Store(monoNow())
			// Nothing buffered: wait for the next bytes holding no buffer
			// (h1_buffers.go). A byte the watch read is there already.
			var err error
			if !c.hasByte && c.readErr == nil {
				err = waitReadable(c.rw)
			}
			if err == nil {
				_, err = c.reader().Peek(1)
			}
			c.info.idleSince.Store(0)
			if err != nil {
				return nil, errClientGone
			}
		}
		if !c.lastPost {
			break
		}
		// RFC 9112 2.2: a client may send a CRLF after a POST's body.
		b, _ := c.br.Peek(c.br.Buffered())
		n := 0
		for n < len(b) && (b[n] == '\r' || b[n] == '\n') {
			n++
		}
		c.br.Discard(n)
		if n < len(b) {
			break
		}
	}
	if c.info.headSince.Load() == 0 { // a new connection's clock runs from its accept
		c.info.headSince.Store(monoNow())
	}
	c.lr.remain = maxRequestHead
	head, buf, err := readHead(c.br, c.headBuf, maxRequestHead, maxRequestLine)
	c.info.headSince.Store(0)
	hitLimit := c.lr.remain <= 0
	c.lr.remain = unlimited
	// A head that came in pieces grew buf as far as it needed; one larger
	// than the read buffer is rare, and its scratch space is not kept.
	c.headBuf = nil
	if cap(buf) <= keptHeadBuf {
		c.headBuf = buf
	}
	if err != nil {
		switch {
		case err == errLineTooLong:
			return nil, &h1Error{http.StatusRequestURITooLong, "URI Too Long: the request line is over 8 KiB"}
		case err == errFieldTooLong:
			return nil, &h1Error{http.StatusRequestHeaderFieldsTooLarge, "Request Header Fields Too Large: a header line is over 8 KiB"}
		case hitLimit || err == errHeadTooLarge:
			return nil, &h1Error{http.StatusRequestHeaderFieldsTooLarge, "Request Header Fields Too Large: the request head is over 32 KiB"}
		}
		return nil, errClientGone
	}
	// The request and its header map are the connection's, used again for
	// each of its requests: nothing keeps a request after its handler.
	req := &c.req
	*req = *c.tmpl // the context, which only WithContext can set
	clear(c.reqHeader)
	req.Header = c.reqHeader
	if he := parseHead(head, req, &c.url); he != nil {
		return nil, he
	}
	req.RemoteAddr = c.addr
	c.lastPost = req.Method == http.MethodPost
	switch {
	case req.ContentLength > 0:
		// The connection's: only the request's h1Body reads it, and that
		// stops reading once its request has ended (settle).
		c.fixed = h1FixedBody{br: c.br, remain: req.ContentLength}
		req.Body = &c.fixed
	case req.ContentLength < 0:
		req.Body = newChunkedBody(c.br)
	default:
		req.Body = http.NoBody
	}
	return req, nil
}

// validHost reports whether h may be a Host header: the bytes RFC 3986
// allows in a host and port, as net/http checks them.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		b := h[i]
		if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' {
			continue
		}
		switch b {
		case '!', '$', '%', '&', '\'', '(', ')', '*', '+', ',', '-', '.', ':', ';', '=', '[', ']', '_', '~':
			continue
		}
		return false
	}
	return true
}

// refuse answers a request the server could not read, then the connection
// ends. A client that left gets nothing.
func (c *h1Conn) refuse(err error) {
	var he *h1Error
	if !errors.As(err, &he) {
		return
	}
	c.nc.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = fmt.Fprintf(c.nc, "HTTP/1.1 %d %s\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n%d %s",
		he.code, http.StatusText(he.code), he.code, he.text)
	if err == nil {
		c.lingerClose() // the client may still be sending what was refused
	}
}

// serveOne runs the handler for req and finishes its answer. It reports
// whether the connection may carry another request.
func (c *h1Conn) serveOne(req *http.Request) (keep bool) {
	h := c.resp.header
	if h == nil {
		h = make(http.Header, 4)
	} else {
		clear(h)
	}
	c.resp = h1Response{c: c, req: req, header: h, clen: -1,
		head: req.Method == http.MethodHead, http10: !req.ProtoAtLeast(1, 1)}
	w := &c.resp
	c.info.served.Store(true)
	// req.Close is also an HTTP/1.0 request that did not ask for keep-alive.
	w.closeAfter = req.Close || c.srv.noKeepAlive.Load()

	var body *h1Body
	bodyless := req.Body == nil || req.Body == http.NoBody
	if !bodyless {
		// Not the connection's: a transport may read it after the handler.
		body = &h1Body{c: c, rc: req.Body, w: w}
		req.Body = body
		w.body = body
		c.lr.body = c.srv.timeouts().body
	}
	if ex := req.Header.Get("Expect"); ex != "" {
		if !strings.EqualFold(ex, "100-continue") || w.http10 {
			w.closeAfter = true
			w.WriteHeader(http.StatusExpectationFailed)
			w.finish()
			return false
		}
		if body != nil {
			body.expect = true
		}
	}

	c.mu.Lock()
	c.reqDone, c.bodyDone, c.watchWant, c.watching = false, bodyless, false, false
	c.mu.Unlock()
	c.watch.Reset(clientWatchAfter)

	ok := c.runHandler(w, req)
	c.endWatch()
	if !ok || c.readErr != nil {
		// A client gone (the watch read its end, or an error) gets
		// nothing more: not the end of an answer it will not read, not
		// a 200 its handler never chose (net/http sends an empty one;
		// nginx sends nothing and logs 499), and not an answer to what
		// it pipelined, whose head the buffer may already hold.
		return false
	}
	w.finish()
	if w.werr != nil {
		return false
	}
	if body != nil && !body.settle() {
		if w.committedOK() {
			c.lingerClose()
		}
		return false
	}
	return !w.closeAfter
}

// runHandler calls the handler. A handler that panics ends its connection
// (net/http's rule, and its log line), not the gateway.
func (c *h1Conn) runHandler(w *h1Response, req *http.Request) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			if v != http.ErrAbortHandler {
				buf := make([]byte, 64<<10)
				buf = buf[:runtime.Stack(buf, false)]
				log.Printf("http: panic serving %v: %v\n%s", c.addr, v, buf)
			}
			ok = false
		}
	}()
	c.srv.handler.ServeHTTP(w, req)
	return true
}

// watchFired runs on the timer's goroutine: the request has run for
// clientWatchAfter. The watch starts now, or when the body ends.
func (c *h1Conn) watchFired() {
	c.mu.Lock()
	if c.reqDone {
		c.mu.Unlock()
		return
	}
	if !c.bodyDone {
		c.watchWant = true
		c.mu.Unlock()
		return
	}
	c.watching = true
	c.mu.Unlock()
	c.watchRead()
}

// bodyEnded: the request body was read to its end.
func (c *h1Conn) bodyEnded() {
	c.mu.Lock()
	c.bodyDone = true
	start := c.watchWant && !c.reqDone && !c.watching
	if start {
		c.watching = true
	}
	c.mu.Unlock()
	if start {
		go c.watchRead()
	}
}

// watchRead reads the connection while the request runs: a byte is the
// next request (kept for it), an error means the client is gone.
func (c *h1Conn) watchRead() {
	n, err := c.nc.Read(c.oneByte[:])
	c.mu.Lock()
	if n == 1 {
		c.hasByte = true
	} else if err != nil && !c.reqDone {
		c.readErr = errClientGone
		c.cancel()
	}
	c.mu.Unlock()
	c.watchEnd <- struct{}{}
}

// endWatch stops the client watch when the request ends, and waits for a
// watch read that runs to return.
func (c *h1Conn) endWatch() {
	c.watch.Stop()
	c.mu.Lock()
	c.reqDone = true
	running := c.watching
	c.watching = false
	c.mu.Unlock()
	if !running {
		return
	}
	c.nc.SetReadDeadline(aLongTimeAgo)
	<-c.watchEnd
	c.nc.SetReadDeadline(time.Time{})
}

var aLongTimeAgo = time.Unix(1, 0)

// lingerClose ends a connection whose client may still be sending a body
// nobody read: the answer goes first and the read side stays open a
// moment, so the client's kernel sees no reset before it has the answer.
func (c *h1Conn) lingerClose() {
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		c.nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		io.Copy(io.Discard, io.LimitReader(c.nc, maxDiscardBody))
	}
}

// h1Body is a request's body as its handler reads it.
type h1Body struct {
	c      *h1Conn
	rc     io.ReadCloser
	w      *h1Response
	mu     sync.Mutex // a transport may read it on another goroutine
	eof    bool
	closed bool
	expect bool // send 100 Continue before the first read
}

func (b *h1Body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return 0, http.ErrBodyReadAfterClose
	}
	if b.eof {
		return 0, io.EOF
	}
	if b.expect {
		b.expect = false
		b.w.sendContinue()
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		b.eof = true
		b.c.lr.endBodyDeadline()
		// The buffer is not needed while the request runs, unless the
		// next request came with the body (a stream holds none). The
		// connection's goroutine next reads it after settle, which
		// takes b.mu: this may run on a transport's goroutine.
		b.c.releaseReader()
		b.c.bodyEnded()
	} else if err != nil {
		err = clientBodyErr(err)
	}
	return n, err
}

func (b *h1Body) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	return nil
}

// settle reads what the handler left of the body, up to maxDiscardBody,
// so the connection can carry the next request. It reports whether the
// body's end was reached.
func (b *h1Body) settle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	defer b.c.lr.endBodyDeadline()
	b.closed = true
	if b.eof {
		return true
	}
	if b.expect {
		// The client waits for 100 Continue that never came: it sends
		// no body, and the connection cannot be reused.
		return false
	}
	n, err := io.CopyN(io.Discard, b.rc, maxDiscardBody+1)
	b.eof = err == io.EOF && n <= maxDiscardBody
	return b.eof
}

// h1Response is the http.ResponseWriter of one request.
type h1Response struct {
	c      *h1Conn
	req    *http.Request
	body   *h1Body
	header http.Header

	status      int
	wroteHeader bool // the handler chose its status
	committed   bool // the head is in the write buffer
	wmu         sync.Mutex
	sentCont    bool
	chunked     bool
	noBody      bool // this status or method carries no body
	head        bool
	http10      bool
	closeAfter  bool
	duplex      bool
	aborted     bool  // ended without its end (abort): the connection closes
	clen        int64 // the Content-Length the handler set, -1 none
	written     int64
	pending     *[]byte // body written before the head, to measure it
	werr        error
}

// bufferBeforeHead: an answer that ends within this many bytes, unflushed,
// is sent with a Content-Length instead of chunked.
const bufferBeforeHead = 2 << 10

func (w *h1Response) Header() http.Header { return w.header }

func (w *h1Response) WriteHeader(code int) {
	if w.wroteHeader || w.committed {
		return
	}
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code))
	}
	if code >= 100 && code <= 199 && code != http.StatusSwitchingProtocols {
		w.wmu.Lock()
		if code == http.StatusContinue {
			w.sentCont = true
		}
		w.writeStatusLine(code)
		w.writeFields(w.header)
		w.c.writer().WriteString("\r\n")
		w.flushWire()
		w.wmu.Unlock()
		return
	}
	w.wroteHeader = true
	w.status = code
	if cl := w.header.Get("Content-Length"); cl != "" {
		if n, err := strconv.ParseInt(cl, 10, 64); err == nil && n >= 0 {
			w.clen = n
		} else {
			w.header.Del("Content-Length")
		}
	}
	w.noBody = w.head || code == http.StatusNoContent || code == http.StatusNotModified || code < 200
}

func (w *h1Response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.werr != nil {
		return 0, w.werr
	}
	if w.noBody {
		if w.head {
			w.written += int64(len(p))
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if w.clen >= 0 && w.written+int64(len(p)) > w.clen {
		return 0, http.ErrContentLength
	}
	w.written += int64(len(p))
	if !w.committed {
		if w.clen < 0 {
			if w.pending == nil {
				if len(p) <= bufferBeforeHead {
					w.pending = getBuf(bufferBeforeHead)
					*w.pending = append((*w.pending)[:0], p...)
					return len(p), nil
				}
			} else if len(*w.pending)+len(p) <= bufferBeforeHead {
				*w.pending = append(*w.pending, p...)
				return len(p), nil
			}
		}
		w.commit(false, p)
	}
	w.writeBody(p)
	if w.werr != nil {
		return 0, w.werr
	}
	return len(p), nil
}

// writeBody puts p in the write buffer, framed as a chunk when chunked.
func (w *h1Response) writeBody(p []byte) {
	if len(p) == 0 {
		return
	}
	bw := w.c.writer()
	if w.chunked {
		// The chunk's size line, formatted in the buffer's free space.
		bw.Write(append(strconv.AppendInt(bw.AvailableBuffer(), int64(len(p)), 16), "\r\n"...))
		bw.Write(p)
		_, err := bw.WriteString("\r\n")
		w.failed(err)
		return
	}
	_, err := bw.Write(p)
	w.failed(err)
}

// failed records a write error: the client is gone, and the request's
// context ends so its upstream does too.
func (w *h1Response) failed(err error) {
	if err != nil && w.werr == nil {
		w.werr = err
		w.c.cancel()
	}
}

// commit writes the head. final: the handler has returned, so what is
// pending is the whole body.
func (w *h1Response) commit(final bool, next []byte) {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	w.committed = true
	h := w.header
	var pend []byte
	if w.pending != nil {
		pend = *w.pending
	}
	hasCL := w.clen >= 0
	if !w.noBody && !hasCL {
		switch {
		case final:
			w.clen = int64(len(pend))
			hasCL = true
		case w.http10:
			w.closeAfter = true // the body ends with the connection
		default:
			w.chunked = true
		}
	}
	if !w.closeAfter && w.body != nil && !w.duplex && !w.body.quiet() {
		// A body the handler left unread and answered before: the
		// connection is kept only if what is left is small.
		if w.req.ContentLength < 0 || w.req.ContentLength > maxDiscardBody {
			w.closeAfter = true
		}
	}
	if v := h["Connection"]; len(v) > 0 && strings.EqualFold(v[0], "close") {
		w.closeAfter = true
	}
	w.writeStatusLine(w.status)
	bw := w.c.writer()
	if _, ok := h["Date"]; !ok {
		bw.WriteString("Date: ")
		bw.Write(httpDate())
		bw.WriteString("\r\n")
	}
	if !w.noBody {
		if _, ok := h["Content-Type"]; !ok && (len(pend) > 0 || len(next) > 0) {
			sniff := pend
			if len(sniff) == 0 {
				sniff = next
			}
			bw.WriteString("Content-Type: ")
			bw.WriteString(http.DetectContentType(sniff))
			bw.WriteString("\r\n")
		}
	}
	w.writeFields(h)
	if hasCL && !w.noBody && h.Get("Content-Length") == "" {
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], w.clen, 10))
		bw.WriteString("\r\n")
	}
	if w.head && w.clen < 0 && w.written > 0 && final {
		var n [20]byte
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(n[:0], w.written, 10))
		bw.WriteString("\r\n")
	}
	if w.chunked {
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	}
	switch {
	case w.closeAfter:
		if h.Get("Connection") == "" {
			bw.WriteString("Connection: close\r\n")
		}
	case w.http10:
		bw.WriteString("Connection: keep-alive\r\n")
	}
	_, err := bw.WriteString("\r\n")
	w.failed(err)
	if w.pending != nil {
		p := *w.pending
		putBufLater := w.pending
		w.pending = nil
		w.writeBody(p)
		putBuf(putBufLater)
	}
}

// writeStatusLine writes "HTTP/1.1 200 OK".
func (w *h1Response) writeStatusLine(code int) {
	bw := w.c.writer()
	if code == http.StatusOK {
		bw.WriteString("HTTP/1.1 200 OK\r\n")
		return
	}
	var n [8]byte
	bw.WriteString("HTTP/1.1 ")
	bw.Write(strconv.AppendInt(n[:0], int64(code), 10))
	bw.WriteByte(' ')
	text := http.StatusText(code)
	if text == "" {
		text = "status code " + strconv.Itoa(code)
	}
	bw.WriteString(text)
	bw.WriteString("\r\n")
}

// writeFields writes the header fields, except those the server writes
// itself. A name that is not a token is skipped, and a line break in a
// value becomes a space: a header never splits the answer.
func (w *h1Response) writeFields(h http.Header) {
	bw := w.c.writer()
	for k, vs := range h {
		switch k {
		case "Transfer-Encoding", "Trailer":
			continue
		case "Content-Length":
			if w.noBody && !w.head {
				continue
			}
		}
		if !isToken(k) {
			continue
		}
		for _, v := range vs {
			if strings.ContainsAny(v, "\r\n") {
				v = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(v)
			}
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(strings.TrimSpace(v))
			bw.WriteString("\r\n")
		}
	}
}

// isToken reports whether k is an HTTP token (RFC 9110 5.6.2).
func isToken(k string) bool {
	if k == "" {
		return false
	}
	for i := 0; i < len(k); i++ {
		if !tokenByte[k[i]] {
			return false
		}
	}
	return true
}

// tokenByte: the bytes a token may hold.
var tokenByte = func() (t [256]bool) {
	for b := '!'; b <= '~'; b++ {
		t[b] = !strings.ContainsRune(`"(),/:;<=>?@[\]{}`, b)
	}
	return t
}()

// sendContinue tells a client that waits for it to send its body.
func (w *h1Response) sendContinue() {
	w.wmu.Lock()
	defer w.wmu.Unlock()
	if w.committed || w.sentCont {
		return
	}
	w.sentCont = true
	// This may run on a transport's goroutine: a write error stays in bw
	// for the handler's next write to find.
	bw := w.c.writer()
	bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
	if bw.Flush() == nil {
		w.c.releaseWriter()
	}
}

func (w *h1Response) flushWire() {
	err := w.c.writer().Flush()
	w.failed(err)
	if err == nil {
		w.c.releaseWriter() // a stream waits for its next event holding none
	}
}

// FlushError sends what is buffered; the head goes first, chunked when no
// length was set.
func (w *h1Response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.werr != nil {
		return w.werr
	}
	if !w.committed {
		w.commit(false, nil)
	}
	w.flushWire()
	return w.werr
}

func (w *h1Response) Flush() { w.FlushError() }

func (w *h1Response) SetWriteDeadline(t time.Time) error { return w.c.nc.SetWriteDeadline(t) }

func (w *h1Response) SetReadDeadline(t time.Time) error { return w.c.nc.SetReadDeadline(t) }

// EnableFullDuplex lets the handler write its answer while it still reads
// the request body.
func (w *h1Response) EnableFullDuplex() error {
	w.duplex = true
	return nil
}

// committedOK reports whether an answer went out whole, so a lingering
// close is worth it.
func (w *h1Response) committedOK() bool { return w.committed && w.werr == nil }

// finish ends the answer when the handler returns.
func (w *h1Response) finish() {
	if w.aborted {
		// What was written goes out (the head first, chunked, when none
		// had), and then the connection closes without the last chunk.
		w.closeAfter = true
		if w.werr == nil {
			if !w.wroteHeader {
				w.WriteHeader(http.StatusOK)
			}
			if !w.committed {
				w.commit(false, nil)
			}
			w.flushWire()
		}
		return
	}
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !w.committed {
		w.commit(true, nil)
	}
	if w.chunked && w.werr == nil {
		_, err := w.c.writer().WriteString("0\r\n\r\n")
		w.failed(err)
	}
	if w.werr == nil {
		w.flushWire()
	}
	if !w.noBody && w.clen >= 0 && w.written < w.clen {
		// The handler wrote less than the length it set: the client
		// cannot find the next answer's start.
		w.closeAfter = true
	}
}

// quiet reports whether the body was read to its end.
func (b *h1Body) quiet() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof
}

// httpDate is the Date header's value, made once a second.
func httpDate() []byte {
	now := time.Now()
	sec := now.Unix()
	if d := dateCache.Load(); d != nil && d.sec == sec {
		return d.b
	}
	d := &cachedDate{sec: sec, b: now.UTC().AppendFormat(nil, http.TimeFormat)}
	dateCache.Store(d)
	return d.b
}

type cachedDate struct {
	sec int64
	b   []byte
}

var dateCache atomic.Pointer[cachedDate]
