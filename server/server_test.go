package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math/rand"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

// testServer serves reg on an in-memory listener and returns a client for it.
type testServer struct {
	srv    *Server
	ln     *fasthttputil.InmemoryListener
	client *fasthttp.Client
	done   chan error
}

func startServer(t *testing.T, reg Registry, opts Options) *testServer {
	t.Helper()
	return startServerLog(t, reg, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), opts)
}

// startServerLog is startServer logging to log.
func startServerLog(t *testing.T, reg Registry, log *zap.Logger, opts Options) *testServer {
	t.Helper()
	ts := &testServer{
		srv:  New(reg, log, opts),
		ln:   fasthttputil.NewInmemoryListener(),
		done: make(chan error, 1),
	}
	ts.client = &fasthttp.Client{
		Dial:                func(string) (net.Conn, error) { return ts.ln.Dial() },
		MaxResponseBodySize: 64 << 20,
		// One write per request up to 64 KiB: a request over the body limit is refused when its
		// headers arrive and the connection closed, so a body written in pieces could meet a
		// closed pipe before the client reads the 413 (TestBodyTooLarge was flaky).
		WriteBufferSize:          64 << 10,
		DisablePathNormalizing:   true,
		NoDefaultUserAgentHeader: true,
	}
	go func() { ts.done <- ts.srv.Serve(ts.ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := ts.srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-ts.done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		// Every handler releases what it acquired, whatever the answer.
		if fr, ok := reg.(*fakeRegistry); ok {
			if n := fr.held(); n != 0 {
				t.Errorf("%d model versions acquired and not released", n)
			}
		}
	})
	return ts
}

type response struct {
	status int
	header map[string]string
	body   []byte
}

func (ts *testServer) do(t *testing.T, method, path string, body []byte) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd" + path)
	req.Header.SetMethod(method)
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if err := ts.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	r := response{status: resp.StatusCode(), header: map[string]string{}, body: append([]byte(nil), resp.Body()...)}
	for _, k := range []string{"Content-Type", "Retry-After", notReadyHeader} {
		r.header[k] = string(resp.Header.Peek(k))
	}
	return r
}

// errorMessage decodes {"error": "..."} and fails the test when the body is not that.
func errorMessage(t *testing.T, r response) string {
	t.Helper()
	var e struct {
		Error *string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == nil {
		t.Fatalf("body %q is not {\"error\": ...}: %v", r.body, err)
	}
	if ct := r.header["Content-Type"]; ct != "application/json" {
		t.Errorf("error Content-Type = %q", ct)
	}
	return *e.Error
}

func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type invalidCase struct {
	Name   string          `json:"name"`
	Model  string          `json:"model"`
	Body   json.RawMessage `json:"body"`
	Raw    *string         `json:"raw"`
	Error  string          `json:"error"`
	Status int             `json:"status"`
}

func (c invalidCase) body() []byte {
	if c.Raw != nil {
		return []byte(*c.Raw)
	}
	return c.Body
}

func loadInvalidCases(t testing.TB) []invalidCase {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "invalid.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []invalidCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatalf("testdata/invalid.json: %v", err)
	}
	return cases
}

func TestInferInvalidRequests(t *testing.T) {
	reg := testRegistry()
	ts := startServer(t, reg, Options{})
	called := false
	for _, ms := range reg.models {
		for _, m := range ms {
			m.hook = func(context.Context) { called = true }
		}
	}
	for _, c := range loadInvalidCases(t) {
		t.Run(c.Name, func(t *testing.T) {
			model := c.Model
			if model == "" {
				model = "policy"
			}
			want := c.Status
			if want == 0 {
				want = fasthttp.StatusBadRequest
			}
			r := ts.do(t, "POST", "/v2/models/"+model+"/versions/1/infer", c.body())
			if r.status != want {
				t.Errorf("status %d, want %d (body %s)", r.status, want, r.body)
			}
			if msg := errorMessage(t, r); !strings.Contains(msg, c.Error) {
				t.Errorf("error %q\nwant it to contain %q", msg, c.Error)
			}
		})
	}
	if called {
		t.Error("a model ran for an invalid request")
	}
}

