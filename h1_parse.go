package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
)

// Reading a client's request head, for h1Server.
//
// This is the strict reading of RFC 9112 that a proxy wants, in one pass
// over one string: the head is copied once, and the method, target and
// every header value are pieces of that copy. Where the RFC lets a server
// either accept or reject, this rejects, because a request that two
// parsers could read two ways is how requests get smuggled:
//   - a header line folded onto the next (obs-fold);
//   - white space between a header's name and its colon;
//   - Transfer-Encoding with Content-Length, or with HTTP/1.0;
//   - Transfer-Encoding other than exactly "chunked" (501);
//   - Content-Length that is not all digits, or given twice with two values;
//   - two Host headers, or a Host with bytes no host has;
//   - control characters anywhere but a tab in a value.
// h1_parse_test.go checks it against net/http's ReadRequest on the same
// inputs: whatever this accepts, ReadRequest reads the same way.

// chunkedOnly is the TransferEncoding of every chunked message read: one
// slice for all, which nothing writes to.
var chunkedOnly = []string{"chunked"}

// The limits of a client's request head, nginx's defaults
// (large_client_header_buffers 4 8k): a request line of at most 8 KiB
// (414 above it), header lines of at most 8 KiB each, and 32 KiB for the
// whole head (431 above either). A head is held in memory whole while it
// comes in, on every connection that sends one: these bound what a crowd
// of clients sending unfinished heads can make the gateway hold (600 of
// them at the 1 MiB it took before held 1.1 GB).
const (
	maxRequestLine = 8 << 10
	maxHeaderLine  = 8 << 10
	maxRequestHead = 32 << 10
)

// errHeadTooLarge: the head is longer than the server takes.
var errHeadTooLarge = errors.New("request head too large")

// errLineTooLong: the head's first line is longer than the server takes.
var errLineTooLong = errors.New("request line too long")

// errFieldTooLong: a header line is longer than the server takes.
var errFieldTooLong = errors.New("header line too long")

// readHead reads a head up to its blank line, at most limit bytes and each
// line at most lineLimit bytes (errLineTooLong for the first line,
// errFieldTooLong for another), into one string. buf is scratch space it
// may grow and returns.
func readHead(br *bufio.Reader, buf []byte, limit, lineLimit int) (string, []byte, error) {
	// The common case: the whole head comes in one read.
	if br.Buffered() == 0 {
		br.Peek(1) // an error shows again below
	}
	if n := br.Buffered(); n > 0 {
		b, _ := br.Peek(n)
		if end := headEnd(b); end > 0 {
			if end > limit {
				return "", buf, errHeadTooLarge
			}
			if end > lineLimit {
				if err := longLine(b[:end], lineLimit); err != nil {
					return "", buf, err
				}
			}
			head := string(b[:end])
			br.Discard(end)
			return head, buf, nil
		}
	}
	// Line by line: only the line just read can be the blank one, so a
	// head of many short lines costs its length, not its length squared.
	buf = buf[:0]
	start := 0 // where the line being read began in buf
	for {
		line, err := br.ReadSlice('\n')
		if len(buf)+len(line) > limit {
			return "", buf, errHeadTooLarge
		}
		if len(buf)-start+len(line) > lineLimit+2 { // the line's CRLF is not counted
			return "", buf, lineError(start)
		}
		buf = append(buf, line...)
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			if err == io.EOF && len(buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return "", buf, err
		}
		if l := buf[start:]; start > 0 && (len(l) == 1 || len(l) == 2 && l[0] == '\r') {
			return string(buf), buf, nil
		}
		start = len(buf)
	}
}

// longLine returns the error for the first line of head longer than
// lineLimit (its line break not counted), or nil.
func longLine(head []byte, lineLimit int) error {
	start := 0
	for start < len(head) {
		n := bytes.IndexByte(head[start:], '\n')
		if n < 0 {
			n = len(head) - start
		}
		if n > lineLimit+1 {
			return lineError(start)
		}
		start += n + 1
	}
	return nil
}

// lineError is the error for a line over the limit that begins at start.
func lineError(start int) error {
	if start == 0 {
		return errLineTooLong
	}
	return errFieldTooLong
}

