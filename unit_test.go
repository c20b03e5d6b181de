package main

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/units")

// Awkward but legal paths: spaces, quotes, backslashes, % and $. The binary
// path has no quote or backslash (systemd refuses to run such a path).
const (
	awkwardBin    = `/opt/my apps/$HOME/100%/hermes`
	awkwardPolicy = `/etc/her mes/"quoted" 'single' \back\slash $HOME ${USER} %n 100%.toml`
	awkwardState  = `/srv/state dir/"q" \b $X %h`
)

// goldenPolicy is the built-in policy with every machine-dependent value
// fixed, so golden files are the same everywhere.
func goldenPolicy(mod func(p *Policy)) *Policy {
	p := defaultPolicy()
	p.Path = "/etc/hermes/hermes.toml"
	p.Gateway.StateDir = "/var/lib/hermes/gateway"
	p.Gateway.StateDirSet = false
	p.Lock.Dir = "/run/lock/hermes"
	if mod != nil {
		mod(p)
	}
	return p
}

type unitCase struct {
	name string
	p    *Policy
	o    unitOptions
}

func (c unitCase) file() string {
	ext := ".service"
	if c.o.Manager == managerLaunchd {
		ext = ".plist"
	}
	return filepath.Join("testdata", "units", c.name+ext)
}

func unitCases() []unitCase {
	const bin = "/usr/local/bin/hermes"
	sd := func(system bool, runAs string, v int) unitOptions {
		return unitOptions{Manager: managerSystemd, System: system, RunAs: runAs, SystemdVersion: v, Bin: bin}
	}
	ld := func(system bool, runAs string) unitOptions {
		return unitOptions{Manager: managerLaunchd, System: system, RunAs: runAs, Bin: bin}
	}
	noWatchdog := func(p *Policy) { p.Watchdog.Timeout = 0 }
	custom := func(p *Policy) { p.Gateway.StateDir, p.Gateway.StateDirSet = "/srv/hermes/state", true }
	awkward := func(p *Policy) {
		p.Path = awkwardPolicy
		p.Gateway.StateDir, p.Gateway.StateDirSet = awkwardState, true
		p.Lock.Dir = `/run/lock/a "b" %i $c/hermes`
	}
	withBin := func(o unitOptions, b string) unitOptions { o.Bin = b; return o }
	return []unitCase{
		{"user-252", goldenPolicy(nil), sd(false, "", 252)},
		{"user-255", goldenPolicy(nil), sd(false, "", 255)},
		{"user-252-nowatchdog", goldenPolicy(noWatchdog), sd(false, "", 252)},
		{"user-255-defaults", goldenPolicy(func(p *Policy) { p.Path = "" }), sd(false, "", 255)},
		{"system-252", goldenPolicy(nil), sd(true, "alice", 252)},
		{"system-255", goldenPolicy(nil), sd(true, "alice", 255)},
		{"system-255-nowatchdog-root", goldenPolicy(noWatchdog), sd(true, "", 255)},
		{"system-252-statedir", goldenPolicy(custom), sd(true, "hermes", 252)},
		{"system-252-fractions", goldenPolicy(func(p *Policy) {
			p.Service.RestartSec = 1500 * time.Millisecond
			p.Drain.Timeout = 2500 * time.Millisecond
			p.Watchdog.Timeout = 2*time.Second + 250*time.Millisecond
		}), sd(true, "", 252)},
		{"user-255-awkward", goldenPolicy(awkward), withBin(sd(false, "", 255), awkwardBin)},
		{"system-252-awkward", goldenPolicy(awkward), withBin(sd(true, "alice", 252), awkwardBin)},
		{"launchd-user", goldenPolicy(func(p *Policy) { p.Gateway.StateDir = "/Users/alice/.local/state/hermes/gateway" }), ld(false, "")},
		{"launchd-system", goldenPolicy(custom), ld(true, "_hermes")},
		{"launchd-fractions", goldenPolicy(func(p *Policy) {
			p.Service.RestartSec = 1500 * time.Millisecond
			p.Drain.Timeout = 2500 * time.Millisecond
		}), ld(false, "")},
		{"launchd-awkward", goldenPolicy(awkward), withBin(ld(false, ""), `/Applications/<&"Her'mes">/`+"\\ $HOME %n/hermes")},
	}
}

