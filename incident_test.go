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

// incidentFixture reads testdata/incidents/<name>.jsonl as `hermes events`
// would read a journal, and returns its events (spans filled) and
// incidents.
func incidentFixture(t *testing.T, name string) ([]journalEvent, []*incident) {
	t.Helper()
	src, err := os.ReadFile(filepath.Join("testdata", "incidents", name+".jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(journalPath(dir), src, 0o600); err != nil {
		t.Fatal(err)
	}
	evs, skipped, err := readJournal(dir)
	if err != nil || skipped != 0 {
		t.Fatalf("reading %s: %v, %d damaged lines", name, err, skipped)
	}
	spans(evs)
	return evs, findIncidents(evs, 2*time.Minute)
}

// checkGolden compares got with testdata/incidents/<file>; -update
// rewrites it.
func checkGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	golden := filepath.Join("testdata", "incidents", file)
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("output differs from %s (go test -run IncidentGolden -update):\ngot:\n%s\nwant:\n%s", golden, got, want)
	}
}

// TestIncidentGolden renders the most recent incident of each fixture
// journal, as text and as JSON, in UTC. Refresh with:
// go test -run IncidentGolden -update
func TestIncidentGolden(t *testing.T) {
	for _, tc := range []struct {
		name          string
		kind, end     string
		incidents     int
		unavailableMS int64
		sessionsCut   int
		turnsCut      int
		turnsRerun    int
		summary       []string
	}{
		{name: "watchdog", kind: kindWatchdog, end: endReady, incidents: 2, unavailableMS: 15209, turnsRerun: 1,
			summary: []string{"froze in main.(*gateway).loop", "watchdog-1777636810-4150.stack and exited 70", "pid 4242", "Unavailable 15.21s (from 12:00:00.100)",
				"1 Telegram turn was re-run", "watchdog exit 70", "restart by the service manager", "alert sent"}},
		{name: "crashloop", kind: kindCrashLoop, end: endReady, incidents: 1, unavailableMS: 7455,
			summary: []string{"crash-looped", "4 gateways exited with a failure", "4× exit 1: failure", "delayed 3 starts (1s, 2s, 4s)",
				"After 4 starts, gateway pid 5060 was ready", "crash-loop delay of 1s, 2s, 4s"}},
		{name: "unclean", kind: kindUnclean, end: endReady, incidents: 1, unavailableMS: 22815,
			summary: []string{"pid 6100 died without recording its exit", "SIGKILL, the OOM killer", "it was last seen alive at 15:20:50", "pid 6177", "unclean exit found at the next start"}},
		{name: "drain-cut", kind: kindCut, end: endReady, incidents: 1, unavailableMS: 90247, sessionsCut: 2, turnsCut: 1, turnsRerun: 1,
			summary: []string{"drain.timeout 1m30s with 3 sessions open", "2 sessions were cut; 1 Telegram turn was cut; 1 Telegram turn was re-run", "started by systemd (restart)"}},
		{name: "telegram", kind: kindTelegram, end: endRecover, incidents: 1, unavailableMS: 0,
			summary: []string{"another poller uses the bot token", "after 2m31.25s (9 conflicts)", "degraded for 2m31s"}},
		{name: "lock", kind: kindLock, end: endOngoing, incidents: 1, unavailableMS: 2,
			summary: []string{"could not take the token lock (scope telegram-bot): pid 9001 of instance other holds it", "It is not over", "exit 78 on the lock conflict"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, incs := incidentFixture(t, tc.name)
			if len(incs) != tc.incidents {
				t.Fatalf("%d incidents, want %d", len(incs), tc.incidents)
			}
			inc := incs[len(incs)-1]
			var b bytes.Buffer
			renderIncident(&b, inc, time.UTC)
			checkGolden(t, tc.name+".golden", b.Bytes())
			j, err := json.MarshalIndent(inc.json(time.UTC), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, tc.name+".json.golden", append(j, '\n'))

			var got incidentJSON
			if err := json.Unmarshal(j, &got); err != nil {
				t.Fatal(err)
			}
			if got.Kind != tc.kind || got.End != tc.end || got.UnavailableMS != tc.unavailableMS || got.SessionsCut != tc.sessionsCut ||
				got.TurnsCut != tc.turnsCut || got.TurnsRerun != tc.turnsRerun {
				t.Errorf("kind %s end %s unavailable_ms %d cut %d/%d rerun %d; want %s %s %d %d/%d %d", got.Kind, got.End, got.UnavailableMS,
					got.SessionsCut, got.TurnsCut, got.TurnsRerun, tc.kind, tc.end, tc.unavailableMS, tc.sessionsCut, tc.turnsCut, tc.turnsRerun)
			}
			if len(got.Events) != inc.last-inc.first+1 || got.Started == "" || got.Ended == "" {
				t.Errorf("json: %d events, started %q, ended %q", len(got.Events), got.Started, got.Ended)
			}
			for _, e := range got.Events {
				var m map[string]any
				if json.Unmarshal(e, &m) != nil || m["event"] == nil || m["time"] == nil {
					t.Errorf("json event %s is not a journal line", e)
				}
			}
			for _, w := range tc.summary {
				if !strings.Contains(got.Summary, w) {
					t.Errorf("summary lacks %q:\n%s", w, got.Summary)
				}
			}
		})
	}
}

