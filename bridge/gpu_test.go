//go:build cgo

package bridge

import (
	"bytes"
	"errors"
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

func TestCudaEngineCacheRoundTrip(t *testing.T) {
	rt := newRuntime(t)
	devs, _ := rt.Devices("cuda")
	if len(devs) == 0 {
		for _, b := range rt.Backends() {
			if b.Name == "cuda" {
				t.Skipf("no CUDA device: %s", b.Reason)
			}
		}
		t.Skip("cuda plugin not installed")
	}
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
	e2.Close()
	opts.ModelDigest = "sha256:02"
	if _, err := rt.NewEngine(model, opts); err == nil || !strings.Contains(err.Error(), "rebuild engines") {
		t.Errorf("cache of another digest = %v, want refused", err)
	}
}
