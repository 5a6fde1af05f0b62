package suite

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policyd/policyd/config"
)

// The shm stage's policyd config is one policyd accepts, with the extension on and the token file.
func TestSHMConfigLoads(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := os.MkdirAll(filepath.Join(repo, "mlp-med", "1.0.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	tok := filepath.Join(dir, "tok")
	if err := os.WriteFile(tok, []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "p.yaml")
	if err := os.WriteFile(path, []byte(policydConfig("127.0.0.1:18999", "off", repo, policydOptions{models: []modelOptions{{name: "mlp-med"}}, shm: true, tokenFile: tok})), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _, err := config.Load(config.LoadOptions{File: path, Env: []string{}})
	if err != nil {
		t.Fatalf("policyd rejects the shm stage's config: %v", err)
	}
	if !got.SharedMemory.Enabled || got.Admin.TokenFile != tok {
		t.Errorf("shared_memory %+v, admin token file %q", got.SharedMemory, got.Admin.TokenFile)
	}
}

func shmCase(proto, model string, batch int, p50 int64, engine float64) Case {
	c := Case{Stage: "shm", Server: "policyd", Model: model, Batch: batch, EngineUS: &engine}
	c.Protocol, c.Concurrency, c.Mode, c.P50 = proto, 1, "closed", p50
	return c
}

func TestSHMTargets(t *testing.T) {
	cases := []Case{
		// mlp-med b1: medians 100 (binary) and 55 (shm): 0.55 passes.
		shmCase("binary", "mlp-med", 1, 100, 20), shmCase("shm", "mlp-med", 1, 50, 20),
		shmCase("binary", "mlp-med", 1, 120, 20), shmCase("shm", "mlp-med", 1, 60, 20),
		// cnn-atari b32: outside 10000−8000 = 2000 (binary), 8800−8000 = 800 (shm): 0.4 misses.
		shmCase("binary", "cnn-atari", 32, 10000, 8000), shmCase("shm", "cnn-atari", 32, 8800, 8000),
	}
	ts := shmTargets(cases)
	if len(ts) != 2 {
		t.Fatalf("%d targets", len(ts))
	}
	if !strings.Contains(ts[0].Detail, "55 / 110") || ts[0].Status != "PASS" {
		t.Errorf("mlp-med target: %+v", ts[0])
	}
	if !strings.Contains(ts[1].Detail, "800 / 2,000") || ts[1].Status != "MISS" {
		t.Errorf("cnn-atari target: %+v", ts[1])
	}
	// No engine time for a run: the outside target cannot be judged.
	cases[5].EngineUS = nil
	if ts := shmTargets(cases); ts[1].Status == "PASS" || ts[1].Status == "MISS" {
		t.Errorf("judged without the engine time: %+v", ts[1])
	}
	var b strings.Builder
	rep := Report{Cases: cases}
	if err := rep.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), "## 2c. Shared memory") || !strings.Contains(b.String(), "| shm | mlp-med | 1 | 1 |") {
		t.Errorf("report lacks the shm section:\n%s", b.String())
	}
}