// TestIncidentGrouping pins the rules that decide where an incident starts
// and ends.
func TestIncidentGrouping(t *testing.T) {
	evs, incs := incidentFixture(t, "watchdog")
	// The older crash is an incident of its own, ended by the next ready.
	if old := incs[0]; old.kind != kindCrash || evs[old.first].Event != "exit" || evs[old.last].Event != "ready" || evs[old.last].PID != 4150 {
		t.Errorf("older incident: %s, %s..%s", old.kind, evs[old.first].Event, evs[old.last].Event)
	}
	// The watchdog incident takes the alert in and the re-run after the
	// ready, not the re-run's answer or the later reload.
	w := incs[1]
	if evs[w.first].Kind != evWatchdog || evs[w.last].Kind != evTelegramRerun {
		t.Errorf("watchdog incident spans %s..%s, want watchdog fired..telegram rerun", evs[w.first].Event, evs[w.last].Event)
	}
	// Unavailable from the last heartbeat (10.004s before the watchdog).
	if want := time.Date(2026, 5, 1, 12, 0, 0, 100e6, time.UTC); !w.downFrom.Equal(want) {
		t.Errorf("unavailable from %s, want %s", w.downFrom, want)
	}

	// A crash loop is one incident, however many readies in between; the
	// planned restart before it and the planned stop after it are not in it.
	evs, incs = incidentFixture(t, "crashloop")
	c := incs[0]
	if evs[c.first].PID != 5010 || evs[c.first].Event != "exit" || evs[c.last].PID != 5060 || evs[c.last].Event != "ready" {
		t.Errorf("crash loop spans %d %s .. %d %s", evs[c.first].PID, evs[c.first].Event, evs[c.last].PID, evs[c.last].Event)
	}
	// A restart request in flight is the incident's cause, and its answer
	// ends it.
	evs, incs = incidentFixture(t, "drain-cut")
	if d := incs[0]; evs[d.first].Kind != evRestartRequested || evs[d.last].Kind != evTelegramRerun {
		t.Errorf("drain-cut spans %s..%s", evs[d.first].Event, evs[d.last].Event)
	}
	if _, incs := incidentFixture(t, "none"); len(incs) != 0 {
		t.Errorf("planned restarts only: %d incidents, want none", len(incs))
	}

	// Two crashes further apart than the settle window are two incidents;
	// closer, one.
	line := func(at string, pid int, ev string, kv ...string) journalEvent {
		tm, _ := time.Parse(time.RFC3339Nano, at)
		e := journalEvent{Time: tm, PID: pid, Event: ev, Kind: eventNamed(ev), Fields: map[string]any{}}
		for i := 0; i+1 < len(kv); i += 2 {
			e.Fields[kv[i]] = kv[i+1]
		}
		return e
	}
	mk := func(gap time.Duration) []journalEvent {
		t0 := time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)
		at := func(d time.Duration) string { return t0.Add(d).Format(time.RFC3339Nano) }
		return []journalEvent{
			line(at(0), 1, "ready"),
			line(at(time.Second), 1, "exit", "code", "1"),
			line(at(2*time.Second), 2, "ready"),
			line(at(2*time.Second+gap), 2, "exit", "code", "2"),
			line(at(3*time.Second+gap), 3, "ready"),
		}
	}
	if n := len(findIncidents(mk(time.Minute), 2*time.Minute)); n != 1 {
		t.Errorf("crashes 1m apart, settle 2m: %d incidents, want 1", n)
	}
	if n := len(findIncidents(mk(5*time.Minute), 2*time.Minute)); n != 2 {
		t.Errorf("crashes 5m apart, settle 2m: %d incidents, want 2", n)
	}
	// A person's restart in between separates them.
	evs = mk(time.Minute)
	evs = append(evs[:3], append([]journalEvent{line(evs[2].Time.Add(time.Second).Format(time.RFC3339Nano), 9, "restart requested")}, evs[3:]...)...)
	if n := len(findIncidents(evs, 2*time.Minute)); n != 2 {
		t.Errorf("crashes with a restart requested between: %d incidents, want 2", n)
	}
	// So does a planned stop.
	evs = mk(time.Minute)
	evs = append(evs[:3], append([]journalEvent{line(evs[2].Time.Add(time.Second).Format(time.RFC3339Nano), 2, "exit", "code", "0")}, evs[3:]...)...)
	if n := len(findIncidents(evs, 2*time.Minute)); n != 2 {
		t.Errorf("crashes with a planned stop between: %d incidents, want 2", n)
	}
}

