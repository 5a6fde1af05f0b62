//go:build cgo

package server

import (
	"os"
	"testing"

	"github.com/policyd/policyd/bridge"
)

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
