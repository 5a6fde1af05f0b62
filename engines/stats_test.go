package engines

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

func TestStatsPoolUnbatched(t *testing.T) {
	st := &Stats{}
	f := &fakeFactory{enginestest.Factory{Started: make(chan struct{}, 16), Gate: make(chan struct{})}}
	p := newTestPool(t, f, PoolOptions{Instances: 1, QueueLen: 8, Stats: st})
	const n = 6
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(float32(i), 1)}, RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
				t.Errorf("Do: %v", err)
			}
		})
	}
	<-f.Started
	enginestest.WaitFor(t, func() bool { return p.jobs.len() == n-1 })
	const wait = 5 * time.Millisecond
	time.Sleep(wait)
	close(f.Gate)
	go func() {
		for range f.Started {
		}
	}()
	wg.Wait()
	s := st.Snapshot()
	if s.ExecutionCount != n || s.InferenceCount != n {
		t.Errorf("execution_count %d, inference_count %d, want %d each", s.ExecutionCount, s.InferenceCount, n)
	}
	for name, d := range map[string]Duration{"queue": s.Queue, "compute_input": s.ComputeInput, "compute_infer": s.ComputeInfer, "compute_output": s.ComputeOutput} {
		if d.Count != n {
			t.Errorf("%s count %d, want %d", name, d.Count, n)
		}
	}
	if s.Queue.NS < uint64((n-1)*wait) {
		t.Errorf("queue %v for %d requests that waited at least %v", time.Duration(s.Queue.NS), n-1, wait)
	}
	if s.ComputeInput.NS != 0 {
		t.Errorf("compute_input %dns for unbatched runs, want 0", s.ComputeInput.NS)
	}
	if len(s.Batches) != 1 || s.Batches[0].BatchSize != 1 || s.Batches[0].ComputeInfer.Count != n {
		t.Errorf("batch_stats %+v, want one entry of size 1 counting %d", s.Batches, n)
	}
}

func newStatsBatcher(t *testing.T, instances int, gated bool, opts BatcherOptions) (*batchFixture, *Stats) {
	t.Helper()
	st := &Stats{Batched: true}
	return newBatchFixture(t, instances, gated, opts, st), st
}

func TestStatsBatcher(t *testing.T) {
	fx, st := newStatsBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 32})
	first := fx.busy(t)
	var wg sync.WaitGroup
	const n = 10
	for i := range n {
		wg.Go(func() {
			if r := do(context.Background(), fx.b, rowsTensor(2, float32(i), float32(i))); r.err != nil {
				t.Errorf("request %d: %v", i, r.err)
			}
		})
		fx.waitQueued(t, i+1)
	}
	time.Sleep(2 * time.Millisecond)
	fx.open()
	wg.Wait()
	<-first
	s := st.Snapshot()
	if s.ExecutionCount != 2 || s.InferenceCount != 1+2*n {
		t.Errorf("execution_count %d, inference_count %d, want 2 and %d", s.ExecutionCount, s.InferenceCount, 1+2*n)
	}
	for name, d := range map[string]Duration{"queue": s.Queue, "compute_input": s.ComputeInput, "compute_infer": s.ComputeInfer, "compute_output": s.ComputeOutput} {
		if d.Count != n+1 {
			t.Errorf("%s count %d, want %d", name, d.Count, n+1)
		}
	}
	if s.Queue.NS < uint64(n*2*time.Millisecond) {
		t.Errorf("queue %v, want at least %v", time.Duration(s.Queue.NS), n*2*time.Millisecond)
	}
	if s.ComputeInput.NS == 0 {
		t.Error("compute_input 0 for a gathered batch")
	}
	want := []int{1, 2 * n}
	if len(s.Batches) != len(want) {
		t.Fatalf("batch_stats %+v, want sizes %v", s.Batches, want)
	}
	for i, b := range s.Batches {
		if b.BatchSize != want[i] || b.ComputeInput.Count != 1 || b.ComputeInfer.Count != 1 || b.ComputeOutput.Count != 1 {
			t.Errorf("batch_stats[%d] = %+v, want size %d run once", i, b, want[i])
		}
	}
}