// TestIncidentAbnormalSet: what counts as abnormal, degraded, or neither.
func TestIncidentAbnormalSet(t *testing.T) {
	ev := func(name string, kv ...any) journalEvent {
		e := journalEvent{Event: name, Kind: eventNamed(name), Fields: map[string]any{}}
		for i := 0; i+1 < len(kv); i += 2 {
			e.Fields[kv[i].(string)] = kv[i+1]
		}
		return e
	}
	for _, tc := range []struct {
		ev                 journalEvent
		abnormal, degraded bool
	}{
		{ev("watchdog fired"), true, false},
		{ev("exit", "code", json.Number("70")), true, false},
		{ev("exit", "code", json.Number("1")), true, false},
		{ev("exit", "code", json.Number("78")), true, false},
		{ev("exit", "code", json.Number("0")), false, false},
		{ev("exit", "code", json.Number("75")), false, false},
		{ev("serve failed"), true, false},
		{ev("unclean exit"), true, false},
		{ev("crash loop delay"), true, false},
		{ev("lock conflict"), true, false},
		{ev("handoff failed"), true, false},
		{ev("handoff failback"), true, false},
		{ev("drain timeout"), true, false},
		{ev("restart done", "ok", false), true, false},
		{ev("restart done", "ok", true), false, false},
		{ev("verdict", "verdict", "frozen"), true, false},
		{ev("verdict", "verdict", "serving"), false, false},
		{ev("rung sent", "signal", "KILL"), true, false},
		{ev("rung sent", "signal", "TERM"), false, false},
		{ev("telegram conflict"), true, true},
		{ev("telegram poll failing"), true, true},
		{ev("memory limit"), true, false},
		{ev("alert sent"), false, false},
		{ev("alert failed"), false, false},
		{ev("session cut"), false, false},
		{ev("ready"), false, false},
	} {
		ab, deg := abnormalEvent(tc.ev)
		if ab != tc.abnormal || deg != tc.degraded {
			t.Errorf("%s %v: abnormal %v degraded %v, want %v %v", tc.ev.Event, tc.ev.Fields, ab, deg, tc.abnormal, tc.degraded)
		}
	}
}

// TestIncidentNone: a journal without an incident says so in one line.
func TestIncidentNone(t *testing.T) {
	evs, _ := incidentFixture(t, "none")
	p := defaultPolicy()
	p.Gateway.StateDir = t.TempDir()
	for _, asJSON := range []bool{false, true} {
		var out, errOut bytes.Buffer
		if err := printIncident(&out, &errOut, evs, time.Time{}, p, asJSON); err != nil {
			t.Fatal(err)
		}
		wantOut := ""
		if asJSON {
			wantOut = "null\n"
		}
		if out.String() != wantOut || strings.Count(errOut.String(), "\n") != 1 || !strings.Contains(errOut.String(), "no incident in ") {
			t.Errorf("json=%v: stdout %q, stderr %q; want %q and one line saying there is no incident", asJSON, out.String(), errOut.String(), wantOut)
		}
	}
}

