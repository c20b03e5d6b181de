package main

import (
	"bufio"
	"sync"
)

// A connection holds its 4 KiB read and write buffers only while bytes
// move through them. An idle keep-alive connection, and a stream waiting
// for its next event, hold neither: the read buffer goes back to its pool
// once a request's body has been read and nothing of the next request
// came with it, and the write buffer once an answer's bytes are flushed.
// A connection waits for its next request holding no buffer (waitReadable
// peeks at the socket), and takes one when bytes are there. This is most
// of what a held connection costs: 8 KiB of the 12 KiB of heap an idle
// one held, of the 20 KiB a stream held (BenchmarkHeldConnections).

var h1ReaderPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}

var h1WriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}

// reader is the connection's read buffer, taken from the pool when it
// holds none.
func (c *h1Conn) reader() *bufio.Reader {
	if c.br == nil {
		c.br = h1ReaderPool.Get().(*bufio.Reader)
		c.br.Reset(&c.lr)
	}
	return c.br
}

// releaseReader gives the read buffer back when it holds nothing (what
// it holds is the next request's start: it stays).
func (c *h1Conn) releaseReader() {
	if c.br != nil && c.br.Buffered() == 0 {
		c.br.Reset(nil)
		h1ReaderPool.Put(c.br)
		c.br = nil
	}
}

// writer is the connection's write buffer, taken from the pool when it
// holds none.
func (c *h1Conn) writer() *bufio.Writer {
	if c.bw == nil {
		c.bw = h1WriterPool.Get().(*bufio.Writer)
		c.bw.Reset(h1Writer{c})
	}
	return c.bw
}

// releaseWriter gives the write buffer back once everything in it has gone
// out. One that holds bytes, or a write error (bufio keeps it, for the
// next write to find), stays.
func (c *h1Conn) releaseWriter() {
	if c.bw != nil && c.bw.Buffered() == 0 {
		if c.bw.Flush() != nil {
			return
		}
		c.bw.Reset(nil)
		h1WriterPool.Put(c.bw)
		c.bw = nil
	}
}
