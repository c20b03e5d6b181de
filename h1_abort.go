package main

// What a session may do with an answer that went wrong (answerControl in
// upstream_proxy.go): forget it while none of it has gone out, or end it
// without its end once some has.

// discard forgets an answer none of which has been written out: its
// status, its header (but the session's id) and what is buffered of its
// body, so that another can be given. It reports false once the head is
// in the write buffer.
func (w *h1Response) discard() bool {
	if w.committed {
		return false
	}
	id := w.header["X-Hermes-Session"]
	clear(w.header)
	if id != nil {
		w.header["X-Hermes-Session"] = id
	}
	w.wroteHeader, w.status, w.noBody, w.clen, w.written = false, 0, false, -1, 0
	if w.pending != nil {
		putBuf(w.pending)
		w.pending = nil
	}
	return true
}

// abort ends the answer under way without its end: what is written goes
// out, then the connection closes without the last chunk (or short of the
// Content-Length it announced), so that the client sees a cut answer for
// what it is. finish does it when the handler returns.
func (w *h1Response) abort() { w.aborted = true }
