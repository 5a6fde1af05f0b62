package server

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// float16Model: h FP16[-1,2], bf BF16[-1,2], x FP32[-1,2] → h_out, bf_out, x_out (echo).
func float16Model() *fakeModel {
	ins := []bridge.IOInfo{
		{Name: "h", DType: bridge.Float16, Shape: []int64{-1, 2}},
		{Name: "bf", DType: bridge.BFloat16, Shape: []int64{-1, 2}},
		{Name: "x", DType: bridge.Float32, Shape: []int64{-1, 2}},
	}
	m := multiModel()
	m.name, m.inputs, m.outputs = "half", ins, make([]bridge.IOInfo, len(ins))
	for i, in := range ins {
		m.outputs[i] = in
		m.outputs[i].Name = in.Name + "_out"
	}
	return m
}

func binaryRegistry() *fakeRegistry {
	return newFakeRegistry(policyModel("1"), multiModel(), float16Model())
}

// binaryBody frames a JSON request and binary tensors: the body and the header value.
func binaryBody(js string, parts ...[]byte) ([]byte, string) {
	b := []byte(js)
	for _, p := range parts {
		b = append(b, p...)
	}
	return b, strconv.Itoa(len(js))
}

func le32(fs ...float32) []byte {
	b := make([]byte, 4*len(fs))
	for i, f := range fs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func le64(ns ...int64) []byte {
	b := make([]byte, 8*len(ns))
	for i, n := range ns {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(n))
	}
	return b
}

func le16(ns ...uint16) []byte {
	b := make([]byte, 2*len(ns))
	for i, n := range ns {
		binary.LittleEndian.PutUint16(b[2*i:], n)
	}
	return b
}

// doBinary posts body with Inference-Header-Content-Length hdr (none when hdr is "-").
func (ts *testServer) doBinary(t *testing.T, path string, body []byte, hdr string) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd" + path)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/octet-stream")
	if hdr != "-" {
		req.Header.Set(inferHeaderLength, hdr)
	}
	req.SetBody(body)
	if err := ts.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	r := response{status: resp.StatusCode(), header: map[string]string{}, body: append([]byte(nil), resp.Body()...)}
	for _, k := range []string{"Content-Type", inferHeaderLength} {
		r.header[k] = string(resp.Header.Peek(k))
	}
	return r
}

// binaryOutput is one output of a response in either form.
type binaryOutput struct {
	Name       string          `json:"name"`
	Datatype   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Data       json.RawMessage `json:"data"`
	Parameters *struct {
		BinaryDataSize *int64 `json:"binary_data_size"`
	} `json:"parameters"`
	bin []byte // the binary data, for a binary output
}

// splitResponse parses a response that may carry binary outputs, checking its framing.
func splitResponse(t *testing.T, r response) []binaryOutput {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	js, rest := r.body, []byte(nil)
	if h := r.header[inferHeaderLength]; h != "" {
		n, err := strconv.Atoi(h)
		if err != nil || n < 0 || n > len(r.body) {
			t.Fatalf("%s: %q for a body of %d bytes", inferHeaderLength, h, len(r.body))
		}
		js, rest = r.body[:n], r.body[n:]
		if ct := r.header["Content-Type"]; ct != "application/octet-stream" {
			t.Errorf("binary response Content-Type = %q", ct)
		}
	} else if ct := r.header["Content-Type"]; ct != "application/json" {
		t.Errorf("JSON response Content-Type = %q", ct)
	}
	var out struct {
		ModelName    string         `json:"model_name"`
		ModelVersion string         `json:"model_version"`
		ID           *string        `json:"id"`
		Outputs      []binaryOutput `json:"outputs"`
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("JSON part %q: %v", js, err)
	}
	for i := range out.Outputs {
		o := &out.Outputs[i]
		if o.Parameters == nil {
			if o.Data == nil {
				t.Fatalf("output %q has neither data nor binary_data_size", o.Name)
			}
			continue
		}
		if o.Data != nil || o.Parameters.BinaryDataSize == nil {
			t.Fatalf("binary output %q: data %s, parameters %+v", o.Name, o.Data, o.Parameters)
		}
		n := *o.Parameters.BinaryDataSize
		if n < 0 || n > int64(len(rest)) {
			t.Fatalf("output %q: binary_data_size %d with %d bytes left", o.Name, n, len(rest))
		}
		o.bin, rest = rest[:n], rest[n:]
	}
	if len(rest) != 0 {
		t.Fatalf("%d bytes after the binary outputs", len(rest))
	}
	return out.Outputs
}

