//go:build cgo

package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

const hallwayModel = "../../shared/models/mlagents/Hallway.onnx"

// ML-Agents' Hallway is recurrent (recurrent_in → recurrent_out, [-1,1,128]): three steps
// through the sequence API give the same outputs, state included, as three steps where the
// client carries the state itself. A signature mismatch leaves the version UNAVAILABLE.
func TestSequenceHallway(t *testing.T) {
	rt, onnx := nativeRuntime(t, hallwayModel)
	io := engineIO(t, rt, onnx)
	dir := t.TempDir()
	if _, err := artifacts.Add(dir, artifacts.AddRequest{Name: "hallway", Version: "1.0.0", Model: hallwayModel, Tool: "server test", IO: io}); err != nil {
		t.Fatal(err)
	}
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	spec := &engines.SequenceSpec{States: []engines.StatePair{{Input: "recurrent_in", Output: "recurrent_out"}}}
	if _, err := repo.Apply(repository.Desired{Dir: dir, Batching: true, Models: []repository.ModelSpec{{Name: "hallway", Sequence: spec}}}); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, NewRegistry(repo), Options{})

	obs := func(step int) string {
		o0, o1 := make([]float32, 105), []float32{float32(step), 0.5, -0.25}
		for i := range o0 {
			o0[i] = float32((i*7+step*13)%17) / 17
		}
		b0, _ := json.Marshal(o0)
		b1, _ := json.Marshal(o1)
		return fmt.Sprintf(`{"name":"obs_0","datatype":"FP32","shape":[1,105],"data":%s},{"name":"obs_1","datatype":"FP32","shape":[1,3],"data":%s},{"name":"action_masks","datatype":"FP32","shape":[1,5],"data":[1,1,1,1,1]}`, b0, b1)
	}
	// Only the deterministic outputs: discrete_actions is sampled.
	const outs = `"outputs":[{"name":"recurrent_out"},{"name":"memory_size"}]`
	type resp struct {
		Outputs []struct {
			Name string          `json:"name"`
			Data json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	step := func(body string) map[string]string {
		t.Helper()
		r := ts.do(t, "POST", "/v2/models/hallway/infer", []byte(body))
		var out resp
		if r.status != 200 || json.Unmarshal(r.body, &out) != nil {
			t.Fatalf("%d %s", r.status, r.body)
		}
		m := map[string]string{}
		for _, o := range out.Outputs {
			m[o.Name] = string(o.Data)
		}
		return m
	}
	state := "[" + strings.TrimSuffix(strings.Repeat("0,", 128), ",") + "]"
	for i := range 3 {
		params := fmt.Sprintf(`"sequence_id":"hallway-1","sequence_start":%v,"sequence_end":%v`, i == 0, i == 2)
		seq := step(`{"parameters":{` + params + `},"inputs":[` + obs(i) + `],` + outs + `}`)
		own := step(`{"inputs":[` + obs(i) + `,{"name":"recurrent_in","datatype":"FP32","shape":[1,1,128],"data":` + state + `}],` + outs + `}`)
		if seq["recurrent_out"] != own["recurrent_out"] || seq["memory_size"] != own["memory_size"] {
			t.Fatalf("step %d: the sequence API and the client's own state differ:\n%v\n%v", i, seq, own)
		}
		if seq["recurrent_out"] == state {
			t.Errorf("step %d: the state did not change", i)
		}
		state = own["recurrent_out"]
	}

	// Names the model lacks: UNAVAILABLE with the reason.
	bad := &engines.SequenceSpec{States: []engines.StatePair{{Input: "h_in", Output: "h_out"}}}
	rep, err := repo.Apply(repository.Desired{Dir: dir, Models: []repository.ModelSpec{{Name: "hallway", Sequence: bad}}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0].Reason, `state input "h_in" is not an input of the model`) {
		t.Errorf("mismatch: %+v", rep.Failed)
	}
}
