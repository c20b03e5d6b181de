package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// The instance registry: one small file per gateway in one machine-wide
// directory, so that a command finds every gateway on the host whatever its
// current directory, whichever user started it, and whether or not its
// policy file still reads (or still has the name it started with).
//
// A gateway writes its entry with its pid file (publishPid) and removes it
// with its pid file when it exits. An entry left behind names a gateway
// that died without a clean exit (SIGKILL, the OOM killer, a power cut);
// the next start of that instance replaces it. Each entry is the gateway's
// pid record, so a reader proves the process (pid, start time, boot id)
// before it believes it, exactly as with the pid file.
//
// The directory is $HERMES_REGISTRY_DIR when set (tests, unusual hosts),
// else "instances" in the default lock dir: /run/lock/hermes/instances on
// Linux (/run/lock is world-writable and emptied at boot, so the registry
// holds this boot's gateways only), /tmp/hermes-locks/instances elsewhere.
// It is created like /tmp (mode 1777): every user's gateway registers
// there, and nobody can remove another's entry.

func registryDir() string {
	if d := os.Getenv("HERMES_REGISTRY_DIR"); d != "" {
		return d
	}
	return filepath.Join(defaultLockDir(), "instances")
}

// registryPath is an instance's entry: named for the instance and its user,
// and unique per state dir (two users may both run a "gateway").
func registryPath(rec pidRecord) string {
	sum := sha256.Sum256([]byte(rec.StateDir))
	return filepath.Join(registryDir(), safeName(rec.Name)+"-"+strconv.Itoa(rec.UID)+"-"+hex.EncodeToString(sum[:])[:12]+".json")
}

// register writes rec's entry. It is best effort: a registry that cannot be
// written costs the commands a way to find this gateway without its policy,
// never the gateway its start.
func register(rec pidRecord) error {
	dir := registryDir()
	if err := ensureLockDir(dir); err != nil {
		return err
	}
	b, _ := json.Marshal(rec)
	return writeRunFile(registryPath(rec), append(b, '\n'), 0o644)
}

// unregister removes self's entry if it still names self.
func unregister(self pidRecord) {
	path := registryPath(self)
	b, err := os.ReadFile(path)
	if err != nil {
		return
	}
	var rec pidRecord
	if json.Unmarshal(b, &rec) == nil && rec.sameProcess(self) {
		os.Remove(path)
	}
}

// instance is one registry entry, proven.
type instance struct {
	pidRecord
	Alive bool // the process is the gateway the entry records
	file  string
}

// listInstances reads every entry, proves each process, and returns them
// sorted by name, then user, then state dir.
func listInstances() []instance {
	ents, err := os.ReadDir(registryDir())
	if err != nil {
		return nil
	}
	out := make([]instance, 0, len(ents))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, e := range ents {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		wg.Add(1)
		go func(file string) {
			defer wg.Done()
			b, err := os.ReadFile(file)
			if err != nil {
				return
			}
			var rec pidRecord
			if json.Unmarshal(b, &rec) != nil || rec.PID <= 0 {
				return
			}
			alive, _ := rec.alive()
			if !alive && rec.StateDir != "" {
				if _, err := os.Stat(rec.StateDir); errors.Is(err, fs.ErrNotExist) {
					// A dead gateway whose state dir is gone (a removed
					// test or scratch dir): nothing can start it again
					// there, and nothing is left to show. Only its owner
					// or root may remove it (the directory is sticky).
					os.Remove(file)
					return
				}
			}
			mu.Lock()
			out = append(out, instance{pidRecord: rec, Alive: alive, file: file})
			mu.Unlock()
		}(filepath.Join(registryDir(), e.Name()))
	}
	wg.Wait()
	slices.SortFunc(out, func(a, b instance) int {
		if c := strings.Compare(a.Name, b.Name); c != 0 {
			return c
		}
		if a.UID != b.UID {
			return a.UID - b.UID
		}
		return strings.Compare(a.StateDir, b.StateDir)
	})
	return out
}

// registeredAt returns the entry for the instance whose state dir is dir.
func registeredAt(dir string) (instance, bool) {
	for _, in := range listInstances() {
		if in.StateDir == dir {
			return in, true
		}
	}
	return instance{}, false
}

// safeName keeps an entry's file name to what instance names allow.
func safeName(s string) string {
	if s == "" {
		return "unnamed"
	}
	return strings.Map(func(r rune) rune {
		if r == '/' || r == 0 {
			return '_'
		}
		return r
	}, s)
}

// instanceRow is one line of `hermes status` on a host: an instance and
// what it is doing, told by its control socket (without its loop).
type instanceRow struct {
	Name     string `json:"name"`
	PID      int    `json:"pid"`
	User     string `json:"user"`
	Listen   string `json:"listen"`
	State    string `json:"state"`
	Policy   string `json:"policy"`
	StateDir string `json:"state_dir"`
	Sessions int    `json:"active_sessions"`
}

// rows tells what each instance is doing, all at once (a frozen one costs
// statusTimeout, not one each).
func instanceRows(ins []instance) []instanceRow {
	rows := make([]instanceRow, len(ins))
	var wg sync.WaitGroup
	for i, in := range ins {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := instanceRow{Name: in.Name, PID: in.PID, User: in.User, Listen: in.Listen, Policy: in.Policy, StateDir: in.StateDir}
			if r.User == "" {
				r.User = strconv.Itoa(in.UID)
			}
			if r.Policy == "" {
				r.Policy = "built-in defaults"
			}
			r.State, r.Sessions = instanceState(in)
			rows[i] = r
		}()
	}
	wg.Wait()
	return rows
}

func instanceState(in instance) (string, int) {
	if !in.Alive {
		return "gone: no clean exit recorded", 0
	}
	if _, st, err := procInfo(in.PID); err == nil {
		switch st {
		case 'T', 't':
			return verdictStopped, 0
		case 'Z':
			return verdictZombie, 0
		}
	}
	ans, err := controlRequest(in.Control, "status", statusTimeout)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ECONNREFUSED):
		return verdictStarting, 0
	case errors.Is(err, fs.ErrPermission):
		return "running (its control socket is its user's)", 0
	case err != nil:
		// A silent control socket: the heartbeat on the listen address
		// decides (status.go's viaListen).
		li := &inspection{PID: in.PID, Record: &in.pidRecord}
		if li.viaListen("no answer on the control socket") {
			return li.Verdict + " (control socket silent)", 0
		}
		return verdictFrozen, 0
	}
	var gs gatewayStatus
	if json.Unmarshal([]byte(ans), &gs) != nil {
		return verdictFrozen, 0
	}
	if gs.StaleAfterMS > 0 && gs.HeartbeatAgeMS > gs.StaleAfterMS {
		return verdictFrozen, gs.ActiveSessions
	}
	switch gs.State {
	case stateServing:
		return verdictServing, gs.ActiveSessions
	case stateStarting:
		return verdictStarting, gs.ActiveSessions
	}
	return verdictDraining, gs.ActiveSessions
}
