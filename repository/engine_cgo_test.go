//go:build cgo

package repository

// Tests against the native library (lib/libpolicyd.so). They load
// ../shared/peers/models/mlp-small.onnx (obs FP32[-1,8] → action FP32[-1,2]).

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

const mlpSmall = "../../shared/peers/models/mlp-small.onnx"

// mlpRepository lays out DIR/mlp/1.0.0/model.onnx, a copy of mlp-small.onnx, sealed.
func mlpRepository(t *testing.T) string {
	t.Helper()
	src, err := filepath.Abs(mlpSmall)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(src); err != nil {
		t.Skip("model missing:", err)
	}
	dir := t.TempDir()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	writeModel(t, dir, "mlp", "1.0.0", b)
	return dir
}

func openMLP(t *testing.T, opts engines.PoolOptions) (*Repository, *Version) {
	t.Helper()
	rt := enginestest.NativeRuntime(t)
	r, err := openRepository(rt, mlpRepository(t), repositoryOptions{Pool: opts})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	v, err := r.Get("mlp", "")
	if err != nil {
		t.Fatal(err)
	}
	if ok, reason := v.Ready(); !ok {
		t.Fatalf("mlp@1.0.0 not ready: %s", reason)
	}
	return r, v
}

func obsTensor(batch int, seed float32) bridge.Tensor {
	b := make([]byte, 4*8*batch)
	for i := 0; i < 8*batch; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(seed+float32(i)/64))
	}
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{int64(batch), 8}, Data: b}
}

func TestNativeSignature(t *testing.T) {
	_, v := openMLP(t, engines.PoolOptions{})
	in, out := v.Inputs(), v.Outputs()
	if len(in) != 1 || in[0].Name != "obs" || in[0].DType != bridge.Float32 || len(in[0].Shape) != 2 || in[0].Shape[1] != 8 {
		t.Errorf("inputs = %+v, want obs FP32[-1,8]", in)
	}
	if len(out) != 1 || out[0].Name != "action" || out[0].DType != bridge.Float32 {
		t.Errorf("outputs = %+v, want action FP32[-1,2]", out)
	}
	if !v.Batchable() {
		t.Error("mlp-small is not batchable")
	}
	if v.Backend() == "" {
		t.Error("no backend")
	}
}

func TestNativeReference(t *testing.T) {
	raw, err := os.ReadFile("../testdata/reference/peers-mlp-small_b1.json")
	if err != nil {
		t.Skip("no reference file:", err)
	}
	var ref struct {
		Inputs  []struct{ Data []float32 }
		Outputs []struct{ Data []float64 }
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	_, v := openMLP(t, engines.PoolOptions{})
	in := make([]byte, 4*len(ref.Inputs[0].Data))
	for i, f := range ref.Inputs[0].Data {
		binary.LittleEndian.PutUint32(in[4*i:], math.Float32bits(f))
	}
	var got []float32
	err = v.Do(context.Background(), []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 8}, Data: in}}, engines.RunOptions{},
		func(out []bridge.Tensor) error { got = enginestest.Floats(out[0]); return nil })

	if err != nil {
		t.Fatal(err)
	}
	want := ref.Outputs[0].Data
	if len(got) != len(want) {
		t.Fatalf("got %d values, want %d", len(got), len(want))
	}
	for i := range want {
		if d := math.Abs(float64(got[i]) - want[i]); d > 1e-4+1e-3*math.Abs(want[i]) {
			t.Errorf("action[%d] = %v, want %v", i, got[i], want[i])
		}
	}
}

func TestNativeConcurrentDo(t *testing.T) {
	_, v := openMLP(t, engines.PoolOptions{Instances: 4, QueueLen: 4096})
	// Reference values from a single call, then many goroutines must agree with them.
	want := map[int][]float32{}
	for _, batch := range []int{1, 3, 8} {
		err := v.Do(context.Background(), []bridge.Tensor{obsTensor(batch, 0.5)}, engines.RunOptions{}, func(out []bridge.Tensor) error {
			if got := out[0].Shape; len(got) != 2 || got[0] != int64(batch) || got[1] != 2 {
				t.Errorf("batch %d: output shape %v", batch, got)
			}
			want[batch] = enginestest.Floats(out[0])
			return nil
		})

		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			batch := []int{1, 3, 8}[g%3]
			in := []bridge.Tensor{obsTensor(batch, 0.5)}
			for i := 0; i < 50; i++ {
				err := v.Do(context.Background(), in, engines.RunOptions{}, func(out []bridge.Tensor) error {
					got := enginestest.Floats(out[0])
					for k := range got {
						if got[k] != want[batch][k] {
							return errors.New("outputs differ between workers")
						}
					}
					return nil
				})

				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestNativeRunErrorIsBridgeError(t *testing.T) {
	_, v := openMLP(t, engines.PoolOptions{})
	bad := bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, 9}, Data: make([]byte, 36)}
	err := v.Do(context.Background(), []bridge.Tensor{bad}, engines.RunOptions{}, func([]bridge.Tensor) error { return nil })
	var be *bridge.Error
	if !errors.As(err, &be) || be.Code != bridge.CodeInvalidArg {
		t.Errorf("run with a wrong shape = %v, want a bridge INVALID_ARG error", err)
	}
}

func TestNativePoolQueueFullAndCancel(t *testing.T) {
	_, v := openMLP(t, engines.PoolOptions{Instances: 1, QueueLen: 1})
	p := v.runner.(*engines.Pool)
	// Hold the only worker inside a callback.
	hold, held := make(chan struct{}), make(chan struct{})
	first := make(chan error, 1)
	go func() {
		first <- p.Do(context.Background(), []bridge.Tensor{obsTensor(1, 0)}, engines.RunOptions{}, func([]bridge.Tensor) error {
			close(held)
			<-hold
			return nil
		})

	}()
	<-held
	ctx, cancel := context.WithCancel(context.Background())
	queued := make(chan error, 1)
	go func() {
		queued <- p.Do(ctx, []bridge.Tensor{obsTensor(1, 0)}, engines.RunOptions{}, func([]bridge.Tensor) error { return nil })
	}()
	enginestest.WaitFor(t, func() bool { return p.QueueDepth() == 1 })
	if err := p.Do(context.Background(), []bridge.Tensor{obsTensor(1, 0)}, engines.RunOptions{}, nil); !errors.Is(err, engines.ErrOverloaded) {
		t.Errorf("Do on a full queue = %v, want engines.ErrOverloaded", err)
	}
	cancel()
	select {
	case err := <-queued:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled queued Do = %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("queued Do ignored its context")
	}
	close(hold)
	if err := <-first; err != nil {
		t.Errorf("held Do = %v", err)
	}
	// The worker skips the abandoned job; until it took it off the queue, the queue is full.
	enginestest.WaitFor(t, func() bool { return p.QueueDepth() == 0 })
	if err := p.Do(context.Background(), []bridge.Tensor{obsTensor(1, 0)}, engines.RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
		t.Errorf("Do after the cancelled job = %v", err)
	}
}

func TestNativeClose(t *testing.T) {
	r, v := openMLP(t, engines.PoolOptions{Instances: 2})
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := v.Do(context.Background(), []bridge.Tensor{obsTensor(1, 0)}, engines.RunOptions{}, func([]bridge.Tensor) error { return nil }); !errors.Is(err, engines.ErrClosed) {
		t.Errorf("Do after Close = %v, want engines.ErrClosed", err)
	}
	if ok, reason := v.Ready(); ok || reason == "" {
		t.Errorf("Ready after Close = %v, %q", ok, reason)
	}
}
