//go:build cgo

package server

import (
	"os"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/repository"
)

// engineIO is the signature of the engine rt builds from onnx, as policyctl records it in a
// manifest.
func engineIO(tb testing.TB, rt *bridge.Runtime, onnx []byte) artifacts.IO {
	tb.Helper()
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{})
	if err != nil {
		tb.Fatal(err)
	}
	defer e.Close()
	return repository.Signature(e)
}

// nativeRuntime returns a runtime of the native library, closed when the test ends, and the
// bytes of model (none when model is ""). The test is skipped when the library is unusable or
// the model missing.
func nativeRuntime(t testing.TB, model string) (*bridge.Runtime, []byte) {
	t.Helper()
	if err := bridge.Available(); err != nil {
		t.Skip("native library unusable:", err)
	}
	var onnx []byte
	if model != "" {
		var err error
		if onnx, err = os.ReadFile(model); err != nil {
			t.Skip("model missing:", err)
		}
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt, onnx
}