func TestStatsBatcherConcurrent(t *testing.T) {
	fx, st := newStatsBatcher(t, 2, true, BatcherOptions{MaxBatchSize: 8, MaxQueueDelay: 200 * time.Microsecond})
	const goroutines, each = 16, 100
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				if r := do(context.Background(), fx.b, rowsTensor(3, float32(g*each+i))); r.err != nil {
					t.Errorf("request: %v", r.err)
				}
			}
		})
	}
	fx.openWhenQueued(t, goroutines)
	wg.Wait()
	s := st.Snapshot()
	if s.InferenceCount != goroutines*each || s.Queue.Count != goroutines*each || s.ComputeInfer.Count != goroutines*each {
		t.Errorf("inference_count %d, queue %d, compute_infer %d, want %d each", s.InferenceCount, s.Queue.Count, s.ComputeInfer.Count, goroutines*each)
	}
	if s.ExecutionCount >= s.InferenceCount {
		t.Errorf("execution_count %d, inference_count %d: no batching", s.ExecutionCount, s.InferenceCount)
	}
	var runs, rows uint64
	for _, b := range s.Batches {
		if b.BatchSize < 1 || b.BatchSize > 8 {
			t.Errorf("batch size %d outside [1, 8]", b.BatchSize)
		}
		runs += b.ComputeInfer.Count
		rows += uint64(b.BatchSize) * b.ComputeInfer.Count
	}
	if runs != s.ExecutionCount || rows != s.InferenceCount {
		t.Errorf("batch_stats add up to %d runs of %d rows, want %d and %d", runs, rows, s.ExecutionCount, s.InferenceCount)
	}
}

func TestStatsFailedRunsNotCounted(t *testing.T) {
	fx, st := newStatsBatcher(t, 1, false, BatcherOptions{MaxBatchSize: 8})
	if r := do(context.Background(), fx.b, rowsTensor(2, -1)); r.err == nil {
		t.Fatal("negative input did not fail")
	}
	if r := do(context.Background(), fx.b, rowsTensor(2, 1)); r.err != nil {
		t.Fatal(r.err)
	}
	s := st.Snapshot()
	if s.ExecutionCount != 1 || s.InferenceCount != 1 || s.ComputeInfer.Count != 1 || s.Queue.Count != 2 {
		t.Errorf("after one failed and one good run: %+v", s)
	}
}

func TestStatsRequestsAndLargeBatches(t *testing.T) {
	var nilStats *Stats
	nilStats.RecordRequest(true, time.Millisecond, time.Now()) // records nothing, no panic
	if s := nilStats.Snapshot(); s.ExecutionCount != 0 || s.Batches != nil {
		t.Errorf("nil snapshot %+v", s)
	}
	st := &Stats{Batched: true}
	end := time.UnixMilli(1_700_000_000_123)
	st.RecordRequest(true, 3*time.Millisecond, end)
	st.RecordRequest(false, time.Millisecond, end.Add(time.Hour))
	st.recordRun(1, 1000, 0, time.Millisecond, time.Microsecond)
	st.recordRun(1, 300, 0, time.Millisecond, time.Microsecond)
	st.recordRun(1, 1000, 0, time.Millisecond, time.Microsecond)
	s := st.Snapshot()
	if s.Success != (Duration{1, uint64(3 * time.Millisecond)}) || s.Fail != (Duration{1, uint64(time.Millisecond)}) {
		t.Errorf("success %+v fail %+v", s.Success, s.Fail)
	}
	if s.LastInference != end.UnixMilli() {
		t.Errorf("last_inference %d, want %d (failures do not move it)", s.LastInference, end.UnixMilli())
	}
	if len(s.Batches) != 2 || s.Batches[0].BatchSize != 300 || s.Batches[1].BatchSize != 1000 || s.Batches[1].ComputeInfer.Count != 2 {
		t.Errorf("batch_stats %+v", s.Batches)
	}
}

func TestStatsRecordingAllocatesNothing(t *testing.T) {
	st := &Stats{Batched: true}
	in := []bridge.Tensor{{Shape: []int64{4, 2}}}
	allocs := testing.AllocsPerRun(100, func() {
		now := time.Now()
		st.recordQueue(1, time.Microsecond)
		st.recordRun(4, st.rowsOf(in), time.Microsecond, time.Microsecond, time.Microsecond)
		st.RecordRequest(true, time.Microsecond, now)
	})
	if allocs != 0 {
		t.Errorf("%v allocations per recorded request", allocs)
	}
}
