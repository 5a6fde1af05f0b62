package engines

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/policyd/policyd/bridge"
)

// Batcher defaults.
const (
	// DefaultMaxBatchSize is BatcherOptions.MaxBatchSize when zero.
	DefaultMaxBatchSize = 32
	// DefaultMaxQueueDelay is the queue delay cmd/policyd configures by default.
	DefaultMaxQueueDelay = 100 * time.Microsecond
)

// BatcherOptions configure NewBatcher.
type BatcherOptions struct {
	// MaxBatchSize bounds the rows (the sum of the requests' batch dimensions) of one batch
	// (0: DefaultMaxBatchSize). A request with more rows runs alone.
	MaxBatchSize int
	// MaxQueueDelay is how long a batch that could still grow waits for more requests while
	// another batch runs (see Batcher). 0: never wait; a batch takes what is queued.
	MaxQueueDelay time.Duration
	// PreferredBatchSizes: a batch that reaches one of these row counts is dispatched at once
	// when no more requests are queued, without waiting the rest of MaxQueueDelay.
	PreferredBatchSizes []int
	// QueueLen bounds the requests waiting to be batched (0: 64 per instance of the pool), per
	// priority level. A request that finds its level full fails at once with ErrOverloaded.
	QueueLen int
	// PriorityLevels (0: one level) and DefaultPriorityLevel (0: the lowest level) are Triton's
	// priority levels: batches are formed from the highest level (1) queued first, oldest
	// first within a level; RunOptions.Priority 0 takes the default level.
	PriorityLevels, DefaultPriorityLevel int
}

// batchPool is what a Batcher needs of the Pool it feeds.
type batchPool interface {
	Runner
	Instances() int
	do(ctx context.Context, inputs []bridge.Tensor, fn func([]bridge.Tensor) error, level int, opts RunOptions, seeds []uint64, enq time.Time, reqs int, input time.Duration) error
	statistics() *Stats
	// Shared contexts (Pool without LockOSThread; see Pool.tryIdle): none otherwise.
	shared() bool
	tryIdle() *slot
	acquire() *slot
	putIdle(s *slot)
	runOn(s *slot, inputs []bridge.Tensor, fn func([]bridge.Tensor) error, seeds []uint64, reqs int, input time.Duration) error
}

// Batcher is Triton's dynamic batcher in front of a Pool, for one model version: it gathers
// concurrent requests whose inputs agree on every dimension but the batch dimension (and on
// dtypes) into one run of the pool, then hands each request its own rows of the outputs.
//
// One batch former runs per instance of the pool; each owns its batch buffers (reused, so a
// request allocates nothing in steady state) and keeps one run in flight. A former takes the
// first request queued, then every compatible request already queued, up to MaxBatchSize rows.
// It waits up to MaxQueueDelay for more only while the batch could still grow and another
// batch of this version is running (its callers are about to send their next requests). A
// request that arrives on an idle batcher runs at once with what is queued, without waiting
// the delay, so batch-1 latency without concurrency is the pool's; with one instance the delay
// is therefore never waited (batches form from what queues while the instance runs). A batch
// that reaches a preferred size with nothing more queued is dispatched at once.
//
// A request of one row is passed to the pool as is (no copy). A batch is gathered by copying
// each request's rows, in order, into the former's input buffers along dimension 0. Outputs
// with a batch dimension are sliced per request (views, valid while the callback runs);
// outputs without one are given whole to every request. If the batched run fails, each of
// its requests is run again alone, so a failing request never fails its batch-mates.
//
// Only models whose every input has its batch dimension at 0 are batched (see Batchable);
// the others are served by the plain Pool.
//
// A Batcher is safe for concurrent use. It owns its pool: Close and Drain stop the pool too.
type Batcher struct {
	pool     batchPool
	opts     BatcherOptions
	inputs   []bridge.IOInfo
	outputs  []bridge.IOInfo
	queue    *prioQueue[*request]
	pri      priorities
	abort    atomic.Bool
	running  atomic.Int32 // batches being run
	wg       sync.WaitGroup
	once     sync.Once
	reqPool  sync.Pool
	maxPrefd int
	stats    *Stats // the pool's; nil records none
}

type request struct {
	ticket
	inputs []bridge.Tensor
	fn     func([]bridge.Tensor) error
	rows   int       // rows along the batch dimension; -1: runs alone
	seeds  []uint64  // RowSeed(RunOptions.Seed, j) per row when seeded, else empty (reused)
	enq    time.Time // when queued (only with statistics)
}

