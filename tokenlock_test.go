package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const testToken = "123456:AAH-test-bot-token-never-to-be-seen"

// tokenPolicy guards the token in $HERMES_TEST_BOT_TOKEN with a lock in lockDir.
func tokenPolicy(lockDir string) string {
	return fmt.Sprintf("[lock]\ntoken_env = \"HERMES_TEST_BOT_TOKEN\"\nscope = \"telegram-bot\"\nlock_dir = %q\n", lockDir)
}

func TestTokenLockSecondGatewayExits78(t *testing.T) {
	lockDir := filepath.Join(t.TempDir(), "locks") // created by the gateway
	first := newTestEnv(t, tokenPolicy(lockDir))
	first.env = append(first.env, "HERMES_TEST_BOT_TOKEN="+testToken)
	g1 := first.startGateway()
	g1.waitLog("token lock scope=telegram-bot lock="+lockDir, 5*time.Second)

	second := newTestEnv(t, tokenPolicy(lockDir))
	second.env = append(second.env, "HERMES_TEST_BOT_TOKEN="+testToken)
	start := time.Now()
	_, stderr, code := second.hermes(10*time.Second, "serve")
	if code != exitConfig {
		t.Fatalf("second gateway on one token: exit %d, want %d\n%s", code, exitConfig, stderr)
	}
	t.Logf("second gateway gave up after %s", time.Since(start).Round(time.Millisecond))
	for _, want := range []string{fmt.Sprintf("pid %d", g1.pid()), `instance "test"`, first.policy, "hermes stop --config " + first.policy} {
		if !strings.Contains(stderr, want) {
			t.Errorf("conflict message lacks %q:\n%s", want, stderr)
		}
	}
	if st, err := os.Stat(lockDir); err != nil || st.Mode()&os.ModeSticky == 0 || st.Mode().Perm() != 0o777 {
		t.Errorf("lock dir %s: %v %v, want drwxrwxrwt", lockDir, st.Mode(), err)
	}
	evs, _, err := readJournal(second.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	if !hasEvent(evs, evLockConflict, "holder_pid", strconv.Itoa(g1.pid())) {
		t.Errorf("second gateway's journal lacks a lock conflict naming pid %d: %+v", g1.pid(), evs)
	}
	l, _ := readStartLedger(second.stateDir)
	if len(l.Starts) != 0 {
		t.Errorf("a lock conflict counted as a start: %+v", l.Starts)
	}
	if len(l.Exits) != 1 || l.Exits[0].Code != exitConfig || l.Exits[0].Reason != "lock conflict" {
		t.Errorf("ledger exits = %+v, want one: 78, lock conflict", l.Exits)
	}

	// The kernel drops the lock with its holder: no stale lock after kill -9.
	g1.signal(syscall.SIGKILL)
	g1.wait(5 * time.Second)
	g2 := second.spawnGateway()
	g2.waitReady(3 * time.Second)
	g2.signal(syscall.SIGTERM)
	if code := g2.wait(10 * time.Second); code != exitOK {
		t.Errorf("gateway after the kill: exit %d, want 0", code)
	}
}

func TestTokenLockFdIsCloseOnExec(t *testing.T) {
	lockDir := t.TempDir()
	e := newTestEnv(t, tokenPolicy(lockDir))
	e.env = append(e.env, "HERMES_TEST_BOT_TOKEN="+testToken)
	g := e.startGateway()
	locks, _ := filepath.Glob(filepath.Join(lockDir, "telegram-bot-*.lock"))
	if len(locks) != 1 {
		t.Fatalf("lock files in %s: %v, want one", lockDir, locks)
	}
	if len(filepath.Base(locks[0])) != len("telegram-bot-")+16+len(".lock") {
		t.Errorf("lock file name %s: want <scope>-<16 hex digits>.lock", locks[0])
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", g.pid()))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	found := false
	for _, fd := range fds {
		target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", g.pid(), fd.Name()))
		if target != locks[0] {
			continue
		}
		found = true
		info, err := os.ReadFile(fmt.Sprintf("/proc/%d/fdinfo/%s", g.pid(), fd.Name()))
		if err != nil {
			t.Fatal(err)
		}
		var flags uint64
		for _, line := range strings.Split(string(info), "\n") {
			if v, ok := strings.CutPrefix(line, "flags:"); ok {
				flags, _ = strconv.ParseUint(strings.TrimSpace(v), 8, 64)
			}
		}
		if flags&syscall.O_CLOEXEC == 0 {
			t.Errorf("lock fd %s flags %o lack O_CLOEXEC: a child would inherit the lock", fd.Name(), flags)
		}
	}
	if !found {
		t.Errorf("gateway pid %d holds no fd on %s", g.pid(), locks[0])
	}
	b, _ := os.ReadFile(locks[0])
	for _, want := range []string{fmt.Sprintf(`"pid":%d`, g.pid()), `"instance":"test"`, e.policy} {
		if !strings.Contains(string(b), want) {
			t.Errorf("lock file lacks %s: %s", want, b)
		}
	}
}

// TestTokenLockTokenAppearsNowhere runs a gateway whose token comes from a
// token file (group-readable, so it also warns) and whose upstream key is
// set, takes it through start, a conflict, a stop, and every command that
// prints, and greps everything for both secrets.
func TestTokenLockTokenAppearsNowhere(t *testing.T) {
	const upstreamKey = "sk-test-upstream-key-never-to-be-seen"
	lockDir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "bot.token")
	if err := os.WriteFile(tokenFile, []byte(testToken+"\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	os.Chmod(tokenFile, 0o640)
	pol := fmt.Sprintf("[lock]\ntoken_file = %q\nlock_dir = %q\n", tokenFile, lockDir)
	e := newTestEnv(t, pol)
	e.env = append(e.env, "HERMES_UPSTREAM_KEY="+upstreamKey)
	g := e.startGateway()
	g.waitLog("file readable by others", 5*time.Second)

	other := newTestEnv(t, pol)
	other.env = append(other.env, "HERMES_UPSTREAM_KEY="+upstreamKey)
	o1, o2, code := other.hermes(10*time.Second, "serve")
	if code != exitConfig {
		t.Errorf("second gateway: exit %d, want 78", code)
	}
	g.signal(syscall.SIGTERM)
	g.wait(10 * time.Second)

	outputs := []string{g.stderr.String(), o1, o2}
	for _, args := range [][]string{{"check-config"}, {"events"}, {"events", "--json"}} {
		out, errout, _ := e.hermes(10*time.Second, args...)
		outputs = append(outputs, out, errout)
		if args[0] == "events" && !strings.Contains(out, "file readable by others") {
			t.Errorf("hermes %s lacks the warning:\n%s", strings.Join(args, " "), out)
		}
	}
	for _, secret := range []string{testToken, upstreamKey} {
		for i, out := range outputs {
			if strings.Contains(out, secret) {
				t.Errorf("output %d holds a secret:\n%s", i, out)
			}
		}
		for _, dir := range []string{e.dir, other.dir, lockDir} {
			filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
				if err != nil || !info.Mode().IsRegular() || path == tokenFile {
					return nil
				}
				if b, _ := os.ReadFile(path); strings.Contains(string(b), secret) {
					t.Errorf("%s holds a secret", path)
				}
				return nil
			})
		}
	}
}

func hasEvent(evs []journalEvent, ev0 event, key, value string) bool {
	for _, ev := range evs {
		if ev.Kind == ev0 && (key == "" || ev.str(key) == value) {
			return true
		}
	}
	return false
}

// TestTokenLockIsPerToken: the lock is named for the token's hash, not the
// scope: two gateways with different tokens in one scope and lock dir both
// run.
func TestTokenLockIsPerToken(t *testing.T) {
	lockDir := t.TempDir()
	var gs []*gatewayProc
	for _, tok := range []string{testToken, testToken + "-other"} {
		e := newTestEnv(t, tokenPolicy(lockDir))
		e.env = append(e.env, "HERMES_TEST_BOT_TOKEN="+tok)
		gs = append(gs, e.startGateway())
	}
	for i, g := range gs {
		if g.hasExited() {
			t.Errorf("gateway %d exited %d: two tokens collided\n%s", i, g.code, g.stderr.String())
		}
	}
	locks, _ := filepath.Glob(filepath.Join(lockDir, "telegram-bot-*.lock"))
	if len(locks) != 2 {
		t.Errorf("lock files %v, want one per token", locks)
	}
}
