package engines

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

func TestNewSequencesChecksSignature(t *testing.T) {
	f32 := func(name string, shape ...int64) bridge.IOInfo {
		return bridge.IOInfo{Name: name, DType: bridge.Float32, Shape: shape}
	}
	ins := []bridge.IOInfo{f32("obs", -1, 8), f32("h_in", -1, 128), {Name: "n", DType: bridge.Int64, Shape: []int64{-1, 4}}, f32("dyn", -1, -1)}
	outs := []bridge.IOInfo{f32("act", -1, 2), f32("h_out", 1, 1, 128), f32("small", -1, 64), f32("n_out", -1, 4)}
	if s, err := NewSequences(SequenceSpec{States: []StatePair{{"h_in", "h_out"}}}, ins, outs); err != nil {
		t.Errorf("h_in→h_out (batch dimension aside, same size): %v", err)
	} else {
		if !s.IsState(1) || s.IsState(0) {
			t.Error("IsState")
		}
		s.Close()
		s.Close() // idempotent
		if _, err := s.Begin(SequenceID{Num: 1}, true); !errors.Is(err, ErrClosed) {
			t.Errorf("Begin after Close: %v", err)
		}
	}
	for _, c := range []struct {
		pair StatePair
		want string
	}{
		{StatePair{"nope", "h_out"}, `state input "nope" is not an input of the model (inputs: "obs", "h_in", "n", "dyn")`},
		{StatePair{"h_in", "nope"}, `state output "nope" is not an output`},
		{StatePair{"h_in", "small"}, "shapes [-1 128] and [-1 64] differ"},
		{StatePair{"n", "n_out"}, "datatypes differ (INT64, FP32)"},
		{StatePair{"dyn", "act"}, "more than one dynamic dimension"},
	} {
		_, err := NewSequences(SequenceSpec{States: []StatePair{c.pair}}, ins, outs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.pair, err, c.want)
		}
	}
}

// recurrentContext is a stateful policy: y = x + state, state_out = x + state, [-1,2] FP32.
type recurrentContext struct{ y, so []byte }

func (c *recurrentContext) SetSeed(uint64) error       { return nil }
func (c *recurrentContext) SetRowSeeds([]uint64) error { return nil }
func (c *recurrentContext) Close() error               { return nil }
func (c *recurrentContext) Run(in, out []bridge.Tensor) error {
	x, st := in[0], in[1]
	if len(x.Data) != len(st.Data) {
		return errors.New("x and state differ in size")
	}
	c.y = append(c.y[:0], x.Data...)
	for i := 0; i+4 <= len(c.y); i += 4 {
		v := math.Float32frombits(binary.LittleEndian.Uint32(x.Data[i:])) + math.Float32frombits(binary.LittleEndian.Uint32(st.Data[i:]))
		binary.LittleEndian.PutUint32(c.y[i:], math.Float32bits(v))
	}
	c.so = append(c.so[:0], c.y...)
	for k, d := range [][]byte{c.y, c.so} {
		out[k].DType = bridge.Float32
		out[k].Shape = append(out[k].Shape[:0], x.Shape...)
		out[k].Data = d
	}
	return nil
}

var (
	recurrentInputs = []bridge.IOInfo{
		{Name: "x", DType: bridge.Float32, Shape: []int64{-1, 2}},
		{Name: "state", DType: bridge.Float32, Shape: []int64{-1, 2}},
	}
	recurrentOutputs = []bridge.IOInfo{
		{Name: "y", DType: bridge.Float32, Shape: []int64{-1, 2}},
		{Name: "state_out", DType: bridge.Float32, Shape: []int64{-1, 2}},
	}
)

