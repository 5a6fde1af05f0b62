package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/policyd/policyd/bridge"
)

// send makes a request with the given headers and returns the response.
func (ts *testServer) send(t *testing.T, method, path string, body []byte, headers ...string) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd" + path)
	req.Header.SetMethod(method)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	if body != nil {
		req.Header.SetContentType("application/json")
		req.SetBody(body)
	}
	if err := ts.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	r := response{status: resp.StatusCode(), header: map[string]string{}, body: append([]byte(nil), resp.Body()...)}
	for _, k := range []string{"Content-Type", "Retry-After", HeaderRequestID, "traceparent"} {
		r.header[k] = string(resp.Header.Peek(k))
	}
	return r
}

// linesOf returns the log entries whose request_id field is id, and every entry's fields.
func linesOf(logs *observer.ObservedLogs, id string) []observer.LoggedEntry {
	var out []observer.LoggedEntry
	for _, e := range logs.All() {
		if e.ContextMap()["request_id"] == id {
			out = append(out, e)
		}
	}
	return out
}

func accessLine(t *testing.T, logs *observer.ObservedLogs, id string) map[string]any {
	t.Helper()
	for _, e := range linesOf(logs, id) {
		if e.Message == "request" {
			return e.ContextMap()
		}
	}
	t.Fatalf("no access line with request_id %q in %v", id, logs.All())
	return nil
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

// The correlation ID goes from X-Request-ID (or a traceparent's trace ID, or a generated one)
// to the response header, the error body and every log line of the request.
func TestCorrelationIDRoundTrip(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServerLog(t, testRegistry(), zap.New(core), Options{AccessLog: true})
	body := readTestdata(t, "requests/policy_flat.json")

	// A given ID, on a success: the access line has the request's facts.
	r := ts.send(t, "POST", "/v2/models/policy/versions/1/infer", body, HeaderRequestID, "client-id-42")
	if r.status != 200 || r.header[HeaderRequestID] != "client-id-42" {
		t.Fatalf("status %d, X-Request-ID %q; want 200, client-id-42", r.status, r.header[HeaderRequestID])
	}
	a := accessLine(t, logs, "client-id-42")
	want := map[string]any{"method": "POST", "path": "/v2/models/policy/versions/1/infer", "status": int64(200),
		"model": "policy", "version": "1", "protocol": "v2", "batch_size": int64(1),
		"bytes_in": int64(len(body)), "bytes_out": int64(len(r.body))}
	for k, v := range want {
		if a[k] != v {
			t.Errorf("access line %s = %v (%T), want %v", k, a[k], a[k], v)
		}
	}
	if d, ok := a["latency"].(time.Duration); !ok || d <= 0 {
		t.Errorf("access line latency = %v", a["latency"])
	}

	// A given ID, on an error: the body and every line of the request carry it.
	r = ts.send(t, "POST", "/v2/models/nope/infer", body, HeaderRequestID, "missing-7")
	var e struct {
		Error     string `json:"error"`
		RequestID string `json:"request_id"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || r.status != 404 {
		t.Fatalf("status %d, body %s: %v", r.status, r.body, err)
	}
	if e.RequestID != "missing-7" || r.header[HeaderRequestID] != "missing-7" || !strings.Contains(e.Error, `unknown model "nope"`) {
		t.Errorf("error body %s, X-Request-ID %q; want request_id missing-7", r.body, r.header[HeaderRequestID])
	}
	lines := linesOf(logs, "missing-7")
	msgs := map[string]bool{}
	for _, l := range lines {
		msgs[l.Message] = true
	}
	if !msgs["request failed"] || !msgs["request"] {
		t.Errorf("lines of the failed request: %v; want request failed and request", lines)
	}
	if a := accessLine(t, logs, "missing-7"); a["status"] != int64(404) || a["model"] != nil {
		t.Errorf("access line of an unknown model: %v", a)
	}

	// No ID: one is generated, the same in header, body and log.
	r = ts.send(t, "GET", "/v2/models/nope", nil)
	id := r.header[HeaderRequestID]
	if !generatedID.MatchString(id) || !strings.Contains(string(r.body), `"request_id":"`+id+`"`) {
		t.Fatalf("generated ID %q, body %s", id, r.body)
	}
	accessLine(t, logs, id)
	if r2 := ts.send(t, "GET", "/v2/models/nope", nil); r2.header[HeaderRequestID] == id {
		t.Errorf("two requests got the same generated ID %q", id)
	}

	// A traceparent's trace ID, when there is no X-Request-ID (tracing off).
	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	r = ts.send(t, "GET", "/v2/models/policy", nil, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
	if r.header[HeaderRequestID] != traceID {
		t.Errorf("X-Request-ID %q, want the traceparent's trace ID %s", r.header[HeaderRequestID], traceID)
	}
	if r.header["traceparent"] != "" {
		t.Errorf("tracing off, the response has traceparent %q", r.header["traceparent"])
	}
	if a := accessLine(t, logs, traceID); a["model"] != "policy" || a["version"] != "2" || a["protocol"] != nil {
		t.Errorf("access line of a metadata request: %v; want model policy, version 2 (the default), no protocol", a)
	}

	// Unusable IDs are replaced: too long, a control or space character, an invalid traceparent.
	for _, h := range [][]string{
		{HeaderRequestID, strings.Repeat("x", MaxRequestIDLen+1)},
		{HeaderRequestID, "two words"},
		{"traceparent", "00-" + strings.Repeat("0", 32) + "-00f067aa0ba902b7-01"},
		{"traceparent", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"},
		{"traceparent", "ff-" + traceID + "-00f067aa0ba902b7-01"},
	} {
		if r := ts.send(t, "GET", "/v2/health/live", nil, h...); !generatedID.MatchString(r.header[HeaderRequestID]) {
			t.Errorf("%s: %.40q: X-Request-ID %q, want a generated one", h[0], h[1], r.header[HeaderRequestID])
		}
	}
	if r := ts.send(t, "GET", "/v2/health/live", nil, HeaderRequestID, strings.Repeat("y", MaxRequestIDLen)); r.header[HeaderRequestID] != strings.Repeat("y", MaxRequestIDLen) {
		t.Errorf("an ID of %d bytes was not kept", MaxRequestIDLen)
	}
}

func TestAccessLogOff(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	ts := startServerLog(t, testRegistry(), zap.New(core), Options{})
	ts.send(t, "POST", "/v2/models/policy/infer", readTestdata(t, "requests/policy_flat.json"), HeaderRequestID, "quiet")
	if n := len(logs.FilterMessage("request").All()); n != 0 {
		t.Errorf("%d access lines with AccessLog off", n)
	}
}

// OnRequest is called once per inference request (v2 JSON, v2 binary, predict) with its facts,
// and never for the other routes.
func TestOnRequest(t *testing.T) {
	var mu sync.Mutex
	var got []RequestInfo
	opts := Options{OnRequest: func(ri *RequestInfo) {
		mu.Lock()
		defer mu.Unlock()
		c := *ri
		c.CorrelationID = strings.Clone(ri.CorrelationID)
		got = append(got, c)
	}, QueueTimeout: 20 * time.Millisecond}
	reg := testRegistry()
	slow := policyModel("7")
	slow.doFn = func(ctx context.Context, _ []bridge.Tensor, _ func([]bridge.Tensor) error) error {
		<-ctx.Done()
		return ctx.Err()
	}
	reg.models["policy"] = append(reg.models["policy"], slow)
	ts := startServer(t, reg, opts)
	body := readTestdata(t, "requests/policy_flat.json")
	two := []byte(`{"inputs":[{"name":"obs","shape":[2,4],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`)

	r1 := ts.send(t, "POST", "/v2/models/policy/versions/1/infer", two, HeaderRequestID, "one")
	ts.send(t, "GET", "/v2/models/policy", nil)
	ts.send(t, "GET", "/v2/models/policy/ready", nil)
	ts.send(t, "GET", "/v2/health/ready", nil)
	ts.send(t, "POST", "/v1/models/policy/versions/1:predict", []byte(`{"instances":[[1,2,3,4],[0,0,0,0],[1,1,1,1]]}`), HeaderRequestID, "three")
	ts.send(t, "POST", "/v2/models/nope/infer", body, HeaderRequestID, "missing")
	r5 := ts.send(t, "POST", "/v2/models/policy/versions/7/infer", body, HeaderRequestID, "slow")
	if r5.status != 503 {
		t.Fatalf("slow model: status %d, want 503 (queue timeout): %s", r5.status, r5.body)
	}
	bin := binaryRequest(t)
	ts.send(t, "POST", "/v2/models/policy/versions/1/infer", bin.body, inferHeaderLength, bin.jsonLen, HeaderRequestID, "bin")

	mu.Lock()
	defer mu.Unlock()
	want := []RequestInfo{
		{Model: "policy", Version: "1", Protocol: ProtocolV2, Status: 200, Rows: 2, BytesIn: len(two), BytesOut: len(r1.body), CorrelationID: "one"},
		{Model: "policy", Version: "1", Protocol: ProtocolPredict, Status: 200, Rows: 3, CorrelationID: "three"},
		{Protocol: ProtocolV2, Status: 404, CorrelationID: "missing"},
		{Model: "policy", Version: "7", Protocol: ProtocolV2, Status: 503, Rows: 1, CorrelationID: "slow", TimedOut: true, RetryAfter: true},
		{Model: "policy", Version: "1", Protocol: ProtocolV2Binary, Status: 200, Rows: 1, CorrelationID: "bin"},
	}
	if len(got) != len(want) {
		t.Fatalf("OnRequest called %d times, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if g.Latency <= 0 || g.BytesIn <= 0 || g.BytesOut <= 0 {
			t.Errorf("call %d: latency %v, bytes in %d out %d", i, g.Latency, g.BytesIn, g.BytesOut)
		}
		if w.BytesIn == 0 {
			w.BytesIn, w.BytesOut = g.BytesIn, g.BytesOut
		}
		w.Latency = g.Latency
		if g != w {
			t.Errorf("call %d: %+v\nwant %+v", i, g, w)
		}
	}
}

// binaryRequest is a one-row policy request through the binary tensor data extension.
type binReq struct {
	body    []byte
	jsonLen string
}

func binaryRequest(t *testing.T) binReq {
	t.Helper()
	js := `{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","parameters":{"binary_data_size":16}}]}`
	return binReq{body: append([]byte(js), make([]byte, 16)...), jsonLen: strconv.Itoa(len(js))}
}

// Failed requests are logged rate-limited (first HotLogFirst a second per message), while
// the access log keeps every request.
func TestFailureLogsAreRateLimited(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	reg := testRegistry()
	bad := policyModel("8")
	bad.err = errors.New("engine fault")
	reg.models["policy"] = append(reg.models["policy"], bad)
	ts := startServerLog(t, reg, zap.New(core), Options{AccessLog: true, HotLogFirst: 3, HotLogThereafter: 1000})
	body := readTestdata(t, "requests/policy_flat.json")
	const n = 40
	for range n {
		if r := ts.send(t, "POST", "/v2/models/policy/versions/8/infer", body); r.status != 500 {
			t.Fatalf("status %d, want 500: %s", r.status, r.body)
		}
	}
	failed := logs.FilterMessage("request failed").FilterField(zap.Int("status", 500)).Len()
	// 3 a second: 3, or 6 if the requests straddle a second boundary.
	if failed < 3 || failed > 6 {
		t.Errorf("%d \"request failed\" lines for %d failures, want 3 (first 3 a second)", failed, n)
	}
	if access := logs.FilterMessage("request").Len(); access != n {
		t.Errorf("%d access lines for %d requests; the access log must not be sampled", access, n)
	}
}

// BenchmarkInferHandlerObserved is BenchmarkInferHandler with each observation switched on:
// the access log (JSON lines to io.Discard), OnRequest (an empty hook), and tracing (every
// request sampled; spans recorded, not exported). BenchmarkInferHandler is the all-off case.
func BenchmarkInferHandlerObserved(b *testing.B) {
	enc := zap.NewProductionEncoderConfig()
	jsonLog := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.AddSync(io.Discard), zapcore.InfoLevel))
	traced := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer traced.Shutdown(context.Background())
	for _, c := range []struct {
		name string
		log  *zap.Logger
		opts Options
	}{
		{"off", nil, Options{}},
		{"access-log", jsonLog, Options{AccessLog: true}},
		{"on-request", nil, Options{OnRequest: func(*RequestInfo) {}}},
		{"traced", nil, Options{Tracer: traced}},
	} {
		b.Run(c.name, func(b *testing.B) {
			m := benchModel()
			out := make([]byte, 4*64)
			outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 64}, Data: out}}
			m.run = func(in []bridge.Tensor) []bridge.Tensor {
				copy(out, in[0].Data)
				return outs
			}
			m.keepOutputs = true
			h := New(newFakeRegistry(m), c.log, c.opts).Handler()
			body := benchBody()
			b.ReportAllocs()
			benchInfer(b, h, "/v2/models/mlp/versions/1/infer", body)
		})
	}
}

// A request fasthttp cannot read gets an error answer from outside the routes: it has a
// correlation ID too, the same in the header and the body.
func TestTransportErrorHasRequestID(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	c, err := ts.ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "POST /v2/models/policy/infer HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	id := resp.Header.Get(HeaderRequestID)
	if resp.StatusCode != 400 || !generatedID.MatchString(id) || !strings.Contains(string(b), `"request_id":"`+id+`"`) {
		t.Errorf("status %d, X-Request-ID %q, body %s", resp.StatusCode, id, b)
	}
}

// BenchmarkObserve is the per-request wrapper alone around an empty handler, everything off
// ("bare" is the empty handler without it): what every request pays for its correlation ID.
func BenchmarkObserve(b *testing.B) {
	s := New(newFakeRegistry(), nil, Options{})
	noop := func(ctx *fasthttp.RequestCtx) { ctx.SetStatusCode(200) }
	for _, c := range []struct {
		name string
		h    fasthttp.RequestHandler
	}{{"bare", noop}, {"observed", s.observe("/x", true, noop)}} {
		b.Run(c.name, func(b *testing.B) {
			var ctx fasthttp.RequestCtx
			ctx.Request.SetRequestURI("/x")
			b.ReportAllocs()
			for b.Loop() {
				ctx.Response.Reset()
				c.h(&ctx)
			}
		})
	}
}
