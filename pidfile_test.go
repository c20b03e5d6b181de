package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestPidRecordAlive: a record proves a process only if the boot id, the
// pid and the start time all match.
func TestPidRecordAlive(t *testing.T) {
	self, err := selfRecord()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		edit func(*pidRecord)
		want bool
	}{
		{"this process", func(*pidRecord) {}, true},
		{"another start time (pid reuse)", func(r *pidRecord) { r.StartTime++ }, false},
		{"another boot", func(r *pidRecord) { r.BootID = "x" + r.BootID[1:] }, false},
		{"another pid", func(r *pidRecord) { r.PID = 1 << 22 }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := self
			tc.edit(&r)
			if got, _ := r.alive(); got != tc.want {
				t.Errorf("alive() = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestRemoveOwnPidFile removes the pid file only when it names this very
// process: a successor's (another pid, or the same pid in another life)
// stays.
func TestRemoveOwnPidFile(t *testing.T) {
	self, err := selfRecord()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "gateway.pid")
	for _, tc := range []struct {
		name    string
		edit    func(*pidRecord)
		removed bool
	}{
		{"its own", func(*pidRecord) {}, true},
		{"another process's", func(r *pidRecord) { r.PID++ }, false},
		{"same pid, another start", func(r *pidRecord) { r.StartTime++ }, false},
		{"same pid, another boot", func(r *pidRecord) { r.BootID = "other" }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := self
			tc.edit(&r)
			if err := writePidFile(path, r); err != nil {
				t.Fatal(err)
			}
			removeOwnPidFile(path, self)
			for _, p := range []string{path, proofPath(path)} {
				_, err := os.Stat(p)
				if gone := os.IsNotExist(err); gone != tc.removed {
					t.Errorf("%s removed = %v, want %v", filepath.Base(p), gone, tc.removed)
				}
			}
		})
	}
}
