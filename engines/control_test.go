package engines

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

var (
	controlInputs = []bridge.IOInfo{
		{Name: "x", DType: bridge.Float32, Shape: []int64{-1, 1}},
		{Name: "START", DType: bridge.Int32, Shape: []int64{-1, 1}},
		{Name: "END", DType: bridge.Float32, Shape: []int64{-1, 1}},
		{Name: "READY", DType: bridge.Bool, Shape: []int64{-1, 1}},
		{Name: "CORRID", DType: bridge.Uint64, Shape: []int64{-1, 1}},
	}
	controlOutputs = []bridge.IOInfo{{Name: "y", DType: bridge.Float32, Shape: []int64{-1, 5}}}
	controls       = []Control{
		{Input: "START", Kind: ControlStart, DType: bridge.Int32, False: 0, True: 1},
		{Input: "END", Kind: ControlEnd, DType: bridge.Float32, False: -1, True: 2.5},
		{Input: "READY", Kind: ControlReady, DType: bridge.Bool, False: 0, True: 1},
		{Input: "CORRID", Kind: ControlCorrID, DType: bridge.Uint64},
	}
)

// controlContext echoes its inputs as y = [x, START, END, READY, CORRID] per row (FP32), and
// records the batch sizes it ran; gate, when set, holds its first run until closed.
type controlContext struct {
	y       []byte
	mu      sync.Mutex
	batches []int64
	started chan struct{}
	gate    chan struct{}
}

func (c *controlContext) SetSeed(uint64) error       { return nil }
func (c *controlContext) SetRowSeeds([]uint64) error { return nil }
func (c *controlContext) Close() error               { return nil }
func (c *controlContext) Run(in, out []bridge.Tensor) error {
	c.mu.Lock()
	gate := c.gate
	c.gate = nil
	c.mu.Unlock()
	if gate != nil {
		c.started <- struct{}{}
		<-gate
	}
	n := in[0].Shape[0]
	c.mu.Lock()
	c.batches = append(c.batches, n)
	c.mu.Unlock()
	for k := 1; k < 5; k++ {
		if got := in[k].Shape; len(got) != 2 || got[0] != n || got[1] != 1 {
			return fmt.Errorf("input %d: shape %v, want [%d 1]", k, got, n)
		}
	}
	c.y = c.y[:0]
	put := func(f float32) { c.y = binary.LittleEndian.AppendUint32(c.y, math.Float32bits(f)) }
	for r := range n {
		put(math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[4*r:])))
		put(float32(int32(binary.LittleEndian.Uint32(in[1].Data[4*r:]))))
		put(math.Float32frombits(binary.LittleEndian.Uint32(in[2].Data[4*r:])))
		put(float32(in[3].Data[r]))
		put(float32(binary.LittleEndian.Uint64(in[4].Data[8*r:])))
	}
	out[0].DType, out[0].Shape, out[0].Data = bridge.Float32, append(out[0].Shape[:0], n, 5), c.y
	return nil
}

// Controls are checked against the signature: the input, its datatype, one element per row.
func TestNewSequencesChecksControls(t *testing.T) {
	ins := append(append([]bridge.IOInfo{}, controlInputs...),
		bridge.IOInfo{Name: "WIDE", DType: bridge.Int32, Shape: []int64{-1, 2}},
		bridge.IOInfo{Name: "FLAT", DType: bridge.Int32, Shape: []int64{-1}})
	s, err := NewSequences(SequenceSpec{Controls: controls}, ins, controlOutputs)
	if err != nil {
		t.Fatalf("controls only: %v", err)
	}
	if !s.IsState(1) || !s.IsControl(4) || s.IsControl(0) || s.IsState(0) || !s.HasControls() {
		t.Error("IsState/IsControl/HasControls")
	}
	s.Close()
	for _, c := range []struct {
		ctl  Control
		want string
	}{
		{Control{Input: "GO", Kind: ControlStart, DType: bridge.Int32, True: 1}, `control input "GO" (start) is not an input of the model`},
		{Control{Input: "START", Kind: ControlStart, DType: bridge.Float32, True: 1}, `control input "START" (start): the model's datatype is INT32, the config says FP32`},
		{Control{Input: "WIDE", Kind: ControlEnd, DType: bridge.Int32, True: 1}, `control input "WIDE" (end): shape [-1 2]; a control holds one element per row`},
		{Control{Input: "FLAT", Kind: ControlEnd, DType: bridge.Int32, True: 1}, `control input "FLAT" (end): shape [-1]`},
	} {
		_, err := NewSequences(SequenceSpec{Controls: []Control{c.ctl}}, ins, controlOutputs)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.ctl, err, c.want)
		}
	}
	var probs []string
	(&SequenceSpec{States: []StatePair{{"x", "y"}}, Controls: []Control{
		{Input: "x", Kind: ControlStart, DType: bridge.Uint64},
		{Input: "B", Kind: ControlStart, DType: bridge.Int32, True: 0},
	}}).Check("models[0]", func(f string, a ...any) { probs = append(probs, fmt.Sprintf(f, a...)) })
	for _, want := range []string{"controls[0].datatype: a start control is one of FP32, INT32, BOOL, got UINT64", `controls[0].input: "x" is also a state input`,
		"controls[1]: false_value and true_value are both 0", "controls[1].kind: start listed twice"} {
		if !strings.Contains(strings.Join(probs, "\n"), want) {
			t.Errorf("Check: %q lacks %q", probs, want)
		}
	}
}

