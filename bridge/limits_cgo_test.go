//go:build cgo

package bridge

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// EngineOptions.MaxMemory reaches the library: a model over it is refused naming what does not
// fit, the same model loads under a limit it fits.
func TestMaxMemoryBoundsTheModel(t *testing.T) {
	rt := newRuntime(t)
	onnx, err := os.ReadFile("../../shared/peers/models/mlp-small.onnx")
	if err != nil {
		t.Fatal(err)
	}
	_, err = rt.NewEngine(onnx, EngineOptions{Name: "mlp", MaxMemory: 4 << 10})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidArg || !strings.Contains(e.Msg, "memory limit") {
		t.Fatalf("4 KiB limit: got %v, want CodeInvalidArg naming the memory limit", err)
	}
	eng, err := rt.NewEngine(onnx, EngineOptions{Name: "mlp", MaxMemory: 64 << 20})
	if err != nil {
		t.Fatalf("64 MiB limit: %v", err)
	}
	eng.Close()
}
