package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fastjson"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// FuzzDecodeInferRequest feeds arbitrary bodies to the decoder for three signatures. It must
// never panic; what it accepts must be consistent with the signature and encode to valid JSON.
// Seeds: testdata/requests/*.json, the bodies of testdata/invalid.json, and
// testdata/fuzz/FuzzDecodeInferRequest (regressions).
func FuzzDecodeInferRequest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range loadInvalidCases(f) {
		f.Add(c.body())
	}
	f.Add([]byte(`{"parameters":{"priority":2,"timeout":1500,"seed":18446744073709551615},"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`))
	models := []*fakeModel{policyModel("1"), multiModel(), fixedModel()}
	var parsers fastjson.ParserPool
	req := newInferRequest()
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, m := range models {
			p := parsers.Get()
			err := req.decode(p, body, m)
			parsers.Put(p)
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
			req.model = m
			if err := m.Do(context.Background(), req.tensors, engines.RunOptions{}, req.encode); err != nil {
				t.Fatalf("%s: encode after a successful decode: %v", m.name, err)
			}
			checkResponse(t, m, req)
			req.release()
		}
	})
}

// checkDecoded verifies what decode promises for an accepted request.
func checkDecoded(t *testing.T, m Model, req *inferRequest) {
	t.Helper()
	ins := m.Inputs()
	if len(req.tensors) != len(ins) {
		t.Fatalf("%d tensors for %d inputs", len(req.tensors), len(ins))
	}
	for k, tn := range req.tensors {
		if tn.DType != ins[k].DType || !shapeMatches(ins[k].Shape, tn.Shape) {
			t.Fatalf("input %q: decoded %s%v against %s%v", ins[k].Name, tn.DType, tn.Shape, ins[k].DType, ins[k].Shape)
		}
		if want := bridge.NumElements(tn.Shape) * int64(tn.DType.Size()); int64(len(tn.Data)) != want {
			t.Fatalf("input %q: %d bytes for %v", ins[k].Name, len(tn.Data), tn.Shape)
		}
	}
}

// decodeFor decodes body for m with a fresh request.
func decodeFor(t *testing.T, m Model, body string) (*inferRequest, error) {
	t.Helper()
	var p fastjson.Parser
	req := newInferRequest()
	return req, req.decode(&p, []byte(body), m)
}

func TestDecodeValues(t *testing.T) {
	req, err := decodeFor(t, multiModel(), string(readTestdata(t, "requests/multi_all.json")))
	if err != nil {
		t.Fatal(err)
	}
	checkDecoded(t, multiModel(), req)
	f32 := func(b []byte, i int) float32 { return math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:])) }
	a := req.tensors[0].Data
	if f32(a, 0) != 0.1 || f32(a, 1) != -2.5 || f32(a, 2) != 16777216 || f32(a, 3) != float32(1e-40) {
		t.Errorf("a = %v %v %v %v", f32(a, 0), f32(a, 1), f32(a, 2), f32(a, 3))
	}
	if b := req.tensors[1].Data; int32(binary.LittleEndian.Uint32(b)) != math.MinInt32 || int32(binary.LittleEndian.Uint32(b[8:])) != math.MaxInt32 {
		t.Errorf("b = %v", b)
	}
	if c := req.tensors[2].Data; c[0] != 1 || c[1] != 0 {
		t.Errorf("c = %v", c)
	}
	if e := req.tensors[4].Data; int64(binary.LittleEndian.Uint64(e)) != math.MinInt64 || int64(binary.LittleEndian.Uint64(e[8:])) != math.MaxInt64 {
		t.Errorf("e = %v", e)
	}
	if f := req.tensors[5].Data; math.Float64frombits(binary.LittleEndian.Uint64(f)) != 0.1 {
		t.Errorf("f = %v", f)
	}
	if h := req.tensors[7].Data; binary.LittleEndian.Uint64(h[8:]) != math.MaxUint64 {
		t.Errorf("h = %v", h)
	}
}

// TestDecodeFloat32Exact: an FP32 input reads the decimal text straight to the nearest float32
// (no detour through a rounded float64), so every shortest FP32 text round-trips.
func TestDecodeFloat32Exact(t *testing.T) {
	m := policyModel("1")
	for _, f := range []float32{0.1, 1.0000001, 3.4028235e38, 1.4e-45, -0.22688831, 16777215, 0.3} {
		s := fmt.Sprint(f)
		req, err := decodeFor(t, m, `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[`+s+`,0,0,0]}]}`)
		if err != nil {
			t.Fatal(err)
		}
		if got := math.Float32frombits(binary.LittleEndian.Uint32(req.tensors[0].Data)); got != f {
			t.Errorf("%s decoded as %v", s, got)
		}
	}
}

