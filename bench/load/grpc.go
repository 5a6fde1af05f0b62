package load

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"net"
	"runtime"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/policyd/policyd/api/inference"
)

// GRPCRequest is what every request of a gRPC run sends: one KServe v2 ModelInferRequest whose
// FP32 inputs ride raw_input_contents (little-endian bytes, no JSON anywhere), over the
// generated client of api/inference.
type GRPCRequest struct {
	Addr    string // HOST:PORT of the gRPC listener (loopback only)
	Model   string
	Version string // "" = the default version
	Inputs  []Tensor
	// Stream sends over ModelStreamInfer: each connection opens one bidirectional stream and
	// keeps one request in flight on it (send, then wait for its answer), so a request's latency
	// is the same send-to-answer time as a unary call's. False: unary ModelInfer.
	Stream bool
}

// Protocol is the Result.Protocol of a run of r: "grpc" or "grpc-stream".
func (r GRPCRequest) Protocol() string {
	if r.Stream {
		return "grpc-stream"
	}
	return "grpc"
}

// GRPCInferRequest builds the ModelInferRequest of inputs: raw FP32 contents, every output
// answered (the server sends raw_output_contents for raw inputs).
func GRPCInferRequest(model, version string, inputs []Tensor) (*inference.ModelInferRequest, error) {
	if len(inputs) == 0 {
		return nil, errors.New("no inputs")
	}
	req := &inference.ModelInferRequest{ModelName: model, ModelVersion: version}
	for _, t := range inputs {
		n, err := t.elements()
		if err != nil {
			return nil, err
		}
		raw := make([]byte, 0, 4*n)
		for _, v := range t.Data {
			raw = binary.LittleEndian.AppendUint32(raw, math.Float32bits(float32(v)))
		}
		req.Inputs = append(req.Inputs, &inference.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: "FP32", Shape: t.Shape})
		req.RawInputContents = append(req.RawInputContents, raw)
	}
	return req, nil
}

// GRPCOutputs reads the FP32 outputs of a ModelInferResponse: from raw_output_contents (in the
// order of outputs) or, when it has none, from each output's typed fp32_contents.
func GRPCOutputs(resp *inference.ModelInferResponse) ([]Tensor, error) {
	if resp == nil || len(resp.Outputs) == 0 {
		return nil, errors.New("no outputs in response")
	}
	raw := resp.RawOutputContents
	if len(raw) > 0 && len(raw) != len(resp.Outputs) {
		return nil, fmt.Errorf("%d raw_output_contents for %d outputs", len(raw), len(resp.Outputs))
	}
	out := make([]Tensor, 0, len(resp.Outputs))
	for i, o := range resp.Outputs {
		if o.Datatype != "FP32" {
			return nil, fmt.Errorf("output %q: datatype %q, only FP32 is supported", o.Name, o.Datatype)
		}
		t := Tensor{Name: o.Name, Datatype: o.Datatype, Shape: o.Shape}
		switch {
		case len(raw) > 0:
			b := raw[i]
			if len(b)%4 != 0 {
				return nil, fmt.Errorf("output %q: %d raw bytes is not a whole number of FP32 values", o.Name, len(b))
			}
			t.Data = make([]float64, len(b)/4)
			for j := range t.Data {
				t.Data[j] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b[4*j:])))
			}
		case o.Contents != nil:
			t.Data = make([]float64, len(o.Contents.Fp32Contents))
			for j, v := range o.Contents.Fp32Contents {
				t.Data[j] = float64(v)
			}
		}
		if _, err := t.elements(); err != nil {
			return nil, fmt.Errorf("output %q: %v", o.Name, err)
		}
		out = append(out, t)
	}
	return out, nil
}

