package server

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"regexp"
	"strconv"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/policyd/policyd/api/inference"
)

// TestGrpcInvalidTwins sends every bad request of the HTTP tests (testdata/invalid.json) that
// protobuf can express as its gRPC twin: the JSON request turned into a ModelInferRequest
// (data into the typed field of the declared datatype). Each must be refused with the code of
// the HTTP status (InvalidArgument for 400) and name the same input or output. A case protobuf
// cannot carry (JSON syntax, a string where a number goes, a value its field cannot hold) has
// no twin and is counted.
func TestGrpcInvalidTwins(t *testing.T) {
	reg := testRegistry()
	ts := startGRPC(t, reg, Options{})
	called := false
	for _, ms := range reg.models {
		for _, m := range ms {
			m.hook = func(context.Context) { called = true }
		}
	}
	twins, none := 0, 0
	quoted := regexp.MustCompile(`^(?:unknown )?(input|output) "([^"]+)"`)
	for _, c := range loadInvalidCases(t) {
		if c.Raw != nil {
			none++
			continue
		}
		req, ok := grpcTwin(c.Body)
		if !ok {
			t.Logf("no protobuf form: %s", c.Name)
			none++
			continue
		}
		twins++
		req.ModelName = c.Model
		if req.ModelName == "" {
			req.ModelName = "policy"
		}
		req.ModelVersion = "1"
		_, err := ts.client.ModelInfer(grpcCtx(t), req)
		st, _ := status.FromError(err)
		want := codes.InvalidArgument
		if c.Status != 0 {
			want = grpcCode(c.Status)
		}
		if st.Code() != want {
			t.Errorf("%s: %v %q, want %v (HTTP: %q)", c.Name, st.Code(), st.Message(), want, c.Error)
			continue
		}
		if m := quoted.FindStringSubmatch(c.Error); m != nil && !bytes.Contains([]byte(st.Message()), []byte(strconv.Quote(m[2]))) {
			t.Errorf("%s: %q does not name %s %q (HTTP: %q)", c.Name, st.Message(), m[1], m[2], c.Error)
		}
	}
	if called {
		t.Error("a model ran for an invalid request")
	}
	t.Logf("%d HTTP bad requests have a gRPC twin, %d have no protobuf form", twins, none)
	if twins < 34 {
		t.Errorf("only %d twins", twins)
	}
}

// grpcTwin turns a JSON inference request into its protobuf form, when protobuf can carry it.
func grpcTwin(body []byte) (*inference.ModelInferRequest, bool) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var top map[string]any
	if d.Decode(&top) != nil || top == nil {
		return nil, false
	}
	req := &inference.ModelInferRequest{}
	for k, v := range top {
		switch k {
		case "id":
			s, ok := v.(string)
			if !ok {
				return nil, false
			}
			req.Id = s
		case "parameters":
			p, ok := twinParams(v)
			if !ok {
				return nil, false
			}
			req.Parameters = p
		case "inputs":
			arr, ok := v.([]any)
			if !ok {
				return nil, false
			}
			for _, e := range arr {
				in, ok := twinInput(e)
				if !ok {
					return nil, false
				}
				req.Inputs = append(req.Inputs, in)
			}
		case "outputs":
			arr, ok := v.([]any)
			if !ok {
				return nil, false
			}
			for _, e := range arr {
				o, ok := e.(map[string]any)
				if !ok {
					return nil, false
				}
				name, ok := o["name"].(string)
				if _, has := o["name"]; has && !ok {
					return nil, false
				}
				out := &inference.ModelInferRequest_InferRequestedOutputTensor{Name: name}
				if pv, has := o["parameters"]; has {
					if out.Parameters, ok = twinParams(pv); !ok {
						return nil, false
					}
				}
				req.Outputs = append(req.Outputs, out)
			}
		default:
			return nil, false
		}
	}
	return req, true
}

