package repository

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// Golden checks at load on fake engines: goldenLoader records the backend and device of every
// engine it builds, and the fake golden contexts answer the values of their backend (and
// device), so that a backend that "computes differently" is a line of the test.

// goldenOf is a golden file of the seal's signature (obs FP32[-1,8] → action FP32[-1,2]) with
// one case expecting action, and extra options for the outputs.
func goldenOf(action [2]float64, outputs string) string {
	if outputs == "" {
		outputs = "{}"
	}
	return fmt.Sprintf(`{"schema": 1, "outputs": %s, "cases": [{"name": "upright",
  "inputs": [{"name": "obs", "datatype": "FP32", "shape": [1, 8], "data": [0, 0, 0, 0, 0, 0, 0, 0]}],
  "outputs": [{"name": "action", "datatype": "FP32", "shape": [1, 2], "data": [%v, %v]}]}]}`, outputs, action[0], action[1])
}

type goldenLoader struct {
	gpuLoader
	mu    sync.Mutex
	where map[*bridge.Engine]string // "backend:device" of every engine built
}

func (l *goldenLoader) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	e, err := l.gpuLoader.NewEngine(onnx, o)
	if err == nil {
		l.mu.Lock()
		l.where[e] = fmt.Sprintf("%s:%d", o.Backend, o.Device)
		l.mu.Unlock()
	}
	return e, err
}

// goldenCtx answers action = out whatever the observation.
type goldenCtx struct{ out []float32 }

func (c *goldenCtx) Run(inputs, outputs []bridge.Tensor) error {
	if len(inputs) != 1 || inputs[0].DType != bridge.Float32 || len(inputs[0].Data) != 32 {
		return fmt.Errorf("fake: want one FP32 [1,8] input, got %+v", inputs)
	}
	b := make([]byte, 4*len(c.out))
	for i, x := range c.out {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	outputs[0] = bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, 2}, Data: b}
	return nil
}

func (c *goldenCtx) Close() error { return nil }

// goldenRepository is a Repository on l whose golden contexts answer answers["backend:device"]
// (answers["*"] for the others), with its log observed.
func goldenRepository(t *testing.T, l *goldenLoader, answers map[string][]float32) (*Repository, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	r := NewRepository(l, zap.New(core))
	r.newRunner = func(_ []*bridge.Engine, o engines.PoolOptions) (engines.Runner, error) {
		return engines.NewPoolFunc((&fakeFactory{}).newCtx, 1, o)
	}
	r.goldenOpen = func(e *bridge.Engine) (GoldenExec, []bridge.IOInfo, []bridge.IOInfo, error) {
		l.mu.Lock()
		w := l.where[e]
		l.mu.Unlock()
		out, ok := answers[w]
		if !ok {
			out = answers["*"]
		}
		return &goldenCtx{out}, []bridge.IOInfo{{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 8}}},
			[]bridge.IOInfo{{Name: "action", DType: bridge.Float32, Shape: []int64{-1, 2}}}, nil
	}
	t.Cleanup(func() { r.Close() })
	return r, logs
}

func newGoldenLoader() *goldenLoader {
	return &goldenLoader{gpuLoader: gpuLoader{devices: twoGPUs()}, where: map[*bridge.Engine]string{}}
}

func outcomes(v *Version) []string {
	var out []string
	for _, c := range v.GoldenChecks() {
		out = append(out, c.Result.Backend+"/"+c.Result.Device+"="+c.Outcome())
	}
	return out
}

