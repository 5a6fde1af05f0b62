package server

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// What a request can make the server do is bounded by the request: shapes cannot wrap, the
// memory a decode takes is its tensors (not a multiple of its body), and nothing the client
// sends comes back longer than a few dozen bytes. These tests use only the decode entry points
// and HTTP, so they run against any version of the decoder.

// freeDimModel is a fake [B, M] → [B, M] model (M free, as a [B, T, F] sequence input has) that
// copies its input.
func freeDimModel() *fakeModel {
	io := []bridge.IOInfo{{Name: "x", DType: bridge.Float32, Shape: []int64{-1, -1}}}
	return &fakeModel{
		name: "free", version: "1", batchable: true,
		inputs:  io,
		outputs: []bridge.IOInfo{{Name: "y", DType: bridge.Float32, Shape: []int64{-1, -1}}},
		run: func(in []bridge.Tensor) []bridge.Tensor {
			return []bridge.Tensor{{DType: bridge.Float32, Shape: append([]int64(nil), in[0].Shape...), Data: append([]byte(nil), in[0].Data...)}}
		},
	}
}

// Shapes whose element count wraps in 64 bits ([3, 6148914691236517206] is 2 mod 2^64,
// [4, 2^62] is 0) are refused naming the input, in JSON and in binary, before the model runs.
func TestWrappingShapesRefused(t *testing.T) {
	m := freeDimModel()
	ran := false
	m.hook = func(context.Context) { ran = true }
	ts := startServer(t, newFakeRegistry(m), Options{})
	for _, c := range []struct{ name, shape, data string }{
		{"wraps to 2", "[3,6148914691236517206]", "[1,2]"},
		{"wraps to 0", "[4,4611686018427387904]", "[]"},
		{"beyond 2^31 elements", "[2,1073741824]", "[1]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := `{"inputs":[{"name":"x","datatype":"FP32","shape":` + c.shape + `,"data":` + c.data + `}]}`
			r := ts.do(t, "POST", "/v2/models/free/infer", []byte(body))
			want := `input "x": shape ` + c.shape + ` has too many elements`
			if r.status != fasthttp.StatusBadRequest || !strings.Contains(errorMessage(t, r), want) {
				t.Errorf("status %d %s, want 400 saying %s", r.status, r.body, want)
			}
			js := `{"inputs":[{"name":"x","datatype":"FP32","shape":` + c.shape + `,"parameters":{"binary_data_size":8}}]}`
			b, hdr := binaryBody(js, le32(1, 2))
			r = ts.doHeader(t, "/v2/models/free/infer", b, inferHeaderLength, hdr)
			if r.status != fasthttp.StatusBadRequest || !strings.Contains(errorMessage(t, r), want) {
				t.Errorf("binary: status %d %s, want 400 saying %s", r.status, r.body, want)
			}
		})
	}
	if ran {
		t.Error("the model ran")
	}
	// The same model answers a shape it can carry.
	r := ts.do(t, "POST", "/v2/models/free/infer", []byte(`{"inputs":[{"name":"x","datatype":"FP32","shape":[1,3],"data":[1,2,3]}]}`))
	if r.status != 200 {
		t.Errorf("[1,3]: %d %s", r.status, r.body)
	}
}

// doHeader posts body with one extra header.
func (ts *testServer) doHeader(t *testing.T, path string, body []byte, key, value string) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd" + path)
	req.Header.SetMethod("POST")
	req.Header.Set(key, value)
	req.SetBody(body)
	if err := ts.client.Do(req, resp); err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	r := response{status: resp.StatusCode(), header: map[string]string{}, body: append([]byte(nil), resp.Body()...)}
	r.header["Content-Type"] = string(resp.Header.Peek("Content-Type"))
	return r
}

// allocated returns the bytes fn allocates (runtime.MemStats.TotalAlloc, which counts every
// allocation, freed or not).
func allocated(fn func()) uint64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	fn()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// bigData is a data array of n copies of value.
func bigData(n int, value string) []byte {
	var b bytes.Buffer
	b.Grow(n * (len(value) + 1))
	b.WriteByte('[')
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(value)
	}
	b.WriteByte(']')
	return b.Bytes()
}