// checkResponse checks the framing of an encoded response: a valid JSON part and, for
// binary outputs, exactly the bytes their binary_data_size announce.
func checkResponse(t *testing.T, m Model, req *inferRequest) {
	t.Helper()
	r := response{status: 200, header: map[string]string{"Content-Type": "application/json"}, body: req.out}
	if req.binOut {
		r.header["Content-Type"] = "application/octet-stream"
		r.header[inferHeaderLength] = strconv.Itoa(req.jsonLen)
	}
	if !req.binOut && !json.Valid(r.body) {
		t.Fatalf("%s: response is not valid JSON: %s", m.Name(), req.out)
	}
	splitResponse(t, r)
}

// TestBinaryRoundTrip sends FP32, INT64, BOOL, FP16 and BF16 inputs in binary and gets them
// back (the models echo) in binary and in JSON.
func TestBinaryRoundTrip(t *testing.T) {
	ts := startServer(t, binaryRegistry(), Options{})
	a := le32(0.1, -2.5, float32(math.Inf(1)), 3)
	e := le64(math.MinInt64, math.MaxInt64)
	c := []byte{1, 0}
	h := le16(0x3c00, 0xc000, 0x7bff, 0x0001) // 1, -2, 65504, smallest subnormal
	bf := le16(0x3f80, 0xc020, 0x7f80, 0x0000)
	x := le32(1, 2, 3, 4)

	t.Run("multi all binary", func(t *testing.T) {
		js := `{"id":"rt","parameters":{"binary_data_output":true},"inputs":[` +
			`{"name":"a","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}},` +
			`{"name":"b","datatype":"INT32","shape":[2,3],"data":[1,2,3,4,5,6]},` +
			`{"name":"c","datatype":"BOOL","shape":[2,1],"parameters":{"binary_data_size":2}},` +
			`{"name":"d","datatype":"UINT8","shape":[2],"data":[7,8]},` +
			`{"name":"e","datatype":"INT64","shape":[2],"parameters":{"binary_data_size":16}},` +
			`{"name":"f","datatype":"FP64","shape":[2,1],"data":[0.5,1]},` +
			`{"name":"g","datatype":"INT8","shape":[2,1],"data":[-1,1]},` +
			`{"name":"h","datatype":"UINT64","shape":[2,1],"data":[18446744073709551615,0]},` +
			`{"name":"i","datatype":"INT16","shape":[2,1],"data":[-300,1]},` +
			`{"name":"j","datatype":"UINT16","shape":[2,1],"data":[65535,1]},` +
			`{"name":"k","datatype":"UINT32","shape":[2,1],"data":[4294967295,1]}]}`
		body, hdr := binaryBody(js, a, c, e)
		outs := splitResponse(t, ts.doBinary(t, "/v2/models/multi/infer", body, hdr))
		if len(outs) != 11 {
			t.Fatalf("%d outputs", len(outs))
		}
		want := map[string][]byte{"a_out": a, "c_out": c, "e_out": e, "d_out": {7, 8}, "g_out": {0xff, 1}}
		for _, o := range outs {
			if o.bin == nil {
				t.Errorf("output %q not binary under binary_data_output", o.Name)
			}
			if w, ok := want[o.Name]; ok && !bytes.Equal(o.bin, w) {
				t.Errorf("output %q = %v, want %v", o.Name, o.bin, w)
			}
		}
		if fmt.Sprint(outs[0].Shape) != "[2 2]" || outs[0].Datatype != "FP32" {
			t.Errorf("a_out: %s %v", outs[0].Datatype, outs[0].Shape)
		}
	})

	t.Run("half binary in, binary and JSON out", func(t *testing.T) {
		js := `{"inputs":[{"name":"h","datatype":"FP16","shape":[2,2],"parameters":{"binary_data_size":8}},` +
			`{"name":"bf","datatype":"BF16","shape":[2,2],"parameters":{"binary_data_size":8}},` +
			`{"name":"x","datatype":"FP32","shape":[2,2],"parameters":{"binary_data_size":16}}],` +
			`"outputs":[{"name":"h_out","parameters":{"binary_data":true}},{"name":"bf_out"},{"name":"x_out","parameters":{"binary_data":true}},{"name":"h_out"}]}`
		body, hdr := binaryBody(js, h, bf, x)
		r := ts.doBinary(t, "/v2/models/half/infer", body, hdr)
		if r.status != 400 || !strings.Contains(errorMessage(t, r), `output "h_out" requested more than once`) {
			t.Fatalf("duplicate output: %d %s", r.status, r.body)
		}
		js = strings.Replace(js, `,{"name":"h_out"}]`, `]`, 1)
		body, hdr = binaryBody(js, h, bf, x)
		outs := splitResponse(t, ts.doBinary(t, "/v2/models/half/infer", body, hdr))
		if len(outs) != 3 || outs[0].Name != "h_out" || outs[1].Name != "bf_out" || outs[2].Name != "x_out" {
			t.Fatalf("outputs %+v", outs)
		}
		if !bytes.Equal(outs[0].bin, h) || outs[0].Datatype != "FP16" {
			t.Errorf("h_out = %s %v, want %v", outs[0].Datatype, outs[0].bin, h)
		}
		if outs[1].bin != nil || string(outs[1].Data) != "[1,-2.5,null,0]" {
			t.Errorf("bf_out as JSON = %s", outs[1].Data)
		}
		if !bytes.Equal(outs[2].bin, x) {
			t.Errorf("x_out = %v", outs[2].bin)
		}
	})

	t.Run("FP16 in JSON is refused", func(t *testing.T) {
		js := `{"inputs":[{"name":"h","datatype":"FP16","shape":[1,2],"data":[1,2]},` +
			`{"name":"bf","datatype":"BF16","shape":[1,2],"parameters":{"binary_data_size":4}},` +
			`{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`
		body, hdr := binaryBody(js, bf[:4])
		r := ts.doBinary(t, "/v2/models/half/infer", body, hdr)
		if msg := errorMessage(t, r); r.status != 400 || !strings.Contains(msg, `input "h": datatype FP16 is not supported in JSON requests; send it as binary data`) {
			t.Errorf("%d %s", r.status, msg)
		}
		js = `{"inputs":[{"name":"h","datatype":"FP16","shape":[1,2],"parameters":{"binary_data_size":4}},` +
			`{"name":"bf","datatype":"BF16","shape":[1,2],"data":[1,2]},` +
			`{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`
		body, hdr = binaryBody(js, h[:4])
		r = ts.doBinary(t, "/v2/models/half/infer", body, hdr)
		if msg := errorMessage(t, r); r.status != 400 || !strings.Contains(msg, `input "bf": datatype BF16 is not supported in JSON requests`) {
			t.Errorf("%d %s", r.status, msg)
		}
	})

	t.Run("policy INT64 and BOOL outputs", func(t *testing.T) {
		js := `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}],` +
			`"outputs":[{"name":"index","parameters":{"binary_data":true}},{"name":"positive","parameters":{"binary_data":true}},{"name":"action"}]}`
		body, hdr := binaryBody(js, le32(1, -2, 3.5, 0.1))
		outs := splitResponse(t, ts.doBinary(t, "/v2/models/policy/versions/1/infer", body, hdr))
		if !bytes.Equal(outs[0].bin, le64(bigIndex)) {
			t.Errorf("index = %v", outs[0].bin)
		}
		if !bytes.Equal(outs[1].bin, []byte{1, 0, 1, 1}) {
			t.Errorf("positive = %v", outs[1].bin)
		}
		if outs[2].bin != nil || string(outs[2].Data) != "[2,-4,7,0.2]" {
			t.Errorf("action = %s", outs[2].Data)
		}
	})
}

