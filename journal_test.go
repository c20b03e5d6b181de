package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

func testJournal(t *testing.T, maxBytes int64) (*journal, string) {
	t.Helper()
	p := defaultPolicy()
	p.Name = "test"
	p.Gateway.StateDir = t.TempDir()
	p.Journal.MaxBytes = maxBytes
	return openJournal(p), p.Gateway.StateDir
}

// journalLines returns every line of events.jsonl.1 and events.jsonl and
// fails on any that is not one whole JSON object.
func journalLines(t *testing.T, dir string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, path := range []string{journalPath(dir) + ".1", journalPath(dir)} {
		b, err := os.ReadFile(path)
		if os.IsNotExist(err) {
			continue
		}
		if len(b) > 0 && b[len(b)-1] != '\n' {
			t.Errorf("%s does not end with a newline", path)
		}
		for _, l := range bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n")) {
			var m map[string]any
			if err := json.Unmarshal(l, &m); err != nil {
				t.Errorf("%s: torn or interleaved line %q: %v", path, l, err)
				continue
			}
			out = append(out, m)
		}
	}
	return out
}

func TestJournalLineFormat(t *testing.T) {
	j, dir := testJournal(t, 1<<20)
	j.record(evExit, map[string]any{"code": 75, "reason": "planned restart", "duration": 1500 * time.Millisecond,
		"error": fmt.Errorf("boom"), "pid": 7, "event": "x"})
	b, _ := os.ReadFile(journalPath(dir))
	line := string(b)
	wantPrefix := `{"time":"`
	if !strings.HasPrefix(line, wantPrefix) || !strings.Contains(line, fmt.Sprintf(`"pid":%d,"instance":"test","event":"exit",`, os.Getpid())) {
		t.Errorf("line %s: want time, pid, instance, event first", line)
	}
	for _, want := range []string{`"code":75`, `"reason":"planned restart"`, `"duration":"1.5s"`, `"error":"boom"`, `"pid_":7`, `"event_":"x"`} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %s: %s", want, line)
		}
	}
	m := journalLines(t, dir)[0]
	if _, err := time.Parse(time.RFC3339Nano, m["time"].(string)); err != nil {
		t.Errorf("time: %v", err)
	}
	if st, _ := os.Stat(journalPath(dir)); st.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v, want 0600", st.Mode())
	}
}

func TestJournalScrubsSecrets(t *testing.T) {
	const key, token = "sk-upstream-secret-1234", "987:bot-token-secret"
	t.Setenv("HERMES_UPSTREAM_KEY", key)
	t.Setenv("HERMES_TEST_BOT_TOKEN", token)
	p := defaultPolicy()
	p.Gateway.StateDir = t.TempDir()
	p.Lock.TokenEnv = "HERMES_TEST_BOT_TOKEN"
	j := openJournal(p)
	j.record(evSignal, map[string]any{"a": key, "b": "Bearer " + key, "c": token, "d": fmt.Errorf("auth %s failed", token), "ok": "kept"})
	b, _ := os.ReadFile(journalPath(p.Gateway.StateDir))
	if strings.Contains(string(b), key) || strings.Contains(string(b), token) || strings.Contains(string(b), `"a"`) {
		t.Errorf("journal holds a secret: %s", b)
	}
	if !strings.Contains(string(b), `"ok":"kept"`) {
		t.Errorf("scrub dropped an innocent field: %s", b)
	}
}

func TestJournalRotates(t *testing.T) {
	j, dir := testJournal(t, 4096)
	for i := 0; i < 300; i++ {
		j.record(evSignal, map[string]any{"n": i, "pad": strings.Repeat("x", 50)})
	}
	for _, path := range []string{journalPath(dir), journalPath(dir) + ".1"} {
		st, err := os.Stat(path)
		if err != nil || st.Size() > 4096 || st.Size() == 0 {
			t.Errorf("%s: %v, size %d, want 1..4096", path, err, st.Size())
		}
	}
	lines := journalLines(t, dir)
	// The newest lines survive, in order, with no gap.
	last := lines[len(lines)-1]["n"].(float64)
	if last != 299 {
		t.Errorf("newest line n=%v, want 299", last)
	}
	for i := 1; i < len(lines); i++ {
		if lines[i]["n"].(float64) != lines[i-1]["n"].(float64)+1 {
			t.Fatalf("gap or reorder between lines %d and %d", i-1, i)
		}
	}
}

