package repository

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// Tests of what every engine build is given besides the model: the batch profile, the backend
// parameters and the timing cache; and which backends a version skips quietly. Fake engines.

func TestBatchProfile(t *testing.T) {
	batchable := artifacts.IO{Inputs: []artifacts.Tensor{{Name: "obs", Shape: []int64{-1, 8}}, {Name: "mask", Shape: []int64{-1, 2}}}}
	fixed := artifacts.IO{Inputs: []artifacts.Tensor{{Name: "obs", Shape: []int64{1, 8}}}}
	mixed := artifacts.IO{Inputs: []artifacts.Tensor{{Name: "obs", Shape: []int64{-1, 8}}, {Name: "h", Shape: []int64{2, -1, 4}}}}
	scalar := artifacts.IO{Inputs: []artifacts.Tensor{{Name: "t", Shape: []int64{}}}}
	for _, tt := range []struct {
		name        string
		d           Desired
		m           ModelSpec
		io          artifacts.IO
		lo, opt, hi int
	}{
		{"batcher, no preferred: opt = max", Desired{Batching: true, Default: ModelSpec{Batching: BatchingSpec{MaxBatchSize: 16}}}, ModelSpec{}, batchable, 1, 16, 16},
		{"batcher, preferred: the largest up to max", Desired{Batching: true, Default: ModelSpec{Batching: BatchingSpec{MaxBatchSize: 16, PreferredBatchSizes: []int{64, 4, 8}}}}, ModelSpec{}, batchable, 1, 8, 16},
		{"the model's own max and preferred", Desired{Batching: true, Default: ModelSpec{Batching: BatchingSpec{MaxBatchSize: 16, PreferredBatchSizes: []int{8}}}},
			ModelSpec{Batching: BatchingSpec{MaxBatchSize: 128, PreferredBatchSizes: []int{100}}}, batchable, 1, 100, 128},
		{"no batcher: opt 1, max the default max", Desired{}, ModelSpec{}, batchable, 1, 1, engines.DefaultMaxBatchSize},
		{"no batcher, preferred sizes", Desired{Default: ModelSpec{Batching: BatchingSpec{MaxBatchSize: 8, PreferredBatchSizes: []int{2}}}}, ModelSpec{}, batchable, 1, 2, 8},
		{"fixed batch dimension: none", Desired{Batching: true}, ModelSpec{}, fixed, 0, 0, 0},
		{"one input not batched: none", Desired{Batching: true}, ModelSpec{}, mixed, 0, 0, 0},
		{"scalar input: none", Desired{Batching: true}, ModelSpec{}, scalar, 0, 0, 0},
		{"no signature in the manifest: none", Desired{Batching: true}, ModelSpec{}, artifacts.IO{}, 0, 0, 0},
	} {
		lo, opt, hi := tt.d.settingsOf(tt.m).batchProfile(tt.io)
		if lo != tt.lo || opt != tt.opt || hi != tt.hi {
			t.Errorf("%s: profile %d/%d/%d, want %d/%d/%d", tt.name, lo, opt, hi, tt.lo, tt.opt, tt.hi)
		}
	}
}

// optsLoader is a gpuLoader that records the options of every engine asked for.
type optsLoader struct {
	gpuLoader
	backends []bridge.BackendInfo // nil: gpuLoader's
	omu      sync.Mutex
	opts     []bridge.EngineOptions
}

func (l *optsLoader) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	l.omu.Lock()
	l.opts = append(l.opts, o)
	l.omu.Unlock()
	return l.gpuLoader.NewEngine(onnx, o)
}

func (l *optsLoader) Backends() []bridge.BackendInfo {
	if l.backends != nil {
		return l.backends
	}
	return l.gpuLoader.Backends()
}

func (l *optsLoader) take() []bridge.EngineOptions {
	l.omu.Lock()
	defer l.omu.Unlock()
	o := l.opts
	l.opts = nil
	return o
}

