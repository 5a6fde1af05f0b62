package engine

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

func TestCompareOutputs(t *testing.T) {
	ort := map[string]output{"action": {Shape: []int64{2, 2}, Data: []float64{1, -2, 100, 0}}}
	for _, tt := range []struct {
		name    string
		ours    map[string]output
		atol    float64
		ok      bool
		maxDiff float64
		err     string
	}{
		{"equal", map[string]output{"action": {Shape: []int64{2, 2}, Data: []float64{1, -2, 100, 0}}}, 1e-4, true, 0, ""},
		// 100 + 0.09: within 1e-4 + 1e-3·100; the 0 → 2e-4 is not within 1e-4 + 0.
		{"rtol", map[string]output{"action": {Shape: []int64{2, 2}, Data: []float64{1, -2, 100.09, 0}}}, 1e-4, true, 0.09, ""},
		{"atol", map[string]output{"action": {Shape: []int64{2, 2}, Data: []float64{1, -2, 100, 2e-4}}}, 1e-4, false, 2e-4, ""},
		{"looser", map[string]output{"action": {Shape: []int64{2, 2}, Data: []float64{1, -2, 100, 2e-4}}}, 1e-2, true, 2e-4, ""},
		{"nan", map[string]output{"action": {Shape: []int64{2, 2}, Data: []float64{math.NaN(), -2, 100, 0}}}, 1e-4, false, math.Inf(1), ""},
		{"shape", map[string]output{"action": {Shape: []int64{4}, Data: []float64{1, -2, 100, 0}}}, 1e-4, false, 0, "policyd shape [4], ORT [2 2]"},
		{"missing", map[string]output{"other": {Shape: []int64{2, 2}, Data: []float64{1, -2, 100, 0}}}, 1e-4, false, 0, `no output "action"`},
	} {
		c := compareOutputs(tt.ours, ort, tt.atol)
		if c.OK != tt.ok || (tt.err == "" && math.Abs(c.MaxAbsDiff-tt.maxDiff) > 1e-9 && !math.IsInf(tt.maxDiff, 1)) ||
			(math.IsInf(tt.maxDiff, 1) && !math.IsInf(c.MaxAbsDiff, 1)) || !strings.Contains(c.Err, tt.err) {
			t.Errorf("%s: %+v", tt.name, c)
		}
		if tt.err != "" && !strings.HasPrefix(c.Status(), "error: ") {
			t.Errorf("%s: status %q", tt.name, c.Status())
		}
	}
}

// The targets of make bench-quant: int8 vs policyd's own f32 at b256 (par and st), int8 vs ORT at
// b256, attention p50 at b1; a refused model says so in its rows.
func TestQuantTargets(t *testing.T) {
	st := func(p50, inf float64) Result {
		return Result{Mode: "st", Workers: 1, Iters: 10, P50: p50, InferencesPerS: inf}
	}
	par := func(inf float64) Result { return Result{Mode: "par", Workers: 2, Iters: 20, InferencesPerS: inf} }
	cases := []Case{
		{Model: "mlp-large", Batch: 256, Policyd: []Result{st(5000, 40000), par(80000)}, ORT: []Result{st(7000, 33000), par(70000)}},
		{Model: "mlp-large-int8", Batch: 256, Policyd: []Result{st(2000, 100000), par(150000)}, ORT: []Result{st(4000, 60000), par(100000)},
			Check: &Check{MaxAbsDiff: 3e-3, Atol: 2e-2, OK: true, Worst: "action[7]: policyd 0.1, ORT 0.103"}},
		{Model: "attention-einsum", Batch: 1, Policyd: []Result{st(300, 3000)}, ORT: []Result{st(350, 2800)}},
	}
	for i := range cases {
		cases[i].fillRatios()
	}
	status := map[string]string{}
	for _, x := range Targets(cases) {
		status[x.What+"/"+x.Model] = x.Status + " " + fmtRatio(x.Ratio)
	}
	for k, v := range map[string]string{
		"batch-256 throughput, par inf/s ≥ 2× policyd's f32 mlp-large/mlp-large-int8": "missed 1.88×",
		"batch-256 throughput, st inf/s ≥ 2× policyd's f32 mlp-large/mlp-large-int8":  "met 2.50×",
		"batch-256 throughput, par inf/s ≥ 1.2× ORT/mlp-large-int8":                   "met 1.50×",
		"batch-1 latency, st p50 ≤ 0.8× ORT/attention-einsum":                         "missed 0.86×",
	} {
		if status[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, status[k], v, status)
		}
	}
	var buf bytes.Buffer
	if err := WriteMarkdown(&buf, Machine{}, cases); err != nil {
		t.Fatal(err)
	}
	if s := "| mlp-large-int8 | 256 | 0.003 | 0.02 + 1e-03·\\|ORT\\| | ok | action[7]: policyd 0.1, ORT 0.103 |"; !strings.Contains(buf.String(), s) {
		t.Errorf("markdown lacks %q:\n%s", s, buf.String())
	}

	refused := []Case{cases[0], {Model: "mlp-large-int8", Batch: 256, PolicydErr: "refused: unsupported operator MatMulInteger", ORT: cases[1].ORT}}
	refused[1].fillRatios()
	n := 0
	for _, x := range Targets(refused) {
		if x.Model == "mlp-large-int8" {
			n++
			if x.Status != "refused: unsupported operator MatMulInteger" {
				t.Errorf("%s: %q", x.What, x.Status)
			}
		}
	}
	if n != 4 { // int8/f32 par and st, vs ORT par and st
		t.Errorf("%d int8 targets, want 4", n)
	}
}