// RunGRPC loads req.Addr's gRPC inference service as o says (closed loop only: Connections
// client connections, each with one worker and one request in flight) and returns what it
// measured, in the units of Run. The first answer is checked against o.Check first.
func RunGRPC(ctx context.Context, req GRPCRequest, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	if o.Mode != "closed" {
		return Result{}, fmt.Errorf("mode %q: gRPC runs are closed loop only", o.Mode)
	}
	host, _, err := net.SplitHostPort(req.Addr)
	if err != nil {
		return Result{}, fmt.Errorf("grpc address %q: want HOST:PORT", req.Addr)
	}
	if o.Dial == nil && !(strings.HasPrefix(host, "127.") || host == "localhost" || host == "::1") {
		return Result{}, fmt.Errorf("grpc address %q: refusing a non-loopback target", req.Addr)
	}
	msg, err := GRPCInferRequest(req.Model, req.Version, req.Inputs)
	if err != nil {
		return Result{}, err
	}
	// One client connection per worker, as the HTTP generator keeps one keep-alive connection
	// per worker: C connections means C HTTP/2 connections, not C streams on one.
	conns := make([]*grpc.ClientConn, o.Connections)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		if conns[i], err = grpcDial(req.Addr, o); err != nil {
			return Result{}, err
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	g := &grpcGen{req: req, msg: msg, runCtx: runCtx, conns: conns}
	g.gen = gen{o: o, abort: cancel}
	g.gen.newWorker = g.worker
	if err := g.check(ctx); err != nil {
		return Result{}, err
	}
	res := Result{URL: "grpc://" + req.Addr + "/" + req.Model, Protocol: req.Protocol(), BodyBytes: proto.Size(msg), Mode: o.Mode,
		Concurrency: o.Connections, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	g.closed(ctx, &res)
	if res.Requests == 0 && ctx.Err() == nil {
		return res, fmt.Errorf("no request succeeded in %v (%d errors; last: %s)", o.Duration, res.Errors, res.LastError)
	}
	return res, ctx.Err()
}

func grpcDial(addr string, o Options) (*grpc.ClientConn, error) {
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(256<<20), grpc.MaxCallSendMsgSize(256<<20)),
	}
	if o.Dial != nil {
		dial := o.Dial
		opts = append(opts, grpc.WithContextDialer(func(_ context.Context, a string) (net.Conn, error) { return dial(a) }))
	}
	c, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("grpc client for %s: %w", addr, err)
	}
	return c, nil
}

type grpcGen struct {
	gen
	req    GRPCRequest
	msg    *inference.ModelInferRequest
	runCtx context.Context // cancelled when the run ends: streams close
	conns  []*grpc.ClientConn
	nextMu sync.Mutex
	next   int // the connection the next worker takes
}

// check sends one request on the first connection, as the run will, and checks its answer.
func (g *grpcGen) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	defer cancel()
	c := inference.NewGRPCInferenceServiceClient(g.conns[0])
	var resp *inference.ModelInferResponse
	if g.req.Stream {
		s, err := c.ModelStreamInfer(ctx)
		if err != nil {
			return fmt.Errorf("%w: ModelStreamInfer: %v", ErrCheck, err)
		}
		defer s.CloseSend()
		if err := s.Send(g.msg); err != nil {
			return fmt.Errorf("%w: first request: %v", ErrCheck, err)
		}
		r, err := s.Recv()
		if err != nil {
			return fmt.Errorf("%w: first request: %v", ErrCheck, err)
		}
		if r.ErrorMessage != "" {
			return fmt.Errorf("%w: first request: stream error: %s", ErrCheck, r.ErrorMessage)
		}
		resp = r.InferResponse
	} else {
		r, err := c.ModelInfer(ctx, g.msg)
		if err != nil {
			return fmt.Errorf("%w: first request: %v", ErrCheck, err)
		}
		resp = r
	}
	ref := g.o.Check
	if ref == nil {
		ref = &Reference{ShapeOnly: true}
	}
	got, err := GRPCOutputs(resp)
	if err == nil {
		err = ref.Check(got)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCheck, err)
	}
	return nil
}

// worker is one closed-loop worker on its own connection: unary calls, or one stream.
func (g *grpcGen) worker() (func(bool) bool, func()) {
	g.nextMu.Lock()
	conn := g.conns[g.next%len(g.conns)]
	g.next++
	g.nextMu.Unlock()
	c := inference.NewGRPCInferenceServiceClient(conn)
	if !g.req.Stream {
		return func(count bool) bool {
			ctx, cancel := context.WithTimeout(g.runCtx, g.o.Timeout)
			_, err := c.ModelInfer(ctx, g.msg)
			cancel()
			return g.result(err, "", count)
		}, func() {}
	}
	var s inference.GRPCInferenceService_ModelStreamInferClient
	do := func(count bool) bool {
		if s == nil {
			var err error
			if s, err = c.ModelStreamInfer(g.runCtx); err != nil {
				s = nil
				return g.result(err, "", count)
			}
		}
		if err := s.Send(g.msg); err != nil {
			s = nil // the stream is broken: the next request opens another
			return g.result(err, "", count)
		}
		r, err := s.Recv()
		if err != nil {
			s = nil
			return g.result(err, "", count)
		}
		return g.result(nil, r.ErrorMessage, count)
	}
	return do, func() {
		if s != nil {
			_ = s.CloseSend()
		}
	}
}

// result reports whether a call succeeded, counting the failure when count is set.
func (g *grpcGen) result(err error, streamErr string, count bool) bool {
	if err == nil && streamErr == "" {
		return true
	}
	if count && g.runCtx.Err() == nil {
		if err != nil {
			g.failed(err.Error())
		} else {
			g.failed("stream error: " + streamErr)
		}
	}
	if err != nil { // back off a little on transport errors (server gone)
		time.Sleep(time.Millisecond)
	}
	return false
}
