package main

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strings"
)

// Checks install-unit makes before it writes a unit that could not work,
// and what it says when the service manager cannot be reached.

// checkSystemUnitPaths refuses a system unit whose binary or policy lives
// where the unit cannot see it: under /tmp or /var/tmp, which PrivateTmp=yes
// (in every system unit install-unit writes) replaces with an empty
// directory of the service's own.
func checkSystemUnitPaths(bin string, p *Policy) error {
	type file struct{ what, path string }
	var bad []file
	for _, f := range []file{{"the hermes binary", bin}, {"the policy file", p.Path}, {"lock.token_file", p.Lock.TokenFile}} {
		if f.path == "" {
			continue
		}
		path := f.path
		if r, err := filepath.EvalSymlinks(path); err == nil {
			path = r
		}
		if underTmp(path) {
			bad = append(bad, file{f.what, path})
		}
	}
	if len(bad) == 0 {
		return nil
	}
	var lines, fixes []string
	for _, f := range bad {
		lines = append(lines, fmt.Sprintf("%s is %s", f.what, f.path))
		switch f.what {
		case "the hermes binary":
			fixes = append(fixes, "sudo install -m 0755 "+shellQuote(f.path)+" /usr/local/bin/hermes")
		case "the policy file":
			fixes = append(fixes, "sudo install -D -m 0640 "+shellQuote(f.path)+" /etc/hermes/hermes.toml")
		default:
			fixes = append(fixes, "move "+shellQuote(f.path)+" out of /tmp and set lock.token_file to the new path")
		}
	}
	cfg := " --config /etc/hermes/hermes.toml"
	if p.Path == "" {
		cfg = ""
	}
	return withHint(fmt.Errorf("a system unit cannot use files under /tmp or /var/tmp: it runs with PrivateTmp=yes, which gives it an empty /tmp of its own\n%s",
		strings.Join(lines, "\n")),
		"copy them out first:\n%s\nthen: sudo /usr/local/bin/hermes install-unit --system%s --enable",
		strings.Join(fixes, "\n"), cfg)
}

func underTmp(path string) bool {
	for _, d := range []string{"/tmp", "/var/tmp"} {
		if path == d || strings.HasPrefix(path, d+"/") {
			return true
		}
	}
	return false
}

// checkRunAs makes sure the user a system unit names exists here: systemd
// would fail the start with "Failed to determine user credentials".
func checkRunAs(name string) error {
	if name == "" {
		return nil
	}
	if _, err := user.Lookup(name); err == nil {
		return nil
	}
	create := "sudo useradd --system --home-dir /var/lib/hermes --shell /usr/sbin/nologin " + shellQuote(name)
	if runtime.GOOS == "darwin" {
		create = "create the user in System Settings > Users & Groups (or with sysadminctl -addUser " + shellQuote(name) + ")"
	}
	return withHint(usageErr("--run-as %s: there is no user %q on this host", name, name),
		"create it first: %s\nor run the gateway as someone who exists: --run-as USER", create)
}

// userBusProblem says why `systemctl --user` cannot reach a user service
// manager, or "" when it can (or it is not the case that it cannot).
func userBusProblem() string {
	if runtime.GOOS != "linux" {
		return ""
	}
	rt := os.Getenv("XDG_RUNTIME_DIR")
	if rt == "" {
		return "XDG_RUNTIME_DIR is not set: this session has no user service manager (a su or sudo shell, a cron job, an ssh session without systemd --user)"
	}
	if _, err := os.Stat(filepath.Join(rt, "bus")); err != nil {
		if _, err := os.Stat(filepath.Join(rt, "systemd", "private")); err != nil {
			return "no user service manager is running for this user (" + rt + "/bus is missing)"
		}
	}
	return ""
}

// userBusHint is what to do when a user unit's manager is out of reach.
func userBusHint(name string) string {
	u := "$USER"
	if cu, err := user.Current(); err == nil {
		u = cu.Username
	}
	return fmt.Sprintf("give %s a user service manager that outlives logins: sudo loginctl enable-linger %s\n"+
		"then, in a login shell of %s: systemctl --user daemon-reload && systemctl --user enable --now %s\n"+
		"or install a system unit instead: sudo hermes install-unit --system --enable",
		u, u, u, unitName(name))
}

// userManagerReachable reports whether systemctl --user works here.
func userManagerReachable() bool {
	if userBusProblem() != "" {
		return false
	}
	return exec.Command("systemctl", "--user", "show-environment").Run() == nil
}

// stopInstanceByName stops the running gateway of that instance, if one
// runs, as `hermes stop --name` does.
func stopInstanceByName(name string) error {
	t, err := resolveName("stop", name, false)
	if err != nil {
		return nil // no such gateway runs: nothing to stop
	}
	if t.entry == nil || !t.entry.Alive {
		return nil
	}
	fmt.Printf("stopping its gateway (pid %d) the way hermes stop does\n", t.entry.PID)
	return restartOrStop(t, false, true, true)
}
