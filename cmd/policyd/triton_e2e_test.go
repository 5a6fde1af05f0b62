//go:build cgo

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/engines/enginestest"
)

// A Triton model repository built here (two ONNX models with config.pbtxt, every mapped field
// and some that do not map, a model that does not load, an ensemble, a folder that is no
// version) goes through policyctl artifacts import-triton: the good models are imported as
// N.0.0, the others reported, what is not carried over listed; the written config loads
// (config.Load), and the real policyd serves it: /versions/1 (HTTP) and model_version "1"
// (gRPC) name 1.0.0, 3DBall answers as ONNX Runtime does (testdata/reference), and the
// Triton-style stateful model gets its START/END/READY/CORRID controls from the sequence.
func TestImportTritonServes(t *testing.T) {
	dir := t.TempDir()
	ctl := filepath.Join(dir, "policyctl")
	if out, err := exec.Command("go", "build", "-o", ctl, "../policyctl").CombinedOutput(); err != nil {
		t.Fatalf("go build policyctl: %v\n%s", err, out)
	}
	ball, err := os.ReadFile(filepath.Join(repoRoot, "examples/repository/3DBall/1.0.0/model.onnx"))
	if err != nil {
		t.Fatal(err)
	}
	src := filepath.Join(dir, "triton")
	files := map[string][]byte{
		"ball/1/model.onnx": ball, "ball/2/model.onnx": ball, "ball/v3/model.onnx": ball,
		"ball/config.pbtxt": []byte(`
name: "ball"
platform: "onnxruntime_onnx"
max_batch_size: 16
version_policy: { specific: { versions: [ 1, 2 ] } }
input [ { name: "obs_0" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "deterministic_continuous_actions" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { count: 2 kind: KIND_CPU } ]
dynamic_batching {
  preferred_batch_size: [ 4, 8 ]
  max_queue_delay_microseconds: 300
  priority_levels: 2
  default_priority_level: 2
  default_queue_policy { default_timeout_microseconds: 2000000 max_queue_size: 128 }
}
model_warmup [ { name: "zeros" batch_size: 1 inputs { key: "obs_0" value: { data_type: TYPE_FP32 dims: [ 8 ] zero_data: true } } } ]
`),
		"ctl/1/model.onnx": enginestest.SequenceControls(),
		"ctl/config.pbtxt": []byte(`
backend: "onnxruntime"
max_batch_size: 8
sequence_batching {
  max_sequence_idle_microseconds: 30000000
  oldest { max_candidate_sequences: 32 max_queue_delay_microseconds: 500 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ -1, 2.5 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "h_in" output_name: "h_out" data_type: TYPE_FP32 dims: [ 1 ] } ]
}
optimization { graph { level: 1 } }
`),
		"bad/1/model.onnx": []byte("not an onnx model"),
		"ens/1/model.onnx": ball,
		"ens/config.pbtxt": []byte("platform: \"ensemble\"\n"),
	}
	for p, b := range files {
		full := filepath.Join(src, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repo, cfgFile := filepath.Join(dir, "repo"), filepath.Join(dir, "policyd.yaml")
	cmd := exec.Command(ctl, "artifacts", "import-triton", src, "--repository", repo, "--config-out", cfgFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("import-triton: %v (want exit 1: two models not imported)\n%s\n%s", err, out, stderr.String())
	}
	report := stderr.String()
	for _, want := range []string{
		"model bad: version 1: not imported:", "model bad: not imported: no version could be added",
		`model ens: not imported: platform "ensemble"`, "model ball: folder v3: not an integer version; skipped",
		"model ball: model_warmup.", "policyd warms every version up itself",
		"model ctl: optimization.graph.level: not carried over", "2 of 4 models not imported",
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	for _, want := range []string{"added ball@1.0.0", "added ball@2.0.0", "added ctl@1.0.0"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}

	cfg, _, err := config.Load(config.LoadOptions{File: cfgFile, Env: []string{}, DotEnv: config.NoDotEnv})
	if err != nil {
		b, _ := os.ReadFile(cfgFile)
		t.Fatalf("config.Load of the written config: %v\n%s", err, b)
	}
	if len(cfg.Models) != 2 {
		t.Fatalf("models %+v", cfg.Models)
	}
	m := cfg.Models[0]
	if m.Name != "ball" || m.Version != "1.0.0 || 2.0.0" || m.Instances != 2 || strings.Join(m.Backends, ",") != "cpu" ||
		m.Batching.MaxBatchSize != 16 || m.Batching.MaxQueueDelay.Microseconds() != 300 || fmt.Sprint(m.Batching.PreferredBatchSizes) != "[4 8]" ||
		m.Batching.PriorityLevels != 2 || m.Batching.DefaultPriorityLevel != 2 || cfg.Limits.QueueLen != 128 || cfg.Limits.QueueTimeout.Seconds() != 2 {
		t.Errorf("ball: %+v, limits %+v", m, cfg.Limits)
	}
	c := cfg.Models[1].Sequence
	if cfg.Models[1].Name != "ctl" || fmt.Sprint(c.States) != "[h_in:h_out]" || c.IdleTimeout.Seconds() != 30 || c.MaxSequences != 32 ||
		len(c.Controls) != 4 || c.Controls[1] != (config.SequenceControl{Input: "END", Kind: "end", DataType: "FP32", FalseValue: -1, TrueValue: 2.5}) {
		t.Errorf("ctl sequence: %+v", c)
	}

	d := startDaemon(t, "", "--config", cfgFile)
	ref := loadRef(t, "mlagents-3DBall_b1.json")
	for _, v := range []string{"1", "2"} {
		r := d.do(t, "POST", "/v2/models/ball/versions/"+v+"/infer",
			[]byte(`{"inputs":[`+string(ref.Inputs[0])+`],"outputs":[{"name":"deterministic_continuous_actions"}]}`))
		var resp struct {
			ModelVersion string `json:"model_version"`
			Outputs      []struct {
				Data []float64 `json:"data"`
			} `json:"outputs"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &resp) != nil || len(resp.Outputs) != 1 {
			t.Fatalf("versions/%s: %d %s", v, r.status, r.body)
		}
		want := refData(t, ref, "deterministic_continuous_actions")
		if resp.ModelVersion != v+".0.0" || !closeTo(resp.Outputs[0].Data, want, 1e-4) {
			t.Errorf("versions/%s: version %s, %v; ONNX Runtime: %v", v, resp.ModelVersion, resp.Outputs[0].Data, want)
		}
	}
	if r := d.do(t, "GET", "/v2/models/ball/versions/3", nil); r.status != 404 {
		t.Errorf("versions/3 (not imported): %d %s", r.status, r.body)
	}
	conn, client := grpcClient(t, d.grpcAddr)
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	mr, err := client.ModelReady(ctx, &inference.ModelReadyRequest{Name: "ball", Version: "1"})
	if err != nil || !mr.Ready {
		t.Errorf("gRPC ModelReady ball version \"1\": %v %v", mr, err)
	}
	md, err := client.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "ball", Version: "2"})
	if err != nil || fmt.Sprint(md.GetVersions()) == "" {
		t.Errorf("gRPC ModelMetadata ball version \"2\": %v %v", md, err)
	}

	// The Triton-style stateful model: three steps of sequence 42.
	sum := 0.0
	for i, x := range []float64{2, 3, 1} {
		sum += x
		body := fmt.Sprintf(`{"parameters":{"sequence_id":42,"sequence_start":%v,"sequence_end":%v},"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[%v]}],"outputs":[{"name":"y"}]}`, i == 0, i == 2, x)
		r := d.do(t, "POST", "/v2/models/ctl/versions/1/infer", []byte(body))
		var resp struct {
			Outputs []struct {
				Data []float64 `json:"data"`
			} `json:"outputs"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &resp) != nil || len(resp.Outputs) != 1 {
			t.Fatalf("ctl step %d: %d %s", i, r.status, r.body)
		}
		start, end := 0.0, -1.0
		if i == 0 {
			start = 1
		}
		if i == 2 {
			end = 2.5
		}
		if want := []float64{x, start, end, 1, 42, sum}; fmt.Sprint(resp.Outputs[0].Data) != fmt.Sprint(want) {
			t.Errorf("ctl step %d: y = %v, want %v", i, resp.Outputs[0].Data, want)
		}
	}
	if r := d.do(t, "POST", "/v2/models/ctl/infer", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`)); r.status != 400 ||
		!strings.Contains(errorOf(t, r), `missing parameter "sequence_id"`) {
		t.Errorf("ctl without sequence_id: %d %s", r.status, r.body)
	}
}

func loadRef(t *testing.T, file string) reference {
	t.Helper()
	for _, r := range loadReferences(t) {
		if r.file == file {
			return r
		}
	}
	t.Skipf("no testdata/reference/%s", file)
	return reference{}
}

func refData(t *testing.T, ref reference, name string) []float64 {
	t.Helper()
	for _, o := range ref.Outputs {
		if o.Name == name {
			v, err := numbers(o.Data, o.Datatype)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("%s: no output %s", ref.file, name)
	return nil
}

func closeTo(got, want []float64, tol float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > tol {
			return false
		}
	}
	return true
}
