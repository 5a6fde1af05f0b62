package server

import (
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
)

// The per-request wrapper: every route is registered through observe, which gives the
// request its correlation ID (X-Request-ID), its HTTP server span when tracing is on, and at
// the end writes the access log line and calls Options.OnRequest. docs/observability.md, Logs
// and Traces, is the user's view of it.

// HeaderRequestID is the header that carries a request's correlation ID, in and out.
const HeaderRequestID = "X-Request-ID"

// MaxRequestIDLen is the longest X-Request-ID taken from a request; a longer one, or one with
// a byte outside printable ASCII (0x21 to 0x7e), is replaced by a generated ID.
const MaxRequestIDLen = 128

// The protocols of RequestInfo.
const (
	ProtocolV2       = "v2"        // KServe v2 inference, JSON
	ProtocolV2Binary = "v2-binary" // KServe v2 inference with Triton's binary tensor data extension
	ProtocolPredict  = "predict"   // TensorFlow Serving's predict
)

// RequestInfo describes one answered inference request (KServe v2 infer, JSON or binary, and
// TensorFlow Serving's predict) for Options.OnRequest. The value passed to OnRequest is
// pooled: it and its strings are valid only during the call.
type RequestInfo struct {
	// Model and Version name the version that served the request; both are "" when the
	// request named no model or version that could be acquired (404, and 413 before lookup).
	Model, Version string
	// Protocol is ProtocolV2, ProtocolV2Binary or ProtocolPredict.
	Protocol string
	// Status is the HTTP status of the answer.
	Status int
	// Latency is from the request read to its response ready to be written.
	Latency time.Duration
	// Rows is the request's batch size: the dimension 0 of its inputs for a batchable model
	// (the instances of a predict request), else 1; 0 when the request was not decoded.
	Rows int
	// BytesIn and BytesOut are the request and response body sizes as sent (compressed, when
	// they were).
	BytesIn, BytesOut int
	// CorrelationID is the request's X-Request-ID (taken from the request or generated).
	CorrelationID string
	// TimedOut says the request waited in its model's queue past its timeout (503).
	TimedOut bool
	// RetryAfter says the answer asked the client to retry later (Retry-After: an overloaded
	// queue or a queue timeout, 503), as metrics.OutcomeOf wants to know.
	RetryAfter bool
	// Fallback, for a request with a deadline that the model did not answer in time, is how
	// it was answered: last_action, constant, version, or none (a 504, or a late answer);
	// FallbackReason why: passed, infeasible (not run) or late (run, answered after the
	// deadline). Both "" otherwise (docs/api.md, Deadlines).
	Fallback, FallbackReason string
}

// exchange is the observed state of one request, pooled. Handlers reach it with exchangeOf.
type exchange struct {
	info    RequestInfo
	start   time.Time
	route   string     // the route's pattern, the span name's second word
	bytesIn int        // the request body's size as it came (compressed or not)
	id      []byte     // the correlation ID, in idBuf
	span    trace.Span // the HTTP server span; nil when not traced
	idBuf   [MaxRequestIDLen]byte
	log     [14]zap.Field // the access line's fields (no slice allocated per line)
}

// exchangeKey is the user value under which a request's *exchange is stored.
const exchangeKey = "policyd.exchange"

var exchanges = sync.Pool{New: func() any { return new(exchange) }}

// exchangeOf returns the request's exchange, nil for a request no observe wrapper saw (a
// transport error, a handler called directly).
func exchangeOf(ctx *fasthttp.RequestCtx) *exchange {
	x, _ := ctx.UserValue(exchangeKey).(*exchange)
	return x
}