func TestUnitGolden(t *testing.T) {
	for _, c := range unitCases() {
		t.Run(c.name, func(t *testing.T) {
			got, err := renderUnit(c.p, c.o)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(c.file(), got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(c.file())
			if err != nil {
				t.Fatalf("%v (refresh with: go test -run TestUnitGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs (refresh with -update if this is meant):\n%s", c.file(), strings.Join(lineDiff(string(want), string(got)), "\n"))
			}
		})
	}
}

// TestUnitValues checks the values that matter against the policy, so a
// golden file refreshed by mistake cannot hide a wrong timeout.
func TestUnitValues(t *testing.T) {
	p := goldenPolicy(func(p *Policy) {
		p.Drain.Timeout, p.Drain.Grace = 40*time.Second, 3*time.Second
		p.Service.RestartSec = 2 * time.Second
		p.CrashLoop.MaxDelay = time.Minute
		p.Watchdog.Timeout = 7 * time.Second
	})
	for _, c := range []struct {
		o    unitOptions
		want []string
		not  []string
	}{
		{unitOptions{Manager: managerSystemd, SystemdVersion: 252, Bin: "/b/hermes"},
			[]string{"TimeoutStopSec=48s", "TimeoutStartSec=90s", "RestartSec=2s", "WatchdogSec=14s",
				"SuccessExitStatus=75", "RestartForceExitStatus=75", "RestartPreventExitStatus=78",
				"KillMode=mixed", "Type=notify", "Restart=on-failure", "WantedBy=default.target",
				`Description=hermes gateway "gateway"`},
			[]string{"RestartSteps", "RestartMaxDelaySec", "User=", "ProtectSystem", "StateDirectory", "Description=hermes gateway gateway"}},
		{unitOptions{Manager: managerSystemd, System: true, RunAs: "bob", SystemdVersion: 254, Bin: "/b/hermes"},
			[]string{"RestartSteps=8", "RestartMaxDelaySec=300s", "User=bob", "StateDirectory=hermes/gateway",
				"ProtectSystem=strict", "PrivateTmp=yes", "NoNewPrivileges=yes", `ReadWritePaths="-/run/lock"`,
				"WantedBy=multi-user.target"},
			nil},
	} {
		got, err := renderUnit(p, c.o)
		if err != nil {
			t.Fatal(err)
		}
		lines := "\n" + string(got)
		for _, w := range c.want {
			if !strings.Contains(lines, "\n"+w+"\n") {
				t.Errorf("%s unit has no line %q", c.o.scope(), w)
			}
		}
		for _, n := range c.not {
			if strings.Contains(lines, "\n"+n) {
				t.Errorf("%s unit has %q", c.o.scope(), n)
			}
		}
	}
}

func TestUnitRejectsPaths(t *testing.T) {
	for _, c := range []struct{ bin, policy, want string }{
		{"/b/hermes", "/etc/hermes\n[Service]\nExecStartPre=/bin/rm.toml", "control character"},
		{"/b/hermes", "/etc/\x00.toml", "control character"},
		{"/b/hermes", "/etc/\xff.toml", "UTF-8"},
		{"/b/hermes", "relative.toml", "absolute"},
		{`/b/"x"/hermes`, "/etc/h.toml", "systemd cannot run"},
		{`/b/x\y/hermes`, "/etc/h.toml", "systemd cannot run"},
	} {
		p := goldenPolicy(func(p *Policy) { p.Path = c.policy })
		_, err := renderUnit(p, unitOptions{Manager: managerSystemd, Bin: c.bin})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("bin %q policy %q: got error %v, want one saying %q", c.bin, c.policy, err, c.want)
		}
	}
}

