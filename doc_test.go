package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDocMapNamesEveryFile: doc.go's map of the package names every file
// of the product (by name, or by a pattern such as rawio*.go), and names
// no file that is gone, so the map cannot fall behind the package.
func TestDocMapNamesEveryFile(t *testing.T) {
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	names := regexp.MustCompile(`[a-z0-9_*]+\.go\b`).FindAllString(string(src), -1)
	files, _ := filepath.Glob("*.go")
	matched := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") || f == "doc.go" {
			continue
		}
		found := false
		for _, n := range names {
			if ok, _ := filepath.Match(n, f); ok {
				found, matched[n] = true, true
			}
		}
		if !found {
			t.Errorf("doc.go's map does not name %s: add it under its concern", f)
		}
	}
	for _, n := range names {
		if !matched[n] {
			t.Errorf("doc.go's map names %s, which matches no file", n)
		}
	}
}
