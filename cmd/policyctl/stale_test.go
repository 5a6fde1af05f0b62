package main

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/artifacts"
)

// TestAddRemovesStaleWork: add first removes what interrupted adds of its model left an hour
// ago or more (saying so on stderr), and leaves a younger work folder, which report keeps
// listing as stale.
func TestAddRemovesStaleWork(t *testing.T) {
	model := peerModel(t)
	repo := t.TempDir()
	old, young := filepath.Join(repo, "mlp", ".tmp-1.0.0-111"), filepath.Join(repo, "mlp", ".tmp-1.1.0-222")
	for _, d := range []string{old, young} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, "model.onnx"), []byte("half"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	when := time.Now().Add(-2 * artifacts.StaleAge)
	err := filepath.WalkDir(old, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, when, when)
	})
	if err != nil {
		t.Fatal(err)
	}
	code, out, errs := call("artifacts", "add", "--repository", repo, "--name", "mlp", "--version", "1.0.0", model)
	if code != 0 || !strings.Contains(out, "added mlp@1.0.0") {
		t.Fatalf("add: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(errs, "note: removed "+old+", the work of an interrupted add") || strings.Contains(errs, young) {
		t.Errorf("add stderr %q, want a note for %s only", errs, old)
	}
	if _, err := os.Stat(old); err == nil {
		t.Errorf("%s is still there", old)
	}
	code, out, _ = call("artifacts", "report", "--repository", repo)
	if code != 0 || !strings.Contains(out, young) || strings.Contains(out, old) {
		t.Errorf("report: exit %d\n%s", code, out)
	}
}