func TestInferGolden(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	paths := map[string]string{
		"policy_flat.json":           "/v2/models/policy/versions/1/infer",
		"policy_nested.json":         "/v2/models/policy/versions/2/infer",
		"policy_batch2_outputs.json": "/v2/models/policy/infer",
		"policy_escaped_id.json":     "/v2/models/policy/versions/1/infer",
		"multi_all.json":             "/v2/models/multi/infer",
		"fixed.json":                 "/v2/models/fixed/versions/1/infer",
	}
	files, err := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	if err != nil || len(files) != len(paths) {
		t.Fatalf("testdata/requests has %d files (%v), the test knows %d", len(files), err, len(paths))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			path, ok := paths[name]
			if !ok {
				t.Fatalf("no path for %s", name)
			}
			r := ts.do(t, "POST", path, readTestdata(t, filepath.Join("requests", name)))
			if r.status != fasthttp.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if ct := r.header["Content-Type"]; ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			if !json.Valid(r.body) {
				t.Fatalf("response is not valid JSON: %s", r.body)
			}
			golden := filepath.Join("testdata", "golden", name)
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, append(r.body, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := bytes.TrimSuffix(readTestdata(t, filepath.Join("golden", name)), []byte("\n"))
			if !bytes.Equal(r.body, want) {
				t.Errorf("response\n%s\nwant (testdata/golden/%s; -update rewrites it)\n%s", r.body, name, want)
			}
		})
	}
}

// inferResponse is the v2 response, with data kept as raw JSON.
type inferResponse struct {
	ModelName    string  `json:"model_name"`
	ModelVersion string  `json:"model_version"`
	ID           *string `json:"id"`
	Outputs      []struct {
		Name     string          `json:"name"`
		Datatype string          `json:"datatype"`
		Shape    []int64         `json:"shape"`
		Data     json.RawMessage `json:"data"`
	} `json:"outputs"`
}

func decodeResponse(t *testing.T, r response) inferResponse {
	t.Helper()
	if r.status != fasthttp.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	var out inferResponse
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("response %s: %v", r.body, err)
	}
	return out
}

func TestInferResponseShape(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	flat := decodeResponse(t, ts.do(t, "POST", "/v2/models/policy/versions/1/infer", readTestdata(t, "requests/policy_flat.json")))
	nested := decodeResponse(t, ts.do(t, "POST", "/v2/models/policy/versions/1/infer", readTestdata(t, "requests/policy_nested.json")))

	if flat.ModelName != "policy" || flat.ModelVersion != "1" || flat.ID == nil || *flat.ID != "req-1" {
		t.Errorf("header fields: %+v", flat)
	}
	if nested.ID != nil {
		t.Errorf("id %q echoed for a request without one", *nested.ID)
	}
	if len(flat.Outputs) != 4 || len(nested.Outputs) != 4 {
		t.Fatalf("%d and %d outputs, want 4", len(flat.Outputs), len(nested.Outputs))
	}
	for i := range flat.Outputs {
		f, n := flat.Outputs[i], nested.Outputs[i]
		if f.Name != n.Name || f.Datatype != n.Datatype || fmt.Sprint(f.Shape) != fmt.Sprint(n.Shape) || !bytes.Equal(f.Data, n.Data) {
			t.Errorf("nested and flat data differ: %+v vs %+v", f, n)
		}
	}
	want := []struct{ name, dtype, shape, data string }{
		{"action", "FP32", "[1 4]", "[2,-4,7,0.2]"},
		{"index", "INT64", "[1 1]", "[9007199254740993]"},
		{"positive", "BOOL", "[1 4]", "[true,false,true,true]"},
		{"special", "FP32", "[1 3]", "[null,null,null]"},
	}
	for i, w := range want {
		o := flat.Outputs[i]
		if o.Name != w.name || o.Datatype != w.dtype || fmt.Sprint(o.Shape) != w.shape || string(o.Data) != w.data {
			t.Errorf("output %d = %s %s %v %s, want %s %s %s %s", i, o.Name, o.Datatype, o.Shape, o.Data, w.name, w.dtype, w.shape, w.data)
		}
	}
}

func TestInferOutputFilter(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	body := `{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[{"name":"positive"},{"name":"index"}]}`
	out := decodeResponse(t, ts.do(t, "POST", "/v2/models/policy/versions/2/infer", []byte(body)))
	if len(out.Outputs) != 2 || out.Outputs[0].Name != "positive" || out.Outputs[1].Name != "index" {
		t.Errorf("outputs %+v, want positive then index", out.Outputs)
	}
	body = `{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"outputs":[]}`
	out = decodeResponse(t, ts.do(t, "POST", "/v2/models/policy/versions/2/infer", []byte(body)))
	if len(out.Outputs) != 4 {
		t.Errorf("an empty \"outputs\" gave %d outputs, want all 4", len(out.Outputs))
	}
}

