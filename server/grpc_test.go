package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// The gRPC front end, tested with the client generated from the official proto files
// (api/inference) against a real server on a free loopback port.

type grpcTestServer struct {
	srv    *Server
	conn   *grpc.ClientConn
	client inference.GRPCInferenceServiceClient
	addr   string
}

func startGRPC(t *testing.T, reg Registry, opts Options) *grpcTestServer {
	t.Helper()
	return startGRPCLog(t, reg, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), opts)
}

func startGRPCLog(t *testing.T, reg Registry, log *zap.Logger, opts Options) *grpcTestServer {
	t.Helper()
	srv := New(reg, log, opts)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeGRPC(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(512<<20), grpc.MaxCallSendMsgSize(512<<20)))
	if err != nil {
		t.Fatal(err)
	}
	ts := &grpcTestServer{srv: srv, conn: conn, client: inference.NewGRPCInferenceServiceClient(conn), addr: ln.Addr().String()}
	t.Cleanup(func() {
		conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; err != nil {
			t.Errorf("ServeGRPC: %v", err)
		}
		if fr, ok := reg.(*fakeRegistry); ok {
			if n := fr.held(); n != 0 {
				t.Errorf("%d model versions acquired and not released", n)
			}
		}
	})
	return ts
}

func grpcCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func f32bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func bytesF32(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// obsRequest is a typed request of policy: obs FP32[rows,4].
func obsRequest(version string, obs ...float32) *inference.ModelInferRequest {
	return &inference.ModelInferRequest{ModelName: "policy", ModelVersion: version, Inputs: []*inference.ModelInferRequest_InferInputTensor{{
		Name: "obs", Datatype: "FP32", Shape: []int64{int64(len(obs) / 4), 4},
		Contents: &inference.InferTensorContents{Fp32Contents: obs}}}}
}

func wantCode(t *testing.T, err error, code codes.Code, msg string) {
	t.Helper()
	st, _ := status.FromError(err)
	if st.Code() != code || !strings.Contains(st.Message(), msg) {
		t.Errorf("got %v %q, want %v containing %q", st.Code(), st.Message(), code, msg)
	}
}

func TestGrpcServerAndModelMetadata(t *testing.T) {
	p3 := policyModel("3")
	p3.reason = "version 3 failed to load"
	ts := startGRPC(t, newFakeRegistry(policyModel("1"), policyModel("2"), p3, fixedModel()), Options{Version: "9.9.9"})
	ctx, c := grpcCtx(t), ts.client

	if r, err := c.ServerLive(ctx, &inference.ServerLiveRequest{}); err != nil || !r.Live {
		t.Errorf("ServerLive: %v %v", r, err)
	}
	if r, err := c.ServerReady(ctx, &inference.ServerReadyRequest{}); err != nil || r.Ready {
		t.Errorf("ServerReady with version 3 not ready: %v %v, want false", r, err)
	}
	md, err := c.ServerMetadata(ctx, &inference.ServerMetadataRequest{})
	if err != nil || md.Name != "policyd" || md.Version != "9.9.9" || fmt.Sprint(md.Extensions) != "[binary_tensor_data model_configuration model_repository schedule_policy sequence statistics system_shared_memory]" {
		t.Errorf("ServerMetadata: %v %v", md, err)
	}
	for _, tt := range []struct {
		version string
		ready   bool
		code    codes.Code
	}{{"", true, codes.OK}, {"1", true, codes.OK}, {"3", false, codes.OK}, {"7", false, codes.NotFound}} {
		r, err := c.ModelReady(ctx, &inference.ModelReadyRequest{Name: "policy", Version: tt.version})
		if status.Code(err) != tt.code || (err == nil && r.Ready != tt.ready) {
			t.Errorf("ModelReady policy %q: %v %v, want %v %v", tt.version, r, err, tt.ready, tt.code)
		}
	}
	_, err = c.ModelReady(ctx, &inference.ModelReadyRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `"nope"`)

	m, err := c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "policy"})
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "policy" || m.Platform != "onnx" || fmt.Sprint(m.Versions) != "[1 2 3]" || len(m.Inputs) != 1 ||
		m.Inputs[0].Name != "obs" || m.Inputs[0].Datatype != "FP32" || fmt.Sprint(m.Inputs[0].Shape) != "[-1 4]" ||
		len(m.Outputs) != 4 || m.Outputs[1].Name != "index" || m.Outputs[1].Datatype != "INT64" {
		t.Errorf("ModelMetadata: %v", m)
	}
	_, err = c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "policy", Version: "3"})
	wantCode(t, err, codes.Unavailable, "version 3 failed to load")
	_, err = c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `"nope"`)
}

