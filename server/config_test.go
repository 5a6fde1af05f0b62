package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// protoFields are the fields of the messages of Triton's model_config.proto (package
// inference, triton-inference-server/common) that a document may carry, by the name the
// protobuf JSON mapping prints with preserve_proto_field_names (Triton's HTTP endpoint), and
// for each field holding a message (or a list of them), that message. Written from the proto,
// not from our output: a field the document has and the proto lacks fails the test.
var protoFields = map[string]map[string]string{
	"ModelConfig": {
		"name": "", "platform": "", "backend": "", "runtime": "", "version_policy": "ModelVersionPolicy",
		"max_batch_size": "", "input": "ModelInput", "output": "ModelOutput", "batch_input": "BatchInput",
		"batch_output": "BatchOutput", "optimization": "ModelOptimizationPolicy",
		"dynamic_batching": "ModelDynamicBatching", "sequence_batching": "ModelSequenceBatching",
		"ensemble_scheduling": "ModelEnsembling", "instance_group": "ModelInstanceGroup",
		"default_model_filename": "", "cc_model_filenames": "", "metric_tags": "", "parameters": "",
		"model_warmup": "ModelWarmup", "model_operations": "ModelOperations",
		"model_transaction_policy": "ModelTransactionPolicy", "model_repository_agents": "ModelRepositoryAgents",
		"response_cache": "ModelResponseCache", "model_metrics": "ModelMetrics",
	},
	"ModelInput": {
		"name": "", "data_type": "", "format": "", "dims": "", "reshape": "ModelTensorReshape",
		"is_shape_tensor": "", "allow_ragged_batch": "", "optional": "", "is_non_linear_format_io": "",
	},
	"ModelOutput": {
		"name": "", "data_type": "", "dims": "", "reshape": "ModelTensorReshape", "label_filename": "",
		"is_shape_tensor": "", "is_non_linear_format_io": "",
	},
	"ModelDynamicBatching": {
		"preferred_batch_size": "", "max_queue_delay_microseconds": "", "preserve_ordering": "",
		"priority_levels": "", "default_priority_level": "", "default_queue_policy": "ModelQueuePolicy",
		"priority_queue_policy": "",
	},
	"ModelQueuePolicy": {
		"timeout_action": "", "default_timeout_microseconds": "", "allow_timeout_override": "", "max_queue_size": "",
	},
	"ModelSequenceBatching": {
		"direct": "StrategyDirect", "oldest": "StrategyOldest", "max_sequence_idle_microseconds": "",
		"control_input": "ControlInput", "state": "State", "iterative_sequence": "",
	},
	"ModelTensorReshape": {"shape": ""},
	"StrategyDirect":     {"max_queue_delay_microseconds": "", "minimum_slot_utilization": ""},
	"StrategyOldest": {
		"max_candidate_sequences": "", "preferred_batch_size": "", "max_queue_delay_microseconds": "", "preserve_ordering": "",
	},
	"ControlInput": {"name": "", "control": "Control"},
	"Control":      {"kind": "", "int32_false_true": "", "fp32_false_true": "", "bool_false_true": "", "data_type": ""},
	"State": {
		"input_name": "", "output_name": "", "data_type": "", "dims": "", "initial_state": "InitialState",
		"use_same_buffer_for_input_output": "", "use_growable_memory": "",
	},
	"InitialState": {"data_type": "", "dims": "", "zero_data": "", "data_file": "", "name": ""},
	"ModelInstanceGroup": {
		"name": "", "kind": "", "count": "", "rate_limiter": "", "gpus": "", "secondary_devices": "",
		"profile": "", "passive": "", "host_policy": "",
	},
}

// protoEnums are the names of the enums the document uses, from the proto.
var protoEnums = map[string][]string{
	"data_type": {"TYPE_INVALID", "TYPE_BOOL", "TYPE_UINT8", "TYPE_UINT16", "TYPE_UINT32", "TYPE_UINT64",
		"TYPE_INT8", "TYPE_INT16", "TYPE_INT32", "TYPE_INT64", "TYPE_FP16", "TYPE_FP32", "TYPE_FP64",
		"TYPE_STRING", "TYPE_BF16"},
	"format":         {"FORMAT_NONE", "FORMAT_NHWC", "FORMAT_NCHW"},
	"kind":           {"KIND_AUTO", "KIND_GPU", "KIND_CPU", "KIND_MODEL"},
	"timeout_action": {"REJECT", "DELAY"},
}

