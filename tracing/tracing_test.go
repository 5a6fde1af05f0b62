package tracing_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/policyd/policyd/tracing"
	"github.com/policyd/policyd/tracing/otlptest"
)

func TestOffIsNil(t *testing.T) {
	p, err := tracing.New(tracing.Config{Endpoint: "not even a URL"})
	if p != nil || err != nil {
		t.Fatalf("New(off) = %v, %v; want nil, nil", p, err)
	}
	if tp := p.TracerProvider(); tp != nil {
		t.Errorf("TracerProvider of nil = %v, want a nil interface", tp)
	}
	if err := p.Shutdown(context.Background()); err != nil {
		t.Errorf("Shutdown of nil: %v", err)
	}
}

func TestBadConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  tracing.Config
		want string
	}{
		{tracing.Config{Enabled: true}, "no endpoint"},
		{tracing.Config{Enabled: true, Endpoint: "collector:4318"}, "the scheme must be http or https"},
		{tracing.Config{Enabled: true, Endpoint: "grpc://collector:4317"}, "the scheme must be http or https"},
		{tracing.Config{Enabled: true, Endpoint: "http:///v1/traces"}, "no host"},
		{tracing.Config{Enabled: true, Endpoint: "http://c:4318", SamplingRatio: 1.5}, "sampling ratio 1.5 is not between 0 and 1"},
	} {
		p, err := tracing.New(c.cfg)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, %v; want an error containing %q", c.cfg, p, err, c.want)
		}
	}
}

func TestEndpointURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://collector:4318":           "http://collector:4318/v1/traces",
		"http://collector:4318/":          "http://collector:4318/v1/traces",
		"https://tempo.example/otlp/v1/t": "https://tempo.example/otlp/v1/t",
	} {
		if got, err := tracing.EndpointURL(in); err != nil || got != want {
			t.Errorf("EndpointURL(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// Spans reach an OTLP/HTTP receiver with their parent links and the service resource; with
// ratio 0 a new trace is dropped, but a child of a sampled remote parent is kept (parent-based).
func TestExportToOTLPReceiver(t *testing.T) {
	recv := otlptest.NewReceiver()
	defer recv.Close()
	p, err := tracing.New(tracing.Config{Enabled: true, Endpoint: recv.URL(), SamplingRatio: 0,
		ServiceName: "policyd-test", ServiceVersion: "1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	tr := p.TracerProvider().Tracer("test")

	_, dropped := tr.Start(context.Background(), "new trace")
	dropped.End()

	remote := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled, Remote: true})
	ctx, parent := tr.Start(trace.ContextWithRemoteSpanContext(context.Background(), remote), "parent",
		trace.WithSpanKind(trace.SpanKindServer))
	_, child := tr.Start(ctx, "child")
	child.End()
	parent.End()
	if err := p.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}

	spans, err := recv.Spans()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]otlptest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
	}
	if len(spans) != 2 || byName["parent"].Name == "" || byName["child"].Name == "" {
		t.Fatalf("received %+v, want the spans parent and child only", spans)
	}
	ps, cs := byName["parent"], byName["child"]
	if ps.TraceID != remote.TraceID().String() || ps.ParentID != remote.SpanID().String() || ps.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("parent span %+v: want trace %s, parent %s, kind server", ps, remote.TraceID(), remote.SpanID())
	}
	if cs.TraceID != ps.TraceID || cs.ParentID != ps.SpanID {
		t.Errorf("child span %+v is not a child of %s", cs, ps.SpanID)
	}
	if r := ps.Resource; r["service.name"] != "policyd-test" || r["service.version"] != "1.2.3" {
		t.Errorf("resource = %v", r)
	}
}

// Export errors go to OnError, not to the standard logger.
func TestExportErrorsGoToOnError(t *testing.T) {
	recv := otlptest.NewReceiver()
	url := recv.URL()
	recv.Close() // nothing listens there any more
	errs := make(chan error, 16)
	p, err := tracing.New(tracing.Config{Enabled: true, Endpoint: url, SamplingRatio: 1,
		ExportTimeout: time.Second, OnError: func(err error) { errs <- err }})
	if err != nil {
		t.Fatal(err)
	}
	_, s := p.TracerProvider().Tracer("test").Start(context.Background(), "lost")
	s.End()
	_ = p.Shutdown(context.Background()) // exports the span, which fails
	select {
	case err := <-errs:
		if !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("OnError got %v, want a connection error", err)
		}
	default:
		t.Fatal("an export to a closed endpoint did not reach OnError")
	}
}
