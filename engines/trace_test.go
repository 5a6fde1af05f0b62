package engines

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

var testTraceInfo = &TraceAttributes{attrs: []attribute.KeyValue{
	attribute.String("policyd.model", "m"), attribute.String("policyd.version", "1.0.0"),
	attribute.String("policyd.backend", "cpu"), attribute.String("policyd.device", "cpu"),
}}

func newRecorder() (*tracetest.SpanRecorder, trace.Tracer) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	return rec, tp.Tracer("test")
}

// tracedDo sends in as a traced request under a new span "request i" and returns that span's
// context once the request is answered.
func tracedDo(b Runner, tr trace.Tracer, name string, in bridge.Tensor, ctx context.Context) (trace.SpanContext, error) {
	_, span := tr.Start(context.Background(), name)
	defer span.End()
	err := b.Do(ctx, []bridge.Tensor{in}, RunOptions{Trace: span, Version: testTraceInfo}, func([]bridge.Tensor) error { return nil })
	return span.SpanContext(), err
}

func attrsOf(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

func spansNamed(rec *tracetest.SpanRecorder, name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range rec.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	return out
}

// Three traced requests queued behind a running batch run as one batch: each gets a queue
// span under its own span, and the batch one execution span, a child of the first request's
// span, linked to all three, with the version's attributes and the batch size. The untraced
// request that held the worker gets no span.
func TestBatcherTracesQueueAndBatch(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 32, MaxQueueDelay: time.Millisecond})
	rec, tr := newRecorder()
	first := fx.busy(t)
	var wg sync.WaitGroup
	parents := make([]trace.SpanContext, 3)
	for i := range parents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			parents[i], err = tracedDo(fx.b, tr, "request", rowsTensor(2, float32(i), float32(i)), context.Background())
			if err != nil {
				t.Errorf("request %d: %v", i, err)
			}
		}()
		fx.waitQueued(t, i+1)
	}
	fx.open()
	wg.Wait()
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}

	queues := spansNamed(rec, "queue")
	if len(queues) != 3 {
		t.Fatalf("%d queue spans, want 3", len(queues))
	}
	isParent := map[trace.SpanID]bool{}
	for _, p := range parents {
		isParent[p.SpanID()] = true
	}
	for _, q := range queues {
		if !isParent[q.Parent().SpanID()] || q.Status().Code == codes.Error {
			t.Errorf("queue span parent %s status %v: want a request's span, no error", q.Parent().SpanID(), q.Status())
		}
		if attrsOf(q)["policyd.model"].AsString() != "m" {
			t.Errorf("queue span attributes %v", q.Attributes())
		}
	}
	execs := spansNamed(rec, "execute")
	if len(execs) != 1 {
		t.Fatalf("%d execute spans, want 1 (the untraced first run has none)", len(execs))
	}
	e := execs[0]
	if !isParent[e.Parent().SpanID()] {
		t.Errorf("execute span's parent %s is not a request's span", e.Parent().SpanID())
	}
	linked := map[trace.SpanID]bool{}
	for _, l := range e.Links() {
		linked[l.SpanContext.SpanID()] = true
	}
	for i, p := range parents {
		if !linked[p.SpanID()] {
			t.Errorf("execute span does not link to request %d", i)
		}
	}
	a := attrsOf(e)
	if a["policyd.batch_size"].AsInt64() != 6 || a["policyd.batch_requests"].AsInt64() != 3 ||
		a["policyd.version"].AsString() != "1.0.0" || a["policyd.backend"].AsString() != "cpu" || a["policyd.device"].AsString() != "cpu" {
		t.Errorf("execute span attributes %v", e.Attributes())
	}
	for _, q := range queues {
		if q.EndTime().After(e.StartTime()) {
			t.Errorf("a queue span ends (%v) after the execution starts (%v)", q.EndTime(), e.StartTime())
		}
	}
}