func TestDecodeReusesBuffers(t *testing.T) {
	m := policyModel("1")
	var p fastjson.Parser
	req := newInferRequest()
	body := []byte(`{"id":"x","inputs":[{"name":"obs","datatype":"FP32","shape":[2,4],"data":[1,2,3,4,5,6,7,8]}]}`)
	if err := req.decode(&p, body, m); err != nil {
		t.Fatal(err)
	}
	first := &req.tensors[0].Data[0]
	small := []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)
	if err := req.decode(&p, small, m); err != nil {
		t.Fatal(err)
	}
	if &req.tensors[0].Data[0] != first {
		t.Error("input buffer not reused")
	}
	if req.hasID {
		t.Error("id of the previous request kept")
	}
	allocs := testing.AllocsPerRun(100, func() {
		if err := req.decode(&p, small, m); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 0 {
		t.Errorf("decode allocates %.1f times per request in steady state", allocs)
	}
}

func TestIsJSONNumber(t *testing.T) {
	valid := []string{"0", "-0", "1", "-1", "10", "1.5", "0.5", "1e5", "1E+5", "1e-5", "-1.25e-3", "123456789012345678901234567890"}
	invalid := []string{"", "-", "+1", "01", "-01", "1.", ".5", "1e", "1e+", "NaN", "nan", "Inf", "-Inf", "1.2.3", "0x10", "1_000", "--1", "1e5.5"}
	for _, s := range valid {
		if !isJSONNumber([]byte(s)) {
			t.Errorf("isJSONNumber(%q) = false", s)
		}
	}
	for _, s := range invalid {
		if isJSONNumber([]byte(s)) {
			t.Errorf("isJSONNumber(%q) = true", s)
		}
	}
}

func TestNumElements(t *testing.T) {
	if n, ok := numElements([]int64{2, 3, 4}); !ok || n != 24 {
		t.Errorf("numElements = %d %v", n, ok)
	}
	if n, ok := numElements(nil); !ok || n != 1 {
		t.Errorf("scalar = %d %v", n, ok)
	}
	if _, ok := numElements([]int64{1 << 40, 1 << 40}); ok {
		t.Error("overflow accepted")
	}
}

func TestUnsupportedInputDType(t *testing.T) {
	m := &fakeModel{name: "h", version: "1", inputs: []bridge.IOInfo{{Name: "x", DType: bridge.Float16, Shape: []int64{1}}}}
	_, err := decodeFor(t, m, `{"inputs":[{"name":"x","datatype":"FP16","shape":[1],"data":[1]}]}`)
	if err == nil || !strings.Contains(err.Error(), `input "x": datatype FP16 is not supported in JSON requests`) {
		t.Errorf("FP16 input: %v", err)
	}
}

// benchBody is a batch-1 request of 64 floats, as an RL policy gets.
func benchBody() []byte {
	var sb strings.Builder
	sb.WriteString(`{"id":"bench","inputs":[{"name":"obs","shape":[1,64],"datatype":"FP32","data":[`)
	for i := 0; i < 64; i++ {
		if i > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprint(&sb, float32(i)*0.0123456-0.4)
	}
	sb.WriteString(`]}]}`)
	return []byte(sb.String())
}

func benchModel() *fakeModel {
	return &fakeModel{
		name: "mlp", version: "1", batchable: true,
		inputs:  []bridge.IOInfo{{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 64}}},
		outputs: []bridge.IOInfo{{Name: "action", DType: bridge.Float32, Shape: []int64{-1, 64}}},
	}
}

func BenchmarkDecodeInferRequest(b *testing.B) {
	body := benchBody()
	m := benchModel()
	var parsers fastjson.ParserPool
	req := newInferRequest()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		p := parsers.Get()
		if err := req.decode(p, body, m); err != nil {
			b.Fatal(err)
		}
		parsers.Put(p)
	}
}

func BenchmarkEncodeInferResponse(b *testing.B) {
	m := benchModel()
	data := make([]byte, 4*64)
	for i := 0; i < 64; i++ {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(float32(i)*0.0123456-0.4))
	}
	outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 64}, Data: data}}
	req := newInferRequest()
	req.model = m
	req.id, req.hasID = []byte("bench"), true
	if err := req.encode(outs); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(req.out)))
	b.ReportAllocs()
	for b.Loop() {
		if err := req.encode(outs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkInferHandler runs the whole handler (routing, lookup, decode, run, encode) for a
// batch-1 64-float request against a model that reuses its output buffer.
func BenchmarkInferHandler(b *testing.B) {
	m := benchModel()
	out := make([]byte, 4*64)
	outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 64}, Data: out}}
	m.run = func(in []bridge.Tensor) []bridge.Tensor {
		copy(out, in[0].Data)
		return outs
	}
	m.keepOutputs = true
	s := New(newFakeRegistry(m), nil, Options{})
	h := s.Handler()
	body := benchBody()
	b.ReportAllocs()
	benchInfer(b, h, "/v2/models/mlp/versions/1/infer", body)
}

// benchInfer is a benchmark's loop: POST body to uri through handler h, with headers (name,
// value pairs; an empty value is not set), failing on any status but 200.
func benchInfer(b *testing.B, h fasthttp.RequestHandler, uri string, body []byte, headers ...string) {
	b.Helper()
	var ctx fasthttp.RequestCtx
	for b.Loop() {
		ctx.Request.Reset()
		ctx.Response.Reset()
		ctx.Request.Header.SetMethod("POST")
		ctx.Request.SetRequestURI(uri)
		for i := 0; i+1 < len(headers); i += 2 {
			if headers[i+1] != "" {
				ctx.Request.Header.Set(headers[i], headers[i+1])
			}
		}
		ctx.Request.SetBody(body)
		h(&ctx)
		if ctx.Response.StatusCode() != 200 {
			b.Fatalf("status %d: %s", ctx.Response.StatusCode(), ctx.Response.Body())
		}
	}
}
