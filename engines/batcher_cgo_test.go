//go:build cgo

package engines

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// countingContext counts the runs of a native context.
type countingContext struct {
	*bridge.Context
	runs *atomic.Int32
}

func (c countingContext) Run(in, out []bridge.Tensor) error {
	c.runs.Add(1)
	return c.Context.Run(in, out)
}

// TestBatcherNativeMatchesUnbatched: 16 goroutines send distinct batch-1 observations through
// a Batcher over mlp-small and mlp-med; each gets exactly the outputs of an unbatched run, and
// the engine runs fewer times than it was asked.
func TestBatcherNativeMatchesUnbatched(t *testing.T) {
	for _, model := range []string{mlpSmall, mlpMed} {
		t.Run(model, func(t *testing.T) {
			rt := enginestest.NativeRuntime(t)
			onnx, err := os.ReadFile(model)
			if err != nil {
				t.Skip("model missing:", err)
			}
			e, err := rt.NewEngine(onnx, bridge.EngineOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			if !Batchable(e.Batchable(), e.Inputs(), e.Outputs()) {
				t.Fatalf("%s is not batchable", model)
			}
			width := int(e.Inputs()[0].Shape[1])
			const goroutines, each = 16, 20
			obs := func(g, i int) bridge.Tensor {
				vals := make([]float32, width)
				for k := range vals {
					vals[k] = float32(math.Sin(float64(g*1000+i*37+k))) * 2
				}
				b := make([]byte, 4*width)
				for k, v := range vals {
					binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(v))
				}
				return bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, int64(width)}, Data: b}
			}

			// The reference: every observation run alone on a plain context.
			c, err := e.NewContext()
			if err != nil {
				t.Fatal(err)
			}
			want := make([][]byte, goroutines*each)
			out := make([]bridge.Tensor, len(e.Outputs()))
			for g := range goroutines {
				for i := range each {
					if err := c.Run([]bridge.Tensor{obs(g, i)}, out); err != nil {
						t.Fatal(err)
					}
					want[g*each+i] = slices.Clone(out[0].Data)
				}
			}
			c.Close()

			mismatches := batchConcurrently(t, e, 2, BatcherOptions{MaxBatchSize: 16, MaxQueueDelay: DefaultMaxQueueDelay},
				goroutines, each, func(g, i int) ([]bridge.Tensor, RunOptions) {
					return []bridge.Tensor{obs(g, i)}, RunOptions{}
				}, func(g, i int, out []bridge.Tensor) bool {
					return out[0].Shape[0] == 1 && slices.Equal(out[0].Data, want[g*each+i])
				})
			if mismatches != 0 {
				t.Errorf("%d of %d outputs differ from the unbatched run", mismatches, goroutines*each)
			}
		})
	}
}