// TestGrpcInferTypedAndRaw: every datatype of multiModel through typed contents and through
// raw_input_contents; the answer comes back the way the request came unless
// binary_data_output says otherwise.
func TestGrpcInferTypedAndRaw(t *testing.T) {
	ts := startGRPC(t, newFakeRegistry(multiModel(), policyModel("1")), Options{})
	ctx, c := grpcCtx(t), ts.client
	typed := []*inference.ModelInferRequest_InferInputTensor{
		{Name: "a", Datatype: "FP32", Shape: []int64{2, 2}, Contents: &inference.InferTensorContents{Fp32Contents: []float32{1.5, -2, float32(math.Inf(1)), 1e-30}}},
		{Name: "b", Datatype: "INT32", Shape: []int64{2, 3}, Contents: &inference.InferTensorContents{IntContents: []int32{math.MinInt32, -1, 0, 1, 2, math.MaxInt32}}},
		{Name: "c", Datatype: "BOOL", Shape: []int64{2, 1}, Contents: &inference.InferTensorContents{BoolContents: []bool{true, false}}},
		{Name: "d", Datatype: "UINT8", Shape: []int64{2}, Contents: &inference.InferTensorContents{UintContents: []uint32{0, 255}}},
		{Name: "e", Datatype: "INT64", Shape: []int64{2}, Contents: &inference.InferTensorContents{Int64Contents: []int64{math.MinInt64, bigIndex}}},
		{Name: "f", Datatype: "FP64", Shape: []int64{2, 1}, Contents: &inference.InferTensorContents{Fp64Contents: []float64{math.Pi, -0.1}}},
		{Name: "g", Datatype: "INT8", Shape: []int64{2, 1}, Contents: &inference.InferTensorContents{IntContents: []int32{-128, 127}}},
		{Name: "h", Datatype: "UINT64", Shape: []int64{2, 1}, Contents: &inference.InferTensorContents{Uint64Contents: []uint64{math.MaxUint64, 0}}},
		{Name: "i", Datatype: "INT16", Shape: []int64{2, 1}, Contents: &inference.InferTensorContents{IntContents: []int32{-32768, 32767}}},
		{Name: "j", Datatype: "UINT16", Shape: []int64{2, 1}, Contents: &inference.InferTensorContents{UintContents: []uint32{0, 65535}}},
		{Name: "k", Datatype: "UINT32", Shape: []int64{2, 1}, Contents: &inference.InferTensorContents{UintContents: []uint32{math.MaxUint32, 7}}},
	}
	resp, err := c.ModelInfer(ctx, &inference.ModelInferRequest{ModelName: "multi", Id: "req-1", Inputs: typed})
	if err != nil {
		t.Fatal(err)
	}
	if resp.ModelName != "multi" || resp.ModelVersion != "1" || resp.Id != "req-1" || len(resp.RawOutputContents) != 0 || len(resp.Outputs) != len(typed) {
		t.Fatalf("typed response: %v", resp)
	}
	for i, o := range resp.Outputs {
		in := typed[i]
		if o.Name != in.Name+"_out" || o.Datatype != in.Datatype || fmt.Sprint(o.Shape) != fmt.Sprint(in.Shape) ||
			fmt.Sprint(o.Contents) != fmt.Sprint(in.Contents) {
			t.Errorf("output %d: %v, want the echo of %v", i, o, in)
		}
	}

	// The same inputs raw, as Triton's clients send them: the outputs come back raw, byte for byte.
	raw := &inference.ModelInferRequest{ModelName: "multi"}
	var want [][]byte
	for _, in := range typed {
		g := &grpcRequest{r: newInferRequest()}
		info := multiModel().inputs[bridge.IOIndex(multiModel().inputs, in.Name)]
		count, _ := numElements(in.Shape)
		g.r.reset(1)
		if err := g.typedInput(0, &info, in.Shape, count, in.Contents); err != nil {
			t.Fatal(err)
		}
		b := append([]byte(nil), g.r.tensors[0].Data...)
		want = append(want, b)
		raw.Inputs = append(raw.Inputs, &inference.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.Datatype, Shape: in.Shape})
		raw.RawInputContents = append(raw.RawInputContents, b)
	}
	resp, err = c.ModelInfer(ctx, raw)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.RawOutputContents) != len(want) {
		t.Fatalf("raw response: %d raw outputs, want %d", len(resp.RawOutputContents), len(want))
	}
	for i := range want {
		if string(resp.RawOutputContents[i]) != string(want[i]) || resp.Outputs[i].Contents != nil {
			t.Errorf("raw output %d: %x, want %x", i, resp.RawOutputContents[i], want[i])
		}
	}
	// binary_data_output: false asks for typed outputs whatever the inputs were; true for raw.
	raw.Parameters = map[string]*inference.InferParameter{"binary_data_output": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: false}}}
	if resp, err = c.ModelInfer(ctx, raw); err != nil || len(resp.RawOutputContents) != 0 || fmt.Sprint(resp.Outputs[4].Contents.Int64Contents) != fmt.Sprint([]int64{math.MinInt64, bigIndex}) {
		t.Errorf("binary_data_output false: %v %v", resp, err)
	}

	// policy: outputs filtered and ordered as asked; INT64 beyond 2^53 exact; NaN and ±Inf kept.
	req := obsRequest("", 1, -2, 3, 0)
	req.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "special"}, {Name: "index"}, {Name: "action"}}
	resp, err = c.ModelInfer(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	sp := resp.Outputs[0].Contents.Fp32Contents
	if len(resp.Outputs) != 3 || resp.Outputs[0].Name != "special" || !math.IsNaN(float64(sp[0])) || !math.IsInf(float64(sp[1]), 1) ||
		resp.Outputs[1].Contents.Int64Contents[0] != bigIndex || fmt.Sprint(resp.Outputs[2].Contents.Fp32Contents) != "[2 -4 6 0]" {
		t.Errorf("policy: %v", resp)
	}
}