// TestBinaryOutputSelection: binary_data_output for all, binary_data per output, and a
// per-output false overriding the request's true.
func TestBinaryOutputSelection(t *testing.T) {
	ts := startServer(t, binaryRegistry(), Options{})
	const in = `"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]`
	cases := []struct {
		name, body string
		binary     []string // names of the outputs returned in binary, in order; nil = a JSON response
		all        []string // the names of every output returned, in order
	}{
		{"none", `{` + in + `}`, nil, []string{"action", "index", "positive", "special"}},
		{"all", `{"parameters":{"binary_data_output":true},` + in + `}`,
			[]string{"action", "index", "positive", "special"}, []string{"action", "index", "positive", "special"}},
		{"all false", `{"parameters":{"binary_data_output":false},` + in + `}`, nil, []string{"action", "index", "positive", "special"}},
		{"one", `{` + in + `,"outputs":[{"name":"special"},{"name":"action","parameters":{"binary_data":true}}]}`,
			[]string{"action"}, []string{"special", "action"}},
		{"all but one", `{"parameters":{"binary_data_output":true},` + in + `,"outputs":[{"name":"index","parameters":{"binary_data":false}},{"name":"action"},{"name":"positive"}]}`,
			[]string{"action", "positive"}, []string{"index", "action", "positive"}},
		{"explicit false", `{` + in + `,"outputs":[{"name":"index","parameters":{"binary_data":false}}]}`, nil, []string{"index"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := ts.doBinary(t, "/v2/models/policy/versions/1/infer", []byte(c.body), "-")
			outs := splitResponse(t, r)
			if (c.binary == nil) != (r.header[inferHeaderLength] == "") {
				t.Errorf("%s = %q", inferHeaderLength, r.header[inferHeaderLength])
			}
			var names, bin []string
			for _, o := range outs {
				names = append(names, o.Name)
				if o.bin != nil {
					bin = append(bin, o.Name)
				}
			}
			if fmt.Sprint(names) != fmt.Sprint(c.all) || fmt.Sprint(bin) != fmt.Sprint(c.binary) {
				t.Errorf("outputs %v, binary %v; want %v, %v", names, bin, c.all, c.binary)
			}
		})
	}
}