// TestUnitVerify runs every generated unit through systemd-analyze verify,
// with the binary path made real (verify checks it is executable), and
// fails on any output on stderr: verify exits 0 for unknown keys and bad
// values.
func TestUnitVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		skipUnlessCI(t, "systemd-analyze is not installed: apt-get install systemd")
	}
	local, err := systemdVersion()
	if err != nil {
		skipUnlessCI(t, "no local systemd version: %v", err)
	}
	for _, c := range unitCases() {
		if c.o.Manager != managerSystemd {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			o := c.o
			o.Bin = filepath.Join(dir, strings.TrimPrefix(c.o.Bin, "/"))
			if err := os.MkdirAll(filepath.Dir(o.Bin), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(o.Bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			got, err := renderUnit(c.p, o)
			if err != nil {
				t.Fatal(err)
			}
			file := filepath.Join(dir, unitName(c.p.Name))
			if err := os.WriteFile(file, got, 0o644); err != nil {
				t.Fatal(err)
			}
			args := []string{"verify", "--man=no"}
			if !o.System {
				args = append(args, "--user")
			}
			cmd := exec.Command(analyze, append(args, file)...)
			runtime := filepath.Join(dir, "runtime")
			os.Mkdir(runtime, 0o700)
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err = cmd.Run()
			complaints := stderr.String()
			if local < systemdStepsVersion && c.o.SystemdVersion >= systemdStepsVersion {
				// A unit for a newer systemd, checked by this older one: the
				// two keys it does not know yet, and nothing else.
				var rest []string
				for _, l := range strings.Split(strings.TrimSpace(complaints), "\n") {
					if !strings.Contains(l, "Unknown key 'RestartSteps'") && !strings.Contains(l, "Unknown key 'RestartMaxDelaySec'") {
						rest = append(rest, l)
					}
				}
				if got := strings.Count(complaints, "Unknown key 'Restart"); got != 2 {
					t.Errorf("systemd %d should know neither RestartSteps nor RestartMaxDelaySec; got %d complaints:\n%s", local, got, complaints)
				}
				complaints = strings.TrimSpace(strings.Join(rest, "\n"))
			}
			if err != nil || complaints != "" {
				t.Errorf("systemd-analyze %s: %v\n%s\nunit:\n%s", strings.Join(args, " "), err, complaints, got)
			}
		})
	}
}

// TestPlistRoundTrip parses every generated plist with python3's plistlib
// (what launchd's format is checked with here) and compares it key by key
// with what the policy asks for.
func TestPlistRoundTrip(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	python, err := exec.LookPath("python3")
	if err != nil {
		skipUnlessCI(t, "python3 is not installed: apt-get install python3")
	}
	for _, c := range unitCases() {
		if c.o.Manager != managerLaunchd {
			continue
		}
		t.Run(c.name, func(t *testing.T) {
			got, err := renderUnit(c.p, c.o)
			if err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(python, "-c", "import json, plistlib, sys; print(json.dumps(plistlib.loads(sys.stdin.buffer.read())))")
			cmd.Stdin = bytes.NewReader(got)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			out, err := cmd.Output()
			if err != nil {
				t.Fatalf("plistlib: %v\n%s\nplist:\n%s", err, stderr.String(), got)
			}
			var parsed map[string]any
			if err := json.Unmarshal(out, &parsed); err != nil {
				t.Fatal(err)
			}
			args := []any{c.o.Bin, "serve"}
			if c.p.Path != "" {
				args = append(args, "--config", c.p.Path)
			}
			log := c.p.Gateway.StateDir + "/gateway.log"
			want := map[string]any{
				"Label":                "dev.hermes." + c.p.Name,
				"ProgramArguments":     args,
				"KeepAlive":            map[string]any{"SuccessfulExit": false, "Crashed": true},
				"ThrottleInterval":     float64((c.p.Service.RestartSec + time.Second - 1) / time.Second),
				"ExitTimeOut":          float64((c.p.Drain.Budget() + autoWaitMargin + time.Second - 1) / time.Second),
				"RunAtLoad":            true,
				"ProcessType":          "Standard",
				"StandardOutPath":      log,
				"StandardErrorPath":    log,
				"EnvironmentVariables": map[string]any{"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"},
			}
			if c.o.System && c.o.RunAs != "" {
				want["UserName"] = c.o.RunAs
			}
			for k, w := range want {
				if g, ok := parsed[k]; !ok || !reflect.DeepEqual(g, w) {
					t.Errorf("%s = %#v, want %#v", k, g, w)
				}
			}
			for k := range parsed {
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected key %s", k)
				}
			}
		})
	}
}

