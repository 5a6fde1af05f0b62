package engine

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/policyd/policyd/bridge"
)

// ortModules finds an installed onnxruntime-node (bench/engine/run.sh's build/peers, or the main
// checkout's) and node; the test skips without them.
func ortModules(t *testing.T) (node, modules string) {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("no node")
	}
	for _, d := range []string{
		filepath.Join("..", "..", "build", "peers", "node", "node_modules"),
		filepath.Join("..", "..", "..", "main", "build", "peers", "node", "node_modules"),
	} {
		if _, err := os.Stat(filepath.Join(d, "onnxruntime-node", "package.json")); err == nil {
			abs, _ := filepath.Abs(d)
			return node, abs
		}
	}
	t.Skip("no onnxruntime-node (bash bench/prepare-ort.sh ../shared/peers installs it under build/peers)")
	return "", ""
}

// The output check end to end: ort_outputs.js under real ONNX Runtime against policyd's engine
// on a peer model; the two agree to float rounding, and a stand-in that answers other numbers
// is caught.
func TestCheckCaseORT(t *testing.T) {
	dir := peerModels(t)
	node, modules := ortModules(t)
	scripts := t.TempDir()
	src, err := os.ReadFile("ort_outputs.js")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(scripts, "ort_outputs.js"), src, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(scripts, "node"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(modules, filepath.Join(scripts, "node", "node_modules")); err != nil {
		t.Fatal(err)
	}
	specs, err := LoadSpecs(dir)
	if err != nil {
		t.Fatal(err)
	}
	var spec ModelSpec
	for _, s := range specs {
		if s.Name == "mlp-med" {
			spec = s
		}
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	eng, err := LoadEngine(rt, dir, spec)
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	abs, _ := filepath.Abs(dir)
	cfg := Config{ORT: &ORTRunner{Node: node, CheckScript: filepath.Join(scripts, "ort_outputs.js"), ModelsDir: abs}}
	c := cfg.checkCase(context.Background(), eng, spec, 3)
	if !c.OK || c.Err != "" || c.MaxAbsDiff > 1e-5 || c.Atol != DefaultCheckAtol {
		t.Fatalf("mlp-med b3 vs ORT: %+v", c)
	}
	// A stand-in "ORT" answering zeros: the check must fail and say where.
	fake := filepath.Join(scripts, "fake.sh")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho '{\"model\":\"mlp-med\",\"batch\":3,\"outputs\":{\"action\":{\"shape\":[3,8],\"data\":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}}}'\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cfg.ORT = &ORTRunner{Node: "/bin/sh", CheckScript: fake, ModelsDir: abs}
	if c := cfg.checkCase(context.Background(), eng, spec, 3); c.OK || c.Status() != "MISMATCH" || !strings.HasPrefix(c.Worst, "action[") {
		t.Fatalf("zeros: %+v", c)
	}
}

// unsupportedModel is a one-node ONNX model (x -> NoSuchOp -> y, [batch, 4] float) that policyd
// refuses to load with an UNSUPPORTED error.
func unsupportedModel() []byte {
	msg := func(b []byte, field protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(b, field, protowire.BytesType), v)
	}
	str := func(b []byte, field protowire.Number, s string) []byte { return msg(b, field, []byte(s)) }
	varint := func(b []byte, field protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(b, field, protowire.VarintType), v)
	}
	valueInfo := func(name string) []byte {
		shape := msg(nil, 1, str(nil, 2, "batch")) // dim { dim_param }
		shape = msg(shape, 1, varint(nil, 1, 4))   // dim { dim_value: 4 }
		tensor := msg(varint(nil, 1, 1), 2, shape) // elem_type FLOAT, shape
		return msg(str(nil, 1, name), 2, msg(nil, 1, tensor))
	}
	node := str(str(str(str(nil, 1, "x"), 2, "y"), 3, "n0"), 4, "NoSuchOp")
	graph := msg(nil, 1, node)
	graph = str(graph, 2, "g")
	graph = msg(graph, 11, valueInfo("x"))
	graph = msg(graph, 12, valueInfo("y"))
	model := varint(nil, 1, 8)
	model = msg(model, 8, varint(str(nil, 1, ""), 2, 17))
	return msg(model, 7, graph)
}

// A model policyd refuses is reported as "refused: …"; with AllowRefused the run still succeeds.
func TestRunRefused(t *testing.T) {
	peerModels(t) // the native library
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "m.onnx"), unsupportedModel(), 0o644); err != nil {
		t.Fatal(err)
	}
	spec := `{"models": {"nope": {"file": "m.onnx", "inputs": [{"name": "x", "shape": [-1, 4], "datatype": "FP32"}],
	  "outputs": [{"name": "y", "shape": [-1, 4], "datatype": "FP32"}]}}}`
	if err := os.WriteFile(filepath.Join(dir, "models.json"), []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ModelsDir: dir, Batches: []int{1}, Modes: []string{"st"}, Params: tiny, Format: "markdown"}
	var out bytes.Buffer
	err := Run(context.Background(), cfg, &out)
	if err == nil || !strings.Contains(err.Error(), "nope b1 policyd: refused: ") || !strings.Contains(err.Error(), "NoSuchOp") {
		t.Fatalf("without AllowRefused: %v", err)
	}
	cfg.AllowRefused = true
	out.Reset()
	if err := Run(context.Background(), cfg, &out); err != nil {
		t.Fatalf("with AllowRefused: %v", err)
	}
	if !strings.Contains(out.String(), "- nope b1 policyd: refused: ") {
		t.Fatalf("report lacks the refusal:\n%s", out.String())
	}
}
