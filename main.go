// The command line: the command table, exit codes, and errors that carry
// a hint (the map of the whole package is doc.go).
//
// The commands are one table, commands() below: the help's list and the
// dispatch both come from it ('hermes help' prints it).
//
// One TOML policy file (hermes.toml) drives every command; built-in defaults
// make every command work without one. The file is looked up in this order:
// --config, $HERMES_CONFIG, ./hermes.toml, $XDG_CONFIG_HOME/hermes/hermes.toml,
// /etc/hermes/hermes.toml.
//
// The gateway proxies /v1/... to an OpenAI-compatible upstream (or serves a
// built-in echo upstream), tracks every in-flight session and, on a stop or
// restart request, drains them within a bounded time instead of cutting them.
// Signals reach it only through a self-pipe (signals.go); all work happens on
// the gateway's own loop, so a frozen loop shows as silence on the control
// socket and `hermes restart` can prove it and escalate.
//
// Exit codes are a contract with systemd and launchd; see the exit* constants.

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

var version = "0.1.0-dev"

// Exit codes. systemd and launchd units are generated from these
// (RestartForceExitStatus, SuccessExitStatus, RestartPreventExitStatus), so
// change them only together with unit/.
const (
	exitOK         = 0  // planned stop; also every successful command
	exitFailure    = 1  // unexpected failure (or an unexpected signal)
	exitUsage      = 2  // bad command line
	exitNotRunning = 3  // hermes status: the gateway is not running (as `systemctl is-active`)
	exitWatchdog   = 70 // the watchdog found the gateway loop frozen (EX_SOFTWARE)
	exitRestart    = 75 // planned restart: the manager must start a fresh gateway (EX_TEMPFAIL)
	exitConfig     = 78 // fatal policy error, token collision or listen address held: never restart in a loop (EX_CONFIG)
)

// A listen address held by another process exits exitConfig too, once
// gateway.listen_timeout has passed (listen.go). A clash that outlasts the
// moment the gateway before this one needs to close its socket is a
// conflict in the configuration, like a token held by another gateway:
// exit 1 would have systemd start it again every RestartSec for ever, each
// start failing the same way and pushing the reason out of the log, while
// 78 stops it (RestartPreventExitStatus=78) until a person moves one of the
// two, and hermes restart says so at once. launchd cannot single 78 out: its
// ThrottleInterval and the crash-loop guard slow such a loop down instead.

// command is one row of the command table, from which both the help's list
// and run's dispatch come: a command is added here and nowhere else.
type command struct {
	name    string
	aliases []string // other spellings run accepts (--version, -h), not listed
	summary string   // the help's one line
	run     func(args []string) error
}

// commands is the command table, in the help's order.
func commands() []command {
	return []command{
		{"serve", nil, "run the gateway (in the foreground)", runServe},
		{"start", nil, "start the gateway if it is not running (under its manager if it has one)", runStart},
		{"restart", nil, "hand the gateway over to a fresh one (or drain it), escalate if it will not go", runRestart},
		{"stop", nil, "drain the gateway and stop it for good", runStop},
		{"reload", nil, "check the policy file, then have the running gateway load it", runReload},
		{"status", nil, "show what the gateway is doing (with no policy: every gateway on the host)", runStatus},
		{"healthcheck", nil, "exit 0 when the gateway serves and its loop ticks, else 1 (for containers)", runHealthcheck},
		{"logs", nil, "print the gateway's log (-f to follow)", runLogs},
		{"check-config", nil, "print the effective policy with defaults filled in", runCheckConfig},
		{"install-unit", nil, "write the systemd unit, launchd plist or Kubernetes manifests for this policy", runInstallUnit},
		{"uninstall-unit", nil, "remove the unit or plist written by install-unit", runUninstallUnit},
		{"events", nil, "print the lifecycle timeline", runEvents},
		{"auth", nil, "make a client key: hermes auth add NAME ([auth] keys)", runAuth},
		{"version", []string{"--version", "-version"}, "print the version", runVersion},
		{"help", []string{"-h", "-help", "--help"}, "print this help, or a command's: hermes help restart", runHelp},
	}
}

