package engines

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/policyd/policyd/bridge"
)

// ErrOverloaded is returned by Pool.Do when the pool's queue is full. The caller should retry
// later (the HTTP layer answers 503 with Retry-After).
var ErrOverloaded = errors.New("engines: queue full")

// ErrClosed is returned by Pool.Do when the pool is closed or draining, including for jobs that
// were still queued when Close was called (and by package repository once it is closed).
var ErrClosed = errors.New("engines: pool closed")

// Runner runs a model on some execution context. Pool and Batcher (a dynamic batcher in front of
// a Pool) implement it, so that the layers above do not change when batching is switched on.
type Runner interface {
	// Do runs the model once with inputs (in the engine's input order) and calls fn with the
	// outputs (in the engine's output order) while they are valid. See Pool.Do.
	Do(ctx context.Context, inputs []bridge.Tensor, opts RunOptions, fn func(outputs []bridge.Tensor) error) error
	// Close stops the runner; Do then returns ErrClosed, also for jobs still queued.
	Close() error
	// Drain stops the runner gracefully: Do then returns ErrClosed, but jobs already queued
	// still run before the runner stops.
	Drain() error
}

// RunOptions are the per-request options of Runner.Do; the zero value is the defaults.
type RunOptions struct {
	// Priority is the request's priority level: 1 is the highest, the runner's priority
	// levels the lowest, 0 the runner's default level. A level out of range fails Do with a
	// *PriorityError.
	Priority int
	// Seed, when Seeded, makes the request's samples of random operators (Multinomial,
	// RandomNormalLike, ...) depend only on Seed and its own inputs, also when it is batched
	// with others: row j of the request draws from the stream of row seed RowSeed(Seed, j)
	// (see bridge.Context.SetRowSeeds). A request that runs alone on a Pool (a version that is
	// not batched) draws its whole output from RowSeed(Seed, 0), which for a one-row request
	// is what it draws as a row of a batch. Unseeded requests draw from the context's stream,
	// or, when batched with a seeded one, from a fresh random row seed.
	Seed   uint64
	Seeded bool
	// Trace is the request's span when it is traced (package server's HTTP server span, being
	// recorded), else nil: the runner then records a queue span under it and an execution span
	// linked to it, with its tracer provider (engines/trace.go). Nil costs nothing.
	Trace trace.Span
	// Sequence, when its Store is set, makes the run one step of a stateful sequence: the
	// runner supplies the state inputs from the store and stores the state outputs before fn
	// sees them (DoSequenceStep).
	Sequence SequenceStep

	// Deadline, when not zero, is when the request's answer is due: the queue serves it
	// before the requests of its level without one, earliest deadline first, and it is run
	// only if the version's expected service time still fits before it, checked on arrival and
	// when it is taken from the queue; else Do returns a *DeadlineError (engines/deadline.go).
	Deadline time.Time

	// Version is the span attributes of the version the request runs on (package repository's
	// Version.Do sets them); nil: the spans name no version.
	Version *TraceAttributes
}

// RowSeed is the row seed of row j of a request seeded with seed: seed + j·φ (φ = 2^64 / the
// golden ratio), so consecutive rows get well-separated seeds and row 0 gets seed itself.
func RowSeed(seed uint64, j int) uint64 { return seed + uint64(j)*0x9e3779b97f4a7c15 }

