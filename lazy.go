package main

import (
	"regexp"
	"sync"
)

// lazyRegexp compiles expr on first use, not when the binary starts.
// Everything a package variable builds runs before main, on every
// command's start and in every gateway's memory: most regexps here only
// read a config error, a flag error or a CLI argument, and a gateway that
// never meets one never pays for it (TestInitAllocatesLittle).
func lazyRegexp(expr string) func() *regexp.Regexp {
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}
