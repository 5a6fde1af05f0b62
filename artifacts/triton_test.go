package artifacts

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeTriton(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, body := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// Every mapped field of config.pbtxt lands in its policyd setting; everything else set is
// listed, as are skipped folders; a model that cannot be imported says why, the others scan.
func TestScanTriton(t *testing.T) {
	src := t.TempDir()
	writeTriton(t, src, map[string]string{
		"ball/1/model.onnx": "onnx", "ball/2/model.onnx": "onnx", "ball/3/model.onnx": "onnx",
		"ball/latest/model.onnx": "onnx", "ball/4/README": "no model",
		"ball/config.pbtxt": `
name: "ball"
platform: "onnxruntime_onnx"
max_batch_size: 32
version_policy: { latest: { num_versions: 2 } }
input [ { name: "obs_0" data_type: TYPE_FP32 dims: [ 8 ] } ]
output [ { name: "actions" data_type: TYPE_FP32 dims: [ 2 ] } ]
instance_group [ { count: 2 kind: KIND_GPU gpus: [ 0, 1 ] }, { count: 1 kind: KIND_GPU gpus: [ 1 ] } ]
dynamic_batching {
  preferred_batch_size: [ 8, 16 ]
  max_queue_delay_microseconds: 250
  priority_levels: 3
  default_priority_level: 2
  preserve_ordering: true
  default_queue_policy { timeout_action: DELAY default_timeout_microseconds: 5000 max_queue_size: 100 allow_timeout_override: true }
}
optimization { execution_accelerators { gpu_execution_accelerator: [ { name: "tensorrt" } ] } }
model_warmup [ { name: "w" batch_size: 1 inputs { key: "obs_0" value: { data_type: TYPE_FP32 dims: [ 8 ] zero_data: true } } } ]
`,
		"rnn/1/model.onnx": "onnx",
		"rnn/config.pbtxt": `
backend: "onnxruntime"
max_batch_size: 8
version_policy: { specific: { versions: [ 1 ] } }
sequence_batching {
  max_sequence_idle_microseconds: 5000000
  oldest { max_candidate_sequences: 64 preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 100 }
  control_input [
    { name: "START" control [ { kind: CONTROL_SEQUENCE_START int32_false_true: [ 0, 1 ] } ] },
    { name: "END" control [ { kind: CONTROL_SEQUENCE_END fp32_false_true: [ -1, 2.5 ] } ] },
    { name: "READY" control [ { kind: CONTROL_SEQUENCE_READY bool_false_true: [ false, true ] } ] },
    { name: "CORRID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_UINT64 } ] },
    { name: "CID" control [ { kind: CONTROL_SEQUENCE_CORRID data_type: TYPE_STRING } ] }
  ]
  state [ { input_name: "h_in" output_name: "h_out" data_type: TYPE_FP32 dims: [ 1 ] initial_state: { zero_data: true name: "z" data_type: TYPE_FP32 dims: [ 1 ] } } ]
}
instance_group [ { kind: KIND_CPU } ]
`,
		"plain/7/model.onnx": "onnx", "plain/9/model.onnx": "onnx",
		"ens/1/model.onnx":    "x",
		"ens/config.pbtxt":    `platform: "ensemble"` + "\n" + `ensemble_scheduling { step [ { model_name: "a" model_version: -1 } ] }`,
		"trt/1/model.plan":    "x",
		"trt/config.pbtxt":    `platform: "tensorrt_plan"`,
		"broken/1/model.onnx": "onnx",
		"broken/config.pbtxt": "name: \"broken\"\nmax_batch_size: 4\ndynamic_batching { max_queue_delay: 5 }\n",
		"empty/config.pbtxt":  `max_batch_size: 1`,
	})
	models, err := ScanTriton(src)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]TritonModel{}
	for _, m := range models {
		by[m.Name] = m
	}
	if len(by) != 7 {
		t.Fatalf("models %v", models)
	}

	ball := by["ball"]
	if ball.Err != nil {
		t.Fatal(ball.Err)
	}
	if len(ball.Versions) != 3 || ball.Versions[2].Version != "3.0.0" || !strings.HasSuffix(ball.Versions[0].Model, filepath.Join("ball", "1", "model.onnx")) {
		t.Errorf("ball versions %+v", ball.Versions)
	}
	s := ball.Settings
	if s.Version != ">=2.0.0" || s.MaxBatchSize != 32 || s.MaxQueueDelay != 250*time.Microsecond ||
		len(s.PreferredBatchSizes) != 2 || s.PreferredBatchSizes[1] != 16 || s.PriorityLevels != 3 || s.DefaultPriorityLevel != 2 ||
		s.Instances != 3 || strings.Join(s.Devices, ",") != "0,1" || s.QueueTimeout != 5*time.Millisecond || s.QueueLen != 100 {
		t.Errorf("ball settings %+v", s)
	}
	notes := strings.Join(ball.NotCarried, "\n")
	for _, want := range []string{
		"folder latest: not an integer version; skipped", "version 4: no model.onnx; skipped",
		"dynamic_batching.preserve_ordering: not carried over", "dynamic_batching.default_queue_policy.timeout_action: not carried over",
		"optimization.execution_accelerators.gpu_execution_accelerator.name: not carried over (TensorRT/OpenVINO accelerators",
		"model_warmup.", "policyd warms every version up itself", "instance_group: 2 groups merged into instances: 3",
	} {
		if !strings.Contains(notes, want) {
			t.Errorf("ball: not carried lacks %q:\n%s", want, notes)
		}
	}

	rnn := by["rnn"]
	s = rnn.Settings
	if rnn.Err != nil || s.Version != "1.0.0" || !s.Sequence || s.IdleTimeout != 5*time.Second || s.MaxSequences != 64 ||
		s.MaxQueueDelay != 100*time.Microsecond || len(s.PreferredBatchSizes) != 1 || strings.Join(s.States, ",") != "h_in:h_out" ||
		strings.Join(s.Backends, ",") != "cpu" || s.Instances != 1 {
		t.Errorf("rnn %v settings %+v", rnn.Err, s)
	}
	want := []TritonControl{
		{Input: "START", Kind: "start", DataType: "INT32", False: 0, True: 1},
		{Input: "END", Kind: "end", DataType: "FP32", False: -1, True: 2.5},
		{Input: "READY", Kind: "ready", DataType: "BOOL", False: 0, True: 1},
		{Input: "CORRID", Kind: "corrid", DataType: "UINT64"},
	}
	if len(s.Controls) != len(want) {
		t.Fatalf("rnn controls %+v", s.Controls)
	}
	for i := range want {
		if s.Controls[i] != want[i] {
			t.Errorf("control %d = %+v, want %+v", i, s.Controls[i], want[i])
		}
	}
	if notes := strings.Join(rnn.NotCarried, "\n"); !strings.Contains(notes, `control_input "CID": CORRID of TYPE_STRING`) {
		t.Errorf("rnn: not carried %s", notes)
	}

	// No config: Triton's default policy (latest 1) and nothing else.
	if p := by["plain"]; p.Err != nil || p.Settings.Version != ">=9.0.0" || len(p.NotCarried) != 0 {
		t.Errorf("plain: %+v", p)
	}
	for name, want := range map[string]string{
		"ens":    `platform "ensemble" backend "": only ONNX models`,
		"trt":    `platform "tensorrt_plan"`,
		"broken": filepath.Join("broken", "config.pbtxt") + ": (line 3:20): unknown field: max_queue_delay",
		"empty":  "no version folder <N>/model.onnx",
	} {
		if err := by[name].Err; err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
}