// checkProto fails for every key of the decoded document v (message msg, at path) that the
// proto does not define, every enum value it does not name, and a oneof set twice.
func checkProto(t *testing.T, path, msg string, v any) {
	t.Helper()
	switch v := v.(type) {
	case []any:
		for i, e := range v {
			checkProto(t, path+"["+strconv.Itoa(i)+"]", msg, e)
		}
	case map[string]any:
		fields, ok := protoFields[msg]
		if !ok {
			t.Errorf("%s: message %s not in the test's proto table", path, msg)
			return
		}
		for k, e := range v {
			sub, ok := fields[k]
			if !ok {
				t.Errorf("%s: %s has no field %q", path, msg, k)
				continue
			}
			if names, ok := protoEnums[k]; ok {
				if s, _ := e.(string); !slices.Contains(names, s) {
					t.Errorf("%s.%s = %v: not a value of the enum", path, k, e)
				}
			}
			if sub != "" {
				checkProto(t, path+"."+k, sub, e)
			}
		}
		if msg == "ModelConfig" && v["dynamic_batching"] != nil && v["sequence_batching"] != nil {
			t.Errorf("%s: dynamic_batching and sequence_batching are one oneof; both are set", path)
		}
	default:
		t.Errorf("%s: %s is %T, not an object", path, msg, v)
	}
}

// getJSON decodes a body with a generic decoder (numbers as float64, as any JSON client reads
// them).
func getJSON(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("not a JSON object: %v\n%s", err, b)
	}
	return v
}

// configModels: policy (batched, priorities, two instances), fixed (no batch dimension), rnn
// (sequences whose steps are batched, on two GPUs), batchOne (declares [N, 8], serves batch 1).
func configRegistry(t *testing.T) *fakeRegistry {
	policy := policyModel("1")
	policy.serving = &repository.Serving{
		Backend: "cpu", Instances: 2, Batched: true, MaxBatchSize: 16, MaxQueueDelay: 250 * time.Microsecond,
		PreferredBatchSizes: []int{4, 8, 64}, PriorityLevels: 3, DefaultPriorityLevel: 2, QueueLen: 128,
	}
	unbatched := policyModel("2")
	unbatched.serving = &repository.Serving{Backend: "cpu", Instances: 1, MaxBatchSize: 16, QueueLen: 64}
	rnn := recurrentModel(t, engines.SequenceSpec{IdleTimeout: 30 * time.Second, MaxSequences: 100})
	rnn.serving = &repository.Serving{
		Backend: "cuda", Devices: []int{0, 1}, Instances: 3, Batched: true, MaxBatchSize: 8,
		MaxQueueDelay: time.Millisecond, QueueLen: 64,
		Sequence: &engines.SequenceSpec{States: []engines.StatePair{{Input: "state", Output: "state_out"}},
			IdleTimeout: 30 * time.Second, MaxSequences: 100},
	}
	p3 := policyModel("3")
	p3.reason = "version 3 failed to load"
	jumper := &fakeModel{ // Godot RL's exports: a dummy state_ins [N] echoed to state_outs
		name: "jumper", version: "1", batchable: true,
		inputs: []bridge.IOInfo{{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 4}}, {Name: "state_ins", DType: bridge.Float32, Shape: []int64{-1}}},
		outputs: []bridge.IOInfo{{Name: "output", DType: bridge.Float32, Shape: []int64{-1, 3}}, {Name: "state_outs", DType: bridge.Float32, Shape: []int64{-1}},
			{Name: "version_number", DType: bridge.Float32, Shape: []int64{1}, BatchDim: -1}},
	}
	return newFakeRegistry(policy, unbatched, p3, multiModel(), fixedModel(), brokenModel(), rnn, batchOneModel(), jumper)
}

// batchOneModel is what repository.Version reports for a model whose inputs declare [N, 8] and
// whose graph fixes the batch at 1 (engines.BatchOne): x FP32[1,8] → y FP32[1,8], echo.
func batchOneModel() *fakeModel {
	sig, _ := engines.BatchOne(false, []bridge.IOInfo{{Name: "x", DType: bridge.Float32, Shape: []int64{-1, 8}, BatchDim: -1}})
	return &fakeModel{
		name: "batchone", version: "1", inputs: sig,
		outputs: []bridge.IOInfo{{Name: "y", DType: bridge.Float32, Shape: []int64{1, 8}, BatchDim: -1}},
		run: func(in []bridge.Tensor) []bridge.Tensor {
			return []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 8}, Data: append([]byte(nil), in[0].Data...)}}
		},
	}
}