func TestEnginesGetProfileAndParameters(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "b/1.0.0/model.onnx": "ok"})
	l := &optsLoader{gpuLoader: gpuLoader{devices: map[string][]bridge.Device{"cuda": {{Ordinal: 0, Name: "GPU A", Target: "sm_90"}}}}}
	r, _ := fakeRepository(t, l)
	d := Desired{Dir: dir, Batching: true,
		Default: ModelSpec{Backends: []string{"cuda", "cpu"}, Params: map[string]string{"tensorrt.precision": "fp16", "tensorrt.workspace_mib": "512"},
			Batching: BatchingSpec{MaxBatchSize: 8}},
		Models: []ModelSpec{{Name: "a", Params: map[string]string{"tensorrt.precision": "fp32"}}, {Name: "b"}}}
	mustApply(t, r, d)
	got := map[string]bridge.EngineOptions{}
	for _, o := range l.take() {
		got[o.Name] = o
	}
	a, b := got["a@1.0.0"], got["b@1.0.0"]
	if a.Backend != "cuda" || a.MinBatch != 1 || a.OptBatch != 8 || a.MaxBatch != 8 {
		t.Errorf("a: backend %q, profile %d/%d/%d; want cuda, 1/8/8", a.Backend, a.MinBatch, a.OptBatch, a.MaxBatch)
	}
	if want := map[string]string{"tensorrt.precision": "fp32", "tensorrt.workspace_mib": "512"}; !reflect.DeepEqual(a.Params, want) {
		t.Errorf("a's parameters = %v, want %v (the model's key over the default's)", a.Params, want)
	}
	if want := map[string]string{"tensorrt.precision": "fp16", "tensorrt.workspace_mib": "512"}; !reflect.DeepEqual(b.Params, want) {
		t.Errorf("b's parameters = %v, want the defaults %v", b.Params, want)
	}

	// A change of b's parameters reloads b alone; a change of the max batch size reloads both.
	d.Models[1].Params = map[string]string{"tensorrt.builder_optimization_level": "5"}
	rep := mustApply(t, r, d)
	checkReport(t, rep, nil, []string{"b@1.0.0"}, nil, nil, 1)
	if o := l.take(); len(o) != 1 || o[0].Params["tensorrt.builder_optimization_level"] != "5" || o[0].Params["tensorrt.precision"] != "fp16" {
		t.Errorf("b rebuilt with %+v", o)
	}
	d.Default.Batching.MaxBatchSize = 4
	rep = mustApply(t, r, d)
	checkReport(t, rep, nil, []string{"a@1.0.0", "b@1.0.0"}, nil, nil, 0)
	for _, o := range l.take() {
		if o.MaxBatch != 4 || o.OptBatch != 4 {
			t.Errorf("%s rebuilt with profile %d/%d/%d, want 1/4/4", o.Name, o.MinBatch, o.OptBatch, o.MaxBatch)
		}
	}

	// Batching off: the batcher forms no batches, opt is 1.
	d.Batching = false
	mustApply(t, r, d)
	for _, o := range l.take() {
		if o.MinBatch != 1 || o.OptBatch != 1 || o.MaxBatch != 4 {
			t.Errorf("%s without batching: profile %d/%d/%d, want 1/1/4", o.Name, o.MinBatch, o.OptBatch, o.MaxBatch)
		}
	}
}

func TestEngineParamsKeysValidated(t *testing.T) {
	r, _ := fakeRepository(t, &applyLoader{})
	_, err := r.Apply(Desired{Dir: t.TempDir(), Default: ModelSpec{Params: map[string]string{"precision": "fp16"}},
		Models: []ModelSpec{{Name: "a", Params: map[string]string{"tensorrt.": "x"}}}})
	if err == nil || !strings.Contains(err.Error(), `default.params: key "precision" is not <backend>.<name>`) ||
		!strings.Contains(err.Error(), `models[0].params: key "tensorrt." is not <backend>.<name>`) {
		t.Errorf("Apply = %v", err)
	}
}

