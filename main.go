// Command hermes keeps an LLM-agent gateway alive on a small host without ever
// getting stuck.
//
// Usage:
//
//	hermes serve          [--config FILE]          run the gateway
//	hermes start          [--config FILE]          start it unless it runs
//	hermes restart        [--force] [--config FILE] drain, escalate, bring it back
//	hermes stop           [--force] [--config FILE] drain and stop, for good
//	hermes reload         [--config FILE]          check the policy, then HUP
//	hermes status         [--json] [--config FILE]  what the gateway is doing
//	hermes logs           [-f] [-n N]              the gateway's log
//	hermes check-config   [--config FILE]          print the effective policy
//	hermes install-unit   [...]                    write the systemd unit or launchd plist
//	hermes uninstall-unit [...]                    remove it again
//	hermes events         [--since D] [--json]     the lifecycle timeline
//	hermes version
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
	"os"
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
	exitConfig     = 78 // fatal policy error or token collision: never restart in a loop (EX_CONFIG)
)

const usageText = `hermes keeps an LLM-agent gateway alive without ever getting stuck.

Usage:
    hermes <command> [flags]

Commands:
    serve           run the gateway (in the foreground)
    start           start the gateway if it is not running (under its manager if it has one)
    restart         drain the gateway, escalate if it will not go, bring a fresh one up
    stop            drain the gateway and stop it for good
    reload          check the policy file, then have the running gateway load it
    status          show what the gateway is doing (with no policy: every gateway on the host)
    logs            print the gateway's log (-f to follow)
    check-config    print the effective policy with defaults filled in
    install-unit    write the systemd unit or launchd plist for this policy
    uninstall-unit  remove the unit or plist written by install-unit
    events          print the lifecycle timeline
    version         print the version

Examples:
    $ hermes serve
    $ hermes restart
    $ hermes check-config --config ./hermes.toml

Run 'hermes <command> -h' for a command's flags.
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

// errUsage marks a usage error (exit 2); flag's own message was printed already.
var errUsage = errors.New("usage")

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, usageText)
		return exitUsage
	}
	var err error
	switch cmd, rest := args[0], args[1:]; cmd {
	case "serve":
		err = runServe(rest)
	case "restart":
		err = runRestart(rest)
	case "stop":
		err = runStop(rest)
	case "status":
		err = runStatus(rest)
	case "check-config":
		err = runCheckConfig(rest)
	case "install-unit":
		err = runInstallUnit(rest)
	case "uninstall-unit":
		err = runUninstallUnit(rest)
	case "events":
		err = runEvents(rest)
	case "start":
		err = runStart(rest)
	case "reload":
		err = runReload(rest)
	case "logs":
		err = runLogs(rest)
	case "version", "--version", "-version":
		fmt.Println("hermes", version)
	case "help", "-h", "-help", "--help":
		fmt.Print(usageText)
	default:
		fmt.Fprintf(os.Stderr, "hermes: error: unknown command %q\n", cmd)
		fmt.Fprintf(os.Stderr, "hermes: hint: run 'hermes help' for the list of commands\n")
		return exitUsage
	}
	return exitCode(err)
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

// newFlagSet returns the flag set of one subcommand; usage is a few
// `$ hermes ...` examples printed above the flag defaults.
func newFlagSet(name, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("hermes "+name, flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fmt.Fprintln(fs.Output(), "\nFlags:")
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and rejects positional arguments: every hermes
// command takes flags only.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		fs.Usage()
		return errUsage
	}
	return nil
}
