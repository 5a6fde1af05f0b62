package policyd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/policyd/policyd/api/inference"
)

// grpcTransport speaks inference.GRPCInferenceService; tensors travel in
// raw_input_contents / raw_output_contents.
type grpcTransport struct {
	addr string
	conn *grpc.ClientConn
	c    inference.GRPCInferenceServiceClient
}

func newGRPC(addr string, cfg clientConfig) (*grpcTransport, error) {
	opts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1 << 30))}, cfg.grpcOpts...)
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("policyd: grpc %s: %w", addr, err)
	}
	return &grpcTransport{addr: addr, conn: conn, c: inference.NewGRPCInferenceServiceClient(conn)}, nil
}

func (g *grpcTransport) close() error { return g.conn.Close() }

// grpcError maps a gRPC status to the error of its class (docs/api.md, gRPC errors).
func (g *grpcTransport) grpcError(op string, ctx context.Context, err error, trailer metadata.MD) error {
	if e := ctxError(op, ctx, err); e != nil {
		return e
	}
	st, _ := status.FromError(err)
	msg := st.Message()
	var reqID string
	if v := trailer.Get("x-request-id"); len(v) > 0 {
		reqID = v[0]
	}
	var retryAfter time.Duration
	if v := trailer.Get("retry-after"); len(v) > 0 {
		if s, err := strconv.Atoi(v[0]); err == nil && s >= 0 {
			retryAfter = max(time.Duration(s)*time.Second, time.Millisecond)
		}
	}
	switch st.Code() {
	case codes.InvalidArgument:
		return &InvalidArgumentError{Status: 400, Message: msg, RequestID: reqID}
	case codes.ResourceExhausted:
		return &InvalidArgumentError{Status: 413, Message: msg, RequestID: reqID}
	case codes.NotFound:
		return &NotFoundError{Message: msg, RequestID: reqID}
	case codes.DeadlineExceeded: // the server's queue timeout (ours was handled above)
		return &UnavailableError{Message: msg, RetryAfter: retryAfter, Overloaded: true, RequestID: reqID}
	case codes.Unavailable:
		if retryAfter == 0 && reqID == "" && (strings.Contains(msg, "connection error") || strings.Contains(msg, "connect:") || strings.Contains(msg, "name resolver")) {
			// grpc-go's own status: no transport to the server, the call was not sent.
			return &ConnectError{Addr: g.addr, Err: err}
		}
		return &UnavailableError{Message: msg, RetryAfter: retryAfter, Overloaded: overloadedMessage(msg), RequestID: reqID}
	}
	return &ServerError{Status: 500, Message: fmt.Sprintf("%s: %s", st.Code(), msg), RequestID: reqID}
}

func (g *grpcTransport) health(ctx context.Context, what, model, version string) (bool, error) {
	var md metadata.MD
	var (
		ok  bool
		err error
	)
	switch what {
	case "live":
		var r *inference.ServerLiveResponse
		if r, err = g.c.ServerLive(ctx, &inference.ServerLiveRequest{}, grpc.Trailer(&md)); err == nil {
			ok = r.Live
		}
	case "ready":
		var r *inference.ServerReadyResponse
		if r, err = g.c.ServerReady(ctx, &inference.ServerReadyRequest{}, grpc.Trailer(&md)); err == nil {
			ok = r.Ready
		}
	default:
		var r *inference.ModelReadyResponse
		if r, err = g.c.ModelReady(ctx, &inference.ModelReadyRequest{Name: model, Version: version}, grpc.Trailer(&md)); err == nil {
			ok = r.Ready
		}
	}
	if err != nil {
		return false, g.idempotent(g.grpcError(what, ctx, err, md))
	}
	return ok, nil
}

// idempotent marks a transport failure of a call that changes nothing as safe to retry.
func (g *grpcTransport) idempotent(err error) error {
	var ce *ConnectError
	if errors.As(err, &ce) {
		ce.MayHaveRun = false
	}
	return err
}

func (g *grpcTransport) metadata(ctx context.Context, model, version string) (*ModelMetadata, error) {
	var md metadata.MD
	r, err := g.c.ModelMetadata(ctx, &inference.ModelMetadataRequest{Name: model, Version: version}, grpc.Trailer(&md))
	if err != nil {
		return nil, g.idempotent(g.grpcError("metadata", ctx, err, md))
	}
	m := &ModelMetadata{Name: r.Name, Versions: r.Versions, Platform: r.Platform}
	for _, t := range r.Inputs {
		m.Inputs = append(m.Inputs, TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	for _, t := range r.Outputs {
		m.Outputs = append(m.Outputs, TensorMetadata{Name: t.Name, Datatype: t.Datatype, Shape: t.Shape})
	}
	return m, nil
}

func (g *grpcTransport) config(ctx context.Context, model, version string) (map[string]any, error) {
	var md metadata.MD
	r, err := g.c.ModelConfig(ctx, &inference.ModelConfigRequest{Name: model, Version: version}, grpc.Trailer(&md))
	if err != nil {
		return nil, g.idempotent(g.grpcError("config", ctx, err, md))
	}
	b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(r.Config)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func (g *grpcTransport) infer(ctx context.Context, r *inferRequest) (*InferResult, error) {
	if r.json {
		return nil, fmt.Errorf("policyd: infer %s: WithJSON is an HTTP option; gRPC sends raw tensors", r.model)
	}
	req := &inference.ModelInferRequest{ModelName: r.model, ModelVersion: r.version, Id: r.id,
		Inputs:           make([]*inference.ModelInferRequest_InferInputTensor, len(r.inputs)),
		RawInputContents: make([][]byte, len(r.inputs))}
	for i, in := range r.inputs {
		req.Inputs[i] = &inference.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.Datatype, Shape: in.Shape}
		req.RawInputContents[i] = in.Data
	}
	for _, o := range r.outputs {
		req.Outputs = append(req.Outputs, &inference.ModelInferRequest_InferRequestedOutputTensor{Name: o})
	}
	if len(r.params) > 0 {
		req.Parameters = make(map[string]*inference.InferParameter, len(r.params))
		for _, p := range r.params {
			var v inference.InferParameter
			switch x := p.value.(type) {
			case bool:
				v.ParameterChoice = &inference.InferParameter_BoolParam{BoolParam: x}
			case string:
				v.ParameterChoice = &inference.InferParameter_StringParam{StringParam: x}
			case int64:
				v.ParameterChoice = &inference.InferParameter_Int64Param{Int64Param: x}
			case uint64:
				v.ParameterChoice = &inference.InferParameter_Uint64Param{Uint64Param: x}
			}
			req.Parameters[p.key] = &v
		}
	}
	var md metadata.MD
	resp, err := g.c.ModelInfer(ctx, req, grpc.Trailer(&md))
	if err != nil {
		return nil, g.grpcError("infer", ctx, err, md)
	}
	res := &InferResult{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, ID: resp.Id, Outputs: make([]Tensor, len(resp.Outputs))}
	for i, o := range resp.Outputs {
		t := Tensor{Name: o.Name, Datatype: o.Datatype, Shape: o.Shape}
		if i < len(resp.RawOutputContents) {
			t.Data = resp.RawOutputContents[i]
		} else if o.Contents != nil {
			return nil, &ServerError{Status: 500, Message: fmt.Sprintf("infer: output %q came typed, not raw", o.Name)}
		}
		if err := t.check(); err != nil {
			return nil, &ServerError{Status: 500, Message: "infer: " + err.Error()}
		}
		res.Outputs[i] = t
	}
	return res, nil
}
