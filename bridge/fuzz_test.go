//go:build cgo

package bridge

import (
	"os"
	"testing"

	"github.com/policyd/policyd/artifacts/artifactstest"
)

// FuzzNewEngine feeds arbitrary bytes to the model loader (ONNX import, checks, passes,
// signature derivation), with arbitrary bytes as its external-data file "model.onnx.data"
// (a seed keeps mlp-small's weights there), and, when a model loads, runs it once on zeros. Nothing may crash;
// errors are fine. Run it longer with: go test -fuzz FuzzNewEngine -fuzztime 60s ./bridge
func FuzzNewEngine(f *testing.F) {
	for _, p := range []string{
		"../../shared/models/mlagents/Basic.onnx",
		"../../shared/models/godot_rl/MultiAgentSimple_player.onnx",
		"../../shared/peers/models/mlp-small.onnx",
		"../../shared/models/mlagents/deterDiscrete1obs3action_INVALID.onnx",
	} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, []byte(nil))
		if m, data, err := artifactstest.Externalize(b, "model.onnx.data", 16); err == nil {
			f.Add(m, data)
		}
	}
	rt, err := NewRuntime("")
	if err != nil {
		f.Fatal(err)
	}
	defer rt.Close()
	f.Fuzz(func(t *testing.T, model, data []byte) {
		e, err := rt.NewEngine(model, EngineOptions{Name: "fuzz", External: map[string][]byte{"model.onnx.data": data}})
		if err != nil {
			return
		}
		defer e.Close()
		c, err := e.NewContext()
		if err != nil {
			return
		}
		defer c.Close()
		in := make([]Tensor, len(e.Inputs()))
		for i, info := range e.Inputs() {
			shape := make([]int64, len(info.Shape))
			n := int64(1)
			for k, d := range info.Shape {
				if d < 0 {
					d = 1
				}
				shape[k] = d
				n *= d
			}
			if n > 1<<20 || info.DType.Size() == 0 {
				return
			}
			in[i] = Tensor{DType: info.DType, Shape: shape, Data: make([]byte, n*int64(info.DType.Size()))}
		}
		_ = c.Run(in, make([]Tensor, len(e.Outputs())))
	})
}