// A request whose context ends while it is queued ends its queue span with an error, and gets
// no execution span.
func TestBatcherQueueSpanOfCancelledRequest(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{})
	rec, tr := newRecorder()
	first := fx.busy(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := tracedDo(fx.b, tr, "request", rowsTensor(2, 1), ctx)
		done <- err
	}()
	fx.waitQueued(t, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Do = %v, want context.Canceled", err)
	}
	fx.open()
	<-first
	qs := spansNamed(rec, "queue")
	if len(qs) != 1 || qs[0].Status().Code != codes.Error {
		t.Fatalf("queue spans %v, want one with an error status", qs)
	}
	if n := len(spansNamed(rec, "execute")); n != 0 {
		t.Errorf("%d execute spans for a request that never ran", n)
	}
}

// On a Pool (a version that is not batched) a traced request gets its queue span and an
// execution span of its own; a failed run marks the execution span as an error.
func TestPoolTracesQueueAndRun(t *testing.T) {
	rec, tr := newRecorder()
	f := &fakeFactory{}
	p, err := newPool(f.newCtx, 1, PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	parent, err := tracedDo(p, tr, "request", enginestest.F32Tensor(1, 2), context.Background())
	if err != nil {
		t.Fatal(err)
	}
	qs, es := spansNamed(rec, "queue"), spansNamed(rec, "execute")
	if len(qs) != 1 || len(es) != 1 {
		t.Fatalf("%d queue and %d execute spans, want 1 and 1", len(qs), len(es))
	}
	if qs[0].Parent().SpanID() != parent.SpanID() || es[0].Parent().SpanID() != parent.SpanID() {
		t.Errorf("spans are not children of the request's span")
	}
	if l := es[0].Links(); len(l) != 1 || l[0].SpanContext.SpanID() != parent.SpanID() {
		t.Errorf("execute span links %v, want the request's span", l)
	}
	if es[0].Status().Code == codes.Error {
		t.Errorf("execute span of a good run has status %v", es[0].Status())
	}

	bad := &fakeFactory{enginestest.Factory{RunErr: errors.New("engine exploded")}}
	p2, err := newPool(bad.newCtx, 1, PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p2.Close()
	if _, err := tracedDo(p2, tr, "request", enginestest.F32Tensor(1), context.Background()); err == nil {
		t.Fatal("a failing run succeeded")
	}
	es = spansNamed(rec, "execute")
	if len(es) != 2 || es[1].Status().Code != codes.Error || es[1].Status().Description != "engine exploded" {
		t.Errorf("execute span of a failed run: %v", es[len(es)-1].Status())
	}
}

// Untraced requests allocate nothing for tracing: Pool.Do allocates nothing in steady state.
func TestUntracedPoolDoDoesNotAllocate(t *testing.T) {
	f := &fakeFactory{}
	p, err := newPool(f.newCtx, 1, PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	in := []bridge.Tensor{enginestest.F32Tensor(1, 2)}
	fn := func([]bridge.Tensor) error { return nil }
	for range 10 {
		_ = p.Do(context.Background(), in, RunOptions{}, fn)
	}
	if n := testing.AllocsPerRun(200, func() { _ = p.Do(context.Background(), in, RunOptions{}, fn) }); n != 0 {
		t.Errorf("untraced Pool.Do: %v allocations per run, want 0", n)
	}
}

// BenchmarkPoolDoTraced is BenchmarkPoolDo with every request traced and sampled (spans
// recorded, not exported): the cost of the queue and execution spans.
func BenchmarkPoolDoTraced(b *testing.B) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	defer tp.Shutdown(context.Background())
	_, span := tp.Tracer("bench").Start(context.Background(), "request")
	defer span.End()
	f := &fakeFactory{}
	p, err := newPool(f.newCtx, 1, PoolOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	in := []bridge.Tensor{enginestest.F32Tensor(1, 2, 3, 4)}
	fn := func([]bridge.Tensor) error { return nil }
	opts := RunOptions{Trace: span, Version: testTraceInfo}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Do(context.Background(), in, opts, fn); err != nil {
			b.Fatal(err)
		}
	}
}
