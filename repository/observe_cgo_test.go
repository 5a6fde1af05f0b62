//go:build cgo

package repository

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// A version is ready only after each context of its pool ran the warm-up (batch 1 and the
// preferred batch sizes): its arenas exist before the first request, and no run is counted.
func TestWarmupAtLoad(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	dir := t.TempDir()
	putModel(t, dir, "m", "1.0.0", mlpSmall)
	r := nativeRepository(t, rt)
	d := Desired{Dir: dir, Batching: true, Default: ModelSpec{Instances: 2,
		Batching: BatchingSpec{MaxBatchSize: 8, PreferredBatchSizes: []int{4, 64}}}}
	if rep, err := r.Apply(d); err != nil || len(rep.Loaded) != 1 {
		t.Fatalf("apply: %v %s", err, rep.String())
	}
	v, err := r.Get("m", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	arena, weights, err := v.Memory()
	if err != nil || weights == 0 {
		t.Fatalf("memory %d %d %v", arena, weights, err)
	}
	onnx, err := os.ReadFile(filepath.Join(dir, "m", "1.0.0", ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	// What a context holds after one bucket: a pool without warm-up, run once at batch 1 and
	// once at batch 4 (the warm-up's buckets), per context.
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cold, _ := c.Memory()
	out := make([]bridge.Tensor, len(e.Outputs()))
	for _, rows := range []int{1, 4} {
		if err := c.Run([]bridge.Tensor{obs(rows, 8, 0)}, out); err != nil {
			t.Fatal(err)
		}
	}
	warm, _ := c.Memory()
	if warm.ArenaBytes <= cold.ArenaBytes {
		t.Fatalf("a context's arenas do not grow with its buckets (%d → %d): the check below means nothing", cold.ArenaBytes, warm.ArenaBytes)
	}
	if want := 2 * warm.ArenaBytes; arena != want {
		t.Errorf("arenas of the 2 warmed-up contexts: %d bytes, want %d (buckets 1 and 4 each; 64 is above max_batch_size)", arena, want)
	}
	if s := v.Stats().Snapshot(); s.ExecutionCount != 0 || s.InferenceCount != 0 {
		t.Errorf("warm-up counted: %d executions, %d inferences", s.ExecutionCount, s.InferenceCount)
	}
	if _, err := runOnce(r, "m", "1.0.0", obs(1, 8, 1)); err != nil {
		t.Fatal(err)
	}
	if s := v.Stats().Snapshot(); s.ExecutionCount != 1 {
		t.Errorf("%d executions after one request", s.ExecutionCount)
	}
}
