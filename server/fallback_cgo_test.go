//go:build cgo

package server

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/repository"
)

const mlpSmallModel = "../../shared/peers/models/mlp-small.onnx"

// Through a real repository and engine (mlp-small: obs FP32[-1,8] → action FP32[-1,2]): the
// constant declared in the ModelSpec answers a request past its deadline, marked; a feasible
// deadline gets the model's answer, unmarked; a constant of the wrong width leaves the
// version unavailable with the reason.
func TestNativeDeadlineFallback(t *testing.T) {
	rt, onnx := nativeRuntime(t, mlpSmallModel)
	io := engineIO(t, rt, onnx)
	dir := t.TempDir()
	for _, name := range []string{"pi", "wide"} {
		if _, err := artifacts.Add(dir, artifacts.AddRequest{Name: name, Version: "1.0.0", Model: mlpSmallModel, Tool: "server test", IO: io}); err != nil {
			t.Fatal(err)
		}
	}
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	if _, err := repo.Apply(repository.Desired{Dir: dir, Batching: true, Models: []repository.ModelSpec{
		{Name: "pi", ActionFallback: &repository.ActionFallback{Kind: repository.FallbackConstant, Constant: map[string][]float64{"action": {0.5, -0.5}}}},
		{Name: "wide", ActionFallback: &repository.ActionFallback{Kind: repository.FallbackConstant, Constant: map[string][]float64{"action": {0.5, -0.5, 1}}}},
	}}); err != nil {
		t.Logf("Apply: %v", err)
	}
	ts := startServer(t, NewRegistry(repo), Options{})
	body := func(params string) []byte {
		return []byte(`{"parameters":{` + params + `},"inputs":[{"name":"obs","datatype":"FP32","shape":[2,8],"data":[1,2,3,4,5,6,7,8,8,7,6,5,4,3,2,1]}]}`)
	}
	status, h, b := ts.postDeadline(t, "/v2/models/pi/infer", string(body(`"deadline_us":1`)), nil)
	if status != 200 || h.Get(FallbackHeader) != "constant" {
		t.Fatalf("past its deadline: %d %v %s", status, h, b)
	}
	r := decodeDeadline(t, b)
	if r.Parameters["fallback"] != "constant" || !slices.Equal(r.Outputs[0].Shape, []int64{2, 2}) || !slices.Equal(r.Outputs[0].Data, []float32{0.5, -0.5, 0.5, -0.5}) {
		t.Errorf("fallback answer %s", b)
	}
	status, h, b = ts.postDeadline(t, "/v2/models/pi/infer", string(body(`"deadline_us":1000000`)), nil)
	r = decodeDeadline(t, b)
	if status != 200 || h.Get(FallbackHeader) != "" || r.Parameters != nil || len(r.Outputs) != 1 || len(r.Outputs[0].Data) != 4 {
		t.Errorf("feasible deadline: %d %v %s", status, h, b)
	}
	status, _, b = ts.postDeadline(t, "/v2/models/wide/infer", string(body(`"deadline_us":1`)), nil)
	var e2 struct{ Error string }
	json.Unmarshal(b, &e2)
	if status != 503 || !strings.Contains(e2.Error, `output "action": 3 values, one row of shape [-1 2] of FP32 holds 2`) {
		t.Errorf("a constant of the wrong width: %d %s", status, b)
	}
}
