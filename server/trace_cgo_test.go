//go:build cgo

package server

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/policyd/policyd/repository"
	"github.com/policyd/policyd/tracing"
	"github.com/policyd/policyd/tracing/otlptest"
)

// Concurrent traced requests to a batched model, exported to an in-process OTLP/HTTP receiver:
// each request has an HTTP server span (child of its traceparent, named by its route) with a
// queue span under it, every batch one execution span linked to each request it served, with
// the model, version, backend, device and batch size. Health checks and unsampled requests
// export nothing.
func TestTraceExportedToOTLPReceiver(t *testing.T) {
	rt, _ := nativeRuntime(t, ballModel)
	dir := t.TempDir()
	add3DBall(t, dir)
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	if _, err := repo.Apply(repository.Desired{Dir: dir, Batching: true, Default: repository.ModelSpec{Instances: 1}}); err != nil {
		t.Fatal(err)
	}
	if ok, why := mustAcquireReady(t, repo); !ok {
		t.Fatalf("3DBall not ready: %s", why)
	}

	recv := otlptest.NewReceiver()
	defer recv.Close()
	tp, err := tracing.New(tracing.Config{Enabled: true, Endpoint: recv.URL(), SamplingRatio: 1, ServiceVersion: "test"})
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, NewRegistry(repo), Options{Tracer: tp.TracerProvider()})

	const n = 12
	body := []byte(`{"inputs":[{"name":"obs_0","datatype":"FP32","shape":[2,8],"data":[0,1,2,3,4,5,6,7,0,1,2,3,4,5,6,7]}]}`)
	traceOf := func(i int) string { return fmt.Sprintf("%032x", 0xabc000+i) }
	parentOf := func(i int) string { return fmt.Sprintf("%016x", 0xdef000+i) }
	answers := make([]response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			answers[i] = ts.send(t, "POST", "/v2/models/3DBall/infer", body, "traceparent", "00-"+traceOf(i)+"-"+parentOf(i)+"-01")
		}()
	}
	wg.Wait()
	unsampled := fmt.Sprintf("%032x", 0x5eed)
	if r := ts.send(t, "POST", "/v2/models/3DBall/infer", body, "traceparent", "00-"+unsampled+"-"+parentOf(99)+"-00"); r.status != 200 {
		t.Fatalf("unsampled request: %d %s", r.status, r.body)
	}
	ts.send(t, "GET", "/v2/health/ready", nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	spans, err := recv.Spans()
	if err != nil {
		t.Fatal(err)
	}

	byTrace := map[string][]otlptest.Span{}
	var execs []otlptest.Span
	for _, s := range spans {
		if s.Name == "execute" {
			execs = append(execs, s)
			continue
		}
		byTrace[s.TraceID] = append(byTrace[s.TraceID], s)
		if s.TraceID == unsampled {
			t.Errorf("span %q of an unsampled request exported", s.Name)
		}
		if s.Name == "GET /v2/health/ready" {
			t.Errorf("health check traced")
		}
	}
	serverSpan := map[string]string{} // span ID → trace ID, of the requests' server spans
	for i := range n {
		r := answers[i]
		if r.status != 200 {
			t.Fatalf("request %d: %d %s", i, r.status, r.body)
		}
		var srv, queue otlptest.Span
		for _, s := range byTrace[traceOf(i)] {
			switch s.Name {
			case "POST /v2/models/{model}/infer":
				srv = s
			case "queue":
				queue = s
			}
		}
		if srv.SpanID == "" || queue.SpanID == "" {
			t.Fatalf("request %d: spans %+v, want its server span and queue span", i, byTrace[traceOf(i)])
		}
		serverSpan[srv.SpanID] = srv.TraceID
		if srv.Kind != tracepb.Span_SPAN_KIND_SERVER || srv.ParentID != parentOf(i) || srv.Scope != "github.com/policyd/policyd/server" {
			t.Errorf("request %d: server span %+v: want kind server, parent %s", i, srv, parentOf(i))
		}
		for k, v := range map[string]string{"http.request.method": "POST", "http.route": "/v2/models/{model}/infer",
			"http.response.status_code": "200", "policyd.model": "3DBall", "policyd.version": "1.0.0",
			"policyd.protocol": "v2", "policyd.batch_size": "2", "policyd.request_id": traceOf(i)} {
			if srv.Attrs[k] != v {
				t.Errorf("request %d: server span %s = %q, want %q", i, k, srv.Attrs[k], v)
			}
		}
		if srv.Resource["service.name"] != "policyd" || srv.Resource["service.version"] != "test" {
			t.Errorf("resource %v", srv.Resource)
		}
		if queue.ParentID != srv.SpanID || queue.Attrs["policyd.model"] != "3DBall" {
			t.Errorf("request %d: queue span %+v is not under the server span %s", i, queue, srv.SpanID)
		}
		if want := "00-" + traceOf(i) + "-" + srv.SpanID + "-01"; r.header["traceparent"] != want {
			t.Errorf("request %d: response traceparent %q, want %q", i, r.header["traceparent"], want)
		}
		if r.header[HeaderRequestID] != traceOf(i) {
			t.Errorf("request %d: X-Request-ID %q, want the trace ID", i, r.header[HeaderRequestID])
		}
	}

	linkedBy := map[string]int{}
	requests := 0
	for _, e := range execs {
		if len(e.Links) == 0 {
			t.Errorf("execute span without links: %+v", e)
		}
		parentLinked := false
		for _, l := range e.Links {
			if serverSpan[l.SpanID] != l.TraceID {
				t.Errorf("execute span links to %+v, not a request's server span", l)
			}
			linkedBy[l.SpanID]++
			parentLinked = parentLinked || (l.SpanID == e.ParentID && l.TraceID == e.TraceID)
		}
		if !parentLinked {
			t.Errorf("execute span's parent %s is not one of the requests it links", e.ParentID)
		}
		reqs, _ := strconv.Atoi(e.Attrs["policyd.batch_requests"])
		rows, _ := strconv.Atoi(e.Attrs["policyd.batch_size"])
		requests += reqs
		if reqs != len(e.Links) || rows != 2*reqs {
			t.Errorf("execute span: %d requests, %d rows, %d links; want rows = 2 × requests = 2 × links", reqs, rows, len(e.Links))
		}
		for k, v := range map[string]string{"policyd.model": "3DBall", "policyd.version": "1.0.0", "policyd.backend": "cpu", "policyd.device": "cpu"} {
			if e.Attrs[k] != v {
				t.Errorf("execute span %s = %q, want %q", k, e.Attrs[k], v)
			}
		}
	}
	for id := range serverSpan {
		if linkedBy[id] != 1 {
			t.Errorf("server span %s is linked by %d execute spans, want 1", id, linkedBy[id])
		}
	}
	if requests != n {
		t.Errorf("execute spans serve %d requests, want %d", requests, n)
	}
	t.Logf("%d requests ran in %d batches", n, len(execs))
}
