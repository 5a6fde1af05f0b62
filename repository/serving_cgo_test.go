//go:build cgo

package repository

import (
	"slices"
	"testing"
	"time"

	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

// A model whose graph fixes the batch at 1 serves [1, 8] (its engine's signature stays [-1,
// 8]) and is not batched; a batchable one keeps -1. Serving reports the settings the runners
// were built with.
func TestServingAndBatchOne(t *testing.T) {
	dir := t.TempDir()
	putModel(t, dir, "mlp", "1.0.0", mlpSmall)
	writeModel(t, dir, "reshape", "1.0.0", enginestest.ReshapeToOneRow())
	r := nativeRepository(t, enginestest.NativeRuntime(t))
	d := Desired{Dir: dir, Batching: true, QueueLen: 40,
		Default: ModelSpec{Instances: 2, Batching: BatchingSpec{MaxBatchSize: 8, MaxQueueDelay: time.Millisecond,
			PreferredBatchSizes: []int{4, 2}, PriorityLevels: 3}}}
	if _, err := r.Apply(d); err != nil {
		t.Fatal(err)
	}
	get := func(name string) *Version {
		t.Helper()
		v, err := r.Get(name, "1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		if ok, reason := v.Ready(); !ok {
			t.Fatalf("%s not ready: %s", name, reason)
		}
		return v
	}

	rs := get("reshape")
	if in := rs.Inputs(); !rs.BatchOne() || rs.Batchable() || len(in) != 1 || !slices.Equal(in[0].Shape, []int64{1, 8}) || in[0].BatchDim != -1 {
		t.Errorf("reshape: BatchOne %v, Batchable %v, inputs %+v", rs.BatchOne(), rs.Batchable(), in)
	}
	if e := rs.engine.Inputs(); !slices.Equal(e[0].Shape, []int64{-1, 8}) {
		t.Errorf("the engine's signature changed: %+v", e)
	}
	if out, err := runOnce(r, "reshape", "1.0.0", obs(1, 8, 1)); err != nil || len(out) != 8 {
		t.Errorf("reshape at batch 1: %v %v", out, err)
	}
	sv, ok := rs.Serving()
	if !ok || sv.Batched || sv.Backend != "cpu" || sv.Instances != 2 {
		t.Errorf("reshape serving %+v %v", sv, ok)
	}

	m := get("mlp")
	if in := m.Inputs(); m.BatchOne() || !m.Batchable() || !slices.Equal(in[0].Shape, []int64{-1, 8}) {
		t.Errorf("mlp: BatchOne %v, Batchable %v, inputs %+v", m.BatchOne(), m.Batchable(), in)
	}
	sv, ok = m.Serving()
	want := Serving{Backend: "cpu", Instances: 2, Batched: true, MaxBatchSize: 8, MaxQueueDelay: time.Millisecond,
		PreferredBatchSizes: []int{2, 4}, PriorityLevels: 3, QueueLen: 40}
	if !ok || sv.Backend != want.Backend || sv.Instances != want.Instances || sv.Batched != want.Batched ||
		sv.MaxBatchSize != want.MaxBatchSize || sv.MaxQueueDelay != want.MaxQueueDelay ||
		!slices.Equal(sv.PreferredBatchSizes, want.PreferredBatchSizes) || sv.PriorityLevels != want.PriorityLevels ||
		sv.QueueLen != want.QueueLen || sv.Sequence != nil || sv.Devices != nil {
		t.Errorf("mlp serving %+v, want %+v", sv, want)
	}

	// Without a queue length, the pool's default: 64 per context.
	d.QueueLen = 0
	d.Batching = false
	if _, err := r.Apply(d); err != nil {
		t.Fatal(err)
	}
	m = get("mlp")
	if sv, _ := m.Serving(); sv.QueueLen != 128 || sv.QueueLen != m.runner.(*engines.Pool).QueueLen() || sv.Batched {
		t.Errorf("mlp serving without batching or a queue length %+v (the pool's queue: %d)", sv, m.runner.(*engines.Pool).QueueLen())
	}
	var missing Version
	if _, ok := missing.Serving(); ok {
		t.Error("a version not loaded reports how it serves")
	}
}