// BenchmarkNativeMLPMed16: mlp-med, 16 goroutines of batch-1 requests, on a plain Pool and
// behind a Batcher (2 instances each); allocs/op is per request.
func BenchmarkNativeMLPMed16(b *testing.B) {
	if err := bridge.Available(); err != nil {
		b.Skip(err)
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	onnx, err := os.ReadFile(mlpMed)
	if err != nil {
		b.Skip(err)
	}
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	for _, batched := range []bool{false, true} {
		b.Run(fmt.Sprintf("batched=%v", batched), func(b *testing.B) {
			p, err := NewPool(e, PoolOptions{Instances: 2, QueueLen: 64})
			if err != nil {
				b.Fatal(err)
			}
			var r Runner = p
			if batched {
				if r, err = NewBatcher(p, e.Inputs(), e.Outputs(), BatcherOptions{MaxQueueDelay: DefaultMaxQueueDelay}); err != nil {
					b.Fatal(err)
				}
			}
			defer r.Close()
			b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0)))
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				in := []bridge.Tensor{obs(1, 64, 0.5)}
				fn := func([]bridge.Tensor) error { return nil }
				for pb.Next() {
					if err := r.Do(context.Background(), in, RunOptions{}, fn); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

// TestBatcherNativeSeededSamples: seeded requests to a stochastic policy (3DBall samples its
// continuous actions with RandomNormalLike) get, when batched with others (seeded or not),
// exactly the samples they get alone with the same seed.
func TestBatcherNativeSeededSamples(t *testing.T) {
	const model = "../../shared/models/mlagents/3DBall.onnx"
	onnx, err := os.ReadFile(model)
	if err != nil {
		t.Skip("model missing:", err)
	}
	e, err := enginestest.NativeRuntime(t).NewEngine(onnx, bridge.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	act := bridge.IOIndex(e.Outputs(), "continuous_actions")
	if act < 0 || !Batchable(e.Batchable(), e.Inputs(), e.Outputs()) {
		t.Fatalf("3DBall: continuous_actions at %d, batchable %v", act, e.Batchable())
	}
	width := int(e.Inputs()[0].Shape[1])
	obs := func(n int) bridge.Tensor {
		b := make([]byte, 4*width)
		for k := range width {
			binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(float32(math.Sin(float64(n*31+k)))))
		}
		return bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, int64(width)}, Data: b}
	}
	const goroutines, each = 12, 15
	seed := func(n int) uint64 { return uint64(n)*7919 + 1 }
	seeded := func(n int) bool { return n%3 != 2 }

	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	want := make([][]float32, goroutines*each)
	out := make([]bridge.Tensor, len(e.Outputs()))
	for n := range want {
		if !seeded(n) {
			continue
		}
		if err := c.SetRowSeeds([]uint64{RowSeed(seed(n), 0)}); err != nil {
			t.Fatal(err)
		}
		if err := c.Run([]bridge.Tensor{obs(n)}, out); err != nil {
			t.Fatal(err)
		}
		want[n] = enginestest.Floats(out[act])
	}
	c.Close()

	mismatches := batchConcurrently(t, e, 1, BatcherOptions{MaxBatchSize: 16, MaxQueueDelay: time.Millisecond},
		goroutines, each, func(g, i int) ([]bridge.Tensor, RunOptions) {
			n := g*each + i
			return []bridge.Tensor{obs(n)}, RunOptions{Seed: seed(n), Seeded: seeded(n)}
		}, func(g, i int, out []bridge.Tensor) bool {
			n := g*each + i
			return !seeded(n) || closeFloats(enginestest.Floats(out[act]), want[n], 1e-5)
		})
	if mismatches != 0 {
		t.Errorf("%d seeded requests sampled differently batched than alone", mismatches)
	}
}

// batchConcurrently sends goroutines × each requests (request(g, i)) through a Batcher over
// e with the given instances, checks each request's outputs (ok(g, i, outputs)) and returns
// how many failed the check. The first runs wait until every goroutine's first request is in
// one or queued, so that requests meet in batches however the machine schedules them (a
// small policy runs in microseconds: they would rarely meet otherwise); the test fails when
// no batching happened, since it would then prove nothing.
func batchConcurrently(t *testing.T, e *bridge.Engine, instances int, opts BatcherOptions, goroutines, each int,
	request func(g, i int) ([]bridge.Tensor, RunOptions), ok func(g, i int, outputs []bridge.Tensor) bool) int {
	t.Helper()
	var runs, waiting, bad atomic.Int32
	gate := make(chan struct{})
	var opened sync.Once
	open := func() { opened.Do(func() { close(gate) }) }
	p, err := newPool(func() (ExecContext, error) {
		c, err := e.NewContext()
		if err != nil {
			return nil, err
		}
		return gatedContext{countingContext{c, &runs}, gate, &waiting}, nil
	}, len(e.Outputs()), PoolOptions{Instances: instances})
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBatcher(p, e.Inputs(), e.Outputs(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { open(); b.Close() }() // never leave a worker waiting: Close waits for it
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Go(func() {
			for i := range each {
				in, o := request(g, i)
				err := b.Do(context.Background(), in, o, func(out []bridge.Tensor) error {
					if !ok(g, i, out) {
						bad.Add(1)
					}
					return nil
				})
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	enginestest.WaitFor(t, func() bool { return int(waiting.Load())+b.queue.len() == goroutines })
	open()
	wg.Wait()
	t.Logf("%d engine runs for %d requests", runs.Load(), goroutines*each)
	if int(runs.Load()) >= goroutines*each {
		t.Errorf("%d engine runs for %d requests: no batching, the test proves nothing", runs.Load(), goroutines*each)
	}
	return int(bad.Load())
}

// gatedContext waits for gate before every run (a closed gate lets every run through); rows
// counts the rows of the runs waiting.
type gatedContext struct {
	countingContext
	gate chan struct{}
	rows *atomic.Int32
}

func (c gatedContext) Run(in, out []bridge.Tensor) error {
	n := int32(in[0].Shape[0])
	c.rows.Add(n)
	<-c.gate
	c.rows.Add(-n)
	return c.countingContext.Run(in, out)
}

func closeFloats(a, b []float32, tol float64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Abs(float64(a[i]-b[i])) > tol {
			return false
		}
	}
	return true
}
