package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
)

const statusUsage = `Show what the gateway is doing: serving, draining, frozen, stopped,
zombie, crash-looping or not running, with its manager's view.
Exit 0 when serving, 3 when not running, 1 when running but not serving.

With no policy to go by (no --config, no --name, and no file in the lookup
order of 'hermes help'), it lists every gateway on this host instead, from
the instance registry: exit 0 when one runs, 3 when none does.

    $ hermes status
    $ hermes status --name gateway
    $ hermes status --config /etc/hermes/hermes.toml --json
`

type statusJSON struct {
	Verdict        string       `json:"verdict"`
	Detail         string       `json:"detail,omitempty"`
	PID            int          `json:"pid,omitempty"`
	UptimeSeconds  float64      `json:"uptime_seconds,omitempty"`
	ActiveSessions int          `json:"active_sessions"`
	Listen         string       `json:"listen,omitempty"`
	Manager        managerInfo  `json:"manager"`
	Problem        string       `json:"problem,omitempty"`
	Name           string       `json:"name"`
	Policy         string       `json:"policy"`
	StateDir       string       `json:"state_dir"`
	PidFile        string       `json:"pid_file"`
	StalePidFile   bool         `json:"stale_pid_file,omitempty"`
	CrashLoop      bool         `json:"crash_loop"`
	CrashLoopDelay string       `json:"crash_loop_delay,omitempty"`
	RecentExits    []ledgerExit `json:"recent_exits,omitempty"`
	UnitFile       string       `json:"unit_file,omitempty"`
	UnitDiffers    bool         `json:"unit_differs_from_policy,omitempty"`
	Version        string       `json:"version"`
	// A handoff in progress or just done.
	Successor   int                `json:"successor,omitempty"`
	Telegram    *tgStatus          `json:"telegram,omitempty"`
	Predecessor *predecessorStatus `json:"predecessor,omitempty"`
	Upstreams   []upstreamView     `json:"upstreams,omitempty"`
}

func runStatus(args []string) error {
	fs := newFlagSet("status", statusUsage)
	tf := addTargetFlags(fs)
	asJSON := fs.Bool("json", false, "print JSON for scripts")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *tf.name == "" && *tf.config == "" {
		if path, err := findPolicy(""); err == nil && path == "" {
			return statusOfHost(*asJSON)
		}
	}
	t, err := tf.resolve("status", false)
	if errors.Is(err, errNoSuchName) {
		// As for any gateway that is not running: 3, with why.
		return &exitError{code: exitNotRunning, err: err}
	}
	if err != nil {
		return err
	}
	p := t.p
	in := inspect(p, detectManager(p))
	defer in.close()
	st, unitNote := gatherStatus(p, in)
	if *asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Println(string(b))
	} else {
		printStatus(st, in, t, unitNote)
	}
	return statusExit(in)
}

// gatherStatus is what status says of the gateway of p, inspected as in:
// the verdict, the gateway's own numbers, the ledger's recent exits, and a
// note on the installed unit.
func gatherStatus(p *Policy, in *inspection) (st statusJSON, unitNote string) {
	st = statusJSON{
		Verdict: in.Verdict, Detail: in.Detail, PID: in.PID, Manager: in.Manager, Problem: in.Manager.problem(),
		Name: p.Name, Policy: p.policyLabel(), StateDir: p.Gateway.StateDir,
		PidFile: pidFilePath(p.Gateway.StateDir), StalePidFile: in.Stale, Version: version,
	}
	if g := in.Gateway; g != nil {
		st.UptimeSeconds, st.ActiveSessions, st.Listen = g.UptimeSeconds, g.ActiveSessions, g.Listen
		st.Predecessor, st.Telegram, st.Upstreams = g.Predecessor, g.Telegram, g.Upstreams
		if !g.HandedOff {
			st.Successor = g.Successor
		}
	}
	if l, err := readStartLedger(p.Gateway.StateDir); err == nil {
		if loop, delay := l.CrashLoop(p.CrashLoop, time.Now()); loop {
			st.CrashLoop, st.CrashLoopDelay = true, delay.String()
		}
		st.RecentExits = l.Exits[max(0, len(l.Exits)-5):]
	}
	if path, o, differs, err := installedUnitDrift(p); path != "" {
		st.UnitFile, st.UnitDiffers = path, differs
		switch {
		case err != nil:
			unitNote = fmt.Sprintf("%s: %v", path, err)
		case differs:
			flags := map[bool]string{true: " --system", false: ""}[strings.HasPrefix(path, "/etc/") || strings.HasPrefix(path, "/Library/")]
			if o.Socket {
				flags += " --socket"
			}
			unitNote = fmt.Sprintf("%s no longer matches the policy; rewrite it with: hermes install-unit%s%s", path, flags, configFlag(p))
		default:
			unitNote = path + " (matches the policy)"
		}
	}
	return st, unitNote
}