// Batchable reports whether a Batcher can serve a model with these inputs and outputs: the
// engine is batchable, every input has its batch dimension at 0 and every output at 0 or none.
// Recurrent state laid out [layers, B, H] (batch dimension 1) is not batched.
func Batchable(batchable bool, inputs, outputs []bridge.IOInfo) bool {
	if !batchable || len(inputs) == 0 {
		return false
	}
	for _, in := range inputs {
		if in.BatchDim != 0 {
			return false
		}
	}
	for _, out := range outputs {
		if out.BatchDim != 0 && out.BatchDim != -1 {
			return false
		}
	}
	return true
}

// BatchOne returns the input signature a model serves when its graph fixes the batch inside
// (a Reshape to [1, …]): the engine is not batchable, yet every input leaves dimension 0 free
// (-1), because the library's probe at batch 2 failed and it serves batch 1 only. Dimension 0 of
// every input is then 1 in the returned copy and fixed reports true, so the metadata, the
// model configuration and the request checks say what the model takes. Any other signature is
// returned as it is (fixed false): a batchable model, one with an input of rank 0 or a fixed
// dimension 0, and a shape-tensor model (its value inputs have fixed dimensions).
//
// The library reports no more than "not batchable", so a non-batchable model whose inputs all
// leave dimension 0 free for another reason (their free dimensions are different symbols, none
// shared as a batch) is taken for one that serves batch 1; a model whose batch is on another
// dimension (recurrent state [layers, B, H]) keeps -1 there.
func BatchOne(batchable bool, inputs []bridge.IOInfo) (sig []bridge.IOInfo, fixed bool) {
	if batchable || len(inputs) == 0 {
		return inputs, false
	}
	for _, in := range inputs {
		if len(in.Shape) == 0 || in.Shape[0] != -1 {
			return inputs, false
		}
	}
	sig = make([]bridge.IOInfo, len(inputs))
	for i, in := range inputs {
		sig[i] = in
		sig[i].Shape = slices.Clone(in.Shape)
		sig[i].Shape[0] = 1
		sig[i].BatchDim = -1
	}
	return sig, true
}

// NewBatcher starts a batcher in front of p, whose engine has the given input and output
// signature (see Batchable). The batcher owns p from now on, also when it fails.
func NewBatcher(p *Pool, inputs, outputs []bridge.IOInfo, opts BatcherOptions) (*Batcher, error) {
	return newBatcher(p, inputs, outputs, opts)
}

func newBatcher(p batchPool, inputs, outputs []bridge.IOInfo, opts BatcherOptions) (*Batcher, error) {
	switch {
	case opts.MaxBatchSize < 0:
		p.Close()
		return nil, fmt.Errorf("engines: new batcher: max batch size %d is negative", opts.MaxBatchSize)
	case opts.MaxQueueDelay < 0:
		p.Close()
		return nil, fmt.Errorf("engines: new batcher: max queue delay %s is negative", opts.MaxQueueDelay)
	}
	if opts.MaxBatchSize == 0 {
		opts.MaxBatchSize = DefaultMaxBatchSize
	}
	if opts.QueueLen <= 0 {
		opts.QueueLen = 64 * p.Instances()
	}
	pri, err := newPriorities(opts.PriorityLevels, opts.DefaultPriorityLevel)
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("engines: new batcher: %w", err)
	}
	opts.PriorityLevels, opts.DefaultPriorityLevel = pri.levels, pri.def
	opts.PreferredBatchSizes = slices.Clone(opts.PreferredBatchSizes)
	slices.Sort(opts.PreferredBatchSizes)
	b := &Batcher{
		pool:    p,
		opts:    opts,
		inputs:  inputs,
		outputs: outputs,
		queue:   newPrioQueue[*request](pri.levels, opts.QueueLen),
		pri:     pri,
		stats:   p.statistics(),
	}
	for _, s := range opts.PreferredBatchSizes {
		if s > 0 && s <= opts.MaxBatchSize {
			b.maxPrefd = s
		}
	}
	b.reqPool.New = func() any { return &request{ticket: ticket{done: make(chan error, 1)}} }
	for range p.Instances() {
		f := b.newFormer()
		b.wg.Add(1)
		go f.loop()
	}
	return b, nil
}

// Options reports the effective options of the batcher.
func (b *Batcher) Options() BatcherOptions { return b.opts }

