//go:build cgo

package repository

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

// Backend order, fallback and devices against the native runtime. On a machine without a GPU
// (this one, CI) the cuda plugin loads and reports itself unavailable; the fake CUDA plugin
// (build/fakecuda, made by make native: the cuda backend on a CPU emulation with one device)
// stands in for a GPU where it exists.

func TestRealRuntimeFallbackWithoutGPU(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	var reason string
	for _, b := range rt.Backends() {
		if b.Name == "cuda" {
			if b.Available {
				t.Skip("this machine has a usable cuda backend")
			}
			reason = b.Reason
		}
	}
	if reason == "" {
		t.Skip("no cuda plugin in lib/")
	}
	dir := t.TempDir()
	putModel(t, dir, "a", "1.0.0", mlpSmall)
	putModel(t, dir, "b", "1.0.0", mlpSmall)
	r := NewRepository(rt, nil)
	defer r.Close()
	rep := mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda", "cpu"}}, Models: []ModelSpec{
		{Name: "a"}, {Name: "b", Fallback: ptr(false)},
	}})
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, []string{"b@1.0.0"}, 0)
	if v, _ := r.Get("a", ""); v.Backend() != "cpu" || v.Device() != "cpu" {
		t.Errorf("a on %s/%s, want cpu", v.Backend(), v.Device())
	}
	got := rep.Failed[0].Reason
	if !strings.HasPrefix(got, `backend "cuda": `) || !strings.Contains(got, reason) ||
		!strings.HasSuffix(got, "fallback is off for this model (fallback: false), so cpu was not tried") {
		t.Errorf("b's reason = %q; want the cuda backend's own reason %q and the fallback switch", got, reason)
	}
}

func TestFakeCudaDevicesSelectEngines(t *testing.T) {
	rt := fakeCudaRuntime(t)
	if devs, err := rt.Devices("cuda"); err != nil || len(devs) != 1 {
		t.Skipf("fake cuda lists %v, %v", devs, err)
	}
	dir := t.TempDir()
	putModel(t, dir, "a", "1.0.0", mlpSmall)
	r := NewRepository(rt, nil)
	defer r.Close()
	d := Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Backends: []string{"cuda"}, Instances: 2}}}
	rep := mustApply(t, r, d)
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
	v, _ := r.Get("a", "")
	if v.Backend() != "cuda" || v.Device() != "cuda:0" || !reflect.DeepEqual(v.Devices(), []int{0}) {
		t.Errorf("a on %s/%s %v, want cuda on cuda:0", v.Backend(), v.Device(), v.Devices())
	}
	runMLP(t, v)

	d.Models[0].Devices = []int{1}
	rep = mustApply(t, r, d)
	if len(rep.Failed) != 1 || !strings.HasPrefix(rep.Failed[0].Reason, "devices: GPU 1 not found: cuda has 1: 0 (") || !rep.Failed[0].KeptPrevious {
		t.Errorf("GPU 1 on a one-GPU machine: %+v", rep.Failed)
	}
}

// runMLP runs one mlp-small observation on v and checks that it answered 2 actions.
func runMLP(t *testing.T, v *Version) {
	t.Helper()
	var n int
	err := v.Do(t.Context(), []bridge.Tensor{obs(1, obsWidth[mlpSmall], 0.5)}, engines.RunOptions{}, func(o []bridge.Tensor) error {
		n = len(o[0].Data) / 4
		return nil
	})
	if err != nil || n != 2 {
		t.Errorf("run: %v, %d outputs", err, n)
	}
}

// TestFakeCudaEngineCache: a cache built by the fake cuda backend and stored with
// artifacts.AddEngineCache serves when caches are required; the artifact without it is
// UNAVAILABLE with "rebuild engines".
func TestFakeCudaEngineCache(t *testing.T) {
	rt := fakeCudaRuntime(t)
	devs, err := rt.Devices("cuda")
	if err != nil || len(devs) != 1 {
		t.Skipf("fake cuda lists %v, %v", devs, err)
	}
	var version string
	for _, b := range rt.Backends() {
		if b.Name == "cuda" {
			version = b.Version
		}
	}
	dir := t.TempDir()
	putModel(t, dir, "a", "1.0.0", mlpSmall)
	vdir := dir + "/a/1.0.0"
	d := Desired{Dir: dir, RequireEngineCaches: true, Models: []ModelSpec{{Name: "a", Backends: []string{"cuda"}}}}
	r := NewRepository(rt, nil)
	defer r.Close()
	rep := mustApply(t, r, d)
	if len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0].Reason, "no engine cache engines/cuda-"+version+"/sm_90 in the artifact; rebuild engines") {
		t.Fatalf("without a cache: %+v", rep.Failed)
	}

	a, err := artifacts.Verify(vdir, artifacts.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	onnx, _ := a.ReadFile(ModelFile)
	sum := a.Manifest.File(ModelFile).SHA256
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{Backend: "cuda", ModelDigest: "sha256:" + sum})
	if err != nil {
		t.Fatal(err)
	}
	data, err := e.Serialize()
	e.Close()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := artifacts.AddEngineCache(vdir, artifacts.AddEngineRequest{Backend: "cuda", BackendVersion: version,
		Target: devs[0].Target, Data: data, ModelSHA256: sum}); err != nil {
		t.Fatal(err)
	}
	rep = mustApply(t, r, d)
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, nil, 0)
	v, _ := r.Get("a", "")
	runMLP(t, v)

	// The same bytes bound to another model: the artifact verifies, the host's binding check
	// passes (it is this artifact's binding), the backend's envelope check refuses them.
	b := t.TempDir()
	putModel(t, b, "b", "1.0.0", mlpMed)
	if _, err := artifacts.AddEngineCache(b+"/b/1.0.0", artifacts.AddEngineRequest{Backend: "cuda", BackendVersion: version,
		Target: devs[0].Target, Data: data}); err != nil {
		t.Fatal(err)
	}
	r2 := NewRepository(rt, nil)
	defer r2.Close()
	rep = mustApply(t, r2, Desired{Dir: b, RequireEngineCaches: true, Models: []ModelSpec{{Name: "b", Backends: []string{"cuda"}}}})
	if len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0].Reason, "refused by the backend") || !strings.Contains(rep.Failed[0].Reason, "rebuild engines") {
		t.Errorf("another model's engine: %+v", rep.Failed)
	}
}

