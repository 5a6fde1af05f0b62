package engines

import (
	"errors"
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
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