// Do queues one request for the next batch. Its contract is Pool.Do's: inputs are only read
// until Do returns; fn is called on a worker with this request's outputs, valid only until fn
// returns; Do returns ErrOverloaded when the queue is full, ErrClosed when the batcher is
// closed, and ctx.Err() when ctx ends while the request is queued (it then never runs). Once
// a batch holds the request, Do waits for it whatever ctx does. Safe for concurrent use.
func (b *Batcher) Do(ctx context.Context, inputs []bridge.Tensor, opts RunOptions, fn func(outputs []bridge.Tensor) error) error {
	if opts.Sequence.Store != nil {
		return DoSequenceStep(ctx, b, inputs, opts, fn)
	}
	level, err := b.pri.level(opts.Priority)
	if err != nil {
		return err
	}
	r := b.reqPool.Get().(*request)
	r.inputs, r.fn, r.rows = inputs, fn, b.rowsOf(inputs)
	r.seeds = r.seeds[:0]
	if opts.Seeded {
		// A request over MaxBatchSize runs alone but keeps a seed per row, so that its rows
		// draw what they would draw in any batch (the model is batchable: its random ops'
		// dimension 0 is the batch).
		n := r.rows
		if n < 0 {
			n = leadingRows(inputs, b.inputs)
		}
		for j := range max(n, 1) {
			r.seeds = append(r.seeds, RowSeed(opts.Seed, j))
		}
	}
	if b.stats != nil {
		r.enq = time.Now()
	}
	r.deadline = deadlineNano(&opts)
	if r.deadline != 0 {
		r.ticket.rows = max(r.rows, 1)
		ahead, most := b.queue.ahead(level), b.opts.MaxBatchSize
		if err := checkArrival(b.stats, r.deadline, max(r.ticket.rows, min(ahead+r.ticket.rows, most)), time.Now(), ahead, most*b.pool.Instances()); err != nil {
			b.release(r)
			return err
		}
	}
	if opts.Trace != nil {
		r.traceQueued(&opts)
	}
	r.state.Store(jobQueued)

	if b.queue.len() == 0 && b.running.Load() == 0 && !b.queue.closed.Load() {
		// No batch is forming or running: nothing could join this request within its delay.
		// Run it here on an idle context, if the pool has one free, without the hand-over to
		// a former and back.
		if s := b.pool.tryIdle(); s != nil {
			return b.runHere(ctx, s, r)
		}
	}
	if err := b.queue.pushDeadline(r, level, r.deadline); err != nil {
		endQueue(r.queue, err)
		b.release(r)
		return err
	}
	err, cancelled := r.waitDeadline(ctx, b.stats)
	if cancelled {
		r.inputs, r.fn = nil, nil // not reused: the former that dequeues it skips it
		return err
	}
	b.release(r)
	return err
}

// runHere runs request r alone on s, on the caller's goroutine, as a former runs a batch of
// one: the queue span ends, the queue time (about zero) and the run are recorded.
func (b *Batcher) runHere(ctx context.Context, s *slot, r *request) error {
	if err := ctx.Err(); err != nil {
		b.pool.putIdle(s)
		endQueue(r.queue, err)
		b.release(r)
		return err
	}
	r.state.Store(jobRunning)
	endQueue(r.queue, nil)
	r.queue = nil
	if b.stats != nil {
		b.stats.recordQueue(1, time.Since(r.enq))
	}
	b.running.Add(1)
	exec := r.startExec()
	err := b.pool.runOn(s, r.inputs, r.fn, r.rowSeeds(), 1, 0)
	b.pool.putIdle(s)
	b.running.Add(-1)
	endExec(exec, err)
	b.release(r)
	return err
}

func (b *Batcher) release(r *request) {
	r.inputs, r.fn = nil, nil
	r.span, r.queue, r.info = nil, nil, nil
	b.reqPool.Put(r)
}

// rowsOf returns the rows of a request, or -1 when it must run alone: its inputs do not
// match the signature's count, disagree on dimension 0, have none, or exceed MaxBatchSize.
func (b *Batcher) rowsOf(inputs []bridge.Tensor) int {
	rows := leadingRows(inputs, b.inputs)
	if rows > b.opts.MaxBatchSize {
		return -1
	}
	return rows
}

