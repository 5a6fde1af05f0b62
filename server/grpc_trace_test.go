package server

import (
	"fmt"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/policyd/policyd/api/inference"
)

// TestGrpcTraceContext: a call with a W3C traceparent in its metadata gets a server span,
// child of it, named by the full method, with the model, version, protocol and batch size;
// the response header carries the span's traceparent, and the trace ID is the correlation ID
// when the call brings no x-request-id. Health checks are not traced.
func TestGrpcTraceContext(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()), sdktrace.WithSpanProcessor(rec))
	ts := startGRPC(t, newFakeRegistry(policyModel("1")), Options{Tracer: tp})
	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	ctx := metadata.AppendToOutgoingContext(grpcCtx(t), "traceparent", "00-"+traceID+"-"+parent+"-01")
	var header metadata.MD
	if _, err := ts.client.ModelInfer(ctx, obsRequest("", 1, 2, 3, 4), grpc.Header(&header)); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.client.ServerLive(grpcCtx(t), &inference.ServerLiveRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(header.Get("x-request-id")); got != "["+traceID+"]" {
		t.Errorf("x-request-id %s, want the trace ID", got)
	}
	if tpv := header.Get("traceparent"); len(tpv) != 1 || tpv[0][3:35] != traceID {
		t.Errorf("response traceparent %v", tpv)
	}
	var infer sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == "inference.GRPCInferenceService/ModelInfer" {
			infer = s
		}
	}
	if infer == nil {
		t.Fatalf("no ModelInfer span among %d", len(rec.Ended()))
	}
	if infer.SpanContext().TraceID().String() != traceID || infer.Parent().SpanID().String() != parent {
		t.Errorf("span %s parent %s, want trace %s parent %s", infer.SpanContext().TraceID(), infer.Parent().SpanID(), traceID, parent)
	}
	attrs := map[attribute.Key]string{}
	for _, a := range infer.Attributes() {
		attrs[a.Key] = a.Value.Emit()
	}
	for k, want := range map[attribute.Key]string{"rpc.system": "grpc", "policyd.model": "policy", "policyd.version": "1",
		"policyd.protocol": "grpc", "policyd.batch_size": "1", "rpc.grpc.status_code": "0", "policyd.request_id": traceID} {
		if attrs[k] != want {
			t.Errorf("span attribute %s = %q, want %q", k, attrs[k], want)
		}
	}
}
