package main

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// skipUnlessCI skips a test for want of something this machine lacks (root,
// a tool, the systemd harness in ../shared), saying what and how to get it.
// In CI (CI=true, which .ci/run sets) it fails the test instead: .ci/run
// provides every one of these, so a CI machine that lacks one has a broken
// setup, and a skip there would let a run pass without testing what the
// test guards.
func skipUnlessCI(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s\nCI=true: a CI machine has this (.ci/run installs the tools, CI puts shared/ beside the checkout), so the test fails instead of skipping", msg)
	}
	t.Skip(msg)
}
