package readme_test

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// citation is a reference to a section of the upstream contract, as code
// comments and documents write it; a list such as "§2.2, §2.3" cites each.
var (
	citation = regexp.MustCompile(`docs/upstream\.md((?:,? ?§[0-9]+(?:\.[0-9]+)?)+)`)
	section  = regexp.MustCompile(`§([0-9]+(?:\.[0-9]+)?)`)
	heading  = regexp.MustCompile(`^#{2,3} ([0-9]+(?:\.[0-9]+)?)\.? `)
)

// TestUpstreamCitationsResolve: every "docs/upstream.md §N" in the code and
// documents names a section that docs/upstream.md has, so that a reader
// who follows a comment finds what it cites.
func TestUpstreamCitationsResolve(t *testing.T) {
	t.Parallel()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]bool{}
	f, err := os.Open(filepath.Join(root, "docs", "upstream.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if m := heading.FindStringSubmatch(sc.Text()); m != nil {
			sections[m[1]] = true
		}
	}
	if len(sections) < 10 {
		t.Fatalf("docs/upstream.md has %d numbered sections; the headings should read '## N. …' or '### N.N …'", len(sections))
	}

	cited := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") || d.Name() == "node_modules" || d.Name() == "gen") {
			return filepath.SkipDir
		}
		if d.IsDir() || !slices.Contains([]string{".go", ".md", ".proto"}, filepath.Ext(path)) {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for n, line := range strings.Split(string(b), "\n") {
			for _, c := range citation.FindAllStringSubmatch(line, -1) {
				for _, s := range section.FindAllStringSubmatch(c[1], -1) {
					cited++
					if !sections[s[1]] {
						rel, _ := filepath.Rel(root, path)
						t.Errorf("%s:%d cites docs/upstream.md §%s, which has no such section", rel, n+1, s[1])
					}
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if cited < 20 {
		t.Errorf("found %d citations of docs/upstream.md; the code cites it for its facts about Smallest", cited)
	}
}
