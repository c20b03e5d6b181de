package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// answerAs is a fake upstream's whole SSE answer, naming who gave it.
func answerAs(name string) func(c net.Conn, req *http.Request) {
	return func(c net.Conn, req *http.Request) {
		body := fmt.Sprintf("data: {\"from\":%q}\n\ndata: [DONE]\n\n", name)
		fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
	}
}

// statusAs answers every request with status and the extra head lines.
func statusAs(status int, head string) func(c net.Conn, req *http.Request) {
	return func(c net.Conn, req *http.Request) {
		body := fmt.Sprintf(`{"error":{"message":"from the %d upstream"}}`, status)
		fmt.Fprintf(c, "HTTP/1.1 %d %s\r\n%sContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", status, http.StatusText(status), head, len(body), body)
	}
}

// refusedURL is the URL of a port nothing listens on.
func refusedURL(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

// upstreamTables is [[upstream]] tables for name=url pairs, in order.
func upstreamTables(pairs ...string) string {
	var b strings.Builder
	for i := 0; i < len(pairs); i += 2 {
		fmt.Fprintf(&b, "\n[[upstream]]\nname = %q\nurl = %q\n", pairs[i], pairs[i+1])
	}
	return b.String()
}

func postChat(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, withoutEventIDs(string(b))
}

// TestFailoverBeforeFirstByte: one request meets an upstream that refuses
// the connection, one that answers 500, one that answers 429 with
// Retry-After, and one that sends no head within upstream_header_timeout;
// it is answered once, by the fifth, and the client sees nothing of the
// others. The 429 takes its upstream out at once, for its Retry-After;
// the others stay in (fail_after is not reached). Each upstream's
// failure is counted under its name.
func TestFailoverBeforeFirstByte(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	hold := make(chan struct{})
	s500 := newFakeRawUpstream(t, statusAs(500, ""))
	s429 := newFakeRawUpstream(t, statusAs(429, "Retry-After: 120\r\n"))
	stall := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) { <-hold })
	t.Cleanup(func() { close(hold) })
	good := newFakeRawUpstream(t, answerAs("good"))
	e := newTestEnv(t, "upstream_header_timeout = \"1s\"\n"+
		upstreamTables("refused", refusedURL(t), "broken", s500.url(), "limited", s429.url(), "silent", stall.url(), "good", good.url())+
		"\n[failover]\nattempts = 5\nfail_after = 10\n")
	g := e.startGateway()

	code, body := postChat(t, g.url, `{"model":"m","stream":true}`)
	if code != 200 || body != "data: {\"from\":\"good\"}\n\ndata: [DONE]\n\n" {
		t.Fatalf("answer %d %q, want the good upstream's, alone", code, body)
	}
	_, m := httpGet(t, g.url+"/metrics")
	for _, name := range []string{"refused", "broken", "limited", "silent"} {
		if n := metricValue(m, fmt.Sprintf(`hermes_upstream_failures_total{upstream=%q}`, name)); n != 1 {
			t.Errorf("upstream %s: %v failures counted, want 1", name, n)
		}
		if n := metricValue(m, fmt.Sprintf(`hermes_upstream_failovers_total{upstream=%q}`, name)); n != 1 {
			t.Errorf("upstream %s: %v failovers counted, want 1", name, n)
		}
	}
	if up := metricValue(m, `hermes_upstream_up{upstream="limited"}`); up != 0 {
		t.Errorf("the 429 upstream is up (%v): its Retry-After should keep it out", up)
	}
	if up := metricValue(m, `hermes_upstream_up{upstream="broken"}`); up != 1 {
		t.Errorf("the 500 upstream is out (%v) after one failure, with fail_after 10", up)
	}
	g.waitLog("upstream out level=warn upstream=limited failures=1 cooldown=2m0s", 5*time.Second)

	// The next request skips the 429's upstream (it is out, and tried
	// last): four attempts reach the good one before attempts run out.
	before := len(s429.requests())
	if code, body := postChat(t, g.url, `{"model":"m","stream":true}`); code != 200 || !strings.Contains(body, `"from":"good"`) {
		t.Fatalf("second answer %d %q", code, body)
	}
	if n := len(s429.requests()); n != before {
		t.Errorf("an upstream out for its Retry-After was asked again (%d requests, was %d)", n, before)
	}
}

// TestNoFailoverAfterFirstByte: an answer cut after its first event is
// never moved to another upstream (its start has reached the client): it
// ends visibly, and the next upstream is never asked.
func TestNoFailoverAfterFirstByte(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	cut := newFakeRawUpstream(t, cutAfter("40\r\nonly-half"))
	good := newFakeRawUpstream(t, answerAs("good"))
	e := newTestEnv(t, upstreamTables("cut", cut.url(), "good", good.url()))
	g := e.startGateway()
	code, body := postChat(t, g.url, `{"model":"m","stream":true}`)
	if code != 200 || !strings.Contains(body, "event: error") || !strings.Contains(body, "upstream_cut") || strings.Contains(body, "good") {
		t.Fatalf("a cut answer: %d %q, want its events and an upstream_cut error event, nothing from the next upstream", code, body)
	}
	if n := len(good.requests()); n != 0 {
		t.Errorf("the next upstream was asked %d times after the first byte", n)
	}
}

