package main

import (
	"errors"
	"io"
	"net/http"
	"sync"
)

// Request bodies and the buffers that carry them.
//
// A small request body (a chat request, most of the time) is read whole
// before it goes on, into a pooled buffer of about its size. Buffers come
// from pools by size class: 10,000 requests that arrive together take
// 10,000 buffers at once, and a pool keeps what it was given back for a
// collection or two, so a buffer much larger than its body would be held
// for nothing, several times over.

// smallBody is the largest request body read whole before it is sent on.
const smallBody = 16 << 10

// copyBuf is the size of the buffer an answer is relayed through.
const copyBuf = 16 << 10

// bufClasses are the pooled buffer sizes, smallest first.
var bufClasses = [...]int{1 << 10, 4 << 10, 16 << 10}

var bufPools [len(bufClasses)]sync.Pool

// getBuf returns a pooled buffer of at least n bytes (n at most the
// largest class), with its length set to its capacity.
func getBuf(n int) *[]byte {
	for i, size := range bufClasses {
		if n <= size {
			if b, ok := bufPools[i].Get().(*[]byte); ok {
				return b
			}
			b := make([]byte, size)
			return &b
		}
	}
	panic("getBuf: larger than the largest buffer class")
}

// putBuf gives a buffer from getBuf back; nil is none.
func putBuf(b *[]byte) {
	if b == nil {
		return
	}
	for i, size := range bufClasses {
		if cap(*b) == size {
			*b = (*b)[:size]
			bufPools[i].Put(b)
			return
		}
	}
}

// readBody reads a request body to its end, at most limit bytes, and
// closes it (see closeReadBody). A small body of known length goes into a
// pooled buffer, read in shallow frames, and pooled is that buffer, for
// putBuf to give back; it is nil for a body read any other way.
//
//go:noinline
func readBody(w http.ResponseWriter, r *http.Request, limit int64) (body []byte, pooled *[]byte, err error) {
	if n := r.ContentLength; n > 0 && n <= smallBody && n <= limit {
		buf := getBuf(int(n))
		if _, err := io.ReadFull(r.Body, (*buf)[:n]); err != nil {
			putBuf(buf)
			return nil, nil, err
		}
		if err := closeReadBody(r); err != nil {
			putBuf(buf)
			return nil, nil, err
		}
		return (*buf)[:n], buf, nil
	}
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		return nil, nil, err
	}
	return b, nil, r.Body.Close()
}

// closeReadBody closes a request body that has been read to its length:
// one more read sees its end, then it is closed. A body left open makes
// net/http read it again at the first write of the answer (to be sure it
// is consumed), deep in its own stack frames: that grew every stream's
// goroutine stack to 16 KB for the stream's whole life.
func closeReadBody(r *http.Request) error {
	var one [1]byte
	if n, err := r.Body.Read(one[:]); n != 0 || err != io.EOF {
		return errors.New("the request body is longer than its Content-Length")
	}
	return r.Body.Close()
}

// clientBodyError is a request body that could not be read because of its
// client: malformed framing, a body that ends early or stalls, or one
// larger than gateway.max_request_body. It is the client's error (a 4xx),
// never the upstream's: it touches no upstream health.
type clientBodyError struct {
	code int // the status it answers, when the answer has not begun
	err  error
}

func (e *clientBodyError) Error() string { return "reading the request body: " + e.err.Error() }
func (e *clientBodyError) Unwrap() error { return e.err }

// clientBodyErr wraps a request body's read error as the client's, keeping
// one that already is.
func clientBodyErr(err error) error {
	var ce *clientBodyError
	if errors.As(err, &ce) {
		return err
	}
	code := http.StatusBadRequest
	var ne interface{ Timeout() bool }
	if errors.As(err, &ne) && ne.Timeout() {
		code = http.StatusRequestTimeout
	}
	return &clientBodyError{code: code, err: err}
}
