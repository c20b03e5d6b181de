package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// upstreamKey is the policy's upstream key in these tests: it must reach
// the upstream, and nothing else.
const upstreamKey = "sk-upstream-0123456789abcdef"

// authGet sends GET path with key (none when "") and returns the status
// and body.
func authGet(t *testing.T, addr, path, key string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// TestClientKeys: with [auth] keys, /v1/ needs one (401 in the OpenAI shape
// without, or with another); a key made by hermes auth add works from the
// keys file, a plain one from keys_env; the client's key never goes
// upstream (the policy's does); /metrics counts requests by key name and
// no key shows in it or in the log.
func TestClientKeys(t *testing.T) {
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	keysFile := filepath.Join(t.TempDir(), "keys")
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\nupstream_key_env = \"HERMES_TEST_UPSTREAM_KEY\"\n[auth]\nkeys_file = %q\nkeys_env = \"HERMES_TEST_CLIENT_KEYS\"\n", up.url(), keysFile))

	out, errOut, code := e.hermes(10*time.Second, "auth", "add", "laptop")
	laptop := strings.TrimSpace(out)
	if code != 0 || !strings.HasPrefix(laptop, "hk-") || strings.Count(out, "\n") != 1 {
		t.Fatalf("hermes auth add: %d %q %q", code, out, errOut)
	}
	b, _ := os.ReadFile(keysFile)
	st, _ := os.Stat(keysFile)
	if !strings.HasPrefix(string(b), "laptop sha256:") || strings.Contains(string(b), laptop) || st.Mode().Perm() != 0o600 {
		t.Fatalf("the keys file (mode %v): %q; want the key's hash only, mode 0600", st.Mode().Perm(), b)
	}
	if _, errOut, code := e.hermes(10*time.Second, "auth", "add", "laptop"); code == 0 || !strings.Contains(errOut, `a key named "laptop" already`) {
		t.Fatalf("a second key of one name: %d %q", code, errOut)
	}

	phone := "phone-key-fedcba9876543210"
	g := e.startGateway("HERMES_TEST_UPSTREAM_KEY="+upstreamKey, "HERMES_TEST_CLIENT_KEYS=phone "+phone)
	for _, key := range []string{"", "hk-not-a-key-of-this-gateway"} {
		code, body, h := authGet(t, e.addr, "/v1/models", key)
		if code != 401 || !strings.Contains(body, `"code":"invalid_api_key"`) || h.Get("WWW-Authenticate") == "" {
			t.Fatalf("key %q: %d %q, want 401 invalid_api_key", key, code, body)
		}
	}
	if got := up.requests(); len(got) != 0 {
		t.Fatalf("a request without a key reached the upstream: %q", got)
	}
	for _, key := range []string{laptop, phone, phone} {
		if code, body, _ := authGet(t, e.addr, "/v1/models", key); code != 200 || body != "ok" {
			t.Fatalf("a known key: %d %q", code, body)
		}
	}
	for _, r := range up.requests() {
		if !strings.Contains(r, "\r\nAuthorization: Bearer "+upstreamKey+"\r\n") || strings.Contains(r, laptop) || strings.Contains(r, phone) {
			t.Fatalf("the upstream got the client's key, or not the policy's: %q", r)
		}
	}
	_, m, _ := authGet(t, e.addr, "/metrics", "")
	for _, want := range []string{`hermes_client_requests_total{key="laptop"} 1`, `hermes_client_requests_total{key="phone"} 2`, "hermes_client_unauthorized_total 2"} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	for where, text := range map[string]string{"/metrics": m, "the log": g.stderr.String()} {
		for _, secret := range []string{laptop, phone, upstreamKey} {
			if strings.Contains(text, secret) {
				t.Errorf("%s shows a key", where)
			}
		}
	}
	// /status and /metrics stay open without protect_status; the probes
	// always do.
	if code, _, _ := authGet(t, e.addr, "/status", ""); code != 200 {
		t.Errorf("/status without protect_status: %d", code)
	}
}

