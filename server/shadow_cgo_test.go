//go:build cgo

package server

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

const mlpMedModel = "../../shared/peers/models/mlp-med.onnx"

// perturbONNX returns a copy of an ONNX model whose FLOAT initializers (raw_data or
// float_data) are scaled element by element by 1 + scale·((i mod 7) − 3)/3: the same network,
// other weights — a second export of the policy. The bytes change in place (no length
// changes), so the protobuf stays valid without re-encoding.
func perturbONNX(t testing.TB, model []byte, scale float64) []byte {
	t.Helper()
	out := append([]byte(nil), model...)
	n := 0
	scaleAt := func(b []byte) {
		for i := 0; i+4 <= len(b); i += 4 {
			f := math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))
			f *= float32(1 + scale*float64((i/4)%7-3)/3)
			binary.LittleEndian.PutUint32(b[i:], math.Float32bits(f))
		}
		n += len(b) / 4
	}
	// fields walks message b (at offset off of out), calling fn for each length-delimited field.
	var fields func(b []byte, off int, fn func(num protowire.Number, v []byte, off int))
	fields = func(b []byte, off int, fn func(num protowire.Number, v []byte, off int)) {
		for pos := 0; pos < len(b); {
			num, typ, n := protowire.ConsumeTag(b[pos:])
			if n < 0 {
				t.Fatalf("bad ONNX: %v", protowire.ParseError(n))
			}
			pos += n
			if typ == protowire.BytesType {
				v, m := protowire.ConsumeBytes(b[pos:])
				if m < 0 {
					t.Fatalf("bad ONNX: %v", protowire.ParseError(m))
				}
				fn(num, v, off+pos+m-len(v))
				pos += m
				continue
			}
			m := protowire.ConsumeFieldValue(num, typ, b[pos:])
			if m < 0 {
				t.Fatalf("bad ONNX: %v", protowire.ParseError(m))
			}
			pos += m
		}
	}
	tensorType := func(b []byte) uint64 {
		for pos := 0; pos < len(b); {
			num, typ, n := protowire.ConsumeTag(b[pos:])
			pos += n
			if num == 2 && typ == protowire.VarintType {
				v, _ := protowire.ConsumeVarint(b[pos:])
				return v
			}
			pos += protowire.ConsumeFieldValue(num, typ, b[pos:])
		}
		return 0
	}
	fields(model, 0, func(num protowire.Number, graph []byte, goff int) {
		if num != 7 { // ModelProto.graph
			return
		}
		fields(graph, goff, func(num protowire.Number, tensor []byte, toff int) {
			if num != 5 || tensorType(tensor) != 1 { // GraphProto.initializer, FLOAT
				return
			}
			fields(tensor, toff, func(num protowire.Number, v []byte, voff int) {
				if num == 9 || num == 4 { // raw_data, float_data (packed)
					scaleAt(out[voff : voff+len(v)])
				}
			})
		})
	})
	if n == 0 {
		t.Fatal("perturbONNX: no FLOAT initializer")
	}
	return out
}

