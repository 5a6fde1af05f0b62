package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"time"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	_ "google.golang.org/grpc/encoding/gzip" // gzip both ways: a call compressed by the client is answered compressed
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/repository"
)

// The gRPC front end: the KServe v2 / Open Inference Protocol service
// inference.GRPCInferenceService with Triton's extensions (api/inference), the standard
// grpc.health.v1 health service and server reflection, on a listener of its own
// (server.grpc_addr, ServeGRPC). It is a transport over the same inference path as HTTP
// (infer.go): ModelInfer and every request of ModelStreamInfer decode through grpcRequest
// (grpc_codec.go) into the same inputs, checked against the same signature, scheduled with
// the same parameters, answered through the same error mapping (errorStatus, then grpcCode).
//
// Per request, as over HTTP: a correlation ID (metadata x-request-id, else the trace ID of
// the metadata traceparent, else the request's "id", else generated; sent back in the
// response header metadata x-request-id), a server span when tracing is on (child of the
// metadata traceparent), one access log line, and Options.OnRequest for inference requests
// with Protocol ProtocolGRPC or ProtocolGRPCStream and Status the HTTP status the same error
// has over HTTP (so the metrics' code and outcome labels mean the same for every protocol).
//
// docs/api.md, gRPC, is the user's view of it.

// The protocols of RequestInfo for gRPC inference.
const (
	ProtocolGRPC       = "grpc"        // KServe v2 ModelInfer
	ProtocolGRPCStream = "grpc-stream" // one request of Triton's ModelStreamInfer
)

// HeaderRetryAfter is the trailer of a gRPC answer that asks the client to retry (Unavailable,
// DeadlineExceeded of a queue timeout), beside its google.rpc.RetryInfo detail.
const grpcRetryAfter = "retry-after"

// newGRPC builds the gRPC server: the inference service, health, reflection. The transport
// reads messages up to max(MaxRequestBodySize, MaxRequestBodyCeiling) (a larger one gets
// ResourceExhausted from grpc itself); the live limit (SetMaxRequestBodySize) is checked on
// each inference request as its size (ResourceExhausted, as HTTP answers 413).
func (s *Server) newGRPC() *grpc.Server {
	gs := grpc.NewServer(
		grpc.MaxRecvMsgSize(max(s.opts.MaxRequestBodySize, MaxRequestBodyCeiling)),
		// As over HTTP: a connection idle for IdleTimeout is closed (GOAWAY), and a new one must
		// finish its handshake within ReadTimeout.
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: s.opts.IdleTimeout}),
		grpc.ConnectionTimeout(s.opts.ReadTimeout),
		grpc.ChainUnaryInterceptor(s.grpcUnary),
		grpc.ChainStreamInterceptor(s.grpcStreamRecover),
		// Streams run on a fixed set of workers instead of a new goroutine each: at one
		// connection, mlp-med b1, p50 184/201 -> 153/143 µs and server CPU 132/177 -> 116/110
		// µs per request (two alternated runs, docs/performance.md); no change at 16.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	inference.RegisterGRPCInferenceServiceServer(gs, &grpcService{s: s})
	healthpb.RegisterHealthServer(gs, &grpcHealth{s: s})
	reflection.Register(gs)
	return gs
}

// ServeGRPC serves the gRPC API on ln until Shutdown; it then returns nil.
func (s *Server) ServeGRPC(ln net.Listener) error {
	err := s.grpc.Serve(ln)
	if err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve gRPC: %w", err)
	}
	return nil
}

// shutdownGRPC stops the gRPC server gracefully: no new calls; streams end after the request
// they are answering (stop is closed), calls in flight are answered. When ctx ends first,
// the remaining calls are cut (Stop).
func (s *Server) shutdownGRPC(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.grpc.GracefulStop(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.grpc.Stop()
		<-done
		return fmt.Errorf("gRPC shutdown: %w", ctx.Err())
	}
}

// grpcService implements inference.GRPCInferenceServiceServer. The system shared-memory RPCs
// are in shm.go, the CUDA shared-memory ones in cudashm.go; the trace and log-settings RPCs
// answer Unimplemented (the embedded default).
type grpcService struct {
	inference.UnimplementedGRPCInferenceServiceServer
	s *Server
}