// TestUpstreamOutAndBackIn: an upstream that fails fail_after times in a
// row is out (requests go to the next one, not to it), and the probe
// brings it back in once it answers again; hermes events shows both.
func TestUpstreamOutAndBackIn(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	var healthy = make(chan struct{})
	flaky := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		select {
		case <-healthy:
			answerAs("flaky")(c, req)
		default:
			statusAs(503, "")(c, req)
		}
	})
	good := newFakeRawUpstream(t, answerAs("good"))
	e := newTestEnv(t, upstreamTables("flaky", flaky.url(), "good", good.url())+"\n[failover]\nfail_after = 2\ncooldown = \"200ms\"\ncooldown_max = \"400ms\"\n")
	g := e.startGateway()
	for i := 0; i < 2; i++ {
		if code, body := postChat(t, g.url, `{"model":"m"}`); code != 200 || !strings.Contains(body, `"from":"good"`) {
			t.Fatalf("request %d: %d %q, want the good upstream's answer", i, code, body)
		}
	}
	g.waitLog("upstream out level=warn upstream=flaky failures=2", 5*time.Second)
	st := waitStatusAt(t, g.url, nil, 5*time.Second, "flaky out", func(st gatewayStatus) bool {
		return len(st.Upstreams) == 2 && st.Upstreams[0].State == "out"
	})
	if !strings.Contains(st.Upstreams[0].LastError, "503") {
		t.Errorf("status of the out upstream: %+v", st.Upstreams[0])
	}
	out, _, _ := e.hermes(20*time.Second, "status")
	if !strings.Contains(out, "upstream: flaky out") {
		t.Errorf("hermes status does not show the upstream out:\n%s", out)
	}
	close(healthy)
	g.waitLog("upstream in upstream=flaky", 10*time.Second)
	if !strings.Contains(g.stderr.String(), "by=probe") {
		t.Errorf("flaky came back in, but not by its probe:\n%s", g.stderr.String())
	}
	if code, body := postChat(t, g.url, `{"model":"m"}`); code != 200 || !strings.Contains(body, `"from":"flaky"`) {
		t.Errorf("after it is back in, the first upstream answers: %d %q", code, body)
	}
	evs, _, _ := e.hermes(20*time.Second, "events", "--since", "1h")
	if !strings.Contains(evs, "upstream out") || !strings.Contains(evs, "upstream in") {
		t.Errorf("hermes events does not show the upstream's out and in:\n%s", evs)
	}
}

// TestUpstreamModels: a request for a model goes only to the upstreams
// that serve it (or serve any); a model none serves is a clear 404.
func TestUpstreamModels(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	a := newFakeRawUpstream(t, answerAs("a"))
	b := newFakeRawUpstream(t, answerAs("b"))
	e := newTestEnv(t, fmt.Sprintf("\n[[upstream]]\nname = \"a\"\nurl = %q\nmodels = [\"model-a\"]\n\n[[upstream]]\nname = \"b\"\nurl = %q\nmodels = [\"model-b\"]\n", a.url(), b.url()))
	g := e.startGateway()
	for model, want := range map[string]string{"model-a": "a", "model-b": "b"} {
		if code, body := postChat(t, g.url, fmt.Sprintf(`{"model":%q}`, model)); code != 200 || !strings.Contains(body, fmt.Sprintf(`"from":%q`, want)) {
			t.Errorf("model %s: %d %q, want upstream %s's answer", model, code, body, want)
		}
	}
	code, body := postChat(t, g.url, `{"model":"model-c"}`)
	if code != 404 || !strings.Contains(body, `"code":"model_not_found"`) || !strings.Contains(body, "model-c") {
		t.Errorf("a model no upstream serves: %d %q, want 404 model_not_found", code, body)
	}
}

// TestUpstreamPolicyErrors: the upstream tables' mistakes are named with
// their file, line and table, all at once, and change nothing.
func TestUpstreamPolicyErrors(t *testing.T) {
	e := newTestEnv(t, "upstream = \"http://127.0.0.1:1\"\n"+
		"\n[[upstream]]\nname = \"one\"\nurl = \"http://127.0.0.1:2\"\n"+
		"\n[[upstream]]\nname = \"one\"\nurl = \"ftp://x\"\nweight = -1\nkey_env = \"sk-live-123\"\n")
	_, errOut, code := e.hermes(20*time.Second, "check-config")
	if code != exitConfig {
		t.Fatalf("check-config = %d, want 78:\n%s", code, errOut)
	}
	for _, want := range []string{
		":5: gateway.upstream: is set, and so is [[upstream]]",
		":12: upstream[2].name: \"one\" is the name of upstream 1 too",
		":13: upstream[2].url: \"ftp://x\" must start with http:// or https://",
		":14: upstream[2].weight: -1",
		":15: upstream[2].key_env: is not an environment variable name",
	} {
		if !strings.Contains(errOut, want) {
			t.Errorf("check-config does not say %q:\n%s", want, errOut)
		}
	}
	if strings.Contains(errOut, "sk-live-123") {
		t.Errorf("a key put in key_env is echoed:\n%s", errOut)
	}
}

