//go:build cgo

package repository

import (
	"slices"
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// TestNativeFallbackConstantCheckedAtLoad: mlp-small's output is action FP32[-1,2]. A constant
// of two values loads and repeats per row; a constant of the wrong shape, or naming an output
// the model lacks, leaves the version UNAVAILABLE with the reason, at load.
func TestNativeFallbackConstantCheckedAtLoad(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	dir := t.TempDir()
	putModel(t, dir, "good", "1.0.0", mlpSmall)
	putModel(t, dir, "short", "1.0.0", mlpSmall)
	putModel(t, dir, "stranger", "1.0.0", mlpSmall)
	r := nativeRepository(t, rt)
	_, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{
		{Name: "good", ActionFallback: &ActionFallback{Kind: FallbackConstant, Constant: map[string][]float64{"action": {0.25, -1}}}},
		{Name: "short", ActionFallback: &ActionFallback{Kind: FallbackConstant, Constant: map[string][]float64{"action": {0.25, -1, 3}}}},
		{Name: "stranger", ActionFallback: &ActionFallback{Kind: FallbackConstant, Constant: map[string][]float64{"action": {0, 0}, "value": {1}}}},
	}})
	if err != nil {
		t.Logf("Apply: %v", err)
	}
	v, err := r.Acquire("good", "")
	if err != nil {
		t.Fatal(err)
	}
	fb := v.ActionFallback()
	if fb == nil || fb.Kind != FallbackConstant {
		t.Fatalf("ActionFallback = %+v", fb)
	}
	c := fb.Constant(3)
	if len(c) != 1 || !slices.Equal(c[0].Shape, []int64{3, 2}) || c[0].DType != bridge.Float32 {
		t.Fatalf("Constant(3) = %+v", c)
	}
	if got := enginestest.Floats(c[0]); len(got) != 6 || got[0] != 0.25 || got[1] != -1 || got[4] != 0.25 || got[5] != -1 {
		t.Errorf("Constant(3) values %v, want [0.25 -1] per row", got)
	}
	v.Release()
	for model, want := range map[string]string{
		"short":    `output "action": 3 values, one row of shape [-1 2] of FP32 holds 2`,
		"stranger": `"value" is not an output of the model`,
	} {
		vs := r.Versions(model)
		if len(vs) != 1 {
			t.Fatalf("%s: %d versions", model, len(vs))
		}
		ready, reason := vs[0].Ready()
		if ready || !strings.Contains(reason, want) {
			t.Errorf("%s: ready %v, reason %q; want not ready with …%s…", model, ready, reason, want)
		}
	}
}
