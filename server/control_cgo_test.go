//go:build cgo

package server

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
	"github.com/policyd/policyd/repository"
	"google.golang.org/grpc/codes"
)

// controlSpec is the sequence spec of enginestest.SequenceControls: its four controls (END
// with values of its own) next to the state pair h_in → h_out.
func controlSpec() *engines.SequenceSpec {
	return &engines.SequenceSpec{
		States: []engines.StatePair{{Input: "h_in", Output: "h_out"}},
		Controls: []engines.Control{
			{Input: "START", Kind: engines.ControlStart, DType: bridge.Int32, False: 0, True: 1},
			{Input: "END", Kind: engines.ControlEnd, DType: bridge.Float32, False: -1, True: 2.5},
			{Input: "READY", Kind: engines.ControlReady, DType: bridge.Bool, False: 0, True: 1},
			{Input: "CORRID", Kind: engines.ControlCorrID, DType: bridge.Uint64},
		},
	}
}

// controlRepo adds enginestest.SequenceControls as model "ctl" 1.0.0 and serves it with spec
// (batched with a queue delay when batching).
func controlRepo(t *testing.T, spec *engines.SequenceSpec, batching bool) (*repository.Repository, string) {
	t.Helper()
	rt, _ := nativeRuntime(t, "")
	dir, src := t.TempDir(), filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(src, enginestest.SequenceControls(), 0o644); err != nil {
		t.Fatal(err)
	}
	io := engineIO(t, rt, enginestest.SequenceControls())
	if _, err := artifacts.Add(dir, artifacts.AddRequest{Name: "ctl", Version: "1.0.0", Model: src, Tool: "server test", IO: io}); err != nil {
		t.Fatal(err)
	}
	repo := repository.NewRepository(rt, nil)
	t.Cleanup(func() { repo.Close() })
	ms := repository.ModelSpec{Name: "ctl", Sequence: spec, Instances: 1}
	if batching {
		ms.Batching = repository.BatchingSpec{MaxBatchSize: 16, MaxQueueDelay: 20 * time.Millisecond}
	}
	rep, err := repo.Apply(repository.Desired{Dir: dir, Batching: batching, Models: []repository.ModelSpec{ms}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) > 0 {
		t.Fatalf("load: %+v", rep.Failed)
	}
	return repo, dir
}

// wantRow is the row of y the model computes for a step: x, then the controls as the spec
// fills them, then the sequence's running sum.
func wantRow(x float32, start, end bool, id uint64, sum float32) []float32 {
	s, e := float32(0), float32(-1)
	if start {
		s = 1
	}
	if end {
		e = 2.5
	}
	return []float32{x, s, e, 1, float32(id), sum}
}

// A Triton-style stateful model (START/END/READY/CORRID control inputs and a state pair)
// serves unchanged over HTTP and gRPC, one request at a time and batched (each row gets its
// own control values); a client that sends a control, or no sequence_id, gets a 400 saying
// what is wrong.
func TestSequenceControlsServe(t *testing.T) {
	for _, batching := range []bool{false, true} {
		t.Run(fmt.Sprintf("batching=%v", batching), func(t *testing.T) {
			repo, _ := controlRepo(t, controlSpec(), batching)
			reg := NewRegistry(repo)
			ts := startServer(t, reg, Options{})
			gs := startGRPC(t, reg, Options{})

			httpStep := func(id string, x float32, start, end bool) ([]float32, int, string) {
				body := fmt.Sprintf(`{"parameters":{"sequence_id":%s,"sequence_start":%v,"sequence_end":%v},"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[%v]}],"outputs":[{"name":"y"}]}`, id, start, end, x)
				r := ts.do(t, "POST", "/v2/models/ctl/infer", []byte(body))
				if r.status != 200 {
					return nil, r.status, string(r.body)
				}
				var out struct {
					Outputs []struct {
						Data []float32 `json:"data"`
					} `json:"outputs"`
				}
				if err := json.Unmarshal(r.body, &out); err != nil || len(out.Outputs) != 1 {
					t.Fatalf("%s: %v", r.body, err)
				}
				return out.Outputs[0].Data, 200, ""
			}
			grpcStep := func(id uint64, x float32, start, end bool) []float32 {
				req := &inference.ModelInferRequest{ModelName: "ctl",
					Parameters: map[string]*inference.InferParameter{
						"sequence_id":    {ParameterChoice: &inference.InferParameter_Uint64Param{Uint64Param: id}},
						"sequence_start": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: start}},
						"sequence_end":   {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: end}},
					},
					Inputs:  []*inference.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 1}, Contents: &inference.InferTensorContents{Fp32Contents: []float32{x}}}},
					Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "y"}},
				}
				resp, err := gs.client.ModelInfer(grpcCtx(t), req)
				if err != nil {
					t.Fatalf("gRPC step of %d: %v", id, err)
				}
				if len(resp.RawOutputContents) == 1 {
					return bytesF32(resp.RawOutputContents[0])
				}
				return resp.Outputs[0].GetContents().GetFp32Contents()
			}
			check := func(what string, got, want []float32) {
				t.Helper()
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s: y = %v, want %v", what, got, want)
				}
			}

			// One sequence at a time, HTTP then gRPC, three steps each.
			xs := []float32{2, 3, 1}
			sum := float32(0)
			for i, x := range xs {
				sum += x
				got, status, body := httpStep("7", x, i == 0, i == 2)
				if status != 200 {
					t.Fatalf("HTTP step %d: %d %s", i, status, body)
				}
				check(fmt.Sprintf("HTTP step %d", i), got, wantRow(x, i == 0, i == 2, 7, sum))
			}
			sum = 0
			for i, x := range xs {
				sum += x
				check(fmt.Sprintf("gRPC step %d", i), grpcStep(1<<40, x, i == 0, i == 2), wantRow(x, i == 0, i == 2, 1<<40, sum))
			}

			// Sixteen sequences at once, half over each protocol: with the batcher their steps
			// share batches, and every row holds its own sequence's values.
			var wg sync.WaitGroup
			for s := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					id := uint64(100 + s)
					sum := float32(0)
					for i := range 4 {
						x := float32(s*10 + i)
						sum += x
						var got []float32
						if s%2 == 0 {
							var status int
							var body string
							if got, status, body = httpStep(fmt.Sprint(id), x, i == 0, i == 3); status != 200 {
								t.Errorf("sequence %d step %d: %d %s", id, i, status, body)
								return
							}
						} else {
							got = grpcStep(id, x, i == 0, i == 3)
						}
						check(fmt.Sprintf("sequence %d step %d", id, i), got, wantRow(x, i == 0, i == 3, id, sum))
					}
				}()
			}
			wg.Wait()
			if batching {
				v, err := repo.Acquire("ctl", "")
				if err != nil {
					t.Fatal(err)
				}
				st := v.Stats().Snapshot()
				v.Release()
				// Whether steps shared a batch depends on timing here; engines'
				// TestControlsBatched forces it and checks each row.
				t.Logf("batched: %d executions for %d inferences", st.ExecutionCount, st.InferenceCount)
			}

			// The server owns the controls; every request is a step of a sequence.
			for _, c := range []struct{ body, want string }{
				{`{"parameters":{"sequence_id":9,"sequence_start":true},"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]},{"name":"START","datatype":"INT32","shape":[1,1],"data":[1]}]}`,
					`input \"START\" is a sequence control input: the server fills it`},
				{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]},{"name":"START","datatype":"INT32","shape":[1,1],"data":[1]}]}`,
					`input \"START\" is a sequence control input`},
				{`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`,
					`missing parameter \"sequence_id\": the model's sequence control inputs \"START\" (start), \"END\" (end), \"READY\" (ready), \"CORRID\" (corrid)`},
				{`{"parameters":{"sequence_id":"seven","sequence_start":true},"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}`,
					`CORRID control input \"CORRID\" is UINT64: sequence_id must be an integer`},
			} {
				r := ts.do(t, "POST", "/v2/models/ctl/infer", []byte(c.body))
				if r.status != 400 || !strings.Contains(string(r.body), c.want) {
					t.Errorf("%s:\n%d %s, want 400 with %s", c.body, r.status, r.body, c.want)
				}
			}
			_, err := gs.client.ModelInfer(grpcCtx(t), &inference.ModelInferRequest{ModelName: "ctl",
				Inputs: []*inference.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 1}, Contents: &inference.InferTensorContents{Fp32Contents: []float32{1}}}}})
			wantCode(t, err, codes.InvalidArgument, `missing parameter "sequence_id"`)
			_, err = gs.client.ModelInfer(grpcCtx(t), &inference.ModelInferRequest{ModelName: "ctl",
				Parameters: map[string]*inference.InferParameter{"sequence_id": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: 3}}, "sequence_start": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: true}}},
				Inputs: []*inference.ModelInferRequest_InferInputTensor{
					{Name: "x", Datatype: "FP32", Shape: []int64{1, 1}, Contents: &inference.InferTensorContents{Fp32Contents: []float32{1}}},
					{Name: "READY", Datatype: "BOOL", Shape: []int64{1, 1}, Contents: &inference.InferTensorContents{BoolContents: []bool{true}}}}})
			wantCode(t, err, codes.InvalidArgument, `input "READY" is a sequence control input`)

			// The configuration document lists the controls as Triton's control_input.
			cfg, err := gs.client.ModelConfig(grpcCtx(t), &inference.ModelConfigRequest{Name: "ctl"})
			if err != nil {
				t.Fatal(err)
			}
			ci := cfg.Config.GetSequenceBatching().GetControlInput()
			if len(ci) != 4 || ci[0].Name != "START" || ci[0].Control[0].Kind != inference.ModelSequenceBatching_Control_CONTROL_SEQUENCE_START ||
				fmt.Sprint(ci[0].Control[0].Int32FalseTrue) != "[0 1]" || fmt.Sprint(ci[1].Control[0].Fp32FalseTrue) != "[-1 2.5]" ||
				fmt.Sprint(ci[2].Control[0].BoolFalseTrue) != "[false true]" || ci[3].Control[0].DataType != inference.DataType_TYPE_UINT64 {
				t.Errorf("control_input = %v", ci)
			}
		})
	}
}

// A control the model lacks, of another datatype or of another shape leaves the version
// UNAVAILABLE with the reason.
func TestSequenceControlsSignature(t *testing.T) {
	repo, dir := controlRepo(t, controlSpec(), false)
	for _, c := range []struct {
		ctl  engines.Control
		want string
	}{
		{engines.Control{Input: "SEQ_START", Kind: engines.ControlStart, DType: bridge.Int32, True: 1}, `control input "SEQ_START" (start) is not an input of the model`},
		{engines.Control{Input: "START", Kind: engines.ControlStart, DType: bridge.Float32, True: 1}, `control input "START" (start): the model's datatype is INT32, the config says FP32`},
		{engines.Control{Input: "CORRID", Kind: engines.ControlCorrID, DType: bridge.Int64}, `control input "CORRID" (corrid): the model's datatype is UINT64, the config says INT64`},
	} {
		spec := &engines.SequenceSpec{Controls: []engines.Control{c.ctl}}
		rep, err := repo.Apply(repository.Desired{Dir: dir, Models: []repository.ModelSpec{{Name: "ctl", Sequence: spec}}})
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0].Reason, c.want) {
			t.Errorf("%+v: failed %+v, want %q", c.ctl, rep.Failed, c.want)
		}
	}
}
