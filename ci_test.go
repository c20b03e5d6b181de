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
		t.Fatalf("%s\nCI=true: in CI this fails instead of skipping (.ci/run provides what the tests need)", msg)
	}
	t.Skip(msg)
}