// headEnd returns the length of the head at b's start, up to and with its
// blank line ("\r\n\r\n", or bare "\n\n" as net/http accepts), or 0 when
// b holds no whole head.
func headEnd(b []byte) int {
	for i := 0; i < len(b); i++ {
		if b[i] != '\n' {
			continue
		}
		// A line ends at i; the head ends if the next line is empty.
		j := i + 1
		if j < len(b) && b[j] == '\r' {
			j++
		}
		if j < len(b) && b[j] == '\n' {
			return j + 1
		}
	}
	return 0
}

// plainPath reports whether a request target is a path of unreserved
// characters (RFC 3986) and slashes, and nothing else: url.ParseRequestURI
// gives such a target back as the URL's Path, unchanged, with nothing to
// unescape, nothing it would escape and no query. It is parsed here without
// that function's allocation; TestPlainPathIsParseRequestURI holds the two
// to the same answer.
func plainPath(s string) bool {
	if s == "" || s[0] != '/' {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' {
			continue
		}
		switch b {
		case '/', '-', '.', '_', '~':
			continue
		}
		return false
	}
	return true
}

// checkMethod refuses what the gateway does not serve: CONNECT (405: it
// is no forward proxy), a method RFC 9110 does not define (501 for one
// spelled as methods are, in capitals, as RFC 9110 9.1 asks), and
// anything else, a lower-case "get" or a token with other characters
// (400, as nginx refuses them). Methods are case-sensitive: an upstream
// or a framework that reads "get" as GET would see a request the gateway
// routed as something else.
func checkMethod(m string) *h1Error {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodDelete,
		http.MethodOptions, http.MethodPatch, http.MethodTrace:
		return nil
	case http.MethodConnect:
		return &h1Error{http.StatusMethodNotAllowed, "Method Not Allowed: this gateway is not a forward proxy"}
	}
	for i := 0; i < len(m); i++ {
		if m[i] < 'A' || m[i] > 'Z' {
			return badRequest("unknown method")
		}
	}
	return &h1Error{http.StatusNotImplemented, "Not Implemented: unknown method"}
}

// dotSegment reports whether a request's path (unescaped: %2e is a dot
// and %2f a slash there already) has a "." or ".." segment. Many
// upstreams and frameworks resolve them, so "/v1/../admin" would reach a
// route the gateway never meant to forward to, with its API key. A
// backslash counts as a slash (some servers read it so), and a segment
// ends at ";" too ("..;/", which Tomcat reads as "..").
func dotSegment(p string) bool {
	for i := 0; i < len(p); i++ {
		if p[i] != '.' || i > 0 && p[i-1] != '/' && p[i-1] != '\\' {
			continue
		}
		j := i + 1
		if j < len(p) && p[j] == '.' {
			j++
		}
		if j == len(p) || p[j] == '/' || p[j] == '\\' || p[j] == ';' {
			return true
		}
	}
	return false
}

