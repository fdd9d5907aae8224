package main

import (
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the repository root, seen from this package's folder.
const repoRoot = "../.."

// historyInComment matches what comments must not carry: backend fork
// change numbers, dates and measured rates belong in docs/ and commit
// messages; comments state contracts and reasons.
var historyInComment = []*regexp.Regexp{
	regexp.MustCompile(`(?i)\bchanges? \d+`),
	regexp.MustCompile(`\b20\d\d-\d\d-\d\d\b`),
	regexp.MustCompile(`\d[\d.,]*\s*(img/s|images/s|ms/img|ms/step|GFLOP/s|MP/s)\b`),
	regexp.MustCompile(`\d+(\.\d+)?(%|x) (faster|slower)`),
}

// TestCommentsStateNoHistory parses every Go file outside third_party and
// refuses comments that cite fork change numbers, dates or measured rates.
func TestCommentsStateNoHistory(t *testing.T) {
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if d.IsDir() {
			switch rel {
			case "third_party", ".git", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		for _, g := range f.Comments {
			for _, c := range g.List {
				for _, re := range historyInComment {
					if m := re.FindString(c.Text); m != "" {
						t.Errorf("%s: comment cites %q (history and figures go to docs/ or the commit message)",
							fset.Position(c.Pos()), m)
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestHistoryCheckCatches keeps the patterns above honest.
func TestHistoryCheckCatches(t *testing.T) {
	for _, c := range []struct {
		text string
		bad  bool
	}{
		{"// runs as tiles (fork change 17)", true},
		{"// measured on 2026-11-27", true},
		{"// ResNet-50 inference 65-80 -> 60-64 ms/img", true},
		{"// about 5% faster than the fused op", true},
		{"// 180 GFLOP/s on one core", true},
		{"// Unit is img/s (higher is better) or ms", false},
		{"// a view is padded by at most an eighth of each side", false},
	} {
		bad := false
		for _, re := range historyInComment {
			bad = bad || re.MatchString(c.text)
		}
		if bad != c.bad {
			t.Errorf("%q: flagged %v, want %v", c.text, bad, c.bad)
		}
	}
}

// TestReadme keeps the README a user's guide: under 400 lines, and every
// relative link points at a file of the repository.
func TestReadme(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(raw)
	if n := strings.Count(text, "\n"); n >= 400 {
		t.Errorf("README.md has %d lines; keep it under 400 (results and history go to docs/)", n)
	}
	for _, m := range regexp.MustCompile(`\]\(([^)#]+)(#[^)]*)?\)`).FindAllStringSubmatch(text, -1) {
		link := m[1]
		if strings.Contains(link, "://") {
			continue
		}
		target := filepath.Join(repoRoot, link)
		if rel, err := filepath.Rel(repoRoot, target); err != nil || strings.HasPrefix(rel, "..") {
			t.Errorf("README links outside the repository: %s", link)
			continue
		}
		if _, err := os.Stat(target); err != nil {
			t.Errorf("README links to a missing file: %s", link)
		}
	}
	for _, doc := range []string{"docs/performance.md", "docs/quality.md", "docs/design.md", "docs/changelog.md"} {
		if !strings.Contains(text, "("+doc) {
			t.Errorf("README does not link %s", doc)
		}
	}
}