func TestDefaultVersionIsHighestReady(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	out := decodeResponse(t, ts.do(t, "POST", "/v2/models/policy/infer", readTestdata(t, "requests/policy_flat.json")))
	if out.ModelVersion != "2" {
		t.Errorf("default version %q, want 2 (3 is not ready)", out.ModelVersion)
	}
}

func TestStatusCodes(t *testing.T) {
	body := readTestdata(t, "requests/policy_flat.json")
	tests := []struct {
		method, path string
		body         []byte
		status       int
		errPart      string // "" = no error body expected
	}{
		{"GET", "/v2/health/live", nil, 200, ""},
		{"GET", "/v2/health/ready", nil, 400, `broken@1: graph output "y" is not produced`},
		{"GET", "/v2/models/policy/ready", nil, 200, ""},
		{"GET", "/v2/models/policy/versions/1/ready", nil, 200, ""},
		{"GET", "/v2/models/policy/versions/3/ready", nil, 400, "version 3 failed to load"},
		{"GET", "/v2/models/broken/ready", nil, 400, `model "broken" version "1" is not ready: graph output "y" is not produced by any node`},
		{"GET", "/v2/models/nope/ready", nil, 404, `unknown model "nope"`},
		{"GET", "/v2/models/policy/versions/9/ready", nil, 404, `unknown version "9" of model "policy"`},
		{"POST", "/v2/models/nope/infer", body, 404, `unknown model "nope"`},
		{"POST", "/v2/models/policy/versions/9/infer", body, 404, `unknown version "9" of model "policy"`},
		{"POST", "/v2/models/broken/infer", body, 503, `graph output "y" is not produced by any node`},
		{"POST", "/v2/models/policy/versions/3/infer", body, 503, "version 3 failed to load"},
		{"GET", "/v2/models/broken", nil, 503, `graph output "y"`},
		{"GET", "/v2/models/nope", nil, 404, `unknown model "nope"`},
		{"GET", "/v2/models/policy/infer", nil, 405, "method GET not allowed"},
		{"POST", "/v2/health/live", nil, 405, "method POST not allowed"},
		{"GET", "/v3", nil, 404, "no route GET /v3"},
		{"GET", "/v2/models/policy/versions/1/explain", nil, 404, "no route"},
	}
	ts := startServer(t, testRegistry(), Options{})
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := ts.do(t, tt.method, tt.path, tt.body)
			if r.status != tt.status {
				t.Fatalf("status %d, want %d (body %s)", r.status, tt.status, r.body)
			}
			if tt.errPart == "" {
				return
			}
			if strings.HasSuffix(tt.path, "/ready") && tt.status == 400 {
				// v2 health: false is a 4xx with an empty body; the reason is in a header.
				if len(r.body) != 0 || !strings.Contains(r.header[notReadyHeader], tt.errPart) {
					t.Errorf("body %q, %s %q, want an empty body and the header to contain %q", r.body, notReadyHeader, r.header[notReadyHeader], tt.errPart)
				}
				return
			}
			if msg := errorMessage(t, r); !strings.Contains(msg, tt.errPart) {
				t.Errorf("error %q, want it to contain %q", msg, tt.errPart)
			}
		})
	}
}

func TestHealthReadyWhenAllLoaded(t *testing.T) {
	ts := startServer(t, newFakeRegistry(policyModel("1"), multiModel()), Options{})
	if r := ts.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Errorf("ready = %d %s, want 200", r.status, r.body)
	}
	empty := startServer(t, newFakeRegistry(), Options{})
	if r := empty.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Errorf("ready with no models = %d, want 200", r.status)
	}
}

// staleRegistry lists the versions of an earlier table, as Versions may return just before a
// reload swaps the table.
type staleRegistry struct {
	*fakeRegistry
	stale map[string][]Model
}

func (r staleRegistry) Versions(model string) []Model { return r.stale[model] }

