package server

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
)

// pairModel: obs FP32[-1,3], mask BOOL[-1,2] → sum FP32[-1,1] = Σobs + count(mask),
// version_number INT64[1] = 3 (no batch dimension, like ML-Agents' constant outputs).
func pairModel() *fakeModel {
	return &fakeModel{
		name: "pair", version: "1", batchable: true,
		inputs: []bridge.IOInfo{
			{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 3}},
			{Name: "mask", DType: bridge.Bool, Shape: []int64{-1, 2}},
		},
		outputs: []bridge.IOInfo{
			{Name: "sum", DType: bridge.Float32, Shape: []int64{-1, 1}},
			{Name: "version_number", DType: bridge.Int64, Shape: []int64{1}, BatchDim: -1},
		},
		run: func(in []bridge.Tensor) []bridge.Tensor {
			batch := in[0].Shape[0]
			sum := make([]byte, 4*batch)
			for r := int64(0); r < batch; r++ {
				s := float32(0)
				for j := int64(0); j < 3; j++ {
					s += math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[4*(3*r+j):]))
				}
				for j := int64(0); j < 2; j++ {
					s += float32(in[1].Data[2*r+j])
				}
				binary.LittleEndian.PutUint32(sum[4*r:], math.Float32bits(s))
			}
			version := binary.LittleEndian.AppendUint64(nil, 3)
			return []bridge.Tensor{
				{DType: bridge.Float32, Shape: []int64{batch, 1}, Data: sum},
				{DType: bridge.Int64, Shape: []int64{1}, Data: version},
			}
		},
	}
}

// halfModel: x FP32[-1,2,2] → y FP32[-1,2,2] = x/2 (one input, one output, rank 3).
func halfModel() *fakeModel {
	return &fakeModel{
		name: "half", version: "1", batchable: true,
		inputs:  []bridge.IOInfo{{Name: "x", DType: bridge.Float32, Shape: []int64{-1, 2, 2}}},
		outputs: []bridge.IOInfo{{Name: "y", DType: bridge.Float32, Shape: []int64{-1, 2, 2}}},
		run: func(in []bridge.Tensor) []bridge.Tensor {
			y := make([]byte, len(in[0].Data))
			for i := 0; i < len(y); i += 4 {
				f := math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[i:]))
				binary.LittleEndian.PutUint32(y[i:], math.Float32bits(f/2))
			}
			return []bridge.Tensor{{DType: bridge.Float32, Shape: append([]int64(nil), in[0].Shape...), Data: y}}
		},
	}
}

func predictRegistry() *fakeRegistry {
	reg := testRegistry()
	for _, m := range []*fakeModel{pairModel(), halfModel()} {
		reg.models[m.name] = append(reg.models[m.name], m)
	}
	return reg
}