// A 15 MiB JSON body costs its tensors, not a multiple of itself: refused (too many values
// for its shape, or a shape it cannot carry) it allocates under 2 MiB; accepted, about its
// input buffer.
func TestDecodeMemoryBoundedByBody(t *testing.T) {
	if testing.Short() {
		t.Skip("15 MiB bodies")
	}
	m := policyModel("1") // obs FP32 [-1,4]
	const values = 15 << 20 / 4
	data := bigData(values, "0.5") // 4 bytes per value
	body := func(shape string) []byte {
		return append(append([]byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":`+shape+`,"data":`), data...), "}]}"...)
	}
	req := newInferRequest()
	for _, c := range []struct {
		name, shape, err string
	}{
		{"surplus values", "[1,4]", fmt.Sprintf(`input "obs": shape [1,4] needs 4 elements, data has %d`, values)},
		{"missing values", fmt.Sprintf("[%d,4]", values/2), fmt.Sprintf("needs %d elements, data has %d", values/2*4, values)},
		{"wrapping shape", "[4611686018427387904,4]", `input "obs": shape [4611686018427387904,4] has too many elements`},
	} {
		b := body(c.shape)
		var err error
		n := allocated(func() { err = req.decode(new(fastjson.Parser), b, m) })
		if err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.err)
		}
		if n > 2<<20 {
			t.Errorf("%s: a refused %d MiB body allocated %.1f MiB", c.name, len(b)>>20, float64(n)/(1<<20))
		}
		t.Logf("%s: refused %d MiB body allocated %d bytes", c.name, len(b)>>20, n)
		req.release()
	}
	b := body(fmt.Sprintf("[%d,4]", values/4))
	var err error
	n := allocated(func() { err = req.decode(new(fastjson.Parser), b, m) })
	if err != nil {
		t.Fatal(err)
	}
	if buf := uint64(4 * values); n > buf+1<<20 {
		t.Errorf("an accepted %d MiB body allocated %.1f MiB for a %.1f MiB input", len(b)>>20, float64(n)/(1<<20), float64(buf)/(1<<20))
	}
	t.Logf("accepted %d MiB body allocated %d bytes (input buffer %d)", len(b)>>20, n, 4*values)
	req.release()
	if req.bufs[0] != nil {
		t.Error("a pooled request keeps a 15 MiB buffer")
	}
}

// The row format of :predict takes what the lists hold, and so is bounded the same way: a
// 15 MiB body refused at its last row allocated its input buffer at most.
func TestPredictMemoryBoundedByBody(t *testing.T) {
	if testing.Short() {
		t.Skip("15 MiB bodies")
	}
	m := policyModel("1")
	var b bytes.Buffer
	b.WriteString(`{"instances":[`)
	const rows = 15 << 20 / 18
	for i := 0; i < rows; i++ {
		b.WriteString(`[0.5,0.5,0.5,0.5],`)
	}
	b.WriteString(`[1,2,3]]}`) // the last row is short: refused after reading them all
	req := predictRequests.Get().(*predictRequest)
	var err error
	n := allocated(func() { err = req.decode(b.Bytes(), m.Inputs()) })
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("instances[%d]: input \"obs\": shape [3] differs", rows)) {
		t.Errorf("error %.200v", err)
	}
	if buf := uint64(4 * 4 * (rows + 1)); n > buf+1<<20 {
		t.Errorf("a refused %d MiB :predict body allocated %.1f MiB (input buffer %.1f MiB)", b.Len()>>20, float64(n)/(1<<20), float64(buf)/(1<<20))
	}
	t.Logf("refused %d MiB :predict body allocated %d bytes", b.Len()>>20, n)
	req.put()
}

// String ids are bounded (256 bytes) and no error echoes more than a clipped prefix of what
// the client sent, however long.
func TestClientStringsBounded(t *testing.T) {
	seq := recurrentModel(t, engines.SequenceSpec{})
	ts := startServer(t, newFakeRegistry(policyModel("1"), seq, pairModel()), Options{})
	obs := `"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]`
	id256 := strings.Repeat("i", 256)
	if r := ts.do(t, "POST", "/v2/models/policy/infer", []byte(`{"id":"`+id256+`",`+obs+`}`)); r.status != 200 ||
		!strings.Contains(string(r.body), `"id":"`+id256+`"`) {
		t.Errorf("a 256-byte id: %d %.300s", r.status, r.body)
	}
	huge := strings.Repeat("x", 8<<20)
	for _, c := range []struct{ name, path, body, want string }{
		{"id of 257 bytes", "/v2/models/policy/infer", `{"id":"` + id256 + `i",` + obs + `}`, `"id" is longer than 256 bytes`},
		{"id of 8 MiB", "/v2/models/policy/infer", `{"id":"` + huge + `",` + obs + `}`, `"id" is longer than 256 bytes`},
		{"escaped id over the limit", "/v2/models/policy/infer", `{"id":"` + strings.Repeat(`\u00e9`, 129) + `",` + obs + `}`, `"id" is longer than 256 bytes`},
		{"sequence_id of 8 MiB", "/v2/models/rnn/infer",
			`{"parameters":{"sequence_id":"` + huge + `","sequence_start":true},"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`,
			`"parameters": "sequence_id" is longer than 256 bytes`},
		{"input name of 8 MiB", "/v2/models/policy/infer", `{"inputs":[{"name":"` + huge + `","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`, `unknown input "xxxx`},
		{"datatype of 8 MiB", "/v2/models/policy/infer", `{"inputs":[{"name":"obs","datatype":"` + huge + `","shape":[1,4],"data":[1,2,3,4]}]}`, `expected datatype FP32, got xxx`},
		{"number of 8 MiB", "/v2/models/policy/infer", `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,` + "1e" + strings.Repeat("9", 1<<20) + `]}]}`, `input "obs": element 3: 1e999999999999999999999999999999... is out of range for FP32`},
		{"output name of 8 MiB", "/v2/models/policy/infer", `{` + obs + `,"outputs":[{"name":"` + huge + `"}]}`, `unknown output "xxx`},
		{"predict input of 8 MiB", "/v1/models/pair:predict", `{"instances":[{"` + huge + `":[1,2,3]}]}`, `instances[0]: unknown input "xxx`},
		{"signature of 8 MiB", "/v1/models/policy:predict", `{"signature_name":"` + huge + `","instances":[[1,2,3,4]]}`, `unknown signature_name "xxx`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do(t, "POST", c.path, []byte(c.body))
			if r.status != 400 {
				t.Fatalf("status %d %.300s", r.status, r.body)
			}
			if msg := errorMessage(t, r); !strings.Contains(msg, c.want) {
				t.Errorf("error %q, want it to contain %q", msg, c.want)
			}
			if len(r.body) > 512 {
				t.Errorf("error body of %d bytes: %.300s...", len(r.body), r.body)
			}
		})
	}
	// The sequence was not started: a step of it is unknown.
	r := ts.do(t, "POST", "/v2/models/rnn/infer", []byte(`{"parameters":{"sequence_id":"`+huge+`"},"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,2]}]}`))
	if r.status != 400 || len(r.body) > 512 {
		t.Errorf("a step of an 8 MiB sequence_id: %d, %d bytes", r.status, len(r.body))
	}
}

