//go:build cgo

package engines

import (
	"context"
	"encoding/binary"
	"math"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/policyd/policyd/bridge"
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
			rt := nativeRuntime(t)
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

			var runs atomic.Int32
			p, err := newPool(func() (execContext, error) {
				c, err := e.NewContext()
				if err != nil {
					return nil, err
				}
				return countingContext{c, &runs}, nil
			}, len(e.Outputs()), PoolOptions{Instances: 2})
			if err != nil {
				t.Fatal(err)
			}
			b, err := NewBatcher(p, e.Inputs(), e.Outputs(), BatcherOptions{MaxBatchSize: 16, MaxQueueDelay: DefaultMaxQueueDelay})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			var wg sync.WaitGroup
			var mismatches atomic.Int32
			for g := range goroutines {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range each {
						err := b.Do(context.Background(), []bridge.Tensor{obs(g, i)}, func(out []bridge.Tensor) error {
							if out[0].Shape[0] != 1 || !slices.Equal(out[0].Data, want[g*each+i]) {
								mismatches.Add(1)
							}
							return nil
						})
						if err != nil {
							t.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if n := mismatches.Load(); n != 0 {
				t.Errorf("%d of %d outputs differ from the unbatched run", n, goroutines*each)
			}
			t.Logf("%d engine runs for %d requests", runs.Load(), goroutines*each)
			if int(runs.Load()) >= goroutines*each {
				t.Errorf("%d engine runs for %d requests: no batching", runs.Load(), goroutines*each)
			}
		})
	}
}
