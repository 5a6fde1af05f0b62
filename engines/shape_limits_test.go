package engines

import (
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
)

// Sizes computed from a model's dimensions are checked before they are used: a state pair whose
// element count wraps is refused, and a signature too large to warm up is not warmed up (no
// make() of a wrapped or huge length).
func TestShapeProductsFromTheModelAreChecked(t *testing.T) {
	huge := []bridge.IOInfo{
		{Name: "x", DType: bridge.Float32, Shape: []int64{-1, 3, 6148914691236517206}},
		{Name: "state", DType: bridge.Float32, Shape: []int64{-1, 3, 6148914691236517206}},
	}
	outs := []bridge.IOInfo{
		{Name: "y", DType: bridge.Float32, Shape: []int64{-1, 2}},
		{Name: "state_out", DType: bridge.Float32, Shape: []int64{-1, 2}}, // 2 elements, as the wrapped product
	}
	_, err := NewSequences(SequenceSpec{States: []StatePair{{Input: "state", Output: "state_out"}}}, huge, outs)
	if err == nil || !strings.Contains(err.Error(), "too large to keep") {
		t.Errorf("NewSequences with a wrapping state shape: %v", err)
	}
	if runs := WarmupInputs(huge, []int{1, 4}); runs != nil {
		t.Errorf("warm-up inputs for a wrapping shape: %d runs", len(runs))
	}
	big := []bridge.IOInfo{{Name: "x", DType: bridge.Float64, Shape: []int64{-1, 1 << 30}}}
	if runs := WarmupInputs(big, nil); runs != nil {
		t.Errorf("warm-up inputs of 8 GiB: %d runs", len(runs))
	}
	small := []bridge.IOInfo{{Name: "x", DType: bridge.Float32, Shape: []int64{-1, 4}}}
	if runs := WarmupInputs(small, []int{2}); len(runs) != 2 || len(runs[1][0].Data) != 32 {
		t.Errorf("warm-up inputs of [2,4] FP32: %v", runs)
	}
}
