//go:build cgo

package bridge

import (
	"bytes"
	"encoding/binary"
	"math"
	"os"
	"testing"
)

// The README's external-data example (examples/pytorch-export: 3DBall with its weights in
// model.onnx.data) loads with its sidecar and answers exactly as the self-contained 3DBall does;
// without the sidecar it is refused naming the file.
func TestExamplePyTorchExport(t *testing.T) {
	model, err := os.ReadFile("../examples/pytorch-export/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile("../examples/pytorch-export/model.onnx.data")
	if err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile("../examples/repository/3DBall/1.0.0/model.onnx")
	if err != nil {
		t.Fatal(err)
	}
	rt, err := NewRuntime("")
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()

	if _, err := rt.NewEngine(model, EngineOptions{Name: "no-sidecar"}); err == nil ||
		!bytes.Contains([]byte(err.Error()), []byte("model.onnx.data")) {
		t.Fatalf("loading without the sidecar: got %v, want an error naming model.onnx.data", err)
	}

	run := func(name string, model []byte, ext map[string][]byte) []byte {
		t.Helper()
		e, err := rt.NewEngine(model, EngineOptions{Name: name, External: ext})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		defer e.Close()
		c, err := e.NewContext()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		obs := make([]byte, 4*8)
		for i := 0; i < 8; i++ {
			binary.LittleEndian.PutUint32(obs[4*i:], math.Float32bits(float32(i)/8-0.4))
		}
		out := make([]Tensor, len(e.Outputs()))
		if err := c.Run([]Tensor{{DType: e.Inputs()[0].DType, Shape: []int64{1, 8}, Data: obs}}, out); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for i, o := range e.Outputs() {
			if o.Name == "deterministic_continuous_actions" {
				return append([]byte(nil), out[i].Data...) // owned by the context until its next run or Close
			}
		}
		t.Fatalf("%s: no deterministic_continuous_actions output", name)
		return nil
	}
	got := run("external", model, map[string][]byte{"model.onnx.data": data})
	want := run("whole", whole, nil)
	if !bytes.Equal(got, want) {
		t.Fatalf("external-data 3DBall answers %x, the self-contained one %x", got, want)
	}
}