// observe wraps a route's handler. route is the pattern it was registered with; traced says
// whether it gets a server span when tracing is on (not health checks and /metrics, which
// would drown the traces).
func (s *Server) observe(route string, traced bool, h fasthttp.RequestHandler) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		x := exchanges.Get().(*exchange)
		x.start = ctx.Time() // when the server read the request (no clock read of our own)
		if x.start.IsZero() {
			x.start = time.Now() // a handler called outside a Server
		}
		x.route = route
		ctx.SetUserValue(exchangeKey, x)
		traceparent := ctx.Request.Header.Peek("traceparent")
		x.takeID(ctx.Request.Header.Peek(HeaderRequestID), traceparent)
		if traced && s.tracer != nil {
			s.startSpan(ctx, x)
		}
		if len(x.id) == 0 {
			x.generateID()
		}
		ctx.Response.Header.SetCanonical(headerRequestID, x.id)
		x.bytesIn = len(ctx.Request.Body())                     // as it came: compressed or not
		if inflated, err := s.inflateRequest(ctx); err != nil { // compress.go
			s.fail(ctx, err)
		} else {
			h(ctx)
			if inflated != nil { // the handler is done with the body
				ctx.Request.ResetBody()
				releaseInflated(inflated)
			}
		}
		s.compressResponse(ctx)
		s.finish(ctx, x)
		ctx.RemoveUserValue(exchangeKey)
		x.info, x.route, x.id, x.span = RequestInfo{}, "", nil, nil // x.log is cleared after each use
		exchanges.Put(x)
	}
}

var headerRequestID = []byte(HeaderRequestID)

// takeID takes the correlation ID from the request: X-Request-ID when it is usable, else the
// trace ID of a valid traceparent; none (x.id empty) otherwise.
func (x *exchange) takeID(given, traceparent []byte) {
	x.id = x.idBuf[:0]
	if usableID(given) {
		x.id = append(x.id, given...)
		return
	}
	if id, ok := traceparentTraceID(traceparent); ok {
		x.id = append(x.id, id...)
	}
}

func usableID(id []byte) bool {
	if len(id) == 0 || len(id) > MaxRequestIDLen {
		return false
	}
	for _, c := range id {
		if c < 0x21 || c > 0x7e {
			return false
		}
	}
	return true
}

// traceparentTraceID returns the trace ID of a W3C traceparent header
// ("00-<32 hex trace ID>-<16 hex parent ID>-<2 hex flags>"), checked as the W3C Trace Context
// says: lowercase hex, neither ID all zeros, version not ff, version 00 exactly 55 bytes.
func traceparentTraceID(tp []byte) ([]byte, bool) {
	if len(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return nil, false
	}
	if (tp[0] == 'f' && tp[1] == 'f') || (tp[0] == '0' && tp[1] == '0' && len(tp) != 55) || (len(tp) > 55 && tp[55] != '-') {
		return nil, false
	}
	if !lowerHex(tp[0:2]) || !lowerHex(tp[3:35]) || !lowerHex(tp[36:52]) || !lowerHex(tp[53:55]) ||
		allZero(tp[3:35]) || allZero(tp[36:52]) {
		return nil, false
	}
	return tp[3:35], true
}

func lowerHex(b []byte) bool {
	for _, c := range b {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != '0' {
			return false
		}
	}
	return true
}

// generateID makes a correlation ID of 32 lowercase hex digits (128 random bits) from the
// runtime's per-thread ChaCha8 source: no system call, no lock, no allocation.
func (x *exchange) generateID() {
	var b [16]byte
	a, c := rand.Uint64(), rand.Uint64()
	for i := range 8 {
		b[i], b[8+i] = byte(a>>(8*i)), byte(c>>(8*i))
	}
	x.id = hex.AppendEncode(x.idBuf[:0], b[:])
}

// requestID returns the request's correlation ID; for a request no observe wrapper saw (a
// transport error) it makes one, once, and sets the response header.
func requestID(ctx *fasthttp.RequestCtx) []byte {
	if x := exchangeOf(ctx); x != nil {
		return x.id
	}
	if id := ctx.Response.Header.Peek(HeaderRequestID); len(id) > 0 {
		return id
	}
	var x exchange
	x.takeID(ctx.Request.Header.Peek(HeaderRequestID), nil)
	if len(x.id) == 0 {
		x.generateID()
	}
	id := append([]byte(nil), x.id...)
	ctx.Response.Header.SetCanonical(headerRequestID, id)
	return id
}

