package main

import (
	"regexp"
	"sync"
)

// lazyRegexp compiles expr on first use, not when the binary starts.
// Everything a package variable builds runs before main, on every
// command's start and in every gateway's memory: most regexps here only
// read a config error, a flag error or a CLI argument, and a gateway that
// never meets one never pays for it (TestInitAllocatesLittle). A bad
// expression would now fail at its first use, not at start:
// TestLazyRegexpsCompile compiles every one in lazyExprs.
func lazyRegexp(expr string) func() *regexp.Regexp {
	lazyExprs = append(lazyExprs, expr)
	return sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(expr) })
}

// lazyExprs is every expression lazyRegexp was given.
var lazyExprs []string