// A version listed as not ready that a reload has since replaced by a ready one, or removed,
// does not fail the health check; one that is still not ready does.
func TestHealthReadyAsksAgainAfterAReload(t *testing.T) {
	replaced := policyModel("1")
	replaced.reason = "unloaded"
	removed := policyModel("2")
	removed.reason = "unloaded"
	reg := staleRegistry{newFakeRegistry(policyModel("1")), map[string][]Model{"policy": {replaced, removed}}}
	ts := startServer(t, reg, Options{})
	if r := ts.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Errorf("ready = %d %s, want 200", r.status, r.body)
	}
	if n := reg.held(); n != 0 {
		t.Errorf("%d versions held after the health check", n)
	}

	broken := policyModel("1")
	broken.reason = "still broken"
	reg = staleRegistry{newFakeRegistry(broken), map[string][]Model{"policy": {broken}}}
	ts = startServer(t, reg, Options{})
	if r := ts.do(t, "GET", "/v2/health/ready", nil); r.status != 400 || !strings.Contains(r.header[notReadyHeader], "policy@1: still broken") {
		t.Errorf("ready = %d %v, want 400 naming policy@1", r.status, r.header)
	}
}

// A model the desired state lists but the repository lacks has version "": the health check
// names the model alone.
func TestHealthReadyNamesMissingModel(t *testing.T) {
	ghost := &fakeModel{name: "ghost", reason: "not found in repository /models"}
	ts := startServer(t, newFakeRegistry(ghost), Options{})
	r := ts.do(t, "GET", "/v2/health/ready", nil)
	if msg := r.header[notReadyHeader]; r.status != 400 || len(r.body) != 0 || msg != "1 model version(s) not ready: ghost: not found in repository /models" {
		t.Errorf("ready = %d %q %q", r.status, msg, r.body)
	}
}

func TestServerMetadata(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{Version: "1.2.3"})
	r := ts.do(t, "GET", "/v2", nil)
	if r.status != 200 || string(r.body) != `{"name":"policyd","version":"1.2.3","extensions":["binary_tensor_data","model_configuration","model_repository","schedule_policy","sequence","statistics","system_shared_memory"]}` {
		t.Errorf("GET /v2 = %d %s", r.status, r.body)
	}
}

func TestModelMetadata(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	for _, path := range []string{"/v2/models/policy", "/v2/models/policy/versions/1"} {
		r := ts.do(t, "GET", path, nil)
		version := path[len(path)-1:]
		if !strings.Contains(path, "versions") {
			version = "2" // the default: the highest ready (3 is not)
		}
		want := `{"name":"policy","versions":["1","2","3"],"version":"` + version + `","platform":"onnx",` +
			`"inputs":[{"name":"obs","datatype":"FP32","shape":[-1,4]}],` +
			`"outputs":[{"name":"action","datatype":"FP32","shape":[-1,4]},{"name":"index","datatype":"INT64","shape":[-1,1]},` +
			`{"name":"positive","datatype":"BOOL","shape":[-1,4]},{"name":"special","datatype":"FP32","shape":[-1,3]}]}`
		if r.status != 200 || string(r.body) != want {
			t.Errorf("GET %s = %d\n%s\nwant\n%s", path, r.status, r.body, want)
		}
	}
}

func TestBodyTooLarge(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{MaxRequestBodySize: 4096})
	big := []byte(`{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}],"pad":"` + strings.Repeat("x", 8192) + `"}`)
	r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", big)
	if r.status != fasthttp.StatusRequestEntityTooLarge {
		t.Fatalf("status %d, want 413 (body %s)", r.status, r.body)
	}
	if msg := errorMessage(t, r); !strings.Contains(msg, "4096 bytes (4 KiB)") {
		t.Errorf("413 message %q does not name the limit", msg)
	}
	// The server still answers on a new connection.
	if r := ts.do(t, "GET", "/v2/health/live", nil); r.status != 200 {
		t.Errorf("live after 413 = %d", r.status)
	}
}

