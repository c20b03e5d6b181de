package main

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// TestInitAllocatesLittle guards what runs before main on every start:
// package variables that compile regexps or parse templates cost a
// gateway about a megabyte of resident memory and 1.7 ms before READY=1
// (lazy.go builds them on first use instead). The runtime's own count
// (GODEBUG=inittrace=1) is exact, so this is a count, not a timing.
func TestInitAllocatesLittle(t *testing.T) {
	cmd := exec.Command(hermesBin, "version")
	cmd.Env = append(filteredEnv(), "GODEBUG=inittrace=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hermes version: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`(?m)^init main @\S+ ms, \S+ ms clock, (\d+) bytes, (\d+) allocs$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("no 'init main' line in the runtime's init trace:\n%s", out)
	}
	bytes, _ := strconv.Atoi(string(m[1]))
	allocs, _ := strconv.Atoi(string(m[2]))
	const maxBytes, maxAllocs = 64 << 10, 1000
	if bytes > maxBytes || allocs > maxAllocs {
		t.Errorf("package main's initialisation allocates %d bytes in %d objects, more than %d bytes or %d objects: "+
			"a package variable builds something at start (a regexp, a template, a table); build it on first use (lazyRegexp, sync.OnceValue)",
			bytes, allocs, maxBytes, maxAllocs)
	}
}

// TestLazyRegexpsCompile compiles every regexp that lazyRegexp defers, so a
// bad one fails here, not at its first use in a user's hands.
func TestLazyRegexpsCompile(t *testing.T) {
	if len(lazyExprs) == 0 {
		t.Fatal("lazyRegexp recorded no expressions")
	}
	for _, expr := range lazyExprs {
		if _, err := regexp.Compile(expr); err != nil {
			t.Errorf("%q: %v", expr, err)
		}
	}
}
