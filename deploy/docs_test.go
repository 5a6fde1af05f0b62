package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// anchors gives the GitHub anchors of a Markdown file's headings.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, line := range strings.Split(string(readFile(t, path)), "\n") {
		h, ok := strings.CutPrefix(line, "#")
		if !ok {
			continue
		}
		h = strings.ToLower(strings.TrimSpace(strings.TrimLeft(h, "#")))
		h = regexp.MustCompile(`[^a-z0-9 _-]`).ReplaceAllString(h, "")
		out[strings.ReplaceAll(h, " ", "-")] = true
	}
	return out
}

// TestDocLinks: the relative links of the deployment guides, and the docs/... references in
// the files of docker/ and deploy/, name files and headings that exist.
func TestDocLinks(t *testing.T) {
	link := regexp.MustCompile(`\]\(([^)#\s]*)(#[^)\s]*)?\)`)
	for _, doc := range []string{"../docs/deployment.md", "../docs/gpu-troubleshooting.md"} {
		for _, m := range link.FindAllStringSubmatch(string(readFile(t, doc)), -1) {
			target, anchor := m[1], strings.TrimPrefix(m[2], "#")
			if strings.Contains(target, "://") {
				continue
			}
			path := doc
			if target != "" {
				path = filepath.Join(filepath.Dir(doc), target)
			}
			checkRef(t, doc, path, anchor)
		}
	}
	ref := regexp.MustCompile(`docs/([a-z-]+\.md)(#[a-z0-9-]+)?`)
	for _, dir := range []string{"../docker", "."} {
		err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || strings.HasSuffix(p, ".go") {
				return err
			}
			for _, m := range ref.FindAllStringSubmatch(string(readFile(t, p)), -1) {
				checkRef(t, p, filepath.Join("../docs", m[1]), strings.TrimPrefix(m[2], "#"))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

func checkRef(t *testing.T, from, path, anchor string) {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Errorf("%s: link to %s: %v", from, path, err)
		return
	}
	if anchor != "" && strings.HasSuffix(path, ".md") && !anchors(t, path)[anchor] {
		t.Errorf("%s: link to %s#%s: no such heading", from, path, anchor)
	}
}
