// Package tracing sets up OpenTelemetry tracing for policyd: a tracer provider that samples a
// ratio of the traces it starts (following the caller's decision for requests that arrive
// with a W3C traceparent) and exports the sampled spans in batches over OTLP/HTTP (protobuf).
//
// Tracing is off by default. Off, New returns a nil provider: the server then creates no span
// and allocates nothing for tracing on the request path (see server.Options.Tracer).
//
// The spans themselves are made where the work happens: the HTTP server span in package
// server, the queue and batch execution spans in package engines (docs/observability.md,
// Traces, lists them with their attributes).
package tracing

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// DefaultPath is the URL path of OTLP/HTTP trace export, used when Config.Endpoint has none.
const DefaultPath = "/v1/traces"

// Config configures New. The zero value is tracing off.
type Config struct {
	// Enabled switches tracing on.
	Enabled bool
	// Endpoint is the OTLP/HTTP receiver: an http or https URL; without a path (or "/"),
	// DefaultPath is used ("http://collector:4318" posts to http://collector:4318/v1/traces).
	Endpoint string
	// SamplingRatio is the share of new traces sampled, 0 to 1. A request with a traceparent
	// is sampled when its caller sampled it, whatever the ratio.
	SamplingRatio float64
	// ServiceName is the service.name resource attribute (default "policyd").
	ServiceName string
	// ServiceVersion is the service.version resource attribute ("" leaves it out).
	ServiceVersion string
	// ExportTimeout bounds one export request (default 10s).
	ExportTimeout time.Duration
	// BatchTimeout is the longest a finished span waits before it is exported (default 5s).
	BatchTimeout time.Duration
	// OnError receives the errors of the background export (an unreachable endpoint, a
	// rejected batch). It becomes OpenTelemetry's process-wide error handler, which otherwise
	// prints them with the standard log package. Nil leaves that handler as it is.
	OnError func(error)
}

// Provider is a tracer provider that exports over OTLP/HTTP. Safe for concurrent use.
type Provider struct {
	tp *sdktrace.TracerProvider
}

// New returns the tracer provider cfg describes, or nil (and no error) when tracing is off.
// It does not connect: the exporter sends the first batch when it is full or BatchTimeout
// after its first span. The caller must Shutdown a provider it got, to export what is left.
func New(cfg Config) (*Provider, error) {
	if !cfg.Enabled {
		return nil, nil
	}
	endpoint, err := EndpointURL(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	if cfg.SamplingRatio < 0 || cfg.SamplingRatio > 1 || cfg.SamplingRatio != cfg.SamplingRatio {
		return nil, fmt.Errorf("tracing: sampling ratio %v is not between 0 and 1", cfg.SamplingRatio)
	}
	if cfg.ServiceName == "" {
		cfg.ServiceName = "policyd"
	}
	if cfg.ExportTimeout <= 0 {
		cfg.ExportTimeout = 10 * time.Second
	}
	if cfg.BatchTimeout <= 0 {
		cfg.BatchTimeout = 5 * time.Second
	}
	exp, err := otlptracehttp.New(context.Background(),
		otlptracehttp.WithEndpointURL(endpoint),
		otlptracehttp.WithTimeout(cfg.ExportTimeout))
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP/HTTP exporter for %s: %w", endpoint, err)
	}
	if cfg.OnError != nil {
		otel.SetErrorHandler(otel.ErrorHandlerFunc(cfg.OnError))
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SamplingRatio))),
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(cfg.BatchTimeout)),
	)
	return &Provider{tp: tp}, nil
}

// EndpointURL checks an OTLP/HTTP endpoint and returns it with DefaultPath when it has no
// path.
func EndpointURL(endpoint string) (string, error) {
	if endpoint == "" {
		return "", errors.New("tracing: no endpoint: set the OTLP/HTTP receiver's URL, e.g. http://127.0.0.1:4318")
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return "", fmt.Errorf("tracing: endpoint %q: %w", endpoint, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("tracing: endpoint %q: the scheme must be http or https", endpoint)
	}
	if u.Host == "" {
		return "", fmt.Errorf("tracing: endpoint %q: no host", endpoint)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = DefaultPath
	}
	return u.String(), nil
}

// Shutdown exports the spans still buffered and stops the provider; spans ended after it are
// dropped. It returns when done or when ctx ends. A nil Provider does nothing.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	if err := p.tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: shutdown: %w", err)
	}
	return nil
}

// ForceFlush exports the spans ended so far; it returns when done or when ctx ends. A nil
// Provider does nothing.
func (p *Provider) ForceFlush(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.tp.ForceFlush(ctx)
}

// TracerProvider returns the provider for server.Options.Tracer: nil for a nil Provider (so
// that tracing off never becomes a non-nil interface holding nil).
func (p *Provider) TracerProvider() trace.TracerProvider {
	if p == nil {
		return nil
	}
	return p.tp
}