// TestBinaryFramingLies: every inconsistency between the header, the parameters, the shapes
// and the body is a 400 naming it, and no model runs.
func TestBinaryFramingLies(t *testing.T) {
	reg := binaryRegistry()
	ts := startServer(t, reg, Options{})
	ran := false
	for _, ms := range reg.models {
		for _, m := range ms {
			m.hook = func(context.Context) { ran = true }
		}
	}
	obs := le32(1, 2, 3, 4)
	const one = `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}`
	jsLen := strconv.Itoa(len(one))
	twoIn := func(a, e int) string {
		return `{"inputs":[{"name":"a","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":` + strconv.Itoa(a) + `}},` +
			`{"name":"b","datatype":"INT32","shape":[1,3],"data":[1,2,3]},{"name":"c","datatype":"BOOL","shape":[1,1],"data":[true]},` +
			`{"name":"d","datatype":"UINT8","shape":[2],"data":[1,2]},` +
			`{"name":"e","datatype":"INT64","shape":[1],"parameters":{"binary_data_size":` + strconv.Itoa(e) + `}},` +
			`{"name":"f","datatype":"FP64","shape":[1,1],"data":[1]},{"name":"g","datatype":"INT8","shape":[1,1],"data":[1]},` +
			`{"name":"h","datatype":"UINT64","shape":[1,1],"data":[1]},{"name":"i","datatype":"INT16","shape":[1,1],"data":[1]},` +
			`{"name":"j","datatype":"UINT16","shape":[1,1],"data":[1]},{"name":"k","datatype":"UINT32","shape":[1,1],"data":[1]}]}`
	}
	cat := func(s string, parts ...[]byte) []byte { b, _ := binaryBody(s, parts...); return b }
	cases := []struct {
		name  string
		model string
		hdr   string // "-": no header; "": the length of json
		json  string
		body  []byte // nil: json followed by obs
		want  string
	}{
		{"header not a number", "", "abc", one, nil, `header Inference-Header-Content-Length: "abc" is not a number`},
		{"header empty", "", " ", one, nil, `header Inference-Header-Content-Length: "" is not a number`},
		{"header hex", "", "0x10", one, nil, `"0x10" is not a number`},
		{"header with a sign", "", "+" + jsLen, one, nil, `is not a number`},
		{"header fractional", "", jsLen + ".0", one, nil, `is not a number`},
		{"header negative", "", "-5", one, nil, `header Inference-Header-Content-Length: -5 is negative`},
		{"header larger than the body", "", "100000", one, nil, `header Inference-Header-Content-Length: 100000 is larger than the body (` + strconv.Itoa(len(one)+16) + ` bytes)`},
		{"header beyond int64", "", "99999999999999999999999999", one, nil, `is larger than the body`},
		{"header cuts the JSON", "", strconv.Itoa(len(one) - 3), one, nil, `invalid JSON`},
		{"header takes binary into the JSON", "", strconv.Itoa(len(one) + 4), one, nil, `invalid JSON`},
		{"no header", "", "-", one, nil, `invalid JSON`},
		{"size smaller than the shape", "", "", strings.Replace(one, "16}", "12}", 1), cat(strings.Replace(one, "16}", "12}", 1), obs[:12]),
			`input "obs": "binary_data_size" is 12, but shape [1,4] of FP32 takes 16 bytes`},
		{"size larger than the shape", "", "", strings.Replace(one, "16}", "20}", 1), cat(strings.Replace(one, "16}", "20}", 1), obs, obs[:4]),
			`input "obs": "binary_data_size" is 20, but shape [1,4] of FP32 takes 16 bytes`},
		{"size huge", "", "", strings.Replace(one, "16}", "9223372036854775807}", 1), nil, `"binary_data_size" is 9223372036854775807, but shape [1,4] of FP32 takes 16 bytes`},
		{"size beyond int64", "", "", strings.Replace(one, "16}", "99999999999999999999}", 1), nil, `"binary_data_size" 99999999999999999999 is out of range`},
		{"size negative", "", "", strings.Replace(one, "16}", "-16}", 1), nil, `input "obs": "binary_data_size" -16 is negative`},
		{"size a string", "", "", strings.Replace(one, "16}", `"16"}`, 1), nil, `"binary_data_size" must be a non-negative integer`},
		{"size NaN", "", "", strings.Replace(one, "16}", `NaN}`, 1), nil, `"binary_data_size" must be a non-negative integer`},
		{"body shorter than the sizes", "", "", one, cat(one, obs[:10]),
			`input "obs": "binary_data_size" 16 runs past the end of the body: 10 bytes of binary data left (10 after the JSON)`},
		{"body empty after the JSON", "", "", one, cat(one), `runs past the end of the body: 0 bytes of binary data left`},
		{"body longer than the sizes", "", "", one, cat(one, obs, []byte{9, 9, 9}),
			`19 bytes of binary data follow the JSON, but the inputs' "binary_data_size" add up to 16`},
		{"binary bytes without binary inputs", "", "", `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, nil,
			`16 bytes of binary data follow the JSON (header Inference-Header-Content-Length), but no input has "binary_data_size"`},
		{"size and data", "", "", strings.Replace(one, `"parameters"`, `"data":[1,2,3,4],"parameters"`, 1), nil,
			`input "obs": both "data" and "binary_data_size" given; send one`},
		{"BYTES", "", "", strings.Replace(one, "FP32", "BYTES", 1), nil, `input "obs": BYTES tensors are not supported as binary data`},
		{"wrong datatype", "", "", strings.Replace(one, "FP32", "FP16", 1), nil, `input "obs": expected datatype FP32, got FP16`},
		{"wrong shape", "", "", strings.Replace(one, "[1,4]", "[4]", 1), nil, `input "obs": expected shape [-1,4], got [4]`},
		{"second input past the end", "multi", "", twoIn(8, 8), cat(twoIn(8, 8), le32(1, 2), le64(1)[:7]),
			`input "e": "binary_data_size" 8 runs past the end of the body: 7 bytes of binary data left (15 after the JSON)`},
		{"sizes sum short", "multi", "", twoIn(8, 8), cat(twoIn(8, 8), le32(1, 2), le64(1), []byte{0}),
			`17 bytes of binary data follow the JSON, but the inputs' "binary_data_size" add up to 16`},
		{"first size eats the second", "multi", "", twoIn(16, 8), cat(twoIn(16, 8), le32(1, 2), le64(1)),
			`input "a": "binary_data_size" is 16, but shape [1,2] of FP32 takes 8 bytes`},
		{"BOOL byte not 0 or 1", "multi", "", strings.Replace(twoIn(8, 8), `"data":[true]`, `"parameters":{"binary_data_size":1}`, 1),
			cat(strings.Replace(twoIn(8, 8), `"data":[true]`, `"parameters":{"binary_data_size":1}`, 1), le32(1, 2), []byte{2}, le64(1)),
			`input "c": element 0: a BOOL byte must be 0 or 1, got 2`},
		{"binary batch sizes differ", "multi", "", strings.Replace(twoIn(8, 16), `"shape":[1],`, `"shape":[2],`, 1),
			cat(strings.Replace(twoIn(8, 16), `"shape":[1],`, `"shape":[2],`, 1), le32(1, 2), le64(1, 2)),
			`input "e": batch size 2 differs from batch size 1 of input "a"`},
		{"FP16 as JSON", "half", "", `{"inputs":[{"name":"h","datatype":"FP16","shape":[1,2],"data":[1,2]}]}`, []byte(`{"inputs":[{"name":"h","datatype":"FP16","shape":[1,2],"data":[1,2]}]}`),
			`input "h": datatype FP16 is not supported in JSON requests; send it as binary data ("binary_data_size")`},
		{"binary_data_output not a boolean", "", "", strings.Replace(one, `{"inputs"`, `{"parameters":{"binary_data_output":"true"},"inputs"`, 1), nil,
			`"parameters": "binary_data_output" must be true or false, got string`},
		{"binary_data not a boolean", "", "", strings.Replace(one, `]}`, `],"outputs":[{"name":"action","parameters":{"binary_data":1}}]}`, 1), nil,
			`output "action": "binary_data" must be true or false, got number`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := c.body
			if body == nil {
				body = cat(c.json, obs)
			}
			hdr := c.hdr
			if hdr == "" {
				hdr = strconv.Itoa(len(c.json))
			}
			model := c.model
			if model == "" {
				model = "policy"
			}
			r := ts.doBinary(t, "/v2/models/"+model+"/versions/1/infer", body, hdr)
			if r.status != 400 {
				t.Fatalf("status %d, want 400: %s", r.status, r.body)
			}
			if msg := errorMessage(t, r); !strings.Contains(msg, c.want) {
				t.Errorf("error %q\nwant it to contain %q", msg, c.want)
			}
		})
	}
	if ran {
		t.Error("a model ran for a request with lies in its framing")
	}
}

