package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
)

// peerModels is the peers' model folder beside the checkout (shared/peers/models); tests that
// need it or the native library skip without them.
func peerModels(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "peers", "models")
	if _, err := os.Stat(filepath.Join(dir, "models.json")); err != nil {
		t.Skipf("no peer models: %v", err)
	}
	if err := bridge.Available(); err != nil {
		t.Skipf("native library: %v", err)
	}
	if _, err := bridge.NewRuntime(""); err != nil {
		t.Skipf("native library: %v", err)
	}
	return dir
}

var tiny = Params{Seconds: 0.02, Warmup: 0, MaxIters: 50, MinIters: 3, Workers: 2}

func TestBenchOursModels(t *testing.T) {
	dir := peerModels(t)
	specs, err := LoadSpecs(dir)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	for _, spec := range specs {
		if spec.Name != "mlp-small" && spec.Name != "lstm" {
			continue // the bigger models take seconds to compile under -race
		}
		eng, err := LoadEngine(rt, dir, spec)
		if err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
		for _, mode := range []string{"st", "par"} {
			r, err := BenchOurs(eng, spec, 3, mode, tiny)
			if err != nil {
				t.Fatalf("%s %s: %v", spec.Name, mode, err)
			}
			wantWorkers := map[string]int{"st": 1, "par": 2}[mode]
			if r.Workers != wantWorkers || r.Iters < 3*wantWorkers || r.Iters > 50*wantWorkers || r.P50 <= 0 || r.InferencesPerS <= 0 {
				t.Fatalf("%s %s: %+v", spec.Name, mode, r)
			}
		}
		if _, err := BenchOurs(eng, spec, 1, "mt", tiny); err == nil {
			t.Fatal("mode mt: no error")
		}
		eng.Close()
	}
}

func TestRunJSON(t *testing.T) {
	dir := peerModels(t)
	var out, log bytes.Buffer
	cfg := Config{ModelsDir: dir, Models: []string{"mlp-small"}, Batches: []int{1, 2}, Modes: []string{"st", "par"},
		Params: tiny, Format: "json", Command: "test", Log: &log}
	if err := Run(context.Background(), cfg, &out); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("want machine, 2 cases, summary; got\n%s", out.String())
	}
	var c struct {
		Type    string   `json:"type"`
		Model   string   `json:"model"`
		Batch   int      `json:"batch"`
		Policyd []Result `json:"policyd"`
	}
	if err := json.Unmarshal([]byte(lines[2]), &c); err != nil {
		t.Fatal(err)
	}
	if c.Type != "case" || c.Model != "mlp-small" || c.Batch != 2 || len(c.Policyd) != 2 {
		t.Fatalf("%+v", c)
	}
	cfg.Models = []string{"nope"}
	if err := Run(context.Background(), cfg, &out); err == nil || !strings.Contains(err.Error(), "mlp-small") {
		t.Fatalf("unknown model: %v", err)
	}
}
