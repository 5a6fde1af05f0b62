package engines

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// Tracing. A request whose RunOptions.Trace is set (a span being recorded, the HTTP server
// span of package server) gets two spans from the runner, made with that span's tracer
// provider:
//
//   - "queue", a child of the request's span: from Do queuing the request to a batch former
//     (or, for a version that is not batched, a pool worker) taking it. It ends with an error
//     status when the request leaves the queue without running (its context ended, the runner
//     closed).
//   - "execute": one per engine run, i.e. per batch. Its parent is the span of the batch's
//     first traced request and it links to the span of every traced request of the batch; it
//     covers the run and the output callbacks of every request of the batch.
//
// Attributes (both spans): policyd.model, policyd.version, policyd.backend, policyd.device;
// "execute" also policyd.batch_size (rows) and policyd.batch_requests. A request without a
// Trace costs a nil check: no span, no context, no allocation.

// tracerName is the instrumentation scope of the runner's spans.
const tracerName = "github.com/policyd/policyd/engines"

// TraceAttributes are what the spans of a version's requests say about the version
// (RunOptions.Version): model, version, backend and device. Immutable; safe for concurrent use.
type TraceAttributes struct {
	attrs []attribute.KeyValue
}

// NewTraceAttributes returns the span attributes of the version model@version running on
// backend and device.
func NewTraceAttributes(model, version, backend, device string) *TraceAttributes {
	return &TraceAttributes{attrs: []attribute.KeyValue{
		attribute.String("policyd.model", model),
		attribute.String("policyd.version", version),
		attribute.String("policyd.backend", backend),
		attribute.String("policyd.device", device),
	}}
}

func (ti *TraceAttributes) attributes() []attribute.KeyValue {
	if ti == nil {
		return nil
	}
	return ti.attrs
}

// queueSpan starts the queue span of a traced request; nil when it is not traced.
func queueSpan(opts *RunOptions) trace.Span {
	if opts.Trace == nil {
		return nil
	}
	ctx := trace.ContextWithSpan(context.Background(), opts.Trace)
	_, s := opts.Trace.TracerProvider().Tracer(tracerName).Start(ctx, "queue",
		trace.WithAttributes(opts.Version.attributes()...))
	return s
}

// endQueue ends a queue span (nil: nothing); err says why the request left the queue without
// running (nil: it was taken to run).
func endQueue(s trace.Span, err error) {
	if s == nil {
		return
	}
	if err != nil {
		s.SetStatus(codes.Error, err.Error())
	}
	s.End()
}

// tracedRun is one request of a run, as the execution span sees it.
type tracedRun struct {
	span trace.Span // the request's span; nil when not traced
	info *TraceAttributes
	rows int
}

// execSpan starts the execution span of a run serving reqs; nil when none of them is traced.
func execSpan(reqs []tracedRun) trace.Span {
	var first *tracedRun
	n, rows := 0, 0
	for i := range reqs {
		rows += max(reqs[i].rows, 1)
		if reqs[i].span != nil {
			if first == nil {
				first = &reqs[i]
			}
			n++
		}
	}
	if first == nil {
		return nil
	}
	links := make([]trace.Link, 0, n)
	for i := range reqs {
		if reqs[i].span != nil {
			links = append(links, trace.Link{SpanContext: reqs[i].span.SpanContext()})
		}
	}
	attrs := append(first.info.attributes()[:len(first.info.attributes()):len(first.info.attributes())],
		attribute.Int("policyd.batch_size", rows), attribute.Int("policyd.batch_requests", len(reqs)))
	ctx := trace.ContextWithSpan(context.Background(), first.span)
	_, s := first.span.TracerProvider().Tracer(tracerName).Start(ctx, "execute",
		trace.WithLinks(links...), trace.WithAttributes(attrs...))
	return s
}

// endExec ends an execution span (nil: nothing) with the run's error.
func endExec(s trace.Span, err error) {
	if s == nil {
		return
	}
	if err != nil {
		s.RecordError(err)
		s.SetStatus(codes.Error, err.Error())
	}
	s.End()
}

// traceQueued records the request's trace in j and starts its queue span (Pool.Do).
func (j *job) traceQueued(opts *RunOptions) {
	j.span, j.info = opts.Trace, opts.Version
	j.queue = queueSpan(opts)
}

// startExec ends the queue span of a job a worker took and starts its execution span; nil
// when the job is not traced (a batch, whose former traces it, or an untraced request).
func (p *Pool) startExec(j *job, one *[1]tracedRun) trace.Span {
	if j.span == nil {
		return nil
	}
	endQueue(j.queue, nil)
	j.queue = nil
	rows := 1
	if p.stats != nil {
		rows = p.stats.rowsOf(j.inputs)
	}
	one[0] = tracedRun{span: j.span, info: j.info, rows: rows}
	s := execSpan(one[:])
	one[0] = tracedRun{}
	return s
}

// traceQueued records the request's trace in r and starts its queue span (Batcher.Do).
func (r *request) traceQueued(opts *RunOptions) {
	r.span, r.info = opts.Trace, opts.Version
	r.queue = queueSpan(opts)
}

// startExec starts the execution span of a request run alone by its caller (Batcher.runHere);
// nil when it is not traced.
func (r *request) startExec() trace.Span {
	if r.span == nil {
		return nil
	}
	one := [1]tracedRun{{span: r.span, info: r.info, rows: r.rows}}
	return execSpan(one[:])
}

// startExec starts the execution span of the batch; nil when none of its requests is traced.
func (f *former) startExec() trace.Span {
	traced := false
	for _, r := range f.batch {
		traced = traced || r.span != nil
	}
	if !traced {
		return nil
	}
	f.traced = f.traced[:0]
	for _, r := range f.batch {
		f.traced = append(f.traced, tracedRun{span: r.span, info: r.info, rows: r.rows})
	}
	s := execSpan(f.traced)
	clear(f.traced)
	return s
}