// leadingRows returns the dimension 0 the inputs of a request share, or -1 when they do not
// match the signature's count, disagree on it, have none, or their sizes do not match their
// shapes.
func leadingRows(inputs []bridge.Tensor, sig []bridge.IOInfo) int {
	if len(inputs) != len(sig) || len(inputs) == 0 {
		return -1
	}
	rows := int64(-1)
	for i := range inputs {
		t := &inputs[i]
		if len(t.Shape) == 0 || t.DType.Size() == 0 {
			return -1
		}
		if rows < 0 {
			rows = t.Shape[0]
		} else if t.Shape[0] != rows {
			return -1
		}
		if bridge.NumElements(t.Shape)*int64(t.DType.Size()) != int64(len(t.Data)) {
			return -1
		}
	}
	if rows <= 0 || rows > math.MaxInt32 {
		return -1
	}
	return int(rows)
}

// compatible reports whether r may share a batch with first: same dtypes and ranks, and the
// same dimensions but dimension 0.
func compatible(first, r *request) bool {
	if r.rows < 0 {
		return false
	}
	for i := range first.inputs {
		a, c := &first.inputs[i], &r.inputs[i]
		if a.DType != c.DType || len(a.Shape) != len(c.Shape) || !slices.Equal(a.Shape[1:], c.Shape[1:]) {
			return false
		}
	}
	return true
}

// former builds and runs batches; one per instance of the pool.
type former struct {
	b       *Batcher
	batch   []*request
	errs    []error
	in      []bridge.Tensor   // the batch's inputs, Data in bufs
	seeds   []uint64          // the batch's row seeds, when one of its requests is seeded
	bufs    [][]byte          // gather buffers, one per input, reused
	views   [][]bridge.Tensor // per request of the batch, its outputs
	timer   *time.Timer
	splitFn func([]bridge.Tensor) error
	traced  []tracedRun // the batch's requests as its execution span sees them (reused)
}

func (b *Batcher) newFormer() *former {
	f := &former{
		b:     b,
		batch: make([]*request, 0, b.opts.MaxBatchSize),
		errs:  make([]error, b.opts.MaxBatchSize),
		in:    make([]bridge.Tensor, len(b.inputs)),
		bufs:  make([][]byte, len(b.inputs)),
		views: make([][]bridge.Tensor, b.opts.MaxBatchSize),
		timer: time.NewTimer(time.Hour),
	}
	f.timer.Stop()
	for i := range f.in {
		f.in[i].Shape = make([]int64, 0, bridge.MaxRank)
	}
	for j := range f.views {
		f.views[j] = make([]bridge.Tensor, len(b.outputs))
		for k := range f.views[j] {
			f.views[j][k].Shape = make([]int64, 0, bridge.MaxRank)
		}
	}
	f.splitFn = f.split
	return f
}

// take claims a dequeued request for a batch; false when its caller gave up on it, or when the
// batcher is closing (the request is then answered ErrClosed).
func (f *former) take(r *request) bool {
	if !r.state.CompareAndSwap(jobQueued, jobRunning) {
		return false
	}
	if f.b.abort.Load() {
		endQueue(r.queue, ErrClosed)
		r.queue = nil
		r.done <- ErrClosed
		return false
	}
	if r.deadline != 0 {
		if err := checkDeadline(f.b.stats, r.deadline, r.ticket.rows, time.Now(), true); err != nil {
			endQueue(r.queue, err)
			r.queue = nil
			r.done <- err
			return false
		}
	}
	endQueue(r.queue, nil)
	r.queue = nil
	if f.b.stats != nil {
		f.b.stats.recordQueue(1, time.Since(r.enq))
	}
	return true
}

// fits reports whether a batch of rows rows whose earliest deadline is dl (0: none) is still
// expected to finish by it.
func (f *former) fits(rows int, dl int64) bool {
	return dl == 0 || time.Now().UnixNano()+int64(f.b.stats.ExpectedService(rows)) <= dl
}

func (f *former) loop() {
	b := f.b
	defer b.wg.Done()
	defer f.timer.Stop()
	if b.pool.shared() {
		f.loopShared()
		return
	}
	f.serve(nil)
}

// loopShared is the former's loop over a pool's shared contexts: woken by the queue's bell,
// it gets an idle context, then forms and runs batches on it while requests are queued. A
// request is taken (and stops being cancellable) only when a context is there to run it.
func (f *former) loopShared() {
	b := f.b
	for {
		b.queue.waitBell()
		s := b.pool.acquire()
		closed := f.serve(s)
		b.pool.putIdle(s)
		if closed {
			return
		}
	}
}