// TestGrpcInferErrors: the gRPC twins of the HTTP bad requests, each with its code and a
// message naming what is wrong.
func TestGrpcInferErrors(t *testing.T) {
	p3 := policyModel("3")
	p3.reason = "version 3 failed to load"
	ts := startGRPC(t, newFakeRegistry(policyModel("1"), p3, multiModel(), fixedModel()), Options{MaxRequestBodySize: 1 << 20})
	ctx, c := grpcCtx(t), ts.client
	good := func() *inference.ModelInferRequest { return obsRequest("", 1, 2, 3, 4) }
	u64 := func(n uint64) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_Uint64Param{Uint64Param: n}}
	}
	str := func(s string) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_StringParam{StringParam: s}}
	}
	for _, tt := range []struct {
		name string
		edit func(r *inference.ModelInferRequest)
		code codes.Code
		msg  string
	}{
		{"unknown model", func(r *inference.ModelInferRequest) { r.ModelName = "nope" }, codes.NotFound, `"nope"`},
		{"unknown version", func(r *inference.ModelInferRequest) { r.ModelVersion = "9" }, codes.NotFound, `"9"`},
		{"version not ready", func(r *inference.ModelInferRequest) { r.ModelVersion = "3" }, codes.Unavailable, "version 3 failed to load"},
		{"bad datatype", func(r *inference.ModelInferRequest) { r.Inputs[0].Datatype = "FP64" }, codes.InvalidArgument, `input "obs": expected datatype FP32, got FP64`},
		{"unknown datatype", func(r *inference.ModelInferRequest) { r.Inputs[0].Datatype = "FLOAT" }, codes.InvalidArgument, `expected datatype FP32, got FLOAT`},
		{"wrong shape", func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{2, 2} }, codes.InvalidArgument, `input "obs": expected shape [-1,4], got [2,2]`},
		{"rank", func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{1, 1, 1, 1, 1, 1, 1, 1, 4} }, codes.InvalidArgument, "got rank 9"},
		{"negative dim", func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{-1, 4} }, codes.InvalidArgument, "negative dimension"},
		{"zero batch", func(r *inference.ModelInferRequest) { r.Inputs[0].Shape = []int64{0, 4} }, codes.InvalidArgument, "expected shape [-1,4], got [0,4]"},
		{"unknown input", func(r *inference.ModelInferRequest) { r.Inputs[0].Name = "ob" }, codes.InvalidArgument, `unknown input "ob" (model inputs: "obs")`},
		{"missing input", func(r *inference.ModelInferRequest) { r.Inputs = nil }, codes.InvalidArgument, `missing input "obs"`},
		{"input twice", func(r *inference.ModelInferRequest) { r.Inputs = append(r.Inputs, r.Inputs[0]) }, codes.InvalidArgument, `input "obs" given more than once`},
		{"count", func(r *inference.ModelInferRequest) { r.Inputs[0].Contents.Fp32Contents = []float32{1, 2, 3} }, codes.InvalidArgument, "shape [1,4] needs 4 elements, fp32_contents has 3"},
		{"wrong field", func(r *inference.ModelInferRequest) {
			r.Inputs[0].Contents = &inference.InferTensorContents{Fp64Contents: []float64{1, 2, 3, 4}}
		}, codes.InvalidArgument, "fp64_contents given for datatype FP32, which takes fp32_contents"},
		{"no data", func(r *inference.ModelInferRequest) { r.Inputs[0].Contents = nil }, codes.InvalidArgument, `input "obs": no data`},
		{"raw count", func(r *inference.ModelInferRequest) {
			r.Inputs[0].Contents = nil
			r.RawInputContents = [][]byte{f32bytes(1, 2, 3, 4), f32bytes(1)}
		}, codes.InvalidArgument, "raw_input_contents has 2 entries for 1 inputs"},
		{"raw size", func(r *inference.ModelInferRequest) {
			r.Inputs[0].Contents = nil
			r.RawInputContents = [][]byte{f32bytes(1, 2, 3)}
		}, codes.InvalidArgument, `input "obs": raw_input_contents[0] has 12 bytes, but shape [1,4] of FP32 takes 16 bytes`},
		{"raw and typed", func(r *inference.ModelInferRequest) { r.RawInputContents = [][]byte{f32bytes(1, 2, 3, 4)} }, codes.InvalidArgument, "contents given with raw_input_contents"},
		{"unknown output", func(r *inference.ModelInferRequest) {
			r.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "act"}}
		}, codes.InvalidArgument, `unknown output "act"`},
		{"output twice", func(r *inference.ModelInferRequest) {
			r.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "action"}, {Name: "action"}}
		}, codes.InvalidArgument, `output "action" requested more than once`},
		{"classification", func(r *inference.ModelInferRequest) {
			r.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "action", Parameters: map[string]*inference.InferParameter{"classification": u64(2)}}}
		}, codes.InvalidArgument, "classification extension is not supported"},
		{"shared memory", func(r *inference.ModelInferRequest) {
			r.Inputs[0].Parameters = map[string]*inference.InferParameter{"shared_memory_region": str("r0")}
		}, codes.InvalidArgument, "shared-memory extension is not enabled"},
		{"priority type", func(r *inference.ModelInferRequest) {
			r.Parameters = map[string]*inference.InferParameter{"priority": str("high")}
		}, codes.InvalidArgument, `parameter "priority" must be an unsigned integer (int64_param or uint64_param), got a string_param`},
		{"priority negative", func(r *inference.ModelInferRequest) {
			r.Parameters = map[string]*inference.InferParameter{"priority": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: -1}}}
		}, codes.InvalidArgument, `parameter "priority" must be an unsigned integer, got -1`},
		{"timeout too long", func(r *inference.ModelInferRequest) {
			r.Parameters = map[string]*inference.InferParameter{"timeout": u64(maxRequestTimeout + 1)}
		}, codes.InvalidArgument, `parameter "timeout" is 3600000001, more than its maximum 3600000000`},
		{"id too long", func(r *inference.ModelInferRequest) { r.Id = strings.Repeat("x", 300) }, codes.InvalidArgument, "id is longer than 256 bytes"},
		{"oversized", func(r *inference.ModelInferRequest) {
			r.Inputs[0].Shape = []int64{70000, 4}
			r.Inputs[0].Contents.Fp32Contents = make([]float32, 280000)
		}, codes.ResourceExhausted, "request message too large: 1120"},
	} {
		r := good()
		tt.edit(r)
		_, err := c.ModelInfer(ctx, r)
		st, _ := status.FromError(err)
		if st.Code() != tt.code || !strings.Contains(st.Message(), tt.msg) {
			t.Errorf("%s: %v %q, want %v containing %q", tt.name, st.Code(), st.Message(), tt.code, tt.msg)
		}
	}

	// Typed values out of their datatype's range, and BOOL bytes other than 0 and 1.
	multi := func(name, dt string, shape []int64, c *inference.InferTensorContents) *inference.ModelInferRequest {
		ins := multiModel().inputs
		r := &inference.ModelInferRequest{ModelName: "multi"}
		for _, in := range ins {
			count := int64(1)
			sh := append([]int64(nil), in.Shape...)
			if sh[0] == -1 {
				sh[0] = 1
			}
			for _, d := range sh {
				count *= d
			}
			t := &inference.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.DType.String(), Shape: sh}
			t.Contents = zeroContents(in.DType, int(count))
			if in.Name == name {
				t.Datatype, t.Shape, t.Contents = dt, shape, c
			}
			r.Inputs = append(r.Inputs, t)
		}
		return r
	}
	for _, tt := range []struct {
		req *inference.ModelInferRequest
		msg string
	}{
		{multi("g", "INT8", []int64{1, 1}, &inference.InferTensorContents{IntContents: []int32{128}}), `input "g": element 0: 128 is out of range for INT8`},
		{multi("i", "INT16", []int64{1, 1}, &inference.InferTensorContents{IntContents: []int32{-32769}}), `input "i": element 0: -32769 is out of range for INT16`},
		{multi("d", "UINT8", []int64{2}, &inference.InferTensorContents{UintContents: []uint32{1, 256}}), `input "d": element 1: 256 is out of range for UINT8`},
		{multi("j", "UINT16", []int64{1, 1}, &inference.InferTensorContents{UintContents: []uint32{65536}}), `out of range for UINT16`},
		{multi("b", "INT32", []int64{2, 3}, &inference.InferTensorContents{IntContents: make([]int32, 6)}), `input "b": batch size 2 differs from batch size 1 of input "a"`},
	} {
		_, err := c.ModelInfer(ctx, tt.req)
		wantCode(t, err, codes.InvalidArgument, tt.msg)
	}
	// A raw BOOL byte must be 0 or 1.
	r := &inference.ModelInferRequest{ModelName: "fixed", Inputs: []*inference.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "INT8", Shape: []int64{1, 3}}},
		RawInputContents: [][]byte{{1, 2, 3}}}
	if resp, err := c.ModelInfer(ctx, r); err != nil || string(resp.RawOutputContents[0]) != "\x01\x02\x03" {
		t.Errorf("fixed raw: %v %v", resp, err)
	}
	cb := multi("c", "BOOL", []int64{1, 1}, nil)
	cb.Inputs[2].Contents = &inference.InferTensorContents{BoolContents: []bool{true}}
	if _, err := c.ModelInfer(ctx, cb); err != nil {
		t.Errorf("multi typed: %v", err)
	}
}

