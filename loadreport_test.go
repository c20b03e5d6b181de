package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The report role: bench/load.sh's results as a markdown file ready to
// paste into the README, plus the checks a run must pass. It reads the
// files the script left in -dir:
//
//	steady/loadgen-TARGET-ROUND.json      loadgen summaries, steady state
//	steady/wrk-stream-TARGET-ROUND.txt    wrk output, SSE streams
//	steady/wrk-short-TARGET-ROUND.txt     wrk output, short answers
//	restart-MODE.json                     loadgen summary during restarts
//	upgrade-MODE.txt                      "ok VERSION" or "FAILED ..." (binary upgrade)
//	memory/TARGET.tsv                     the memory phase: "key<TAB>value" lines, in KiB
//
// Steady-state figures are medians over the rounds; ratios are against
// nginx, measured in the same run (the machine is shared: only ratios
// mean something).

// repeatedFlag is a repeatable string flag.
type repeatedFlag []string

func (s *repeatedFlag) String() string     { return strings.Join(*s, "; ") }
func (s *repeatedFlag) Set(v string) error { *s = append(*s, v); return nil }

func runLoadReport(args []string) error {
	fs := roleFlags("report", "-dir DIR [-command CMD] [-note TEXT]... [-out FILE]")
	dir := fs.String("dir", "bench/out", "the `DIR` bench/load.sh wrote its results to")
	command := fs.String("command", "", "the command line of the run, quoted in the report")
	out := fs.String("out", "", "the markdown `FILE` (default DIR/results.md)")
	modes := fs.String("modes", "handoff drain", "restart modes, in the report's order")
	targets := fs.String("targets", "direct nginx hermes", "steady-state targets, in the report's order")
	var notes repeatedFlag
	fs.Var(&notes, "note", "a line under the command (machine, versions, load); repeatable")
	if err := parseRoleFlags(fs, args, false); err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(*dir, "results.md")
	}
	r := &loadReport{dir: *dir}
	var md strings.Builder
	md.WriteString("# hermes load benchmark\n\n")
	if *command != "" {
		fmt.Fprintf(&md, "Command: `%s`\n\n", *command)
	}
	for _, n := range notes {
		fmt.Fprintf(&md, "- %s\n", n)
	}
	if len(notes) > 0 {
		md.WriteString("\n")
	}
	if err := r.restarts(&md, strings.Fields(*modes)); err != nil {
		return err
	}
	if err := r.steady(&md, strings.Fields(*targets)); err != nil {
		return err
	}
	if err := r.memory(&md, []string{"nginx", "hermes"}); err != nil {
		return err
	}
	if len(r.failed) == 0 {
		md.WriteString("Checks: all passed.\n")
	} else {
		md.WriteString("Checks FAILED:\n\n")
		for _, f := range r.failed {
			fmt.Fprintf(&md, "- %s\n", f)
		}
	}
	if err := os.WriteFile(*out, []byte(md.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(md.String())
	if len(r.failed) > 0 {
		return fmt.Errorf("%d checks failed (see %s)", len(r.failed), *out)
	}
	return nil
}

type loadReport struct {
	dir    string
	failed []string
}

func (r *loadReport) fail(format string, args ...any) {
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}

func readSummary(path string) (loadSummary, error) {
	var s loadSummary
	b, err := os.ReadFile(path)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// restarts writes the table of restarts under load, one row per mode, and
// checks what every mode promises: every restart succeeded, no request
// failed and no stream broke; drain refuses new requests while it drains
// (so a drain run with no 503 did not restart under load at all); handoff
// refuses nothing.
func (r *loadReport) restarts(md *strings.Builder, modes []string) error {
	var rows [][]string
	var errLines []string // per mode, most frequent first
	for _, mode := range modes {
		path := filepath.Join(r.dir, "restart-"+mode+".json")
		s, err := readSummary(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return err
		}
		all, steady, during := s.Phases["all"], s.Phases["steady"], s.Phases["restart"]
		o := all.Outcomes
		upgrade := "-"
		if b, err := os.ReadFile(filepath.Join(r.dir, "upgrade-"+mode+".txt")); err == nil {
			upgrade = strings.TrimSpace(string(b))
			if !strings.HasPrefix(upgrade, "ok") {
				r.fail("%s: binary upgrade: %s", mode, upgrade)
			}
		}
		rows = append(rows, []string{
			mode,
			fmt.Sprintf("%d (%d failed)", len(s.Restarts), s.RestartsFailed),
			fmt.Sprintf("%s / %s", fmtLoadMS(s.RestartMS.P50), fmtLoadMS(s.RestartMS.Max)),
			fmt.Sprintf("%d (%d streams)", s.Requests, s.Streams),
			strconv.Itoa(o["broken"]),
			strconv.Itoa(o["failed"]),
			strconv.Itoa(o["refused"]),
			fmtLoadMS(s.LongestRefusedMS),
			fmt.Sprintf("%d (%d/%d/%d)", o["conn_error"], s.ConnErrors["refused"], s.ConnErrors["reset"], s.ConnErrors["closed"]),
			fmt.Sprintf("%s / %s", fmtLoadMS(steady.FirstByte.P50), fmtLoadMS(steady.FirstByte.P99)),
			fmt.Sprintf("%s / %s", fmtLoadMS(during.FirstByte.P50), fmtLoadMS(during.FirstByte.P99)),
			upgrade,
		})
		reasons := slices.Collect(maps.Keys(s.Errors))
		slices.SortFunc(reasons, func(a, b string) int {
			if d := s.Errors[b] - s.Errors[a]; d != 0 {
				return d
			}
			return strings.Compare(a, b)
		})
		for _, k := range reasons {
			errLines = append(errLines, fmt.Sprintf("- %s: %d × %s", mode, s.Errors[k], k))
		}
		switch {
		case len(s.Restarts) == 0:
			r.fail("%s: no restart marks: nothing was restarted under load", mode)
		case s.RestartsFailed > 0:
			r.fail("%s: %d of %d restart commands failed", mode, s.RestartsFailed, len(s.Restarts))
		}
		if o["broken"] > 0 {
			r.fail("%s: %d broken streams", mode, o["broken"])
		}
		if o["failed"] > 0 {
			r.fail("%s: %d failed requests", mode, o["failed"])
		}
		if s.RequestsUnaccounted != 0 {
			r.fail("%s: %d requests with no outcome", mode, s.RequestsUnaccounted)
		}
		if n := steady.Requests - steady.Outcomes["ok"]; n > 0 {
			r.fail("%s: %d requests not ok at steady state (away from any restart)", mode, n)
		}
		switch mode {
		case "drain":
			if o["refused"] == 0 {
				r.fail("drain: no request was refused (503): the restarts did not happen under load")
			}
		case "handoff":
			if o["refused"]+o["conn_error"] > 0 {
				r.fail("handoff: %d requests refused and %d without a connection: a handoff refuses nothing", o["refused"], o["conn_error"])
			}
		}
	}
	if len(rows) == 0 {
		return nil
	}
	md.WriteString("## Restarts under load\n\n")
	md.WriteString("Latency is time to first byte of the requests that were ok (p50 / p99); \"during restarts\" means within `settle` of a restart command. " +
		"The refused window is the longest run of consecutive requests all turned away (503 or no connection), first start to last end. " +
		"Connection errors are split refused/reset/closed.\n\n")
	writeLoadTable(md, []string{"mode", "restarts", "restart p50 / max", "requests", "broken streams", "failed", "refused (503)",
		"longest refused window", "connection errors", "first byte, steady", "first byte, during restarts", "binary upgrade"}, rows)
	if len(errLines) > 0 {
		md.WriteString("\nWhy requests were not ok:\n\n" + strings.Join(errLines, "\n") + "\n")
	}
	md.WriteString("\n")
	return nil
}

// wrkResult is what one wrk run printed.
type wrkResult struct {
	rps, p50, p99 float64 // requests/s, ms
	errors        int     // non-2xx responses and socket errors
	requests      int     // answered in the run
	cpu           float64 // the proxy's CPU seconds over the run (added by load.sh), 0 if none
}

// cpuPerRequest is the proxy's CPU per request, in µs, or 0.
func (w wrkResult) cpuPerRequest() float64 {
	if w.cpu <= 0 || w.requests == 0 {
		return 0
	}
	return w.cpu * 1e6 / float64(w.requests)
}

// parseWrk reads wrk's text output (run with --latency).
func parseWrk(path string) (wrkResult, error) {
	var w wrkResult
	f, err := os.Open(path)
	if err != nil {
		return w, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	seen := false
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		switch {
		case len(fields) == 2 && fields[0] == "Requests/sec:":
			w.rps, err = strconv.ParseFloat(fields[1], 64)
			seen = err == nil
		case len(fields) == 2 && fields[0] == "50%":
			w.p50, err = parseWrkDuration(fields[1])
		case len(fields) == 2 && fields[0] == "99%":
			w.p99, err = parseWrkDuration(fields[1])
		case len(fields) >= 3 && fields[1] == "requests" && fields[2] == "in":
			w.requests, err = strconv.Atoi(fields[0])
		case len(fields) == 4 && strings.Join(fields[:3], " ") == "Proxy CPU seconds:":
			w.cpu, err = strconv.ParseFloat(fields[3], 64)
		case len(fields) == 5 && strings.Join(fields[:4], " ") == "Non-2xx or 3xx responses:":
			n, _ := strconv.Atoi(fields[4])
			w.errors += n
		case len(fields) > 2 && fields[0] == "Socket" && fields[1] == "errors:":
			for _, f := range fields[2:] {
				if n, err := strconv.Atoi(strings.TrimSuffix(f, ",")); err == nil {
					w.errors += n
				}
			}
		}
		if err != nil {
			return w, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
	}
	if !seen {
		return w, fmt.Errorf("%s: no Requests/sec line: wrk did not finish", path)
	}
	return w, sc.Err()
}

// parseWrkDuration reads wrk's "812.00us", "1.23ms", "2.01s", "1.00m" as ms.
func parseWrkDuration(s string) (float64, error) {
	for _, u := range []struct {
		suffix string
		ms     float64
	}{{"us", 1e-3}, {"ms", 1}, {"s", 1e3}, {"m", 60e3}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			f, err := strconv.ParseFloat(v, 64)
			return f * u.ms, err
		}
	}
	return 0, fmt.Errorf("duration %q has no unit", s)
}

func loadMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// steadyMetrics are one target's medians; the order is the tables' order.
var steadyMetrics = []struct {
	name         string
	higherBetter bool
}{
	{"loadgen req/s", true},
	{"loadgen short p50", false},
	{"loadgen short p99", false},
	{"loadgen stream first byte p50", false},
	{"loadgen stream first byte p99", false},
	{"wrk SSE streams/s", true},
	{"wrk SSE p50", false},
	{"wrk SSE p99", false},
	{"wrk SSE proxy CPU per stream", false},
	{"wrk short req/s", true},
	{"wrk short p50", false},
	{"wrk short p99", false},
	{"wrk short proxy CPU per request", false},
}

// metricUnit is how a steady metric's row names its unit.
func metricUnit(name string, higherBetter bool) string {
	switch {
	case strings.Contains(name, "CPU"):
		return " (µs)"
	case higherBetter:
		return ""
	}
	return " (ms)"
}

// steady writes the side-by-side table (medians over rounds) and the ratios
// to nginx, and checks that no steady-state request failed.
func (r *loadReport) steady(md *strings.Builder, targets []string) error {
	values := map[string][][]float64{} // target -> metric -> rounds
	rounds := map[string]int{}
	for _, t := range targets {
		values[t] = make([][]float64, len(steadyMetrics))
		add := func(i int, v float64) { values[t][i] = append(values[t][i], v) }
		paths, _ := filepath.Glob(filepath.Join(r.dir, "steady", "loadgen-"+t+"-*.json"))
		for _, p := range paths {
			s, err := readSummary(p)
			if err != nil {
				return err
			}
			rounds[t]++
			all := s.Phases["all"]
			if n := s.Requests - all.Outcomes["ok"]; n > 0 {
				r.fail("steady state, %s: %d of %d loadgen requests not ok (%s)", t, n, s.Requests, filepath.Base(p))
			}
			add(0, s.PerSecond)
			add(1, all.Short.P50)
			add(2, all.Short.P99)
			add(3, all.StreamFirst.P50)
			add(4, all.StreamFirst.P99)
		}
		for j, variant := range []string{"stream", "short"} {
			paths, _ := filepath.Glob(filepath.Join(r.dir, "steady", "wrk-"+variant+"-"+t+"-*.txt"))
			for _, p := range paths {
				w, err := parseWrk(p)
				if err != nil {
					return err
				}
				if w.errors > 0 {
					r.fail("steady state, %s: wrk %s had %d errors (%s)", t, variant, w.errors, filepath.Base(p))
				}
				add(5+4*j, w.rps)
				add(6+4*j, w.p50)
				add(7+4*j, w.p99)
				if c := w.cpuPerRequest(); c > 0 {
					add(8+4*j, c)
				}
			}
		}
	}
	if len(rounds) == 0 {
		return nil
	}
	med := func(t string, i int) float64 { return loadMedian(values[t][i]) }
	cell := func(t string, i int) string {
		if len(values[t][i]) == 0 {
			return "-"
		}
		if steadyMetrics[i].higherBetter || strings.Contains(steadyMetrics[i].name, "CPU") {
			return fmt.Sprintf("%.0f", med(t, i))
		}
		return fmt.Sprintf("%.2f", med(t, i))
	}
	// One row per metric, one column per target, then the ratios to nginx.
	header := []string{"metric"}
	for _, t := range targets {
		header = append(header, fmt.Sprintf("%s (%d rounds)", t, rounds[t]))
	}
	for _, t := range targets {
		if t != "nginx" {
			header = append(header, t+" / nginx")
		}
	}
	var rows [][]string
	for i, m := range steadyMetrics {
		row := []string{m.name + metricUnit(m.name, m.higherBetter)}
		for _, t := range targets {
			row = append(row, cell(t, i))
		}
		for _, t := range targets {
			if t == "nginx" {
				continue
			}
			n := med("nginx", i)
			if len(values[t][i]) == 0 || n == 0 {
				row = append(row, "-")
				continue
			}
			row = append(row, fmt.Sprintf("%.2f×", med(t, i)/n))
		}
		rows = append(rows, row)
	}
	md.WriteString("## Steady state, side by side\n\n")
	md.WriteString("The same upstream (the fake one) reached directly, through nginx and through hermes, in interleaved rounds; " +
		"medians over the rounds. loadgen is the mixed load above (streams verified chunk by chunk); " +
		"wrk runs `-t1 -c32` on SSE streams with no delay between chunks, then on short answers. " +
		"Ratios to nginx: for req/s higher is faster, for latencies and CPU lower is better. " +
		"Proxy CPU is the proxy's own user and system time over each wrk run (nginx's worker, the gateway), " +
		"divided by the requests it answered: steadier than req/s on a shared machine.\n\n")
	writeLoadTable(md, header, rows)
	md.WriteString("\n")
	return nil
}

func writeLoadTable(md *strings.Builder, header []string, rows [][]string) {
	md.WriteString("| " + strings.Join(header, " | ") + " |\n")
	md.WriteString("|" + strings.Repeat("---|", len(header)) + "\n")
	for _, r := range rows {
		md.WriteString("| " + strings.Join(r, " | ") + " |\n")
	}
}

// fmtMSCell prints milliseconds with sensible precision.
func fmtLoadMS(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 10000:
		return fmt.Sprintf("%.1f s", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f ms", v)
	case v >= 1:
		return fmt.Sprintf("%.1f ms", v)
	}
	return fmt.Sprintf("%.2f ms", v)
}

// memory writes the memory phase's table: each proxy's RSS idle, with the
// idle connections held, at the streams' peak, and a while after they
// ended, with what a connection and a stream cost beyond idle.
func (r *loadReport) memory(md *strings.Builder, targets []string) error {
	figs := map[string]map[string]float64{}
	for _, t := range targets {
		raw, err := os.ReadFile(filepath.Join(r.dir, "memory", t+".tsv"))
		if errors.Is(err, os.ErrNotExist) {
			continue
		} else if err != nil {
			return err
		}
		figs[t] = map[string]float64{}
		for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			k, v, _ := strings.Cut(l, "\t")
			n, err := strconv.ParseFloat(v, 64)
			if err != nil {
				return fmt.Errorf("%s: %q is not a figure", filepath.Join(r.dir, "memory", t+".tsv"), l)
			}
			figs[t][k] = n
		}
	}
	if len(figs) == 0 {
		return nil
	}
	var counts map[string]float64 // the connection and stream counts, the same for every target
	for _, t := range targets {
		if counts == nil {
			counts = figs[t]
		}
	}
	mib := func(kb float64) string { return fmt.Sprintf("%.1f", kb/1024) }
	rows := []struct {
		name string
		val  func(f map[string]float64) (float64, string)
	}{
		{"idle (MiB)", func(f map[string]float64) (float64, string) { return f["idle_kb"], mib(f["idle_kb"]) }},
		{fmt.Sprintf("%.0f idle keep-alive connections (MiB)", counts["idle_conns"]), func(f map[string]float64) (float64, string) {
			return f["idle_held_kb"], mib(f["idle_held_kb"])
		}},
		{"an idle connection (KiB)", func(f map[string]float64) (float64, string) {
			v := (f["idle_held_kb"] - f["idle_kb"]) / f["idle_conns"]
			return v, fmt.Sprintf("%.1f", v)
		}},
		{fmt.Sprintf("%.0f streams at once, peak (MiB)", counts["streams"]), func(f map[string]float64) (float64, string) {
			return f["stream_peak_kb"], mib(f["stream_peak_kb"])
		}},
		{"a stream (KiB)", func(f map[string]float64) (float64, string) {
			v := (f["stream_peak_kb"] - f["stream_base_kb"]) / f["streams"]
			return v, fmt.Sprintf("%.1f", v)
		}},
		{fmt.Sprintf("%.0f s after the streams ended (MiB)", counts["after_ms"]/1000), func(f map[string]float64) (float64, string) {
			return f["after_kb"], mib(f["after_kb"])
		}},
		{"the same, over idle", func(f map[string]float64) (float64, string) {
			v := f["after_kb"] / f["idle_kb"]
			return v, fmt.Sprintf("%.2f×", v)
		}},
	}
	header := []string{"resident memory (RSS)"}
	header = append(header, targets...)
	header = append(header, "hermes / nginx")
	var table [][]string
	for _, row := range rows {
		cells := []string{row.name}
		vals := map[string]float64{}
		for _, t := range targets {
			if figs[t] == nil {
				cells = append(cells, "-")
				continue
			}
			v, s := row.val(figs[t])
			vals[t] = v
			cells = append(cells, s)
		}
		if vals["nginx"] > 0 && figs["hermes"] != nil {
			cells = append(cells, fmt.Sprintf("%.2f×", vals["hermes"]/vals["nginx"]))
		} else {
			cells = append(cells, "-")
		}
		table = append(table, cells)
	}
	md.WriteString("## Memory\n\n")
	md.WriteString("Resident memory of nginx's worker and of a fresh gateway (VmRSS; the streams' peak is VmHWM, reset before them): " +
		"idle; holding keep-alive connections that each had one short answer; at the peak of SSE streams all open at once " +
		"(20 chunks 1 s apart, through the fake upstream: two connections a stream), read whole; and a while after they ended. " +
		"nginx's worker_connections is sized to the open-file limit, which nginx allocates up front.\n\n")
	writeLoadTable(md, header, table)
	md.WriteString("\n")
	return nil
}
