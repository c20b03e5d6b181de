package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Reading the upstream's answer head, for upstreamClient.
//
// The same one-pass, strict reading as a client's request head (h1_parse.go),
// in place of net/http's ReadResponse: one string for the head, its values
// pieces of it. An answer whose framing could be read two ways
// (Transfer-Encoding with Content-Length, two lengths, a transfer coding
// other than chunked) is an error, which the session reports as a 502
// rather than relaying something it cannot delimit.

// errMalformedAnswer is an upstream answer hermes cannot read safely
// (malformed, a head over the limit, a transfer coding it does not read):
// the client gets a 502 that says so, and nothing of it is relayed.
type errMalformedAnswer struct{ msg string }

func (e *errMalformedAnswer) Error() string { return e.msg }

func malformed(format string, args ...any) error {
	return &errMalformedAnswer{"malformed answer from the upstream: " + fmt.Sprintf(format, args...)}
}

// maxAnswerHead bounds the upstream's answer head.
const maxAnswerHead = 1 << 20

// answerMem is the memory of one answer, in one allocation: its head, its
// body's framing (when it has a length), and the body the session reads.
type answerMem struct {
	resp  http.Response
	fixed h1FixedBody
	body  upstreamBody
}

// readUpstreamAnswer reads the head of the answer to a request with method, and
// sets up its body's framing on br. The answer lives in m (a new one when m
// is nil). The header goes into h when it is not nil (an empty map), else
// into a new map; buf is scratch space it may grow and returns.
func readUpstreamAnswer(br *bufio.Reader, method string, h http.Header, buf []byte, m *answerMem) (*http.Response, []byte, error) {
	head, buf, err := readHead(br, buf, maxAnswerHead, maxAnswerHead)
	if err != nil {
		if err == errHeadTooLarge {
			err = &errMalformedAnswer{"the upstream's answer head is over 1 MiB"}
		}
		return nil, buf, err
	}
	if m == nil {
		m = new(answerMem)
	}
	resp := &m.resp
	if err := parseAnswer(head, method, h, resp); err != nil {
		return nil, buf, err
	}
	switch {
	case resp.Body != nil: // no body
	case len(resp.TransferEncoding) > 0:
		resp.Body = newChunkedBody(br)
	case resp.ContentLength == 0:
		resp.Body = http.NoBody
	case resp.ContentLength > 0:
		m.fixed = h1FixedBody{br: br, remain: resp.ContentLength}
		resp.Body = &m.fixed
	default:
		resp.Body = untilClose{br}
	}
	return resp, buf, nil
}

// parseAnswer reads an answer head into resp: the status line, the fields,
// and what they say of the body. resp.Body is set (to http.NoBody) only
// when the answer has none.
func parseAnswer(head, method string, into http.Header, resp *http.Response) error {
	line, rest := cutLine(head)
	*resp = http.Response{Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1, ContentLength: -1}
	proto, status, _ := strings.Cut(line, " ")
	switch proto {
	case "HTTP/1.1":
	case "HTTP/1.0":
		resp.Proto, resp.ProtoMinor = proto, 0
	default:
		return malformed("status line %q", trimForError(line))
	}
	code, _, _ := strings.Cut(status, " ")
	if len(code) != 3 || !isDigit(code[0]) || !isDigit(code[1]) || !isDigit(code[2]) || code[0] == '0' {
		return malformed("status line %q", trimForError(line))
	}
	resp.StatusCode = int(code[0]-'0')*100 + int(code[1]-'0')*10 + int(code[2]-'0')
	resp.Status = strings.TrimLeft(status, " ")
	h, f, he := parseFields(rest, true, into)
	if he != nil {
		return malformed("%s", strings.TrimPrefix(he.text, "Bad Request: "))
	}
	resp.Header = h
	if f.lengths > 0 {
		n, ok := parseLength(f.length)
		if !ok {
			return malformed("Content-Length %q", trimForError(f.length))
		}
		resp.ContentLength = n
	}
	if te, ok := h["Transfer-Encoding"]; ok && resp.ProtoMinor == 1 {
		if f.lengths > 0 {
			return malformed("both Transfer-Encoding and Content-Length")
		}
		if len(te) != 1 || !strings.EqualFold(te[0], "chunked") {
			return &errMalformedAnswer{fmt.Sprintf("the upstream's answer uses a transfer coding hermes does not read: %q", trimForError(strings.Join(te, ", ")))}
		}
		delete(h, "Transfer-Encoding")
		resp.TransferEncoding = chunkedOnly
		resp.ContentLength = -1
	} else if ok {
		delete(h, "Transfer-Encoding") // HTTP/1.0 has none: net/http ignores it too
	}
	resp.Close = wantsClose(h["Connection"], resp.ProtoMinor == 0)
	dropConnectionTokens(h) // before Connection itself may go
	if resp.Close && resp.ProtoMinor == 1 {
		delete(h, "Connection") // as net/http: the close is in resp.Close
	}
	switch {
	case method == http.MethodHead:
		resp.Body = http.NoBody
	case resp.StatusCode/100 == 1 || resp.StatusCode == http.StatusNoContent || resp.StatusCode == http.StatusNotModified:
		resp.Body, resp.ContentLength = http.NoBody, 0
	case resp.ContentLength < 0 && len(resp.TransferEncoding) == 0:
		resp.Close = true // the body ends with the connection
	}
	return nil
}

// trimForError keeps an upstream's bytes in an error short.
func trimForError(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// untilClose is a body that ends when the upstream closes the connection.
type untilClose struct{ br *bufio.Reader }

func (u untilClose) Read(p []byte) (int, error) { return u.br.Read(p) }
func (u untilClose) Close() error               { return nil }

var _ io.ReadCloser = untilClose{}