// serve forms and runs batches. On a shared context s it runs them there until the queue is
// empty; with s nil (contexts locked to their workers) it waits for requests and runs each
// batch through the pool's queue, until the queue is closed. It reports a closed, empty queue.
func (f *former) serve(s *slot) (closed bool) {
	b := f.b
	var carry *request // an incompatible request taken while forming the previous batch
	for {
		first := carry
		carry = nil
		if first != nil && first.deadline != 0 {
			// Taken while the previous batch formed, which has run since: check it again.
			if err := checkDeadline(b.stats, first.deadline, first.ticket.rows, time.Now(), true); err != nil {
				first.done <- err
				first = nil
				continue
			}
		}
		if first == nil {
			var r *request
			var ok bool
			if s == nil {
				r, ok = b.queue.pop()
				closed = !ok
			} else {
				r, ok, closed = b.queue.tryPop()
			}
			if !ok {
				return closed
			}
			if !f.take(r) {
				continue
			}
			first = r
		}
		f.batch = append(f.batch[:0], first)
		if first.rows > 0 {
			carry = f.collect(first)
		}
		if s != nil && b.queue.len() > 0 {
			b.queue.ring() // another former may run the next batch meanwhile
		}
		f.run(s)
	}
}

// collect adds compatible requests to the batch that holds first, and returns the request
// that did not fit, if any.
func (f *former) collect(first *request) (carry *request) {
	b := f.b
	rows := first.rows
	dl := first.deadline // the batch's earliest deadline; 0: none
	waiting := false
	for rows < b.opts.MaxBatchSize {
		r, ok, closed := b.queue.tryPop()
		if !ok && !closed {
			if b.opts.MaxQueueDelay <= 0 || b.running.Load() == 0 {
				return nil // no other batch in flight: nothing is about to arrive, run at once
			}
			if b.isPreferred(rows) {
				return nil
			}
			if !waiting {
				delay := b.opts.MaxQueueDelay
				if dl != 0 {
					// Wait no longer than the batch's earliest deadline allows.
					delay = min(delay, time.Duration(dl-time.Now().UnixNano())-b.stats.ExpectedService(rows+1))
					if delay <= 0 {
						return nil
					}
				}
				waiting = true
				f.timer.Reset(delay)
			}
			var timedOut bool
			if r, ok, timedOut = b.queue.popUntil(f.timer.C); timedOut {
				return nil
			}
		}
		if !ok {
			break // closing: run what we hold
		}
		if !f.take(r) {
			continue
		}
		if !compatible(first, r) || rows+r.rows > b.opts.MaxBatchSize {
			carry = r
			break
		}
		ndl := dl
		if r.deadline != 0 && (ndl == 0 || r.deadline < ndl) {
			ndl = r.deadline
		}
		if ndl != 0 && !f.fits(rows+r.rows, ndl) {
			carry = r // joining would make the batch miss a deadline: r runs next
			break
		}
		dl = ndl
		f.batch = append(f.batch, r)
		rows += r.rows
		if rows == b.maxPrefd {
			break
		}
	}
	if waiting {
		f.timer.Stop()
	}
	return carry
}

func (b *Batcher) isPreferred(rows int) bool {
	_, ok := slices.BinarySearch(b.opts.PreferredBatchSizes, rows)
	return ok
}

// exec runs a taken run on s, or through the pool's queue when s is nil.
func (f *former) exec(s *slot, inputs []bridge.Tensor, fn func([]bridge.Tensor) error, seeds []uint64, reqs int, input time.Duration) error {
	if s != nil {
		return f.b.pool.runOn(s, inputs, fn, seeds, reqs, input)
	}
	return f.b.pool.do(context.Background(), inputs, fn, 0, RunOptions{}, seeds, time.Time{}, reqs, input)
}

// run runs the batch (on s, see exec) and answers each of its requests.
func (f *former) run(s *slot) {
	b := f.b
	defer clear(f.batch)
	if b.abort.Load() {
		for _, r := range f.batch {
			r.done <- ErrClosed
		}
		return
	}
	b.running.Add(1)
	defer b.running.Add(-1)
	exec := f.startExec()
	if len(f.batch) == 1 {
		r := f.batch[0]
		err := f.exec(s, r.inputs, r.fn, r.rowSeeds(), 1, 0)
		endExec(exec, err)
		r.done <- err
		return
	}
	var gathered time.Duration
	if b.stats != nil {
		t := time.Now()
		f.gather()
		gathered = time.Since(t)
	} else {
		f.gather()
	}
	err := f.exec(s, f.in, f.splitFn, f.rowSeeds(), len(f.batch), gathered)
	endExec(exec, err) // before the answers: the span ends within its requests' spans
	switch {
	case err == nil:
		for j, r := range f.batch {
			r.done <- f.errs[j]
			f.errs[j] = nil
		}
	case errors.Is(err, ErrClosed) || errors.Is(err, ErrOverloaded):
		for _, r := range f.batch {
			r.done <- err
		}
	default:
		// The batch failed (no callback ran): run each request alone, so that only the
		// requests that fail by themselves fail.
		for _, r := range f.batch {
			r.done <- f.exec(s, r.inputs, r.fn, r.rowSeeds(), 1, 0)
		}
	}
}

