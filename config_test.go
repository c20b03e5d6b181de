package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
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
		{"unknown table", "[gatway]\nlisten = \"x:1\"\n", 1, "gatway", "unknown section (did you mean [gateway]?)"},
		{"wrong type", "[gateway]\n\nlisten = 8642\n", 3, "gateway.listen", `8642 is a number; write it in quotes, like "127.0.0.1:8642"`},
		{"port out of range", "[gateway]\nlisten = \"127.0.0.1:99999\"\n", 2, "gateway.listen", "port 99999 is out of range: use 1 to 65535"},
		{"port 0", "[gateway]\nlisten = \"127.0.0.1:0\"\n", 2, "gateway.listen", "port 0 is out of range"},
		{"host with a space", "[gateway]\nlisten = \"my host:80\"\n", 2, "gateway.listen", "neither an IP address nor a host name"},
		{"IPv6 without brackets", "[gateway]\nlisten = \"::1:80\"\n", 2, "gateway.listen", "too many colons"},
		{"bad duration", "[drain]\ntimeout = \"90\"\n", 2, "drain.timeout", "not a duration"},
		{"negative duration", "[drain]\ngrace = \"-1s\"\n", 2, "drain.grace", "negative"},
		{"unknown signal", "[restart]\nladder = [{ signal = \"SIGFOO\", wait = \"1s\" }]\n", 2, "restart.ladder", "unknown signal"},
		{"empty ladder", "[restart]\n\nladder = []\n", 3, "restart.ladder", "empty"},
		{"graceful rung too short", "[drain]\ntimeout = \"60s\"\n[restart]\nladder = [{ signal = \"USR1\", wait = \"30s\" }, { signal = \"KILL\", wait = \"1s\" }]\n", 4, "restart.ladder", "a drain may take 1m5s"},
		{"graceful rung within the timeout, short of the grace", "[drain]\ntimeout = \"60s\"\ngrace = \"5s\"\n[restart]\nladder = [{ signal = \"USR1\", wait = \"62s\" }, { signal = \"KILL\", wait = \"1s\" }]\n", 5, "restart.ladder", "a drain may take 1m5s"},
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

// TestPolicyErrorsForPeople: the whole message, as a person reads it
// (file:line: key: what is wrong and how to write it), for values of the
// wrong kind, keys set twice and unknown keys and sections.
func TestPolicyErrorsForPeople(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		// Values of the wrong kind.
		{"[drain]\ntimeout = 30\n", `hermes.toml:2: drain.timeout: 30 is a number; write a duration in quotes, like "30s"`},
		{"[drain]\ngrace = 1.5\n", `hermes.toml:2: drain.grace: 1.5 is a number; write a duration in quotes, like "1.5s"`},
		{"[drain]\ntimeout = true\n", `hermes.toml:2: drain.timeout: true is a boolean; write a duration in quotes, like "90s"`},
		{"[drain]\ntimeout = [30]\n", `hermes.toml:2: drain.timeout: this is a list; write a duration in quotes, like "90s"`},
		{"[drain]\ntimeout = { s = 30 }\n", `hermes.toml:2: drain.timeout: this is a table; write a duration in quotes, like "90s"`},
		{"[drain]\ntimeout = 2026-11-23\n", `hermes.toml:2: drain.timeout: 2026-11-23 is a date; write a duration in quotes, like "90s"`},
		{"name = 3\n", `hermes.toml:1: name: 3 is a number; write it in quotes, like "gateway"`},
		{"[gateway]\nlisten = 8642\n", `hermes.toml:2: gateway.listen: 8642 is a number; write it in quotes, like "127.0.0.1:8642"`},
		{"[service]\nstart_limit_burst = \"10\"\n", `hermes.toml:2: service.start_limit_burst: "10" is a string; write a whole number without quotes, like 10`},
		{"[journal]\nmax_bytes = \"1MB\"\n", `hermes.toml:2: journal.max_bytes: "1MB" is a string; write a whole number without quotes, like 1048576`},
		{"[restart]\nladder = \"TERM\"\n", `hermes.toml:2: restart.ladder: "TERM" is a string; write a list of rungs, like [{ signal = "TERM", wait = "10s" }, { signal = "KILL", wait = "5s" }]`},
		{"[restart]\nforce = [\"TERM\"]\n", `hermes.toml:2: restart.force: rung 1: "TERM" is a string; write each rung as a table, like { signal = "TERM", wait = "10s" }`},
		{"[restart]\nladder = [{ signal = 15, wait = \"1s\" }]\n", `hermes.toml:2: restart.ladder: rung 1: signal 15 is a number; write a signal name in quotes, like "TERM"`},
		{"[restart]\n\n[[restart.ladder]]\nsignal = \"TERM\"\nwait = 10\n", `hermes.toml:3: restart.ladder: rung 1: wait 10 is a number; write a duration in quotes, like "10s", or "auto"`},
		{"[restart]\nladder = [{ sig = \"TERM\", wait = \"1s\" }]\n", `hermes.toml:2: restart.ladder: a rung has an unknown key "sig" (did you mean signal?): a rung is { signal = "TERM", wait = "10s" }`},
		{"drain = 5\n", `hermes.toml:1: drain: 5 is a number; drain is a section: write [drain] on a line of its own, with its keys on the lines below`},
		// Every error at once, in line order, whatever the order of the checks.
		{"[watchdog]\ntimeout = 1\n[drain]\ntimeout = 2\n", "hermes.toml:2: watchdog.timeout: 1 is a number; write a duration in quotes, like \"1s\"\nhermes.toml:4: drain.timeout: 2 is a number; write a duration in quotes, like \"2s\""},
		{"name = \"a\"\n[drain]\ngrace = \"-1s\"\ntimeuot = \"1s\"\n[gateway]\nlisten = \"127.0.0.1:99999\"\n", "hermes.toml:3: drain.grace: \"-1s\" is negative\nhermes.toml:4: drain.timeuot: unknown key (did you mean drain.timeout?)\nhermes.toml:6: gateway.listen: \"127.0.0.1:99999\": port 99999 is out of range: use 1 to 65535 (write it like \"127.0.0.1:8642\")"},
		// Set twice.
		{"[drain]\ntimeout = \"1s\"\ngrace = \"1s\"\ntimeout = \"2s\"\n", `hermes.toml:4: drain.timeout: set twice (first on line 2): keep one`},
		{"[drain]\ntimeout = \"1s\"\n[echo]\n[drain]\ngrace = \"1s\"\n", `hermes.toml:4: drain: the section appears twice (first on line 1): put all its keys under one [drain]`},
		// Unknown keys and sections.
		{"[dran]\ntimeout = \"1s\"\n", `hermes.toml:1: dran: unknown section (did you mean [drain]?)`},
		{"[drian]\ntimeuot = \"1s\"\ngrace = \"1s\"\n", "hermes.toml:1: drian: unknown section (did you mean [drain]?)\nhermes.toml:2: drian.timeuot: unknown key (did you mean drain.timeout?)"},
		{"[zzz]\na = 1\n", `hermes.toml:1: zzz: unknown section (the sections are [gateway], [echo], [drain], [restart], [service], [lock], [watchdog], [crash_loop], [journal], [telegram], [alerts], [auth], [limits], [kubernetes], [failover], [supervise], [reattach], [[upstream]])`},
		{"[drain]\ntimout = \"1s\"\n", `hermes.toml:2: drain.timout: unknown key (did you mean drain.timeout?)`},
		{"[drain]\nfoo = 1\n", `hermes.toml:2: drain.foo: unknown key ([drain] takes timeout, grace)`},
		{"[gateway]\ntimeout = \"1s\"\n", `hermes.toml:2: gateway.timeout: unknown key (did you mean drain.timeout?)`},
		{"nmae = \"x\"\n", `hermes.toml:1: nmae: unknown key (did you mean name?)`},
	} {
		dir := t.TempDir()
		path := filepath.Join(dir, "hermes.toml")
		os.WriteFile(path, []byte(tc.src), 0o600)
		_, err := loadPolicyFile(path)
		if _, ok := err.(*configError); !ok {
			t.Errorf("%q: err = %v (%T), want a *configError", tc.src, err, err)
			continue
		}
		if got := strings.ReplaceAll(err.Error(), path, "hermes.toml"); got != tc.want {
			t.Errorf("%q:\n got %s\nwant %s", tc.src, got, tc.want)
		}
	}
}