// usage is the general help: the command table's list between a fixed
// head and tail.
func usage() string {
	var b strings.Builder
	b.WriteString(usageHead)
	for _, c := range commands() {
		fmt.Fprintf(&b, "    %-16s%s\n", c.name, c.summary)
	}
	b.WriteString(usageTail)
	return b.String()
}

const usageHead = `hermes keeps an LLM-agent gateway alive without ever getting stuck.

Usage:
    hermes <command> [flags]

Commands:
`

const usageTail = `
Policy:
    Every command reads one policy file (TOML), the first of:
        --config FILE
        $HERMES_CONFIG
        ./hermes.toml
        $XDG_CONFIG_HOME/hermes/hermes.toml (default ~/.config/hermes/hermes.toml)
        /etc/hermes/hermes.toml
    and runs on built-in defaults when there is none.
    'hermes check-config' shows which one it found.

Examples:
    $ hermes serve
    $ hermes restart
    $ hermes check-config --config ./hermes.toml

Run 'hermes help <command>' (or 'hermes <command> -h') for a command's flags.
`

func main() { os.Exit(run(os.Args[1:])) }

// exitError carries a specific exit code out of a subcommand. The error it
// wraps (if any) is printed by run; a nil err means "exit quietly".
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func (e *exitError) Unwrap() error { return e.err }

// hintError attaches a line telling a person what to do next.
type hintError struct {
	err  error
	hint string
}

func (e *hintError) Error() string { return e.err.Error() }
func (e *hintError) Unwrap() error { return e.err }

func withHint(err error, format string, args ...any) error {
	return &hintError{err: err, hint: fmt.Sprintf(format, args...)}
}

// errUsage marks a usage error (exit 2) whose message was printed already.
var errUsage = errors.New("usage")

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usage())
		return exitUsage
	}
	name, rest := args[0], args[1:]
	for _, c := range commands() {
		if c.name == name || slices.Contains(c.aliases, name) {
			return exitCode(c.run(rest))
		}
	}
	return exitCode(unknownCommand(name))
}

const versionUsage = `Print the version.

    $ hermes version
`

func runVersion(args []string) error {
	if err := parseFlags(newFlagSet("version", versionUsage), args); err != nil {
		return err
	}
	fmt.Println("hermes", version)
	return nil
}

// runHelp prints the general help, or one command's: the same text, on
// stdout, as 'hermes <command> -h'.
func runHelp(args []string) error {
	if len(args) > 1 {
		return usageError("help", "help: one command at a time, got %q", strings.Join(args, " "))
	}
	if len(args) == 0 || args[0] == "help" || strings.HasPrefix(args[0], "-") {
		fmt.Print(usage())
		return nil
	}
	if code := run([]string{args[0], "-h"}); code != exitOK {
		return &exitError{code: code}
	}
	return nil
}

// commandNames lists the commands of the table, in its order.
func commandNames() []string {
	var names []string
	for _, c := range commands() {
		names = append(names, c.name)
	}
	return names
}

func unknownCommand(cmd string) error {
	err := fmt.Errorf("unknown command %q%s", cmd, didYouMean(cmd, commandNames(), ""))
	if strings.HasPrefix(cmd, "-") {
		return &exitError{code: exitUsage, err: withHint(err, "the command comes first, then its flags; run 'hermes help' for the list of commands")}
	}
	return &exitError{code: exitUsage, err: withHint(err, "run 'hermes help' for the list of commands")}
}

// didYouMean returns " (did you mean X?)" for the candidate closest to s,
// written with prefix, or "" when none is close.
func didYouMean(s string, candidates []string, prefix string) string {
	if c := closest(strings.ToLower(s), candidates); c != "" {
		return fmt.Sprintf(" (did you mean %s%s?)", prefix, c)
	}
	return ""
}