// TestJournalConcurrentAppenders has goroutines (each append opens its own
// file description, as another process would) write long lines at once:
// none is lost, none is torn.
func TestJournalConcurrentAppenders(t *testing.T) {
	j, dir := testJournal(t, 64<<20)
	const writers, each = 8, 200
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < each; i++ {
				j.appendLines([][]byte{j.line(time.Now(), "tick", map[string]any{"w": w, "i": i, "pad": strings.Repeat(string(rune('a'+w)), 100+w*300)})})
			}
		}()
	}
	wg.Wait()
	if got := len(journalLines(t, dir)); got != writers*each {
		t.Errorf("%d lines, want %d", got, writers*each)
	}
}

// TestJournalConcurrentProcessesWithRotation runs a gateway and, at once,
// many hermes processes that fail on its instance lock (each journals its
// exit) plus in-process appenders, with a journal rotated every 4 KiB:
// every line of both files is whole.
func TestJournalConcurrentProcessesWithRotation(t *testing.T) {
	t.Parallel() // waits on processes: see TestMain
	e := newTestEnv(t, "[journal]\nmax_bytes = 4096\n")
	e.startGateway()
	p, err := loadPolicy(e.policy)
	if err != nil {
		t.Fatal(err)
	}
	j := openJournal(p)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				j.record(evSignal, map[string]any{"w": w, "i": i, "pad": strings.Repeat("p", 200)})
			}
		}()
	}
	var cmds []*exec.Cmd
	for i := 0; i < 24; i++ {
		cmd := exec.Command(hermesBin, "serve")
		cmd.Env = e.env
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	for _, cmd := range cmds {
		cmd.Wait()
	}
	close(stop)
	wg.Wait()
	lines := journalLines(t, e.stateDir)
	if len(lines) < 10 {
		t.Errorf("only %d lines", len(lines))
	}
	if _, err := os.Stat(journalPath(e.stateDir) + ".1"); err != nil {
		t.Errorf("the journal never rotated: %v", err)
	}
	// Each process journaled its exit right before it recorded it in the
	// ledger; the rotation may have dropped the lines, not the ledger.
	l, _ := readStartLedger(e.stateDir)
	others := 0
	for _, ex := range l.Exits {
		if ex.Reason == "instance already running" && ex.Code == exitConfig {
			others++
		}
	}
	if others != len(cmds) {
		t.Errorf("%d processes recorded their exit, want %d", others, len(cmds))
	}
	for _, path := range []string{journalPath(e.stateDir), journalPath(e.stateDir) + ".1"} {
		if st, err := os.Stat(path); err != nil || st.Size() > 4096 {
			t.Errorf("%s: %v, want at most 4096 bytes", path, err)
		}
	}
}

func BenchmarkJournalAppend(b *testing.B) {
	p := defaultPolicy()
	p.Gateway.StateDir = b.TempDir()
	j := openJournal(p)
	fields := map[string]any{"signal": "TERM", "action": "drain", "sessions": 3}
	for b.Loop() {
		j.record(evSignal, fields)
	}
}

// A journal lock that is never released (its holder stopped with Ctrl-Z)
// delays an append by a bounded moment, never forever.
func TestJournalStuckLockHolder(t *testing.T) {
	j, dir := testJournal(t, 4096)
	j.record(evStart, nil)
	lk, err := os.OpenFile(journalPath(dir)+".lock", os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.Close()
	if err := flockExclusive(lk); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	j.record(evReady, nil)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("append waited %s on a stuck lock", d)
	}
	if lines := journalLines(t, dir); len(lines) != 2 || lines[1]["event"] != "ready" {
		t.Errorf("lines = %v, want first and second", lines)
	}
}