// With the dynamic batcher, steps of different sequences share a batch and each row gets its
// own control values; a CORRID that cannot hold the sequence ID and a control sent by the
// caller are refused before anything runs.
func TestControlsBatched(t *testing.T) {
	cc := &controlContext{started: make(chan struct{}, 1)}
	p, err := newPool(func() (ExecContext, error) { return cc, nil }, 1, PoolOptions{Instances: 1, LockOSThread: testLockedWorkers})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBatcher(p, controlInputs, controlOutputs, BatcherOptions{MaxBatchSize: 8, MaxQueueDelay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	seqs, err := NewSequences(SequenceSpec{Controls: controls}, controlInputs, controlOutputs)
	if err != nil {
		t.Fatal(err)
	}
	defer seqs.Close()
	step := func(id uint64, start, end bool, x float32) ([]float32, error) {
		inputs := []bridge.Tensor{enginestest.F32Tensor(x), {}, {}, {}, {}}
		var y []float32
		err := b.Do(context.Background(), inputs, RunOptions{Sequence: SequenceStep{Store: seqs, ID: SequenceID{Num: id}, Start: start, End: end}},
			func(outs []bridge.Tensor) error {
				y = enginestest.Floats(outs[0])
				return nil
			})
		for k := 1; k < 5; k++ {
			if inputs[k].Data != nil {
				t.Errorf("control input %d still set after Do", k)
			}
		}
		return y, err
	}
	for i := 1; i < 8; i++ { // seven live sequences, one step each
		if _, err := step(uint64(1000+i), true, false, 0); err != nil {
			t.Fatal(err)
		}
	}
	gate := make(chan struct{})
	cc.mu.Lock()
	cc.batches, cc.gate = nil, gate
	cc.mu.Unlock()
	var wg sync.WaitGroup
	results := make([][]float32, 8)
	errs := make([]error, 8)
	wg.Add(1)
	go func() { // held in the context until the others queue behind it
		defer wg.Done()
		results[0], errs[0] = step(1000, true, false, 0)
	}()
	<-cc.started
	for i := 1; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = step(uint64(1000+i), i%2 == 1, i%3 == 0, float32(i))
		}()
	}
	time.Sleep(50 * time.Millisecond) // the seven steps reach the queue
	close(gate)
	wg.Wait()
	for i := range 8 {
		start, end := i == 0 || i%2 == 1, i != 0 && i%3 == 0
		want := []float32{float32(i), 0, -1, 1, float32(1000 + i)}
		if start {
			want[1] = 1
		}
		if end {
			want[2] = 2.5
		}
		if errs[i] != nil || fmt.Sprint(results[i]) != fmt.Sprint(want) {
			t.Errorf("sequence %d: y = %v, %v; want %v", 1000+i, results[i], errs[i], want)
		}
	}
	cc.mu.Lock()
	batches := fmt.Sprint(cc.batches)
	cc.mu.Unlock()
	if batches != "[1 7]" {
		t.Errorf("batches %s, want [1 7]: the seven queued steps in one batch", batches)
	}

	// A CORRID of 32 bits cannot hold every ID; a caller's control is refused.
	ins32 := append([]bridge.IOInfo{}, controlInputs...)
	ins32[4].DType = bridge.Int32
	small, err := NewSequences(SequenceSpec{Controls: []Control{{Input: "CORRID", Kind: ControlCorrID, DType: bridge.Int32}}},
		ins32, controlOutputs)
	if err != nil {
		t.Fatal(err)
	}
	defer small.Close()
	noop := func([]bridge.Tensor) error { return nil }
	for _, c := range []struct {
		id   SequenceID
		want string
	}{
		{SequenceID{Num: 1 << 31}, "CORRID control input \"CORRID\" is INT32: sequence_id must be an integer from 1 to 2147483647"},
		{SequenceID{Str: "ep"}, "sequence_id must be an integer"},
	} {
		in := []bridge.Tensor{enginestest.F32Tensor(1), {}, {}, {}, {}}
		err := b.Do(context.Background(), in, RunOptions{Sequence: SequenceStep{Store: small, ID: c.id, Start: true}}, noop)
		if !errors.Is(err, ErrSequenceInput) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.id, err, c.want)
		}
	}
	in := []bridge.Tensor{enginestest.F32Tensor(1), {}, {}, {DType: bridge.Bool, Shape: []int64{1, 1}, Data: []byte{1}}, {}}
	err = b.Do(context.Background(), in, RunOptions{Sequence: SequenceStep{Store: seqs, ID: SequenceID{Num: 5}, Start: true}}, noop)
	if !errors.Is(err, ErrSequenceInput) || !strings.Contains(err.Error(), `input "READY" is a sequence control input`) {
		t.Errorf("control sent: %v", err)
	}
}