func TestEngineErrors(t *testing.T) {
	tests := []struct {
		err    error
		status int
		retry  bool
	}{
		{engines.ErrOverloaded, 503, true},
		{engines.ErrClosed, 503, false},
		{bridge.ErrClosed, 503, false},
		{context.Canceled, 503, false},
		{&bridge.Error{Code: bridge.CodeInvalidArg, Msg: "input \"obs\": bad"}, 400, false},
		{&bridge.Error{Code: bridge.CodeUnsupported, Msg: "op Foo"}, 400, false},
		{&bridge.Error{Code: bridge.CodeNotFound, Msg: "no such thing"}, 404, false},
		{&bridge.Error{Code: bridge.CodeUnavailable, Msg: "no GPU"}, 503, false},
		{&bridge.Error{Code: bridge.CodeInternal, Msg: "bug"}, 500, false},
		{fmt.Errorf("wrapped: %w", &bridge.Error{Code: bridge.CodeInvalidArg, Msg: "x"}), 400, false},
		{errors.New("encode failed"), 500, false},
	}
	for _, tt := range tests {
		t.Run(tt.err.Error(), func(t *testing.T) {
			m := policyModel("1")
			m.err = tt.err
			ts := startServer(t, newFakeRegistry(m), Options{})
			r := ts.do(t, "POST", "/v2/models/policy/infer", readTestdata(t, "requests/policy_flat.json"))
			if r.status != tt.status {
				t.Errorf("status %d, want %d", r.status, tt.status)
			}
			if got := r.header["Retry-After"] != ""; got != tt.retry {
				t.Errorf("Retry-After %q, want set=%v", r.header["Retry-After"], tt.retry)
			}
			if msg := errorMessage(t, r); msg != tt.err.Error() {
				t.Errorf("error %q, want %q", msg, tt.err.Error())
			}
		})
	}
}

func TestEncodeErrorIs500(t *testing.T) {
	m := policyModel("1")
	run := m.run
	m.run = func(in []bridge.Tensor) []bridge.Tensor {
		out := run(in)
		out[0].Data = out[0].Data[:3] // a short output: our fault, never a panic
		return out
	}
	ts := startServer(t, newFakeRegistry(m), Options{})
	r := ts.do(t, "POST", "/v2/models/policy/infer", readTestdata(t, "requests/policy_flat.json"))
	if r.status != 500 {
		t.Fatalf("status %d, want 500", r.status)
	}
	if msg := errorMessage(t, r); !strings.Contains(msg, `output "action": 3 bytes for shape [1,4] of FP32`) {
		t.Errorf("error %q", msg)
	}
}

func TestGarbageBodies(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	rng := rand.New(rand.NewSource(1))
	seeds := [][]byte{readTestdata(t, "requests/policy_flat.json"), readTestdata(t, "requests/multi_all.json")}
	for i := 0; i < 300; i++ {
		var body []byte
		switch i % 3 {
		case 0: // random bytes
			body = make([]byte, rng.Intn(512))
			rng.Read(body)
		case 1: // a valid request cut short
			s := seeds[rng.Intn(len(seeds))]
			body = s[:rng.Intn(len(s))]
		default: // a valid request with a few bytes changed
			body = append([]byte(nil), seeds[rng.Intn(len(seeds))]...)
			for k := 0; k < 3; k++ {
				const alphabet = "{}[],:\"0-.e9x \\"
				body[rng.Intn(len(body))] = alphabet[rng.Intn(len(alphabet))]
			}
		}
		for _, path := range []string{"/v2/models/policy/versions/1/infer", "/v2/models/multi/infer"} {
			r := ts.do(t, "POST", path, body)
			if r.status != 200 && r.status != 400 {
				t.Fatalf("body %q: status %d %s", body, r.status, r.body)
			}
			if !json.Valid(r.body) {
				t.Fatalf("body %q: response is not JSON: %q", body, r.body)
			}
		}
	}
	if r := ts.do(t, "GET", "/v2/health/live", nil); r.status != 200 {
		t.Fatalf("server not live after garbage: %d", r.status)
	}
}

