// The README's examples, found by their markers, for the tests that run
// them and compare (readme_test.go, and the tests of the commands they
// show). No build tag: the status table's check lives with the status
// tests, which macOS builds too.

package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// readmeBlock returns the lines of the ```sh block that follows the line
// `<!-- marker...` in README.md. The markers name this file, so whoever
// edits a block knows a test runs it.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	return readmeFenced(t, marker, "```sh")
}

// readmeFenced is readmeBlock for a block opened by fence (```sh, or ```
// for output).
func readmeFenced(t *testing.T, marker, fence string) []string {
	t.Helper()
	return docFenced(t, "README.md", marker, fence)
}

// readmeBetween is the README's text after the first line starting with
// start, up to end (or to the end of the file).
func readmeBetween(t *testing.T, start, end string) string {
	t.Helper()
	b, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := strings.Cut(string(b), "\n"+start)
	if !ok {
		t.Fatalf("README.md has no line starting with %q", start)
	}
	after, _, _ = strings.Cut(after, end)
	return after
}

// docFenced is readmeFenced for any of the repository's markdown files.
func docFenced(t *testing.T, file, marker, fence string) []string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	for i, l := range lines {
		// A block in a list item is indented like its marker; the lines
		// come back without that indent.
		indent := l[:len(l)-len(strings.TrimLeft(l, " "))]
		if !strings.HasPrefix(l, indent+"<!-- "+marker) {
			continue
		}
		if i+1 >= len(lines) || lines[i+1] != indent+fence {
			t.Fatalf("%s:%d: the line after %q must open a %s block", file, i+2, l, fence)
		}
		for j := i + 2; j < len(lines); j++ {
			if lines[j] == indent+"```" {
				out := make([]string, 0, j-i-2)
				for _, x := range lines[i+2 : j] {
					out = append(out, strings.TrimPrefix(x, indent))
				}
				return out
			}
		}
		t.Fatalf("%s:%d: the %s block after %q is never closed", file, i+2, fence, l)
	}
	t.Fatalf("%s has no line starting with %q (the marker of a block a test runs)", file, "<!-- "+marker)
	return nil
}

// TestDocsLinks: every relative link in the README and docs/ names a file
// of the repository, and every #anchor a heading of that file (GitHub's
// slugs: lower case, spaces to dashes, punctuation but - and _ dropped), so
// moving a section cannot leave a dead link.
func TestDocsLinks(t *testing.T) {
	files, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "README.md")
	linkRe := regexp.MustCompile(`\]\(([^)\s]+)\)`)
	slugs := map[string]map[string]bool{}
	slugsOf := func(file string) map[string]bool {
		if s, ok := slugs[file]; ok {
			return s
		}
		s := map[string]bool{}
		b, _ := os.ReadFile(file)
		for _, l := range strings.Split(string(b), "\n") {
			if h := strings.TrimLeft(l, "#"); h != l && strings.HasPrefix(h, " ") {
				s[githubSlug(strings.TrimSpace(h))] = true
			}
		}
		slugs[file] = s
		return s
	}
	checked := 0
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range linkRe.FindAllStringSubmatch(string(b), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			path, anchor, _ := strings.Cut(link, "#")
			target := f
			if path != "" {
				target = filepath.Join(filepath.Dir(f), path)
				if _, err := os.Stat(target); err != nil {
					t.Errorf("%s links to %s, which does not exist", f, link)
					continue
				}
			}
			if anchor != "" && !slugsOf(target)[anchor] {
				t.Errorf("%s links to %s: %s has no heading #%s", f, link, target, anchor)
			}
			checked++
		}
	}
	if checked < 10 {
		t.Fatalf("checked %d links", checked)
	}
}

// githubSlug is the anchor GitHub gives a heading.
func githubSlug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}
