package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestListenStream(t *testing.T) {
	for _, c := range []struct{ listen, stream, v6only, err string }{
		{"127.0.0.1:8642", "127.0.0.1:8642", "", ""},
		{"192.168.1.20:80", "192.168.1.20:80", "", ""},
		{":8642", "8642", "both", ""},
		{"0.0.0.0:8642", "8642", "both", ""},
		{"[::]:8642", "8642", "both", ""},
		{"[::1]:8642", "[::1]:8642", "", ""},
		{"[2001:db8::7]:443", "[2001:db8::7]:443", "", ""},
		{"localhost:8642", "", "", `names a host`},
		{"gateway.internal:8642", "", "", `"127.0.0.1:8642"`},
		{"[fe80::1%eth0]:8642", "", "", "names a host"},
		{"127.0.0.1:0", "", "", "out of range: use 1 to 65535"},
		{"127.0.0.1:70000", "", "", "out of range: use 1 to 65535"},
		{"127.0.0.1", "", "", "missing port"},
	} {
		stream, v6only, err := listenStream(c.listen)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) || !strings.Contains(err.Error(), c.listen) {
				t.Errorf("listenStream(%q) = %q, %v; want an error naming it and saying %q", c.listen, stream, err, c.err)
			}
			continue
		}
		if err != nil || stream != c.stream || v6only != c.v6only {
			t.Errorf("listenStream(%q) = %q, %q, %v; want %q, %q", c.listen, stream, v6only, err, c.stream, c.v6only)
		}
	}
}

// socketCases are the golden service and socket units of install-unit
// --socket: testdata/units/NAME.service and NAME.socket.
func socketCases() []unitCase {
	const bin = "/usr/local/bin/hermes"
	return []unitCase{
		{"user-252-socket", goldenPolicy(nil), unitOptions{Manager: managerSystemd, SystemdVersion: 252, Bin: bin, Socket: true}},
		{"system-252-socket-wildcard", goldenPolicy(func(p *Policy) { p.Gateway.Listen = ":8642" }),
			unitOptions{Manager: managerSystemd, System: true, RunAs: "alice", SystemdVersion: 252, Bin: bin, Socket: true}},
	}
}

func TestSocketUnitGolden(t *testing.T) {
	for _, c := range socketCases() {
		t.Run(c.name, func(t *testing.T) {
			for _, f := range []struct {
				ext    string
				render func(*Policy, unitOptions) ([]byte, error)
			}{{".service", renderUnit}, {".socket", renderSocketUnit}} {
				got, err := f.render(c.p, c.o)
				if err != nil {
					t.Fatal(err)
				}
				checkGoldenFile(t, filepath.Join("testdata", "units", c.name+f.ext), got, "TestSocketUnitGolden")
			}
		})
	}
	// Without --socket the service names no socket; a launchd plist has none.
	plain := must(renderUnit(goldenPolicy(nil), unitOptions{Manager: managerSystemd, SystemdVersion: 255, Bin: "/usr/local/bin/hermes"}))
	if bytes.Contains(plain, []byte(".socket")) || bytes.Contains(plain, []byte("socket=yes")) {
		t.Errorf("a unit without --socket mentions a socket unit:\n%s", plain)
	}
	if _, err := renderUnit(goldenPolicy(nil), unitOptions{Manager: managerLaunchd, Bin: "/usr/local/bin/hermes", Socket: true}); err == nil {
		t.Errorf("a launchd plist with a socket unit rendered")
	}
}

// TestSocketUnitVerify runs the service and socket units through
// systemd-analyze verify together (the service requires the socket).
func TestSocketUnitVerify(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		skipUnlessCI(t, "systemd-analyze is not installed: apt-get install systemd")
	}
	for _, c := range socketCases() {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			o := c.o
			o.Bin = filepath.Join(dir, "hermes")
			if err := os.WriteFile(o.Bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			svc, sock := filepath.Join(dir, unitName(c.p.Name)), filepath.Join(dir, socketUnitName(c.p.Name))
			os.WriteFile(svc, must(renderUnit(c.p, o)), 0o644)
			os.WriteFile(sock, must(renderSocketUnit(c.p, o)), 0o644)
			args := []string{"verify", "--man=no"}
			if !o.System {
				args = append(args, "--user")
			}
			cmd := exec.Command(analyze, append(args, sock, svc)...)
			runtime := filepath.Join(dir, "runtime")
			os.Mkdir(runtime, 0o700)
			cmd.Env = append(os.Environ(), "XDG_RUNTIME_DIR="+runtime)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			if err := cmd.Run(); err != nil || stderr.Len() > 0 {
				t.Errorf("systemd-analyze %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
			}
		})
	}
}