// zeroContents is a typed contents of n zeros of dt.
func zeroContents(dt bridge.DType, n int) *inference.InferTensorContents {
	c := &inference.InferTensorContents{}
	switch contentsField(dt) {
	case "bool_contents":
		c.BoolContents = make([]bool, n)
	case "int_contents":
		c.IntContents = make([]int32, n)
	case "int64_contents":
		c.Int64Contents = make([]int64, n)
	case "uint_contents":
		c.UintContents = make([]uint32, n)
	case "uint64_contents":
		c.Uint64Contents = make([]uint64, n)
	case "fp32_contents":
		c.Fp32Contents = make([]float32, n)
	case "fp64_contents":
		c.Fp64Contents = make([]float64, n)
	}
	return c
}

// TestGrpcErrorMapping: the engines' errors reach gRPC clients as the codes their HTTP
// statuses map to; an overloaded queue asks to retry (RetryInfo detail and retry-after
// trailer); a queue timeout is DeadlineExceeded; our own fault is Internal.
func TestGrpcErrorMapping(t *testing.T) {
	for _, tt := range []struct {
		err   error
		code  codes.Code
		retry bool
	}{
		{engines.ErrOverloaded, codes.Unavailable, true},
		{engines.ErrSequenceLimit, codes.Unavailable, true},
		{&bridge.Error{Code: bridge.CodeInvalidArg, Msg: "bad input"}, codes.InvalidArgument, false},
		{&bridge.Error{Code: bridge.CodeInternal, Msg: "kernel failed"}, codes.Internal, false},
		{errors.New("something of ours"), codes.Internal, false},
	} {
		m := policyModel("1")
		m.err = tt.err
		ts := startGRPC(t, newFakeRegistry(m), Options{})
		var trailer metadata.MD
		_, err := ts.client.ModelInfer(grpcCtx(t), obsRequest("", 1, 2, 3, 4), grpc.Trailer(&trailer))
		st, _ := status.FromError(err)
		if st.Code() != tt.code {
			t.Errorf("%v: code %v, want %v", tt.err, st.Code(), tt.code)
		}
		var ri *errdetails.RetryInfo
		for _, d := range st.Details() {
			if r, ok := d.(*errdetails.RetryInfo); ok {
				ri = r
			}
		}
		if got := ri != nil && ri.RetryDelay.AsDuration() == time.Second && fmt.Sprint(trailer.Get("retry-after")) == "[1]"; got != tt.retry {
			t.Errorf("%v: retry info %v, trailer %v; want retry %v", tt.err, ri, trailer, tt.retry)
		}
	}

	// A request still queued after its own "timeout" parameter: DeadlineExceeded, not run.
	m := policyModel("1")
	m.hook = func(ctx context.Context) { <-ctx.Done() }
	m.err = context.DeadlineExceeded
	ts := startGRPC(t, newFakeRegistry(m), Options{})
	req := obsRequest("", 1, 2, 3, 4)
	req.Parameters = map[string]*inference.InferParameter{"timeout": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: 20000}}}
	_, err := ts.client.ModelInfer(grpcCtx(t), req)
	wantCode(t, err, codes.DeadlineExceeded, "request timed out: still queued after the request's timeout of 20ms")
	// The client's own deadline bounds the wait in the queue too.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err = ts.client.ModelInfer(ctx, obsRequest("", 1, 2, 3, 4))
	if status.Code(err) != codes.DeadlineExceeded {
		t.Errorf("client deadline: %v", err)
	}
}

