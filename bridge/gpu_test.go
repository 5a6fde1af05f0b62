//go:build cgo

package bridge

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

// Devices, engine caches and device time through the bridge. On a machine without a GPU
// (this one, CI) the cuda backend is listed with the reason it is unavailable and every GPU
// path fails cleanly; with a GPU the cache round trip runs.

func TestDevicesOfBackends(t *testing.T) {
	rt := newRuntime(t)
	if d, err := rt.Devices("cpu"); err != nil || len(d) != 0 {
		t.Errorf("Devices(cpu) = %v, %v; want none", d, err)
	}
	_, err := rt.Devices("nope")
	if !errors.Is(err, &Error{Code: CodeNotFound}) || !strings.Contains(err.Error(), "unknown backend 'nope'") {
		t.Errorf("Devices(nope) error = %v, want not found naming it", err)
	}
	for _, b := range rt.Backends() {
		if b.Name != "cuda" {
			continue
		}
		devs, err := rt.Devices("cuda")
		if err != nil {
			t.Fatal(err)
		}
		if b.Available != (len(devs) > 0) {
			t.Errorf("cuda available=%v with %d devices (reason %q)", b.Available, len(devs), b.Reason)
		}
		for _, d := range devs {
			if !strings.HasPrefix(d.Target, "sm_") || d.Name == "" || d.TotalMemory == 0 {
				t.Errorf("device %+v", d)
			}
		}
		if !b.Available && b.Reason == "" {
			t.Error("cuda is unavailable without a reason")
		}
		t.Logf("cuda: available=%v %s%s", b.Available, b.Version, b.Reason)
	}
	rt.Close()
	if _, err := rt.Devices("cpu"); !errors.Is(err, ErrClosed) {
		t.Errorf("Devices after Close = %v, want ErrClosed", err)
	}
}