func twinParams(v any) (map[string]*inference.InferParameter, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	out := map[string]*inference.InferParameter{}
	for k, pv := range m {
		switch x := pv.(type) {
		case bool:
			out[k] = &inference.InferParameter{ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: x}}
		case string:
			out[k] = &inference.InferParameter{ParameterChoice: &inference.InferParameter_StringParam{StringParam: x}}
		case json.Number:
			n, err := x.Int64()
			if err != nil {
				return nil, false
			}
			out[k] = &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: n}}
		default:
			return nil, false
		}
	}
	return out, true
}

func twinInput(e any) (*inference.ModelInferRequest_InferInputTensor, bool) {
	o, ok := e.(map[string]any)
	if !ok {
		return nil, false
	}
	in := &inference.ModelInferRequest_InferInputTensor{}
	var data []any
	hasData := false
	for k, v := range o {
		switch k {
		case "name":
			if in.Name, ok = v.(string); !ok {
				return nil, false
			}
		case "datatype":
			if in.Datatype, ok = v.(string); !ok {
				return nil, false
			}
		case "shape":
			arr, ok := v.([]any)
			if !ok {
				return nil, false
			}
			for _, d := range arr {
				n, ok := d.(json.Number)
				if !ok {
					return nil, false
				}
				i, err := n.Int64()
				if err != nil {
					return nil, false
				}
				in.Shape = append(in.Shape, i)
			}
		case "data":
			arr, ok := v.([]any)
			if !ok {
				return nil, false
			}
			data, hasData = flattenJSON(arr), true
		case "parameters":
			// binary_data_size and the like have no gRPC meaning: no twin.
			return nil, false
		default:
			return nil, false
		}
	}
	// A missing member is the field's default in protobuf ("" or empty), as a client that
	// forgot it sends it.
	if !hasData {
		return in, true // no contents at all
	}
	c := &inference.InferTensorContents{}
	for _, v := range data {
		if in.Datatype == "BOOL" {
			b, ok := v.(bool)
			if !ok {
				return nil, false
			}
			c.BoolContents = append(c.BoolContents, b)
			continue
		}
		n, ok := v.(json.Number)
		if !ok {
			return nil, false
		}
		switch in.Datatype {
		case "FP32":
			f, err := strconv.ParseFloat(string(n), 32)
			if err != nil {
				return nil, false
			}
			c.Fp32Contents = append(c.Fp32Contents, float32(f))
		case "FP64":
			f, err := strconv.ParseFloat(string(n), 64)
			if err != nil {
				return nil, false
			}
			c.Fp64Contents = append(c.Fp64Contents, f)
		case "INT8", "INT16", "INT32":
			i, err := strconv.ParseInt(string(n), 10, 32)
			if err != nil {
				return nil, false
			}
			c.IntContents = append(c.IntContents, int32(i))
		case "INT64":
			i, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil {
				return nil, false
			}
			c.Int64Contents = append(c.Int64Contents, i)
		case "UINT8", "UINT16", "UINT32":
			u, err := strconv.ParseUint(string(n), 10, 32)
			if err != nil {
				return nil, false
			}
			c.UintContents = append(c.UintContents, uint32(u))
		case "UINT64":
			u, err := strconv.ParseUint(string(n), 10, 64)
			if err != nil {
				return nil, false
			}
			c.Uint64Contents = append(c.Uint64Contents, u)
		default:
			f, err := strconv.ParseFloat(string(n), 32)
			if err != nil || math.IsInf(f, 0) {
				return nil, false
			}
			c.Fp32Contents = append(c.Fp32Contents, float32(f)) // a wrong datatype: any field will do
		}
	}
	in.Contents = c
	return in, true
}

func flattenJSON(arr []any) []any {
	var out []any
	for _, v := range arr {
		if a, ok := v.([]any); ok {
			out = append(out, flattenJSON(a)...)
		} else {
			out = append(out, v)
		}
	}
	return out
}