// TestModelConfigDocument: the documents of a batched model, one without a batch dimension and
// a batched sequence model on GPUs equal the hand-written ones (testdata/config, written from
// model_config.proto), decoded generically and compared value by value, and carry only fields
// and enum values the proto defines; both routes answer the same.
func TestModelConfigDocument(t *testing.T) {
	ts := startServer(t, configRegistry(t), Options{QueueTimeout: 2 * time.Second})
	for _, tc := range []struct{ path, golden string }{
		{"/v2/models/policy/versions/1/config", "policy.json"},
		{"/v2/models/fixed/config", "fixed.json"},
		{"/v2/models/fixed/versions/1/config", "fixed.json"},
		{"/v2/models/rnn/config", "rnn.json"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			r := ts.do(t, "GET", tc.path, nil)
			if r.status != 200 || r.header["Content-Type"] != "application/json" {
				t.Fatalf("GET %s = %d %s %s", tc.path, r.status, r.header["Content-Type"], r.body)
			}
			got := getJSON(t, r.body)
			b, err := os.ReadFile(filepath.Join("testdata", "config", tc.golden))
			if err != nil {
				t.Fatal(err)
			}
			want := getJSON(t, b)
			checkProto(t, "config", "ModelConfig", want) // the golden file itself
			checkProto(t, "config", "ModelConfig", got)
			for k := range want {
				if !reflect.DeepEqual(got[k], want[k]) {
					t.Errorf("%s:\n got %v\nwant %v", k, got[k], want[k])
				}
			}
			for k := range got {
				if _, ok := want[k]; !ok {
					t.Errorf("unexpected field %s: %v", k, got[k])
				}
			}
		})
	}
}