func TestPredict(t *testing.T) {
	ts := startServer(t, predictRegistry(), Options{})
	const multiInstance = `{"a":[1.5,2],"b":[1,2,3],"c":[true],"d":[7,8],"e":5,"f":[0.25],"g":[-1],` +
		`"h":[18446744073709551615],"i":[-300],"j":[65535],"k":[4294967295]}`
	tests := []struct {
		name, path, body string
		status           int
		want             string // the exact body for 200, else a part of the error message
	}{
		// Row format.
		{"row single input", "/v1/models/policy:predict",
			`{"instances":[[1,-2,0.5,0],[0.1,0,0,-1]]}`, 200,
			`{"predictions":[{"action":[2,-4,1,0],"index":[9007199254740993],"positive":[true,false,true,false],"special":[null,null,null]},` +
				`{"action":[0.2,0,0,-2],"index":[9007199254740994],"positive":[true,false,false,false],"special":[null,null,null]}]}`},
		{"row named single input, version path", "/v1/models/policy/versions/1:predict",
			`{"signature_name":"serving_default","instances":[{"obs":[1,2,3,4]}]}`, 200,
			`{"predictions":[{"action":[2,4,6,8],"index":[9007199254740993],"positive":[true,true,true,true],"special":[null,null,null]}]}`},
		{"row multi input objects, unbatched output left out", "/v1/models/pair:predict",
			`{"instances":[{"obs":[1,2,3],"mask":[true,false]},{"mask":[false,false],"obs":[0.5,0.25,0]}]}`, 200,
			`{"predictions":[{"sum":[7]},{"sum":[0.75]}]}`},
		{"row single output is the bare row", "/v1/models/half:predict",
			`{"instances":[[[1,2],[3,4]],[[-1,0],[1e-3,5]]]}`, 200,
			`{"predictions":[[[0.5,1],[1.5,2]],[[-0.5,0],[0.0005,2.5]]]}`},
		{"row every datatype, scalar rows", "/v1/models/multi:predict",
			`{"instances":[` + multiInstance + `]}`, 200,
			`{"predictions":[{"a_out":[1.5,2],"b_out":[1,2,3],"c_out":[true],"e_out":5,"f_out":[0.25],"g_out":[-1],` +
				`"h_out":[18446744073709551615],"i_out":[-300],"j_out":[65535],"k_out":[4294967295]}]}`},
		{"row unbatched model, the row of a leading 1", "/v1/models/fixed:predict",
			`{"instances":[[1,-2,3]]}`, 200, `{"predictions":[[[1,-2,3]]]}`},
		{"row unbatched model, the whole tensor", "/v1/models/fixed:predict",
			`{"instances":[[[1,-2,3]]]}`, 200, `{"predictions":[[[1,-2,3]]]}`},

		// Columnar format.
		{"columnar single input value", "/v1/models/policy:predict",
			`{"inputs":[[1,2,3,4],[0,0,0,-0.5]]}`, 200,
			`{"outputs":{"action":[[2,4,6,8],[0,0,0,-1]],"index":[[9007199254740993],[9007199254740994]],` +
				`"positive":[[true,true,true,true],[false,false,false,false]],"special":[[null,null,null],[null,null,null]]}}`},
		{"columnar object, outputs without batch included", "/v1/models/pair/versions/1:predict",
			`{"inputs":{"obs":[[1,2,3],[0,0,0]],"mask":[[true,true],[false,true]]}}`, 200,
			`{"outputs":{"sum":[[8],[1]],"version_number":[3]}}`},
		{"columnar single output is the bare value", "/v1/models/half:predict",
			`{"inputs":{"x":[[[2,4],[6,8]]]}}`, 200, `{"outputs":[[[1,2],[3,4]]]}`},
		{"columnar unbatched model", "/v1/models/fixed:predict",
			`{"inputs":[[4,5,6]]}`, 200, `{"outputs":[[4,5,6]]}`},

		// Routes.
		{"wrong verb", "/v1/models/policy:classify", `{"instances":[[1,2,3,4]]}`, 404, `verb "classify" is not supported`},
		{"wrong verb with version", "/v1/models/policy/versions/1:regress", `{"instances":[[1,2,3,4]]}`, 404, `verb "regress"`},
		{"no verb", "/v1/models/policy", `{"instances":[[1,2,3,4]]}`, 404, "no route POST /v1/models/policy"},
		{"unknown model", "/v1/models/nope:predict", `{"instances":[[1]]}`, 404, `unknown model "nope"`},
		{"unknown version", "/v1/models/policy/versions/9:predict", `{"instances":[[1,2,3,4]]}`, 404, `unknown version "9" of model "policy"`},
		{"version not ready", "/v1/models/policy/versions/3:predict", `{"instances":[[1,2,3,4]]}`, 503, "version 3 failed to load"},
		{"model not loaded", "/v1/models/broken:predict", `{"instances":[[1]]}`, 503, "is not produced by any node"},

		// Bad requests.
		{"invalid JSON", "/v1/models/policy:predict", `{"instances":`, 400, "invalid JSON"},
		{"not an object", "/v1/models/policy:predict", `[1]`, 400, "must be a JSON object"},
		{"neither form", "/v1/models/policy:predict", `{"instance":[[1,2,3,4]]}`, 400, `missing "instances" (row format) or "inputs"`},
		{"both forms", "/v1/models/policy:predict", `{"instances":[[1,2,3,4]],"inputs":[[1,2,3,4]]}`, 400, "are exclusive"},
		{"other signature", "/v1/models/policy:predict", `{"signature_name":"train","instances":[[1,2,3,4]]}`, 400, `unknown signature_name "train"`},
		{"instances not an array", "/v1/models/policy:predict", `{"instances":{"obs":[1,2,3,4]}}`, 400, `"instances" must be an array, got object`},
		{"no instances", "/v1/models/policy:predict", `{"instances":[]}`, 400, `"instances" is empty`},
		{"first instance shape", "/v1/models/policy:predict", `{"instances":[[1,2,3]]}`, 400,
			`instances[0]: input "obs": expected shape [4], got [3]`},
		{"later instance shape", "/v1/models/policy:predict", `{"instances":[[1,2,3,4],[1,2,3,4],[1,2,3,4,5]]}`, 400,
			`instances[2]: input "obs": shape [5] differs from the shape [4] of instances[0]`},
		{"ragged instance", "/v1/models/half:predict", `{"instances":[[[1,2],[3,4]],[[1,2],[3]]]}`, 400,
			`instances[1]: input "x": ragged nested lists`},
		{"instance element type", "/v1/models/policy:predict", `{"instances":[[1,2,3,4],[1,"x",3,4]]}`, 400,
			`instances[1]: input "obs": element 1: expected a number, got string`},
		{"instance element range", "/v1/models/multi:predict",
			`{"instances":[` + strings.Replace(multiInstance, `"g":[-1]`, `"g":[-129]`, 1) + `]}`, 400,
			`instances[0]: input "g": element 0: -129 is out of range for INT8`},
		{"multi input instance not an object", "/v1/models/pair:predict", `{"instances":[[1,2,3]]}`, 400,
			`instances[0] must be an object {input name: value} for a model with 2 inputs ("obs", "mask"), got array`},
		{"instance missing an input", "/v1/models/pair:predict", `{"instances":[{"obs":[1,2,3],"mask":[true,true]},{"obs":[1,2,3]}]}`, 400,
			`instances[1]: missing input "mask"`},
		{"instance unknown input", "/v1/models/pair:predict", `{"instances":[{"obs":[1,2,3],"mask":[true,true],"goal":[1]}]}`, 400,
			`instances[0]: unknown input "goal" (model inputs: "obs", "mask")`},
		{"unbatched model, two instances", "/v1/models/fixed:predict", `{"instances":[[1,2,3],[4,5,6]]}`, 400,
			`2 instances, but input "x" has no batch dimension (shape [1,3])`},
		{"input without batch, two instances", "/v1/models/multi:predict", `{"instances":[` + multiInstance + `,` + multiInstance + `]}`, 400,
			`2 instances, but input "d" has no batch dimension (shape [2])`},
		{"unbatched model, bad shape", "/v1/models/fixed:predict", `{"instances":[[1,2]]}`, 400,
			`instances[0]: input "x": expected shape [1,3], got [2]`},
		{"columnar shape", "/v1/models/policy:predict", `{"inputs":[1,2,3,4]}`, 400, `input "obs": expected shape [-1,4], got [4]`},
		{"columnar batch sizes differ", "/v1/models/pair:predict", `{"inputs":{"obs":[[1,2,3]],"mask":[[true,true],[true,true]]}}`, 400,
			`input "mask": batch size 2 differs from batch size 1 of input "obs"`},
		{"columnar missing input", "/v1/models/pair:predict", `{"inputs":{"obs":[[1,2,3]]}}`, 400, `"inputs": missing input "mask"`},
		{"columnar unknown input", "/v1/models/policy:predict", `{"inputs":{"obs":[[1,2,3,4]],"x":1}}`, 400, `"inputs": unknown input "x"`},
		{"columnar multi input value", "/v1/models/pair:predict", `{"inputs":[[1,2,3]]}`, 400, `"inputs" must be an object {input name: value} for a model with 2 inputs`},
		{"too deep", "/v1/models/policy:predict", `{"inputs":[[[[[[[[[1]]]]]]]]]}`, 400, "nested deeper than 8 levels"},
		{"b64 is not a number", "/v1/models/policy:predict", `{"instances":[[{"b64":"AAAA"},2,3,4]]}`, 400,
			`element 0: expected a number, got object`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ts.do(t, "POST", tc.path, []byte(tc.body))
			if r.status != tc.status {
				t.Fatalf("status %d, want %d: %s", r.status, tc.status, r.body)
			}
			if tc.status == 200 {
				if string(r.body) != tc.want {
					t.Errorf("body\n%s\nwant\n%s", r.body, tc.want)
				}
				if ct := r.header["Content-Type"]; ct != "application/json" {
					t.Errorf("Content-Type %q", ct)
				}
				return
			}
			if msg := errorMessage(t, r); !strings.Contains(msg, tc.want) {
				t.Errorf("error %q, want it to contain %q", msg, tc.want)
			}
		})
	}
}