// TestBinaryInputIsAView: an aligned binary input goes to the engine as a view of the body; a
// misaligned one is copied into the request's buffer. Both decode the same values, and a
// decode in steady state allocates nothing.
func TestBinaryInputIsAView(t *testing.T) {
	m := benchModel()
	var p fastjson.Parser
	req := newInferRequest()
	for pad := 0; pad < 4; pad++ {
		js, data := binaryBenchRequest(2, pad)
		body := append(append(make([]byte, 0, len(js)+len(data)), js...), data...)
		if err := req.decodeParts(&p, body[:len(js)], body[len(js):], m); err != nil {
			t.Fatal(err)
		}
		got := req.tensors[0].Data
		if !bytes.Equal(got, data) {
			t.Fatalf("pad %d: decoded %v", pad, got[:8])
		}
		aligned := uintptr(unsafe.Pointer(&body[len(js)]))%4 == 0
		if view := &got[0] == &body[len(js)]; view != aligned {
			t.Errorf("pad %d: view of the body %v, aligned %v", pad, view, aligned)
		}
		if cap(got) != len(got) && &got[0] == &body[len(js)] {
			t.Errorf("a view lets the engine see past the tensor: cap %d len %d", cap(got), len(got))
		}
		allocs := testing.AllocsPerRun(50, func() {
			if err := req.decodeParts(&p, body[:len(js)], body[len(js):], m); err != nil {
				t.Fatal(err)
			}
		})
		if allocs > 0 {
			t.Errorf("pad %d: binary decode allocates %.1f times per request", pad, allocs)
		}
	}
	req.release()
	if req.bin != nil {
		t.Error("a released request keeps a view of the body")
	}
}