func TestGoldenChecksAtLoad(t *testing.T) {
	right := []float32{0.5, -0.25}
	cases := []struct {
		name     string
		golden   string // "" = no golden.json
		spec     ModelSpec
		answers  map[string][]float32
		ready    bool
		backend  string
		outcomes string
		reason   []string // substrings of the reason (not ready) or of a log line (ready)
	}{
		{name: "met on cpu", golden: goldenOf([2]float64{0.5, -0.25}, ""), spec: ModelSpec{Backends: []string{"cpu"}},
			answers: map[string][]float32{"*": right}, ready: true, backend: "cpu", outcomes: "cpu/cpu=pass",
			reason: []string{"golden check passed on cpu: 1 cases, 1 outputs, max abs error 0"}},
		{name: "no golden file", spec: ModelSpec{Backends: []string{"cpu"}},
			answers: map[string][]float32{"*": {9, 9}}, ready: true, backend: "cpu", outcomes: ""},
		{name: "tampered expected value", golden: goldenOf([2]float64{0.5, 0.75}, ""), spec: ModelSpec{Backends: []string{"cpu"}},
			answers: map[string][]float32{"*": right}, outcomes: "cpu/cpu=fail",
			reason: []string{`golden check failed on cpu: 1 of 1 outputs: case "upright" output "action": max abs error 1 beyond tolerance (atol 0.0001, rtol 0.001) at index 1 (expected 0.75, got -0.25)`}},
		{name: "backend computes differently, fallback", golden: goldenOf([2]float64{0.5, -0.25}, ""),
			spec:    ModelSpec{Backends: []string{"cuda", "cpu"}},
			answers: map[string][]float32{"cuda:0": {0.5, -0.2}, "*": right}, ready: true, backend: "cpu",
			outcomes: "cuda/cuda:0=fail cpu/cpu=pass",
			reason:   []string{`golden check failed on cuda on cuda:0: 1 of 1 outputs: case "upright" output "action": max abs error 0.05`, "(expected -0.25, got -0.2"}},
		{name: "backend computes differently, no fallback", golden: goldenOf([2]float64{0.5, -0.25}, ""),
			spec:    ModelSpec{Backends: []string{"cuda", "cpu"}, Fallback: ptr(false)},
			answers: map[string][]float32{"cuda:0": {0.5, -0.2}, "*": right}, outcomes: "cuda/cuda:0=fail",
			reason: []string{`backend "cuda": golden check failed on cuda on cuda:0`, "max abs error 0.05", "atol 0.0001, rtol 0.001", "fallback is off"}},
		{name: "second GPU differs", golden: goldenOf([2]float64{0.5, -0.25}, ""),
			spec:    ModelSpec{Backends: []string{"cuda"}},
			answers: map[string][]float32{"cuda:1": {0.5, 0.25}, "*": right}, outcomes: "cuda/cuda:0=pass cuda/cuda:1=fail",
			reason: []string{"golden check failed on cuda on cuda:1", "max abs error 0.5"}},
		{name: "flipped argmax inside atol", golden: goldenOf([2]float64{0.30, 0.28}, `{"action": {"argmax": true, "atol": 0.05}}`),
			spec:    ModelSpec{Backends: []string{"cpu"}},
			answers: map[string][]float32{"*": {0.29, 0.30}}, outcomes: "cpu/cpu=fail",
			reason: []string{"within tolerance (atol 0.05, rtol 0.001); argmax flipped at row 0 (expected 0, got 1)"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			files := map[string]string{"m/1.0.0/model.onnx": "ok model"}
			if c.golden != "" {
				files["m/1.0.0/golden.json"] = c.golden
			}
			dir := writeRepo(t, files)
			l := newGoldenLoader()
			r, logs := goldenRepository(t, l, c.answers)
			spec := c.spec
			spec.Name = "m"
			mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{spec}})
			v, err := r.Get("m", "1.0.0")
			if err != nil {
				t.Fatal(err)
			}
			ready, reason := v.Ready()
			if ready != c.ready {
				t.Fatalf("ready = %v (%s), want %v", ready, reason, c.ready)
			}
			if ready && v.Backend() != c.backend {
				t.Errorf("serves on %q, want %q", v.Backend(), c.backend)
			}
			if got := strings.Join(outcomes(v), " "); got != c.outcomes {
				t.Errorf("golden checks %q, want %q", got, c.outcomes)
			}
			var text strings.Builder
			text.WriteString(reason)
			for _, e := range logs.All() {
				text.WriteString("\n" + e.Message)
				for k, f := range e.ContextMap() {
					fmt.Fprintf(&text, " %s=%v", k, f)
				}
			}
			for _, w := range c.reason {
				if !strings.Contains(text.String(), w) {
					t.Errorf("reason and log lack %q:\n%s", w, text.String())
				}
			}
			if !ready && c.name != "backend computes differently, no fallback" && !strings.Contains(reason, "golden check failed") {
				t.Errorf("reason %q does not say golden check", reason)
			}
			if c.name == "backend computes differently, fallback" {
				warned := false
				for _, e := range logs.FilterMessage("model version fell back to a later backend").All() {
					warned = strings.Contains(fmt.Sprint(e.ContextMap()["error"]), "max abs error 0.05")
				}
				if !warned {
					t.Error("no fallback warning with the failed backend's numbers")
				}
			}
		})
	}
}

// A golden file that does not fit the model's signature (as the manifest records it) leaves
// the version unavailable, naming the file.
func TestGoldenFileOfAnotherSignature(t *testing.T) {
	bad := strings.Replace(goldenOf([2]float64{1, 2}, ""), `"name": "obs"`, `"name": "observation"`, 1)
	dir := writeRepo(t, map[string]string{"m/1.0.0/model.onnx": "ok model", "m/1.0.0/golden.json": bad})
	r, _ := goldenRepository(t, newGoldenLoader(), map[string][]float32{"*": {1, 2}})
	mustApply(t, r, Desired{Dir: dir})
	v, _ := r.Get("m", "1.0.0")
	ready, reason := v.Ready()
	if ready || !strings.Contains(reason, `golden cases: m@1.0.0: golden.json: golden case "upright": the model has no input "observation"`) {
		t.Errorf("ready %v, reason %q", ready, reason)
	}
}

type failingCtx struct{}

func (failingCtx) Run(_, _ []bridge.Tensor) error {
	return &bridge.Error{Code: bridge.CodeInvalidArg, Msg: "input \"obs\": batch 1 outside the profile [2, 8]"}
}
func (failingCtx) Close() error { return nil }

// A case the engine cannot run is an error of the check: the version is not served on that
// backend, the result is "error", and the reason says what the engine said.
func TestGoldenCaseThatCannotRun(t *testing.T) {
	dir := writeRepo(t, map[string]string{"m/1.0.0/model.onnx": "ok model", "m/1.0.0/golden.json": goldenOf([2]float64{1, 2}, "")})
	l := newGoldenLoader()
	r, _ := goldenRepository(t, l, nil)
	r.goldenOpen = func(e *bridge.Engine) (GoldenExec, []bridge.IOInfo, []bridge.IOInfo, error) {
		return failingCtx{}, []bridge.IOInfo{{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 8}}},
			[]bridge.IOInfo{{Name: "action", DType: bridge.Float32, Shape: []int64{-1, 2}}}, nil
	}
	mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cpu"}}})
	v, _ := r.Get("m", "1.0.0")
	ready, reason := v.Ready()
	if ready || !strings.Contains(reason, `golden check could not run on cpu: golden case "upright": run: input "obs": batch 1 outside the profile [2, 8]`) {
		t.Errorf("ready %v, reason %q", ready, reason)
	}
	if got := outcomes(v); len(got) != 1 || got[0] != "cpu/cpu=error" {
		t.Errorf("golden checks %v", got)
	}
}