// sdUnquote is a model of how systemd reads an ExecStart= or ReadWritePaths=
// value: specifiers first ("%%" is "%"; any other specifier fails here),
// then words split on whitespace with double quotes and C escapes, then, for
// ExecStart arguments, "$$" is "$" (a lone "$NAME" would be substituted:
// fail). Only the escapes hermes writes are modelled.
func sdUnquote(v string, dollars bool) ([]string, error) {
	var spec strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '%' {
			if i+1 < len(v) && v[i+1] == '%' {
				spec.WriteByte('%')
				i++
				continue
			}
			return nil, fmt.Errorf("specifier in %q", v)
		}
		spec.WriteByte(v[i])
	}
	s := spec.String()
	var words []string
	for i := 0; i < len(s); {
		if s[i] == ' ' || s[i] == '\t' {
			i++
			continue
		}
		var w strings.Builder
		quoted := false
		for ; i < len(s); i++ {
			ch := s[i]
			if !quoted && (ch == ' ' || ch == '\t') {
				break
			}
			switch {
			case ch == '"':
				quoted = !quoted
			case ch == '\\':
				if i+1 >= len(s) || !strings.ContainsRune(`\"'`, rune(s[i+1])) {
					return nil, fmt.Errorf("unmodelled escape in %q", s)
				}
				i++
				w.WriteByte(s[i])
			default:
				w.WriteByte(ch)
			}
		}
		if quoted {
			return nil, fmt.Errorf("unterminated quote in %q", s)
		}
		words = append(words, w.String())
	}
	if dollars {
		for n := 1; n < len(words); n++ {
			w := words[n]
			var out strings.Builder
			for i := 0; i < len(w); i++ {
				if w[i] == '$' {
					if i+1 < len(w) && w[i+1] == '$' {
						i++
					} else if i+1 < len(w) && (w[i+1] == '{' || w[i+1] == '_' || (w[i+1]|0x20 >= 'a' && w[i+1]|0x20 <= 'z')) {
						return nil, fmt.Errorf("variable substitution in %q", w)
					}
				}
				out.WriteByte(w[i])
			}
			words[n] = out.String()
		}
	}
	return words, nil
}

