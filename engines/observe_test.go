package engines

import (
	"context"
	"encoding/binary"
	"math"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// countObserver records what it observes.
type countObserver struct {
	mu   sync.Mutex
	vals []float64
}

func (o *countObserver) Observe(v float64) { o.mu.Lock(); o.vals = append(o.vals, v); o.mu.Unlock() }
func (o *countObserver) Add(v float64)     { o.Observe(v) }

func (o *countObserver) values() []float64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.vals)
}

func newObservers() (*Observers, map[string]*countObserver) {
	m := map[string]*countObserver{}
	for _, k := range []string{"queue", "input", "infer", "output", "batch", "inferences", "executions"} {
		m[k] = &countObserver{}
	}
	return &Observers{Queue: m["queue"], ComputeInput: m["input"], ComputeInfer: m["infer"], ComputeOutput: m["output"],
		BatchSize: m["batch"], Inferences: m["inferences"], Executions: m["executions"]}, m
}

func TestObserversOfAPool(t *testing.T) {
	stats := &Stats{Batched: true}
	o, got := newObservers()
	stats.SetObservers(o)
	p := newTestPool(t, &fakeFactory{}, PoolOptions{Stats: stats})
	fn := func([]bridge.Tensor) error { return nil }
	for _, in := range []bridge.Tensor{enginestest.F32Tensor(1, 2), enginestest.F32Tensor(3, 4), rowsTensor(2, 5, 6, 7)} {
		if err := p.Do(context.Background(), []bridge.Tensor{in}, RunOptions{}, fn); err != nil {
			t.Fatal(err)
		}
	}
	for _, k := range []string{"queue", "input", "infer", "output"} {
		if n := len(got[k].values()); n != 3 {
			t.Errorf("%s: %d observations for 3 requests", k, n)
		}
	}
	if b := got["batch"].values(); !slices.Equal(b, []float64{1, 1, 3}) {
		t.Errorf("batch sizes %v, want [1 1 3]", b)
	}
	if v := got["inferences"].values(); !slices.Equal(v, []float64{1, 1, 3}) {
		t.Errorf("inferences %v, want [1 1 3]", v)
	}
	if v := got["executions"].values(); len(v) != 3 {
		t.Errorf("executions %v, want 3 increments", v)
	}
	for _, v := range got["infer"].values() {
		if v < 0 || v > 5 {
			t.Errorf("compute_infer %v s: not a duration of a fake run", v)
		}
	}
	snap := stats.Snapshot()
	if snap.ExecutionCount != 3 || snap.InferenceCount != 5 {
		t.Errorf("stats kept %d executions, %d inferences, want 3, 5: observers must not replace them", snap.ExecutionCount, snap.InferenceCount)
	}
}

// A request of a batch is charged its batch's durations: one stage observation per request,
// one batch-size observation per run.
func TestObserversOfABatch(t *testing.T) {
	stats := &Stats{Batched: true}
	o, got := newObservers()
	stats.SetObservers(o)
	stats.recordQueue(1, time.Millisecond)
	stats.recordRun(4, 6, time.Microsecond, 2*time.Millisecond, 3*time.Microsecond)
	if q := got["queue"].values(); !slices.Equal(q, []float64{0.001}) {
		t.Errorf("queue %v, want [0.001]", q)
	}
	if v := got["infer"].values(); !slices.Equal(v, []float64{0.002, 0.002, 0.002, 0.002}) {
		t.Errorf("compute_infer %v, want 4 × 0.002", v)
	}
	if b := got["batch"].values(); !slices.Equal(b, []float64{6}) {
		t.Errorf("batch sizes %v, want [6]", b)
	}
	stats.SetObservers(nil)
	stats.recordRun(1, 1, 0, time.Millisecond, 0)
	if n := len(got["batch"].values()); n != 1 {
		t.Errorf("observers removed, yet %d batch observations", n)
	}
}

func TestWarmupInputs(t *testing.T) {
	in := []bridge.IOInfo{
		{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 8}, BatchDim: 0},
		{Name: "mask", DType: bridge.Int64, Shape: []int64{-1, -1}, BatchDim: 0},
		{Name: "h", DType: bridge.Float32, Shape: []int64{2, -1, 4}, BatchDim: 1},
		{Name: "k", DType: bridge.Float32, Shape: []int64{3}, BatchDim: -1},
	}
	runs := WarmupInputs(in, []int{4, 1, 0, 4, 16})
	if len(runs) != 3 {
		t.Fatalf("%d runs for sizes 1, 4, 16", len(runs))
	}
	for i, rows := range []int64{1, 4, 16} {
		want := [][]int64{{rows, 8}, {rows, 1}, {2, rows, 4}, {3}}
		for k, tn := range runs[i] {
			if !slices.Equal(tn.Shape, want[k]) || tn.DType != in[k].DType {
				t.Errorf("run %d input %s: %v %v, want %v", i, in[k].Name, tn.DType, tn.Shape, want[k])
			}
			if int64(len(tn.Data)) != bridge.NumElements(tn.Shape)*int64(tn.DType.Size()) {
				t.Errorf("run %d input %s: %d bytes for shape %v", i, in[k].Name, len(tn.Data), tn.Shape)
			}
			if slices.ContainsFunc(tn.Data, func(b byte) bool { return b != 0 }) {
				t.Errorf("run %d input %s: not zeros", i, in[k].Name)
			}
		}
	}
	if WarmupInputs(nil, []int{4}) != nil {
		t.Error("a signature without inputs got warm-up runs")
	}
}