// exitCode prints err the one way hermes prints errors and maps it to the
// process's exit code.
func exitCode(err error) int {
	if err == nil {
		return exitOK
	}
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if errors.Is(err, errUsage) {
		return exitUsage
	}
	code := exitFailure
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
		if ee.err == nil {
			return code
		}
	}
	var ce *configError
	if errors.As(err, &ce) && ee == nil {
		code = exitConfig
	}
	msg := err.Error()
	fmt.Fprintf(os.Stderr, "hermes: error: %s\n", strings.ReplaceAll(msg, "\n", "\n    "))
	var he *hintError
	if errors.As(err, &he) {
		fmt.Fprintf(os.Stderr, "hermes: hint: %s\n", strings.ReplaceAll(he.hint, "\n", "\n    "))
	}
	return code
}

// errHelp is returned when a person asked for a command's help (-h): exit 0.
var errHelp = flag.ErrHelp

// usageError is a bad command line (exit 2): the message, and a hint to
// the command's help (cmd "" for hermes itself).
func usageError(cmd, format string, args ...any) error {
	hint := "run 'hermes help' for the list of commands"
	if cmd != "" {
		hint = fmt.Sprintf("run 'hermes %s -h' for its flags", cmd)
	}
	return &exitError{code: exitUsage, err: withHint(fmt.Errorf(format, args...), "%s", hint)}
}

// newFlagSet returns the flag set of one subcommand; usage is a few
// `$ hermes ...` examples printed above the flag defaults. flag's own
// messages are silenced: parseFlags says what went wrong, in one line.
func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("hermes "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(fs.Output(), "\nFlags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args and rejects positional arguments: every hermes
// command takes flags only. -h prints the command's help on stdout.
func parseFlags(fs *flag.FlagSet, args []string) error {
	cmd := strings.TrimPrefix(fs.Name(), "hermes ")
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(os.Stdout)
		fs.Usage()
		return errHelp
	case err != nil:
		return usageError(cmd, "%s: %s", cmd, flagProblem(fs, args, err))
	case fs.NArg() > 0:
		return usageError(cmd, "%s: unexpected argument %q (it takes flags only)", cmd, fs.Arg(0))
	}
	return nil
}

var (
	flagUndefinedRe = lazyRegexp(`^flag provided but not defined: -(.*)$`)
	flagValueRe     = lazyRegexp(`^invalid (?:boolean )?value (".*") for (?:flag )?-([^:]+): (.*)$`)
	flagNeedsArgRe  = lazyRegexp(`^flag needs an argument: -(.*)$`)
)

// flagProblem words one of flag's parse errors for people, naming flags
// as they are written in the examples (--force).
func flagProblem(fs *flag.FlagSet, args []string, err error) string {
	msg := err.Error()
	if m := flagUndefinedRe().FindStringSubmatch(msg); m != nil {
		var names []string
		fs.VisitAll(func(f *flag.Flag) { names = append(names, f.Name) })
		return fmt.Sprintf("unknown flag %s%s", typedFlag(args, m[1]), didYouMean(m[1], names, "--"))
	}
	if m := flagValueRe().FindStringSubmatch(msg); m != nil {
		why := m[3]
		if f := fs.Lookup(m[2]); f != nil {
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				return fmt.Sprintf("--%s=%s: --%s takes no value (write --%s, or --%s=false)", m[2], strings.Trim(m[1], `"`), m[2], m[2], m[2])
			}
		}
		return fmt.Sprintf("--%s %s: %s", m[2], m[1], why)
	}
	if m := flagNeedsArgRe().FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("--%s needs a value", m[1])
	}
	return msg
}

// typedFlag is the flag name as the person typed it (-x or --x).
func typedFlag(args []string, name string) string {
	for _, a := range args {
		if a == "--" {
			break
		}
		if n, _, _ := strings.Cut(a, "="); n == "-"+name || n == "--"+name {
			return n
		}
	}
	return "--" + name
}
