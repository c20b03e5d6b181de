package main

import (
	"bufio"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// parseForTest reads one request head the way h1Server does.
func parseForTest(raw string) (*http.Request, *h1Error, error) {
	br := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	head, _, err := readHead(br, nil, maxRequestHead, maxRequestLine)
	if err != nil {
		return nil, nil, err
	}
	req := new(http.Request)
	if he := parseHead(head, req, nil); he != nil {
		return nil, he, nil
	}
	return req, nil, nil
}

// headCases are request heads with what h1Server must make of them: the
// status it refuses with, or 0 for accepted.
var headCases = []struct {
	name string
	raw  string
	code int
}{
	{"plain", "GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"post", "POST /v1/chat/completions HTTP/1.1\r\nHost: localhost:8080\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n", 0},
	{"bare LF", "GET / HTTP/1.1\nHost: x\n\n", 0},
	{"http/1.0 no host", "GET / HTTP/1.0\r\n\r\n", 0},
	{"http/1.0 keep-alive", "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0},
	{"connection close", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Keep-Alive, close\r\n\r\n", 0},
	{"lower-case names", "GET / HTTP/1.1\r\nhost: x\r\ncontent-type: a\r\nx-custom-thing: b\r\n\r\n", 0},
	{"repeated field", "GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\nX: 1\r\n\r\n", 0},
	{"escaped path and query", "GET /v1/a%2Fb%20c?x=1&y=%2F HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"absolute form", "GET http://example.test/v1/models HTTP/1.1\r\nHost: other\r\n\r\n", 0},
	{"asterisk", "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"chunked", "POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", 0},
	{"chunked any case", "POST /v1/x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n", 0},
	{"value white space", "GET / HTTP/1.1\r\nHost: x\r\nX-A:   padded \t \r\nX-B:\r\n\r\n", 0},
	{"tab in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\tb\r\n\r\n", 0},
	{"same length twice", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", 0},
	{"utf-8 value", "GET / HTTP/1.1\r\nHost: x\r\nX-Name: caf\xc3\xa9\r\n\r\n", 0},
	{"dots in names", "GET /v1/models/gpt-3.5-turbo/.well/..x/x.. HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"dot in a query", "GET /v1/x?p=../a HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"every method", "PATCH / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"options", "OPTIONS / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"delete", "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"put", "PUT / HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	{"trace", "TRACE / HTTP/1.1\r\nHost: x\r\n\r\n", 0},

	{"folded line", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", 400},
	{"space before colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400},
	{"no colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A\r\n\r\n", 400},
	{"bad name", "GET / HTTP/1.1\r\nHost: x\r\nX(A): a\r\n\r\n", 400},
	{"NUL in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400},
	{"CR in value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400},
	{"missing host", "GET / HTTP/1.1\r\n\r\n", 400},
	{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
	{"bad host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
	{"te and cl", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
	{"te in 1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
	{"te gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
	{"te twice", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 501},
	{"two lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
	{"empty length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n", 400},
	{"empty length after one", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length:\r\n\r\n", 400},
	{"signed length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", 400},
	{"length list", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\n", 400},
	{"huge length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
	{"http/2", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505},
	{"http/0.9", "GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505},
	{"garbage version", "GET / HTTQ/1.1\r\nHost: x\r\n\r\n", 400},
	{"two spaces", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"space in target", "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"control in target", "GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"relative target", "GET a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"empty line first", "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"connect", "CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n", 405},
	{"bad method", "G(T / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"lower-case method", "get / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"mixed-case method", "Post / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"unknown method", "FOO / HTTP/1.1\r\nHost: x\r\n\r\n", 501},
	{"webdav method", "PROPFIND / HTTP/1.1\r\nHost: x\r\n\r\n", 501},
	{"method with dash", "M-SEARCH / HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot dot", "GET /v1/../admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot", "GET /v1/./x HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot dot at the end", "GET /v1/.. HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot at the end", "GET /v1/. HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"escaped dot dot", "GET /v1/%2e%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"escaped dot, capitals", "GET /v1/%2E/x HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"half-escaped dot dot", "GET /v1/.%2e/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot dot behind escaped slashes", "GET /v1/a%2f..%2fadmin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot dot behind a backslash", "GET /v1/a\\..\\admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot dot with a parameter", "GET /v1/..;/admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot dot before a query", "GET /v1/..?x=1 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
	{"dot dot in absolute form", "GET http://example.test/v1/../admin HTTP/1.1\r\nHost: x\r\n\r\n", 400},
}

// TestParseHeadAgreesWithNetHTTP: every head h1Server accepts, net/http's
// ReadRequest reads the same way; every head it refuses, it refuses with
// the status it should.
func TestParseHeadAgreesWithNetHTTP(t *testing.T) {
	for _, tc := range headCases {
		t.Run(tc.name, func(t *testing.T) {
			req, he, err := parseForTest(tc.raw)
			if err != nil {
				t.Fatalf("readHead: %v", err)
			}
			if tc.code != 0 {
				if he == nil {
					t.Fatalf("accepted; want %d", tc.code)
				}
				if he.code != tc.code {
					t.Fatalf("refused with %d (%s); want %d", he.code, he.text, tc.code)
				}
				return
			}
			if he != nil {
				t.Fatalf("refused with %d (%s)", he.code, he.text)
			}
			sameAsNetHTTP(t, tc.raw, req)
		})
	}
}

// sameAsNetHTTP fails unless ReadRequest reads raw as req.
func sameAsNetHTTP(t *testing.T, raw string, req *http.Request) {
	t.Helper()
	want, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw)))
	if err != nil {
		t.Fatalf("h1Server accepts what net/http refuses (%v):\n%q", err, raw)
	}
	if want.Method != req.Method || want.RequestURI != req.RequestURI || want.Proto != req.Proto ||
		want.ProtoMajor != req.ProtoMajor || want.ProtoMinor != req.ProtoMinor || want.Host != req.Host ||
		want.ContentLength != req.ContentLength || want.Close != req.Close ||
		!reflect.DeepEqual(want.TransferEncoding, req.TransferEncoding) {
		t.Fatalf("read differently:\n net/http: %s %s %s host=%q len=%d close=%v te=%v\n h1Server: %s %s %s host=%q len=%d close=%v te=%v",
			want.Method, want.RequestURI, want.Proto, want.Host, want.ContentLength, want.Close, want.TransferEncoding,
			req.Method, req.RequestURI, req.Proto, req.Host, req.ContentLength, req.Close, req.TransferEncoding)
	}
	if want.URL.String() != req.URL.String() || want.URL.EscapedPath() != req.URL.EscapedPath() || want.URL.Path != req.URL.Path {
		t.Fatalf("URL: net/http %q (%q), h1Server %q (%q)", want.URL, want.URL.Path, req.URL, req.URL.Path)
	}
	sameHeader(t, want.Header, req.Header)
}

// sameHeader fails unless hermes read the header fields net/http read.
func sameHeader(t *testing.T, want, got http.Header) {
	t.Helper()
	if want == nil {
		want = http.Header{}
	}
	if !reflect.DeepEqual(map[string][]string(want), map[string][]string(got)) {
		t.Fatalf("header:\n net/http %v\n hermes   %v", want, got)
	}
}

// TestPlainPathIsParseRequestURI: a target parseHead reads without
// url.ParseRequestURI (plainPath) is one that function reads as a URL
// with that Path and nothing else. FuzzPlainPath explores further.
func TestPlainPathIsParseRequestURI(t *testing.T) {
	plain := 0
	for b := 0; b < 256; b++ {
		for _, target := range []string{"/" + string(rune(b)), "/" + string([]byte{byte(b)}), "//" + string([]byte{byte(b)}),
			"/v1/a" + string([]byte{byte(b)}) + "b/", string([]byte{byte(b)}) + "/x"} {
			if plainPath(target) {
				plain++
				samePlainURL(t, target)
			}
		}
	}
	for _, target := range []string{"/", "/v1/chat/completions", "//x//y/", "/../a/./b", "/~u/a-b_c.d", "/v1/models/gpt-4o-mini"} {
		if !plainPath(target) {
			t.Fatalf("plainPath(%q) = false", target)
		}
		samePlainURL(t, target)
	}
	for _, target := range []string{"", "*", "a/b", "/a?b", "/a%20b", "/a b", "/a+b", "/a:b", "/a;b", "/a@b", "/a#b", "http://h/a", "/é"} {
		if plainPath(target) {
			t.Fatalf("plainPath(%q) = true", target)
		}
	}
	if plain == 0 {
		t.Fatal("no target was plain")
	}
}

func samePlainURL(t testing.TB, target string) {
	t.Helper()
	want, err := url.ParseRequestURI(target)
	if err != nil {
		t.Fatalf("plainPath(%q) is true, and url.ParseRequestURI refuses it: %v", target, err)
	}
	if got := (url.URL{Path: target}); !reflect.DeepEqual(*want, got) {
		t.Fatalf("target %q: url.ParseRequestURI reads %#v, parseHead %#v", target, *want, got)
	}
}

// FuzzPlainPath: whatever target plainPath takes, url.ParseRequestURI
// reads as that Path alone.
func FuzzPlainPath(f *testing.F) {
	for _, s := range []string{"/", "/v1/chat/completions", "//a", "/a%2F", "/a?b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		if plainPath(target) {
			samePlainURL(t, target)
		}
	})
}

// FuzzParseHead: whatever head h1Server accepts, net/http reads alike.
// `go test -run '^$' -fuzz FuzzParseHead -fuzztime 1m .` explores further.
func FuzzParseHead(f *testing.F) {
	for _, tc := range headCases {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		req, he, err := parseForTest(raw)
		if err != nil || he != nil {
			return // refusing is always allowed
		}
		if _, err := http.ReadRequest(bufio.NewReader(strings.NewReader(raw))); err != nil {
			// net/http is stricter about a few URL forms than url's
			// ParseRequestURI is with the target alone; h1Server may
			// accept those, nothing else.
			if !strings.Contains(err.Error(), "invalid") {
				t.Fatalf("h1Server accepts what net/http refuses (%v):\n%q", err, raw)
			}
			return
		}
		sameAsNetHTTP(t, raw, req)
	})
}

// TestReadHeadLimits: a head longer than the limit is refused, in one
// piece or in many lines, and one that comes in pieces is read whole.
func TestReadHeadLimits(t *testing.T) {
	long := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", 10<<10) + "\r\n\r\n"
	br := bufio.NewReaderSize(strings.NewReader(long), 4<<10)
	head, _, err := readHead(br, nil, 1<<20, 1<<20)
	if err != nil || head != long {
		t.Fatalf("a 10 KB head over a 4 KB buffer: err %v, %d bytes of %d", err, len(head), len(long))
	}
	if _, _, err := readHead(bufio.NewReaderSize(strings.NewReader(long), 4<<10), nil, 8<<10, 8<<10); err != errHeadTooLarge {
		t.Fatalf("a 10 KB head with an 8 KB limit: %v, want errHeadTooLarge", err)
	}
	many := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 20000) + "\r\n"
	if _, _, err := readHead(bufio.NewReaderSize(strings.NewReader(many), 4<<10), nil, 64<<10, 64<<10); err != errHeadTooLarge {
		t.Fatalf("20,000 lines with a 64 KB limit: %v, want errHeadTooLarge", err)
	}
	if _, _, err := readHead(bufio.NewReaderSize(strings.NewReader("GET / HTTP/1.1\r\nHost"), 4<<10), nil, 1<<20, 1<<20); err != io.ErrUnexpectedEOF {
		t.Fatalf("a head cut short: %v, want io.ErrUnexpectedEOF", err)
	}

	// The line limits, with the heads in one buffer or in pieces.
	for _, size := range []int{4 << 10, 64 << 10} {
		read := func(raw string) error {
			_, _, err := readHead(bufio.NewReaderSize(strings.NewReader(raw), size), nil, maxRequestHead, maxRequestLine)
			return err
		}
		longTarget := "GET /" + strings.Repeat("a", maxRequestLine) + " HTTP/1.1\r\nHost: x\r\n\r\n"
		if err := read(longTarget); err != errLineTooLong {
			t.Errorf("buffer %d: a request line over 8 KiB: %v, want errLineTooLong", size, err)
		}
		longField := "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + strings.Repeat("a", maxHeaderLine) + "\r\n\r\n"
		if err := read(longField); err != errFieldTooLong {
			t.Errorf("buffer %d: a header line over 8 KiB: %v, want errFieldTooLong", size, err)
		}
		fits := "GET /" + strings.Repeat("a", maxRequestLine-20) + " HTTP/1.1\r\nHost: x\r\n" +
			strings.Repeat("X-Big: "+strings.Repeat("a", maxHeaderLine-10)+"\r\n", 2) + "\r\n"
		if err := read(fits); err != nil {
			t.Errorf("buffer %d: lines just under 8 KiB: %v", size, err)
		}
		many := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-Big: "+strings.Repeat("a", 4<<10)+"\r\n", 8) + "\r\n"
		if err := read(many); err != errHeadTooLarge {
			t.Errorf("buffer %d: a head over 32 KiB: %v, want errHeadTooLarge", size, err)
		}
	}
}

// TestChunkedBodyLeavesNextRequest: a chunked body with a trailer reads to
// its end, and the next request starts right after it.
func TestChunkedBodyLeavesNextRequest(t *testing.T) {
	raw := "5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: t\r\n\r\nGET /next HTTP/1.1\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	b, err := io.ReadAll(newChunkedBody(br))
	if err != nil || string(b) != "hello, world" {
		t.Fatalf("body %q, err %v", b, err)
	}
	rest, _ := io.ReadAll(br)
	if string(rest) != "GET /next HTTP/1.1\r\n" {
		t.Fatalf("after the body: %q", rest)
	}
	cut := bufio.NewReader(strings.NewReader("5\r\nhel"))
	if _, err := io.ReadAll(newChunkedBody(cut)); err != io.ErrUnexpectedEOF {
		t.Fatalf("a body cut short: %v, want io.ErrUnexpectedEOF", err)
	}
}

// chunkedCases are chunked request bodies (what follows the head), with
// whether hermes reads them to their end.
var chunkedCases = []struct {
	name string
	raw  string
	ok   bool
}{
	{"plain", "5\r\nhello\r\n0\r\n\r\n", true},
	{"extension", "5;a=b\r\nhello\r\n0\r\n\r\n", true},
	{"trailer", "5\r\nhello\r\n0\r\nX-T: 1\r\nX-U: 2\r\n\r\n", true},
	{"next request after", "0\r\nX-T: 1\r\n\r\nGET / HTTP/1.1\r\n\r\n", true},

	{"bare LF ends", "5\r\nhello\r\n0\r\n\n", false},
	{"trailer line bare LF", "0\r\n0:\n\n", false},
	{"trailer bare LF, CRLF later", "0\r\nX-T: 1\n\r\nX-U: 2\r\n\r\n", false},
	{"trailer ends in bare LF", "0\r\nX-T: 1\r\n\n", false},
	{"folded trailer", "0\r\nX-T: 1\r\n 2\r\n\r\n", false},
	{"trailer no colon", "0\r\nX-T\r\n\r\n", false},
	{"trailer control", "0\r\nX-T: a\x01\r\n\r\n", false},
	{"long trailer", "0\r\n" + strings.Repeat("X-T: aaaaaaaaaaaaaaaaaaaaaaaaa\r\n", 200) + "\r\n", false},
	{"cut short", "5\r\nhel", false},
	{"no end", "0\r\n", false},
}

// readChunkedForTest reads a chunked body the way h1Server does, and
// what the connection holds after it.
func readChunkedForTest(raw string) (body, rest string, err error) {
	br := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	b, err := io.ReadAll(newChunkedBody(br))
	if err != nil {
		return "", "", err
	}
	r, _ := io.ReadAll(br)
	return string(b), string(r), nil
}

// TestChunkedBodyAgreesWithNetHTTP: a chunked body hermes reads to its
// end, net/http reads alike, leaving the same bytes for the next request;
// the malformed ones are errors.
func TestChunkedBodyAgreesWithNetHTTP(t *testing.T) {
	for _, tc := range chunkedCases {
		t.Run(tc.name, func(t *testing.T) {
			body, rest, err := readChunkedForTest(tc.raw)
			if !tc.ok {
				if err == nil {
					t.Fatalf("read as %q, then %q; want an error", body, rest)
				}
				return
			}
			if err != nil {
				t.Fatalf("not read: %v", err)
			}
			chunkedSameAsNetHTTP(t, tc.raw, body, rest)
		})
	}
}

// chunkedSameAsNetHTTP fails unless net/http reads raw, as a request's
// chunked body, as body and leaves rest after it.
func chunkedSameAsNetHTTP(t *testing.T, raw, body, rest string) {
	t.Helper()
	br := bufio.NewReader(strings.NewReader("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + raw))
	req, err := http.ReadRequest(br)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(req.Body)
	if err != nil {
		t.Fatalf("hermes reads a body net/http refuses (%v):\n%q", err, raw)
	}
	r, _ := io.ReadAll(br)
	if string(b) != body || string(r) != rest {
		t.Fatalf("read differently:\n net/http %q, then %q\n hermes   %q, then %q", b, r, body, rest)
	}
}

// FuzzChunkedBody: whatever chunked body hermes reads, net/http reads
// alike, and both leave the same bytes after it.
func FuzzChunkedBody(f *testing.F) {
	for _, tc := range chunkedCases {
		f.Add(tc.raw)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		body, rest, err := readChunkedForTest(raw)
		if err != nil {
			return // refusing is always allowed
		}
		chunkedSameAsNetHTTP(t, raw, body, rest)
	})
}

// BenchmarkReadRequestHead: h1Server's head reading against net/http's
// ReadRequest on a typical chat request head (the sessions' hot path).
//
//	go test -run '^$' -bench ReadRequestHead -benchmem .
func BenchmarkReadRequestHead(b *testing.B) {
	raw := "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:8642\r\nUser-Agent: OpenAI/Python 1.54.0\r\n" +
		"Accept: application/json\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-local\r\n" +
		"X-Stainless-Lang: python\r\nContent-Length: 120\r\n\r\n"
	rd := strings.NewReader(raw)
	br := bufio.NewReaderSize(rd, 4<<10)
	b.Run("hermes", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			rd.Reset(raw)
			br.Reset(rd)
			head, nb, err := readHead(br, buf, maxRequestHead, maxRequestLine)
			buf = nb
			req := new(http.Request)
			if err != nil || parseHead(head, req, nil) != nil {
				b.Fatal("refused")
			}
		}
	})
	b.Run("net-http", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rd.Reset(raw)
			br.Reset(rd)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}