// TestPolicyKeysAreDeclared: the keys read off filePolicy's tags
// (policykeys.go) are each there once, every one has a kind, and the kind
// agrees with the value hermes.toml.example gives it: a string key whose
// example is a duration lacks its kind:"duration" tag, and the reverse.
func TestPolicyKeysAreDeclared(t *testing.T) {
	if len(knownKeys) < 70 || len(keyKinds) != len(knownKeys) {
		t.Fatalf("%d keys, %d kinds", len(knownKeys), len(keyKinds))
	}
	var raw map[string]any
	if _, err := toml.DecodeFile("hermes.toml.example", &raw); err != nil {
		t.Fatal(err)
	}
	checked := 0
	for _, k := range knownKeys {
		if keyKinds[k] == 0 {
			t.Errorf("%s has no kind", k)
		}
		v, ok := lookupKey(raw, k)
		s, isString := v.(string)
		if !ok || !isString || s == "" {
			continue
		}
		_, err := time.ParseDuration(s)
		switch kind := keyKinds[k]; {
		case kind == kindDuration && err != nil:
			t.Errorf("%s is tagged a duration, but hermes.toml.example sets it to %q", k, s)
		case kind == kindString && err == nil:
			t.Errorf("%s = %q in hermes.toml.example is a duration: tag its field kind:\"duration\"", k, s)
		}
		checked++
	}
	if checked < 30 {
		t.Errorf("checked the kinds of %d keys against the example", checked)
	}
	// check-config's listing comes from the same declaration: each key
	// once, in its section, in the declaration's order.
	var listed []string
	section := ""
	for _, line := range strings.Split(defaultPolicy().render(), "\n") {
		if strings.HasPrefix(line, "[") {
			section = strings.Trim(strings.Fields(line)[0], "[]") + "."
			continue
		}
		if k, _, ok := strings.Cut(line, " = "); ok && !strings.HasPrefix(k, " ") {
			listed = append(listed, strings.TrimPrefix(section, ".")+k)
		}
	}
	var declared []string // the keys of a [[table]] are listed once there is one
	for _, k := range knownKeys {
		if sec, _, _ := strings.Cut(k, "."); !tableArrays()[sec] {
			declared = append(declared, k)
		}
	}
	if strings.Join(listed, " ") != strings.Join(declared, " ") {
		t.Errorf("check-config lists\n%v\nthe declaration has\n%v", listed, declared)
	}
	for sec := range tableArrays() {
		if !strings.Contains(defaultPolicy().render(), "# [["+sec+"]]: none") {
			t.Errorf("check-config does not say there is no [[%s]]", sec)
		}
	}
}

func TestEditDistance(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"status", "status", 0},
		{"stauts", "status", 1}, // two neighbours swapped
		{"stauts", "start", 2},
		{"dran", "drain", 1},
		{"", "stop", 4},
		{"ca", "abc", 3}, // optimal string alignment, not full Damerau
	} {
		if got := editDistance(tc.a, tc.b); got != tc.want {
			t.Errorf("editDistance(%q, %q) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}
