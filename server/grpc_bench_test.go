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
// request on the gRPC path: the response message (6), the header metadata with the
// correlation ID (4), the context carrying the exchange (1); grpc-go's (framing, the request
// message, marshalling) come on top.
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