// PoolOptions configure NewPool. Zero values pick the defaults.
type PoolOptions struct {
	// Instances is the number of workers, each owning one execution context (default 1).
	Instances int
	// QueueLen bounds the jobs waiting for a free worker (default 64 per instance). A job that
	// finds the queue full fails at once with ErrOverloaded.
	QueueLen int
	// Seed is the base seed of the random operators: worker i seeds its context with Seed+i
	// (mod 2^64), so every context of a pool draws a distinct stream and a restart with the same
	// seed and the same order of requests per worker reproduces the same samples.
	Seed uint64
	// Stats receives the pool's statistics (queue, compute, batch sizes); nil records none.
	Stats *Stats
	// PriorityLevels (0: one level) and DefaultPriorityLevel (0: the lowest, PriorityLevels)
	// order the queue: a worker takes the oldest job of the highest level (1) queued. QueueLen
	// bounds each level.
	PriorityLevels, DefaultPriorityLevel int
	// LockOSThread locks each worker to its OS thread for its whole life, for contexts that
	// keep per-thread state (an OpenMP team of several threads). Without it the contexts are
	// shared: a caller of Do that finds the queue empty and a context idle runs on its own
	// goroutine, and the workers borrow idle contexts for queued jobs (see Pool and
	// docs/engine.md, Worker threads).
	LockOSThread bool
	// Warmup lists input sets (in the engine's input order) each worker runs once on its new
	// context before the pool serves, so that the first requests do not pay for building
	// the shape buckets (see WarmupInputs). A failing warm-up run fails NewPool. The runs are
	// not recorded in Stats and do not draw from the seeded random stream (the context is
	// seeded after them).
	Warmup [][]bridge.Tensor
}

// Pool runs one engine on a fixed set of execution contexts (Instances) and as many worker
// goroutines, which take jobs from one bounded queue shared by all of them.
//
// With LockOSThread each worker is locked to its OS thread and owns one context, created on
// that thread. Without it the contexts are shared: a worker that takes a job borrows any idle
// context for the run, and a caller of Do that finds the queue empty and a context idle runs
// its job on its own goroutine, with no hand-over to a worker and back (two goroutine
// switches, which on an idle machine are two OS-thread wake-ups: docs/engine.md). A job is
// taken (and stops being cancellable) only once a context is there to run it.
//
// A Pool is safe for concurrent use: Do may be called from any number of goroutines, and Close
// concurrently with Do. The Pool never closes its engine: the owner of the engine closes it
// after Pool.Close returns.
type Pool struct {
	newCtx    func() (ExecContext, error)
	nOut      int
	instances int
	jobs      *prioQueue[*job]
	pri       priorities
	lock      bool
	abort     atomic.Bool // workers fail queued jobs with ErrClosed instead of running them
	wg        sync.WaitGroup
	once      sync.Once
	jobPool   sync.Pool
	stats     *Stats
	warmup    [][]bridge.Tensor

	ctxMu    sync.Mutex
	ctxs     []memCtx // the workers' contexts that report memory (Memory)
	nEngines int      // engines the contexts come from (one per GPU); 0 means 1

	// Shared contexts (without LockOSThread): the idle ones, how many were made, and the
	// closing of them once the workers exited.
	idle      chan *slot
	nSlots    atomic.Int32
	slotsOnce sync.Once
}

// slot is one execution context with what a run on it needs.
type slot struct {
	c         ExecContext
	outputs   []bridge.Tensor
	rowSeeded bool // the context has row seeds set
	one       [1]tracedRun
}

// Job states: a job is taken by exactly one of the worker (queued→running) and a caller whose
// context ended while it was queued (queued→cancelled).
const (
	jobQueued int32 = iota
	jobRunning
	jobCancelled
)

type job struct {
	ticket
	inputs []bridge.Tensor
	seeds  []uint64  // row seeds of the run; nil: the context's stream
	seed   [1]uint64 // the storage of seeds for a seeded request run by Pool.Do
	fn     func([]bridge.Tensor) error

	// Statistics: enq is when Do queued the job (zero: its queue time is recorded by the
	// batcher in front); reqs the requests the run serves; input how long gathering them took.
	enq   time.Time
	reqs  int
	input time.Duration
}

// ticket is what a queued job (Pool) or request (Batcher) shares with the caller waiting for
// it: its state, its answer and its trace.
type ticket struct {
	state atomic.Int32
	done  chan error // buffered, capacity 1

	// Tracing (engines/trace.go): the request's span, its queue span, the version's
	// attributes; nil when not traced.
	span, queue trace.Span
	info        *TraceAttributes

	deadline int64 // ns since the epoch; 0: none (RunOptions.Deadline)
	rows     int   // the request's rows for the deadline checks
}

