package main

import (
	"bytes"
	"fmt"
	"html"
	"math"
	"os"
	"strings"
)

// The plot role: latency over time, one panel per restart mode, as an SVG
// written with the standard library alone. Each request is a dot at its
// start time and its time to first byte (log scale); restarts are grey
// bands from the command's start to its return. Dots that would land on
// the same 2-pixel cell are drawn once, so a long run stays a small file.

// plotPanel is one run: its samples and marks.
type plotPanel struct {
	label   string
	samples []loadSample
	marks   []loadMark
}

// plotClass is how a dot is drawn; failures are red.
type plotClass struct {
	name, color string
}

var plotClasses = []plotClass{
	{"ok, short answer", "#1f77b4"},
	{"ok, stream (first byte)", "#2ca02c"},
	{"refused (503)", "#ff7f0e"},
	{"no connection (refused/reset/closed)", "#9467bd"},
	{"failed or broken stream", "#d62728"},
}

func plotClassOf(s loadSample) int {
	switch s.out {
	case outOK:
		if s.stream {
			return 1
		}
		return 0
	case outRefused:
		return 2
	case outConnError:
		return 3
	}
	return 4
}

func runLoadPlot(args []string) error {
	fs := roleFlags("plot", "-out FILE LABEL=SAMPLES[,MARKS]...")
	out := fs.String("out", "latency.svg", "the SVG `FILE` to write")
	title := fs.String("title", "hermes restarts under load: time to first byte of each request", "the plot's title")
	if err := parseRoleFlags(fs, args, true); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errUsage
	}
	var panels []plotPanel
	for _, a := range fs.Args() {
		label, files, ok := strings.Cut(a, "=")
		if !ok {
			return fmt.Errorf("%q: want LABEL=SAMPLES[,MARKS]", a)
		}
		samplesPath, marksPath, _ := strings.Cut(files, ",")
		samples, err := readSamples(samplesPath)
		if err != nil {
			return err
		}
		marks, err := readMarks(marksPath)
		if err != nil {
			return err
		}
		panels = append(panels, plotPanel{label: label, samples: samples, marks: marks})
	}
	return os.WriteFile(*out, plotLatency(panels, *title), 0o644)
}