// recordingBuilder is the runtime, recording the options of every engine asked for.
type recordingBuilder struct {
	*bridge.Runtime
	opts []bridge.EngineOptions
}

func (b *recordingBuilder) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	b.opts = append(b.opts, o)
	return b.Runtime.NewEngine(onnx, o)
}

// TestFakeCudaBuildTimingCache: BuildEngineCaches passes the folder's timing cache to the
// build, with the serving config's batch profile and parameters; the cuda backend leaves no
// timing cache, so no new file is written and the folder's own stays.
func TestFakeCudaBuildTimingCache(t *testing.T) {
	rt := fakeCudaRuntime(t)
	targets, why := BuildTargets(rt)
	if len(targets) != 1 {
		t.Skipf("fake cuda targets %v (%s)", targets, why)
	}
	tg := targets[0]
	dir := t.TempDir()
	putModel(t, dir, "a", "1.0.0", mlpSmall)
	putModel(t, dir, "b", "1.0.0", mlpSmall)
	vdir := dir + "/a/1.0.0"
	// A hand-made timing cache beside an engine cache the backend refuses (not its envelope).
	if _, err := artifacts.AddEngineCache(vdir, artifacts.AddEngineRequest{Backend: "cuda", BackendVersion: tg.BackendVersion,
		Target: tg.Device.Target, Data: []byte("not an engine"), TimingCache: []byte("HAND-MADE TIMINGS")}); err != nil {
		t.Fatal(err)
	}
	b := &recordingBuilder{Runtime: rt}
	serving := Desired{Batching: true, Default: ModelSpec{Batching: BatchingSpec{MaxBatchSize: 16, PreferredBatchSizes: []int{4}}},
		Models: []ModelSpec{{Name: "a", Params: map[string]string{"tensorrt.precision": "fp16"}}, {Name: "b"}}}
	steps, err := BuildEngineCaches(b, targets, BuildOptions{Repository: dir, Serving: serving, Builder: "test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range steps {
		if s.Outcome != Built || s.TimingBytes != 0 {
			t.Errorf("%s@%s: %s %s, timing %d bytes", s.Model, s.Version, s.Outcome, s.Detail, s.TimingBytes)
		}
	}
	var built []bridge.EngineOptions
	for _, o := range b.opts {
		if o.Cache == nil {
			built = append(built, o)
		}
	}
	if len(built) != 2 {
		t.Fatalf("builds %+v", built)
	}
	if o := built[0]; string(o.TimingCache) != "HAND-MADE TIMINGS" || o.MinBatch != 1 || o.OptBatch != 4 || o.MaxBatch != 16 ||
		o.Params["tensorrt.precision"] != "fp16" || o.Backend != "cuda" {
		t.Errorf("a built with %+v; want the folder's timing cache, profile 1/4/16 and its parameters", o)
	}
	if o := built[1]; o.TimingCache != nil {
		t.Errorf("b (no timing cache in its folder) built with %q", o.TimingCache)
	}
	a, err := artifacts.Verify(vdir, artifacts.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := a.TimingCache("cuda", tg.BackendVersion, tg.Device.Target); string(tc) != "HAND-MADE TIMINGS" || err != nil {
		t.Errorf("timing cache after the build: %q, %v; want the folder's own kept", tc, err)
	}
	bv, err := artifacts.Verify(dir+"/b/1.0.0", artifacts.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tc, err := bv.TimingCache("cuda", tg.BackendVersion, tg.Device.Target); tc != nil || err != nil {
		t.Errorf("b: timing cache %q, %v; want no file (the backend left none)", tc, err)
	}

	// The caches serve a server with the same settings, and are up to date for the builder.
	b.opts = nil
	steps, err = BuildEngineCaches(b, targets, BuildOptions{Repository: dir, Serving: serving})
	if err != nil || len(steps) != 2 || steps[0].Outcome != UpToDate || steps[1].Outcome != UpToDate {
		t.Errorf("second build: %+v, %v", steps, err)
	}
	r := NewRepository(rt, nil)
	defer r.Close()
	serving.Dir, serving.RequireEngineCaches = dir, true
	serving.Default.Backends = []string{"cuda"}
	rep := mustApply(t, r, serving)
	checkReport(t, rep, []string{"a@1.0.0", "b@1.0.0"}, nil, nil, nil, 0)
}

// fakeCudaRuntime is a runtime over build/fakecuda (the cuda plugin on the CPU emulation of
// CUDA, one sm_90 device), closed with the test; the test is skipped without it.
func fakeCudaRuntime(t *testing.T) *bridge.Runtime {
	t.Helper()
	if err := bridge.Available(); err != nil {
		t.Skip("native library unusable:", err)
	}
	if _, err := os.Stat("../build/fakecuda/libpolicyd_backend_cuda.so"); err != nil {
		t.Skip("no build/fakecuda")
	}
	rt, err := bridge.NewRuntime("../build/fakecuda")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}