// grpcCode maps an HTTP status of errorStatus to its gRPC code (the mapping gRPC's own
// HTTP-to-gRPC table and Triton use).
func grpcCode(httpStatus int) codes.Code {
	switch httpStatus {
	case http.StatusBadRequest:
		return codes.InvalidArgument
	case http.StatusUnauthorized:
		return codes.Unauthenticated
	case http.StatusForbidden:
		return codes.PermissionDenied
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusMethodNotAllowed, http.StatusNotImplemented:
		return codes.Unimplemented
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return codes.DeadlineExceeded
	case http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
		return codes.ResourceExhausted
	case http.StatusServiceUnavailable:
		return codes.Unavailable
	}
	if httpStatus >= 400 && httpStatus < 500 {
		return codes.InvalidArgument
	}
	return codes.Internal
}

// grpcError is the gRPC status of err and the HTTP status the same error has over HTTP: its
// code from errorStatus (grpcCode); a queue timeout is DeadlineExceeded; an answer that asks
// the client to retry carries a google.rpc.RetryInfo detail (retry after 1 s). An error that
// is a gRPC status already keeps it.
func grpcError(err error) (st *status.Status, httpStatus int, retry bool) {
	if se, ok := status.FromError(err); ok && se.Code() != codes.Unknown {
		return se, httpOfCode(se.Code()), false
	}
	httpStatus, retry = errorStatus(err)
	code := grpcCode(httpStatus)
	if errTimedOut(err) {
		code = codes.DeadlineExceeded
	}
	st = status.New(code, err.Error())
	if retry {
		if d, derr := st.WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Second)}); derr == nil {
			st = d
		}
	}
	return st, httpStatus, retry
}

// httpOfCode is the HTTP status of a gRPC code, for the metrics of calls that grpc itself
// answered or a handler answered with a status.
func httpOfCode(c codes.Code) int {
	switch c {
	case codes.OK:
		return http.StatusOK
	case codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	case codes.NotFound:
		return http.StatusNotFound
	case codes.ResourceExhausted:
		return http.StatusRequestEntityTooLarge
	case codes.Unimplemented:
		return http.StatusNotImplemented
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		return http.StatusGatewayTimeout
	case codes.Canceled:
		return 499 // the client's cancel, as nginx and Envoy count it
	}
	return http.StatusInternalServerError
}

// grpcExchangeKey is the context key of a unary call's *exchange.
type grpcExchangeKey struct{}

func grpcExchangeOf(ctx context.Context) *exchange {
	x, _ := ctx.Value(grpcExchangeKey{}).(*exchange)
	return x
}

// first returns the first value of a metadata key, as bytes for the ID checks (nil: none).
func first(md metadata.MD, key string) []byte {
	if v := md.Get(key); len(v) > 0 {
		return []byte(v[0])
	}
	return nil
}

// isHealthMethod: health checks are neither traced nor logged above debug level.
func isHealthMethod(fullMethod string) bool {
	return len(fullMethod) > 23 && fullMethod[:23] == "/grpc.health.v1.Health/"
}

// grpcUnary observes every unary call as observe does an HTTP request: correlation ID,
// server span, the error's status (with Retry-After trailer), access line, OnRequest.
func (s *Server) grpcUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	md, _ := metadata.FromIncomingContext(ctx)
	x := s.grpcBegin(ctx, md, info.FullMethod, requestIDOf(req), false)
	if x.span != nil {
		ctx = trace.ContextWithSpan(ctx, x.span)
	}
	ctx = context.WithValue(ctx, grpcExchangeKey{}, x)
	_ = grpc.SetHeader(ctx, s.grpcHeader(x))
	defer func() {
		if v := recover(); v != nil {
			s.hot.Error("gRPC handler panic", zap.Any("panic", v), zap.String("path", info.FullMethod), zap.String("request_id", string(x.id)))
			resp, err = nil, status.Error(codes.Internal, "internal error")
		}
		var st *status.Status
		httpStatus := http.StatusOK
		if err != nil {
			var retry bool
			st, httpStatus, retry = grpcError(err)
			x.failed(errTimedOut(err), retry)
			if retry {
				_ = grpc.SetTrailer(ctx, metadata.Pairs(grpcRetryAfter, retryAfterSeconds))
			}
			err = st.Err()
		}
		s.grpcFinish(x, info.FullMethod, st, httpStatus, req, resp)
	}()
	return handler(ctx, req)
}