// plotLatency draws the panels one above the other, on one latency scale.
func plotLatency(panels []plotPanel, title string) []byte {
	const (
		width   = 960
		left    = 70
		right   = 20
		header  = 78  // title and legend
		panelH  = 250 // one panel, its title included
		plotTop = 30  // the panel's title, above its plot area
		plotH   = 180
		yMinMS  = 0.1
	)
	plotW := float64(width - left - right)
	maxMS := 1000.0
	for _, p := range panels {
		for _, s := range p.samples {
			maxMS = max(maxMS, toMS(s.firstByte()))
		}
	}
	yMaxMS := math.Pow(10, math.Ceil(math.Log10(maxMS)))
	logSpan := math.Log10(yMaxMS) - math.Log10(yMinMS)
	height := header + len(panels)*panelH + 10

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="16" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(title))
	// Legend.
	x := float64(left)
	for _, c := range plotClasses {
		fmt.Fprintf(&b, `<circle cx="%.0f" cy="44" r="4" fill="%s"/><text x="%.0f" y="48">%s</text>`+"\n", x+4, c.color, x+12, html.EscapeString(c.name))
		x += 20 + 6.8*float64(len(c.name))
	}
	fmt.Fprintf(&b, `<rect x="%d" y="57" width="14" height="10" fill="#888" fill-opacity="0.2" stroke="#555" stroke-dasharray="3,2"/>`+
		`<text x="%d" y="66">restart (command start to return)</text>`, left, left+20)
	fmt.Fprintf(&b, `<line x1="%d" y1="62" x2="%d" y2="62" stroke="#7b3294" stroke-width="2"/><text x="%d" y="66">note (binary upgrade)</text>`+"\n",
		left+240, left+256, left+262)

	for i, p := range panels {
		top := float64(header + i*panelH + plotTop)
		bottom := top + plotH
		t0, t1 := panelSpan(p)
		span := max(float64(t1-t0), 1)
		xOf := func(unixNS int64) float64 { return left + float64(unixNS-t0)/span*plotW }
		yOf := func(v float64) float64 {
			v = min(max(v, yMinMS), yMaxMS)
			return bottom - (math.Log10(v)-math.Log10(yMinMS))/logSpan*plotH
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-size="13" font-weight="bold">%s</text>`+"\n", left, top-10, html.EscapeString(panelTitle(p)))
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="%.0f" height="%d" fill="none" stroke="#444"/>`+"\n", left, top, plotW, plotH)
		// Latency grid, one line per decade.
		for v := yMinMS; v <= yMaxMS*1.0001; v *= 10 {
			y := yOf(v)
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%d" y="%.1f" text-anchor="end" fill="#444">%s</text>`+"\n",
				left, y, left+plotW, y, left-6, y+4, plotMSLabel(v))
		}
		// Time axis: seconds since the first request.
		step := plotTickStep(span / 1e9)
		for k := 0; float64(k)*step <= span/1e9; k++ {
			s := math.Round(float64(k)*step*10) / 10
			xx := xOf(t0 + int64(s*1e9))
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#444"/><text x="%.1f" y="%.0f" text-anchor="middle" fill="#444">%gs</text>`+"\n",
				xx, bottom, xx, bottom+4, xx, bottom+16, s)
		}
		// Restarts behind the dots.
		for _, w := range restartWindows(p.marks) {
			x0, x1 := xOf(w.BeginMS*1e6), xOf(min(w.EndMS*1e6, t1))
			fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%d" fill="#888" fill-opacity="0.2"/>`+
				`<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#555" stroke-dasharray="3,2"/>`+"\n",
				x0, top, max(x1-x0, 1), plotH, x0, top, x0, bottom)
		}
		for _, m := range p.marks {
			if m.kind != "note" {
				continue
			}
			xx := xOf(m.ms * 1e6)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#7b3294" stroke-width="2"/><text x="%.1f" y="%.0f" fill="#7b3294">%s</text>`+"\n",
				xx, top, xx, bottom, xx+3, top+12, html.EscapeString(m.label))
		}
		// Dots, ok first so failures are drawn on top.
		type cell struct{ class, x, y int }
		seen := map[cell]bool{}
		for class := range plotClasses {
			fmt.Fprintf(&b, `<g fill="%s" fill-opacity="0.75">`, plotClasses[class].color)
			for _, s := range p.samples {
				if plotClassOf(s) != class {
					continue
				}
				xx, yy := xOf(s.start), yOf(toMS(s.firstByte()))
				c := cell{class, int(xx / 2), int(yy / 2)}
				if seen[c] {
					continue
				}
				seen[c] = true
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="2"/>`, xx, yy)
			}
			b.WriteString("</g>\n")
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle" fill="#444">time since the first request; latency = time to first byte (or to the failure)</text>`+"\n",
			left+plotW/2, bottom+32)
	}
	b.WriteString("</svg>\n")
	return b.Bytes()
}

// panelSpan is the panel's time range in unix ns: every request and mark.
func panelSpan(p plotPanel) (int64, int64) {
	t0, t1 := int64(math.MaxInt64), int64(math.MinInt64)
	for _, s := range p.samples {
		t0, t1 = min(t0, s.start), max(t1, s.end)
	}
	for _, m := range p.marks {
		t0, t1 = min(t0, m.ms*1e6), max(t1, m.ms*1e6)
	}
	if t0 > t1 {
		return 0, 1
	}
	return t0, t1
}

func panelTitle(p plotPanel) string {
	n := outcomeCounts(p.samples)
	restarts := len(restartWindows(p.marks))
	return fmt.Sprintf("%s: %d requests, %d restarts; ok %d, refused %d, no connection %d, failed %d, broken %d",
		p.label, len(p.samples), restarts, n["ok"], n["refused"], n["conn_error"], n["failed"], n["broken"])
}

// niceStep picks a tick step (1, 2 or 5 times a power of ten seconds) that
// gives at most 12 ticks.
func plotTickStep(seconds float64) float64 {
	for p := 0.1; ; p *= 10 {
		for _, m := range []float64{1, 2, 5} {
			if seconds/(m*p) <= 12 {
				return m * p
			}
		}
	}
}

func plotMSLabel(v float64) string {
	if v >= 1000 {
		return fmt.Sprintf("%g s", v/1000)
	}
	return fmt.Sprintf("%g ms", v)
}
