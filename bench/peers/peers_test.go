package peers

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const specJSON = `{"opset":17,"models":{
 "mlp":{"file":"mlp.onnx","inputs":[{"name":"obs","shape":[-1,2],"datatype":"FP32"}],"outputs":[{"name":"action","shape":[-1,1],"datatype":"FP32"}]},
 "lstm":{"file":"lstm.onnx","inputs":[{"name":"obs","shape":[-1,1],"datatype":"FP32"},{"name":"h_in","shape":[1,-1,2],"datatype":"FP32"}],
         "outputs":[{"name":"action","shape":[-1,1],"datatype":"FP32"},{"name":"h_out","shape":[1,-1,2],"datatype":"FP32"}]}}}`

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestParseSpecsKeepsOrder(t *testing.T) {
	specs, err := ParseSpecs([]byte(specJSON))
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) != 2 || specs[0].Name != "mlp" || specs[1].Name != "lstm" || specs[1].Inputs[1].BatchAxis() != 1 {
		t.Fatalf("specs: %+v", specs)
	}
	if s, ok := FindSpec(specs, "lstm"); !ok || s.File != "lstm.onnx" {
		t.Errorf("FindSpec: %+v %v", s, ok)
	}
	if _, ok := FindSpec(specs, "nope"); ok {
		t.Error("FindSpec found a missing model")
	}
}

// Without the peers' bodies, a body is the ONNX Runtime reference of testdata/reference with its
// rows tiled to the batch, inputs and outputs alike, along each tensor's batch axis.
func TestDerivedBody(t *testing.T) {
	specs, _ := ParseSpecs([]byte(specJSON))
	refs := t.TempDir()
	write(t, filepath.Join(refs, "peers-lstm_b1.json"), `{"inputs":[
	  {"name":"obs","datatype":"FP32","shape":[1,1],"data":[0.5]},
	  {"name":"h_in","datatype":"FP32","shape":[1,1,2],"data":[0.25,-0.75]}],
	 "outputs":[{"name":"action","datatype":"FP32","shape":[1,1],"data":[3],"deterministic":true},
	  {"name":"h_out","datatype":"FP32","shape":[1,1,2],"data":[1,2],"deterministic":true}]}`)
	h := Harness{Dir: t.TempDir()}
	lstm, _ := FindSpec(specs, "lstm")
	b, err := h.LoadBody("lstm", 3, lstm, refs)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.Source, "peers-lstm_b1.json") || b.Batch != 3 {
		t.Errorf("source %q", b.Source)
	}
	if got := b.Inputs[1]; !slices.Equal(got.Shape, []int64{1, 3, 2}) || !slices.Equal(got.Data, []float64{0.25, -0.75, 0.25, -0.75, 0.25, -0.75}) {
		t.Errorf("h_in tiled: %+v", got)
	}
	if got := b.Ref.Outputs[0]; !slices.Equal(got.Shape, []int64{3, 1}) || !slices.Equal(got.Data, []float64{3, 3, 3}) {
		t.Errorf("action tiled: %+v", got)
	}
	if !strings.Contains(string(b.JSON), `"shape":[1,3,2]`) {
		t.Errorf("JSON body: %s", b.JSON)
	}
	mlp, _ := FindSpec(specs, "mlp")
	if _, err := h.LoadBody("mlp", 1, mlp, refs); err == nil || !strings.Contains(err.Error(), "peers-mlp_b8.json") {
		t.Errorf("no reference at all: %v", err)
	}
}

