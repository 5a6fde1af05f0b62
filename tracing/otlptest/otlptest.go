// Package otlptest is an in-process OTLP/HTTP trace receiver for tests: an httptest server
// that decodes the protobuf export requests (ExportTraceServiceRequest) and keeps the spans.
package otlptest

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened with its resource's attributes.
type Span struct {
	TraceID, SpanID, ParentID string // lowercase hex; ParentID "" for a root span
	Name                      string
	Kind                      tracepb.Span_SpanKind
	Scope                     string            // instrumentation scope name
	Attrs                     map[string]string // attribute values written with fmt's %v
	Resource                  map[string]string
	Links                     []Link
	Status                    tracepb.Status_StatusCode
	Start, End                time.Time
}

// Link is a span link.
type Link struct{ TraceID, SpanID string }

// Receiver collects the spans posted to URL()+"/v1/traces". Safe for concurrent use.
type Receiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []Span
	errs  []error
}

// NewReceiver starts a receiver; Close stops it.
func NewReceiver() *Receiver {
	r := &Receiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.handle))
	return r
}

// URL is the receiver's base URL (http://127.0.0.1:PORT), an OTLP/HTTP endpoint.
func (r *Receiver) URL() string { return r.srv.URL }

// Close stops the receiver.
func (r *Receiver) Close() { r.srv.Close() }

// Spans returns the spans received so far, and the first error met decoding a request.
func (r *Receiver) Spans() ([]Span, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var err error
	if len(r.errs) > 0 {
		err = r.errs[0]
	}
	return append([]Span(nil), r.spans...), err
}

func (r *Receiver) fail(w http.ResponseWriter, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, err)
	r.mu.Unlock()
	http.Error(w, err.Error(), http.StatusBadRequest)
}

func (r *Receiver) handle(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost || req.URL.Path != "/v1/traces" {
		r.fail(w, fmt.Errorf("otlptest: %s %s: want POST /v1/traces", req.Method, req.URL.Path))
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		r.fail(w, fmt.Errorf("otlptest: Content-Type %q, want application/x-protobuf", ct))
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			r.fail(w, fmt.Errorf("otlptest: gzip: %w", err))
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		r.fail(w, fmt.Errorf("otlptest: read: %w", err))
		return
	}
	var msg coltrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		r.fail(w, fmt.Errorf("otlptest: decode ExportTraceServiceRequest: %w", err))
		return
	}
	var got []Span
	for _, rs := range msg.GetResourceSpans() {
		res := attrs(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				sp := Span{
					TraceID: hex.EncodeToString(s.GetTraceId()), SpanID: hex.EncodeToString(s.GetSpanId()),
					ParentID: hex.EncodeToString(s.GetParentSpanId()), Name: s.GetName(), Kind: s.GetKind(),
					Scope: ss.GetScope().GetName(), Attrs: attrs(s.GetAttributes()), Resource: res,
					Status: s.GetStatus().GetCode(),
					Start:  time.Unix(0, int64(s.GetStartTimeUnixNano())), End: time.Unix(0, int64(s.GetEndTimeUnixNano())),
				}
				for _, l := range s.GetLinks() {
					sp.Links = append(sp.Links, Link{TraceID: hex.EncodeToString(l.GetTraceId()), SpanID: hex.EncodeToString(l.GetSpanId())})
				}
				got = append(got, sp)
			}
		}
	}
	r.mu.Lock()
	r.spans = append(r.spans, got...)
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func attrs(kvs []*commonpb.KeyValue) map[string]string {
	m := make(map[string]string, len(kvs))
	for _, kv := range kvs {
		v := kv.GetValue()
		switch x := v.GetValue().(type) {
		case *commonpb.AnyValue_StringValue:
			m[kv.GetKey()] = x.StringValue
		case *commonpb.AnyValue_IntValue:
			m[kv.GetKey()] = fmt.Sprint(x.IntValue)
		case *commonpb.AnyValue_BoolValue:
			m[kv.GetKey()] = fmt.Sprint(x.BoolValue)
		case *commonpb.AnyValue_DoubleValue:
			m[kv.GetKey()] = fmt.Sprint(x.DoubleValue)
		default:
			m[kv.GetKey()] = v.String()
		}
	}
	return m
}
