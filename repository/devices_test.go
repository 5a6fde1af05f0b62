package repository

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

// Tests of backend order, the fallback switch and per-GPU engines, on fake engines: gpuLoader
// is an applyLoader that lists devices per backend and records the device of every engine.

type gpuLoader struct {
	applyLoader
	devices  map[string][]bridge.Device // backend → its devices
	failGPU  map[int]bool               // engines for these ordinals fail
	mu       sync.Mutex
	builtDev []string // "backend:device[+cache:<bytes>]" of every engine asked for
	digests  []string // their ModelDigest
	// refuseCache: an engine asked for with this cache fails as a stale one does
	refuseCache string
}

func (l *gpuLoader) Backends() []bridge.BackendInfo {
	return []bridge.BackendInfo{{Name: "cpu", Version: "1", Available: true}, {Name: "cuda", Version: "1.0-test", Available: true}}
}

func (l *gpuLoader) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	l.mu.Lock()
	built := fmt.Sprintf("%s:%d", o.Backend, o.Device)
	if o.Cache != nil {
		built += "+cache:" + string(o.Cache)
	}
	l.builtDev = append(l.builtDev, built)
	l.digests = append(l.digests, o.ModelDigest)
	fail := l.failGPU[o.Device] && o.Backend != "cpu"
	refuse := o.Cache != nil && string(o.Cache) == l.refuseCache
	l.mu.Unlock()
	if fail {
		return nil, &bridge.Error{Code: bridge.CodeUnavailable, Msg: fmt.Sprintf("out of memory on GPU %d", o.Device)}
	}
	if refuse {
		return nil, &bridge.Error{Code: bridge.CodeInvalidArg, Msg: "engine cache: nvrtc version differs; rebuild engines"}
	}
	return l.applyLoader.NewEngine(onnx, o)
}

func (l *gpuLoader) Devices(backend string) ([]bridge.Device, error) {
	if backend == "nope" {
		return nil, &bridge.Error{Code: bridge.CodeNotFound, Msg: "unknown backend 'nope'"}
	}
	return l.devices[backend], nil
}

func (l *gpuLoader) takeDev() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.builtDev
	l.builtDev = nil
	return b
}

func twoGPUs() map[string][]bridge.Device {
	return map[string][]bridge.Device{"cuda": {
		{Ordinal: 0, Name: "GPU A", Target: "sm_90"}, {Ordinal: 1, Name: "GPU B", Target: "sm_80"},
	}}
}

func ptr[T any](v T) *T { return &v }

// runnerSpy is a Repository whose fake pools record the engines and options they were made with.
type runnerSpy struct {
	mu    sync.Mutex
	calls []spyCall
}

type spyCall struct {
	engines   int
	instances int
}

func spyRepository(t *testing.T, l EngineLoader) (*Repository, *runnerSpy) {
	t.Helper()
	s := &runnerSpy{}
	r := NewRepository(l, nil)
	r.newRunner = func(es []*bridge.Engine, o engines.PoolOptions) (engines.Runner, error) {
		s.mu.Lock()
		s.calls = append(s.calls, spyCall{len(es), o.Instances})
		s.mu.Unlock()
		return engines.NewPoolFunc((&fakeFactory{}).newCtx, 1, o)
	}
	t.Cleanup(func() { r.Close() })
	return r, s
}

func TestFallbackSkipsUnavailableBackend(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	l := &applyLoader{fail: map[string]bool{"tensorrt": true, "cuda": true}}
	r, _ := fakeRepository(t, l)
	rep := mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"tensorrt", "cuda", "cpu"}}})
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
	if got, want := l.takeBuilt(), []string{"a@1.0.0/tensorrt", "a@1.0.0/cuda", "a@1.0.0/cpu"}; !reflect.DeepEqual(got, want) {
		t.Errorf("engines asked for = %v, want %v", got, want)
	}
	v, _ := r.Get("a", "")
	if v.Backend() != "cpu" || v.Device() != "cpu" || v.Devices() != nil {
		t.Errorf("served on %q/%q/%v, want cpu", v.Backend(), v.Device(), v.Devices())
	}
}