// rowSeeds are the row seeds of a request run alone; nil when it is not seeded.
func (r *request) rowSeeds() []uint64 {
	if len(r.seeds) == 0 {
		return nil
	}
	return r.seeds
}

// rowSeeds are the row seeds of the batch: each seeded request's own, and a fresh random seed
// for every row of the others; nil when no request of the batch is seeded (the run draws from
// the context's stream).
func (f *former) rowSeeds() []uint64 {
	seeded := false
	for _, r := range f.batch {
		seeded = seeded || len(r.seeds) > 0
	}
	if !seeded {
		return nil
	}
	f.seeds = f.seeds[:0]
	for _, r := range f.batch {
		if len(r.seeds) > 0 {
			f.seeds = append(f.seeds, r.seeds...)
			continue
		}
		for range r.rows {
			f.seeds = append(f.seeds, rand.Uint64())
		}
	}
	return f.seeds
}

// gather copies the requests' rows into the batch's input buffers, in batch order.
func (f *former) gather() {
	first := f.batch[0]
	rows := 0
	for _, r := range f.batch {
		rows += r.rows
	}
	for i := range f.in {
		size := 0
		for _, r := range f.batch {
			size += len(r.inputs[i].Data)
		}
		if cap(f.bufs[i]) < size {
			f.bufs[i] = make([]byte, size)
		}
		buf := f.bufs[i][:0]
		for _, r := range f.batch {
			buf = append(buf, r.inputs[i].Data...)
		}
		t := &f.in[i]
		t.DType = first.inputs[i].DType
		t.Shape = append(t.Shape[:0], first.inputs[i].Shape...)
		t.Shape[0] = int64(rows)
		t.Data = buf
	}
}

// errSplit: the model's outputs do not have the batch's rows; the batch is retried one by one.
var errSplit = errors.New("engines: batched outputs do not split along the batch")

// split is the batch's callback: it checks that every batched output has the batch's rows,
// then calls each request's callback with its own views. A callback's error or panic is its
// request's alone.
func (f *former) split(outputs []bridge.Tensor) error {
	rows := int64(0)
	for _, r := range f.batch {
		rows += int64(r.rows)
	}
	for k := range outputs {
		o := &outputs[k]
		if k < len(f.b.outputs) && f.b.outputs[k].BatchDim == 0 {
			if len(o.Shape) == 0 || o.Shape[0] != rows || int64(len(o.Data))%rows != 0 {
				return errSplit
			}
		}
	}
	off := int64(0)
	for j, r := range f.batch {
		views := f.views[j][:len(outputs)]
		for k := range outputs {
			o, v := &outputs[k], &views[k]
			v.DType = o.DType
			v.Shape = append(v.Shape[:0], o.Shape...)
			if k < len(f.b.outputs) && f.b.outputs[k].BatchDim == 0 {
				rowBytes := int64(len(o.Data)) / rows
				n := int64(r.rows)
				v.Shape[0] = n
				v.Data = o.Data[off*rowBytes : (off+n)*rowBytes : (off+n)*rowBytes]
			} else {
				v.Data = o.Data
			}
		}
		f.errs[j] = callback(r.fn, views)
		for k := range views {
			views[k].Data = nil
		}
		off += int64(r.rows)
	}
	return nil
}

func callback(fn func([]bridge.Tensor) error, outputs []bridge.Tensor) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("engines: output callback panicked: %v", r)
		}
	}()
	return fn(outputs)
}

// Close stops the batcher: requests still queued fail with ErrClosed, batches being run
// finish, then the pool is closed. Idempotent and safe for concurrent use.
func (b *Batcher) Close() error {
	b.abort.Store(true)
	b.stop()
	return b.pool.Close()
}

// Drain stops the batcher gracefully: Do refuses new requests with ErrClosed, the queued ones
// are batched and run, then the pool is drained. Idempotent and safe for concurrent use.
func (b *Batcher) Drain() error {
	b.stop()
	return b.pool.Drain()
}

func (b *Batcher) stop() {
	b.queue.close()
	b.wg.Wait()
}