func TestConcurrentInfer(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	want := decodeResponse(t, ts.do(t, "POST", "/v2/models/multi/infer", readTestdata(t, "requests/multi_all.json")))
	wantJSON, _ := json.Marshal(want)
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				path, file := "/v2/models/multi/infer", "requests/multi_all.json"
				if (g+i)%2 == 0 {
					path, file = "/v2/models/policy/versions/1/infer", "requests/policy_batch2_outputs.json"
				}
				r := ts.do(t, "POST", path, readTestdata(t, file))
				if r.status != 200 {
					errs <- fmt.Sprintf("status %d: %s", r.status, r.body)
					return
				}
				if file == "requests/multi_all.json" {
					var got inferResponse
					_ = json.Unmarshal(r.body, &got)
					if b, _ := json.Marshal(got); !bytes.Equal(b, wantJSON) {
						errs <- "responses differ under concurrency"
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func TestGracefulShutdownAnswersInFlight(t *testing.T) {
	m := policyModel("1")
	entered, release := make(chan struct{}), make(chan struct{})
	m.hook = func(context.Context) {
		close(entered)
		<-release
	}
	srv := New(newFakeRegistry(m), zaptest.NewLogger(t), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	type result struct {
		status int
		err    error
	}
	res := make(chan result, 1)
	go func() {
		req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
		req.SetRequestURI("http://" + ln.Addr().String() + "/v2/models/policy/infer")
		req.Header.SetMethod("POST")
		req.SetBody(readTestdata(t, "requests/policy_flat.json"))
		err := fasthttp.DoTimeout(req, resp, 10*time.Second)
		res <- result{resp.StatusCode(), err}
	}()
	<-entered
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	time.Sleep(50 * time.Millisecond)
	close(release)
	if r := <-res; r.err != nil || r.status != 200 {
		t.Errorf("in-flight request: status %d, err %v; want 200", r.status, r.err)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-served; err != nil {
		t.Errorf("Serve after Shutdown: %v", err)
	}
}

func TestAppendString(t *testing.T) {
	tests := map[string]string{
		"plain":          `"plain"`,
		"a\"b\\c":        `"a\"b\\c"`,
		"\n\r\t\x01\x1f": `"\n\r\t\u0001\u001f"`,
		"é😀":             `"é😀"`,
		"bad\xffutf8":    `"bad\ufffdutf8"`,
		"":               `""`,
	}
	for in, want := range tests {
		if got := string(appendString(nil, in)); got != want {
			t.Errorf("appendString(%q) = %s, want %s", in, got, want)
		}
		if got := string(appendString(nil, []byte(in))); got != want {
			t.Errorf("appendString([]byte %q) = %s, want %s", in, got, want)
		}
		if !json.Valid(appendString(nil, in)) {
			t.Errorf("appendString(%q) is not valid JSON", in)
		}
	}
}

func TestHalfToFloat32(t *testing.T) {
	tests := map[uint16]float32{
		0x0000: 0, 0x3c00: 1, 0xc000: -2, 0x7bff: 65504, 0x0001: 5.9604645e-08, 0x0400: 6.1035156e-05, 0x3555: 0.33325195,
	}
	for h, want := range tests {
		if got := halfToFloat32(h); got != want {
			t.Errorf("halfToFloat32(%#04x) = %v, want %v", h, got, want)
		}
	}
}

// While the first load runs the server is live, not ready ("starting"), and a model it has not
// loaded yet is 503 (retry), not 404; once the load is done, the usual answers.
func TestStarting(t *testing.T) {
	ts := startServer(t, newFakeRegistry(policyModel("1")), Options{})
	ts.srv.SetStarting(true)
	if r := ts.do(t, "GET", "/v2/health/live", nil); r.status != 200 {
		t.Errorf("live while starting = %d", r.status)
	}
	r := ts.do(t, "GET", "/v2/health/ready", nil)
	if r.status != 400 || len(r.body) != 0 || !strings.HasPrefix(r.header[notReadyHeader], "starting") {
		t.Errorf("ready while starting = %d %q %q", r.status, r.body, r.header[notReadyHeader])
	}
	if r := ts.do(t, "GET", "/v2/models/later/ready", nil); r.status != 400 || !strings.HasPrefix(r.header[notReadyHeader], "starting") {
		t.Errorf("model ready of a model not loaded yet = %d %q", r.status, r.header[notReadyHeader])
	}
	if r := ts.do(t, "GET", "/v2/models/policy/ready", nil); r.status != 200 {
		t.Errorf("model ready of a loaded model while starting = %d", r.status)
	}
	body := []byte(`{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	if r := ts.do(t, "POST", "/v2/models/later/infer", body); r.status != 503 || !strings.Contains(errorMessage(t, r), "still loading") {
		t.Errorf("infer on a model not loaded yet = %d %s", r.status, r.body)
	}
	ts.srv.SetStarting(false)
	if r := ts.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Errorf("ready after starting = %d %v", r.status, r.header)
	}
	if r := ts.do(t, "POST", "/v2/models/later/infer", body); r.status != 404 {
		t.Errorf("infer on an unknown model after starting = %d", r.status)
	}
}