// TestIncidentRealWatchdogAndCrashLoop freezes a real gateway until the
// watchdog ends it (exit 70), starts it again, and asks `hermes events
// --incident` what happened; then crashes gateways right after their
// ready until the crash-loop guard delays them, and asks again.
func TestIncidentRealWatchdogAndCrashLoop(t *testing.T) {
	e := newTestEnv(t, "[watchdog]\ntimeout = \"2s\"\nsignal_timeout = \"0s\"\n"+
		"[crash_loop]\nstarts = 2\nwindow = \"1m\"\nbase_delay = \"100ms\"\nmax_delay = \"1s\"\n")
	if out, errOut, code := e.hermes(10*time.Second, "events", "--incident"); code != 0 || out != "" {
		t.Errorf("events --incident before any gateway: exit %d\n%s%s", code, out, errOut)
	}
	g := e.startGateway(frozen)
	if code := g.wait(15 * time.Second); code != exitWatchdog {
		t.Fatalf("frozen gateway: exit %d, want %d\n%s", code, exitWatchdog, g.stderr.String())
	}
	g2 := e.startGateway()
	out, errOut, code := e.hermes(10*time.Second, "events", "--incident")
	if code != 0 {
		t.Fatalf("events --incident: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"Incident: watchdog: frozen loop", "The gateway's loop froze in main.freezeLoopForTest",
		fmt.Sprintf("pid %d", g.pid()), fmt.Sprintf("A new gateway (pid %d) was ready", g2.pid()), "Unavailable ", "watchdog exit 70", "watchdog fired", "exit"} {
		if !strings.Contains(unwrapped(out), want) {
			t.Errorf("events --incident lacks %q:\n%s", want, out)
		}
	}
	jout, _, _ := e.hermes(10*time.Second, "events", "--incident", "--json")
	var j incidentJSON
	if err := json.Unmarshal([]byte(jout), &j); err != nil {
		t.Fatalf("events --incident --json: %v\n%s", err, jout)
	}
	// Unavailable from the last heartbeat (watchdog.timeout 2s before the
	// watchdog fired) to the new gateway's ready.
	if j.Kind != kindWatchdog || j.End != endReady || j.UnavailableMS < 2000 || !strings.Contains(j.Summary, "main.freezeLoopForTest") {
		t.Errorf("events --incident --json: kind %s end %s unavailable_ms %d summary %q", j.Kind, j.End, j.UnavailableMS, j.Summary)
	}
	t.Logf("watchdog incident:\n%s", out)
	g2.signal(syscall.SIGTERM)
	if code := g2.wait(10 * time.Second); code != exitOK {
		t.Fatalf("stop: exit %d", code)
	}

	// A crash loop: four gateways that fail right after their ready (the
	// 3rd and 4th wait out a crash-loop delay), then one that stays up.
	for i := 0; i < 4; i++ {
		c := e.spawnGateway(crashing)
		if code := c.wait(20 * time.Second); code != exitFailure {
			t.Fatalf("crashing start %d: exit %d\n%s", i+1, code, c.stderr.String())
		}
	}
	g3 := e.startGateway()
	defer func() { g3.signal(syscall.SIGTERM); g3.wait(10 * time.Second) }()
	out, errOut, code = e.hermes(10*time.Second, "events", "--incident")
	if code != 0 {
		t.Fatalf("events --incident: exit %d\n%s", code, errOut)
	}
	for _, want := range []string{"Incident: crash loop", "The gateway crash-looped: 4 gateways exited with a failure", "exit 1: test fault exit-after-ready",
		"the crash-loop guard delayed 2 starts", fmt.Sprintf("gateway pid %d was ready", g3.pid()), "crash-loop delay of 100ms, 200ms"} {
		if !strings.Contains(unwrapped(out), want) {
			t.Errorf("events --incident lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "watchdog fired") {
		t.Errorf("the crash-loop incident takes in the older watchdog one:\n%s", out)
	}
	t.Logf("crash-loop incident:\n%s", out)
}

// unwrapped is the report with its summary's line breaks undone.
func unwrapped(s string) string { return strings.Join(strings.Fields(s), " ") }
