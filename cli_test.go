package main

import (
	"strings"
	"testing"
	"time"
)

// The command line: help, bad flags and stray arguments, run on the real
// binary (real stdout, stderr and exit codes).

// TestHelpForEachCommand: 'hermes help X' prints what 'hermes X -h' prints,
// on stdout, exit 0, for every command the general help lists.
func TestHelpForEachCommand(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "")
	names := commandNames()
	if len(names) < 10 {
		t.Fatalf("commandNames() = %q: the command table is short", names)
	}
	for _, cmd := range names {
		t.Run(cmd, func(t *testing.T) {
			helpOut, helpErr, helpCode := e.hermes(20*time.Second, "help", cmd)
			dashOut, dashErr, dashCode := e.hermes(20*time.Second, cmd, "-h")
			if helpCode != exitOK || dashCode != exitOK || helpErr != "" || dashErr != "" {
				t.Errorf("help %s = %d %q, %s -h = %d %q; want 0 and nothing on stderr", cmd, helpCode, helpErr, cmd, dashCode, dashErr)
			}
			if helpOut != dashOut || helpOut == "" {
				t.Errorf("help %s:\n%s\ndiffers from %s -h:\n%s", cmd, helpOut, cmd, dashOut)
			}
			if cmd != "help" && helpOut == usage() {
				t.Errorf("help %s prints the general help", cmd)
			}
		})
	}
}

// TestHelpShowsPolicyLookupOrder: every --config flag's help points to
// 'hermes help', so it shows where the policy is looked for, in
// findPolicy's order (TestPolicyLookupOrder checks that order).
func TestHelpShowsPolicyLookupOrder(t *testing.T) {
	e := newTestEnv(t, "")
	out, _, code := e.hermes(20*time.Second, "help")
	if code != exitOK {
		t.Fatalf("help = %d", code)
	}
	rest := out
	for _, want := range []string{"--config FILE", "$HERMES_CONFIG", "./hermes.toml", "$XDG_CONFIG_HOME/hermes/hermes.toml", "~/.config/hermes/hermes.toml", "/etc/hermes/hermes.toml", "built-in defaults"} {
		i := strings.Index(rest, want)
		if i < 0 {
			t.Fatalf("help lacks %q (or has it out of order):\n%s", want, out)
		}
		rest = rest[i+len(want):]
	}
	if s, _, _ := e.hermes(20*time.Second, "status", "-h"); !strings.Contains(s, "(default: see 'hermes help')") {
		t.Errorf("status -h no longer points --config to 'hermes help':\n%s", s)
	}
}

// TestCommandLineErrors: a bad command line is one error line and one hint
// that works as printed, on stderr, exit 2; nothing else, no wall of usage.
func TestCommandLineErrors(t *testing.T) {
	e := newTestEnv(t, "")
	for _, tc := range []struct {
		args      []string
		err, hint string
	}{
		{[]string{"help", "bogus"}, `unknown command "bogus"`, "run 'hermes help' for the list of commands"},
		{[]string{"help", "restrat"}, `unknown command "restrat" (did you mean restart?)`, "run 'hermes help' for the list of commands"},
		{[]string{"stauts"}, `unknown command "stauts" (did you mean status?)`, "run 'hermes help' for the list of commands"},
		{[]string{"--config", "x.toml", "status"}, `unknown command "--config"`, "the command comes first, then its flags; run 'hermes help' for the list of commands"},
		{[]string{"help", "restart", "stop"}, `help: one command at a time, got "restart stop"`, "run 'hermes help -h' for its flags"},
		{[]string{"restart", "-bogus"}, "restart: unknown flag -bogus", "run 'hermes restart -h' for its flags"},
		{[]string{"restart", "--forse"}, "restart: unknown flag --forse (did you mean --force?)", "run 'hermes restart -h' for its flags"},
		{[]string{"restart", "--force=maybe"}, "restart: --force=maybe: --force takes no value (write --force, or --force=false)", "run 'hermes restart -h' for its flags"},
		{[]string{"restart", "--mode", "fast"}, `restart: --mode "fast": use handoff or drain`, "run 'hermes restart -h' for its flags"},
		{[]string{"status", "--config"}, "status: --config needs a value", "run 'hermes status -h' for its flags"},
		{[]string{"version", "--bogus"}, "version: unknown flag --bogus", "run 'hermes version -h' for its flags"},
		{[]string{"--version", "now"}, `version: unexpected argument "now" (it takes flags only)`, "run 'hermes version -h' for its flags"},
		{[]string{"events", "--since", "yesterdy"}, `events: --since "yesterdy": not a time or a duration: use a duration back from now`, "run 'hermes events -h' for its flags"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, errOut, code := e.hermes(20*time.Second, tc.args...)
			want := "hermes: error: " + tc.err
			lines := strings.Split(strings.TrimSuffix(errOut, "\n"), "\n")
			if code != exitUsage || out != "" || len(lines) != 2 || !strings.HasPrefix(lines[0], want) || lines[1] != "hermes: hint: "+tc.hint {
				t.Errorf("hermes %s = %d, stdout %q, stderr:\n%s\nwant 2, no stdout, and:\n%s...\nhermes: hint: %s",
					strings.Join(tc.args, " "), code, out, errOut, want, tc.hint)
			}
		})
	}
}

// TestStrayArgumentsRejected: no command takes a positional argument, so
// none may ignore one (a forgotten --config before a path, say).
func TestStrayArgumentsRejected(t *testing.T) {
	e := newTestEnv(t, "")
	for _, cmd := range commandNames() {
		if cmd == "help" {
			continue // it takes one: the command
		}
		t.Run(cmd, func(t *testing.T) {
			out, errOut, code := e.hermes(20*time.Second, cmd, "stray.toml")
			want := "hermes: error: " + cmd + `: unexpected argument "stray.toml" (it takes flags only)` + "\nhermes: hint: run 'hermes " + cmd + " -h' for its flags\n"
			if code != exitUsage || errOut != want || out != "" {
				t.Errorf("hermes %s stray.toml = %d, stdout %q, stderr %q; want 2 and %q", cmd, code, out, errOut, want)
			}
		})
	}
}
