package repository

// Fakes of engines' tests, for pools that run no native code.

import (
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// fakeContext doubles its first FP32 input into its first output. When gate is set, every Run
// reports on started and then waits for gate.
type fakeContext struct {
	seed    uint64
	out     []byte
	closed  *atomic.Int32
	started chan struct{}
	gate    chan struct{}
	runErr  error
}

func (c *fakeContext) SetSeed(s uint64) error { c.seed = s; return nil }

func (c *fakeContext) SetRowSeeds([]uint64) error { return nil }

func (c *fakeContext) Run(in, out []bridge.Tensor) error {
	if c.started != nil {
		c.started <- struct{}{}
		<-c.gate
	}
	if c.runErr != nil {
		return c.runErr
	}
	c.out = append(c.out[:0], in[0].Data...)
	for i := 0; i+4 <= len(c.out); i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(c.out[i:]))
		binary.LittleEndian.PutUint32(c.out[i:], math.Float32bits(2*f))
	}
	out[0].DType = bridge.Float32
	out[0].Shape = append(out[0].Shape[:0], in[0].Shape...)
	out[0].Data = c.out
	return nil
}

func (c *fakeContext) Close() error { c.closed.Add(1); return nil }

type fakeFactory struct {
	mu       sync.Mutex
	made     []*fakeContext
	closed   atomic.Int32
	started  chan struct{}
	gate     chan struct{}
	failFrom int // creations from this index on fail (0 = never)
	runErr   error
}

func (f *fakeFactory) newCtx() (engines.ExecContext, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failFrom > 0 && len(f.made)+1 >= f.failFrom {
		return nil, errors.New("no memory for context")
	}
	c := &fakeContext{closed: &f.closed, started: f.started, gate: f.gate, runErr: f.runErr}
	f.made = append(f.made, c)
	return c, nil
}

func f32Tensor(vals ...float32) bridge.Tensor {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, int64(len(vals))}, Data: b}
}

func firstF32(t bridge.Tensor) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(t.Data))
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

func newTestPool(t *testing.T, f *fakeFactory, opts engines.PoolOptions) *engines.Pool {
	t.Helper()
	p, err := engines.NewPoolFunc(f.newCtx, 1, opts)
	if err != nil {
		t.Fatalf("newPool: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