func TestCpuEngineHasNoCacheAndNoDeviceTime(t *testing.T) {
	rt := newRuntime(t)
	model, err := os.ReadFile("../../shared/peers/models/mlp-small.onnx")
	if err != nil {
		t.Skipf("peers' models not found: %v", err)
	}
	e, err := rt.NewEngine(model, EngineOptions{Profile: true, ModelDigest: "sha256:00"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Serialize(); !errors.Is(err, &Error{Code: CodeUnsupported}) {
		t.Errorf("Serialize on cpu = %v, want unsupported", err)
	}
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.DeviceTime(); !errors.Is(err, &Error{Code: CodeUnsupported}) {
		t.Errorf("DeviceTime on cpu = %v, want unsupported", err)
	}

	_, err = rt.NewEngine(model, EngineOptions{Cache: []byte("not a cache")})
	if !errors.Is(err, &Error{Code: CodeInvalidArg}) || !strings.Contains(err.Error(), "not an engine cache") {
		t.Errorf("NewEngine with junk cache = %v, want invalid argument", err)
	}
}

// Batch profile, backend parameters and timing caches (ABI 1.3) on the cpu backend, which uses
// none of them: a profile within the rules and a timing cache are accepted and ignored, a
// parameter of its own name is refused at create naming it, a bad profile or a parameter key
// that is not "<backend>.<name>" is refused before any build.
func TestCpuEngineBuildOptions(t *testing.T) {
	rt := newRuntime(t)
	model, err := os.ReadFile("../../shared/peers/models/mlp-small.onnx")
	if err != nil {
		t.Skipf("peers' models not found: %v", err)
	}
	e, err := rt.NewEngine(model, EngineOptions{MinBatch: 1, OptBatch: 8, MaxBatch: 32,
		Params: map[string]string{"tensorrt.precision": "fp16", "cuda.anything": "x"}, TimingCache: []byte("timings")})
	if err != nil {
		t.Fatalf("profile, other backends' parameters and a timing cache on cpu: %v", err)
	}
	tc, err := e.TimingCache()
	if err != nil || len(tc) != 0 {
		t.Errorf("TimingCache of a cpu engine = %q, %v; want empty", tc, err)
	}
	e.Close()
	if _, err := e.TimingCache(); !errors.Is(err, ErrClosed) {
		t.Errorf("TimingCache after Close = %v, want ErrClosed", err)
	}

	for _, tt := range []struct {
		name string
		o    EngineOptions
		want string
	}{
		{"own parameter", EngineOptions{Name: "m@1", Params: map[string]string{"cpu.x": "1"}}, "m@1: backend 'cpu' has no build parameter 'x'"},
		{"unknown backend", EngineOptions{Params: map[string]string{"onnxruntime.x": "1"}}, "parameter 'onnxruntime.x' names unknown backend 'onnxruntime'"},
		{"no backend", EngineOptions{Params: map[string]string{"precision": "fp16"}}, "parameter key must be '<backend>.<name>', got 'precision'"},
		{"min above opt", EngineOptions{MinBatch: 4, OptBatch: 2, MaxBatch: 8}, "got min 4, opt 2, max 8"},
		{"max below opt", EngineOptions{MinBatch: 1, OptBatch: 16, MaxBatch: 8}, "got min 1, opt 16, max 8"},
		{"min zero", EngineOptions{MinBatch: 0, OptBatch: 1, MaxBatch: 8}, "1 <= min <= opt <= max"},
	} {
		_, err := rt.NewEngine(model, tt.o)
		if !errors.Is(err, &Error{Code: CodeInvalidArg}) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: NewEngine = %v, want invalid argument with %q", tt.name, err, tt.want)
		}
	}
}

// cudaRuntime is a runtime whose cuda backend has a device: the real one when this machine has
// a GPU, else the test build of the plugin on the CPU emulation of CUDA (build/fakecuda, made
// by make native), else the test skips.
func cudaRuntime(t *testing.T) (*Runtime, []Device) {
	t.Helper()
	rt := newRuntime(t)
	if devs, _ := rt.Devices("cuda"); len(devs) > 0 {
		return rt, devs
	}
	if _, err := os.Stat("../build/fakecuda/libpolicyd_backend_cuda.so"); err != nil {
		t.Skip("no CUDA device and no build/fakecuda")
	}
	rt, err := NewRuntime("../build/fakecuda")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	devs, err := rt.Devices("cuda")
	if err != nil || len(devs) == 0 {
		t.Fatalf("fake cuda: %v, %v (%+v)", devs, err, rt.Backends())
	}
	t.Logf("no GPU: on the CPU emulation of CUDA (%s)", devs[0].Name)
	return rt, devs
}

func TestCudaEngineCacheRoundTrip(t *testing.T) {
	rt, devs := cudaRuntime(t)
	model, err := os.ReadFile("../../shared/peers/models/mlp-med.onnx")
	if err != nil {
		t.Skipf("peers' models not found: %v", err)
	}
	opts := EngineOptions{Backend: "cuda", ModelDigest: "sha256:01"}
	e, err := rt.NewEngine(model, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	blob, err := e.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(blob, []byte("target="+devs[0].Target)) {
		t.Errorf("cache is not bound to %s", devs[0].Target)
	}
	opts.Cache = blob
	e2, err := rt.NewEngine(model, opts)
	if err != nil {
		t.Fatalf("from cache: %v", err)
	}
	defer e2.Close()
	// Both engines compute the same, and the one from the cache measures device time.
	c, err := e2.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	obs := make([]byte, 64*4)
	for i := range 64 {
		binary.LittleEndian.PutUint32(obs[4*i:], math.Float32bits(float32(i)/64-0.5))
	}
	out := make([]Tensor, 1)
	if err := c.Run([]Tensor{{DType: Float32, Shape: []int64{1, 64}, Data: obs}}, out); err != nil {
		t.Fatal(err)
	}
	if _, err := c.DeviceTime(); !errors.Is(err, &Error{Code: CodeUnsupported}) {
		t.Errorf("DeviceTime without Profile = %v, want unsupported", err)
	}
	want := bytes.Clone(out[0].Data)
	c1, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c1.Close()
	if err := c1.Run([]Tensor{{DType: Float32, Shape: []int64{1, 64}, Data: obs}}, out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out[0].Data, want) {
		t.Error("the engine from the cache computes differently")
	}

	opts.ModelDigest = "sha256:02"
	if _, err := rt.NewEngine(model, opts); err == nil || !strings.Contains(err.Error(), "rebuild engines") {
		t.Errorf("cache of another digest = %v, want refused", err)
	}
}

func TestCudaProfiledRunsReportDeviceTime(t *testing.T) {
	rt, _ := cudaRuntime(t)
	model, err := os.ReadFile("../../shared/peers/models/mlp-small.onnx")
	if err != nil {
		t.Skipf("peers' models not found: %v", err)
	}
	e, err := rt.NewEngine(model, EngineOptions{Backend: "cuda", Profile: true})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := make([]Tensor, 1)
	for run := range 3 { // eager, capture, replay
		if err := c.Run([]Tensor{{DType: Float32, Shape: []int64{2, 8}, Data: make([]byte, 2*8*4)}}, out); err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		if d, err := c.DeviceTime(); err != nil || d < 0 {
			t.Errorf("run %d: DeviceTime = %v, %v", run, d, err)
		}
	}
	if len(out[0].Shape) != 2 || out[0].Shape[0] != 2 || out[0].Shape[1] != 2 {
		t.Errorf("output shape %v, want [2 2]", out[0].Shape)
	}
	if _, err := rt.NewEngine(model, EngineOptions{Backend: "cuda", Device: 7}); !errors.Is(err, &Error{Code: CodeInvalidArg}) ||
		!strings.Contains(err.Error(), "device 7 out of range") {
		t.Errorf("device 7: %v, want out of range", err)
	}
}