// wait waits for the answer of a queued ticket. When ctx ends while it is still queued, it is
// cancelled (whoever dequeues it skips it), its queue span ends with ctx's error, and wait
// returns ctx.Err() and cancelled: the caller then drops the ticket (it is not reused). Once
// taken, it waits for the answer whatever ctx does: a run cannot be interrupted and its
// inputs stay in use until it ends.
func (t *ticket) wait(ctx context.Context) (err error, cancelled bool) {
	select {
	case err := <-t.done:
		return err, false
	case <-ctx.Done():
		if t.state.CompareAndSwap(jobQueued, jobCancelled) {
			endQueue(t.queue, ctx.Err())
			t.span, t.queue, t.info = nil, nil, nil
			return ctx.Err(), true
		}
		return <-t.done, false
	}
}

// ExecContext is what a worker needs of a *bridge.Context (NewPoolFunc; tests substitute a fake).
type ExecContext interface {
	SetSeed(seed uint64) error
	SetRowSeeds(seeds []uint64) error
	Run(inputs, outputs []bridge.Tensor) error
	Close() error
}

// NewPool starts opts.Instances workers for e. It returns once every worker created its
// context; if one fails, the others are stopped and the error is returned. e must outlive the
// pool.
func NewPool(e *bridge.Engine, opts PoolOptions) (*Pool, error) {
	if e == nil {
		return nil, errors.New("engines: new pool: nil engine")
	}
	newCtx := func() (ExecContext, error) {
		c, err := e.NewContext()
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	return newPool(newCtx, len(e.Outputs()), opts)
}

// NewPoolOver is NewPool over several engines of one model (one per GPU): opts.Instances
// workers share one queue, and the engines take turns giving them contexts, so that with
// opts.Instances a multiple of len(es) each engine serves the same number of workers.
func NewPoolOver(es []*bridge.Engine, opts PoolOptions) (*Pool, error) {
	if len(es) == 1 {
		return NewPool(es[0], opts)
	}
	if len(es) == 0 || slices.Contains(es, nil) {
		return nil, errors.New("engines: new pool: nil engine")
	}
	newCtx := spreadContexts(len(es), func(k int) (ExecContext, error) {
		c, err := es[k].NewContext()
		if err != nil {
			return nil, err
		}
		return c, nil
	})
	p, err := newPool(newCtx, len(es[0].Outputs()), opts)
	if p != nil {
		p.nEngines = len(es)
	}
	return p, err
}

// spreadContexts returns a context factory that asks newCtx for a context of engine 0, 1, ...,
// n-1, 0, 1, ... in turn (safe for the workers' concurrent calls).
func spreadContexts(n int, newCtx func(k int) (ExecContext, error)) func() (ExecContext, error) {
	var next atomic.Uint64
	return func() (ExecContext, error) {
		k := int((next.Add(1) - 1) % uint64(n))
		c, err := newCtx(k)
		if err != nil && n > 1 {
			return nil, fmt.Errorf("engine %d of %d: %w", k, n, err)
		}
		return c, err
	}
}

// NewPoolFunc starts opts.Instances workers whose contexts newCtx makes (called by each worker,
// concurrently), for a model of nOut outputs: NewPool over any source of contexts (a fake in
// tests).
func NewPoolFunc(newCtx func() (ExecContext, error), nOut int, opts PoolOptions) (*Pool, error) {
	return newPool(newCtx, nOut, opts)
}

func newPool(newCtx func() (ExecContext, error), nOut int, opts PoolOptions) (*Pool, error) {
	if opts.Instances <= 0 {
		opts.Instances = 1
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 64 * opts.Instances
	}
	pri, err := newPriorities(opts.PriorityLevels, opts.DefaultPriorityLevel)
	if err != nil {
		return nil, fmt.Errorf("engines: new pool: %w", err)
	}
	p := &Pool{
		newCtx:    newCtx,
		nOut:      nOut,
		instances: opts.Instances,
		jobs:      newPrioQueue[*job](pri.levels, opts.QueueLen),
		pri:       pri,
		lock:      opts.LockOSThread,
		stats:     opts.Stats,
		warmup:    opts.Warmup,
	}
	p.jobPool.New = func() any { return &job{ticket: ticket{done: make(chan error, 1)}} }
	if !p.lock {
		p.idle = make(chan *slot, opts.Instances)
	}
	started := make(chan error, opts.Instances)
	for i := 0; i < opts.Instances; i++ {
		p.wg.Add(1)
		go p.worker(i, opts.Seed+uint64(i), started)
	}
	var errs []error
	for i := 0; i < opts.Instances; i++ {
		if err := <-started; err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) > 0 {
		p.Close()
		return nil, fmt.Errorf("engines: new pool: %w", errors.Join(errs...))
	}
	return p, nil
}

// worker makes context i; with LockOSThread it owns it for its whole life, on its locked OS
// thread, else it hands it to the idle set and borrows whichever is idle for each job.
func (p *Pool) worker(i int, seed uint64, started chan<- error) {
	defer p.wg.Done()
	if p.lock {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
	}
	s, err := p.newSlot(i, seed)
	if err != nil {
		started <- err
		return
	}
	if !p.lock {
		p.nSlots.Add(1)
		p.idle <- s
		started <- nil
		p.serveShared()
		return
	}
	defer s.c.Close()
	started <- nil
	p.serve(s, true)
}

// serveShared is a worker's loop over shared contexts: woken by the queue's bell, it gets an
// idle context and then runs the jobs queued, in priority order, until none is left. A job
// stays queued (its caller can still give up on it) until a context is there to run it.
func (p *Pool) serveShared() {
	for {
		p.jobs.waitBell()
		s := <-p.idle
		closed := p.serve(s, false)
		p.idle <- s
		if closed {
			return
		}
	}
}

// serve runs queued jobs on s. With wait (a worker that owns s) it waits for jobs until the
// queue is closed; otherwise (a shared context, held for now) it returns once the queue is
// empty. It reports a closed, empty queue.
func (p *Pool) serve(s *slot, wait bool) (closed bool) {
	for {
		var j *job
		var ok bool
		if wait {
			j, ok = p.jobs.pop()
			closed = !ok
		} else {
			j, ok, closed = p.jobs.tryPop()
		}
		if !ok {
			return closed
		}
		if !wait && p.jobs.len() > 0 {
			p.jobs.ring() // another worker may take the next one meanwhile
		}
		if !j.state.CompareAndSwap(jobQueued, jobRunning) {
			continue // its caller gave up while it was queued and owns it no more
		}
		if p.abort.Load() {
			endQueue(j.queue, ErrClosed)
			j.done <- ErrClosed
			continue
		}
		if j.deadline != 0 {
			if err := checkDeadline(p.stats, j.deadline, j.rows, time.Now(), true); err != nil {
				endQueue(j.queue, err)
				j.done <- err
				continue
			}
		}
		j.done <- p.execute(s, j)
	}
}

// newSlot makes the context of worker i: created, registered for Memory, warmed up, seeded.
func (p *Pool) newSlot(i int, seed uint64) (*slot, error) {
	c, err := p.newCtx()
	if err != nil {
		return nil, fmt.Errorf("worker %d: new context: %w", i, err)
	}
	if m, ok := c.(memCtx); ok {
		p.ctxMu.Lock()
		p.ctxs = append(p.ctxs, m)
		p.ctxMu.Unlock()
	}
	if err := p.warm(c); err != nil {
		c.Close()
		return nil, fmt.Errorf("worker %d: %w", i, err)
	}
	if err := c.SetSeed(seed); err != nil {
		c.Close()
		return nil, fmt.Errorf("worker %d: set seed: %w", i, err)
	}
	s := &slot{c: c, outputs: make([]bridge.Tensor, p.nOut)}
	for k := range s.outputs {
		s.outputs[k].Shape = make([]int64, 0, bridge.MaxRank)
	}
	return s, nil
}

// execute runs a taken job on s and calls its callback: the execution span, the row seeds,
// the run and its statistics. It returns the job's answer.
func (p *Pool) execute(s *slot, j *job) error {
	exec := p.startExec(j, &s.one)
	if j.seeds != nil || s.rowSeeded {
		if err := s.c.SetRowSeeds(j.seeds); err != nil {
			endExec(exec, err)
			return err
		}
		s.rowSeeded = j.seeds != nil
	}
	var err error
	if p.stats == nil {
		err = run(s.c, j, s.outputs)
	} else {
		err = p.runTimed(s.c, j, s.outputs)
	}
	endExec(exec, err)
	return err
}

// tryIdle returns an idle shared context when nothing is queued and the pool is not closing;
// nil otherwise (with LockOSThread always). The caller runs on it and gives it back (putIdle).
func (p *Pool) tryIdle() *slot {
	if p.idle == nil || p.jobs.len() > 0 || p.jobs.closed.Load() {
		return nil
	}
	select {
	case s := <-p.idle:
		if p.jobs.closed.Load() { // a Close or Drain began: it waits for every context
			p.idle <- s
			return nil
		}
		return s
	default:
		return nil
	}
}

// shared reports whether the pool's contexts are shared (no LockOSThread).
func (p *Pool) shared() bool { return p.idle != nil }

// acquire waits for an idle shared context (shared pools only).
func (p *Pool) acquire() *slot { return <-p.idle }

func (p *Pool) putIdle(s *slot) { p.idle <- s }

// runOn runs one already taken run (a batch or a request of a batcher) on s: do without the
// queue. enq is zero: the batcher records the queue time.
func (p *Pool) runOn(s *slot, inputs []bridge.Tensor, fn func(outputs []bridge.Tensor) error, seeds []uint64, reqs int, input time.Duration) error {
	j := p.jobPool.Get().(*job)
	j.inputs, j.fn, j.seeds = inputs, fn, seeds
	j.enq, j.reqs, j.input = time.Time{}, reqs, input
	err := p.execute(s, j)
	p.release(j)
	return err
}

// runTimed is run with statistics: one clock reading per stage boundary.
func (p *Pool) runTimed(c ExecContext, j *job, outputs []bridge.Tensor) error {
	t0 := time.Now()
	if !j.enq.IsZero() {
		p.stats.recordQueue(1, t0.Sub(j.enq))
	}
	if err := c.Run(j.inputs, outputs); err != nil {
		return err
	}
	t1 := time.Now()
	err := callback(j.fn, outputs)
	if errors.Is(err, errSplit) {
		return err // the batch is retried request by request, which records its runs
	}
	p.stats.recordRun(j.reqs, p.stats.rowsOf(j.inputs), j.input, t1.Sub(t0), time.Since(t1))
	return err
}

// run executes one job and calls its callback on this goroutine, while outputs are valid.
// A panic in the callback is a bug of the caller; it is turned into an error so that the
// worker (and the process) survive it.
func run(c ExecContext, j *job, outputs []bridge.Tensor) error {
	if err := c.Run(j.inputs, outputs); err != nil {
		return err
	}
	return callback(j.fn, outputs)
}

// Do runs the model once on a free worker. inputs are in the engine's input order and are only
// read until Do returns. fn is called on the worker with the outputs, in the engine's output
// order, whose Data are views of native memory valid only until fn returns: fn must copy or
// encode what it needs and must not keep the slices. Do returns the error of the run, else
// the error of fn.
//
// Do returns ErrOverloaded at once when the queue is full, ErrClosed when the pool is closed
// (also for a job still queued when Close is called), and ctx.Err() when ctx ends while the job
// is still queued. Once a worker has taken the job, Do waits for it to finish whatever ctx
// does: a native run cannot be interrupted, and inputs must stay valid until it ends.
//
// A run with opts.Sequence.Store set is one step of that sequence (DoSequenceStep): Do sets
// the state inputs of inputs to the sequence's state for the run and clears them again.
//
// Do is safe for concurrent use.
func (p *Pool) Do(ctx context.Context, inputs []bridge.Tensor, opts RunOptions, fn func(outputs []bridge.Tensor) error) error {
	if opts.Sequence.Store != nil {
		return DoSequenceStep(ctx, p, inputs, opts, fn)
	}
	level, err := p.pri.level(opts.Priority)
	if err != nil {
		return err
	}
	var enq time.Time
	if p.stats != nil {
		enq = time.Now()
	}
	if !opts.Deadline.IsZero() {
		if enq.IsZero() {
			enq = time.Now()
		}
		if err := checkArrival(p.stats, opts.Deadline.UnixNano(), p.rowsOf(inputs), enq, p.jobs.ahead(level), p.instances); err != nil {
			return err
		}
		if p.stats == nil {
			enq = time.Time{}
		}
	}
	return p.do(ctx, inputs, fn, level, opts, nil, enq, 1, 0)
}

// do is Do at a queue level for a run serving reqs requests whose inputs took input to
// gather; enq is when the job is queued, zero when a batcher records the queue time. The run
// draws from the row seeds given, else (nil) from RowSeed(opts.Seed, 0) when opts.Seeded,
// else from the context's stream.
func (p *Pool) do(ctx context.Context, inputs []bridge.Tensor, fn func(outputs []bridge.Tensor) error, level int, opts RunOptions, seeds []uint64, enq time.Time, reqs int, input time.Duration) error {
	j := p.jobPool.Get().(*job)
	j.inputs, j.fn, j.seeds = inputs, fn, seeds
	if seeds == nil && opts.Seeded {
		j.seed[0] = RowSeed(opts.Seed, 0)
		j.seeds = j.seed[:]
	}
	j.enq, j.reqs, j.input = enq, reqs, input
	j.deadline = deadlineNano(&opts)
	if j.deadline != 0 {
		j.rows = p.rowsOf(inputs)
	}
	if opts.Trace != nil {
		j.traceQueued(&opts)
	}
	j.state.Store(jobQueued)

	if s := p.tryIdle(); s != nil {
		// Nothing queued and a context idle: run here, on the caller's goroutine.
		if err := ctx.Err(); err != nil {
			p.putIdle(s)
			endQueue(j.queue, err)
			p.release(j)
			return err
		}
		j.state.Store(jobRunning)
		err := p.execute(s, j)
		p.putIdle(s)
		p.release(j)
		return err
	}
	if err := p.jobs.pushDeadline(j, level, j.deadline); err != nil {
		endQueue(j.queue, err)
		p.release(j)
		return err
	}
	err, cancelled := j.waitDeadline(ctx, p.stats)
	if cancelled {
		j.inputs, j.fn, j.seeds = nil, nil, nil // not reused: a worker may still dequeue it
		return err
	}
	p.release(j)
	return err
}

// rowsOf is the batch size of a run of inputs (1 without statistics: no estimate then).
func (p *Pool) rowsOf(inputs []bridge.Tensor) int {
	if p.stats == nil {
		return 1
	}
	return p.stats.rowsOf(inputs)
}

func (p *Pool) release(j *job) {
	j.inputs, j.fn, j.seeds = nil, nil, nil
	j.span, j.queue, j.info = nil, nil, nil
	p.jobPool.Put(j)
}

// Closed reports whether the pool stopped taking jobs (Close or Drain).
func (p *Pool) Closed() bool { return p.jobs.closed.Load() }

// Instances reports the number of workers (execution contexts) of the pool.
func (p *Pool) Instances() int { return p.instances }

// Stats reports the statistics the pool records into (PoolOptions.Stats; nil when none).
func (p *Pool) Stats() *Stats { return p.stats }

func (p *Pool) statistics() *Stats { return p.stats }

// QueueLen reports the capacity of the pool's queue.
func (p *Pool) QueueLen() int { return p.jobs.capacity() }

// Close stops the pool: jobs still queued fail with ErrClosed, a job being run finishes, every
// worker closes its context and exits, then Close returns. It never closes the engine.
// Close is idempotent and safe for concurrent use (also with Drain); every call returns after
// the workers exited.
func (p *Pool) Close() error {
	p.abort.Store(true)
	p.stop()
	return nil
}

// Drain stops the pool gracefully: Do refuses new jobs with ErrClosed at once, the jobs already
// queued and the ones being run finish normally, then every worker closes its context on its
// own thread and exits, and Drain returns. It never closes the engine. A Close during a Drain
// fails the jobs still queued. Drain is idempotent and safe for concurrent use.
func (p *Pool) Drain() error {
	p.stop()
	return nil
}

func (p *Pool) stop() {
	p.jobs.close()
	p.wg.Wait()
	if p.idle != nil {
		// Every shared context comes back once the runs on it end; none starts after close.
		p.slotsOnce.Do(func() {
			for range p.nSlots.Load() {
				(<-p.idle).c.Close()
			}
		})
	}
}
