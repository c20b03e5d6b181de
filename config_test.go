package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyErrorsNameFileLineAndKey(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		line      int
		key, msg  string
	}{
		{"unknown key", "name = \"a\"\n[drain]\ntimeuot = \"1s\"\n", 3, "drain.timeuot", "did you mean drain.timeout"},
		{"unknown table", "[gatway]\nlisten = \"x:1\"\n", 1, "gatway", "unknown key"},
		{"wrong type", "[gateway]\n\nlisten = 8642\n", 3, "gateway.listen", "wrong type"},
		{"bad duration", "[drain]\ntimeout = \"90\"\n", 2, "drain.timeout", "not a duration"},
		{"negative duration", "[drain]\ngrace = \"-1s\"\n", 2, "drain.grace", "negative"},
		{"unknown signal", "[restart]\nladder = [{ signal = \"SIGFOO\", wait = \"1s\" }]\n", 2, "restart.ladder", "unknown signal"},
		{"empty ladder", "[restart]\n\nladder = []\n", 3, "restart.ladder", "empty"},
		{"graceful rung too short", "[drain]\ntimeout = \"60s\"\n[restart]\nladder = [{ signal = \"USR1\", wait = \"30s\" }, { signal = \"KILL\", wait = \"1s\" }]\n", 4, "restart.ladder", "a drain may take 1m5s"},
		{"missing wait", "[restart]\nforce = [{ signal = \"TERM\" }]\n", 2, "restart.force", "wait is missing"},
		{"HUP rung", "[restart]\nladder = [{ signal = \"HUP\", wait = \"200s\" }]\n", 2, "restart.ladder", "reloads"},
		{"no restart delay", "[service]\nrestart_sec = \"0s\"\n", 2, "service.restart_sec", "needs a delay"},
		{"bad name", "name = \"a/b\"\n", 1, "name", "not a valid instance name"},
		{"syntax", "[drain\n", 2, "", "to end table name"},
		{"watchdog too short", "[watchdog]\ntimeout = \"1s\"\n", 2, "watchdog.timeout", "at least 2s"},
		{"heartbeat out of range", "[watchdog]\nheartbeat = \"20s\"\n", 2, "watchdog.heartbeat", "out of range"},
		{"exit flush too long", "[journal]\nexit_flush = \"10s\"\n", 2, "journal.exit_flush", "out of range"},
		{"key in env name", "[gateway]\nupstream_key_env = \"sk-abc123\"\n", 2, "gateway.upstream_key_env", "never put the key itself here"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeTemp(t, "hermes.toml", tc.src)
			_, err := loadPolicyFile(path)
			ce, ok := err.(*configError)
			if !ok {
				t.Fatalf("err = %v (%T), want *configError", err, err)
			}
			if ce.File != path || ce.Line != tc.line || ce.Key != tc.key {
				t.Errorf("got file %s line %d key %q, want %s:%d %q (%v)", ce.File, ce.Line, ce.Key, path, tc.line, tc.key, err)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("message %q lacks %q", err, tc.msg)
			}
		})
	}
}

func TestPolicyDefaultsAndOverrides(t *testing.T) {
	p, err := loadPolicyFile(writeTemp(t, "hermes.toml", `
name = "bot1"
[drain]
timeout = "20s"
grace = "2s"
[restart]
ladder = [{ signal = "SIGUSR1", wait = "auto" }, { signal = "kill", wait = "3s" }]
`))
	if err != nil {
		t.Fatal(err)
	}
	if p.Name != "bot1" || p.Drain.Timeout != 20*time.Second || p.Gateway.Listen != "127.0.0.1:8642" {
		t.Errorf("policy %+v", p)
	}
	l := p.Restart.Ladder
	if len(l) != 2 || l[0].Signal != syscall.SIGUSR1 || !l[0].Auto || l[0].Wait != 27*time.Second || l[1].Signal != syscall.SIGKILL {
		t.Errorf("ladder %+v", l)
	}
	if !strings.HasSuffix(p.Gateway.StateDir, "/bot1") {
		t.Errorf("default state dir %q is not namespaced by the instance name", p.Gateway.StateDir)
	}
	// The rendered policy loads back to the same policy.
	back, err := loadPolicyFile(writeTemp(t, "again.toml", p.render()))
	if err != nil {
		t.Fatalf("rendered policy does not load: %v\n%s", err, p.render())
	}
	if back.render() != p.render() {
		t.Errorf("render round trip differs:\n%s\n---\n%s", p.render(), back.render())
	}
}

