package main

import (
	"bytes"
	"encoding/json"
	"fmt"
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
	if out, errOut, code := e.hermes(10*time.Second, "events", "--since", "1ns"); out != "" || code != exitOK || !strings.Contains(errOut, "no lifecycle events since") {
		t.Errorf("events --since 1ns: exit %d, want 0, no timeline and a line saying there is none:\n%s%s", code, out, errOut)
	}
	if _, _, code := e.hermes(10*time.Second, "events", "extra"); code != exitUsage {
		t.Errorf("events with an argument: exit %d, want 2", code)
	}
}

// TestParseSince: --since takes what an operator types, and refuses the
// rest with the forms it takes.
func TestParseSince(t *testing.T) {
	loc := time.FixedZone("CET", 3600)
	now := time.Date(2026, 11, 23, 14, 30, 0, 0, loc)
	for _, tc := range []struct {
		in   string
		want time.Time
		err  string
	}{
		{in: "90s", want: now.Add(-90 * time.Second)},
		{in: "5m", want: now.Add(-5 * time.Minute)},
		{in: "2h", want: now.Add(-2 * time.Hour)},
		{in: "3d", want: now.Add(-72 * time.Hour)},
		{in: "1d12h", want: now.Add(-36 * time.Hour)},
		{in: " 1h ", want: now.Add(-time.Hour)},
		{in: "today", want: time.Date(2026, 11, 23, 0, 0, 0, 0, loc)},
		{in: "Yesterday", want: time.Date(2026, 11, 22, 0, 0, 0, 0, loc)},
		{in: "2026-11-20", want: time.Date(2026, 11, 20, 0, 0, 0, 0, loc)},
		{in: "2026-11-20 09:15", want: time.Date(2026, 11, 20, 9, 15, 0, 0, loc)},
		{in: "2026-11-20T09:15:30", want: time.Date(2026, 11, 20, 9, 15, 30, 0, loc)},
		{in: "2026-11-20T09:15:00Z", want: time.Date(2026, 11, 20, 9, 15, 0, 0, time.UTC)},
		{in: "2026-11-20T09:15:00.5+05:00", want: time.Date(2026, 11, 20, 9, 15, 0, 5e8, time.FixedZone("", 5*3600))},
		{in: "-5m", err: "a negative duration: write how far back to go, like 5m"},
		{in: "-1d", err: "not a time or a duration"},
		{in: "0", err: "a zero duration: leave --since out"},
		{in: "0s", err: "a zero duration"},
		{in: "5", err: "a number without a unit: write 5s, 5m, 5h or 5d"},
		{in: "yesterdy", err: "not a time or a duration: use " + sinceForms},
		{in: "", err: "not a time or a duration"},
		{in: "2026-13-01", err: "not a time or a duration"},
		{in: "3dd", err: "not a time or a duration"},
	} {
		got, err := parseSince(tc.in, now)
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("parseSince(%q) = %v, %v; want an error with %q", tc.in, got, err, tc.err)
		case tc.err == "" && (err != nil || !got.Equal(tc.want)):
			t.Errorf("parseSince(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

// TestEventsSinceOnRealJournal: hermes events --since filters a real
// journal by the forms people type, and refuses a bad one with exit 2.
func TestEventsSinceOnRealJournal(t *testing.T) {
	e := newTestEnv(t, "")
	now := time.Now()
	y, m, d := now.Date()
	yesterday := time.Date(y, m, d-1, 0, 0, 0, 0, time.Local)
	var lines []string
	for i, at := range []time.Time{yesterday.Add(-time.Minute), yesterday.Add(time.Minute), now.Add(-time.Minute)} {
		lines = append(lines, fmt.Sprintf(`{"time":%q,"pid":%d,"instance":"test","event":"start"}`, at.UTC().Format(time.RFC3339Nano), 100+i))
	}
	os.MkdirAll(e.stateDir, 0o700)
	if err := os.WriteFile(journalPath(e.stateDir), []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		since string
		pids  string
	}{
		{"yesterday", "101 102"},
		{"5m", "102"},
		{"3d", "100 101 102"},
		{yesterday.Format("2006-01-02"), "101 102"},
		{now.Add(-time.Hour).Format(time.RFC3339), "102"},
	} {
		out, errOut, code := e.hermes(20*time.Second, "events", "--since", tc.since, "--json")
		var pids []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			var ev struct{ PID int }
			json.Unmarshal([]byte(l), &ev)
			pids = append(pids, fmt.Sprint(ev.PID))
		}
		if code != 0 || strings.Join(pids, " ") != tc.pids {
			t.Errorf("events --since %s = %d, pids %q, want %q\n%s", tc.since, code, pids, tc.pids, errOut)
		}
	}
	_, errOut, code := e.hermes(20*time.Second, "events", "--since", "-5m")
	if code != exitUsage || !strings.Contains(errOut, `--since "-5m": a negative duration`) {
		t.Errorf("events --since -5m = %d:\n%s", code, errOut)
	}
}