// TestGrpcParameters: priority, timeout, seed and the request id reach the run as over HTTP.
func TestGrpcParameters(t *testing.T) {
	m := policyModel("1")
	m.recordOpts = true
	ts := startGRPC(t, newFakeRegistry(m), Options{})
	req := obsRequest("", 1, 2, 3, 4)
	req.Parameters = map[string]*inference.InferParameter{
		"priority": {ParameterChoice: &inference.InferParameter_Uint64Param{Uint64Param: 2}},
		"seed":     {ParameterChoice: &inference.InferParameter_Uint64Param{Uint64Param: math.MaxUint64}},
		"timeout":  {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: 5_000_000}},
		"unknown":  {ParameterChoice: &inference.InferParameter_StringParam{StringParam: "ignored"}},
	}
	if _, err := ts.client.ModelInfer(grpcCtx(t), req); err != nil {
		t.Fatal(err)
	}
	o := m.lastOpts.Load()
	if o == nil || o.Priority != 2 || !o.Seeded || o.Seed != math.MaxUint64 {
		t.Errorf("run options %+v", o)
	}
}

// TestGrpcStreamSequence: the steps of a sequence ride one stream in order, its state carried
// by the server; a bad request in the middle is answered on the stream with error_message and
// the stream goes on.
func TestGrpcStreamSequence(t *testing.T) {
	m := recurrentModel(t, engines.SequenceSpec{})
	ts := startGRPC(t, newFakeRegistry(m, policyModel("1")), Options{})
	stream, err := ts.client.ModelStreamInfer(grpcCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	step := func(id int64, start, end bool, x ...float32) *inference.ModelInferRequest {
		return &inference.ModelInferRequest{ModelName: "rnn", Id: fmt.Sprintf("step-%v", x),
			Parameters: map[string]*inference.InferParameter{
				"sequence_id":    {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: id}},
				"sequence_start": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: start}},
				"sequence_end":   {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: end}},
			},
			Inputs:           []*inference.ModelInferRequest_InferInputTensor{{Name: "x", Datatype: "FP32", Shape: []int64{1, 2}}},
			RawInputContents: [][]byte{f32bytes(x...)}}
	}
	bad := step(7, false, false, 1, 1)
	bad.Inputs[0].Shape = []int64{1, 3}
	unknownSeq := step(8, false, false, 1, 1)
	reqs := []*inference.ModelInferRequest{
		step(7, true, false, 1, 2),
		step(7, false, false, 1, 1),
		bad,
		unknownSeq,
		obsRequest("", 1, 2, 3, 4),
		step(7, false, true, 0.5, 0),
	}
	want := []string{"[1 2]", "[2 3]", `input "x": expected shape [-1,2], got [1,3]`, "sequence 8", "action", "[2.5 3]"}
	go func() {
		for _, r := range reqs {
			if err := stream.Send(r); err != nil {
				t.Errorf("Send: %v", err)
				return
			}
		}
		stream.CloseSend()
	}()
	for i := range reqs {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("response %d: %v", i, err)
		}
		switch {
		case i == 2 || i == 3:
			if !strings.Contains(resp.ErrorMessage, want[i]) || resp.InferResponse.GetId() != reqs[i].Id {
				t.Errorf("response %d: %q (id %q), want an error containing %q", i, resp.ErrorMessage, resp.InferResponse.GetId(), want[i])
			}
		case i == 4:
			if resp.ErrorMessage != "" || resp.InferResponse.Outputs[0].Name != "action" {
				t.Errorf("response %d: %v", i, resp)
			}
		default:
			if resp.ErrorMessage != "" || resp.InferResponse.Id != reqs[i].Id || fmt.Sprint(bytesF32(resp.InferResponse.RawOutputContents[0])) != want[i] {
				t.Errorf("response %d: %v, want y = %s", i, resp, want[i])
			}
		}
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after the last response: %v, want EOF", err)
	}
	if n := m.seqs.Len(); n != 0 {
		t.Errorf("%d sequences live after the end", n)
	}
}

