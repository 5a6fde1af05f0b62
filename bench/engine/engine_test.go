package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

const specJSON = `{"opset": 17, "models": {
 "zeta": {"file": "z.onnx", "inputs": [{"name": "obs", "shape": [-1, 8], "datatype": "FP32"}],
          "outputs": [{"name": "action", "shape": [-1, 2], "datatype": "FP32"}]},
 "alpha": {"file": "a.onnx", "inputs": [{"name": "obs", "shape": [-1, 32], "datatype": "FP32"},
          {"name": "h_in", "shape": [1, -1, 128], "datatype": "FP32"}],
          "outputs": [{"name": "action", "shape": [-1, 8], "datatype": "FP32"}]}}}`

func TestParseSpecsKeepsFileOrder(t *testing.T) {
	specs, err := parseSpecs([]byte(specJSON))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].Name != "zeta" || specs[1].Name != "alpha" {
		t.Fatalf("order lost: %+v", specs)
	}
	if specs[1].Inputs[1].Name != "h_in" || !slices.Equal(specs[1].Inputs[1].Shape, []int64{1, -1, 128}) {
		t.Fatalf("inputs: %+v", specs[1].Inputs)
	}
	for _, bad := range []string{`{}`, `{"models": []}`, `{"models": {"m": {"inputs": []}}}`,
		`{"models": {"m": {"file": "m.onnx", "inputs": [{"name": "x", "shape": [1], "datatype": "INT64"}]}}}`} {
		if _, err := parseSpecs([]byte(bad)); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

func TestConcreteShape(t *testing.T) {
	if got := ConcreteShape([]int64{1, -1, 128}, 32); !slices.Equal(got, []int64{1, 32, 128}) {
		t.Fatal(got)
	}
	if got := ConcreteShape([]int64{-1, 4, 84, 84}, 1); !slices.Equal(got, []int64{1, 4, 84, 84}) {
		t.Fatal(got)
	}
}

// The values ort_bench.js's filler(12346) yields as a Float32Array (batch 1), from node.
func TestFillerMatchesOrtBench(t *testing.T) {
	want := []float32{-1.21513128, -0.141972065, 1.53785169, 0.541529536, -1.20470488}
	f := newFiller(12345 + 1)
	for i, w := range want {
		if g := f.next(); g != w {
			t.Fatalf("value %d: %.9g, want %.9g", i, g, w)
		}
	}
	for i := 0; i < 1000; i++ {
		f.next()
	}
	if g := f.next(); g != float32(-0.486458093) {
		t.Fatalf("value 1006: %.9g", g)
	}
}

func TestSeededInputs(t *testing.T) {
	specs, _ := parseSpecs([]byte(specJSON))
	shapes, data := SeededInputs(specs[1], 3)
	if !slices.Equal(shapes[0], []int64{3, 32}) || !slices.Equal(shapes[1], []int64{1, 3, 128}) {
		t.Fatal(shapes)
	}
	if len(data[0]) != 4*3*32 || len(data[1]) != 4*3*128 {
		t.Fatal(len(data[0]), len(data[1]))
	}
	// One generator across the inputs, in order: h_in continues where obs stopped.
	f := newFiller(12345 + 3)
	for i := 0; i < 3*32; i++ {
		f.next()
	}
	if got := math.Float32frombits(binary.LittleEndian.Uint32(data[1])); got != f.next() {
		t.Fatal("h_in does not continue the obs sequence")
	}
}

func TestSummarize(t *testing.T) {
	var a, b []float64
	for i := 1; i <= 50; i++ {
		a = append(a, float64(i))
		b = append(b, float64(i+50))
	}
	r := summarize("par", 2, 4, [][]float64{b, a}, 2)
	if r.Iters != 100 || r.P50 != 50 || r.P95 != 95 || r.P99 != 99 || r.Mean != 50.5 {
		t.Fatalf("%+v", r)
	}
	if r.CallsPerS != 50 || r.InferencesPerS != 200 || r.Workers != 2 {
		t.Fatalf("%+v", r)
	}
	if r := summarize("st", 1, 1, nil, 1); r.Iters != 0 || r.P50 != 0 {
		t.Fatalf("%+v", r)
	}
	if p := percentile([]float64{7}, 99); p != 7 {
		t.Fatal(p)
	}
}

const ortLine = `{"peer":"onnxruntime-node","ort":"1.30.0","node":"v20.20.2","model":"mlp-small","batch":1,"nproc":2,"runs":[{"mode":"st","workers":1,"intra_threads":1,"iters":1000,"seconds":2,"p50_us":9.3,"p95_us":10,"p99_us":17.6,"mean_us":9.9,"calls_per_s":100464,"inferences_per_s":100464,"ref_max_abs_err":null},{"mode":"par","workers":2,"intra_threads":1,"iters":2000,"seconds":2,"p50_us":9.4,"p95_us":10.1,"p99_us":17.1,"mean_us":10,"calls_per_s":197215,"inferences_per_s":197215,"ref_max_abs_err":null}]}`

func TestParseORT(t *testing.T) {
	r, err := ParseORT([]byte("some warning\n" + ortLine + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.ORT != "1.30.0" || len(r.Runs) != 2 || r.Runs[1].Mode != "par" || r.Runs[1].InferencesPerS != 197215 || r.Runs[0].P99 != 17.6 {
		t.Fatalf("%+v", r)
	}
	for _, bad := range []string{"", "nothing", `{"runs": []}`, `{bad`} {
		if _, err := ParseORT([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// ORTRunner.Run through a stand-in for node: a shell script that checks its arguments and
// prints the JSON line.
func TestORTRunnerRun(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "fake.sh")
	body := "#!/bin/sh\ncase \"$*\" in *'--model mlp-small --batch 1 '*'--modes st,par --models-dir /m'*) ;; *) echo \"bad args $*\" >&2; exit 3;; esac\necho '" + ortLine + "'\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	o := ORTRunner{Node: "/bin/sh", Script: script, ModelsDir: "/m"}
	p := Params{Seconds: 0.5, Warmup: 0.1, MaxIters: 100, MinIters: 1, Workers: 2}
	r, err := o.Run(context.Background(), "mlp-small", 1, []string{"st", "par"}, p)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Runs) != 2 {
		t.Fatalf("%+v", r)
	}
	if _, err := o.Run(context.Background(), "mlp-small", 32, []string{"st", "par"}, p); err == nil || !strings.Contains(err.Error(), "bad args") {
		t.Fatalf("want the script's stderr in the error, got %v", err)
	}
}

func ptr(v float64) *float64 { return &v }

func TestTargetsAndMarkdown(t *testing.T) {
	st := func(p50, inf float64) Result {
		return Result{Mode: "st", Workers: 1, Iters: 10, P50: p50, P99: 2 * p50, InferencesPerS: inf}
	}
	par := func(inf float64) Result { return Result{Mode: "par", Workers: 2, Iters: 20, InferencesPerS: inf} }
	cases := []Case{
		{Model: "mlp-small", Batch: 1, Policyd: []Result{st(2, 500000), par(900000)}, ORT: []Result{st(9.3, 100000), par(190000)}},
		{Model: "mlp-med", Batch: 1, Policyd: []Result{st(12, 80000)}, ORT: []Result{st(13.6, 70000)}},
		{Model: "cnn-atari", Batch: 256, Policyd: []Result{st(90000, 2800), par(5000)}, ORT: []Result{st(46000, 5500), par(11000)}},
		{Model: "lstm", Batch: 1, PolicydErr: "boom", ORTErr: "bang"},
	}
	for i := range cases {
		cases[i].fillRatios()
	}
	ts := Targets(cases)
	status := map[string]string{}
	for _, x := range ts {
		status[x.Model+"/"+x.Metric] = x.Status
	}
	want := map[string]string{"mlp-small/p50": "met", "mlp-med/p50": "missed", "lstm/p50": "not measured",
		"cnn-atari/par": "missed", "cnn-atari/st": "missed"}
	for k, v := range want {
		if status[k] != v {
			t.Errorf("%s: %q, want %q (all: %v)", k, status[k], v, status)
		}
	}
	var buf bytes.Buffer
	m := Machine{Date: "2026-11-26T00:00:00Z", Command: "bin/policyctl bench engine", NProc: 2, CPU: "AMD EPYC"}
	if err := WriteMarkdown(&buf, m, cases); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, s := range []string{
		"| model | batch | policyd st p50 | p99 | inf/s | ORT st p50 | p99 | inf/s | ratio p50 (ours/ORT) | policyd par inf/s | ORT par inf/s | ratio thrpt |",
		"| mlp-small | 1 | 2.0 | 4.0 | 500,000 | 9.3 | 18.6 | 100,000 | 0.21× | 900,000 | 190,000 | 4.74× |",
		"| mlp-med | 1 | 12.0 | 24.0 | 80,000 | 13.6 | 27.2 | 70,000 | 0.88× | – | – | – |",
		"| cnn-atari | 256 | 90,000.0 |",
		"| lstm | 1 | – | – | – | – | – | – | – | – | – | – |",
		"- lstm b1 policyd: boom", "- lstm b1 ORT: bang",
		"`bin/policyctl bench engine`", "| cpu_model | `AMD EPYC` |",
	} {
		if !strings.Contains(out, s) {
			t.Errorf("markdown lacks %q:\n%s", s, out)
		}
	}
}

func TestFmtAndQuote(t *testing.T) {
	for _, c := range []struct {
		v    float64
		d    int
		want string
	}{{1234567.891, 0, "1,234,568"}, {999.94, 1, "999.9"}, {999.96, 1, "1,000.0"}, {12, 1, "12.0"}, {0, 1, "–"}, {math.NaN(), 0, "–"}} {
		if got := fmtNum(c.v, c.d); got != c.want {
			t.Errorf("fmtNum(%v,%d) = %q, want %q", c.v, c.d, got, c.want)
		}
	}
	if got := ShellQuote([]string{"bin/policyctl", "--model", "mlp-small,lstm", "--x", "a b", "it's", ""}); got != `bin/policyctl --model mlp-small,lstm --x 'a b' 'it'\''s' ''` {
		t.Fatal(got)
	}
	if fmtRatio(nil) != "–" || fmtRatio(ptr(0.8049)) != "0.80×" {
		t.Fatal(fmtRatio(ptr(0.8049)))
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Format: "markdown", Batches: []int{1}, Modes: []string{"st"}, Params: Params{Seconds: 1, MaxIters: 5, MinIters: 10}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if ok.Params.MinIters != 5 || ok.Params.Workers < 1 {
		t.Fatalf("%+v", ok.Params)
	}
	for _, mut := range []func(*Config){
		func(c *Config) { c.Format = "csv" },
		func(c *Config) { c.Batches = []int{0} },
		func(c *Config) { c.Modes = []string{"mt"} },
		func(c *Config) { c.Params.Seconds = 0 },
		func(c *Config) { c.Params.MaxIters = 0 },
	} {
		c := ok
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%+v: no error", c)
		}
	}
}

func TestBusyWarning(t *testing.T) {
	if w := busyWarning(0.02, "1.17 4.29 5.53"); w != "" {
		t.Fatal(w)
	}
	if w := busyWarning(1.3, "8.02 8.74 6.67"); !strings.Contains(w, "busy") || !strings.Contains(w, "1.30 cores") {
		t.Fatal(w)
	}
}

func TestOtherCores(t *testing.T) {
	a := sampleCPU()
	if !a.ok {
		t.Skip("no /proc/stat")
	}
	b := a
	b.at = a.at.Add(2 * time.Second)
	b.busy += 3 // 3 CPU-seconds busy in 2 s ...
	b.own += 2  // ... 2 of them ours
	if got := otherCores(a, b); math.Abs(got-0.5) > 1e-9 {
		t.Fatal(got)
	}
	b.own += 5
	if got := otherCores(a, b); got != 0 {
		t.Fatal(got)
	}
	if got := otherCores(cpuSample{}, b); got != -1 {
		t.Fatal(got)
	}
}

func TestMeasureRetriesDisturbedRuns(t *testing.T) {
	for _, c := range []struct {
		retries, wantCalls int
		wantOther          float64
	}{{0, 1, 0.5}, {1, 2, 0.3}, {5, 3, 0.01}} {
		others := []float64{0.5, 0.3, 0.01, 0.9}
		calls := 0
		cfg := Config{Retries: c.retries, quietWait: -1}
		rs, err := cfg.measure(context.Background(), "x", func() ([]Result, error) {
			calls++
			return []Result{{Mode: "st", OtherCores: others[calls-1]}}, nil
		})
		if err != nil || calls != c.wantCalls || rs[0].Attempts != c.wantCalls || rs[0].OtherCores != c.wantOther {
			t.Errorf("retries %d: calls %d, %+v, %v", c.retries, calls, rs, err)
		}
	}
}
