package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// pidRecord is what the pid file holds: enough to prove, later, that a pid
// still names the same gateway (pid reuse is real: a pid and its start time
// and boot id together are unique).
type pidRecord struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // clock ticks since boot (Linux), µs since the epoch (macOS)
	BootID    string `json:"boot_id"`
	Name      string `json:"name"`
	Policy    string `json:"policy"`
	Listen    string `json:"listen"`
	Control   string `json:"control"`
	Version   string `json:"version"`
}

func pidFilePath(stateDir string) string { return filepath.Join(stateDir, "gateway.pid") }

// selfRecord describes the running process.
func selfRecord() (pidRecord, error) {
	pid := os.Getpid()
	start, _, err := procInfo(pid)
	if err != nil {
		return pidRecord{}, fmt.Errorf("reading own process start time: %w", err)
	}
	boot, err := bootID()
	if err != nil {
		return pidRecord{}, fmt.Errorf("reading boot id: %w", err)
	}
	return pidRecord{PID: pid, StartTime: start, BootID: boot, Version: version}, nil
}

// writeFileAtomic writes data to a temporary file beside path and renames it
// over path, so a reader sees the old content or the new, never a torn one.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

func writePidFile(path string, rec pidRecord) error {
	b, _ := json.MarshalIndent(rec, "", "  ")
	if err := writeFileAtomic(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing pid file %s: %w", path, err)
	}
	return nil
}

// readPidFile returns the record, or fs.ErrNotExist when there is none.
func readPidFile(path string) (pidRecord, error) {
	var rec pidRecord
	b, err := os.ReadFile(path)
	if err != nil {
		return rec, err
	}
	if err := json.Unmarshal(b, &rec); err != nil || rec.PID <= 0 {
		return rec, fmt.Errorf("pid file %s is damaged (not hermes's JSON record)", path)
	}
	return rec, nil
}

// removeOwnPidFile removes the pid file only if it still names this
// process: a successor may have written its own already.
func removeOwnPidFile(path string, self pidRecord) {
	rec, err := readPidFile(path)
	if errors.Is(err, fs.ErrNotExist) || err != nil {
		return
	}
	if rec.PID == self.PID && rec.StartTime == self.StartTime && rec.BootID == self.BootID {
		os.Remove(path)
	}
}

// alive reports whether rec still names a live process that is the one it
// recorded: same boot, same pid, same start time. The state byte is returned
// too (T stopped, Z zombie).
func (rec pidRecord) alive() (bool, byte) {
	boot, err := bootID()
	if err != nil || boot != rec.BootID {
		return false, 0
	}
	start, state, err := procInfo(rec.PID)
	if err != nil || start != rec.StartTime {
		return false, 0
	}
	return true, state
}

var errNotSame = errors.New("the pid now belongs to another process")

// state returns the state letter of a proven process (T stopped, Z zombie),
// or 0 once it is gone or the pid names another process.
func (h *procHandle) state() byte {
	s, st, err := procInfo(h.pid)
	if err != nil || s != h.start {
		return 0
	}
	return st
}