// TestClientKeyWithoutUpstreamKey: with no upstream key set, the client's
// key still never goes upstream: the request goes with no Authorization.
func TestClientKeyWithoutUpstreamKey(t *testing.T) {
	up := newFakeRawUpstream(t, func(c net.Conn, req *http.Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	key := "a-client-key-0123456789"
	e := newTestEnv(t, fmt.Sprintf("upstream = %q\nupstream_key_env = \"HERMES_TEST_UPSTREAM_KEY\"\n[auth]\nkeys_env = \"HERMES_TEST_CLIENT_KEYS\"\n", up.url()))
	e.startGateway("HERMES_TEST_CLIENT_KEYS=" + key)
	if code, body, _ := authGet(t, e.addr, "/v1/models", key); code != 200 {
		t.Fatalf("%d %q", code, body)
	}
	if r := up.requests(); len(r) != 1 || strings.Contains(strings.ToLower(r[0]), "authorization") {
		t.Fatalf("the upstream got an Authorization: %q", r)
	}
}

// TestProtectStatus: [auth] protect_status puts /status and /metrics behind
// a key; /healthz and /readyz stay open for the probes.
func TestProtectStatus(t *testing.T) {
	key := "status-key-0123456789abc"
	e := newTestEnv(t, "[auth]\nkeys_env = \"HERMES_TEST_CLIENT_KEYS\"\nprotect_status = true\n")
	e.startGateway("HERMES_TEST_CLIENT_KEYS=ops " + key)
	for _, path := range []string{"/status", "/metrics"} {
		if code, _, _ := authGet(t, e.addr, path, ""); code != 401 {
			t.Errorf("%s without a key: %d, want 401", path, code)
		}
		if code, _, _ := authGet(t, e.addr, path, key); code != 200 {
			t.Errorf("%s with a key: %d, want 200", path, code)
		}
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _, _ := authGet(t, e.addr, path, ""); code != 200 {
			t.Errorf("%s without a key: %d, want 200", path, code)
		}
	}
	// The echo upstream is behind the key as well.
	if code, _, _ := authGet(t, e.addr, "/v1/models", ""); code != 401 {
		t.Errorf("/v1/ without a key: %d, want 401", code)
	}
}

// TestAuthPolicyErrors: check-config refuses, with file, line, key and
// what to do, a gateway beyond loopback in front of an upstream with no
// keys, a keys file others can read, and a malformed key; allow_open and
// the echo upstream (no key to spend) pass.
func TestAuthPolicyErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open-keys")
	os.WriteFile(open, []byte("a 0123456789abcdef0123\n"), 0o644)
	bad := filepath.Join(dir, "bad-keys")
	os.WriteFile(bad, []byte("a sha256:zz\n"), 0o600)
	for _, tc := range []struct {
		name, policy, want string
	}{
		{"open listen", "[gateway]\nlisten = \"0.0.0.0:8642\"\nupstream = \"http://127.0.0.1:9\"\n",
			`hermes.toml:2: gateway.listen: "0.0.0.0:8642" listens beyond loopback and [auth] has no keys`},
		{"readable keys file", fmt.Sprintf("[auth]\nkeys_file = %q\n", open), "has mode 0644: others can read it"},
		{"bad hash", fmt.Sprintf("[auth]\nkeys_file = %q\n", bad), "line 1: \"a\" after sha256: is not 64 hex digits"},
		{"short key", "[auth]\nkeys_env = \"HERMES_TEST_CLIENT_KEYS\"\n", "use at least 16"},
		{"protect nothing", "[auth]\nprotect_status = true\n", "auth.protect_status: is true, but [auth] has no keys"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newTestEnv(t, "")
			os.WriteFile(e.policy, []byte(tc.policy), 0o600)
			e.env = append(e.env, "HERMES_TEST_CLIENT_KEYS=short")
			_, errOut, code := e.hermes(10*time.Second, "check-config")
			if code != exitConfig || !strings.Contains(errOut, tc.want) {
				t.Fatalf("check-config: %d %q, want 78 and %q", code, errOut, tc.want)
			}
		})
	}
	for name, policy := range map[string]string{
		"allow_open": "[gateway]\nlisten = \"0.0.0.0:8642\"\nupstream = \"http://127.0.0.1:9\"\n[auth]\nallow_open = true\n",
		"echo":       "[gateway]\nlisten = \"0.0.0.0:8642\"\n",
	} {
		e := newTestEnv(t, "")
		os.WriteFile(e.policy, []byte(policy), 0o600)
		if _, errOut, code := e.hermes(10*time.Second, "check-config"); code != 0 {
			t.Errorf("%s: check-config %d %q, want 0", name, code, errOut)
		}
	}
}

// TestNamedKeysMissingLetNobodyIn: [auth] names a variable of keys that
// holds none when the gateway starts: it says so, and refuses every /v1/
// request (it never falls back to serving everyone).
func TestNamedKeysMissingLetNobodyIn(t *testing.T) {
	e := newTestEnv(t, "[auth]\nkeys_env = \"HERMES_TEST_CLIENT_KEYS\"\n")
	g := e.startGateway()
	if code, body, _ := authGet(t, e.addr, "/v1/models", "any-key-at-all-0123456789"); code != 401 {
		t.Fatalf("with no keys read: %d %q, want 401", code, body)
	}
	g.waitLog("holds none: every request to /v1/ is refused 401", 5*time.Second)
}
