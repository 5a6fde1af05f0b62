package load

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/policyd/policyd/api/inference"
)

// shmParams are the parameters naming a window of region.
func shmParams(region string, size, offset int) map[string]*inference.InferParameter {
	return map[string]*inference.InferParameter{
		"shared_memory_region":    {ParameterChoice: &inference.InferParameter_StringParam{StringParam: region}},
		"shared_memory_byte_size": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(size)}},
		"shared_memory_offset":    {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(offset)}},
	}
}

// grpcMessage is slot s's ModelInferRequest: every input and output in its region.
func (g *shmGen) grpcMessage(model string, s *shmSlot) (*inference.ModelInferRequest, error) {
	m := &inference.ModelInferRequest{ModelName: model}
	for i, t := range g.req.Inputs {
		n, err := t.elements()
		if err != nil {
			return nil, err
		}
		m.Inputs = append(m.Inputs, &inference.ModelInferRequest_InferInputTensor{Name: t.Name, Datatype: "FP32", Shape: t.Shape,
			Parameters: shmParams(s.name, 4*n, s.inOff[i])})
	}
	for i, t := range g.req.Outputs {
		m.Outputs = append(m.Outputs, &inference.ModelInferRequest_InferRequestedOutputTensor{Name: t.Name,
			Parameters: shmParams(s.name, s.outSize[i], s.outOff[i])})
	}
	return m, nil
}

// intParam reads an integer parameter of an answer (int64 or uint64).
func intParam(p map[string]*inference.InferParameter, key string) int64 {
	switch v := p[key].GetParameterChoice().(type) {
	case *inference.InferParameter_Int64Param:
		return v.Int64Param
	case *inference.InferParameter_Uint64Param:
		return int64(v.Uint64Param)
	}
	return -1
}

// runGRPC is RunSHM over gRPC: one connection and one slot per worker, unary ModelInfer.
func (g *shmGen) runGRPC(ctx context.Context) (Result, error) {
	o := g.o
	host, _, err := net.SplitHostPort(g.req.GRPCAddr)
	if err != nil {
		return Result{}, fmt.Errorf("grpc address %q: want HOST:PORT", g.req.GRPCAddr)
	}
	if o.Dial == nil && !(strings.HasPrefix(host, "127.") || host == "localhost" || host == "::1") {
		return Result{}, fmt.Errorf("grpc address %q: refusing a non-loopback target", g.req.GRPCAddr)
	}
	model := modelOfURL(g.req.URL)
	if model == "" {
		return Result{}, fmt.Errorf("url %q: want .../v2/models/NAME/infer (the model of the gRPC calls)", g.req.URL)
	}
	msgs := make([]*inference.ModelInferRequest, len(g.slots))
	for i, s := range g.slots {
		if msgs[i], err = g.grpcMessage(model, s); err != nil {
			return Result{}, err
		}
	}
	conns := make([]*grpc.ClientConn, o.Connections)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	for i := range conns {
		if conns[i], err = grpcDial(g.req.GRPCAddr, o); err != nil {
			return Result{}, err
		}
	}
	runCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gg := &grpcGen{runCtx: runCtx, conns: conns}
	gg.gen = gen{o: o, abort: cancel}
	if err := g.checkGRPC(ctx, inference.NewGRPCInferenceServiceClient(conns[0]), msgs[0]); err != nil {
		return Result{}, err
	}
	next := 0
	gg.gen.newWorker = func() (func(bool) bool, func()) {
		gg.nextMu.Lock()
		i := next % len(conns)
		next++
		gg.nextMu.Unlock()
		c, s, msg, rewrite := inference.NewGRPCInferenceServiceClient(conns[i]), g.slots[i], msgs[i], g.req.Rewrite
		return func(count bool) bool {
			if rewrite {
				copy(s.mem, s.in)
			}
			cctx, cancel := context.WithTimeout(runCtx, o.Timeout)
			_, err := c.ModelInfer(cctx, msg)
			cancel()
			return gg.result(err, "", count)
		}, func() {}
	}
	res := Result{URL: "grpc://" + g.req.GRPCAddr + "/" + model, Protocol: "grpc-shm", BodyBytes: proto.Size(msgs[0]), Mode: o.Mode,
		Concurrency: o.Connections, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	gg.closed(ctx, &res)
	if res.Requests == 0 && ctx.Err() == nil {
		return res, fmt.Errorf("no request succeeded in %v (%d errors; last: %s)", o.Duration, res.Errors, res.LastError)
	}
	return res, ctx.Err()
}

// checkGRPC sends slot 0's call and checks the outputs it wrote into the region.
func (g *shmGen) checkGRPC(ctx context.Context, c inference.GRPCInferenceServiceClient, msg *inference.ModelInferRequest) error {
	s := g.slots[0]
	for i, off := range s.outOff {
		clear(s.mem[off : off+s.outSize[i]])
	}
	ctx, cancel := context.WithTimeout(ctx, g.o.Timeout)
	defer cancel()
	resp, err := c.ModelInfer(ctx, msg)
	if err != nil {
		return fmt.Errorf("%w: first request: %v", ErrCheck, err)
	}
	got := make([]Tensor, 0, len(g.req.Outputs))
	for i, want := range g.req.Outputs {
		var a *inference.ModelInferResponse_InferOutputTensor
		for _, o := range resp.Outputs {
			if o.Name == want.Name {
				a = o
			}
		}
		if a == nil {
			return fmt.Errorf("%w: output %q missing from the response", ErrCheck, want.Name)
		}
		if a.Contents != nil {
			return fmt.Errorf("%w: output %q answered inline, not in shared memory", ErrCheck, want.Name)
		}
		region := a.Parameters["shared_memory_region"].GetStringParam()
		t, err := s.readOutput(i, want.Name, a.Shape, region, intParam(a.Parameters, "shared_memory_offset"))
		if err != nil {
			return err
		}
		got = append(got, t)
	}
	return g.checkRegion(got)
}

// modelOfURL is NAME of http://HOST/v2/models/NAME[/versions/V]/infer.
func modelOfURL(u string) string {
	_, rest, ok := strings.Cut(u, "/v2/models/")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "/")
	return name
}
