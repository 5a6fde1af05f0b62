//go:build cgo

package repository

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

// Apply puts a Batcher in front of a batchable version when Desired.Batching is on, and a
// change of the batching settings rebuilds the version.
func TestApplyBatching(t *testing.T) {
	dir := t.TempDir()
	putModel(t, dir, "mlp", "1.0.0", mlpSmall)
	r := nativeRepository(t, enginestest.NativeRuntime(t))
	d := Desired{Dir: dir}
	apply := func(want string) *Version {
		t.Helper()
		if _, err := r.Apply(d); err != nil {
			t.Fatal(err)
		}
		v, err := r.Get("mlp", "1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		if got := fmt.Sprintf("%T", v.runner); got != want {
			t.Fatalf("runner %s, want %s", got, want)
		}
		if _, err := runOnce(r, "mlp", "1.0.0", obs(3, 8, 1)); err != nil {
			t.Fatal(err)
		}
		return v
	}
	apply("*engines.Pool")
	d.Batching = true
	d.Default.Batching = BatchingSpec{MaxBatchSize: 8, MaxQueueDelay: time.Millisecond}
	v := apply("*engines.Batcher")
	if o := v.runner.(*engines.Batcher).Options(); o.MaxBatchSize != 8 || o.MaxQueueDelay != time.Millisecond {
		t.Errorf("options %+v", o)
	}
	d.Models = []ModelSpec{{Name: "mlp", Batching: BatchingSpec{MaxBatchSize: 4, PreferredBatchSizes: []int{2, 4}}}}
	rep, err := r.Apply(d)
	if err != nil || len(rep.Reloaded) != 1 {
		t.Fatalf("Apply after a batching change: %v, %s", err, rep.String())
	}
	v, _ = r.Get("mlp", "1.0.0")
	if o := v.runner.(*engines.Batcher).Options(); o.MaxBatchSize != 4 || o.MaxQueueDelay != time.Millisecond || !slices.Equal(o.PreferredBatchSizes, []int{2, 4}) {
		t.Errorf("options %+v", o)
	}
	if rep, _ := r.Apply(d); rep.Changed() {
		t.Errorf("an unchanged Apply: %s", rep.String())
	}
}