func TestSplitBody(t *testing.T) {
	body := []byte("0123456789")
	for _, c := range []struct {
		hdr      string
		js, bin  string
		errorSub string
	}{
		{"0", "", "0123456789", ""},
		{"4", "0123", "456789", ""},
		{"10", "0123456789", "", ""},
		{"0010", "0123456789", "", ""},
		{"11", "", "", "11 is larger than the body (10 bytes)"},
		{"-0", "", "", "-0 is negative"},
		{"-", "", "", `"-" is not a number`},
		{"", "", "", `"" is not a number`},
		{"1 0", "", "", `"1 0" is not a number`},
		{"18446744073709551617", "", "", "is larger than the body"},
	} {
		js, bin, err := splitBody([]byte(c.hdr), body)
		if c.errorSub != "" {
			if err == nil || !strings.Contains(err.Error(), c.errorSub) {
				t.Errorf("splitBody(%q) error %v, want %q", c.hdr, err, c.errorSub)
			}
			continue
		}
		if err != nil || string(js) != c.js || string(bin) != c.bin {
			t.Errorf("splitBody(%q) = %q %q %v", c.hdr, js, bin, err)
		}
	}
	if js, bin, err := splitBody(nil, body); err != nil || string(js) != string(body) || bin != nil {
		t.Errorf("no header: %q %q %v", js, bin, err)
	}
}

