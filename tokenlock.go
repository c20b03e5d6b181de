package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// One token, one gateway. Two gateways polling one bot token fight (HTTP 409
// "polling conflict"), whatever their instance names, so the lock lives in
// one machine-wide directory and is named for the token's hash, never the
// token. The gateway holds an exclusive flock on it for its whole life: the
// kernel drops it when the process dies, so a stale lock cannot exist.
// Go opens files close-on-exec, so no child inherits the lock (a child that
// did would keep it after the gateway died; see FIELD-NOTES).

// tokenHolder is what the lock file says about the gateway holding it, for
// the message a second gateway prints. Never the token.
type tokenHolder struct {
	PID      int    `json:"pid"`
	Started  string `json:"started"`
	Instance string `json:"instance"`
	Policy   string `json:"policy"`
	Scope    string `json:"scope"`
}

// readLockToken returns the token the policy guards, or "" when there is
// none. A token file that is named but cannot be read is a policy error.
func readLockToken(p *Policy) (string, error) {
	return readToken(p, "lock", p.Lock.TokenEnv, p.Lock.TokenFile)
}

// readToken reads a secret named the way the policy names secrets: the
// environment variable env (tried first), else the file. "" when neither
// gives one; a file that is named but cannot be read is a policy error on
// section.token_file.
func readToken(p *Policy, section, env, file string) (string, error) {
	if env != "" {
		if tok := strings.TrimSpace(os.Getenv(env)); tok != "" {
			return tok, nil
		}
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return "", &configError{File: p.policyLabel(), Key: section + ".token_file", Msg: "cannot read the token file: " + err.Error()}
		}
		return strings.TrimSpace(string(b)), nil
	}
	return "", nil
}

// tokenLockPath is <lock_dir>/<scope>-<first 16 hex digits of sha256(token)>.lock.
func tokenLockPath(p *Policy, token string) string {
	sum := sha256.Sum256([]byte(token))
	return filepath.Join(p.Lock.Dir, p.Lock.Scope+"-"+hex.EncodeToString(sum[:])[:16]+".lock")
}

// warnReadable logs a warning for each file that group or others can read:
// the token file holds the secret, and the policy file says where it is.
func warnReadable(log *logger, p *Policy) {
	for _, f := range []struct{ key, path string }{{"policy", p.Path}, {"lock.token_file", p.Lock.TokenFile}} {
		if f.path == "" {
			continue
		}
		st, err := os.Stat(f.path)
		if err != nil || st.Mode().Perm()&0o044 == 0 {
			continue
		}
		log.warn(evFileReadable, "file", f.key, "path", f.path, "mode", fmt.Sprintf("%04o", st.Mode().Perm()),
			"fix", "chmod 600 "+f.path)
	}
}

// ensureLockDir creates the machine-wide lock dir like /tmp (mode 1777), so
// the gateways of other users can take their locks there too.
func ensureLockDir(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("creating lock dir %s: %w", dir, err)
	}
	if err := os.Mkdir(dir, 0o777|fs.ModeSticky); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating lock dir %s: %w", dir, err)
	}
	// Mkdir's mode passes through the umask; the sticky bit needs Chmod.
	if err := os.Chmod(dir, 0o777|fs.ModeSticky); err != nil {
		return fmt.Errorf("creating lock dir %s: %w", dir, err)
	}
	return nil
}

// acquireTokenLock takes the token lock, or returns nil, nil when the policy
// guards no token. On a conflict it returns an exit-78 error naming the
// holder and the command that stops it.
func acquireTokenLock(p *Policy, token string, log *logger) (*os.File, error) {
	if token == "" {
		return nil, nil
	}
	if err := ensureLockDir(p.Lock.Dir); err != nil {
		return nil, err
	}
	path := tokenLockPath(p, token)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		// Another user's lock file in a sticky dir: a read-only fd is
		// enough to flock it (fs.protected_regular refuses O_CREAT here).
		if f, err = os.Open(path); err != nil {
			return nil, fmt.Errorf("opening token lock %s: %w", path, err)
		}
	}
	if err := flockExclusive(f); err != nil {
		f.Close()
		h := readTokenHolder(path)
		log.errorf(evLockConflict, "scope", p.Lock.Scope, "lock", path,
			"holder_pid", h.PID, "holder_instance", h.Instance, "holder_policy", orDefault(h.Policy, "built-in defaults"))
		return nil, &exitError{code: exitConfig, err: h.conflictError(p.Lock.Scope, path)}
	}
	started, _ := time.Now().UTC().MarshalText()
	rec, _ := json.Marshal(tokenHolder{PID: os.Getpid(), Started: string(started), Instance: p.Name, Policy: p.Path, Scope: p.Lock.Scope})
	// The lock is on this fd: truncate and write in place, never rename.
	if err := f.Truncate(0); err == nil {
		f.WriteAt(append(rec, '\n'), 0)
	}
	log.info(evTokenLock, "scope", p.Lock.Scope, "lock", path)
	return f, nil
}

// readTokenHolder reads the holder's record. The holder writes it right
// after it locks, so an empty file is read again for a moment.
func readTokenHolder(path string) tokenHolder {
	var h tokenHolder
	for i := 0; i < 20; i++ {
		b, err := os.ReadFile(path)
		if err == nil && json.Unmarshal(b, &h) == nil && h.PID > 0 {
			return h
		}
		time.Sleep(10 * time.Millisecond)
	}
	return h
}

func (h tokenHolder) conflictError(scope, path string) error {
	if h.PID <= 0 {
		return withHint(fmt.Errorf("another gateway already uses this %s token (lock %s held; its holder did not say who it is)", scope, path),
			"find it with 'fuser %s' and stop it before starting this one", path)
	}
	stop := "hermes stop"
	if h.Policy != "" {
		stop += " --config " + h.Policy
	}
	return withHint(fmt.Errorf("another gateway already uses this %s token: pid %d, instance %q, policy %s, running since %s (lock %s)",
		scope, h.PID, h.Instance, orDefault(h.Policy, "built-in defaults"), h.Started, path),
		"two gateways on one token fight (HTTP 409 polling conflict); stop that one first: %s", stop)
}