// printStatus prints st for a person.
func printStatus(st statusJSON, in *inspection, t *target, unitNote string) {
	p := t.p
	fmt.Printf("gateway:  %s", st.Verdict)
	if st.PID != 0 {
		fmt.Printf(" (pid %d)", st.PID)
	}
	fmt.Println()
	if st.Detail != "" && (st.Verdict != verdictServing || in.controlDeaf || in.byControl) {
		fmt.Printf("detail:   %s\n", st.Detail)
	}
	if g := in.Gateway; g != nil {
		fmt.Printf("uptime:   %s\nsessions: %d active\nlisten:   %s\n", g.Uptime, g.ActiveSessions, g.Listen)
		if pr := g.Predecessor; pr != nil {
			fmt.Printf("handoff:  pid %d (the gateway before this one) finishes %d sessions, %s of its drain left\n",
				pr.PID, pr.Sessions, fmtDur(time.Duration(pr.DrainLeftMS)*time.Millisecond))
		}
		if st.Successor != 0 {
			fmt.Printf("handoff:  handing over to pid %d\n", st.Successor)
		}
		if tg := g.Telegram; tg != nil {
			fmt.Printf("telegram: %s\n", tg.describe())
		}
		for _, u := range g.Upstreams {
			fmt.Printf("upstream: %s\n", u.describe())
		}
	}
	fmt.Printf("manager:  %s\n", in.Manager.describe())
	if unitNote != "" {
		fmt.Printf("unit:     %s\n", unitNote)
	}
	if st.Problem != "" {
		fmt.Printf("problem:  %s\n", st.Problem)
	}
	if st.CrashLoop {
		fmt.Printf("crash loop: more than %d starts in %s; the next start waits %s\n", p.CrashLoop.Starts, p.CrashLoop.Window, st.CrashLoopDelay)
	}
	if len(st.RecentExits) > 0 {
		fmt.Println("recent exits:")
		for i := len(st.RecentExits) - 1; i >= 0; i-- {
			x := st.RecentExits[i]
			code := fmt.Sprintf("code %-3d", x.Code)
			if x.Code == codeUnclean {
				code = "unclean "
			}
			fmt.Printf("          %s  pid %-7d %s %s\n", x.Time.Local().Format("2006-01-02 15:04:05"), x.PID, code, x.Reason)
		}
	}
	fmt.Printf("policy:   %s (instance %q)\nstate:    %s\n", policyOrigin(p), p.Name, st.StateDir)
	if st.Verdict == verdictNotRunning {
		if note := t.notRunningNote("status"); note != "" {
			fmt.Printf("note:     %s\n", note)
		}
	}
	switch st.Verdict {
	case verdictFrozen:
		fmt.Printf("hint:     hermes restart%s   # recovers a frozen gateway, no --force needed\n", configFlag(p))
	case verdictStopped:
		fmt.Printf("hint:     kill -CONT %d   # or: hermes restart%s\n", st.PID, configFlag(p))
	case verdictNotRunning, verdictCrashLoop:
		fmt.Printf("hint:     hermes restart%s\n", configFlag(p))
	}
}

// statusExit is status's exit: 0 serving, 3 not running, else 1.
func statusExit(in *inspection) error {
	switch in.Verdict {
	case verdictServing:
		return nil
	case verdictNotRunning, verdictZombie:
		return &exitError{code: exitNotRunning}
	case verdictCrashLoop:
		if in.PID == 0 {
			return &exitError{code: exitNotRunning}
		}
	}
	return &exitError{code: exitFailure}
}

// statusOfHost lists every gateway in the instance registry.
func statusOfHost(asJSON bool) error {
	rows := instanceRows(listInstances())
	// The instance of the policy in hand (the built-in defaults: no file
	// was found) first, then the gateways that run, then those gone.
	mine := defaultPolicy().Gateway.StateDir
	rank := func(r instanceRow) int {
		switch {
		case r.StateDir == mine:
			return 0
		case !strings.HasPrefix(r.State, "gone"):
			return 1
		}
		return 2
	}
	sort.SliceStable(rows, func(i, j int) bool { return rank(rows[i]) < rank(rows[j]) })
	running := 0
	for _, r := range rows {
		if !strings.HasPrefix(r.State, "gone") {
			running++
		}
	}
	if asJSON {
		b, _ := json.MarshalIndent(map[string]any{"instances": rows}, "", "  ")
		fmt.Println(string(b))
	} else if len(rows) == 0 {
		fmt.Println("no hermes gateway is running on this host (no policy file found either: see 'hermes help')")
	} else {
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tPID\tUSER\tLISTEN\tSTATE\tSESSIONS\tPOLICY")
		for _, r := range rows {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%d\t%s\n", r.Name, r.PID, r.User, r.Listen, r.State, r.Sessions, r.Policy)
		}
		tw.Flush()
		fmt.Println("details: hermes status --name NAME")
	}
	if running == 0 {
		return &exitError{code: exitNotRunning}
	}
	return nil
}