// grpcStreamRecover turns a panic of a stream handler into Internal.
func (s *Server) grpcStreamRecover(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer func() {
		if v := recover(); v != nil {
			s.hot.Error("gRPC handler panic", zap.Any("panic", v), zap.String("path", info.FullMethod))
			err = status.Error(codes.Internal, "internal error")
		}
	}()
	return handler(srv, ss)
}

// grpcBegin starts observing one call (or one request of a stream): its exchange with the
// correlation ID and, when tracing is on, its server span, child of the metadata traceparent.
// The correlation ID is the metadata x-request-id, else the traceparent's trace ID, else the
// request's id (reqID), else generated; reqFirst puts reqID first (a stream's requests).
func (s *Server) grpcBegin(ctx context.Context, md metadata.MD, fullMethod, reqID string, reqFirst bool) *exchange {
	x := exchanges.Get().(*exchange)
	x.start = time.Now()
	x.route = fullMethod
	x.id = x.idBuf[:0]
	if reqFirst && usableID([]byte(reqID)) {
		x.id = append(x.id, reqID...)
	} else {
		x.takeID(first(md, "x-request-id"), first(md, "traceparent"))
	}
	if s.tracer != nil && !isHealthMethod(fullMethod) {
		parent := traceContext.Extract(ctx, metadataCarrier(md))
		_, span := s.tracer.Start(parent, fullMethod[1:], trace.WithSpanKind(trace.SpanKindServer),
			trace.WithTimestamp(x.start), trace.WithAttributes(
				attribute.String("rpc.system", "grpc"),
				attribute.String("rpc.method", fullMethod)))
		x.span = span
		if len(x.id) == 0 && span.SpanContext().HasTraceID() {
			id := span.SpanContext().TraceID()
			x.id = appendHex(x.idBuf[:0], id[:])
		}
	}
	if len(x.id) == 0 && usableID([]byte(reqID)) {
		x.id = append(x.idBuf[:0], reqID...)
	}
	if len(x.id) == 0 {
		x.generateID()
	}
	return x
}

// requestIDOf is the id of an inference request message, "" for other messages.
func requestIDOf(req any) string {
	if r, ok := req.(*inference.ModelInferRequest); ok {
		return r.Id
	}
	return ""
}

// grpcHeader is the response header metadata of a call: its correlation ID and, when traced,
// its span's traceparent.
func (s *Server) grpcHeader(x *exchange) metadata.MD {
	md := metadata.Pairs("x-request-id", string(x.id))
	if x.span != nil && x.span.SpanContext().IsValid() {
		traceContext.Inject(trace.ContextWithSpan(context.Background(), x.span), metadataCarrier(md))
	}
	return md
}

// grpcFinish closes a call as finish closes an HTTP request and returns x to its pool. st is
// nil on success; httpStatus is what the same answer is over HTTP.
func (s *Server) grpcFinish(x *exchange, fullMethod string, st *status.Status, httpStatus int, req, resp any) {
	if s.opts.AccessLog || s.opts.OnRequest != nil || x.span != nil {
		x.info.Status = httpStatus
		x.info.Latency = time.Since(x.start)
		if m, ok := req.(proto.Message); ok && m != nil {
			x.info.BytesIn = proto.Size(m)
		}
		if m, ok := resp.(proto.Message); ok && resp != nil {
			x.info.BytesOut = proto.Size(m)
		}
		code := codes.OK
		if st != nil {
			code = st.Code()
		}
		if x.span != nil {
			s.endGRPCSpan(x, code)
		}
		if s.opts.AccessLog {
			s.grpcAccessLog(x, fullMethod, code, st)
		}
		if s.opts.OnRequest != nil && x.info.Protocol != "" {
			x.info.CorrelationID = string(x.id)
			s.opts.OnRequest(&x.info)
		}
	}
	if st != nil && st.Code() == codes.Internal {
		s.hot.Error("request failed", zap.String("method", "grpc"), zap.String("path", fullMethod),
			zap.String("error", st.Message()), zap.String("request_id", string(x.id)))
	}
	x.info, x.route, x.id, x.span = RequestInfo{}, "", nil, nil
	exchanges.Put(x)
}

