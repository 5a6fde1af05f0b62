//go:build cgo

package bridge

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts/artifactstest"
)

// EngineOptions.External reaches the library: the model with its weights in model.onnx.data
// answers exactly as the self-contained one; without the file it is refused naming it.
func TestExternalData(t *testing.T) {
	rt := newRuntime(t)
	plain, err := os.ReadFile("../../shared/peers/models/mlp-small.onnx")
	if err != nil {
		t.Fatal(err)
	}
	model, data, err := artifactstest.Externalize(plain, "model.onnx.data", 64)
	if err != nil {
		t.Fatal(err)
	}
	run := func(onnx []byte, ext map[string][]byte) []byte {
		t.Helper()
		e, err := rt.NewEngine(onnx, EngineOptions{Name: "mlp", External: ext})
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
		if err := c.Run([]Tensor{obsBatch(3)}, out); err != nil {
			t.Fatal(err)
		}
		return append([]byte{}, out[0].Data...)
	}
	want := run(plain, nil)
	if got := run(model, map[string][]byte{"model.onnx.data": data}); !bytes.Equal(got, want) {
		t.Errorf("external-data model answers differently")
	}
	_, err = rt.NewEngine(model, EngineOptions{Name: "mlp", External: map[string][]byte{"other.data": data}})
	var e *Error
	if !errors.As(err, &e) || e.Code != CodeInvalidArg || !strings.Contains(e.Msg, "'model.onnx.data', which was not provided") {
		t.Errorf("missing file: %v", err)
	}
	_, err = rt.NewEngine(model, EngineOptions{Name: "mlp", External: map[string][]byte{"../model.onnx.data": data}})
	if !errors.As(err, &e) || e.Code != CodeInvalidArg || !strings.Contains(e.Msg, "'..'") {
		t.Errorf("'..' name: %v", err)
	}
}
