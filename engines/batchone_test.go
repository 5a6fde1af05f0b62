package engines

import (
	"slices"
	"testing"

	"github.com/policyd/policyd/bridge"
)

// TestBatchOne: only a non-batchable model whose every input leaves dimension 0 free is taken
// for one whose graph fixes the batch at 1; its copy has dimension 0 = 1 and the engine's
// signature is left as it was.
func TestBatchOne(t *testing.T) {
	io := func(shape ...int64) bridge.IOInfo {
		return bridge.IOInfo{Name: "x", DType: bridge.Float32, Shape: shape, BatchDim: -1}
	}
	for _, tc := range []struct {
		name      string
		batchable bool
		in        []bridge.IOInfo
		want      [][]int64
		fixed     bool
	}{
		{"graph fixes the batch", false, []bridge.IOInfo{io(-1, 8), io(-1, 2, 3)}, [][]int64{{1, 8}, {1, 2, 3}}, true},
		{"rank 1", false, []bridge.IOInfo{io(-1)}, [][]int64{{1}}, true},
		{"batchable", true, []bridge.IOInfo{io(-1, 8)}, [][]int64{{-1, 8}}, false},
		{"fixed dimension 0", false, []bridge.IOInfo{io(1, 8)}, [][]int64{{1, 8}}, false},
		{"one input without a free dimension 0 (a shape tensor)", false, []bridge.IOInfo{io(-1), io(2)}, [][]int64{{-1}, {2}}, false},
		{"a scalar input", false, []bridge.IOInfo{io(-1, 4), io()}, [][]int64{{-1, 4}, {}}, false},
		{"no inputs", false, nil, nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := make([][]int64, len(tc.in))
			for i, in := range tc.in {
				before[i] = append([]int64{}, in.Shape...)
			}
			sig, fixed := BatchOne(tc.batchable, tc.in)
			if fixed != tc.fixed || len(sig) != len(tc.want) {
				t.Fatalf("BatchOne = %v, %v; want fixed %v", sig, fixed, tc.fixed)
			}
			for i := range sig {
				if !slices.Equal(sig[i].Shape, tc.want[i]) || sig[i].Name != "x" || sig[i].DType != bridge.Float32 {
					t.Errorf("input %d: %+v, want shape %v", i, sig[i], tc.want[i])
				}
				if !slices.Equal(tc.in[i].Shape, before[i]) {
					t.Errorf("input %d: the engine's signature changed to %v", i, tc.in[i].Shape)
				}
			}
		})
	}
}
