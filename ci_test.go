package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// skipUnlessCI skips a test for want of something this machine lacks (root,
// a tool, cgroup v2 for the systemd harness), saying what and how to get it.
// In CI (CI=true, which .ci/run sets) it fails the test instead: .ci/run
// provides every one of these, so a CI machine that lacks one has a broken
// setup, and a skip there would let a run pass without testing what the
// test guards.
func skipUnlessCI(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); ci {
		t.Fatalf("%s\nCI=true: a CI machine has this (.ci/run installs the tools and runs as root), so the test fails instead of skipping", msg)
	}
	t.Skip(msg)
}

// TestNothingOutsideTheRepo: a user's clone has only itself, so no test,
// script or benchmark may reach for the workplace's folder beside it.
func TestNothingOutsideTheRepo(t *testing.T) {
	outside := ".." + "/shared"
	var found []string
	filepath.WalkDir(".", func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() && (p == ".git" || p == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), outside) {
			found = append(found, p)
		}
		return nil
	})
	if len(found) > 0 {
		t.Errorf("%v name %s: what the tests need, the repository must hold", found, outside)
	}
}