// FuzzDecodeBinaryRequest feeds arbitrary headers and bodies to the binary framing and the
// decoder for four signatures. It must never panic or read past the body; what it accepts must
// match the signature, and the response must be framed consistently.
func FuzzDecodeBinaryRequest(f *testing.F) {
	for _, pad := range []int{0, 1} {
		js, data := binaryBenchRequest(3, pad)
		body, hdr := binaryBody(string(js), data)
		f.Add(hdr, body)
	}
	one := `{"parameters":{"binary_data_output":true},"inputs":[{"name":"obs","datatype":"FP32","shape":[2,4],"parameters":{"binary_data_size":32}}],"outputs":[{"name":"index"},{"name":"action","parameters":{"binary_data":false}}]}`
	b, h := binaryBody(one, le32(1, 2, 3, 4, 5, 6, 7, 8))
	f.Add(h, b)
	half := `{"inputs":[{"name":"h","datatype":"FP16","shape":[1,2],"parameters":{"binary_data_size":4}},{"name":"bf","datatype":"BF16","shape":[1,2],"parameters":{"binary_data_size":4}},{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}],"outputs":[{"name":"h_out","parameters":{"binary_data":true}}]}`
	b, h = binaryBody(half, le16(0x3c00, 0x7c00), le16(0x3f80, 0))
	f.Add(h, b)
	fixed := `{"inputs":[{"name":"x","datatype":"INT8","shape":[1,3],"parameters":{"binary_data_size":3}}],"parameters":{"binary_data_output":true}}`
	b, h = binaryBody(fixed, []byte{1, 0xff, 7})
	f.Add(h, b)
	f.Add("-1", b)
	f.Add("abc", b)
	f.Add("99999999999999999999", b)

	models := []*fakeModel{policyModel("1"), float16Model(), fixedModel(), benchModel()}
	models[3].run = func(in []bridge.Tensor) []bridge.Tensor {
		return []bridge.Tensor{{DType: bridge.Float32, Shape: append([]int64(nil), in[0].Shape...), Data: append([]byte(nil), in[0].Data...)}}
	}
	var parsers fastjson.ParserPool
	req := newInferRequest()
	f.Fuzz(func(t *testing.T, hdr string, body []byte) {
		body = body[:len(body):len(body)] // an over-read shows as a panic
		for _, m := range models {
			js, bin, err := splitBody([]byte(hdr), body)
			if err == nil {
				p := parsers.Get()
				err = req.decodeParts(p, js, bin, m)
				parsers.Put(p)
			}
			if err != nil {
				if _, ok := err.(*requestError); !ok {
					t.Fatalf("%s: error %T (%v), want *requestError", m.name, err, err)
				}
				if err.Error() == "" || len(err.Error()) > 2000 {
					t.Fatalf("%s: error message of %d bytes", m.name, len(err.Error()))
				}
				continue
			}
			checkDecoded(t, m, req)
			if req.binOff != len(bin) {
				t.Fatalf("%s: accepted with %d of %d binary bytes used", m.name, req.binOff, len(bin))
			}
			req.model = m
			if err := m.Do(context.Background(), req.tensors, engines.RunOptions{}, req.encode); err != nil {
				t.Fatalf("%s: encode after a successful decode: %v", m.name, err)
			}
			checkResponse(t, m, req)
			req.release()
		}
	})
}

