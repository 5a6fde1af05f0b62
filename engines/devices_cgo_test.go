//go:build cgo

package engines

import (
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

// Backend order, fallback and devices against the native runtime. On a machine without a GPU
// (this one, CI) the cuda plugin loads and reports itself unavailable; the fake CUDA plugin
// (build/fakecuda, made by make native: the cuda backend on a CPU emulation with one device)
// stands in for a GPU where it exists.

func TestRealRuntimeFallbackWithoutGPU(t *testing.T) {
	rt := nativeRuntime(t)
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
	defer rt.Close()
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
func runMLP(t *testing.T, v *ModelVersion) {
	t.Helper()
	var n int
	err := v.Do(t.Context(), []bridge.Tensor{obs(1, obsWidth[mlpSmall], 0.5)}, RunOptions{}, func(o []bridge.Tensor) error {
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
	defer rt.Close()
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