// The verb stays part of the path: other methods on a :predict path are 405, and a body over
// the limit is 413.
func TestPredictMethodAndLimit(t *testing.T) {
	ts := startServer(t, predictRegistry(), Options{MaxRequestBodySize: 64})
	if r := ts.do(t, "GET", "/v1/models/policy:predict", nil); r.status != 405 {
		t.Errorf("GET = %d %s", r.status, r.body)
	}
	body := []byte(`{"instances":[` + strings.Repeat(`[1,2,3,4],`, 10) + `[1,2,3,4]]}`)
	if r := ts.do(t, "POST", "/v1/models/policy:predict", body); r.status != 413 {
		t.Errorf("over the limit = %d %s", r.status, r.body)
	}
}

// A pooled request reused for a smaller and then a different model answers only from its own
// inputs.
func TestPredictReuse(t *testing.T) {
	ts := startServer(t, predictRegistry(), Options{})
	for i := 0; i < 3; i++ {
		if r := ts.do(t, "POST", "/v1/models/half:predict", []byte(`{"instances":[[[1,1],[1,1]],[[2,2],[2,2]],[[4,4],[4,4]]]}`)); r.status != 200 ||
			string(r.body) != `{"predictions":[[[0.5,0.5],[0.5,0.5]],[[1,1],[1,1]],[[2,2],[2,2]]]}` {
			t.Fatalf("3 instances = %d %s", r.status, r.body)
		}
		if r := ts.do(t, "POST", "/v1/models/half:predict", []byte(`{"instances":[[[8,8],[8,8]]]}`)); r.status != 200 ||
			string(r.body) != `{"predictions":[[[4,4],[4,4]]]}` {
			t.Fatalf("1 instance = %d %s", r.status, r.body)
		}
		if r := ts.do(t, "POST", "/v1/models/pair:predict", []byte(`{"instances":[{"obs":[0,0,1],"mask":[true,true]}]}`)); r.status != 200 ||
			string(r.body) != `{"predictions":[{"sum":[3]}]}` {
			t.Fatalf("pair = %d %s", r.status, r.body)
		}
	}
}

