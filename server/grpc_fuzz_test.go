package server

import (
	"bytes"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
)

// FuzzGRPCInferRequest feeds arbitrary bytes, read as a protobuf ModelInferRequest, to the
// gRPC codec's decoder for four signatures (one and several inputs, every datatype, no batch
// dimension). It must never panic; an error is a short *requestError; what it accepts matches
// the signature byte for byte, and for the echo model (multi) the encoded response, raw or
// typed, carries exactly the decoded inputs.
func FuzzGRPCInferRequest(f *testing.F) {
	p := func(v any) *inference.InferParameter {
		switch v := v.(type) {
		case bool:
			return &inference.InferParameter{ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: v}}
		case int64:
			return &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: v}}
		case uint64:
			return &inference.InferParameter{ParameterChoice: &inference.InferParameter_Uint64Param{Uint64Param: v}}
		}
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_StringParam{StringParam: v.(string)}}
	}
	multiTyped := &inference.ModelInferRequest{ModelName: "multi", Id: "x"}
	multiRaw := &inference.ModelInferRequest{ModelName: "multi", Parameters: map[string]*inference.InferParameter{"binary_data_output": p(false)}}
	for _, in := range multiModel().inputs {
		sh := append([]int64(nil), in.Shape...)
		if sh[0] == -1 {
			sh[0] = 2
		}
		n, _ := bridge.Elements(sh)
		multiTyped.Inputs = append(multiTyped.Inputs, &inference.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DType.String(), Shape: sh,
			Contents: zeroContents(in.DType, int(n))})
		multiRaw.Inputs = append(multiRaw.Inputs, &inference.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DType.String(), Shape: sh})
		multiRaw.RawInputContents = append(multiRaw.RawInputContents, make([]byte, int(n)*in.DType.Size()))
	}
	policy := obsRequest("", 1, -2, 3, 0.5)
	policy.Parameters = map[string]*inference.InferParameter{"priority": p(uint64(1)), "timeout": p(int64(100)), "seed": p(uint64(7)), "sequence_id": p("s")}
	policy.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "index"}, {Name: "action"}}
	pair := &inference.ModelInferRequest{ModelName: "pair", Inputs: []*inference.ModelInferRequest_InferInputTensor{
		{Name: "obs", Datatype: "FP32", Shape: []int64{1, 3}}, {Name: "mask", Datatype: "BOOL", Shape: []int64{1, 2}}},
		RawInputContents: [][]byte{f32bytes(1, 2, 3), {1, 0}}}
	fixed := &inference.ModelInferRequest{ModelName: "fixed", Inputs: []*inference.ModelInferRequest_InferInputTensor{
		{Name: "x", Datatype: "INT8", Shape: []int64{1, 3}, Contents: &inference.InferTensorContents{IntContents: []int32{-1, 0, 127}}}}}
	for _, r := range []*inference.ModelInferRequest{multiTyped, multiRaw, policy, pair, fixed} {
		b, err := proto.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	models := []*fakeModel{multiModel(), policyModel("1"), pairModel(), fixedModel()}
	g := newGRPCRequest()
	f.Fuzz(func(t *testing.T, msg []byte) {
		req := &inference.ModelInferRequest{}
		if proto.Unmarshal(msg, req) != nil {
			return
		}
		for _, m := range models {
			g.req = req
			err := g.decodeRequest(m)
			if err != nil {
				if _, ok := err.(*requestError); !ok {
					t.Fatalf("%s: error %T (%v), want *requestError", m.name, err, err)
				}
				if n := len(err.Error()); n == 0 || n > 1000 {
					t.Fatalf("%s: error message of %d bytes", m.name, n)
				}
				g.release()
				continue
			}
			ins, _, _, rows := g.call()
			if rows < 1 {
				t.Fatalf("%s: batch size %d", m.name, rows)
			}
			for k, in := range ins {
				info := m.inputs[k]
				want, ok := bridge.ByteSize(info.DType, in.Shape)
				if in.DType != info.DType || !ok || int64(len(in.Data)) != want || !shapeMatches(info.Shape, in.Shape) {
					t.Fatalf("%s: input %q accepted as %s %v with %d bytes", m.name, info.Name, in.DType, in.Shape, len(in.Data))
				}
			}
			if m.name == "multi" {
				outs := m.run(ins)
				if err := g.encodeOutputs(outs); err != nil {
					t.Fatalf("encode: %v", err)
				}
				for i, k := range g.outputIndices(len(outs)) {
					var got []byte
					if g.raw {
						got = g.resp.RawOutputContents[i]
					} else {
						h := newGRPCRequest()
						h.r.reset(1)
						info := m.inputs[k]
						if err := h.typedInput(0, &info, outs[k].Shape, bridge.NumElements(outs[k].Shape), g.resp.Outputs[i].Contents); err != nil {
							t.Fatalf("output %d does not decode back: %v", i, err)
						}
						got = h.r.tensors[0].Data
					}
					if !bytes.Equal(got, ins[k].Data) {
						t.Fatalf("output %d: %x, want the input %x", i, got, ins[k].Data)
					}
				}
			}
			g.release()
		}
	})
}