// TestInstallUnitSocket drives the real binary: --socket writes the socket
// unit beside the service, --print shows both, a later install without
// --socket is refused while the socket unit would stay behind, --socket
// is refused where it cannot work, and uninstall-unit takes both.
func TestInstallUnitSocket(t *testing.T) {
	e := newTestEnv(t, "")
	dir := filepath.Join(e.dir, "units")
	svc, sock := filepath.Join(dir, "hermes-test.service"), filepath.Join(dir, "hermes-test.socket")
	install := []string{"install-unit", "--systemd", "--user", "--unit-dir", dir, "--systemd-version", "252"}

	out, errOut, code := e.hermes(10*time.Second, append(install, "--socket")...)
	if code != 0 || out != "wrote: "+svc+"\nwrote: "+sock+"\n" {
		t.Fatalf("install --socket: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	service, _ := os.ReadFile(svc)
	socket, _ := os.ReadFile(sock)
	if !bytes.Contains(service, []byte("Requires=hermes-test.socket\nAfter=hermes-test.socket\n")) {
		t.Errorf("the service does not require its socket:\n%s", service)
	}
	if !bytes.Contains(socket, []byte("ListenStream="+e.addr+"\n")) {
		t.Errorf("the socket does not hold gateway.listen (%s):\n%s", e.addr, socket)
	}
	out, _, code = e.hermes(10*time.Second, append(install, "--socket")...)
	if code != 0 || out != "unchanged: "+svc+"\nunchanged: "+sock+"\n" {
		t.Errorf("second install --socket: exit %d, stdout %q", code, out)
	}
	printed, _, code := e.hermes(10*time.Second, "install-unit", "--systemd", "--user", "--print", "--socket", "--systemd-version", "252")
	if want := string(service) + "\n" + string(socket); code != 0 || printed != want {
		t.Errorf("--print --socket: exit %d, printed other than the two files:\n%s", code, strings.Join(lineDiff(want, printed), "\n"))
	}

	_, errOut, code = e.hermes(10*time.Second, install...)
	if code != exitFailure || !strings.Contains(errOut, sock) || !strings.Contains(errOut, "--socket") || !strings.Contains(errOut, "hermes: hint:") {
		t.Errorf("install without --socket over a socket unit: exit %d, stderr %q", code, errOut)
	}
	if again, _ := os.ReadFile(svc); !bytes.Equal(again, service) {
		t.Errorf("a refused install changed the service:\n%s", strings.Join(lineDiff(string(service), string(again)), "\n"))
	}

	for _, args := range [][]string{
		{"install-unit", "--launchd", "--socket", "--print"},
		{"install-unit", "--kubernetes", "--socket", "--print"},
		{"install-unit", "--compose", "--socket", "--print"},
	} {
		if _, errOut, code := e.hermes(10*time.Second, args...); code != exitUsage || !strings.Contains(errOut, "--socket") {
			t.Errorf("hermes %s: exit %d, want %d; stderr %q", strings.Join(args, " "), code, exitUsage, errOut)
		}
	}
	named := fmt.Sprintf("name = \"test\"\n[gateway]\nlisten = \"localhost:8642\"\nstate_dir = %q\n", e.stateDir)
	if err := os.WriteFile(e.policy, []byte(named), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := e.hermes(10*time.Second, "install-unit", "--systemd", "--user", "--print", "--socket"); code != exitFailure || !strings.Contains(errOut, `"localhost:8642" names a host`) {
		t.Errorf("--socket with a host name: exit %d, stderr %q", code, errOut)
	}

	out, _, code = e.hermes(10*time.Second, "uninstall-unit", "--systemd", "--user", "--unit-dir", dir, "--name", "test")
	if code != 0 || out != "removed: "+svc+"\nremoved: "+sock+"\n" {
		t.Errorf("uninstall: exit %d, stdout %q", code, out)
	}
	for _, f := range []string{svc, sock} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there after uninstall: %v", f, err)
		}
	}
}

// TestInstalledSocketUnitDrift: with --socket, the socket unit counts in
// whether the installed units still match the policy.
func TestInstalledSocketUnitDrift(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	p := goldenPolicy(func(p *Policy) { p.Name = "socketdrift" })
	bin, err := hermesExecutable()
	if err != nil {
		t.Fatal(err)
	}
	o := unitOptions{Manager: managerSystemd, Bin: bin, SystemdVersion: 255, Socket: true}
	if defaultManager() != managerSystemd {
		t.Skip("status looks for a launchd plist here")
	}
	dir, _ := unitDir(o.Manager, false)
	path, sock := filepath.Join(dir, unitName(p.Name)), filepath.Join(dir, socketUnitName(p.Name))
	os.MkdirAll(dir, 0o755)
	os.WriteFile(path, must(renderUnit(p, o)), 0o644)
	os.WriteFile(sock, must(renderSocketUnit(p, o)), 0o644)
	if got, _, differs, err := installedUnitDrift(p); got != path || differs || err != nil {
		t.Errorf("fresh units: got %q, %v, %v; want %q, false, nil", got, differs, err, path)
	}
	p.Gateway.Listen = "127.0.0.1:9999" // the service does not change; the socket does
	if _, _, differs, err := installedUnitDrift(p); !differs || err != nil {
		t.Errorf("after a listen change: %v, %v; want the socket unit to differ", differs, err)
	}
	p.Gateway.Listen = goldenPolicy(nil).Gateway.Listen
	os.Remove(sock)
	if _, _, differs, _ := installedUnitDrift(p); !differs {
		t.Errorf("a missing socket unit does not count as drift")
	}
}
