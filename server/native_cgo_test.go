//go:build cgo

package server

import (
	"os"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

// engineIO is e's signature as policyctl records it in a manifest.
func engineIO(e *bridge.Engine) artifacts.IO {
	var io artifacts.IO
	for _, in := range e.Inputs() {
		io.Inputs = append(io.Inputs, artifacts.Tensor{Name: in.Name, Datatype: in.DType.String(), Shape: in.Shape})
	}
	for _, out := range e.Outputs() {
		io.Outputs = append(io.Outputs, artifacts.Tensor{Name: out.Name, Datatype: out.DType.String(), Shape: out.Shape})
	}
	return io
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