func TestPolicyLookupOrder(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	t.Setenv("HERMES_CONFIG", "")
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(dir, "xdg"))
	os.MkdirAll(filepath.Join(dir, "xdg", "hermes"), 0o755)
	// The machine-wide file is this test's own, so a real
	// /etc/hermes/hermes.toml on the machine cannot change the answer.
	defer func(old string) { systemPolicyPath = old }(systemPolicyPath)
	systemPolicyPath = filepath.Join(dir, "etc", "hermes.toml")
	os.MkdirAll(filepath.Dir(systemPolicyPath), 0o755)
	if got, _ := findPolicy(""); got != "" {
		t.Errorf("findPolicy with no file anywhere = %q, want built-in defaults", got)
	}
	os.WriteFile(systemPolicyPath, []byte("name = \"system\"\n"), 0o600)
	if got, _ := findPolicy(""); got != systemPolicyPath {
		t.Errorf("findPolicy = %q, want the system policy %q", got, systemPolicyPath)
	}
	xdg := filepath.Join(dir, "xdg", "hermes", "hermes.toml")
	os.WriteFile(xdg, []byte("name = \"xdg\"\n"), 0o600)
	if got, _ := findPolicy(""); got != xdg {
		t.Errorf("findPolicy = %q, want %q", got, xdg)
	}
	local := filepath.Join(dir, "hermes.toml")
	os.WriteFile(local, []byte("name = \"local\"\n"), 0o600)
	if got, _ := findPolicy(""); got != local {
		t.Errorf("findPolicy = %q, want ./hermes.toml %q", got, local)
	}
	env := filepath.Join(dir, "env.toml")
	os.WriteFile(env, []byte("name = \"env\"\n"), 0o600)
	t.Setenv("HERMES_CONFIG", env)
	if got, _ := findPolicy(""); got != env {
		t.Errorf("findPolicy = %q, want $HERMES_CONFIG %q", got, env)
	}
	flag := filepath.Join(dir, "flag.toml")
	os.WriteFile(flag, []byte("name = \"flag\"\n"), 0o600)
	if got, _ := findPolicy(flag); got != flag {
		t.Errorf("findPolicy = %q, want --config %q", got, flag)
	}
	if _, err := findPolicy(filepath.Join(dir, "missing.toml")); err == nil {
		t.Error("an explicit missing policy file is not an error")
	}
}

func TestExampleIsTheDefaults(t *testing.T) {
	// hermes.toml.example documents every key with its default: loading it
	// must give exactly the built-in policy.
	p, err := loadPolicyFile("hermes.toml.example")
	if err != nil {
		t.Fatal(err)
	}
	d := defaultPolicy()
	p.Path, p.Warnings = "", nil
	d.Warnings = nil
	if p.render() != d.render() {
		t.Errorf("hermes.toml.example differs from the built-in defaults:\n%s\n---\n%s", p.render(), d.render())
	}
	src, _ := os.ReadFile("hermes.toml.example")
	for _, k := range knownKeys {
		last := k[strings.LastIndex(k, ".")+1:]
		if !strings.Contains(string(src), last+" =") {
			t.Errorf("hermes.toml.example does not document %s", k)
		}
	}
}

func TestCheckConfigExitCodes(t *testing.T) {
	e := newTestEnv(t, "")
	out, _, code := e.hermes(20*time.Second, "check-config")
	if code != exitOK || !strings.Contains(out, "# policy: "+e.policy) {
		t.Errorf("check-config = %d\n%s", code, out)
	}
	e.writePolicy("[drain]\ntimeout = 5\n")
	_, errOut, code := e.hermes(20*time.Second, "check-config")
	if code != exitConfig || !strings.Contains(errOut, "hermes.toml:6: drain.timeout") {
		t.Errorf("check-config on a bad policy = %d\n%s", code, errOut)
	}
	_, _, code = e.hermes(20*time.Second, "check-config", "--bogus")
	if code != exitUsage {
		t.Errorf("usage error exit = %d, want %d", code, exitUsage)
	}
	_, _, code = e.hermes(20*time.Second, "check-config", "-h")
	if code != exitOK {
		t.Errorf("-h exit = %d, want 0", code)
	}
}
