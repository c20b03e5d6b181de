package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
)

// The pid file, <state_dir>/gateway.pid, holds the plain pid and nothing
// else, as kill, monit, start-stop-daemon and supervisord's pidproxy expect:
//
//	kill -HUP $(cat gateway.pid)
//
// The proof lives beside it in gateway.pid.json, one line of JSON: enough
// to prove, later, that the pid still names the same gateway (pid reuse is
// real: a pid and its start time and boot id together are unique), and
// enough to reach it when its policy file is broken or renamed (the policy
// file, the state dir, the control socket). hermes reads only the proof;
// the proof is written first and removed last, so a pid in gateway.pid
// always has its proof.

// pidRecord is what the pid file holds (and the instance registry, see
// registry.go).
type pidRecord struct {
	PID       int    `json:"pid"`
	StartTime uint64 `json:"start_time"` // clock ticks since boot (Linux), µs since the epoch (macOS)
	BootID    string `json:"boot_id"`
	Name      string `json:"name"`
	Policy    string `json:"policy"` // the policy file; "" for built-in defaults
	StateDir  string `json:"state_dir"`
	Listen    string `json:"listen"`
	Control   string `json:"control"`
	Version   string `json:"version"`
	UID       int    `json:"uid"`
	User      string `json:"user,omitempty"`
}

func pidFilePath(stateDir string) string { return filepath.Join(stateDir, "gateway.pid") }

// proofPath is the pid file's proof: gateway.pid.json.
func proofPath(pidPath string) string { return pidPath + ".json" }

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
	rec := pidRecord{PID: pid, StartTime: start, BootID: boot, Version: version, UID: os.Getuid()}
	if u, err := user.Current(); err == nil {
		rec.User = u.Username
	}
	return rec, nil
}

// writeFileAtomic writes data to a temporary file beside path, syncs it to
// the disk and renames it over path, so a reader sees the old content or
// the new, never a torn one, and the new survives a power loss.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFileReplace(path, data, perm, true)
}

// writeRunFile is writeFileAtomic without the sync, for files that describe
// processes of this boot only (the pid file and its proof, the registry
// entry, the running policy's copy): a power loss makes them stale anyway,
// and their readers prove the process, boot id included, before they
// believe one. A start writes several; each sync cost a start 0.5 to 5 ms
// on the disks hermes runs on, and wore SD cards for nothing.
func writeRunFile(path string, data []byte, perm os.FileMode) error {
	return writeFileReplace(path, data, perm, false)
}

func writeFileReplace(path string, data []byte, perm os.FileMode, sync bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	renamed := false
	defer func() {
		if !renamed {
			os.Remove(tmp.Name())
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if sync {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	renamed = true
	return nil
}

// writeFileSyncSoon is writeFileAtomic whose sync runs in the background:
// readers see the whole new content at once, and the disk has it a moment
// later. It is for a record a start writes before READY=1 (the start
// ledger), where a sync would make the start wait on the disk: 0.3 ms
// here, tens of milliseconds on an SD card. A power loss in that moment
// can leave the file empty on some filesystems: its reader must take that
// as no record (readStartLedger's caller starts a damaged ledger afresh).
func writeFileSyncSoon(path string, data []byte, perm os.FileMode) error {
	if err := writeRunFile(path, data, perm); err != nil {
		return err
	}
	go func() {
		if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			f.Sync()
			f.Close()
		}
	}()
	return nil
}

// publishPid writes the pid file and the instance's registry entry: both
// say which process is the gateway now.
func publishPid(path string, rec pidRecord) error {
	if err := writePidFile(path, rec); err != nil {
		return err
	}
	register(rec)
	return nil
}

func writePidFile(path string, rec pidRecord) error {
	b, _ := json.Marshal(rec)
	if err := writeRunFile(proofPath(path), append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing pid file %s: %w", proofPath(path), err)
	}
	if err := writeRunFile(path, fmt.Appendf(nil, "%d\n", rec.PID), 0o644); err != nil {
		return fmt.Errorf("writing pid file %s: %w", path, err)
	}
	return nil
}

// readPidFile returns the record from the pid file's proof, or
// fs.ErrNotExist when there is none. Without a proof it reads the pid file
// itself as hermes before 0.2 wrote it, the JSON alone or the pid and the
// JSON (a handoff from an older binary); a plain pid there has no proof,
// and is not believed.
func readPidFile(path string) (pidRecord, error) {
	src := proofPath(path)
	b, err := os.ReadFile(src)
	if errors.Is(err, fs.ErrNotExist) {
		src = path
		b, err = os.ReadFile(path)
		if err == nil && isPlainPid(b) {
			return pidRecord{}, fmt.Errorf("pid file %s has no proof beside it (%s is missing): it cannot be proven to name the gateway", path, filepath.Base(proofPath(path)))
		}
	}
	if err != nil {
		return pidRecord{}, err
	}
	rec, err := parsePidFile(b)
	if err != nil {
		return rec, fmt.Errorf("pid file %s is damaged (%v)", src, err)
	}
	if rec.StateDir == "" {
		rec.StateDir = filepath.Dir(path)
	}
	return rec, nil
}

func isPlainPid(b []byte) bool {
	_, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	return err == nil
}

// parsePidFile reads a proof: one line of JSON, or (hermes before 0.2) the
// pid on a line of its own, then the JSON.
func parsePidFile(b []byte) (pidRecord, error) {
	var rec pidRecord
	first, rest, _ := bytes.Cut(b, []byte("\n"))
	if bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) {
		rest, first = b, nil
	}
	if err := json.Unmarshal(rest, &rec); err != nil || rec.PID <= 0 {
		return rec, errors.New("not hermes's pid record")
	}
	if first != nil {
		if pid, err := strconv.Atoi(string(bytes.TrimSpace(first))); err != nil || pid != rec.PID {
			return rec, fmt.Errorf("its first line %q is not the pid %d of its record", first, rec.PID)
		}
	}
	return rec, nil
}

// removeOwnPidFile removes the registry entry, the pid file and its proof,
// each only if it still names this process: a successor may have written
// its own.
func removeOwnPidFile(path string, self pidRecord) {
	unregister(self)
	if rec, err := readPidFile(path); err != nil || !rec.sameProcess(self) {
		return // a successor's (or the same pid in another life)
	}
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.Itoa(self.PID) {
		os.Remove(path)
	}
	os.Remove(proofPath(path))
}

// sameProcess reports whether two records name the same process.
func (rec pidRecord) sameProcess(o pidRecord) bool {
	return rec.PID == o.PID && rec.StartTime == o.StartTime && rec.BootID == o.BootID
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