// unitShape is the directive keys of a unit in order, and its values by key.
func unitShape(t testing.TB, unit string) ([]string, map[string]string) {
	var keys []string
	vals := map[string]string{}
	for _, line := range strings.Split(unit, "\n") {
		if strings.HasSuffix(line, `\`) {
			t.Fatalf("line ends in a backslash (continues): %q", line)
		}
		if line == "" || line[0] == '#' {
			continue
		}
		if line[0] == '[' {
			keys = append(keys, line)
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("not a directive: %q", line)
		}
		keys = append(keys, k)
		vals[k] = v
	}
	return keys, vals
}

// plistShape is a plist's keys in order and its strings in order.
func plistShape(t testing.TB, plist []byte) (keys, strs []string) {
	d := xml.NewDecoder(bytes.NewReader(plist))
	var stack []string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return keys, strs
		}
		if err != nil {
			t.Fatalf("plist is not XML: %v\n%s", err, plist)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			stack = append(stack, tok.Name.Local)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			if len(stack) == 0 {
				continue
			}
			switch stack[len(stack)-1] {
			case "key":
				keys = append(keys, string(tok))
			case "string":
				strs = append(strs, string(tok))
			}
		}
	}
}

// FuzzUnitEscape: whatever a path holds, it is either refused or carried
// whole, without adding a directive, a line or a plist key.
func FuzzUnitEscape(f *testing.F) {
	for _, s := range []string{"x", "a b", `q"uote`, "it's", `back\slash`, `end\`, "100%", "%n%%", "$HOME", "$$", "${X}",
		"new\nline", "[Service]", "x\nExecStartPre=/bin/false", "-->", "<key>Evil</key>", "&amp;", "]]>", "\r", "é", "\ufeff"} {
		f.Add(s)
	}
	render := func(t *testing.T, s string, manager string, system bool) (*Policy, unitOptions, []byte, error) {
		p := goldenPolicy(func(p *Policy) {
			p.Path = filepath.Clean("/etc/" + s + ".toml")
			p.Gateway.StateDir, p.Gateway.StateDirSet = filepath.Clean("/srv/"+s), true
			p.Lock.Dir = filepath.Clean("/run/" + s + "/lock")
		})
		o := unitOptions{Manager: manager, System: system, SystemdVersion: 255, Bin: filepath.Clean("/opt/" + s + "/hermes")}
		b, err := renderUnit(p, o)
		return p, o, b, err
	}
	baseUnit, _ := unitShape(f, string(must(renderUnit(goldenPolicy(func(p *Policy) {
		p.Gateway.StateDir, p.Gateway.StateDirSet = "/srv/x", true
	}), unitOptions{Manager: managerSystemd, System: true, SystemdVersion: 255, Bin: "/opt/x/hermes"}))))
	basePlistKeys, _ := plistShape(f, must(renderUnit(goldenPolicy(nil), unitOptions{Manager: managerLaunchd, Bin: "/opt/x/hermes"})))
	f.Fuzz(func(t *testing.T, s string) {
		p, o, unit, err := render(t, s, managerSystemd, true)
		if err == nil {
			keys, vals := unitShape(t, string(unit))
			if !reflect.DeepEqual(keys, baseUnit) {
				t.Fatalf("directives changed for %q:\n%s", s, unit)
			}
			argv, err := sdUnquote(vals["ExecStart"], true)
			if err != nil {
				t.Fatal(err)
			}
			// systemd substitutes no variables in the executable's path.
			if want := []string{o.Bin, "serve", "--config", p.Path}; !reflect.DeepEqual(argv, want) {
				t.Fatalf("ExecStart carries %q, want %q", argv, want)
			}
			rw, err := sdUnquote(vals["ReadWritePaths"], false)
			if err != nil {
				t.Fatal(err)
			}
			if want := []string{p.Gateway.StateDir, "-" + filepath.Dir(p.Lock.Dir)}; !reflect.DeepEqual(rw, want) {
				t.Fatalf("ReadWritePaths carries %q, want %q", rw, want)
			}
		}
		p, o, plist, err := render(t, s, managerLaunchd, false)
		if err != nil {
			return
		}
		keys, strs := plistShape(t, plist)
		if !reflect.DeepEqual(keys, basePlistKeys) {
			t.Fatalf("plist keys changed for %q: %q", s, keys)
		}
		if want := []string{"dev.hermes.gateway", o.Bin, "serve", "--config", p.Path}; !reflect.DeepEqual(strs[:len(want)], want) {
			t.Fatalf("plist strings %q, want %q first", strs, want)
		}
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// TestInstallUnitWrite drives the real binary: write, unchanged, a change
// shown as a diff, --print touching nothing, and uninstall refusing a file
// hermes did not write.
func TestInstallUnitWrite(t *testing.T) {
	e := newTestEnv(t, "[drain]\ntimeout = \"2s\"\n")
	dir := filepath.Join(e.dir, "units")
	path := filepath.Join(dir, "hermes-test.service")
	install := []string{"install-unit", "--systemd", "--user", "--unit-dir", dir, "--systemd-version", "252"}

	out, errOut, code := e.hermes(10*time.Second, install...)
	if code != 0 || out != "wrote: "+path+"\n" {
		t.Fatalf("first install: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	first, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	content, _ := os.ReadFile(path)
	if !bytes.Contains(content, []byte("TimeoutStopSec=12s\n")) {
		t.Errorf("unit does not derive TimeoutStopSec from the drain (2s + 5s grace + 5s):\n%s", content)
	}

	out, _, code = e.hermes(10*time.Second, install...)
	if code != 0 || out != "unchanged: "+path+"\n" {
		t.Fatalf("second install: exit %d, stdout %q", code, out)
	}
	if again, _ := os.Stat(path); !os.SameFile(first, again) || !again.ModTime().Equal(first.ModTime()) {
		t.Errorf("an unchanged unit was rewritten")
	}

	e.writePolicy("[drain]\ntimeout = \"2s\"\n[service]\nrestart_sec = \"2s\"\n")
	out, _, code = e.hermes(10*time.Second, install...)
	want := "updated: " + path + "\n    - RestartSec=5s\n    + RestartSec=2s\n"
	if code != 0 || out != want {
		t.Fatalf("changed install: exit %d, stdout %q, want %q", code, out, want)
	}

	printed, _, code := e.hermes(10*time.Second, "install-unit", "--systemd", "--user", "--print", "--systemd-version", "252")
	content, _ = os.ReadFile(path)
	if code != 0 || printed != string(content) {
		t.Errorf("--print: exit %d, printed a different unit than install-unit wrote:\n%s", code, strings.Join(lineDiff(string(content), printed), "\n"))
	}
	if _, err := os.Stat(filepath.Join(e.dir, "xdg-config", "systemd")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--print touched the user unit dir: %v", err)
	}

	foreign := filepath.Join(e.dir, "foreign")
	os.MkdirAll(foreign, 0o755)
	os.WriteFile(filepath.Join(foreign, "hermes-test.service"), []byte("[Service]\nExecStart=/bin/true\n"), 0o644)
	_, errOut, code = e.hermes(10*time.Second, "uninstall-unit", "--systemd", "--user", "--unit-dir", foreign)
	if code != exitFailure || !strings.Contains(errOut, "not written by hermes install-unit") || !strings.Contains(errOut, "hermes: hint:") {
		t.Errorf("uninstall of a foreign unit: exit %d, stderr %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(foreign, "hermes-test.service")); err != nil {
		t.Errorf("a foreign unit was removed: %v", err)
	}
	_, errOut, code = e.hermes(10*time.Second, "install-unit", "--systemd", "--user", "--unit-dir", foreign, "--systemd-version", "252")
	if code != exitFailure || !strings.Contains(errOut, "not written by hermes install-unit") {
		t.Errorf("install over a foreign unit: exit %d, stderr %q", code, errOut)
	}

	out, _, code = e.hermes(10*time.Second, "uninstall-unit", "--systemd", "--user", "--unit-dir", dir)
	if code != 0 || out != "removed: "+path+"\n" {
		t.Errorf("uninstall: exit %d, stdout %q", code, out)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("unit still there after uninstall: %v", err)
	}
	out, _, code = e.hermes(10*time.Second, "uninstall-unit", "--systemd", "--user", "--unit-dir", dir, "--name", "test")
	if code != 0 || out != "not installed: "+path+"\n" {
		t.Errorf("second uninstall: exit %d, stdout %q", code, out)
	}
}

func TestInstallUnitUsage(t *testing.T) {
	e := newTestEnv(t, "")
	for _, args := range [][]string{
		{"install-unit", "--systemd", "--launchd", "--print"},
		{"install-unit", "--user", "--system", "--print"},
		{"install-unit", "--print", "--enable"},
		{"install-unit", "--user", "--run-as", "bob", "--print"},
		{"install-unit", "extra"},
		{"uninstall-unit", "--name", "no/slash"},
	} {
		if _, errOut, code := e.hermes(10*time.Second, args...); code != exitUsage {
			t.Errorf("hermes %s: exit %d, want %d; stderr %q", strings.Join(args, " "), code, exitUsage, errOut)
		}
	}
}

// TestUnitNoSecrets: the upstream key and the bot token are in the
// environment of install-unit; neither may reach a unit or plist.
func TestUnitNoSecrets(t *testing.T) {
	e := newTestEnv(t, "[lock]\ntoken_env = \"BOT_TOKEN\"\n")
	e.env = append(e.env, "HERMES_UPSTREAM_KEY=sk-secret-upstream-key", "BOT_TOKEN=123456:secret-bot-token")
	for _, args := range [][]string{
		{"--systemd", "--user"}, {"--systemd", "--system", "--run-as", "root"}, {"--launchd", "--user"}, {"--launchd", "--system"},
	} {
		out, errOut, code := e.hermes(10*time.Second, append([]string{"install-unit", "--print", "--systemd-version", "255"}, args...)...)
		if code != 0 {
			t.Fatalf("install-unit %v: exit %d: %s", args, code, errOut)
		}
		if strings.Contains(out, "sk-secret-upstream-key") || strings.Contains(out, "secret-bot-token") {
			t.Errorf("install-unit %v wrote a secret:\n%s", args, out)
		}
	}
}

func TestInstalledUnitDrift(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	p := goldenPolicy(func(p *Policy) { p.Name = fmt.Sprintf("drift-%d", os.Getpid()) })

	if path, _, differs, err := installedUnitDrift(p); path != "" || differs || err != nil {
		t.Fatalf("nothing installed: got %q, %v, %v", path, differs, err)
	}
	bin, err := hermesExecutable()
	if err != nil {
		t.Fatal(err)
	}
	o := unitOptions{Manager: defaultManager(), Bin: bin, SystemdVersion: 255}
	dir, _ := unitDir(o.Manager, false)
	path := filepath.Join(dir, unitFileName(o.Manager, p.Name))
	os.MkdirAll(dir, 0o755)
	if err := os.WriteFile(path, must(renderUnit(p, o)), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, _, differs, err := installedUnitDrift(p); got != path || differs || err != nil {
		t.Errorf("fresh unit: got %q, %v, %v; want %q, false, nil", got, differs, err, path)
	}
	p.Drain.Timeout = 3 * time.Minute
	if got, _, differs, err := installedUnitDrift(p); got != path || !differs || err != nil {
		t.Errorf("after a drain change: got %q, %v, %v; want %q, true, nil", got, differs, err, path)
	}
	os.WriteFile(path, []byte("[Service]\nExecStart=/bin/true\n"), 0o644)
	if _, _, _, err := installedUnitDrift(p); err == nil {
		t.Errorf("a foreign unit gave no error")
	}
}

// TestStatusReportsUnitDrift: `hermes status` says when the installed unit
// no longer matches the policy, and how to rewrite it.
func TestStatusReportsUnitDrift(t *testing.T) {
	e := newTestEnv(t, "[drain]\ntimeout = \"20s\"\n")
	if out, errOut, code := e.hermes(20*time.Second, "install-unit", "--systemd", "--user"); code != 0 {
		t.Fatalf("install-unit = %d:\n%s%s", code, out, errOut)
	}
	out, _, _ := e.hermes(20*time.Second, "status")
	if !strings.Contains(out, "(matches the policy)") {
		t.Errorf("status right after install-unit:\n%s", out)
	}
	e.writePolicy("[drain]\ntimeout = \"40s\"\n") // TimeoutStopSec must follow
	out, _, _ = e.hermes(20*time.Second, "status", "--json")
	var st statusJSON
	if err := json.Unmarshal([]byte(out), &st); err != nil || !st.UnitDiffers || !strings.HasSuffix(st.UnitFile, "hermes-test.service") {
		t.Errorf("status --json after a policy change: %+v (%v)\n%s", st, err, out)
	}
	out, _, _ = e.hermes(20*time.Second, "status")
	if !strings.Contains(out, "no longer matches the policy; rewrite it with: hermes install-unit") {
		t.Errorf("status after a policy change:\n%s", out)
	}
}