// TestTelegramFailsOver: a Telegram turn takes the same path as an HTTP
// session: the first upstream answers 500, the second sends no head within
// upstream_header_timeout, and the chat gets the third one's answer, once
// (the turn has no clock of its own that would cut the failover short).
func TestTelegramFailsOver(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	bot := newFakeBotAPI(t)
	broken := newFakeRawUpstream(t, statusAs(500, ""))
	hold := make(chan struct{})
	silent := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) { <-hold })
	t.Cleanup(func() { close(hold) })
	good := newFakeChatUpstream(t)
	e := telegramEnv(t, bot, "upstream_header_timeout = \"1s\"\n", upstreamTables("broken", broken.url(), "silent", silent.url(), "good", good.srv.URL))
	g := e.startGateway()
	g.waitLog("telegram polling", 10*time.Second)
	_, m := bot.userMessage(tgAllowed, tgAllowed, "hello over there")
	answered(t, bot, tgAllowed, m, "you said: hello over there", 30*time.Second)
	if n := len(broken.requests()); n != 1 {
		t.Errorf("the broken upstream was asked %d times, want 1", n)
	}
	if n := len(good.requests()); n != 1 {
		t.Errorf("the good upstream was asked %d times, want 1", n)
	}
	g.waitLog("upstream failover from=broken to=silent why=\"HTTP 500\"", 5*time.Second)
	g.waitLog("upstream failover from=silent to=good", 5*time.Second)
}

// TestUpstreamWeights: weighted upstreams at the head of the order share
// the first attempts: both get some of 40 requests.
func TestUpstreamWeights(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	a := newFakeRawUpstream(t, answerAs("a"))
	b := newFakeRawUpstream(t, answerAs("b"))
	e := newTestEnv(t, fmt.Sprintf("\n[[upstream]]\nname = \"a\"\nurl = %q\nweight = 1\n\n[[upstream]]\nname = \"b\"\nurl = %q\nweight = 1\n", a.url(), b.url()))
	g := e.startGateway()
	for i := 0; i < 40; i++ {
		if code, _ := postChat(t, g.url, `{"model":"m"}`); code != 200 {
			t.Fatalf("request %d: %d", i, code)
		}
	}
	na, nb := len(a.requests()), len(b.requests())
	if na+nb != 40 || na == 0 || nb == 0 {
		t.Errorf("40 requests went %d to a and %d to b: want both to get a share (the chance of none is 2^-39)", na, nb)
	}
}

// TestUpstreamAlerts: with [alerts], one upstream out for
// alerts.upstream_down_for fires upstream_out; every upstream out fires
// upstreams_out at once; both resolve when one is back in.
func TestUpstreamAlerts(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	hook := newFakeWebhook(t)
	var healthy atomic.Bool
	flaky := func(c net.Conn, req *http.Request) {
		if healthy.Load() {
			answerAs("up")(c, req)
		} else {
			statusAs(503, "")(c, req)
		}
	}
	a := newFakeRawUpstream(t, flaky)
	b := newFakeRawUpstream(t, flaky)
	e := newTestEnv(t, upstreamTables("a", a.url(), "b", b.url())+
		fmt.Sprintf("\n[failover]\nfail_after = 1\ncooldown = \"300ms\"\ncooldown_max = \"300ms\"\n\n[alerts]\nwebhook_url = %q\nupstream_down_for = \"1s\"\n", hook.srv.URL))
	g := e.startGateway()
	if code, _ := postChat(t, g.url, `{"model":"m"}`); code != 503 {
		t.Fatalf("with both upstreams failing: %d, want the last one's 503", code)
	}
	all := hook.waitAlert(t, "upstreams_out", "firing", 10*time.Second)
	if !strings.Contains(all.Summary, "every upstream is out") {
		t.Errorf("upstreams_out says %q", all.Summary)
	}
	one := hook.waitAlert(t, "upstream_out", "firing", 10*time.Second)
	if !strings.Contains(one.Summary, "has been out for 1s") {
		t.Errorf("upstream_out says %q", one.Summary)
	}
	healthy.Store(true)
	hook.waitAlert(t, "upstreams_out", "resolved", 10*time.Second)
	hook.waitAlert(t, "upstream_out", "resolved", 10*time.Second)
}
