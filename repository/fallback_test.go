package repository

import (
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
)

func TestResolveFallbackChecksDatatypeAndShape(t *testing.T) {
	outs := []bridge.IOInfo{
		{Name: "action", DType: bridge.Int64, Shape: []int64{-1}, BatchDim: 0},
		{Name: "probs", DType: bridge.Float32, Shape: []int64{-1, 3}, BatchDim: 0},
		{Name: "done", DType: bridge.Bool, Shape: []int64{1}, BatchDim: -1},
	}
	good := map[string][]float64{"action": {2}, "probs": {0.2, 0.3, 0.5}, "done": {0}}
	fb, err := NewFallback(&ActionFallback{Kind: FallbackConstant, Constant: good}, outs)
	if err != nil {
		t.Fatal(err)
	}
	c := fb.Constant(2)
	if c[0].Shape[0] != 2 || len(c[0].Data) != 16 || c[1].Shape[0] != 2 || c[1].Shape[1] != 3 || len(c[2].Data) != 1 {
		t.Errorf("Constant(2) = %+v", c)
	}
	for _, tc := range []struct {
		name string
		vals []float64
		want string
	}{
		{"action", []float64{2.5}, "is not an INT64"},
		{"action", []float64{1, 2}, "2 values, one row of shape [-1] of INT64 holds 1"},
		{"probs", []float64{1, 2}, "2 values, one row of shape [-1 3] of FP32 holds 3"},
		{"done", []float64{2}, "is not 0 or 1"},
	} {
		c := map[string][]float64{"action": {2}, "probs": {0.2, 0.3, 0.5}, "done": {0}}
		c[tc.name] = tc.vals
		if _, err := NewFallback(&ActionFallback{Kind: FallbackConstant, Constant: c}, outs); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s = %v: %v, want …%s…", tc.name, tc.vals, err, tc.want)
		}
	}
	missing := map[string][]float64{"action": {2}}
	if _, err := NewFallback(&ActionFallback{Kind: FallbackConstant, Constant: missing}, outs); err == nil || !strings.Contains(err.Error(), `output "probs" has no values`) {
		t.Errorf("missing outputs: %v", err)
	}
	fb, err = NewFallback(&ActionFallback{Kind: FallbackVersion, Version: "small@1.0.0"}, outs)
	if err != nil || fb.Model != "small" || fb.Version != "1.0.0" || fb.Constant(1) != nil {
		t.Errorf("version fallback: %+v, %v", fb, err)
	}
}
