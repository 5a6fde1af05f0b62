package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/policyd/policyd/bridge"
)

// onnxTensor is one initializer of an ONNX model, as this test reads it.
type onnxTensor struct {
	dims  []int64
	dtype uint64
	raw   []byte
	f32   []float32
}

// readONNX returns a model's initializers by name and its nodes' op types, in order (protowire,
// independent of the C++ tool that wrote the model).
func readONNX(t *testing.T, b []byte) (map[string]*onnxTensor, []string) {
	t.Helper()
	fields := func(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte, x uint64)) {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				t.Fatalf("bad tag")
			}
			b = b[n:]
			switch typ {
			case protowire.BytesType:
				v, m := protowire.ConsumeBytes(b)
				if m < 0 {
					t.Fatalf("bad bytes")
				}
				f(num, typ, v, 0)
				b = b[m:]
			case protowire.VarintType:
				x, m := protowire.ConsumeVarint(b)
				f(num, typ, nil, x)
				b = b[m:]
			default:
				m := protowire.ConsumeFieldValue(num, typ, b)
				if m < 0 {
					t.Fatalf("bad field")
				}
				b = b[m:]
			}
		}
	}
	inits := map[string]*onnxTensor{}
	var ops []string
	fields(b, func(num protowire.Number, _ protowire.Type, graph []byte, _ uint64) {
		if num != 7 { // ModelProto.graph
			return
		}
		fields(graph, func(num protowire.Number, _ protowire.Type, v []byte, _ uint64) {
			switch num {
			case 1: // NodeProto: "Op" or "Op:W" for a Gemm with transB=1 on input W
				var op, w string
				transB := false
				fields(v, func(num protowire.Number, _ protowire.Type, s []byte, _ uint64) {
					switch num {
					case 1: // input
						if w == "" {
							w = "?"
						} else if w == "?" {
							w = string(s)
						}
					case 4:
						op = string(s)
					case 5: // AttributeProto
						var an string
						var ai uint64
						fields(s, func(num protowire.Number, _ protowire.Type, b []byte, x uint64) {
							if num == 1 {
								an = string(b)
							} else if num == 3 {
								ai = x
							}
						})
						transB = transB || (an == "transB" && ai == 1)
					}
				})
				if op == "Gemm" && transB {
					op += ":" + w
				}
				ops = append(ops, op)
			case 5: // TensorProto
				var name string
				tt := &onnxTensor{}
				fields(v, func(num protowire.Number, typ protowire.Type, s []byte, x uint64) {
					switch {
					case num == 1 && typ == protowire.VarintType:
						tt.dims = append(tt.dims, int64(x))
					case num == 1: // packed dims
						for len(s) > 0 {
							d, m := protowire.ConsumeVarint(s)
							tt.dims = append(tt.dims, int64(d))
							s = s[m:]
						}
					case num == 2:
						tt.dtype = x
					case num == 8:
						name = string(s)
					case num == 9:
						tt.raw = s
					}
				})
				if tt.dtype == 1 {
					for i := 0; i+4 <= len(tt.raw); i += 4 {
						tt.f32 = append(tt.f32, math.Float32frombits(binary.LittleEndian.Uint32(tt.raw[i:])))
					}
				}
				inits[name] = tt
			}
		})
	})
	return inits, ops
}

// makerModels runs build/bin/pd_make_bench_models into a temporary folder (the test skips when
// the tool or the peers' mlp-large is missing) and returns the folder.
func makerModels(t *testing.T) string {
	t.Helper()
	tool := filepath.Join("..", "..", "build", "bin", "pd_make_bench_models")
	src := filepath.Join("..", "..", "..", "shared", "peers", "models", "mlp-large.onnx")
	for _, p := range []string{tool, src} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%v (cmake --build build --target pd_make_bench_models)", err)
		}
	}
	dir := t.TempDir()
	if out, err := exec.Command(tool, "--mlp-large", src, "--out", dir).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	return dir
}