// While the server is starting, :predict on a model (or version) not loaded yet answers as v2
// infer does, through the same inference path: 503 naming "starting", the same message and the
// same Retry-After; once started, both answer 404.
func TestPredictStarting(t *testing.T) {
	ts := startServer(t, newFakeRegistry(policyModel("1")), Options{})
	v2 := []byte(`{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	tf := []byte(`{"instances":[[1,2,3,4]]}`)
	for _, starting := range []bool{true, false} {
		ts.srv.SetStarting(starting)
		for _, c := range []struct{ infer, predict string }{
			{"/v2/models/later/infer", "/v1/models/later:predict"},
			{"/v2/models/policy/versions/9/infer", "/v1/models/policy/versions/9:predict"},
		} {
			want := ts.do(t, "POST", c.infer, v2)
			got := ts.do(t, "POST", c.predict, tf)
			wantStatus := 404
			if starting {
				wantStatus = 503
				if msg := errorMessage(t, got); !strings.Contains(msg, "starting") {
					t.Errorf("starting: %s: %q does not name the starting state", c.predict, msg)
				}
			}
			if want.status != wantStatus || got.status != want.status || errorMessage(t, got) != errorMessage(t, want) ||
				got.header["Retry-After"] != want.header["Retry-After"] {
				t.Errorf("starting %v: %s = %d %s (Retry-After %q), %s = %d %s (Retry-After %q)", starting,
					c.predict, got.status, got.body, got.header["Retry-After"], c.infer, want.status, want.body, want.header["Retry-After"])
			}
		}
		// A loaded model serves while starting.
		if r := ts.do(t, "POST", "/v1/models/policy:predict", tf); r.status != 200 {
			t.Errorf("starting %v: predict on a loaded model = %d %s", starting, r.status, r.body)
		}
	}
}