// setModel records the version serving the request and, for an inference route, its
// protocol ("" leaves it as it is).
func (x *exchange) setModel(m Model, protocol string) {
	if x == nil {
		return
	}
	x.info.Model, x.info.Version = m.Name(), m.Version()
	if protocol != "" {
		x.info.Protocol = protocol
	}
}

// setFallback records how a request with a deadline was answered (RequestInfo.Fallback).
func (x *exchange) setFallback(kind, reason string) {
	if x != nil {
		x.info.Fallback, x.info.FallbackReason = kind, reason
	}
}

// arrival is when the server read the request: the start of the exchange, else now.
func (x *exchange) arrival() time.Time {
	if x == nil || x.start.IsZero() {
		return time.Now()
	}
	return x.start
}

// setRows records the request's batch size.
func (x *exchange) setRows(rows int) {
	if x != nil {
		x.info.Rows = rows
	}
}

// setProtocol records the protocol of an inference route before its model is known.
func (x *exchange) setProtocol(protocol string) {
	if x != nil {
		x.info.Protocol = protocol
	}
}

// runSpan is the span the engines record their queue and execution spans under: the server
// span when it is being recorded, else nil (the engines then trace nothing).
func (x *exchange) runSpan() trace.Span {
	if x == nil || x.span == nil || !x.span.IsRecording() {
		return nil
	}
	return x.span
}

// failed records what an error answer says beyond its status: a queue timeout, a
// Retry-After.
func (x *exchange) failed(timedOut, retryAfter bool) {
	if x != nil {
		x.info.TimedOut, x.info.RetryAfter = timedOut, retryAfter
	}
}

// finish closes the request: status and sizes into its info, its span ended, the access line
// written, OnRequest called for an inference route.
func (s *Server) finish(ctx *fasthttp.RequestCtx, x *exchange) {
	if !s.opts.AccessLog && s.opts.OnRequest == nil && x.span == nil {
		return // nobody looks: not even a clock read
	}
	x.info.Status = ctx.Response.StatusCode()
	x.info.Latency = time.Since(x.start)
	x.info.BytesIn = x.bytesIn
	x.info.BytesOut = len(ctx.Response.Body())
	if x.span != nil {
		s.endSpan(ctx, x)
	}
	if s.opts.AccessLog {
		s.accessLog(ctx, x)
	}
	if s.opts.OnRequest != nil && x.info.Protocol != "" {
		x.info.CorrelationID = unsafe.String(unsafe.SliceData(x.id), len(x.id))
		s.opts.OnRequest(&x.info)
	}
}

// accessLog writes the request's access line at info level.
func (s *Server) accessLog(ctx *fasthttp.RequestCtx, x *exchange) {
	ce := s.log.Check(zap.InfoLevel, "request")
	if ce == nil {
		return
	}
	f := append(x.log[:0],
		zap.String("method", methodString(ctx.Method())),
		zap.String("path", string(ctx.Path())),
		zap.Int("status", x.info.Status))
	ce.Write(x.accessFields(f)...)
	clear(x.log[:])
}

// accessFields appends the fields every access line has after method, path and status (and
// gRPC's grpc_code): latency, sizes, request id, model and version, protocol and batch size,
// a queue timeout, the trace id of a sampled span.
func (x *exchange) accessFields(f []zap.Field) []zap.Field {
	f = append(f,
		zap.Duration("latency", x.info.Latency),
		zap.Int("bytes_in", x.info.BytesIn),
		zap.Int("bytes_out", x.info.BytesOut),
		zap.String("request_id", string(x.id)))
	if x.info.Model != "" {
		f = append(f, zap.String("model", x.info.Model), zap.String("version", x.info.Version))
	}
	if x.info.Protocol != "" {
		f = append(f, zap.String("protocol", x.info.Protocol), zap.Int("batch_size", x.info.Rows))
	}
	if x.info.TimedOut {
		f = append(f, zap.Bool("timed_out", true))
	}
	if x.span != nil && x.span.SpanContext().IsSampled() {
		f = append(f, zap.Stringer("trace_id", x.span.SpanContext().TraceID()))
	}
	return f
}