func TestFallbackOffMakesVersionUnavailable(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "b/1.0.0/model.onnx": "ok"})
	l := &applyLoader{fail: map[string]bool{"cuda": true}}
	r, _ := fakeRepository(t, l)
	d := Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda", "cpu"}}, Models: []ModelSpec{
		{Name: "a", Fallback: ptr(false)}, {Name: "b"},
	}}
	rep := mustApply(t, r, d)
	checkReport(t, rep, []string{"b@1.0.0"}, nil, nil, []string{"a@1.0.0"}, 0)
	want := "backend \"cuda\": backend cuda unavailable; fallback is off for this model (fallback: false), so cpu was not tried"
	if got := rep.Failed[0].Reason; !strings.Contains(got, want) {
		t.Errorf("reason = %q, want it to contain %q", got, want)
	}
	if got := l.takeBuilt(); !reflect.DeepEqual(got, []string{"a@1.0.0/cuda", "b@1.0.0/cuda", "b@1.0.0/cpu"}) {
		t.Errorf("engines asked for = %v: a must never reach cpu", got)
	}
	var ue *UnavailableError
	v, _ := r.Get("a", "")
	if err := v.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(1)}, engines.RunOptions{}, nil); !errors.As(err, &ue) {
		t.Errorf("Do on a = %v, want UnavailableError", err)
	}

	// The Default's switch applies to models that set none; a model's own true wins over it.
	d.Default.Fallback = ptr(false)
	d.Models[0].Fallback = ptr(true)
	rep = mustApply(t, r, d)
	checkReport(t, rep, []string{"a@1.0.0"}, nil, []string{}, []string{"b@1.0.0"}, 0)
	if !rep.Failed[0].KeptPrevious {
		t.Errorf("b's failed reload should keep its cpu engine: %+v", rep.Failed[0])
	}

	// With fallback off and the first backend working, the switch changes nothing but the
	// settings (a reload).
	l.fail = nil
	rep = mustApply(t, r, d)
	checkReport(t, rep, nil, []string{"b@1.0.0"}, nil, nil, 1)
	if v, _ := r.Get("b", ""); v.Backend() != "cuda" || v.Device() != "cuda:0" {
		t.Errorf("b on %q/%q, want cuda on cuda:0 (a loader without devices)", v.Backend(), v.Device())
	}
}

func TestOneEnginePerGPU(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	l := &gpuLoader{devices: twoGPUs()}
	r, spy := spyRepository(t, l)
	d := Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda", "cpu"}, Instances: 3}}
	rep := mustApply(t, r, d)
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
	if got := l.takeDev(); !reflect.DeepEqual(got, []string{"cuda:0", "cuda:1"}) {
		t.Errorf("engines built = %v, want one per GPU", got)
	}
	if got := spy.calls; !reflect.DeepEqual(got, []spyCall{{engines: 2, instances: 6}}) {
		t.Errorf("pools = %+v, want one pool over 2 engines with 3 instances each", got)
	}
	v, _ := r.Get("a", "")
	if v.Device() != "cuda:0,cuda:1" || !reflect.DeepEqual(v.Devices(), []int{0, 1}) || !reflect.DeepEqual(rep.Loaded[0].Devices, []int{0, 1}) {
		t.Errorf("device %q, devices %v, change %+v", v.Device(), v.Devices(), rep.Loaded[0])
	}
	if out, err := doF32(t, v, 2); err != nil || out != 4 {
		t.Errorf("run = %v, %v", out, err)
	}

	// Selecting GPU 1 is a change of settings: a reload on one engine.
	d.Default.Devices = []int{1}
	rep = mustApply(t, r, d)
	checkReport(t, rep, nil, []string{"a@1.0.0"}, nil, nil, 0)
	if got := l.takeDev(); !reflect.DeepEqual(got, []string{"cuda:1"}) {
		t.Errorf("engines built = %v, want GPU 1 only", got)
	}
	if v, _ := r.Get("a", ""); v.Device() != "cuda:1" {
		t.Errorf("device = %q, want cuda:1", v.Device())
	}

	// cpu ignores devices: one engine, the plain instance count.
	spy.calls = nil
	d.Default.Backends = []string{"cpu"}
	mustApply(t, r, d)
	if got := l.takeDev(); !reflect.DeepEqual(got, []string{"cpu:0"}) {
		t.Errorf("engines built = %v, want one cpu engine", got)
	}
	if got := spy.calls; !reflect.DeepEqual(got, []spyCall{{engines: 1, instances: 3}}) {
		t.Errorf("pools = %+v", got)
	}
}