// grpcAccessLog writes a call's access line: the fields of an HTTP one (method "grpc", path
// the full method, status the HTTP equivalent) and grpc_code. Health checks are logged at
// debug level.
func (s *Server) grpcAccessLog(x *exchange, fullMethod string, code codes.Code, st *status.Status) {
	level := zap.InfoLevel
	if isHealthMethod(fullMethod) {
		level = zap.DebugLevel
	}
	ce := s.log.Check(level, "request")
	if ce == nil {
		return
	}
	f := append(x.log[:0],
		zap.String("method", "grpc"),
		zap.String("path", fullMethod),
		zap.Int("status", x.info.Status),
		zap.String("grpc_code", code.String()))
	ce.Write(x.accessFields(f)...)
	clear(x.log[:])
}

func (s *Server) endGRPCSpan(x *exchange, code codes.Code) {
	sp := x.span
	if sp.IsRecording() {
		sp.SetAttributes(
			attribute.Int("rpc.grpc.status_code", int(code)),
			attribute.String("policyd.request_id", string(x.id)))
		if x.info.Model != "" {
			sp.SetAttributes(attribute.String("policyd.model", x.info.Model), attribute.String("policyd.version", x.info.Version))
		}
		if x.info.Protocol != "" {
			sp.SetAttributes(attribute.String("policyd.protocol", x.info.Protocol), attribute.Int("policyd.batch_size", x.info.Rows))
		}
		if x.info.Status >= 500 {
			sp.SetStatus(otelcodes.Error, code.String())
		}
	}
	sp.End()
}

// metadataCarrier adapts gRPC metadata to the propagators.
type metadataCarrier metadata.MD

func (c metadataCarrier) Get(key string) string {
	if v := metadata.MD(c).Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}