// A JSON syntax error says what was expected and where, in a short message, wherever in a
// large body it is.
func TestJSONErrorShowsCause(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	pad := strings.Repeat(" ", 1<<20)
	for _, c := range []struct{ name, body, want string }{
		{"missing comma", `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3` + pad + ` 4]}]}`,
			"invalid JSON: expected ',' or ']' after an array element, found '4' at byte 1048647"},
		{"unterminated string", `{"id":"abc` + pad, `invalid JSON: unterminated string at byte 6`},
		{"end of the body", `{"inputs":[` + pad, "invalid JSON: expected a value, found the end of the body at byte 1048587"},
		{"trailing data", `{"inputs":[]}` + pad + `x`, "invalid JSON: unexpected 'x' after the top-level value at byte 1048589"},
		{"missing colon", `{"inputs" []}`, "invalid JSON: expected ':' after an object key, found '[' at byte 10"},
		{"bad key", `{inputs: []}`, "invalid JSON: expected a string key, found 'i' at byte 1"},
		{"control character", "{\"id\":\"a\x01\"}", "invalid JSON: control character byte 0x1 in a string at byte 8"},
		{"bad escape", `{"id":"a\x"}`, `invalid JSON: invalid escape in a string at byte 8`},
		{"bad unicode escape", `{"id":"\u12"}`, `invalid JSON: invalid \u escape in a string at byte 7`},
		{"invalid UTF-8", "{\"id\":\"\xff\"}", "invalid JSON: invalid UTF-8 in a string at byte 7"},
		{"too deep", `{"inputs":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`, "invalid JSON: arrays and objects nested deeper than 64 levels at byte 73"},
		{"bad literal", `{"inputs":[tru]}`, "invalid JSON: expected true at byte 11"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := ts.do(t, "POST", "/v2/models/policy/infer", []byte(c.body))
			if r.status != 400 {
				t.Fatalf("status %d", r.status)
			}
			if msg := errorMessage(t, r); msg != c.want {
				t.Errorf("error %q\nwant     %q", msg, c.want)
			}
		})
	}
}

// :predict rows are all lists (values) or all objects {input name: value}: a mix is refused,
// naming the first row that differs.
func TestPredictMixedRows(t *testing.T) {
	ts := startServer(t, predictRegistry(), Options{})
	for _, c := range []struct{ body, want string }{
		{`{"instances":[[1,2,3,4],{"obs":[1,2,3,4]}]}`, "instances[1] is an object, but instances[0] is a list"},
		{`{"instances":[{"obs":[1,2,3,4]},{"obs":[1,2,3,4]},[1,2,3,4]]}`, "instances[2] is a list, but instances[0] is an object"},
		{`{"instances":[{"obs":[1,2,3,4]},7]}`, "instances[1] is a number, but instances[0] is an object"},
	} {
		r := ts.do(t, "POST", "/v1/models/policy:predict", []byte(c.body))
		if r.status != 400 || !strings.Contains(errorMessage(t, r), c.want) {
			t.Errorf("%s: status %d %s, want 400 saying %s", c.body, r.status, r.body, c.want)
		}
	}
	for _, body := range []string{`{"instances":[[1,2,3,4],[5,6,7,8]]}`, `{"instances":[{"obs":[1,2,3,4]},{"obs":[5,6,7,8]}]}`} {
		if r := ts.do(t, "POST", "/v1/models/policy:predict", []byte(body)); r.status != 200 {
			t.Errorf("%s: %d %s", body, r.status, r.body)
		}
	}
}