// A GPU engine built from the model (no usable engine cache) starts from the artifact's
// timing cache for its folder; one loaded from its engine cache is given none.
func TestGPUBuildGetsTimingCache(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	vdir := dir + "/a/1.0.0"
	if _, err := artifacts.AddEngineCache(vdir, artifacts.AddEngineRequest{Backend: "cuda", BackendVersion: "1.0-test", Target: "sm_90",
		Data: []byte("E1"), TimingCache: []byte("TIMINGS")}); err != nil {
		t.Fatal(err)
	}
	l := &optsLoader{gpuLoader: gpuLoader{devices: map[string][]bridge.Device{"cuda": {{Ordinal: 0, Name: "GPU A", Target: "sm_90"}}}}}
	r, _ := fakeRepository(t, l)
	d := Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Backends: []string{"cuda"}}}}
	mustApply(t, r, d)
	o := l.take()
	if len(o) != 1 || string(o[0].Cache) != "E1" || o[0].TimingCache != nil {
		t.Fatalf("from the engine cache: %+v", o)
	}

	// The backend refuses the engine cache: built from the model, with the timing cache.
	l.refuseCache = "E1"
	d.Models[0].Instances = 2 // a change, so that it reloads
	mustApply(t, r, d)
	o = l.take()
	if len(o) != 2 || string(o[1].TimingCache) != "TIMINGS" || o[1].Cache != nil {
		t.Errorf("rebuilt: %+v; want the second build from the model with the timing cache", o)
	}
}

// A backend this machine does not have is skipped without a warning; one it has that
// refuses the model is in the warning with its reason.
func TestQuietSkipOfAbsentBackends(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	for _, tt := range []struct {
		name     string
		backends []bridge.BackendInfo
		failGPU  bool
		warn     string // "" no warning
	}{
		{"absent plugins", []bridge.BackendInfo{{Name: "tensorrt", Reason: "plugin not installed"}, {Name: "cuda", Reason: "no usable CUDA device"},
			{Name: "cpu", Version: "1", Available: true}}, false, ""},
		{"cuda refuses", []bridge.BackendInfo{{Name: "tensorrt", Reason: "plugin not installed"}, {Name: "cuda", Version: "1.0-test", Available: true},
			{Name: "cpu", Version: "1", Available: true}}, true, `backend "cuda": out of memory on GPU 0`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			l := &optsLoader{backends: tt.backends, gpuLoader: gpuLoader{failGPU: map[int]bool{0: tt.failGPU},
				devices: map[string][]bridge.Device{"cuda": {{Ordinal: 0, Name: "GPU A", Target: "sm_90"}}}}}
			l.applyLoader.fail = map[string]bool{"tensorrt": true}
			if !tt.failGPU {
				l.applyLoader.fail["cuda"] = true
			}
			log, logs := observedLogger()
			r := NewRepository(l, log)
			r.newRunner = func(es []*bridge.Engine, o engines.PoolOptions) (engines.Runner, error) {
				return engines.NewPoolFunc((&fakeFactory{}).newCtx, 1, o)
			}
			t.Cleanup(func() { r.Close() })
			rep := mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"tensorrt", "cuda", "cpu"}}})
			checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
			warns := logs.FilterMessage("model version fell back to a later backend").All()
			switch {
			case tt.warn == "" && len(warns) != 0:
				t.Errorf("warned: %v", warns[0].ContextMap())
			case tt.warn != "" && len(warns) != 1:
				t.Errorf("%d warnings, want 1", len(warns))
			case tt.warn != "":
				msg := fmt.Sprint(warns[0].ContextMap()["error"])
				if !strings.Contains(msg, tt.warn) || strings.Contains(msg, "tensorrt") {
					t.Errorf("warning %q: want %q and no word of the absent tensorrt", msg, tt.warn)
				}
			}
			if warns := logs.FilterLevelExact(zap.WarnLevel).All(); tt.warn == "" && len(warns) != 0 {
				t.Errorf("warnings: %v", warns[0].Message)
			}
		})
	}
}