func (c metadataCarrier) Set(key, value string) { metadata.MD(c).Set(key, value) }
func (c metadataCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

func appendHex(b, src []byte) []byte {
	for _, c := range src {
		b = append(b, hexDigits[c>>4], hexDigits[c&0xf])
	}
	return b
}

// ---- inference ----

// ModelInfer serves one inference request on the inference path.
func (g *grpcService) ModelInfer(ctx context.Context, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
	return g.s.grpcInfer(ctx, grpcExchangeOf(ctx), ProtocolGRPC, req)
}

// grpcInfer is the transport of one gRPC inference request: the live size limit, then the
// inference path with a pooled grpcRequest as its codec.
func (s *Server) grpcInfer(ctx context.Context, x *exchange, protocol string, req *inference.ModelInferRequest) (*inference.ModelInferResponse, error) {
	x.setProtocol(protocol)
	if limit := s.maxBody.Load(); int64(proto.Size(req)) > limit {
		return nil, &statusError{http.StatusRequestEntityTooLarge,
			fmt.Sprintf("request message too large: %d bytes, the limit is %d bytes (%s)", proto.Size(req), limit, byteSize(int(limit)))}
	}
	g := s.grpcReqs.Get().(*grpcRequest)
	defer s.putGRPCRequest(g)
	g.req = req
	g.deadline, _ = ctx.Deadline()
	g.ctx = ctx
	if err := s.inference(x, protocol, req.ModelName, req.ModelVersion, g); err != nil {
		return nil, err
	}
	if md := deadlineMetadata(&g.r.dl); md != nil && protocol == ProtocolGRPC {
		_ = grpc.SetHeader(ctx, md) // the stream's messages carry the response parameter only
	}
	if rt, ok := s.reg.(trafficRouter); ok && rt.HasTraffic(req.ModelName) {
		setVersionMetadata(ctx, g.resp.ModelVersion) // traffic.go
	}
	return g.resp, nil
}

func (s *Server) putGRPCRequest(g *grpcRequest) {
	g.release()
	s.grpcReqs.Put(g)
}

// ModelStreamInfer serves Triton's bidirectional inference stream: the requests are answered
// one after the other in the order they arrive (so the requests of a sequence keep their
// order), each on the inference path with its own correlation ID, span, access line and
// metrics. A request that fails is answered on the stream with error_message (and the model,
// version and id it named in infer_response), and the stream goes on. The stream ends when
// the client closes its side, or with Unavailable once the server shuts down (after the
// request being answered).
func (g *grpcService) ModelStreamInfer(stream inference.GRPCInferenceService_ModelStreamInferServer) error {
	s := g.s
	ctx := stream.Context()
	md, _ := metadata.FromIncomingContext(ctx)
	type recv struct {
		req *inference.ModelInferRequest
		err error
	}
	next := make(chan recv, 1)
	read := func() {
		req, err := stream.Recv()
		next <- recv{req, err}
	}
	go read()
	const method = "/inference.GRPCInferenceService/ModelStreamInfer"
	for {
		var in recv
		select {
		case in = <-next:
		case <-s.stop:
			return status.Error(codes.Unavailable, "the server is shutting down")
		}
		if errors.Is(in.err, io.EOF) {
			return nil
		}
		if in.err != nil {
			return in.err
		}
		resp := s.grpcStreamOne(ctx, md, method, in.req)
		if err := stream.Send(resp); err != nil {
			return err
		}
		go read()
	}
}

// grpcStreamOne answers one request of a stream, observed like a unary call. Its correlation
// ID is the request's "id" when usable, else the stream's x-request-id or traceparent, else
// generated.
func (s *Server) grpcStreamOne(ctx context.Context, md metadata.MD, method string, req *inference.ModelInferRequest) *inference.ModelStreamInferResponse {
	x := s.grpcBegin(ctx, md, method, req.Id, true)
	out, err := s.grpcInfer(ctx, x, ProtocolGRPCStream, req)
	var st *status.Status
	httpStatus := http.StatusOK
	resp := &inference.ModelStreamInferResponse{InferResponse: out}
	if err != nil {
		var retry bool
		st, httpStatus, retry = grpcError(err)
		x.failed(errTimedOut(err), retry)
		resp.ErrorMessage = err.Error()
		resp.InferResponse = &inference.ModelInferResponse{ModelName: req.ModelName, ModelVersion: req.ModelVersion, Id: req.Id}
	}
	s.grpcFinish(x, method, st, httpStatus, req, resp)
	return resp
}

// ---- health, metadata ----

func (g *grpcService) ServerLive(context.Context, *inference.ServerLiveRequest) (*inference.ServerLiveResponse, error) {
	return &inference.ServerLiveResponse{Live: true}, nil
}

func (g *grpcService) ServerReady(context.Context, *inference.ServerReadyRequest) (*inference.ServerReadyResponse, error) {
	ok, _ := g.s.readiness()
	return &inference.ServerReadyResponse{Ready: ok}, nil
}

// ModelReady answers whether a version is ready, as GET .../ready does: false (not an error)
// while the server is starting and the model is not loaded yet or when the version is not
// ready; NotFound for an unknown model or version.
func (g *grpcService) ModelReady(ctx context.Context, req *inference.ModelReadyRequest) (*inference.ModelReadyResponse, error) {
	s := g.s
	m, err := s.reg.Acquire(req.Name, req.Version)
	if err != nil {
		if s.starting.Load() && errors.Is(err, repository.ErrNotFound) {
			return &inference.ModelReadyResponse{Ready: false}, nil
		}
		return nil, err
	}
	defer m.Release()
	grpcExchangeOf(ctx).setModel(m, "")
	ok, _ := m.Ready()
	return &inference.ModelReadyResponse{Ready: ok}, nil
}

func (g *grpcService) ServerMetadata(context.Context, *inference.ServerMetadataRequest) (*inference.ServerMetadataResponse, error) {
	return &inference.ServerMetadataResponse{Name: "policyd", Version: g.s.opts.Version, Extensions: g.s.exts}, nil
}

// ModelMetadata answers the version's signature as GET /v2/models/{m} does (KServe's fields:
// policyd's additions — digests, default version — are HTTP only, the message has no room).
func (g *grpcService) ModelMetadata(ctx context.Context, req *inference.ModelMetadataRequest) (*inference.ModelMetadataResponse, error) {
	s := g.s
	m, err := s.acquire(req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	defer m.Release()
	grpcExchangeOf(ctx).setModel(m, "")
	if ok, reason := m.Ready(); !ok {
		return nil, &repository.UnavailableError{Model: m.Name(), Version: m.Version(), Reason: reason}
	}
	resp := &inference.ModelMetadataResponse{Name: m.Name(), Platform: "onnx",
		Inputs: tensorMetadata(m.Inputs()), Outputs: tensorMetadata(m.Outputs())}
	for _, v := range s.reg.Versions(m.Name()) {
		resp.Versions = append(resp.Versions, v.Version())
	}
	return resp, nil
}

func tensorMetadata(infos []bridge.IOInfo) []*inference.ModelMetadataResponse_TensorMetadata {
	out := make([]*inference.ModelMetadataResponse_TensorMetadata, len(infos))
	for i, in := range infos {
		out[i] = &inference.ModelMetadataResponse_TensorMetadata{Name: in.Name, Datatype: in.DType.String(),
			Shape: append([]int64(nil), in.Shape...)}
	}
	return out
}

// ModelStatistics answers Triton's statistics extension as GET /v2/models[/{m}[/versions/{v}]]/stats.
func (g *grpcService) ModelStatistics(ctx context.Context, req *inference.ModelStatisticsRequest) (*inference.ModelStatisticsResponse, error) {
	ms, err := g.s.statsModels(req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	resp := &inference.ModelStatisticsResponse{ModelStats: make([]*inference.ModelStatistics, 0, len(ms))}
	for _, m := range ms {
		resp.ModelStats = append(resp.ModelStats, modelStatistics(m.Name(), m.Version(), statsOf(m).Snapshot()))
	}
	return resp, nil
}

// ---- repository ----

// authzOf is the value of a call's authorization metadata (gRPC's Authorization header).
func authzOf(ctx context.Context) []byte {
	md, _ := metadata.FromIncomingContext(ctx)
	return first(md, "authorization")
}

var errNoRepository = status.Error(codes.Unimplemented, "the model repository extension is not enabled on this server")

// RepositoryIndex lists every model version with its state and reason, as POST
// /v2/repository/index; with a token configured, it needs it (authorization: Bearer ...).
func (g *grpcService) RepositoryIndex(ctx context.Context, req *inference.RepositoryIndexRequest) (*inference.RepositoryIndexResponse, error) {
	s := g.s
	if s.opts.Admin.Repository == nil {
		return nil, errNoRepository
	}
	if err := s.checkToken(authzOf(ctx)); err != nil {
		return nil, err
	}
	resp := &inference.RepositoryIndexResponse{Models: []*inference.RepositoryIndexResponse_ModelIndex{}}
	for _, e := range s.opts.Admin.Repository.Index() {
		if req.Ready && e.State != repository.StateReady {
			continue
		}
		resp.Models = append(resp.Models, &inference.RepositoryIndexResponse_ModelIndex{
			Name: e.Model, Version: e.Version, State: e.State.String(), Reason: e.Reason})
	}
	return resp, nil
}

func (g *grpcService) RepositoryModelLoad(ctx context.Context, req *inference.RepositoryModelLoadRequest) (*inference.RepositoryModelLoadResponse, error) {
	if err := g.s.grpcRepositoryControl(ctx, true, req.ModelName, req.Parameters); err != nil {
		return nil, err
	}
	return &inference.RepositoryModelLoadResponse{}, nil
}

func (g *grpcService) RepositoryModelUnload(ctx context.Context, req *inference.RepositoryModelUnloadRequest) (*inference.RepositoryModelUnloadResponse, error) {
	if err := g.s.grpcRepositoryControl(ctx, false, req.ModelName, req.Parameters); err != nil {
		return nil, err
	}
	return &inference.RepositoryModelUnloadResponse{}, nil
}

// grpcRepositoryControl is load (load true) or unload, with the rules of the HTTP routes:
// the admin token (authorize), the parameter "version" (a string_param) naming one version,
// unload's "unload_dependents" accepted and ignored, any other parameter refused.
func (s *Server) grpcRepositoryControl(ctx context.Context, load bool, model string, params map[string]*inference.ModelRepositoryParameter) error {
	if s.opts.Admin.Repository == nil {
		return errNoRepository
	}
	what := map[bool]string{true: "repository load", false: "repository unload"}[load]
	if err := s.authorize(what, authzOf(ctx)); err != nil {
		return err
	}
	if model == "" {
		return badRequest("model_name is required")
	}
	version := ""
	for k, p := range params {
		switch k {
		case "version":
			v, ok := p.GetParameterChoice().(*inference.ModelRepositoryParameter_StringParam)
			if !ok {
				return badRequest(`parameter "version" must be a string_param like "1.2.3"`)
			}
			version = v.StringParam
		case "unload_dependents":
			if load {
				return badRequest("parameter %q applies to unload only", k)
			}
		default:
			return badRequest("parameter %q is not supported (supported: version%s)", k, map[bool]string{false: ", unload_dependents"}[load])
		}
	}
	op, do := "unload", s.opts.Admin.Repository.Unload
	if load {
		op, do = "load", s.opts.Admin.Repository.Load
	}
	if err := do(model, version); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}