// TestGrpcObservability: correlation IDs from metadata or the request id, sent back in the
// header; one access line per call; OnRequest with the gRPC protocols and HTTP-equivalent
// statuses for the metrics.
func TestGrpcObservability(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	var mu sync.Mutex
	var infos []RequestInfo
	ts := startGRPCLog(t, newFakeRegistry(policyModel("1")), zap.New(core), Options{AccessLog: true, OnRequest: func(ri *RequestInfo) {
		mu.Lock()
		infos = append(infos, *ri)
		mu.Unlock()
	}})
	var header metadata.MD
	ctx := metadata.AppendToOutgoingContext(grpcCtx(t), "x-request-id", "abc-123")
	if _, err := ts.client.ModelInfer(ctx, obsRequest("", 1, 2, 3, 4, 5, 6, 7, 8), grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if got := header.Get("x-request-id"); fmt.Sprint(got) != "[abc-123]" {
		t.Errorf("header x-request-id %v", got)
	}
	req := obsRequest("", 1, 2, 3, 4)
	req.Inputs[0].Contents.Fp32Contents = []float32{1, 2, 3}
	req.Id = "my-request"
	_, err := ts.client.ModelInfer(grpcCtx(t), req, grpc.Header(&header))
	wantCode(t, err, codes.InvalidArgument, "needs 4 elements")
	if got := header.Get("x-request-id"); fmt.Sprint(got) != "[my-request]" {
		t.Errorf("header x-request-id %v, want the request's id", got)
	}
	if _, err := ts.client.ServerLive(grpcCtx(t), &inference.ServerLiveRequest{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(infos) != 2 || infos[0].Protocol != ProtocolGRPC || infos[0].Status != 200 || infos[0].Rows != 2 ||
		infos[0].Model != "policy" || infos[0].Version != "1" || infos[0].CorrelationID != "abc-123" ||
		infos[1].Status != 400 || infos[1].CorrelationID != "my-request" {
		t.Errorf("OnRequest: %+v", infos)
	}
	lines := logs.FilterMessage("request").All()
	if len(lines) != 3 {
		t.Fatalf("%d access lines, want 3", len(lines))
	}
	f := lines[0].ContextMap()
	if f["method"] != "grpc" || f["path"] != "/inference.GRPCInferenceService/ModelInfer" || f["status"] != int64(200) ||
		f["grpc_code"] != "OK" || f["request_id"] != "abc-123" || f["model"] != "policy" || f["protocol"] != "grpc" || f["batch_size"] != int64(2) {
		t.Errorf("access line %v", f)
	}
	if f := lines[1].ContextMap(); f["grpc_code"] != "InvalidArgument" || f["status"] != int64(400) {
		t.Errorf("access line of the failure %v", f)
	}
}

// TestGrpcStatistics: ModelStatistics counts what ModelInfer ran.
func TestGrpcStatistics(t *testing.T) {
	ts := startGRPC(t, newFakeRegistry(policyModel("1"), policyModel("2")), Options{})
	ctx, c := grpcCtx(t), ts.client
	for range 3 {
		if _, err := c.ModelInfer(ctx, obsRequest("2", 1, 2, 3, 4)); err != nil {
			t.Fatal(err)
		}
	}
	_, _ = c.ModelInfer(ctx, obsRequest("2", 1))
	st, err := c.ModelStatistics(ctx, &inference.ModelStatisticsRequest{Name: "policy", Version: "2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.ModelStats) != 1 || st.ModelStats[0].Version != "2" || st.ModelStats[0].InferenceStats.Success.Count != 3 ||
		st.ModelStats[0].InferenceStats.Fail.Count != 1 || st.ModelStats[0].LastInference == 0 {
		t.Errorf("statistics: %v", st)
	}
	all, err := c.ModelStatistics(ctx, &inference.ModelStatisticsRequest{})
	if err != nil || len(all.ModelStats) != 2 {
		t.Errorf("all statistics: %v %v", all, err)
	}
	_, err = c.ModelStatistics(ctx, &inference.ModelStatisticsRequest{Name: "nope"})
	wantCode(t, err, codes.NotFound, `"nope"`)
}

// TestGrpcRepositoryAdmin: the repository RPCs follow the HTTP admin rules: without a token
// configured load/unload are PermissionDenied (403) naming the settings; with one, a call
// without it or with another is Unauthenticated (401); the index stays open without a token.
func TestGrpcRepositoryAdmin(t *testing.T) {
	var mu sync.Mutex
	token := ""
	repo := &fakeRepo{}
	ts := startGRPC(t, testRegistry(), Options{Admin: Admin{
		Token:      func() string { mu.Lock(); defer mu.Unlock(); return token },
		Repository: repo,
	}})
	c := ts.client
	auth := func(v string) context.Context {
		if v == "" {
			return grpcCtx(t)
		}
		return metadata.AppendToOutgoingContext(grpcCtx(t), "authorization", v)
	}
	if _, err := c.RepositoryIndex(auth(""), &inference.RepositoryIndexRequest{}); err != nil {
		t.Errorf("index without a token configured: %v", err)
	}
	_, err := c.RepositoryModelLoad(auth(""), &inference.RepositoryModelLoadRequest{ModelName: "m"})
	wantCode(t, err, codes.PermissionDenied, "repository load needs a token: set admin.token_file")
	_, err = c.RepositoryModelUnload(auth("Bearer x"), &inference.RepositoryModelUnloadRequest{ModelName: "m"})
	wantCode(t, err, codes.PermissionDenied, "repository unload needs a token")
	if n := len(repo.take()); n != 0 {
		t.Errorf("%d repository calls made while refused", n)
	}

	mu.Lock()
	token = "s3cret"
	mu.Unlock()
	for _, a := range []string{"", "Bearer wrong", "s3cret", "Basic s3cret"} {
		_, err := c.RepositoryModelLoad(auth(a), &inference.RepositoryModelLoadRequest{ModelName: "m"})
		wantCode(t, err, codes.Unauthenticated, "missing or wrong bearer token")
		_, err = c.RepositoryIndex(auth(a), &inference.RepositoryIndexRequest{})
		wantCode(t, err, codes.Unauthenticated, "missing or wrong bearer token")
	}
	ok := auth("Bearer s3cret")
	if _, err := c.RepositoryIndex(ok, &inference.RepositoryIndexRequest{}); err != nil {
		t.Errorf("index: %v", err)
	}
	version := map[string]*inference.ModelRepositoryParameter{"version": {ParameterChoice: &inference.ModelRepositoryParameter_StringParam{StringParam: "1.0.0"}}}
	if _, err := c.RepositoryModelLoad(ok, &inference.RepositoryModelLoadRequest{ModelName: "m", Parameters: version}); err != nil {
		t.Errorf("load: %v", err)
	}
	if _, err := c.RepositoryModelUnload(ok, &inference.RepositoryModelUnloadRequest{ModelName: "m"}); err != nil {
		t.Errorf("unload: %v", err)
	}
	if got := fmt.Sprint(repo.take()); got != "[load m@1.0.0 unload m@]" {
		t.Errorf("repository calls %s", got)
	}
	_, err = c.RepositoryModelUnload(ok, &inference.RepositoryModelUnloadRequest{ModelName: "nope"})
	wantCode(t, err, codes.NotFound, `unload: unknown model "nope"`)
	version["version"] = &inference.ModelRepositoryParameter{ParameterChoice: &inference.ModelRepositoryParameter_StringParam{StringParam: "2.0.0"}}
	_, err = c.RepositoryModelLoad(ok, &inference.RepositoryModelLoadRequest{ModelName: "m", Parameters: version})
	wantCode(t, err, codes.Unavailable, "sha256 mismatch")
	_, err = c.RepositoryModelLoad(ok, &inference.RepositoryModelLoadRequest{ModelName: "m",
		Parameters: map[string]*inference.ModelRepositoryParameter{"config": {ParameterChoice: &inference.ModelRepositoryParameter_StringParam{StringParam: "{}"}}}})
	wantCode(t, err, codes.InvalidArgument, `parameter "config" is not supported (supported: version)`)
}

// TestGrpcHealthAndReflection: the standard health service reflects readiness, liveness and
// each model; reflection lists the services (what grpcurl needs without the proto files).
func TestGrpcHealthAndReflection(t *testing.T) {
	reg := newFakeRegistry(policyModel("1"), fixedModel(), brokenModel())
	ts := startGRPC(t, reg, Options{})
	h := healthpb.NewHealthClient(ts.conn)
	ctx := grpcCtx(t)
	for _, tt := range []struct {
		service string
		want    healthpb.HealthCheckResponse_ServingStatus
		code    codes.Code
	}{
		{"", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK}, // broken is not ready
		{"inference.GRPCInferenceService", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK},
		{"live", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"policy", healthpb.HealthCheckResponse_SERVING, codes.OK},
		{"broken", healthpb.HealthCheckResponse_NOT_SERVING, codes.OK},
		{"nope", 0, codes.NotFound},
	} {
		r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: tt.service})
		if status.Code(err) != tt.code || (err == nil && r.Status != tt.want) {
			t.Errorf("Check %q: %v %v, want %v %v", tt.service, r, err, tt.want, tt.code)
		}
	}
	w, err := h.Watch(ctx, &healthpb.HealthCheckRequest{Service: "fixed"})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := w.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("Watch fixed: %v %v", r, err)
	}
	list, err := h.List(ctx, &healthpb.HealthListRequest{})
	if err != nil || list.Statuses["policy"].GetStatus() != healthpb.HealthCheckResponse_SERVING || list.Statuses["live"] == nil {
		t.Errorf("List: %v %v", list, err)
	}

	rc, err := reflectionpb.NewServerReflectionClient(ts.conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	r, err := rc.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range r.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if got := strings.Join(names, " "); !strings.Contains(got, "inference.GRPCInferenceService") || !strings.Contains(got, "grpc.health.v1.Health") {
		t.Errorf("reflection lists %q", got)
	}
}

// TestGrpcShutdownEndsStreams: a graceful shutdown answers the request in flight and ends open
// streams and health watches instead of waiting for the clients to close them.
func TestGrpcShutdownEndsStreams(t *testing.T) {
	reg := newFakeRegistry(policyModel("1"))
	srv := New(reg, zaptest.NewLogger(t), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeGRPC(ln) }()
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := inference.NewGRPCInferenceServiceClient(conn)
	stream, err := c.ModelStreamInfer(grpcCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(obsRequest("", 1, 2, 3, 4)); err != nil {
		t.Fatal(err)
	}
	if r, err := stream.Recv(); err != nil || r.ErrorMessage != "" {
		t.Fatalf("first response: %v %v", r, err)
	}
	watch, err := healthpb.NewHealthClient(conn).Watch(grpcCtx(t), &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Shutdown took %v with a stream open", took)
	}
	if err := <-done; err != nil {
		t.Errorf("ServeGRPC: %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after shutdown: %v, want Unavailable", err)
	}
	for {
		r, err := watch.Recv()
		if err != nil {
			break
		}
		if r.Status != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("watch during shutdown: %v", r.Status)
		}
	}
	if n := reg.held(); n != 0 {
		t.Errorf("%d versions held", n)
	}
}

// TestGrpcLiveSizeLimit: the live body limit (limits.max_request_size, reloaded) bounds gRPC
// messages too.
func TestGrpcLiveSizeLimit(t *testing.T) {
	ts := startGRPC(t, newFakeRegistry(policyModel("1")), Options{})
	req := obsRequest("", make([]float32, 64)...)
	if _, err := ts.client.ModelInfer(grpcCtx(t), req); err != nil {
		t.Fatal(err)
	}
	ts.srv.SetMaxRequestBodySize(200)
	_, err := ts.client.ModelInfer(grpcCtx(t), req)
	wantCode(t, err, codes.ResourceExhausted, "the limit is 200 bytes (200 B)")
	ts.srv.SetMaxRequestBodySize(0)
	if _, err := ts.client.ModelInfer(grpcCtx(t), req); err != nil {
		t.Errorf("after restoring the limit: %v", err)
	}
}