func TestMissingGPUFailsBackend(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	l := &gpuLoader{devices: twoGPUs()}
	r, _ := spyRepository(t, l)
	d := Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Backends: []string{"cuda", "cpu"}, Devices: []int{0, 3}, Fallback: ptr(false)}}}
	rep := mustApply(t, r, d)
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0"}, 0)
	want := `backend "cuda": devices: GPU 3 not found: cuda has 2: 0 (GPU A, sm_90), 1 (GPU B, sm_80); fallback is off`
	if got := rep.Failed[0].Reason; !strings.HasPrefix(got, want) {
		t.Errorf("reason = %q, want prefix %q", got, want)
	}
	if got := l.takeDev(); len(got) != 0 {
		t.Errorf("engines built = %v, want none", got)
	}
	// With fallback, cpu serves it.
	d.Models[0].Fallback = nil
	rep = mustApply(t, r, d)
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
	if v, _ := r.Get("a", ""); v.Device() != "cpu" {
		t.Errorf("device = %q, want cpu", v.Device())
	}
}

func TestFailedGPUClosesTheOthers(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	l := &gpuLoader{devices: twoGPUs(), failGPU: map[int]bool{1: true}}
	r, spy := spyRepository(t, l)
	rep := mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda"}}})
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0"}, 0)
	if got, want := rep.Failed[0].Reason, "GPU 1: out of memory on GPU 1"; got != want {
		t.Errorf("reason = %q, want %q", got, want)
	}
	if len(spy.calls) != 0 {
		t.Errorf("a pool was made: %+v", spy.calls)
	}
}

func TestDesiredDevicesValidated(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	_, err := r.Apply(Desired{Dir: dir, Default: ModelSpec{Devices: []int{-1}}, Models: []ModelSpec{{Name: "a", Devices: []int{2, 0, 2}}}})
	for _, w := range []string{"default.devices[0]: must not be negative, got -1", "models[0].devices[2]: GPU 2 listed twice"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Apply = %v, want %q", err, w)
		}
	}
}

// doF32 runs v on one FP32 value and returns the first output value.
func doF32(t *testing.T, v *Version, x float32) (float32, error) {
	t.Helper()
	var out float32
	err := v.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(x)}, engines.RunOptions{}, func(o []bridge.Tensor) error {
		out = enginestest.FirstF32(o[0])
		return nil
	})
	return out, err
}

// addCache stores engine cache data for cuda (version 1.0-test, gpuLoader's) and target in
// the version folder vdir.
func addCache(t *testing.T, vdir, target, data string) {
	t.Helper()
	if _, err := artifacts.AddEngineCache(vdir, artifacts.AddEngineRequest{
		Backend: "cuda", BackendVersion: "1.0-test", Target: target, Data: []byte(data),
	}); err != nil {
		t.Fatal(err)
	}
}

func TestEngineCacheUsedPerArchitecture(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	addCache(t, filepath.Join(dir, "a", "1.0.0"), "sm_90", "E90")
	l := &gpuLoader{devices: twoGPUs()}
	r, _ := spyRepository(t, l)
	d := Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda"}}}
	rep := mustApply(t, r, d)
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
	// GPU 0 (sm_90) from its cache, GPU 1 (sm_80, no cache) from the model.
	if got := l.takeDev(); !reflect.DeepEqual(got, []string{"cuda:0+cache:E90", "cuda:1"}) {
		t.Errorf("engines = %v", got)
	}
	sum := sha256.Sum256([]byte("ok"))
	for _, dg := range l.digests {
		if dg != "sha256:"+hex.EncodeToString(sum[:]) {
			t.Errorf("ModelDigest = %q, want the manifest's model.onnx sha256", dg)
		}
	}

	// Caches required: GPU 1 has none, so cuda fails and the version is UNAVAILABLE.
	d.RequireEngineCaches = true
	r2, _ := spyRepository(t, l)
	rep = mustApply(t, r2, d)
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0"}, 0)
	want := "GPU 1: no engine cache engines/cuda-1.0-test/sm_80 in the artifact; rebuild engines (policyctl engines build"
	if got := rep.Failed[0].Reason; !strings.HasPrefix(got, want) {
		t.Errorf("reason = %q, want prefix %q", got, want)
	}
	if got := l.takeDev(); !reflect.DeepEqual(got, []string{"cuda:0+cache:E90"}) {
		t.Errorf("engines = %v: nothing may be built from the model", got)
	}
	// On GPU 0 alone it serves from the cache.
	d.Default.Devices = []int{0}
	rep = mustApply(t, r2, d)
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
	if got := l.takeDev(); !reflect.DeepEqual(got, []string{"cuda:0+cache:E90"}) {
		t.Errorf("engines = %v", got)
	}
}