// parseHead turns a request head into req's method, target, version and
// header. It fills req.Header (an empty map given, or a new one) and
// req.URL (mem, or a new one when mem is nil), and reports a 4xx or 5xx
// with why.
func parseHead(head string, req *http.Request, mem *url.URL) *h1Error {
	line, rest := cutLine(head)
	method, after, ok1 := strings.Cut(line, " ")
	target, proto, ok2 := strings.Cut(after, " ")
	if !ok1 || !ok2 || !isToken(method) || target == "" {
		return badRequest("malformed request line")
	}
	switch proto {
	case "HTTP/1.1":
		req.ProtoMajor, req.ProtoMinor = 1, 1
	case "HTTP/1.0":
		req.ProtoMajor, req.ProtoMinor = 1, 0
	default:
		if strings.HasPrefix(proto, "HTTP/") && len(proto) == 8 && proto[6] == '.' &&
			isDigit(proto[5]) && isDigit(proto[7]) {
			return &h1Error{http.StatusHTTPVersionNotSupported, "HTTP Version Not Supported"}
		}
		return badRequest("malformed request line")
	}
	for i := 0; i < len(target); i++ {
		if b := target[i]; b <= ' ' || b == 0x7f {
			return badRequest("malformed request target")
		}
	}
	req.Method, req.RequestURI, req.Proto = method, target, proto
	if he := checkMethod(method); he != nil {
		return he
	}
	if plainPath(target) {
		if mem == nil {
			mem = new(url.URL)
		}
		*mem = url.URL{Path: target}
		req.URL = mem
	} else {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return badRequest("malformed request target")
		}
		req.URL = u
	}
	if dotSegment(req.URL.Path) {
		return badRequest("a . or .. segment in the path")
	}

	h, f, he := parseFields(rest, false, req.Header)
	if he != nil {
		return he
	}
	req.Header = h
	hosts, host, lengths, length := f.hosts, f.host, f.lengths, f.length

	if hosts > 1 {
		return badRequest("two Host headers")
	}
	req.Host = req.URL.Host
	if req.Host == "" {
		req.Host = host
	}
	if hosts == 0 && req.URL.Host == "" && req.ProtoMajor == 1 && req.ProtoMinor == 1 {
		return badRequest("missing required Host header")
	}
	if !validHost(req.Host) {
		return badRequest("malformed Host header")
	}

	req.ContentLength = 0
	if lengths > 0 {
		n, ok := parseLength(length)
		if !ok {
			return badRequest("malformed Content-Length")
		}
		req.ContentLength = n
	}
	if te, ok := h["Transfer-Encoding"]; ok {
		switch {
		case lengths > 0:
			return badRequest("both Transfer-Encoding and Content-Length")
		case req.ProtoMinor == 0:
			return badRequest("Transfer-Encoding in an HTTP/1.0 request")
		case len(te) != 1 || !strings.EqualFold(te[0], "chunked"):
			return &h1Error{http.StatusNotImplemented, "Unsupported transfer encoding"}
		}
		delete(h, "Transfer-Encoding")
		req.TransferEncoding = chunkedOnly
		req.ContentLength = -1
	}
	req.Close = wantsClose(h["Connection"], req.ProtoMinor == 0)
	return nil
}

// fieldFacts is what parseFields found besides the header map: how many
// Host and Content-Length fields, and their values.
type fieldFacts struct {
	hosts, lengths int
	host, length   string
}

// parseFields reads the header section after a head's first line into h
// (empty), or a new header map when h is nil. Host is left out of the map
// unless keepHost (a request's req.Host carries it, as with net/http), and
// a Content-Length repeated with the same value is kept once; two
// different ones are refused.
func parseFields(rest string, keepHost bool, h http.Header) (http.Header, fieldFacts, *h1Error) {
	var f fieldFacts
	// One backing array for all values, as net/http does: a field's slice
	// has room for its first value only, so a second one reallocates
	// instead of writing over the next field's.
	n := min(strings.Count(rest, "\n"), 100)
	vals := make([]string, n)
	if h == nil {
		h = make(http.Header, n)
	}
	var line string
	for rest != "" {
		line, rest = cutLine(rest)
		if line == "" {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return nil, f, badRequest("folded header line")
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || !isToken(name) {
			return nil, f, badRequest("malformed header line")
		}
		value = trimOWS(value)
		if !validValue(value) {
			return nil, f, badRequest("control character in a header value")
		}
		key := canonicalKey(name)
		switch key {
		case "Host":
			f.hosts++
			f.host = value
			if !keepHost {
				continue
			}
		case "Content-Length":
			if f.lengths > 0 && value != f.length {
				return nil, f, badRequest("two different Content-Lengths")
			}
			f.lengths++
			f.length = value
			if f.lengths > 1 {
				continue // the same again: one is kept, as net/http does
			}
		}
		if vs, ok := h[key]; ok {
			h[key] = append(vs, value)
		} else if len(vals) == 0 {
			h[key] = []string{value}
		} else {
			vals[0] = value
			h[key] = vals[:1:1]
			vals = vals[1:]
		}
	}
	return h, f, nil
}

func badRequest(why string) *h1Error {
	return &h1Error{http.StatusBadRequest, "Bad Request: " + why}
}

// cutLine splits s after its first line; the line loses its "\r\n" or "\n".
func cutLine(s string) (line, rest string) {
	i := strings.IndexByte(s, '\n')
	if i < 0 {
		return s, ""
	}
	line, rest = s[:i], s[i+1:]
	line = strings.TrimSuffix(line, "\r")
	return line, rest
}

func isDigit(b byte) bool { return '0' <= b && b <= '9' }

// parseLength parses a Content-Length: digits only, no sign, no list.
func parseLength(s string) (int64, bool) {
	if s == "" || len(s) > 18 {
		return 0, false
	}
	var n int64
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return 0, false
		}
		n = n*10 + int64(s[i]-'0')
	}
	return n, true
}

