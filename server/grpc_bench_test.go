package server

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
)

// BenchmarkGrpcInferHandler is ModelInfer on the server side without the transport: the
// interceptor (correlation ID, observation) and the codec (decode, run on the fake engine,
// encode), for a raw and a typed FP32[1,64] request. Its allocs/op are policyd's own per
// request on the gRPC path: 7 raw, 8 typed: the response message in one block (1, see
// newResponse) and its data (1 raw; 2 typed: the contents and its values), the header metadata
// with the correlation ID (4), the context carrying the exchange (1); grpc-go's (framing, the
// request message, marshalling) come on top.
func BenchmarkGrpcInferHandler(b *testing.B) {
	for _, raw := range []bool{true, false} {
		name := "typed"
		if raw {
			name = "raw"
		}
		b.Run(name, func(b *testing.B) {
			m := benchModel()
			out := make([]byte, 4*64)
			outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 64}, Data: out}}
			m.run = func(in []bridge.Tensor) []bridge.Tensor { copy(out, in[0].Data); return outs }
			m.keepOutputs = true
			s := New(newFakeRegistry(m), nil, Options{})
			obs := make([]float32, 64)
			req := &inference.ModelInferRequest{ModelName: "mlp", Inputs: []*inference.ModelInferRequest_InferInputTensor{
				{Name: "obs", Datatype: "FP32", Shape: []int64{1, 64}}}}
			if raw {
				req.RawInputContents = [][]byte{f32bytes(obs...)}
			} else {
				req.Inputs[0].Contents = &inference.InferTensorContents{Fp32Contents: obs}
			}
			svc := &grpcService{s: s}
			info := &grpc.UnaryServerInfo{FullMethod: "/inference.GRPCInferenceService/ModelInfer"}
			handler := func(ctx context.Context, r any) (any, error) {
				return svc.ModelInfer(ctx, r.(*inference.ModelInferRequest))
			}
			ctx := grpc.NewContextWithServerTransportStream(context.Background(), nopStream{})
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.grpcUnary(ctx, req, info, handler); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// nopStream is a grpc.ServerTransportStream that drops headers and trailers.
type nopStream struct{}

func (nopStream) Method() string               { return "/inference.GRPCInferenceService/ModelInfer" }
func (nopStream) SetHeader(metadata.MD) error  { return nil }
func (nopStream) SendHeader(metadata.MD) error { return nil }
func (nopStream) SetTrailer(metadata.MD) error { return nil }

// BenchmarkGrpcLoopback is one ModelInfer over a loopback TCP connection with the generated
// client (raw FP32[1,64], fake engine): client and server in one process, so its allocs/op
// are both sides', grpc-go's included. For the latency of the real engine, make bench.
func BenchmarkGrpcLoopback(b *testing.B) {
	m := benchModel()
	out := make([]byte, 4*64)
	outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 64}, Data: out}}
	m.run = func(in []bridge.Tensor) []bridge.Tensor { copy(out, in[0].Data); return outs }
	m.keepOutputs = true
	s := New(newFakeRegistry(m), nil, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.ServeGRPC(ln)
	defer s.Shutdown(context.Background())
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := inference.NewGRPCInferenceServiceClient(conn)
	req := &inference.ModelInferRequest{ModelName: "mlp", Inputs: []*inference.ModelInferRequest_InferInputTensor{
		{Name: "obs", Datatype: "FP32", Shape: []int64{1, 64}}}, RawInputContents: [][]byte{make([]byte, 256)}}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.ModelInfer(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// The gRPC handler's own allocations per raw FP32 request (BenchmarkGrpcInferHandler/raw
// without the timing): the response in one block (1) and its raw output bytes (1), the header
// metadata with the correlation ID (4), the context carrying the exchange (1). grpc-go's own
// (framing, the request message, marshalling) are not counted here.
func TestGrpcInferHandlerAllocs(t *testing.T) {
	m := benchModel()
	out := make([]byte, 4*64)
	outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 64}, Data: out}}
	m.run = func(in []bridge.Tensor) []bridge.Tensor { copy(out, in[0].Data); return outs }
	m.keepOutputs = true
	s := New(newFakeRegistry(m), nil, Options{})
	req := &inference.ModelInferRequest{ModelName: "mlp", Inputs: []*inference.ModelInferRequest_InferInputTensor{
		{Name: "obs", Datatype: "FP32", Shape: []int64{1, 64}}}, RawInputContents: [][]byte{f32bytes(make([]float32, 64)...)}}
	svc := &grpcService{s: s}
	info := &grpc.UnaryServerInfo{FullMethod: "/inference.GRPCInferenceService/ModelInfer"}
	handler := func(ctx context.Context, r any) (any, error) {
		return svc.ModelInfer(ctx, r.(*inference.ModelInferRequest))
	}
	ctx := grpc.NewContextWithServerTransportStream(context.Background(), nopStream{})
	var resp any
	allocs := testing.AllocsPerRun(200, func() {
		var err error
		if resp, err = s.grpcUnary(ctx, req, info, handler); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 7 && !grpcRaceEnabled {
		t.Errorf("the gRPC handler allocates %.1f times per raw request, want at most 7", allocs)
	}
	r := resp.(*inference.ModelInferResponse)
	if len(r.Outputs) != 1 || r.Outputs[0].Name != "action" || len(r.Outputs[0].Shape) != 2 || r.Outputs[0].Shape[1] != 64 ||
		len(r.RawOutputContents) != 1 || len(r.RawOutputContents[0]) != 256 {
		t.Errorf("response %v", r)
	}
}

// newResponse: one block for up to two outputs and eight dimensions, separate allocations
// beyond; either way Outputs[i] is tensors[i], and the slices cannot grow into each other.
func TestNewResponse(t *testing.T) {
	for _, c := range []struct{ n, rank int }{{1, 2}, {2, 8}, {3, 3}, {2, 9}, {0, 0}} {
		for _, raw := range []bool{false, true} {
			resp, tensors, dims := newResponse(c.n, c.rank, raw)
			if len(resp.Outputs) != c.n || len(tensors) != c.n || cap(resp.Outputs) != c.n || len(dims) != 0 || cap(dims) != c.rank {
				t.Errorf("%+v raw %v: %d outputs (cap %d), %d tensors, dims len %d cap %d", c, raw, len(resp.Outputs), cap(resp.Outputs), len(tensors), len(dims), cap(dims))
				continue
			}
			for i := range tensors {
				if resp.Outputs[i] != &tensors[i] {
					t.Errorf("%+v: Outputs[%d] is not tensors[%d]", c, i, i)
				}
			}
			if want := c.n; raw && (len(resp.RawOutputContents) != want || cap(resp.RawOutputContents) != want) || !raw && resp.RawOutputContents != nil {
				t.Errorf("%+v raw %v: raw contents %d (cap %d)", c, raw, len(resp.RawOutputContents), cap(resp.RawOutputContents))
			}
		}
	}
}