// With the peers' bodies, the body is sent byte for byte and checked against models/ref.
func TestPeersBody(t *testing.T) {
	specs, _ := ParseSpecs([]byte(specJSON))
	dir := t.TempDir()
	body := `{"inputs": [{"name": "obs", "shape": [1, 2], "datatype": "FP32", "data": [0.10000000149011612, -1.2345678806304932]}]}`
	write(t, filepath.Join(dir, "models", "bodies", "mlp_b1.json"), body)
	write(t, filepath.Join(dir, "models", "ref", "mlp_b1.json"), `{"model_name":"mlp","outputs":[{"name":"action","shape":[1,1],"datatype":"FP32","data":[0.5]}]}`)
	mlp, _ := FindSpec(specs, "mlp")
	b, err := Harness{Dir: dir}.LoadBody("mlp", 1, mlp, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if string(b.JSON) != body || b.Ref.Outputs[0].Data[0] != 0.5 || b.Ref.Atol != 1e-4 || !strings.Contains(b.Source, "torch") {
		t.Errorf("body %+v", b)
	}
}

func TestCheckReportsWhatIsMissing(t *testing.T) {
	dir := t.TempDir()
	write(t, filepath.Join(dir, "models", "models.json"), specJSON)
	s := Harness{Dir: dir}.Check(context.Background())
	if !s.Models || s.Bodies || s.NodeModules != "" || s.RunAllReady() || s.NodeReady() {
		t.Errorf("setup of a bare harness: %+v", s)
	}
	joined := strings.Join(s.Missing, "\n")
	for _, want := range []string{"models/bodies", "onnxruntime-node"} {
		if !strings.Contains(joined, want) {
			t.Errorf("missing list %q lacks %q", joined, want)
		}
	}
	nm := t.TempDir()
	write(t, filepath.Join(nm, "onnxruntime-node", "package.json"), `{}`)
	if s := (Harness{Dir: dir, NodeModules: nm}).Check(context.Background()); s.NodeModules != nm {
		t.Errorf("node_modules beside the harness not found: %+v", s)
	}
}

func TestReadRawLines(t *testing.T) {
	raw := t.TempDir()
	write(t, filepath.Join(raw, "http.jsonl"), `{"body_bytes":1388,"concurrency":1,"duration_s":4,"errors":0,"label":"server=node model=mlp-med batch=1 conc=1","max_us":2695,"mean_us":167.6,"p50_us":166,"p90_us":180,"p95_us":197,"p999_us":1098,"p99_us":233,"requests":23783,"rps":5945.6,"server_cpu_s":3.2,"server_cpu_us_per_req":134.5}
not json
{"label":"server=policyd model=mlp-med batch=32 conc=16","p50_us":900,"requests":10,"rps":2.5}
`)
	write(t, filepath.Join(raw, "wrk.jsonl"), `{"server":"node","model":"mlp-small","batch":1,"conn":64,"requests":58463,"duration_s":3.002,"rps":19475.1,"errors":0,"p50_us":3290,"p99_us":6714}
`)
	rows, err := ReadHTTP(raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Server != "node" || rows[0].Model != "mlp-med" || rows[0].Batch != 1 || rows[0].Conc != 1 ||
		rows[0].P50 != 166 || rows[0].RPS != 5945.6 || *rows[0].ServerCPUPerReq != 134.5 || rows[1].Server != "policyd" || rows[1].Conc != 16 {
		t.Errorf("rows: %+v", rows)
	}
	wrk, err := ReadWrk(raw)
	if err != nil || len(wrk) != 1 || wrk[0].RPS != 19475.1 || wrk[0].Conn != 64 {
		t.Errorf("wrk: %+v %v", wrk, err)
	}
	write(t, filepath.Join(raw, "http.jsonl"), `{"label":"model=x","p50_us":1}`+"\n")
	if _, err := ReadHTTP(raw); err == nil || !strings.Contains(err.Error(), "http.jsonl:1") {
		t.Errorf("a label without server/batch: %v", err)
	}
	if rows, err := ReadHTTP(t.TempDir()); err != nil || rows != nil {
		t.Errorf("missing file: %v %v", rows, err)
	}
}

// RunAll's copy must leave the harness untouched and give run_all.sh a writable tree with the
// models linked, not copied.
func TestCopyTo(t *testing.T) {
	src := t.TempDir()
	write(t, filepath.Join(src, "run_all.sh"), "#!/bin/bash\n")
	write(t, filepath.Join(src, "models", "m.onnx"), "onnx")
	write(t, filepath.Join(src, "results", "old.md"), "x")
	write(t, filepath.Join(src, "node", "node_modules", "x", "a.js"), "x")
	write(t, filepath.Join(src, "floor", "main.go"), "package main")
	dst := filepath.Join(t.TempDir(), "copy")
	if err := (Harness{Dir: src}).copyTo(dst); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(filepath.Join(dst, "models", "m.onnx")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("models/m.onnx: %v, want a symlink", err)
	}
	if _, err := os.Stat(filepath.Join(dst, "results")); err == nil {
		t.Error("results/ copied")
	}
	if _, err := os.Stat(filepath.Join(dst, "node", "node_modules")); err == nil {
		t.Error("node_modules copied")
	}
	if b, err := os.ReadFile(filepath.Join(dst, "floor", "main.go")); err != nil || string(b) != "package main" {
		t.Errorf("floor/main.go: %q %v", b, err)
	}
	if err := (Harness{Dir: src}).copyTo(dst); err != nil {
		t.Errorf("copying again over an earlier copy: %v", err)
	}
}