// trimOWS cuts the optional white space (spaces and tabs) around a field
// value: strings.Trim's work, without building a set of cut characters
// for each header line.
func trimOWS(s string) string {
	for s != "" && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for s != "" && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// wantsClose reports whether the Connection header asks to close after
// this request: "close" for HTTP/1.1, the lack of "keep-alive" for 1.0.
func wantsClose(conn []string, http10 bool) bool {
	keep := false
	for _, v := range conn {
		for _, tok := range strings.Split(v, ",") {
			tok = trimOWS(tok)
			if strings.EqualFold(tok, "close") {
				return true
			}
			if strings.EqualFold(tok, "keep-alive") {
				keep = true
			}
		}
	}
	return http10 && !keep
}

// canonicalKey is http.CanonicalHeaderKey, without a copy when name is
// canonical already (nearly always).
func canonicalKey(name string) string {
	upper := true
	for i := 0; i < len(name); i++ {
		b := name[i]
		if upper && 'a' <= b && b <= 'z' || !upper && 'A' <= b && b <= 'Z' {
			return http.CanonicalHeaderKey(name)
		}
		upper = b == '-'
	}
	return name
}

// h1FixedBody is a request body of known length.
type h1FixedBody struct {
	br     *bufio.Reader
	remain int64
}

func (b *h1FixedBody) Read(p []byte) (int, error) {
	if b.remain <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > b.remain {
		p = p[:b.remain]
	}
	n, err := b.br.Read(p)
	b.remain -= int64(n)
	if err == io.EOF {
		if b.remain > 0 {
			return n, io.ErrUnexpectedEOF
		}
		err = nil
	}
	if err == nil && b.remain == 0 {
		err = io.EOF
	}
	return n, err
}

func (b *h1FixedBody) Close() error { return nil }

// h1ChunkedBody is a chunked request body; its trailer section is read
// and dropped at the end, so the next request starts where it should.
type h1ChunkedBody struct {
	br  *bufio.Reader
	cr  io.Reader
	err error
}

func newChunkedBody(br *bufio.Reader) *h1ChunkedBody {
	return &h1ChunkedBody{br: br, cr: httputil.NewChunkedReader(br)}
}

// maxTrailer bounds a chunked body's trailer section, its blank line
// included. net/http takes no longer a trailer than its read buffer holds
// (4 KiB; it looks ahead for the trailer's end, seeUpcomingDoubleCRLF), and
// what it refuses, hermes must not accept.
const maxTrailer = 4 << 10

func (b *h1ChunkedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.cr.Read(p)
	if err == io.EOF {
		err = b.skipTrailer()
		if err == nil {
			err = io.EOF
		}
	}
	b.err = err
	return n, err
}

func (b *h1ChunkedBody) skipTrailer() error {
	total := 0
	for first := true; ; first = false {
		line, err := b.br.ReadSlice('\n')
		total += len(line)
		if total > maxTrailer || err == bufio.ErrBufferFull {
			return errors.New("chunked trailer too large")
		}
		if err != nil {
			return io.ErrUnexpectedEOF
		}
		// Every line ends in CRLF, the blank one that ends the body too.
		// net/http takes a trailer only when it sees "\r\n\r\n" ahead
		// (seeUpcomingDoubleCRLF), then reads it with textproto, which
		// also takes bare LFs: a trailer line ending in a bare LF, or a
		// bare LF ending it, was read here as the body's end where
		// net/http read further, or refused (FuzzUpstreamAnswer found
		// it). With CRLF only, the first "\r\n\r\n" is the trailer's end
		// for both.
		if len(line) < 2 || line[len(line)-2] != '\r' {
			if first && len(line) == 1 {
				return errors.New("malformed chunked encoding: a bare LF ends the body")
			}
			return errors.New("malformed chunked trailer: a line ends in a bare LF")
		}
		if len(line) == 2 {
			return nil
		}
		if !validFieldLine(string(line[:len(line)-2])) {
			return errors.New("malformed chunked trailer")
		}
	}
}

// validFieldLine reports whether line is a well-formed "name: value".
func validFieldLine(line string) bool {
	name, value, ok := strings.Cut(line, ":")
	return ok && isToken(name) && validValue(value)
}

// validValue reports whether a header value holds no control character
// but the tab.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

func (b *h1ChunkedBody) Close() error { return nil }