// The int8 model is mlp-large with every weight quantized as ONNX Runtime's quantize_dynamic
// does (checked here element by element from the f32 weights, with Go's float32 arithmetic and
// round-half-to-even), in its node pattern; the tool writes the same bytes every time; ORT runs
// both new models; the int8 model's outputs stay near the f32 model's.
func TestBenchModels(t *testing.T) {
	dir := makerModels(t)
	f32, err := os.ReadFile(filepath.Join(dir, "mlp-large.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	q8, err := os.ReadFile(filepath.Join(dir, "mlp-large-int8.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	orig, origOps := readONNX(t, f32)
	quant, ops := readONNX(t, q8)
	count := map[string]int{}
	for _, op := range ops {
		count[op]++
	}
	weights := 0
	transposed := map[string]bool{}
	for _, op := range origOps {
		if w, ok := strings.CutPrefix(op, "Gemm:"); ok {
			transposed[w] = true
			op = "Gemm"
		}
		if op == "Gemm" || op == "MatMul" {
			weights++
		}
	}
	if weights == 0 || count["MatMulInteger"] != weights || count["DynamicQuantizeLinear"] != weights ||
		count["Cast"] != weights || count["Mul"] != 2*weights || count["Gemm"]+count["MatMul"] != 0 {
		t.Fatalf("ops %v for %d MatMul/Gemm in %v", count, weights, origOps)
	}
	checked := 0
	for name, w := range orig {
		qt, ok := quant[name+"_quantized"]
		if !ok {
			continue
		}
		checked++
		st, zp := quant[name+"_scale"], quant[name+"_zero_point"]
		if st == nil || len(st.f32) != 1 || zp == nil || zp.dtype != 3 || !bytes.Equal(zp.raw, []byte{0}) || qt.dtype != 3 {
			t.Fatalf("%s: scale %+v zero point %+v dtype %d", name, st, zp, qt.dtype)
		}
		absmax := float32(0)
		for _, v := range w.f32 {
			absmax = max(absmax, float32(math.Abs(float64(v))))
		}
		scale := (absmax - (-absmax)) / float32(254)
		if st.f32[0] != scale {
			t.Fatalf("%s: scale %g, want %g", name, st.f32[0], scale)
		}
		// Stored as [K, N]: a Gemm's transB weight [N, K] comes transposed.
		rows, cols := w.dims[0], w.dims[1]
		trans := transposed[name]
		if (trans && (qt.dims[0] != cols || qt.dims[1] != rows)) || (!trans && (qt.dims[0] != rows || qt.dims[1] != cols)) {
			t.Fatalf("%s: dims %v from %v", name, qt.dims, w.dims)
		}
		for r := int64(0); r < rows; r++ {
			for c := int64(0); c < cols; c++ {
				v := w.f32[r*cols+c] / scale
				want := int8(max(-127, min(127, math.RoundToEven(float64(v)))))
				at := r*cols + c
				if trans {
					at = c*rows + r
				}
				if got := int8(qt.raw[at]); got != want {
					t.Fatalf("%s[%d,%d] = %g: q %d, want %d", name, r, c, w.f32[r*cols+c], got, want)
				}
			}
		}
		if _, dead := quant[name]; dead {
			t.Errorf("%s: the f32 weight is still in the int8 model", name)
		}
	}
	if checked != weights {
		t.Fatalf("checked %d weights of %d", checked, weights)
	}

	again := makerModels(t)
	for _, f := range []string{"mlp-large-int8.onnx", "attention-einsum.onnx", "models.json"} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(again, f))
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Errorf("%s: not the same bytes on a second run", f)
		}
	}
	specs, err := LoadSpecs(dir)
	if err != nil || len(specs) != 3 || specs[1].Name != "mlp-large-int8" || specs[1].CheckAtol <= specs[0].CheckAtol {
		t.Fatalf("models.json: %+v, %v", specs, err)
	}

	node, modules := ortModules(t)
	if err := os.MkdirAll(filepath.Join(dir, "node"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(modules, filepath.Join(dir, "node", "node_modules")); err != nil {
		t.Fatal(err)
	}
	src, _ := os.ReadFile("ort_outputs.js")
	if err := os.WriteFile(filepath.Join(dir, "ort_outputs.js"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	o := ORTRunner{Node: node, CheckScript: filepath.Join(dir, "ort_outputs.js"), ModelsDir: dir}
	ref, err := o.Outputs(context.Background(), "mlp-large", 4)
	if err != nil {
		t.Fatal(err)
	}
	got, err := o.Outputs(context.Background(), "mlp-large-int8", 4)
	if err != nil {
		t.Fatal(err)
	}
	c := compareOutputs(got, ref, 0.05)
	if !c.OK || c.MaxAbsDiff == 0 {
		t.Fatalf("ORT int8 vs f32: %+v (want a quantization error, small)", c)
	}
	t.Logf("ORT: int8 vs f32 mlp-large at batch 4: max |diff| %.3g", c.MaxAbsDiff)
	att, err := o.Outputs(context.Background(), "attention-einsum", 2)
	if err != nil {
		t.Fatal(err)
	}
	if a := att["action"]; fmt.Sprint(a.Shape) != "[2 8]" {
		t.Fatalf("attention-einsum: %+v", att)
	}

	// policyd on the same models against ORT, as make bench-quant checks them; the int8 model
	// only where this build has the int8 operators.
	if err := bridge.Available(); err != nil {
		t.Skipf("native library: %v", err)
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Skipf("native library: %v", err)
	}
	defer rt.Close()
	cfg := Config{ORT: &o}
	for _, spec := range specs {
		eng, err := LoadEngine(rt, dir, spec)
		if errors.Is(err, &bridge.Error{Code: bridge.CodeUnsupported}) {
			t.Logf("%s: refused (%v): not compared", spec.Name, err)
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", spec.Name, err)
		}
		for _, batch := range []int{1, 7} {
			c := cfg.checkCase(context.Background(), eng, spec, batch)
			if !c.OK {
				t.Errorf("%s b%d vs ORT: %+v", spec.Name, batch, c)
			}
			t.Logf("%s b%d: policyd vs ORT max |diff| %.3g", spec.Name, batch, c.MaxAbsDiff)
		}
		eng.Close()
	}
}