func TestStaleEngineCacheNeverUsed(t *testing.T) {
	binding, err := json.Marshal(artifacts.EngineCache{Backend: "cuda", BackendVersion: "1.0-test", Target: "sm_90",
		ModelSHA256: strings.Repeat("0", 64)})
	if err != nil {
		t.Fatal(err)
	}
	// A cache of another model.onnx, listed in a manifest that verifies.
	dir := writeRepo(t, map[string]string{
		"a/1.0.0/model.onnx":                              "ok",
		"a/1.0.0/engines/cuda-1.0-test/sm_90/engine.bin":  "OLD",
		"a/1.0.0/engines/cuda-1.0-test/sm_90/engine.json": string(binding),
		"b/1.0.0/model.onnx":                              "ok",
	})
	addCache(t, filepath.Join(dir, "b", "1.0.0"), "sm_90", "REFUSED") // the backend's own check refuses it
	l := &gpuLoader{devices: twoGPUs(), refuseCache: "REFUSED"}
	r, _ := spyRepository(t, l)
	d := Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda"}, Devices: []int{0}}}
	rep := mustApply(t, r, d)
	checkReport(t, rep, []string{"a@1.0.0", "b@1.0.0"}, nil, nil, nil, 0)
	got := l.takeDev()
	slices.Sort(got)
	if want := []string{"cuda:0", "cuda:0", "cuda:0+cache:REFUSED"}; !reflect.DeepEqual(got, want) {
		t.Errorf("engines = %v, want %v: a's stale cache never passed, b's refused one rebuilt from the model", got, want)
	}

	d.RequireEngineCaches = true
	rep = mustApply(t, r, d)
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0", "b@1.0.0"}, 0)
	for i, want := range []string{
		"engine cache engines/cuda-1.0-test/sm_90 refused: engines/cuda-1.0-test/sm_90: stale engine cache: model_sha256 is \"000",
		"engine cache engines/cuda-1.0-test/sm_90 refused by the backend: engine cache: nvrtc version differs; rebuild engines (policyctl",
	} {
		if got := rep.Failed[i].Reason; !strings.HasPrefix(got, want) || !rep.Failed[i].KeptPrevious {
			t.Errorf("%s: reason %q (kept previous %v), want prefix %q", rep.Failed[i].Model, got, rep.Failed[i].KeptPrevious, want)
		}
	}
	if got := rep.Failed[0].Reason; strings.Count(got, "rebuild engines") != 1 || !strings.HasSuffix(got, "or set engine.build_engines: true") {
		t.Errorf("a: reason %q should say rebuild engines once, with the way to do it", got)
	}
}

func TestBuildTargetsOnePerArchitecture(t *testing.T) {
	devs := twoGPUs()
	devs["cuda"] = append(devs["cuda"], bridge.Device{Ordinal: 2, Name: "GPU C", Target: "sm_90"})
	got, why := BuildTargets(&gpuLoader{devices: devs})
	if len(got) != 2 || got[0].Device.Ordinal != 0 || got[1].Device.Ordinal != 1 || got[0].BackendVersion != "1.0-test" {
		t.Errorf("targets = %+v (%s), want GPU 0 for sm_90 and GPU 1 for sm_80", got, why)
	}
	got, why = BuildTargets(&gpuLoader{})
	if len(got) != 0 || why != "cuda: no device (<nil>)" {
		t.Errorf("no devices: %+v, %q", got, why)
	}
}

func TestBuildVersionsSelection(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "a/2.0.0/model.onnx": "ok", "b/1.0.0/model.onnx": "ok"})
	for _, tt := range []struct {
		only string
		want [][2]string
		err  string
	}{
		{"", [][2]string{{"a", "1.0.0"}, {"a", "2.0.0"}, {"b", "1.0.0"}}, ""},
		{"a", [][2]string{{"a", "1.0.0"}, {"a", "2.0.0"}}, ""},
		{"a@v2.0.0", [][2]string{{"a", "2.0.0"}}, ""},
		{"a@3.0.0", nil, "no version 3.0.0 of a in " + dir + " (found: 1.0.0, 2.0.0)"},
		{"../x", nil, "../x"},
		{"c", nil, "c"},
	} {
		got, err := BuildVersions(dir, tt.only)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: %v, %v; want error %q", tt.only, got, err, tt.err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q: %v, %v; want %v", tt.only, got, err, tt.want)
		}
	}
}