// binaryBenchRequest is a batch-n request of mlp-med's observation (n×64 FP32) in binary: the
// JSON part (pad spaces before its closing brace shift the binary data) and the data.
func binaryBenchRequest(n, pad int) (js, data []byte) {
	js = fmt.Appendf(nil, `{"id":"bench","inputs":[{"name":"obs","shape":[%d,64],"datatype":"FP32","parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}%s}`,
		n, 4*64*n, strings.Repeat(" ", pad))
	data = make([]byte, 4*64*n)
	for i := 0; i < 64*n; i++ {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(i)*0.0123456-0.4))
	}
	return js, data
}

// BenchmarkDecodeBinaryRequest decodes a batch-32 mlp-med request (32×64 FP32) in binary
// form; "aligned" takes the tensor as a view of the body, "misaligned" copies it.
func BenchmarkDecodeBinaryRequest(b *testing.B) {
	m := benchModel()
	for _, c := range []struct {
		name string
		pad  int
	}{{"aligned", 0}, {"misaligned", 1}} {
		js, data := binaryBenchRequest(32, 0)
		// Place the binary part at an address aligned (or not) for FP32, whatever the JSON length.
		buf := make([]byte, len(js)+len(data)+8)
		start := (4 - (uintptr(unsafe.Pointer(&buf[len(js)])) % 4)) % 4
		start += uintptr(c.pad)
		body := buf[start : int(start)+len(js)+len(data)]
		copy(body, js)
		copy(body[len(js):], data)
		hdr := []byte(strconv.Itoa(len(js)))
		b.Run(c.name, func(b *testing.B) {
			var parsers fastjson.ParserPool
			req := newInferRequest()
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				jsp, bin, err := splitBody(hdr, body)
				if err != nil {
					b.Fatal(err)
				}
				p := parsers.Get()
				if err := req.decodeParts(p, jsp, bin, m); err != nil {
					b.Fatal(err)
				}
				parsers.Put(p)
			}
		})
	}
}

// echoBatch32Model is benchModel answering a batch-32 mlp-med request (32×64 FP32) with its
// input, from one output buffer it reuses.
func echoBatch32Model() *fakeModel {
	m := benchModel()
	out := make([]byte, 4*64*32)
	outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{32, 64}, Data: out}}
	m.run = func(in []bridge.Tensor) []bridge.Tensor {
		copy(out, in[0].Data)
		return outs
	}
	m.keepOutputs = true
	return m
}

// BenchmarkInferHandlerBatch32 runs the whole handler for a batch-32 mlp-med request (32×64
// FP32 in, 32×64 FP32 out) in JSON and in binary, against a model that reuses its output.
func BenchmarkInferHandlerBatch32(b *testing.B) {
	m := echoBatch32Model()
	h := New(newFakeRegistry(m), nil, Options{}).Handler()

	js, data := binaryBenchRequest(32, 0)
	binBody, hdr := binaryBody(string(js), data)
	var sb strings.Builder
	sb.WriteString(`{"id":"bench","inputs":[{"name":"obs","shape":[32,64],"datatype":"FP32","data":[`)
	for i := 0; i < 32*64; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprint(&sb, math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:])))
	}
	sb.WriteString(`]}]}`)
	jsonBody := []byte(sb.String())

	for _, c := range []struct {
		name string
		body []byte
		hdr  string
	}{{"json", jsonBody, ""}, {"binary", binBody, hdr}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.body)))
			b.ReportAllocs()
			benchInfer(b, h, "/v2/models/mlp/versions/1/infer", c.body, inferHeaderLength, c.hdr)
		})
	}
}
