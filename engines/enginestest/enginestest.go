// Package enginestest holds what the tests of engines and repository share: a fake execution
// context for pools that run no native code, tensor helpers and the native runtime of the
// cgo tests. It does not import engines, so that engines' own tests can use it.
package enginestest

import (
	"encoding/binary"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
)

// ExecContext is the method set of engines.ExecContext; a value of it is assignable to one.
type ExecContext interface {
	SetSeed(seed uint64) error
	SetRowSeeds(seeds []uint64) error
	Run(inputs, outputs []bridge.Tensor) error
	Close() error
}

// Context doubles its first FP32 input into its first output. When its factory's Gate is set,
// every Run reports on Started and then waits for Gate. It is not safe for concurrent use (a
// pool runs a context on one goroutine at a time).
type Context struct {
	Seed    uint64 // set by SetSeed
	Out     []byte // the last output
	closed  *atomic.Int32
	started chan struct{}
	gate    chan struct{}
	runErr  error
}

func (c *Context) SetSeed(s uint64) error { c.Seed = s; return nil }

func (c *Context) SetRowSeeds([]uint64) error { return nil }

func (c *Context) Run(in, out []bridge.Tensor) error {
	if c.started != nil {
		c.started <- struct{}{}
		<-c.gate
	}
	if c.runErr != nil {
		return c.runErr
	}
	c.Out = append(c.Out[:0], in[0].Data...)
	for i := 0; i+4 <= len(c.Out); i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(c.Out[i:]))
		binary.LittleEndian.PutUint32(c.Out[i:], math.Float32bits(2*f))
	}
	out[0].DType = bridge.Float32
	out[0].Shape = append(out[0].Shape[:0], in[0].Shape...)
	out[0].Data = c.Out
	return nil
}

// Hold makes every later Run report on started and then wait for gate; set it while the
// context is idle.
func (c *Context) Hold(started, gate chan struct{}) { c.started, c.gate = started, gate }

func (c *Context) Close() error { c.closed.Add(1); return nil }

// Factory makes Contexts and counts those closed. Its fields are set before the first New; New
// and Made are safe for concurrent use.
type Factory struct {
	mu       sync.Mutex
	made     []*Context
	Closed   atomic.Int32
	Started  chan struct{}
	Gate     chan struct{}
	FailFrom int   // creations from this index on fail (0 = never)
	RunErr   error // what every Run returns
}

// New makes a Context, or fails from the FailFrom-th on.
func (f *Factory) New() (ExecContext, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.FailFrom > 0 && len(f.made)+1 >= f.FailFrom {
		return nil, errors.New("no memory for context")
	}
	c := &Context{closed: &f.Closed, started: f.Started, gate: f.Gate, runErr: f.RunErr}
	f.made = append(f.made, c)
	return c, nil
}

// Made is the Contexts made so far.
func (f *Factory) Made() []*Context {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]*Context(nil), f.made...)
}

// F32Tensor is an FP32[1,len(vals)] tensor.
func F32Tensor(vals ...float32) bridge.Tensor {
	b := make([]byte, 4*len(vals))
	for i, v := range vals {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, int64(len(vals))}, Data: b}
}

// FirstF32 is an FP32 tensor's first value.
func FirstF32(t bridge.Tensor) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(t.Data))
}

// Floats is an FP32 tensor's values.
func Floats(t bridge.Tensor) []float32 {
	out := make([]float32, len(t.Data)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return out
}

// WaitFor polls cond every millisecond and fails the test unless it holds within 5 s.
func WaitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(time.Millisecond)
	}
}

// NativeRuntime is a runtime of the native library, closed when the test ends; the test is
// skipped when the library is unusable (a !cgo build among them).
func NativeRuntime(t testing.TB) *bridge.Runtime {
	t.Helper()
	if err := bridge.Available(); err != nil {
		t.Skip("native library unusable:", err)
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Fatalf("NewRuntime: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}