// shadowRepo loads each model file as a version of model name (versions 1.0.0, 1.1.0, ...)
// into a repository on rt, with the sequence spec when set.
func shadowRepo(t testing.TB, rt *bridge.Runtime, name string, seq *engines.SequenceSpec, models ...[]byte) *repository.Repository {
	t.Helper()
	dir := t.TempDir()
	for i, onnx := range models {
		io := engineIO(t, rt, onnx)
		path := filepath.Join(t.TempDir(), "model.onnx")
		if err := os.WriteFile(path, onnx, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := artifacts.Add(dir, artifacts.AddRequest{Name: name, Version: fmt.Sprintf("1.%d.0", i), Model: path, Tool: "shadow test", IO: io}); err != nil {
			t.Fatal(err)
		}
	}
	repo := repository.NewRepository(rt, nil)
	t.Cleanup(func() { repo.Close() })
	if _, err := repo.Apply(repository.Desired{Dir: dir, Batching: true, Models: []repository.ModelSpec{{Name: name, Sequence: seq}}}); err != nil {
		t.Fatal(err)
	}
	return repo
}

// runDirect runs inputs on a version of the repository, not through the server, and returns
// a copy of its outputs by name.
func runDirect(t *testing.T, repo *repository.Repository, model, version string, inputs []bridge.Tensor) map[string]bridge.Tensor {
	t.Helper()
	v, err := repo.Acquire(model, version)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	outs := map[string]bridge.Tensor{}
	err = v.Do(context.Background(), inputs, engines.RunOptions{}, func(o []bridge.Tensor) error {
		for i, info := range v.Outputs() {
			outs[info.Name] = bridge.Tensor{DType: o[i].DType, Shape: append([]int64(nil), o[i].Shape...), Data: append([]byte(nil), o[i].Data...)}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return outs
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// offline is the divergence of floating values computed here, the way docs/rollout.md
// defines it: mean and max |a−b|, max |a−b|/max(|a|,|b|).
type offline struct {
	n             int
	sum, max, rel float64
}

func (o *offline) add(a, b []float32) {
	for i := range a {
		x, y := float64(a[i]), float64(b[i])
		d := math.Abs(x - y)
		o.n++
		o.sum += d
		o.max = max(o.max, d)
		if m := max(math.Abs(x), math.Abs(y)); m > 0 {
			o.rel = max(o.rel, d/m)
		}
	}
}

func (o *offline) check(t *testing.T, what string, n int64, mean, maxAbs, maxRel float64) {
	t.Helper()
	if n != int64(o.n) || math.Abs(mean-o.sum/float64(o.n)) > 1e-12*max(1, o.sum/float64(o.n)) || maxAbs != o.max || maxRel != o.rel {
		t.Errorf("%s: shadow reported %d elements, mean %v, max %v, max rel %v; offline %d, %v, %v, %v",
			what, n, mean, maxAbs, maxRel, o.n, o.sum/float64(o.n), o.max, o.rel)
	}
	if o.max == 0 {
		t.Errorf("%s: the two versions answer alike: the test shows nothing", what)
	}
}

// Two exports of mlp-med with different weights: the divergence the shadow reports over 16
// live requests (batch 1 and 3) is the one computed offline by running both versions
// directly on the same inputs.
func TestShadowMLPDivergenceMatchesOffline(t *testing.T) {
	rt, onnx := nativeRuntime(t, mlpMedModel)
	repo := shadowRepo(t, rt, "mlp", nil, onnx, perturbONNX(t, onnx, 0.02))
	var on atomic.Bool
	on.Store(true)
	ts := startServer(t, NewRegistry(repo), Options{Shadow: shadowOf("1.1.0", 1, &on), ShadowCPUShare: noShadowBudget})
	rng := rand.New(rand.NewSource(7))
	var sent [][]float32
	for i := range 16 {
		rows := 1 + 2*(i%2)
		obs := make([]float32, rows*64)
		for k := range obs {
			obs[k] = float32(rng.NormFloat64())
		}
		sent = append(sent, obs)
		data, _ := json.Marshal(obs)
		r := ts.do(t, "POST", "/v2/models/mlp/versions/1.0.0/infer", []byte(fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[%d,64],"data":%s}]}`, rows, data)))
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	rep := waitShadow(t, ts.srv, "mlp", "1.0.0", "1.1.0", 16)
	on.Store(false)
	if rep.Samples != 16 || rep.Errors != 0 {
		t.Fatalf("report %+v", rep)
	}
	var off offline
	for _, obs := range sent {
		in := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{int64(len(obs) / 64), 64}, Data: f32bytes(obs...)}}
		a := runDirect(t, repo, "mlp", "1.0.0", in)
		b := runDirect(t, repo, "mlp", "1.1.0", in)
		for name := range a {
			off.add(f32s(a[name].Data), f32s(b[name].Data))
		}
	}
	sts := ts.srv.ShadowStatuses()
	off.check(t, "mlp-med", sts[0].Outputs[0].Elements, rep.MeanAbs, rep.MaxAbs, rep.MaxRel)
	t.Logf("mlp-med 1.0.0 vs 2%% perturbed 1.1.0: %+v", rep)
}

const hallwayObsInputs = 3 // obs_0, obs_1, action_masks; then recurrent_in

func hallwayObs(step int) (string, []bridge.Tensor) {
	o0, o1 := make([]float32, 105), []float32{float32(step), 0.5, -0.25}
	for i := range o0 {
		o0[i] = float32((i*7+step*13)%17) / 17
	}
	masks := []float32{1, 1, 1, 1, 1}
	b0, _ := json.Marshal(o0)
	b1, _ := json.Marshal(o1)
	body := fmt.Sprintf(`{"name":"obs_0","datatype":"FP32","shape":[1,105],"data":%s},{"name":"obs_1","datatype":"FP32","shape":[1,3],"data":%s},{"name":"action_masks","datatype":"FP32","shape":[1,5],"data":[1,1,1,1,1]}`, b0, b1)
	return body, []bridge.Tensor{
		{DType: bridge.Float32, Shape: []int64{1, 105}, Data: f32bytes(o0...)},
		{DType: bridge.Float32, Shape: []int64{1, 3}, Data: f32bytes(o1...)},
		{DType: bridge.Float32, Shape: []int64{1, 5}, Data: f32bytes(masks...)},
	}
}

// hallwayInputs orders the observation tensors and the state as v's inputs.
func hallwayInputs(t *testing.T, repo *repository.Repository, obs []bridge.Tensor, state []byte) []bridge.Tensor {
	t.Helper()
	v, err := repo.Acquire("hallway", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	names := []string{"obs_0", "obs_1", "action_masks"}
	in := make([]bridge.Tensor, len(v.Inputs()))
	for k, info := range v.Inputs() {
		if info.Name == "recurrent_in" {
			in[k] = bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, 1, 128}, Data: state}
			continue
		}
		for j, n := range names {
			if n == info.Name {
				in[k] = obs[j]
			}
		}
	}
	return in
}

func outputStatus(t *testing.T, s *Server, name string) ShadowOutputReport {
	t.Helper()
	for _, st := range s.ShadowStatuses() {
		for _, o := range st.Outputs {
			if o.Output == name {
				return o
			}
		}
	}
	t.Fatalf("no shadow output %q in %+v", name, s.ShadowStatuses())
	return ShadowOutputReport{}
}

// A recurrent policy (ML-Agents' Hallway) and a second export with other weights, as a
// sequence of three steps: the shadow keeps its own state for the sequence, so after each
// step the divergence of recurrent_out it reports is the one of running the three steps
// directly on each version, each carrying its own state. The sequence's start and end reach
// the shadow: its sequence table is empty afterwards.
func TestShadowSequenceKeepsOwnState(t *testing.T) {
	rt, onnx := nativeRuntime(t, hallwayModel)
	spec := &engines.SequenceSpec{States: []engines.StatePair{{Input: "recurrent_in", Output: "recurrent_out"}}}
	repo := shadowRepo(t, rt, "hallway", spec, onnx, perturbONNX(t, onnx, 0.05))
	ts := startServer(t, NewRegistry(repo), Options{Shadow: shadowOf("1.1.0", 1, nil), ShadowCPUShare: noShadowBudget})
	stateA, stateB := make([]byte, 128*4), make([]byte, 128*4)
	var off offline
	for i := range 3 {
		body, obs := hallwayObs(i)
		params := fmt.Sprintf(`"sequence_id":"episode-7","sequence_start":%v,"sequence_end":%v`, i == 0, i == 2)
		r := ts.do(t, "POST", "/v2/models/hallway/versions/1.0.0/infer", []byte(`{"parameters":{`+params+`},"inputs":[`+body+`]}`))
		if r.status != 200 {
			t.Fatalf("step %d: %d %s", i, r.status, r.body)
		}
		rep := waitShadow(t, ts.srv, "hallway", "1.0.0", "1.1.0", int64(i+1))
		if rep.Samples != int64(i+1) {
			t.Fatalf("step %d: %+v", i, rep)
		}
		a := runDirect(t, repo, "hallway", "1.0.0", hallwayInputs(t, repo, obs, stateA))
		b := runDirect(t, repo, "hallway", "1.1.0", hallwayInputs(t, repo, obs, stateB))
		off.add(f32s(a["recurrent_out"].Data), f32s(b["recurrent_out"].Data))
		stateA, stateB = a["recurrent_out"].Data, b["recurrent_out"].Data
		o := outputStatus(t, ts.srv, "recurrent_out")
		off.check(t, fmt.Sprintf("step %d recurrent_out", i), o.Elements, o.MeanAbs, o.MaxAbs, o.MaxRel)
	}
	v, err := repo.Acquire("hallway", "1.1.0")
	if err != nil {
		t.Fatal(err)
	}
	if n := v.Sequences().Len(); n != 0 {
		t.Errorf("the shadow keeps %d sequences after the end", n)
	}
	v.Release()
}

// Hallway against itself, its sampled discrete action included, with and without a seed of
// the request's own and as a sequence: no difference, full agreement (both sides draw from
// the same seed).
func TestShadowIdenticalHallwayAgrees(t *testing.T) {
	rt, onnx := nativeRuntime(t, hallwayModel)
	spec := &engines.SequenceSpec{States: []engines.StatePair{{Input: "recurrent_in", Output: "recurrent_out"}}}
	repo := shadowRepo(t, rt, "hallway", spec, onnx, onnx)
	ts := startServer(t, NewRegistry(repo), Options{Shadow: shadowOf("1.1.0", 1, nil), ShadowCPUShare: noShadowBudget})
	state := "[" + strings.TrimSuffix(strings.Repeat("0.5,", 128), ",") + "]"
	n := 0
	for i := range 40 {
		body, _ := hallwayObs(i)
		var req string
		switch i % 3 {
		case 0:
			req = `{"inputs":[` + body + `,{"name":"recurrent_in","datatype":"FP32","shape":[1,1,128],"data":` + state + `}]}`
		case 1:
			req = fmt.Sprintf(`{"parameters":{"seed":%d},"inputs":[`+body+`,{"name":"recurrent_in","datatype":"FP32","shape":[1,1,128],"data":`+state+`}]}`, i)
		default:
			req = fmt.Sprintf(`{"parameters":{"sequence_id":%d,"sequence_start":true,"sequence_end":true},"inputs":[`+body+`]}`, i)
		}
		if r := ts.do(t, "POST", "/v2/models/hallway/versions/1.0.0/infer", []byte(req)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		n++
		// A request of the shadow version's own: its engines' random stream moves on, so only
		// the seed both sides share keeps their samples alike.
		own := `{"inputs":[` + body + `,{"name":"recurrent_in","datatype":"FP32","shape":[1,1,128],"data":` + state + `}]}`
		if r := ts.do(t, "POST", "/v2/models/hallway/versions/1.1.0/infer", []byte(own)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	rep := waitShadow(t, ts.srv, "hallway", "1.0.0", "1.1.0", int64(n))
	if rep.Samples != int64(n) || rep.MaxAbs != 0 || rep.MeanAbs != 0 || rep.Agreement != 1 || rep.Errors != 0 {
		t.Errorf("identical versions: %+v; want %d samples, 0 difference, agreement 1", rep, n)
	}
	if o := outputStatus(t, ts.srv, "discrete_actions"); !o.Discrete || o.Elements == 0 || o.Agreement != 1 {
		t.Errorf("discrete_actions: %+v", o)
	}
}