// Every worker runs the warm-up on its own context before the pool serves, not recorded in
// the stats; a failing warm-up fails NewPool with the reason.
func TestPoolWarmup(t *testing.T) {
	f := &fakeFactory{}
	stats := &Stats{}
	warm := [][]bridge.Tensor{{enginestest.F32Tensor(1, 2)}, {rowsTensor(4, 1)}}
	p := newTestPool(t, f, PoolOptions{Instances: 3, Stats: stats, Warmup: warm})
	made := len(f.Made())
	if made != 3 {
		t.Fatalf("%d contexts", made)
	}
	// fakeContext keeps the last input it ran: every context ran the last warm-up input.
	for i, c := range f.Made() {
		if len(c.Out) != len(warm[1][0].Data) {
			t.Errorf("context %d: last run had %d bytes, want the warm-up's %d", i, len(c.Out), len(warm[1][0].Data))
		}
	}
	if s := stats.Snapshot(); s.ExecutionCount != 0 {
		t.Errorf("warm-up recorded as %d executions", s.ExecutionCount)
	}
	if p.QueueLen() == 0 {
		t.Error("pool not serving")
	}

	bad := &fakeFactory{enginestest.Factory{RunErr: bridge.ErrClosed}}
	if _, err := newPool(bad.newCtx, 1, PoolOptions{Warmup: warm}); err == nil || !strings.Contains(err.Error(), "warm-up run 1 of 2") || !strings.Contains(err.Error(), "[1 2]") {
		t.Errorf("failing warm-up: %v, want the run and its shapes named", err)
	}
}

// benchObservers are the observers metrics.Server resolves: Prometheus histogram and counter
// children.
func benchObservers() *Observers {
	h := func() prometheus.Observer {
		return prometheus.NewHistogram(prometheus.HistogramOpts{Name: "h", Buckets: prometheus.ExponentialBuckets(1e-5, 2.5, 17)})
	}
	c := func() prometheus.Counter { return prometheus.NewCounter(prometheus.CounterOpts{Name: "c"}) }
	return &Observers{Queue: h(), ComputeInput: h(), ComputeInfer: h(), ComputeOutput: h(), BatchSize: h(),
		Inferences: c(), Executions: c()}
}

// BenchmarkPoolDoMetrics: Pool.Do with statistics, without and with the Prometheus observers
// (docs/observability.md, overhead).
func BenchmarkPoolDoMetrics(b *testing.B) {
	for _, withObs := range []bool{false, true} {
		name := map[bool]string{false: "stats", true: "stats+metrics"}[withObs]
		b.Run(name, func(b *testing.B) {
			stats := &Stats{Batched: true}
			if withObs {
				stats.SetObservers(benchObservers())
			}
			p, err := newPool((&fakeFactory{}).newCtx, 1, PoolOptions{Instances: 4, Stats: stats})
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			in := []bridge.Tensor{enginestest.F32Tensor(make([]float32, 64)...)}
			fn := func([]bridge.Tensor) error { return nil }
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := p.Do(context.Background(), in, RunOptions{}, fn); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// BenchmarkBatcherDoMetrics: BenchmarkBatcherDo with statistics, without and with observers.
func BenchmarkBatcherDoMetrics(b *testing.B) {
	for _, withObs := range []bool{false, true} {
		name := map[bool]string{false: "stats", true: "stats+metrics"}[withObs]
		b.Run(name, func(b *testing.B) {
			stats := &Stats{Batched: true}
			if withObs {
				stats.SetObservers(benchObservers())
			}
			rec := &runRecord{seen: map[float32]bool{}, light: true}
			newCtx := func() (ExecContext, error) { return &batchContext{rec: rec}, nil }
			p, err := newPool(newCtx, 2, PoolOptions{Instances: 2, Stats: stats})
			if err != nil {
				b.Fatal(err)
			}
			bt, err := newBatcher(p, batchInputs, batchOutputs, BatcherOptions{MaxQueueDelay: 100 * time.Microsecond})
			if err != nil {
				b.Fatal(err)
			}
			defer bt.Close()
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				in := []bridge.Tensor{rowsTensor(8, 1)}
				var sink float32
				fn := func(out []bridge.Tensor) error {
					sink += math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data))
					return nil
				}
				for pb.Next() {
					if err := bt.Do(context.Background(), in, RunOptions{}, fn); err != nil {
						b.Error(err)
						return
					}
				}
				_ = sink
			})
		})
	}
}
