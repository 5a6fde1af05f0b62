//go:build cgo

package server

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/repository"
)

const ballModel = "../../shared/models/mlagents/3DBall.onnx"

// ML-Agents' 3DBall through TensorFlow Serving's predict: the row form answers the batched
// actions per instance and leaves out the constant outputs, the columnar form has them all,
// and both agree with the v2 API.
func TestPredict3DBall(t *testing.T) {
	rt, _ := nativeRuntime(t, ballModel)
	dir := t.TempDir()
	add3DBall(t, dir)
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	if _, err := repo.Apply(repository.Desired{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if ok, why := mustAcquireReady(t, repo); !ok {
		t.Fatalf("3DBall not ready: %s", why)
	}
	ts := startServer(t, NewRegistry(repo), Options{})

	obs := [][]float64{{0.1, -0.2, 0.05, 0.3, 0.0, 1.0, -0.5, 0.2}, {0, 0, 0, 0, 0, 0, 0, 0}, {-1, 1, -1, 1, 0.5, -0.5, 2, -2}}
	obsJSON, _ := json.Marshal(obs)

	// The v2 API's deterministic actions for the same observations.
	v2 := ts.do(t, "POST", "/v2/models/3DBall/infer", []byte(`{"inputs":[{"name":"obs_0","datatype":"FP32","shape":[3,8],"data":`+
		string(obsJSON)+`}],"outputs":[{"name":"deterministic_continuous_actions"}]}`))
	var v2r struct {
		Outputs []struct {
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	if v2.status != 200 || json.Unmarshal(v2.body, &v2r) != nil || len(v2r.Outputs) != 1 || len(v2r.Outputs[0].Data) != 6 {
		t.Fatalf("v2 infer = %d %s", v2.status, v2.body)
	}
	want := v2r.Outputs[0].Data
	// README's example, to the printed digits.
	if math.Abs(want[0]+0.11887413) > 1e-6 || math.Abs(want[1]+0.14597271) > 1e-6 {
		t.Errorf("deterministic actions %v, want about [-0.11887413 -0.14597271]", want[:2])
	}

	for _, path := range []string{"/v1/models/3DBall:predict", "/v1/models/3DBall/versions/1.0.0:predict", "/v1/models/3DBall/versions/v1.0.0:predict"} {
		r := ts.do(t, "POST", path, []byte(`{"instances":`+string(obsJSON)+`}`))
		var rows struct {
			Predictions []map[string][]float64 `json:"predictions"`
		}
		if r.status != 200 || json.Unmarshal(r.body, &rows) != nil || len(rows.Predictions) != 3 {
			t.Fatalf("%s row = %d %s", path, r.status, r.body)
		}
		for i, p := range rows.Predictions {
			if len(p) != 2 || len(p["continuous_actions"]) != 2 {
				t.Errorf("%s prediction %d = %v, want the two batched outputs", path, i, p)
			}
			if d := p["deterministic_continuous_actions"]; len(d) != 2 || d[0] != want[2*i] || d[1] != want[2*i+1] {
				t.Errorf("%s prediction %d deterministic = %v, want %v", path, i, d, want[2*i:2*i+2])
			}
		}
	}

	r := ts.do(t, "POST", "/v1/models/3DBall:predict", []byte(`{"inputs":{"obs_0":`+string(obsJSON)+`}}`))
	var cols struct {
		Outputs map[string]json.RawMessage `json:"outputs"`
	}
	if r.status != 200 || json.Unmarshal(r.body, &cols) != nil || len(cols.Outputs) != 5 {
		t.Fatalf("columnar = %d %s", r.status, r.body)
	}
	var det [][]float64
	if err := json.Unmarshal(cols.Outputs["deterministic_continuous_actions"], &det); err != nil || len(det) != 3 ||
		det[2][0] != want[4] || det[2][1] != want[5] {
		t.Errorf("columnar deterministic = %s", cols.Outputs["deterministic_continuous_actions"])
	}
	if v := string(cols.Outputs["continuous_action_output_shape"]); v != "[2]" {
		t.Errorf("continuous_action_output_shape = %s, want [2]", v)
	}
	if v := string(cols.Outputs["version_number"]); !strings.HasPrefix(v, "[") {
		t.Errorf("version_number = %s", v)
	}

	// The observation has 8 values.
	r = ts.do(t, "POST", "/v1/models/3DBall:predict", []byte(`{"instances":[[1,2,3,4,5,6,7,8],[1,2,3]]}`))
	if r.status != 400 || !strings.Contains(errorMessage(t, r), `instances[1]: input "obs_0": shape [3] differs from the shape [8] of instances[0]`) {
		t.Errorf("bad instance = %d %s", r.status, r.body)
	}
}

// add3DBall adds ML-Agents' 3DBall as 3DBall@1.0.0 to the repository dir.
func add3DBall(t *testing.T, dir string) {
	t.Helper()
	scalar := func(name string) artifacts.Tensor {
		return artifacts.Tensor{Name: name, Datatype: "FP32", Shape: []int64{1}}
	}
	if _, err := artifacts.Add(dir, artifacts.AddRequest{
		Name: "3DBall", Version: "1.0.0", Model: ballModel, Tool: "server test",
		IO: artifacts.IO{
			Inputs: []artifacts.Tensor{{Name: "obs_0", Datatype: "FP32", Shape: []int64{-1, 8}}},
			Outputs: []artifacts.Tensor{scalar("version_number"), scalar("memory_size"),
				{Name: "continuous_actions", Datatype: "FP32", Shape: []int64{-1, 2}},
				scalar("continuous_action_output_shape"),
				{Name: "deterministic_continuous_actions", Datatype: "FP32", Shape: []int64{-1, 2}}},
		},
	}); err != nil {
		t.Fatal(err)
	}
}

func mustAcquireReady(t *testing.T, repo *repository.Repository) (bool, string) {
	t.Helper()
	v, err := repo.Acquire("3DBall", "")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	return v.Ready()
}
