package server

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// FuzzDecodePredict feeds arbitrary bodies to TensorFlow Serving's :predict decoder for five
// signatures (one and several inputs, rank 3, no batch dimension, every datatype). It must
// never panic; an error is a short *requestError; what it accepts matches the signature and
// encodes to valid JSON.
func FuzzDecodePredict(f *testing.F) {
	for _, s := range []string{
		`{"instances":[[1,-2,0.5,0],[0.1,0,0,-1]]}`,
		`{"signature_name":"serving_default","instances":[{"obs":[1,2,3,4]}]}`,
		`{"instances":[{"obs":[1,2,3],"mask":[true,false]},{"mask":[false,false],"obs":[0.5,0.25,0]}]}`,
		`{"instances":[[[1,2],[3,4]],[[-1,0],[1e-3,5]]]}`,
		`{"instances":[{"a":[1.5,2],"b":[1,2,3],"c":[true],"d":[7,8],"e":5,"f":[0.25],"g":[-1],"h":[18446744073709551615],"i":[-300],"j":[65535],"k":[4294967295]}]}`,
		`{"instances":[[1,-2,3]]}`,
		`{"inputs":[[1,2,3,4],[0,0,0,-0.5]]}`,
		`{"inputs":{"obs":[[1,2,3],[0,0,0]],"mask":[[true,true],[false,true]]}}`,
		`{"inputs":{"x":[[[2,4],[6,8]]]}}`,
		`{"inputs":[[4,5,6]]}`,
		`{"instances":[[1,2,3,4],{"obs":[1,2,3,4]}]}`,
		`{"instances":[[[1,2],[3,4]],[[1,2],[3]]]}`,
		`{"inputs":[[[[[[[[[1]]]]]]]]]}`,
		`{"instances":[[{"b64":"AAAA"},2,3,4]]}`,
	} {
		f.Add([]byte(s))
	}
	models := []*fakeModel{policyModel("1"), pairModel(), halfModel(), fixedModel(), multiModel()}
	req := predictRequests.Get().(*predictRequest)
	f.Fuzz(func(t *testing.T, body []byte) {
		body = body[:len(body):len(body)] // an over-read shows as a panic
		for _, m := range models {
			ins := m.Inputs()
			err := req.decode(body, ins)
			if err != nil {
				if _, ok := err.(*requestError); !ok {
					t.Fatalf("%s: error %T (%v), want *requestError", m.name, err, err)
				}
				if n := len(err.Error()); n == 0 || n > 1000 {
					t.Fatalf("%s: error message of %d bytes", m.name, n)
				}
				continue
			}
			for k, tn := range req.tensors {
				if tn.DType != ins[k].DType || !shapeMatches(ins[k].Shape, tn.Shape) {
					t.Fatalf("%s: input %q: decoded %s%v against %s%v", m.name, ins[k].Name, tn.DType, tn.Shape, ins[k].DType, ins[k].Shape)
				}
				if want, ok := bridge.ByteSize(tn.DType, tn.Shape); !ok || int64(len(tn.Data)) != want {
					t.Fatalf("%s: input %q: %d bytes for %v", m.name, ins[k].Name, len(tn.Data), tn.Shape)
				}
			}
			req.model = m
			err = m.Do(context.Background(), req.tensors, engines.RunOptions{}, req.encode)
			if err != nil {
				if _, ok := err.(*requestError); !ok { // an unbatched output asked for as rows
					t.Fatalf("%s: encode after a successful decode: %v", m.name, err)
				}
				continue
			}
			if !json.Valid(req.out) {
				t.Fatalf("%s: response is not valid JSON: %s", m.name, req.out)
			}
		}
	})
}
