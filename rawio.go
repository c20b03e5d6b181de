package main

import (
	"io"
	"net"
	"os"
	"syscall"
)

// rawSock reads and writes a TCP connection's socket itself, under the
// connection's own locks, poller and deadlines (its syscall.RawConn).
//
// On Linux its reads and writes are system calls that do not tell the Go
// scheduler they may block (rawio_linux.go): on a non-blocking socket they
// never do. They return what there is, or EAGAIN, and then the poller
// waits, as it does for net.Conn. Told of a system call, the scheduler
// wakes its monitor thread if it sleeps, which then polls every 20 µs for
// the next millisecond and hands the caller's processor to another thread
// when a call outlasts a poll (a loopback write runs the receiver's TCP
// stack too). Under load that was a thread wake-up for every ten short
// answers or so, on a host of 2 cores (perf stat: nanosleep 0.10 and
// context switches 0.39 per request before, 0.01 and 0.26 after).
// Elsewhere (macOS makes its system calls through libc) they are the
// connection's own Read and Write.
//
// A connection whose socket is not there to take (TLS wraps it; not TCP)
// has none: newRawSock returns nil, and the connection is used as it is.
type rawSock struct {
	c  net.Conn
	rc syscall.RawConn

	// The call in flight: a connection has one reader and one writer at a
	// time, each with its own fields.
	rp      []byte
	rn      int
	rerr    error
	wp      []byte
	wn      int
	werr    error
	readFn  func(uintptr) bool
	writeFn func(uintptr) bool
	peekFn  func(uintptr) bool
	peekB   [1]byte
	peeked  bool // waitReadable peeked once: a call after it follows the poller's wake
}

// connIO returns c's socket to read and write directly, or c itself when
// it has none.
func connIO(c net.Conn) io.ReadWriter {
	if s := newRawSock(c); s != nil {
		return s
	}
	return c
}

// newRawSock returns c's socket to read and write directly, or nil.
func newRawSock(c net.Conn) *rawSock {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	s := &rawSock{c: c, rc: rc}
	s.readFn, s.writeFn, s.peekFn = s.read, s.write, s.peek
	return s
}

func (s *rawSock) Read(p []byte) (int, error) {
	if !rawIO {
		return s.c.Read(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.rp, s.rn, s.rerr = p, 0, nil
	err := s.rc.Read(s.readFn)
	s.rp = nil
	if err != nil {
		return 0, err // the wait failed: a deadline, or the connection closed
	}
	if s.rerr != nil {
		return s.rn, s.opError("read", s.rerr)
	}
	if s.rn == 0 {
		return 0, io.EOF
	}
	return s.rn, nil
}

func (s *rawSock) read(fd uintptr) bool {
	for {
		n, errno := rawRead(fd, s.rp)
		switch errno {
		case 0:
			s.rn = n
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		s.rerr = os.NewSyscallError("read", errno)
		return true
	}
}

// Write writes all of p, waiting for room as net.Conn's Write does.
func (s *rawSock) Write(p []byte) (int, error) {
	if !rawIO {
		return s.c.Write(p)
	}
	if len(p) == 0 {
		return 0, nil
	}
	s.wp, s.wn, s.werr = p, 0, nil
	err := s.rc.Write(s.writeFn)
	n := s.wn
	s.wp = nil
	if s.werr != nil {
		return n, s.opError("write", s.werr)
	}
	return n, err
}

func (s *rawSock) write(fd uintptr) bool {
	for s.wn < len(s.wp) {
		n, errno := rawWrite(fd, s.wp[s.wn:])
		switch errno {
		case 0:
			s.wn += n
			continue
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		s.werr = os.NewSyscallError("write", errno)
		return true
	}
	return true
}

// opError dresses an error as net.Conn's would be, so that what reads it
// (the upstream error's kind, for one) sees no difference.
func (s *rawSock) opError(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: s.c.LocalAddr(), Addr: s.c.RemoteAddr(), Err: err}
}

// waitReadable waits until rw has bytes to read, or its end or an error,
// holding no buffer: a connection waiting for its next request takes one
// only once there is something to read into it (h1_buffers.go). It asks
// the socket (a peek of one byte, left where it is) before it waits: the
// poller forgets a readiness it saw before the wait. Where rw is not a
// rawSock (not TCP), it returns at once, and the read that follows waits.
func waitReadable(rw io.ReadWriter) error {
	s, ok := rw.(*rawSock)
	if !ok {
		return nil
	}
	s.peeked = false
	return s.rc.Read(s.peekFn)
}

func (s *rawSock) peek(fd uintptr) bool {
	if s.peeked {
		// The poller woke the wait: there is something (or, rarely, a
		// wake-up for nothing, and the read that follows waits, holding
		// the buffer). No second system call for what it told.
		return true
	}
	s.peeked = true
	for {
		switch rawPeek(fd, s.peekB[:]) {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true // a byte, the end, or an error: the read that follows says which
	}
}
