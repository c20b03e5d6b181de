package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// containerInstr is one instruction of the Containerfile.
type containerInstr struct {
	cmd  string // upper case
	args string
}

// parseContainerfile reads Dockerfile syntax as far as this repository
// uses it: comments, line continuations, one instruction per line.
func parseContainerfile(t *testing.T, path string) []containerInstr {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []containerInstr
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && cur == "") {
			continue
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur += strings.TrimSuffix(trimmed, `\`) + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		out = append(out, containerInstr{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// TestContainerfile: the Containerfile's instructions agree with the
// container's policy (deploy/container.toml) and with hermes: a scratch
// image of the static binary, not root, the state dir a volume, the
// policy by file and HERMES_CONFIG, a HEALTHCHECK that is hermes
// healthcheck with time to answer, a STOPSIGNAL that drains, and a
// documented stop timeout that outlasts the drain.
func TestContainerfile(t *testing.T) {
	p, src := loadCase(t, filepath.Join("deploy", "container.toml"))
	d, err := manifestData(p, src)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string][]string{}
	for _, in := range parseContainerfile(t, "Containerfile") {
		all[in.cmd] = append(all[in.cmd], in.args)
	}
	one := func(cmd string) string {
		t.Helper()
		if len(all[cmd]) != 1 {
			t.Fatalf("%d %s instructions, want 1: %q", len(all[cmd]), cmd, all[cmd])
		}
		return all[cmd][0]
	}
	if got := one("FROM"); got != "scratch" {
		t.Errorf("FROM %s: the image must need no base image to pull", got)
	}
	if user := one("USER"); user != fmt.Sprintf("%d:%d", containerUID, containerUID) {
		t.Errorf("USER %s, want %d:%d (not root; the manifests run as it too)", user, containerUID, containerUID)
	}
	var vols []string
	if err := json.Unmarshal([]byte(one("VOLUME")), &vols); err != nil || len(vols) != 1 || vols[0] != p.Gateway.StateDir {
		t.Errorf("VOLUME %s (%v), want [%q], the state dir of deploy/container.toml", one("VOLUME"), err, p.Gateway.StateDir)
	}
	if got := one("EXPOSE"); got != fmt.Sprint(d.Port) {
		t.Errorf("EXPOSE %s, want the listen port %d", got, d.Port)
	}
	if _, port, _ := net.SplitHostPort(p.Gateway.Listen); !strings.HasPrefix(p.Gateway.Listen, "0.0.0.0:") || port != fmt.Sprint(d.Port) {
		t.Errorf("deploy/container.toml listens on %s: want 0.0.0.0, so a published port reaches it", p.Gateway.Listen)
	}
	sig := one("STOPSIGNAL")
	if s, err := parseSignal(sig); err != nil || !drains(s) || s != syscall.SIGTERM {
		t.Errorf("STOPSIGNAL %s: want SIGTERM, which drains to exit 0", sig)
	}
	hc := one("HEALTHCHECK")
	if !strings.HasSuffix(hc, `CMD ["/hermes", "healthcheck"]`) {
		t.Errorf("HEALTHCHECK %s: want CMD [\"/hermes\", \"healthcheck\"] (exec form: there is no shell)", hc)
	}
	if m := regexp.MustCompile(`--timeout=(\S+)`).FindStringSubmatch(hc); m == nil {
		t.Errorf("HEALTHCHECK has no --timeout")
	} else if to, err := time.ParseDuration(m[1]); err != nil || to <= healthcheckTimeout {
		t.Errorf("HEALTHCHECK --timeout=%s does not outlast hermes healthcheck's own bound %s", m[1], healthcheckTimeout)
	}
	if m := regexp.MustCompile(`--start-period=(\S+)`).FindStringSubmatch(hc); m == nil || m[1] != fmt.Sprintf("%ds", ceilSeconds(p.CrashLoop.MaxDelay+startSlack, 1)) {
		t.Errorf("HEALTHCHECK --start-period: %q, want the crash-loop delay and a start", m)
	}
	if got := one("ENTRYPOINT"); got != `["/hermes"]` {
		t.Errorf("ENTRYPOINT %s", got)
	}
	if got := one("CMD"); got != `["serve"]` {
		t.Errorf("CMD %s", got)
	}
	if got := one("ENV"); got != "HERMES_CONFIG="+containerPolicyPath {
		t.Errorf("ENV %s, want HERMES_CONFIG=%s", got, containerPolicyPath)
	}
	copies := strings.Join(all["COPY"], "\n")
	for _, want := range []string{"hermes /hermes", "deploy/container.toml " + containerPolicyPath,
		"${CA_CERTS} /etc/ssl/certs/ca-certificates.crt", fmt.Sprintf("--chown=%d:%d deploy/state/ %s/", containerUID, containerUID, p.Gateway.StateDir)} {
		if !strings.Contains(copies, want) {
			t.Errorf("no COPY %s in:\n%s", want, copies)
		}
	}
	// The documented run line gives the stop what the manifests give it.
	cf, _ := os.ReadFile("Containerfile")
	if want := fmt.Sprintf("--stop-timeout %d ", d.Grace); !strings.Contains(string(cf), want) {
		t.Errorf("the Containerfile's docker run line lacks %q (the drain budget %s plus %s)", want, p.Drain.Budget(), autoWaitMargin)
	}
	// Every COPY source is in the build context .dockerignore lets through.
	ign, _ := os.ReadFile(".dockerignore")
	for _, want := range []string{"!hermes", "!ca-certificates.crt", "!deploy/container.toml", "!deploy/state/"} {
		if !strings.Contains(string(ign), want+"\n") {
			t.Errorf(".dockerignore keeps %s out of the build context", strings.TrimPrefix(want, "!"))
		}
	}
}
