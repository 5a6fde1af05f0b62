//go:build cgo

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/policyd/policyd/engines/enginestest"
)

// TestModelConfigEndToEnd: the real server describes a batched model (mlp-small, batching on
// with priorities) and one whose graph fixes the batch at 1 as Triton's model configuration
// documents, advertises the extension, shows the fixed batch in the metadata, serves it one
// row at a time and answers a batch of 2 with a 400 that says why.
func TestModelConfigEndToEnd(t *testing.T) {
	dir := t.TempDir()
	mlp, _ := filepath.Abs(filepath.Join(repoRoot, "../shared/peers/models/mlp-small.onnx"))
	if _, err := os.Stat(mlp); err != nil {
		t.Skipf("no shared model: %v", err)
	}
	reshape := filepath.Join(dir, "reshape.onnx")
	if err := os.WriteFile(reshape, enginestest.ReshapeToOneRow(), 0o644); err != nil {
		t.Fatal(err)
	}
	ctl := filepath.Join(dir, "policyctl")
	if out, err := exec.Command("go", "build", "-o", ctl, "../policyctl").CombinedOutput(); err != nil {
		t.Fatalf("go build policyctl: %v\n%s", err, out)
	}
	repo := filepath.Join(dir, "models")
	for name, model := range map[string]string{"mlp": mlp, "reshape": reshape} {
		if out, err := exec.Command(ctl, "artifacts", "add", "--repository", repo, "--name", name, "--version", "1.0.0", model).CombinedOutput(); err != nil {
			t.Fatalf("policyctl artifacts add %s: %v\n%s", name, err, out)
		}
	}
	cfg := filepath.Join(dir, "policyd.yaml")
	yaml := `repository: {path: models}
limits: {queue_len: 50, queue_timeout: 1500ms}
batching: {enabled: true, max_batch_size: 8, max_queue_delay: 500us, preferred_batch_sizes: [4, 16], priority_levels: 2}
models:
  - name: mlp
    instances: 2
  - name: reshape
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", "--config", cfg)

	r := d.do(t, "GET", "/v2", nil)
	var meta struct{ Extensions []string }
	if err := json.Unmarshal(r.body, &meta); err != nil || !slices.Contains(meta.Extensions, "model_configuration") {
		t.Errorf("GET /v2 = %d %s", r.status, r.body)
	}

	config := func(path string) map[string]any {
		t.Helper()
		r := d.do(t, "GET", path, nil)
		var c map[string]any
		if err := json.Unmarshal(r.body, &c); err != nil || r.status != 200 {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		return c
	}
	// field reads a path of object keys and list indices from a decoded document.
	field := func(v any, path ...any) any {
		for _, p := range path {
			switch p := p.(type) {
			case string:
				m, _ := v.(map[string]any)
				v = m[p]
			case int:
				l, _ := v.([]any)
				if p >= len(l) {
					return nil
				}
				v = l[p]
			}
		}
		return v
	}
	check := func(c map[string]any, want any, path ...any) {
		t.Helper()
		if got := field(c, path...); !reflect.DeepEqual(got, want) {
			t.Errorf("%s %v = %v, want %v", c["name"], path, got, want)
		}
	}

	for _, path := range []string{"/v2/models/mlp/config", "/v2/models/mlp/versions/1.0.0/config"} {
		c := config(path)
		check(c, "mlp", "name")
		check(c, "onnxruntime_onnx", "platform")
		check(c, "policyd", "backend")
		check(c, 8.0, "max_batch_size")
		check(c, "obs", "input", 0, "name")
		check(c, "TYPE_FP32", "input", 0, "data_type")
		check(c, []any{8.0}, "input", 0, "dims")
		check(c, "action", "output", 0, "name")
		check(c, []any{2.0}, "output", 0, "dims")
		check(c, []any{4.0}, "dynamic_batching", "preferred_batch_size") // 16 is over the max batch size
		check(c, 500.0, "dynamic_batching", "max_queue_delay_microseconds")
		check(c, 2.0, "dynamic_batching", "priority_levels")
		check(c, 2.0, "dynamic_batching", "default_priority_level")
		check(c, 1.5e6, "dynamic_batching", "default_queue_policy", "default_timeout_microseconds")
		check(c, 50.0, "dynamic_batching", "default_queue_policy", "max_queue_size")
		check(c, "KIND_CPU", "instance_group", 0, "kind")
		check(c, 2.0, "instance_group", 0, "count")
		check(c, nil, "sequence_batching")
	}

	c := config("/v2/models/reshape/config")
	check(c, 0.0, "max_batch_size")
	check(c, []any{1.0, 8.0}, "input", 0, "dims")
	check(c, []any{1.0, 8.0}, "output", 0, "dims")
	check(c, nil, "dynamic_batching")
	check(c, 2.0, "instance_group", 0, "count") // max(1, engine.cpu_threads 2 / threads 1)

	r = d.do(t, "GET", "/v2/models/reshape", nil)
	if !strings.Contains(string(r.body), `"inputs":[{"name":"x","datatype":"FP32","shape":[1,8]}]`) {
		t.Errorf("reshape metadata = %d %s", r.status, r.body)
	}
	// One row: y is x, reshaped to [1, 8].
	r = d.do(t, "POST", "/v2/models/reshape/infer", []byte(`{"inputs":[{"name":"x","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`))
	if r.status != 200 || !strings.Contains(string(r.body), `"shape":[1,8],"data":[1,2,3,4,5,6,7,8]`) {
		t.Errorf("reshape batch 1 = %d %s", r.status, r.body)
	}
	r = d.do(t, "POST", "/v2/models/reshape/infer", []byte(`{"inputs":[{"name":"x","shape":[2,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,1,2,3,4,5,6,7,8]}]}`))
	if body := string(r.body); r.status != 400 || !strings.Contains(body, `input \"x\": batch size 2, but the model serves batch 1 only`) {
		t.Errorf("reshape batch 2 = %d %s", r.status, r.body)
	}

	for path, status := range map[string]int{
		"/v2/models/nope/config":                   404,
		"/v2/models/mlp/versions/2.0.0/config":     404,
		"/v2/models/reshape/versions/1.0.0/config": 200,
	} {
		if r := d.do(t, "GET", path, nil); r.status != status {
			t.Errorf("GET %s = %d %s, want %d", path, r.status, r.body, status)
		}
	}
}
