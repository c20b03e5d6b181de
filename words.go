package main

// How hermes writes a value for a person to read: a duration rounded to
// what matters, a default for an empty value, the --config a command line
// needs, a shell-quoted path, and who asked. Every command's output and the
// gateway's messages share these.

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// orDefault is s, or def when s is empty.
func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// fmtDur rounds d to what a person reads: microseconds under a
// millisecond, milliseconds under a second, then hundredths of a second.
func fmtDur(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(time.Millisecond).String()
	}
	return d.Round(10 * time.Millisecond).String()
}

// currentUser names who asked, for the journal.
func currentUser() string {
	if u := os.Getenv("SUDO_USER"); u != "" {
		return u + " (via sudo)"
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return fmt.Sprintf("uid %d", os.Getuid())
}

// configFlag is the " --config FILE" that names p's file on a command
// line hermes prints, or "" for the built-in defaults.
func configFlag(p *Policy) string {
	if p.Path == "" {
		return ""
	}
	return " --config " + shellQuote(p.Path)
}

// shellQuote quotes s for a POSIX shell, unless it needs none.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(c rune) bool {
		return !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("/._-+=:,@", c))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