// methodString returns the method as a constant string for the usual methods (no copy).
func methodString(m []byte) string {
	switch string(m) {
	case fasthttp.MethodGet:
		return fasthttp.MethodGet
	case fasthttp.MethodPost:
		return fasthttp.MethodPost
	case fasthttp.MethodHead:
		return fasthttp.MethodHead
	case fasthttp.MethodPut:
		return fasthttp.MethodPut
	case fasthttp.MethodDelete:
		return fasthttp.MethodDelete
	}
	return string(m)
}

// requestFields are the fields every log line about a request carries beyond its message.
func requestFields(ctx *fasthttp.RequestCtx) (method, path, id zap.Field) {
	return zap.String("method", methodString(ctx.Method())), zap.String("path", string(ctx.Path())),
		zap.String("request_id", string(requestID(ctx)))
}

// spanName is a server span's name: the method and the route's pattern, or the method alone
// for a request that matched no route.
func spanName(method, route string) string {
	if route == "" {
		return method
	}
	return method + " " + route
}

// headerCarrier adapts fasthttp headers to the propagators.
type requestCarrier struct{ h *fasthttp.RequestHeader }

func (c requestCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c requestCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c requestCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}

type responseCarrier struct{ h *fasthttp.ResponseHeader }

func (c responseCarrier) Get(key string) string { return string(c.h.Peek(key)) }
func (c responseCarrier) Set(key, value string) { c.h.Set(key, value) }
func (c responseCarrier) Keys() []string {
	var keys []string
	for k := range c.h.All() {
		keys = append(keys, string(k))
	}
	return keys
}

// traceContext is the W3C Trace Context propagator (traceparent, tracestate).
var traceContext = propagation.TraceContext{}

// startSpan starts the request's HTTP server span, a child of the request's traceparent when
// it has a valid one, and takes its trace ID as the correlation ID when the request brought
// none. The response carries the span's traceparent.
func (s *Server) startSpan(ctx *fasthttp.RequestCtx, x *exchange) {
	parent := traceContext.Extract(context.Background(), requestCarrier{&ctx.Request.Header})
	method := methodString(ctx.Method())
	attrs := []attribute.KeyValue{
		attribute.String("http.request.method", method),
		attribute.String("url.path", string(ctx.Path())),
	}
	if x.route != "" {
		attrs = append(attrs, attribute.String("http.route", x.route))
	}
	sctx, span := s.tracer.Start(parent, spanName(method, x.route),
		trace.WithSpanKind(trace.SpanKindServer), trace.WithTimestamp(x.start), trace.WithAttributes(attrs...))
	x.span = span
	if len(x.id) == 0 && span.SpanContext().HasTraceID() {
		id := span.SpanContext().TraceID()
		x.id = hex.AppendEncode(x.idBuf[:0], id[:])
	}
	if span.SpanContext().IsValid() {
		traceContext.Inject(sctx, responseCarrier{&ctx.Response.Header})
	}
}

// endSpan ends the server span with the answer's attributes; 5xx answers are errors.
func (s *Server) endSpan(ctx *fasthttp.RequestCtx, x *exchange) {
	sp := x.span
	if sp.IsRecording() {
		sp.SetAttributes(
			attribute.Int("http.response.status_code", x.info.Status),
			attribute.Int("http.request.body.size", x.info.BytesIn),
			attribute.Int("http.response.body.size", x.info.BytesOut),
			attribute.String("policyd.request_id", string(x.id)),
		)
		if x.info.Model != "" {
			sp.SetAttributes(attribute.String("policyd.model", x.info.Model), attribute.String("policyd.version", x.info.Version))
		}
		if x.info.Protocol != "" {
			sp.SetAttributes(attribute.String("policyd.protocol", x.info.Protocol), attribute.Int("policyd.batch_size", x.info.Rows))
		}
		if x.info.Status >= 500 {
			sp.SetStatus(codes.Error, strconv.Itoa(x.info.Status))
		}
	}
	sp.End()
}

// errTimedOut reports whether err is a queue timeout.
func errTimedOut(err error) bool {
	var te *timeoutError
	return errors.As(err, &te)
}