// TestModelConfigBatching: max_batch_size and dims follow what the model batches, and
// dynamic_batching is there only when a batcher forms batches.
func TestModelConfigBatching(t *testing.T) {
	ts := startServer(t, configRegistry(t), Options{})
	get := func(path string) map[string]any {
		t.Helper()
		r := ts.do(t, "GET", path, nil)
		if r.status != 200 {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		c := getJSON(t, r.body)
		checkProto(t, path, "ModelConfig", c)
		return c
	}
	dims := func(c map[string]any, list string, i int) []any {
		return c[list].([]any)[i].(map[string]any)["dims"].([]any)
	}

	// Batching off, model batchable: it still takes a batch dimension up to max_batch_size,
	// but no batcher forms batches.
	c := get("/v2/models/policy/versions/2/config")
	if c["max_batch_size"] != 16.0 || c["dynamic_batching"] != nil || !reflect.DeepEqual(dims(c, "input", 0), []any{4.0}) {
		t.Errorf("batching off: max_batch_size %v, dynamic_batching %v, input dims %v", c["max_batch_size"], c["dynamic_batching"], dims(c, "input", 0))
	}
	// The default version (the highest ready: 2) is the one described without a version.
	if d := get("/v2/models/policy/config"); d["dynamic_batching"] != nil {
		t.Errorf("default version: dynamic_batching %v", d["dynamic_batching"])
	}
	// An input without a batch dimension (d UINT8[2]): the model is not batched, 0, full dims.
	c = get("/v2/models/multi/config")
	if c["max_batch_size"] != 0.0 || !reflect.DeepEqual(dims(c, "input", 0), []any{-1.0, 2.0}) ||
		!reflect.DeepEqual(dims(c, "input", 3), []any{2.0}) || c["dynamic_batching"] != nil {
		t.Errorf("multi: max_batch_size %v, dims %v %v", c["max_batch_size"], dims(c, "input", 0), dims(c, "input", 3))
	}
	in := c["input"].([]any)
	wantTypes := []string{"TYPE_FP32", "TYPE_INT32", "TYPE_BOOL", "TYPE_UINT8", "TYPE_INT64", "TYPE_FP64",
		"TYPE_INT8", "TYPE_UINT64", "TYPE_INT16", "TYPE_UINT16", "TYPE_UINT32"}
	for i, w := range wantTypes {
		if got := in[i].(map[string]any)["data_type"]; got != w {
			t.Errorf("multi input %d: data_type %v, want %s", i, got, w)
		}
	}
	// A tensor that is only its batch ([N]) is dims [1] reshaped to [], as Triton writes it; an
	// output without a batch dimension in a batched model keeps its whole shape.
	c = get("/v2/models/jumper/config")
	if c["max_batch_size"] != 32.0 || !reflect.DeepEqual(dims(c, "input", 1), []any{1.0}) ||
		!reflect.DeepEqual(c["input"].([]any)[1].(map[string]any)["reshape"], map[string]any{"shape": []any{}}) ||
		!reflect.DeepEqual(dims(c, "output", 1), []any{1.0}) ||
		!reflect.DeepEqual(c["output"].([]any)[1].(map[string]any)["reshape"], map[string]any{"shape": []any{}}) ||
		c["input"].([]any)[0].(map[string]any)["reshape"] != nil || !reflect.DeepEqual(dims(c, "output", 2), []any{1.0}) ||
		c["output"].([]any)[2].(map[string]any)["reshape"] != nil {
		t.Errorf("jumper: %v %v", c["input"], c["output"])
	}
	// A graph that fixes the batch at 1: 0, and dims with that 1.
	c = get("/v2/models/batchone/config")
	if c["max_batch_size"] != 0.0 || !reflect.DeepEqual(dims(c, "input", 0), []any{1.0, 8.0}) ||
		!reflect.DeepEqual(dims(c, "output", 0), []any{1.0, 8.0}) {
		t.Errorf("batchone: max_batch_size %v, dims %v → %v", c["max_batch_size"], dims(c, "input", 0), dims(c, "output", 0))
	}
}

// TestModelConfigErrors: an unknown model or version is 404, a version that is not ready 503
// with the reason, as on the metadata route; a method other than GET is 405.
func TestModelConfigErrors(t *testing.T) {
	ts := startServer(t, configRegistry(t), Options{})
	for _, tc := range []struct {
		path   string
		status int
		msg    string
	}{
		{"/v2/models/nope/config", 404, `"nope"`},
		{"/v2/models/policy/versions/9/config", 404, `"9"`},
		{"/v2/models/policy/versions/3/config", 503, "version 3 failed to load"},
		{"/v2/models/broken/config", 503, `graph output "y" is not produced`},
	} {
		r := ts.do(t, "GET", tc.path, nil)
		if msg := errorMessage(t, r); r.status != tc.status || !strings.Contains(msg, tc.msg) {
			t.Errorf("GET %s = %d %q, want %d containing %q", tc.path, r.status, msg, tc.status, tc.msg)
		}
	}
	if r := ts.do(t, "POST", "/v2/models/policy/config", []byte("{}")); r.status != 405 {
		t.Errorf("POST config = %d %s", r.status, r.body)
	}
}

// TestBatchOneModel: a model whose graph fixes the batch at 1 shows dimension 0 as 1 in its
// metadata, serves one row, and answers a larger batch 400 naming the input, the batch and
// that it serves batch 1 only (binary and TF-Serving's predict alike).
func TestBatchOneModel(t *testing.T) {
	ts := startServer(t, configRegistry(t), Options{})
	r := ts.do(t, "GET", "/v2/models/batchone", nil)
	meta := getJSON(t, r.body)
	in := meta["inputs"].([]any)[0].(map[string]any)
	if r.status != 200 || !reflect.DeepEqual(in["shape"], []any{1.0, 8.0}) {
		t.Errorf("metadata = %d %s", r.status, r.body)
	}
	one := `{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`
	if r := ts.do(t, "POST", "/v2/models/batchone/infer", []byte(one)); r.status != 200 {
		t.Errorf("batch 1 = %d %s", r.status, r.body)
	}
	two := `{"inputs":[{"name":"x","shape":[2,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8]}]}`
	r = ts.do(t, "POST", "/v2/models/batchone/infer", []byte(two))
	msg := errorMessage(t, r)
	if r.status != 400 || !strings.Contains(msg, `input "x"`) || !strings.Contains(msg, "batch size 2") || !strings.Contains(msg, "serves batch 1 only") {
		t.Errorf("batch 2 = %d %q", r.status, msg)
	}
	r = ts.do(t, "POST", "/v1/models/batchone:predict", []byte(`{"inputs":{"x":[[1,2,3,4,5,6,7,8],[1,2,3,4,5,6,7,8]]}}`))
	if msg := errorMessage(t, r); r.status != 400 || !strings.Contains(msg, "batch size 2") || !strings.Contains(msg, "serves batch 1 only") {
		t.Errorf("predict batch 2 = %d %q", r.status, msg)
	}
	// A wrong non-batch dimension is still named as the shape it is.
	r = ts.do(t, "POST", "/v2/models/batchone/infer", []byte(`{"inputs":[{"name":"x","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`))
	if msg := errorMessage(t, r); r.status != 400 || !strings.Contains(msg, "expected shape [1,8], got [2,4]") {
		t.Errorf("shape [2,4] = %d %q", r.status, msg)
	}
}
