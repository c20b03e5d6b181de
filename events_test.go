package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestEventsGolden renders the timeline of a fixture journal (a restart, a
// frozen gateway healed by the watchdog, a crash-loop delay, a lock
// conflict, one damaged line). Refresh with: go test -run EventsGolden -update
func TestEventsGolden(t *testing.T) {
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/events.jsonl")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(journalPath(dir), src, 0o600)
	evs, skipped, err := readJournal(dir)
	if err != nil {
		t.Fatal(err)
	}
	if skipped != 1 {
		t.Errorf("skipped %d damaged lines, want 1", skipped)
	}
	spans(evs)
	var b bytes.Buffer
	renderEvents(&b, evs, time.UTC)
	golden := filepath.Join("testdata", "events.golden")
	if *update {
		os.WriteFile(golden, b.Bytes(), 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got := b.String(); got != string(want) {
		t.Errorf("timeline differs from %s (go test -run EventsGolden -update):\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
	for _, want := range []string{"3.36s after signal USR1", "202ms after exit of 4100", "10.1s after exit of 4200", "3.36s after rung USR1", "3.65s after restart requested", "3.01s after signal TERM"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("timeline lacks %q", want)
		}
	}
}

// TestEventsJournalOfRealGateway starts, drains and stops a real gateway,
// then reads its journal directly and through `hermes events`.
func TestEventsJournalOfRealGateway(t *testing.T) {
	e := newTestEnv(t, quickDrain)
	g := e.startGateway()
	s := startStream(t, g.url, 10)
	s.waitLines(t, 2, 5*time.Second)
	g.signal(syscall.SIGTERM)
	s.waitDone(t, 10*time.Second)
	if code := g.wait(10 * time.Second); code != exitOK {
		t.Fatalf("exit %d", code)
	}
	g2 := e.startGateway()
	g2.signal(syscall.SIGUSR1)
	g2.wait(10 * time.Second)

	evs, skipped, err := readJournal(e.stateDir)
	if err != nil || skipped != 0 {
		t.Fatalf("reading journal: %v, %d skipped", err, skipped)
	}
	var seq []string
	for _, ev := range evs {
		if ev.Instance != "test" || (ev.PID != g.pid() && ev.PID != g2.pid()) {
			t.Errorf("line with instance %q pid %d", ev.Instance, ev.PID)
		}
		seq = append(seq, ev.Event)
	}
	want := []string{"start", "ready", "signal", "drain start", "session finished", "drain end", "exit",
		"start", "ready", "signal", "drain start", "drain end", "exit"}
	if strings.Join(seq, "|") != strings.Join(want, "|") {
		t.Errorf("journal sequence:\n got %v\nwant %v", seq, want)
	}

	out, _, code := e.hermes(10*time.Second, "events")
	if code != 0 {
		t.Fatalf("hermes events: exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != len(want)+1 || !strings.HasPrefix(lines[0], "TIME") {
		t.Errorf("hermes events printed %d lines, want header + %d:\n%s", len(lines), len(want), out)
	}
	for _, w := range []string{"after signal TERM", "after signal USR1", "after exit of", "code=75 reason=\"planned restart\""} {
		if !strings.Contains(out, w) {
			t.Errorf("hermes events lacks %q:\n%s", w, out)
		}
	}
	jout, _, _ := e.hermes(10*time.Second, "events", "--json")
	jl := strings.Split(strings.TrimSpace(jout), "\n")
	if len(jl) != len(want) {
		t.Errorf("events --json: %d lines, want %d", len(jl), len(want))
	}
	for _, l := range jl {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil || m["event"] == nil || m["time"] == nil || m["pid"] == nil {
			t.Errorf("events --json line %q: %v", l, err)
		}
	}
	if out, _, _ := e.hermes(10*time.Second, "events", "--since", "1ns"); strings.Count(out, "\n") != 1 {
		t.Errorf("events --since 1ns printed more than the header:\n%s", out)
	}
	if _, _, code := e.hermes(10*time.Second, "events", "extra"); code != exitUsage {
		t.Errorf("events with an argument: exit %d, want 2", code)
	}
}
