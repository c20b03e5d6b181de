package main

import (
	"bufio"
	"io"
	"net/http"
	"reflect"
	"strings"
	"testing"
)

// answerCases are upstream answers (head and body) with whether hermes
// reads them (ok) or reports them malformed.
var answerCases = []struct {
	name   string
	method string
	raw    string
	ok     bool
}{
	{"length", "POST", "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\nhello", true},
	{"chunked sse", "POST", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\ndata: \r\n3\r\nabc\r\n0\r\n\r\n", true},
	{"chunked with trailer", "POST", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: 1\r\n\r\n", true},
	{"until close", "POST", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it", true},
	{"http/1.0", "POST", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", true},
	{"http/1.0 keep-alive", "POST", "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", true},
	{"no reason", "POST", "HTTP/1.1 404\r\nContent-Length: 0\r\n\r\n", true},
	{"no content", "POST", "HTTP/1.1 204 No Content\r\n\r\n", true},
	{"not modified with length", "GET", "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n", true},
	{"head", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", true},
	{"continue", "POST", "HTTP/1.1 100 Continue\r\n\r\n", true},
	{"close", "POST", "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\nRetry-After: 1\r\n\r\nbusy", true},
	{"repeated fields", "POST", "HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nContent-Length: 0\r\n\r\n", true},
	{"same length twice", "POST", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", true},
	{"lower-case names", "POST", "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-request-id: abc\r\n\r\nok", true},
	{"bare LF", "POST", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", true},

	{"two lengths", "POST", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc", false},
	{"te and length", "POST", "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", false},
	{"gzip coding", "POST", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false},
	{"folded", "POST", "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n", false},
	{"bad status", "POST", "HTTP/1.1 2000 OK\r\n\r\n", false},
	{"http/2", "POST", "HTTP/2 200\r\n\r\n", false},
	{"garbage", "POST", "<html>hello</html>\r\n\r\n", false},
	{"signed length", "POST", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false},
}

// readAnswerForTest reads one answer, body included, the way upstreamClient
// does.
func readAnswerForTest(raw, method string) (*http.Response, string, error) {
	br := bufio.NewReaderSize(strings.NewReader(raw), 4<<10)
	resp, _, err := readUpstreamAnswer(br, method, nil, nil, nil)
	if err != nil {
		return nil, "", err
	}
	b, err := io.ReadAll(resp.Body)
	return resp, string(b), err
}

// TestUpstreamAnswerAgreesWithNetHTTP: every answer hermes reads, net/http's
// ReadResponse reads the same way, body included; the malformed ones are
// errors.
func TestUpstreamAnswerAgreesWithNetHTTP(t *testing.T) {
	for _, tc := range answerCases {
		t.Run(tc.name, func(t *testing.T) {
			resp, body, err := readAnswerForTest(tc.raw, tc.method)
			if !tc.ok {
				if err == nil {
					t.Fatalf("read as %d with body %q; want an error", resp.StatusCode, body)
				}
				if !strings.Contains(err.Error(), "upstream") {
					t.Errorf("the error should say it is the upstream's answer: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("not read: %v", err)
			}
			answerSameAsNetHTTP(t, tc.raw, tc.method, resp, body)
		})
	}
}

func answerSameAsNetHTTP(t *testing.T, raw, method string, resp *http.Response, body string) {
	t.Helper()
	want, err := http.ReadResponse(bufio.NewReader(strings.NewReader(raw)), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("hermes reads what net/http refuses (%v):\n%q", err, raw)
	}
	wb, err := io.ReadAll(want.Body)
	if err != nil {
		t.Fatalf("net/http cannot read the body (%v):\n%q", err, raw)
	}
	if want.StatusCode != resp.StatusCode || want.Status != resp.Status || want.Proto != resp.Proto ||
		want.Close != resp.Close || !reflect.DeepEqual(want.TransferEncoding, resp.TransferEncoding) {
		t.Fatalf("read differently:\n net/http: %q %s close=%v te=%v\n hermes:   %q %s close=%v te=%v",
			want.Status, want.Proto, want.Close, want.TransferEncoding, resp.Status, resp.Proto, resp.Close, resp.TransferEncoding)
	}
	if want.ContentLength != resp.ContentLength && !(want.ContentLength == -1 && resp.ContentLength == 0 && body == "") {
		t.Fatalf("length: net/http %d, hermes %d", want.ContentLength, resp.ContentLength)
	}
	if string(wb) != body {
		t.Fatalf("body: net/http %q, hermes %q", wb, body)
	}
	sameHeader(t, want.Header, resp.Header)
}

// FuzzUpstreamAnswer: whatever answer hermes reads, net/http reads alike.
// `go test -run '^$' -fuzz FuzzUpstreamAnswer -fuzztime 1m .` explores further.
func FuzzUpstreamAnswer(f *testing.F) {
	for _, tc := range answerCases {
		f.Add(tc.raw, tc.method == "HEAD")
	}
	f.Fuzz(func(t *testing.T, raw string, head bool) {
		method := "POST"
		if head {
			method = "HEAD"
		}
		resp, body, err := readAnswerForTest(raw, method)
		if err != nil {
			return // refusing is always allowed
		}
		answerSameAsNetHTTP(t, raw, method, resp, body)
	})
}