// A sequence driven through RunOptions alone, on a Pool and on a Batcher in front of one: the
// runner supplies the state, stores the new one, and drops the sequence at its end; what a
// step may not send is refused before it runs.
func TestSequenceThroughRunOptions(t *testing.T) {
	newCtx := func() (ExecContext, error) { return &recurrentContext{}, nil }
	p, err := newPool(newCtx, 2, PoolOptions{Instances: 2, LockOSThread: testLockedWorkers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	bp, err := newPool(newCtx, 2, PoolOptions{Instances: 2, LockOSThread: testLockedWorkers})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBatcher(bp, recurrentInputs, recurrentOutputs, BatcherOptions{MaxBatchSize: 8})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	for name, r := range map[string]Runner{"pool": p, "batcher": b} {
		t.Run(name, func(t *testing.T) {
			seqs, err := NewSequences(SequenceSpec{States: []StatePair{{Input: "state", Output: "state_out"}}}, recurrentInputs, recurrentOutputs)
			if err != nil {
				t.Fatal(err)
			}
			defer seqs.Close()
			step := func(id SequenceID, start, end bool, x ...float32) ([]float32, error) {
				inputs := []bridge.Tensor{enginestest.F32Tensor(x...), {}}
				var y []float32
				err := r.Do(context.Background(), inputs, RunOptions{Sequence: SequenceStep{Store: seqs, ID: id, Start: start, End: end}},
					func(outs []bridge.Tensor) error {
						for i := 0; i+4 <= len(outs[0].Data); i += 4 {
							y = append(y, math.Float32frombits(binary.LittleEndian.Uint32(outs[0].Data[i:])))
						}
						return nil
					})
				if inputs[1].Data != nil {
					t.Error("the state input still refers to the sequence's state after Do")
				}
				return y, err
			}
			id := SequenceID{Str: "episode-1"}
			for i, c := range []struct {
				start, end bool
				x, want    []float32
			}{
				{true, false, []float32{1, 2}, []float32{1, 2}},
				{false, false, []float32{1, 1}, []float32{2, 3}},
				{false, true, []float32{0.5, 0}, []float32{2.5, 3}},
			} {
				y, err := step(id, c.start, c.end, c.x...)
				if err != nil || fmt.Sprint(y) != fmt.Sprint(c.want) {
					t.Errorf("step %d: y = %v, %v; want %v", i, y, err, c.want)
				}
			}
			if n := seqs.Len(); n != 0 {
				t.Errorf("%d sequences live after the end", n)
			}
			if _, err := step(id, false, false, 1, 1); !errors.Is(err, ErrUnknownSequence) {
				t.Errorf("after the end: %v", err)
			}
			// Without a Store the options are no step: the caller sends the state itself.
			var y float32
			err = r.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1, 1), enginestest.F32Tensor(2, 3)},
				RunOptions{Sequence: SequenceStep{ID: id, Start: true}}, func(outs []bridge.Tensor) error {
					y = enginestest.FirstF32(outs[0])
					return nil
				})
			if err != nil || y != 3 {
				t.Errorf("no store: y = %v, %v", y, err)
			}
			// A state input sent, a batch of 2: refused, naming the input; nothing starts.
			opts := RunOptions{Sequence: SequenceStep{Store: seqs, ID: SequenceID{Num: 2}, Start: true}}
			noop := func([]bridge.Tensor) error { return nil }
			err = r.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1, 1), enginestest.F32Tensor(2, 3)}, opts, noop)
			if !errors.Is(err, ErrSequenceInput) || !strings.Contains(err.Error(), `input "state" is a state of sequence 2`) {
				t.Errorf("state sent: %v", err)
			}
			two := bridge.Tensor{DType: bridge.Float32, Shape: []int64{2, 2}, Data: make([]byte, 16)}
			err = r.Do(context.Background(), []bridge.Tensor{two, {}}, opts, noop)
			if !errors.Is(err, ErrSequenceInput) || !strings.Contains(err.Error(), "must have batch size 1") {
				t.Errorf("batch 2: %v", err)
			}
			if n := seqs.Len(); n != 0 {
				t.Errorf("%d sequences live after refused steps", n)
			}
		})
	}
}

// A step of a live sequence allocates nothing on its way through DoSequenceStep.
func TestSequenceStepAllocs(t *testing.T) {
	newCtx := func() (ExecContext, error) { return &recurrentContext{}, nil }
	p, err := newPool(newCtx, 2, PoolOptions{LockOSThread: testLockedWorkers})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	seqs, err := NewSequences(SequenceSpec{States: []StatePair{{Input: "state", Output: "state_out"}}}, recurrentInputs, recurrentOutputs)
	if err != nil {
		t.Fatal(err)
	}
	defer seqs.Close()
	inputs := []bridge.Tensor{enginestest.F32Tensor(1, 1), {}}
	fn := func([]bridge.Tensor) error { return nil }
	opts := RunOptions{Sequence: SequenceStep{Store: seqs, ID: SequenceID{Num: 1}, Start: true}}
	if err := p.Do(context.Background(), inputs, opts, fn); err != nil {
		t.Fatal(err)
	}
	opts.Sequence.Start = false
	// The step itself; the Pool's own run on a context of its own allocates nothing either.
	allocs := testing.AllocsPerRun(100, func() {
		if err := DoSequenceStep(context.Background(), p, inputs, opts, fn); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 && !testLockedWorkers {
		t.Errorf("a step of a live sequence allocates %.1f times", allocs)
	}
}
