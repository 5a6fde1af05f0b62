package server

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/metrics"
)

// Shadow evaluation (docs/rollout.md, Shadow evaluation). A model's traffic policy may name a
// shadow version and a sampling rate (Options.Shadow). After the primary has answered a
// sampled request, the inference path offers a copy of it (the inputs as decoded, the
// primary's outputs, the seed both sides draw from, the sequence step) to a bounded queue;
// when the queue is full the copy is dropped and counted, and the primary never waits. A few
// workers acquire the shadow version, run the copy on it at its lowest priority level and
// compare the two answers output by output (by name): floating outputs by their absolute and
// relative differences, integer and boolean outputs (discrete actions) by the share of equal
// elements. The numbers are kept per (model, primary, shadow), read by ShadowReport and
// health details, and exported by metrics.Shadow (shadow_compare.go).
//
// Sampling is by key: a step of a sequence is sampled by its sequence_id, so a sampled
// sequence is shadowed at every step, its start and end included, and the shadow version
// keeps its own state for it in its own sequence table (bounded by that version's idle
// timeout, and to half its max_sequences). A request without a sequence is sampled on its own.
//
// What the primary pays: one call of Options.Shadow per request and, for a request not
// sampled, nothing else (no allocation, no copy). A sampled request first asks the shadow's
// CPU budget (shadow_budget.go, Options.ShadowCPUShare): when it is spent the request is
// dropped there, counted, before anything is copied. An admitted one copies its inputs and
// outputs into a pooled job, after its answer is encoded; a busy worker polls its queue
// (shadowPoll), so handing the job over wakes no thread.

// Defaults of the shadow options.
const (
	DefaultShadowQueueLen = 64
	DefaultShadowWorkers  = 1
	maxShadowWorkers      = 4
	// shadowRunTimeout bounds one shadow run (queueing on the shadow version included).
	shadowRunTimeout = 10 * time.Second
	// maxShadowBroken bounds the sequences whose shadow state is known to be broken (a step
	// dropped) and that have not ended or restarted since; shadowBrokenAge is how long one
	// without a step is kept when the bound is reached.
	maxShadowBroken = 4096
	shadowBrokenAge = 10 * time.Minute
)

type shadowKey struct{ model, primary, shadow string }

// shadowSeqKey names a sequence of a shadow version.
type shadowSeqKey struct {
	model, shadow string
	id            engines.SequenceID
}

// shadows is a Server's shadow evaluation: the queue, its workers and the numbers.
type shadows struct {
	s       *Server
	choose  func(model string) (version string, rate float64, ok bool)
	queues  []chan *shadowJob // one per worker: a sequence's steps all go to one, in order
	jobs    sync.Pool         // *shadowJob
	metrics *metrics.Shadow
	budget  *shadowBudget // nil: no CPU budget (Options.ShadowCPUShare ≥ 1)
	wg      sync.WaitGroup

	mu      sync.RWMutex
	triples map[shadowKey]*shadowTriple
	last    atomic.Pointer[shadowTriple] // the triple found last (triple)

	// broken are the sampled sequences a dropped step has left behind on the shadow, by
	// when they last had a step: their later steps are not compared (the first one ends the
	// shadow's sequence) until one restarts them. Kept in the order steps are offered, which
	// is the order of a sequence's steps.
	brokenMu sync.Mutex
	broken   map[shadowSeqKey]time.Time
	nBroken  atomic.Int32 // len(broken), read without the lock
}

func newShadows(s *Server, o *Options) *shadows {
	if o.Shadow == nil {
		return nil
	}
	n := o.ShadowQueueLen
	if n <= 0 {
		n = DefaultShadowQueueLen
	}
	w := min(max(o.ShadowWorkers, 0), maxShadowWorkers)
	if w == 0 {
		w = DefaultShadowWorkers
	}
	sh := &shadows{s: s, choose: o.Shadow, metrics: o.ShadowMetrics,
		triples: map[shadowKey]*shadowTriple{}, broken: map[shadowSeqKey]time.Time{},
		budget: newShadowBudget(o.ShadowCPUShare, 0, nil)}
	sh.jobs.New = func() any { return newShadowJob() }
	sh.wg.Add(w)
	for i := range w {
		sh.queues = append(sh.queues, make(chan *shadowJob, max(n/w, 1)))
		go sh.work(sh.queues[i])
	}
	return sh
}

// shadowJob is the copy of one sampled request, pooled.
type shadowJob struct {
	key     shadowKey
	inputs  []bridge.Tensor // the request's inputs, copied (a sequence's state inputs empty)
	outs    []bridge.Tensor // the primary's outputs, copied
	names   []string        // the primary's output names
	inNames []string        // the primary's input names
	seed    uint64
	// reserved is the CPU budget's reservation for this run (shadow_budget.go)
	reserved time.Duration
	seq      bool // a step of a sequence: id, start, end
	id       engines.SequenceID
	start    bool
	end      bool
	stale    bool                                // a step of a broken sequence: the worker ends the shadow's sequence and skips it
	copied   bool                                // the primary's outputs are in outs
	enc      func(outputs []bridge.Tensor) error // the codec's encoder
	encode   func(outputs []bridge.Tensor) error // j.encodeThenCopy, bound once
	compare  func(outputs []bridge.Tensor) error // j.compareOutputs, bound once

	// set by the worker for compareOutputs, and filled by it
	shadowOuts []bridge.IOInfo // the shadow's output signature
	diffs      []outputDiff
	cmpErr     error
}

func newShadowJob() *shadowJob {
	j := &shadowJob{}
	j.encode = j.encodeThenCopy
	j.compare = j.compareOutputs
	return j
}

// sample decides whether the request m serves, with run options opts, is shadowed. When it is,
// it returns a job (the caller passes the encoder through job.wrap and hands the job to offer
// after the run) and seeds opts when the request did not: both sides then draw the same
// samples. A request not sampled costs one call of the traffic policy's Shadow and allocates
// nothing.
func (sh *shadows) sample(m Model, opts *engines.RunOptions) *shadowJob {
	version, rate, ok := sh.choose(m.Name())
	if !ok || rate <= 0 || version == "" || version == m.Version() {
		return nil
	}
	seq := opts.Sequence.Store != nil
	if rate < 1 {
		var u uint64
		if seq {
			u = sequenceKeyHash(opts.Sequence.ID)
		} else {
			u = rand.Uint64()
		}
		if float64(u>>11)*(1.0/(1<<53)) >= rate {
			return nil
		}
	}
	var reserved time.Duration
	if sh.budget != nil {
		var ok bool
		if reserved, ok = sh.budget.take(); !ok {
			// The CPU budget is spent: dropped before anything is copied or seeded.
			k := shadowKey{m.Name(), m.Version(), version}
			sh.triple(k).drop(dropBudget)
			if seq {
				sh.dropped(k, opts.Sequence.ID, opts.Sequence.End)
			}
			return nil
		}
	}
	j := sh.jobs.Get().(*shadowJob)
	j.reserved = reserved
	j.key = shadowKey{m.Name(), m.Version(), version}
	if !opts.Seeded {
		opts.Seed, opts.Seeded = rand.Uint64(), true
	}
	j.seed = opts.Seed
	j.seq = seq
	if seq {
		j.id, j.start, j.end = opts.Sequence.ID, opts.Sequence.Start, opts.Sequence.End
	}
	j.names, j.inNames = j.names[:0], j.inNames[:0]
	for _, o := range m.Outputs() {
		j.names = append(j.names, o.Name)
	}
	for _, in := range m.Inputs() {
		j.inNames = append(j.inNames, in.Name)
	}
	return j
}

// sequenceKeyHash maps a sequence ID to a uniform 64-bit value (FNV-1a over its kind and
// value, then splitmix64's finalizer): a sequence's sampling decision is the same at every
// step and on every replica.
func sequenceKeyHash(id engines.SequenceID) uint64 {
	h := uint64(14695981039346656037)
	if id.Str != "" {
		h ^= 's'
		h *= 1099511628211
		for i := 0; i < len(id.Str); i++ {
			h ^= uint64(id.Str[i])
			h *= 1099511628211
		}
	} else {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], id.Num)
		h ^= 'n'
		h *= 1099511628211
		for _, c := range b {
			h ^= uint64(c)
			h *= 1099511628211
		}
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	return h ^ h>>31
}

// wrap returns the callback the primary runs with: enc, then the copy of the outputs.
func (j *shadowJob) wrap(enc func([]bridge.Tensor) error) func([]bridge.Tensor) error {
	j.enc = enc
	return j.encode
}

func (j *shadowJob) encodeThenCopy(outputs []bridge.Tensor) error {
	if err := j.enc(outputs); err != nil {
		return err
	}
	j.outs = copyTensors(j.outs, outputs)
	j.copied = true
	return nil
}

// copyTensors copies src into dst's reused buffers.
func copyTensors(dst, src []bridge.Tensor) []bridge.Tensor {
	if cap(dst) < len(src) {
		dst = append(dst[:cap(dst)], make([]bridge.Tensor, len(src)-cap(dst))...)
	}
	dst = dst[:len(src)]
	for i, t := range src {
		d := &dst[i]
		d.DType = t.DType
		if t.Data == nil && t.Shape == nil {
			d.Shape, d.Data = nil, nil // a state input of a sequence: the shadow supplies its own
			continue
		}
		d.Shape = append(d.Shape[:0], t.Shape...)
		d.Data = append(d.Data[:0], t.Data...)
	}
	return dst
}

// offer hands the job of a request the primary has answered (err: its outcome; inputs: still
// the request's) to a worker's queue: copied when the primary succeeded, dropped and counted
// when the queue is full. It never waits.
func (sh *shadows) offer(j *shadowJob, inputs []bridge.Tensor, err error) {
	if err != nil || !j.copied {
		sh.refund(j)
		sh.put(j)
		return
	}
	q := sh.queues[0]
	if n := len(sh.queues); n > 1 {
		if j.seq {
			q = sh.queues[sequenceKeyHash(j.id)%uint64(n)]
		} else {
			q = sh.queues[rand.Uint64()%uint64(n)]
		}
	}
	if j.seq {
		j.stale = sh.stale(j)
	}
	if !j.stale {
		j.inputs = copyTensors(j.inputs, inputs)
	}
	select {
	case q <- j:
		return
	default:
	}
	sh.triple(j.key).drop(dropQueueFull)
	if j.seq {
		sh.dropped(j.key, j.id, j.end)
	}
	sh.refund(j)
	sh.put(j)
}

// refund gives the budget back the reservation of job j, not run.
func (sh *shadows) refund(j *shadowJob) {
	if sh.budget != nil {
		sh.budget.refund(j.reserved)
	}
}

func (sh *shadows) put(j *shadowJob) {
	j.reserved = 0
	j.enc, j.copied, j.seq, j.stale, j.id, j.cmpErr, j.shadowOuts = nil, false, false, false, engines.SequenceID{}, nil, nil
	sh.jobs.Put(j)
}

// stale reports whether step j belongs to a sequence a dropped step has broken on the shadow
// (a start repairs it: the shadow begins again from zero, as the primary does).
func (sh *shadows) stale(j *shadowJob) bool {
	if sh.nBroken.Load() == 0 {
		return false
	}
	k := shadowSeqKey{j.key.model, j.key.shadow, j.id}
	sh.brokenMu.Lock()
	defer sh.brokenMu.Unlock()
	if _, ok := sh.broken[k]; !ok {
		return false
	}
	if j.start || j.end {
		delete(sh.broken, k)
		sh.nBroken.Store(int32(len(sh.broken)))
		return !j.start
	}
	sh.broken[k] = time.Now()
	return true
}

// dropped records that a step (id, end) of a sequence was dropped: the shadow's state of it no longer
// follows the primary's until the sequence restarts (a dropped end leaves nothing to follow;
// the shadow's idle timeout drops its copy).
func (sh *shadows) dropped(key shadowKey, id engines.SequenceID, end bool) {
	k := shadowSeqKey{key.model, key.shadow, id}
	sh.brokenMu.Lock()
	defer sh.brokenMu.Unlock()
	if end {
		delete(sh.broken, k)
	} else {
		if len(sh.broken) >= maxShadowBroken {
			now := time.Now()
			for bk, t := range sh.broken {
				if now.Sub(t) > shadowBrokenAge {
					delete(sh.broken, bk)
				}
			}
		}
		if len(sh.broken) < maxShadowBroken {
			sh.broken[k] = time.Now()
		}
	}
	sh.nBroken.Store(int32(len(sh.broken)))
}

// endStale ends the shadow's copy of the broken sequence of job j: its later steps find no
// sequence and are skipped until it starts again.
func (sh *shadows) endStale(j *shadowJob) {
	m, err := sh.s.reg.Acquire(j.key.model, j.key.shadow)
	if err != nil {
		return
	}
	defer m.Release()
	if seqs := sequencesOf(m); seqs != nil {
		endSequence(seqs, j.id)
	}
}

// endSequence ends sequence id of seqs when it is live.
func endSequence(seqs *engines.Sequences, id engines.SequenceID) {
	if q, err := seqs.Begin(id, false); err == nil { // unknown: nothing to end
		seqs.Finish(q, true)
	}
}

// shadowSequenceShare is the share of the shadow version's max_sequences its shadow may take:
// the rest stays for the version's own traffic.
const shadowSequenceShare = 2 // 1/2

// sequencesFull reports whether the shadow version m keeps as many sequences as the shadow
// may start there (half its max_sequences; its own traffic's count too, which this cannot
// tell apart).
func sequencesFull(m Model, seqs *engines.Sequences) bool {
	limit := engines.DefaultMaxSequences
	if r, ok := m.(servingReporter); ok {
		if sv, ok := r.Serving(); ok && sv.Sequence != nil && sv.Sequence.MaxSequences > 0 {
			limit = sv.Sequence.MaxSequences
		}
	}
	return seqs.Len() >= max(limit/shadowSequenceShare, 1)
}

func (sh *shadows) work(queue chan *shadowJob) {
	defer sh.wg.Done()
	for {
		// Idle: wait for a job (the one wake-up a sampled request may cost the primary).
		select {
		case j := <-queue:
			sh.handle(j)
		case <-sh.s.stop:
			return
		}
		// Busy: the worker does not wait on the queue, so offering a job wakes nobody; it
		// comes back every shadowPoll and runs what has queued meanwhile, yielding to the
		// runnable goroutines (the primary's) before each run, until a round finds none.
		for {
			select {
			case <-time.After(shadowPoll):
			case <-sh.s.stop:
				return
			}
			n := 0
		drain:
			for {
				select {
				case j := <-queue:
					runtime.Gosched()
					sh.handle(j)
					n++
				default:
					break drain
				}
			}
			if n == 0 {
				break
			}
		}
	}
}

// shadowPoll is how often a busy shadow worker looks at its queue: the sampled requests of
// that time wait for one wake-up rather than each paying its own. The queue must hold what
// arrives in that time (DefaultShadowQueueLen at 64k sampled requests per second).
const shadowPoll = time.Millisecond

// handle runs job j (or skips it, for a stale step) and charges the CPU budget its time.
func (sh *shadows) handle(j *shadowJob) {
	t0 := time.Now()
	if j.stale {
		sh.endStale(j)
		sh.triple(j.key).count(resultSkipped)
	} else {
		sh.run(j)
	}
	if sh.budget != nil {
		sh.budget.charge(time.Since(t0), j.reserved)
	}
	sh.put(j)
}

// Results of a shadow request (metrics.ShadowResults' order).
const (
	resultCompared = iota
	resultDropped
	resultError
	resultSkipped
)

// run runs job j on its shadow version and records the comparison.
func (sh *shadows) run(j *shadowJob) {
	t := sh.triple(j.key)
	m, err := sh.s.reg.Acquire(j.key.model, j.key.shadow)
	if err != nil {
		t.fail(fmt.Errorf("shadow %s@%s: %w", j.key.model, j.key.shadow, err))
		return
	}
	defer m.Release()
	if ok, reason := m.Ready(); !ok {
		t.fail(fmt.Errorf("shadow %s@%s is not ready: %s", j.key.model, j.key.shadow, reason))
		return
	}
	if err := shadowFits(m, j); err != nil {
		t.fail(err)
		return
	}
	opts := engines.RunOptions{Priority: lowestPriority(m), Seed: j.seed, Seeded: true}
	if j.seq {
		seqs := sequencesOf(m)
		if seqs == nil {
			t.fail(fmt.Errorf("shadow %s@%s keeps no sequences; the primary %s does", j.key.model, j.key.shadow, j.key.primary))
			return
		}
		if j.start && sequencesFull(m, seqs) {
			endSequence(seqs, j.id) // a copy left from before: its later steps must not use it
			t.count(resultSkipped)
			return
		}
		opts.Sequence = engines.SequenceStep{Store: seqs, ID: j.id, Start: j.start, End: j.end}
	}
	j.diffs, j.shadowOuts = j.diffs[:0], m.Outputs()
	ctx, cancel := context.WithTimeout(sh.s.runCtx, shadowRunTimeout)
	err = m.Do(ctx, j.inputs, opts, j.compare)
	cancel()
	if err == nil {
		err = j.cmpErr
	}
	switch {
	case err == nil:
		t.record(j.diffs, sh.metrics)
	case errors.Is(err, engines.ErrOverloaded):
		t.drop(dropOverloaded)
	case j.seq && (errors.Is(err, engines.ErrUnknownSequence) || errors.Is(err, engines.ErrSequenceLimit)):
		t.count(resultSkipped)
	default:
		t.fail(fmt.Errorf("shadow %s@%s: %w", j.key.model, j.key.shadow, err))
	}
}

// lowestPriority is the lowest priority level of m's queue (0, the default level, when m does
// not say how it serves).
func lowestPriority(m Model) int {
	if r, ok := m.(servingReporter); ok {
		if sv, ok := r.Serving(); ok {
			return max(sv.PriorityLevels, 1)
		}
	}
	return 0
}

// shadowFits checks that the shadow version takes the primary's inputs.
func shadowFits(m Model, j *shadowJob) error {
	ins := m.Inputs()
	if len(ins) != len(j.inputs) {
		return fmt.Errorf("shadow %s@%s has %d inputs, the primary %s has %d", j.key.model, j.key.shadow, len(ins), j.key.primary, len(j.inputs))
	}
	for k, in := range ins {
		if k < len(j.inNames) && in.Name != j.inNames[k] {
			return fmt.Errorf("shadow %s@%s: input %d is %q, the primary's is %q", j.key.model, j.key.shadow, k, in.Name, j.inNames[k])
		}
		t := j.inputs[k]
		if t.Data == nil && t.Shape == nil {
			continue
		}
		if in.DType != t.DType {
			return fmt.Errorf("shadow %s@%s: input %q is %s, the primary %s sent %s", j.key.model, j.key.shadow, in.Name, in.DType, j.key.primary, t.DType)
		}
	}
	return nil
}

// close waits for the shadow workers once the server stops (s.stop closed, the runs'
// context cancelled).
func (sh *shadows) close(log *zap.Logger) {
	if sh == nil {
		return
	}
	done := make(chan struct{})
	go func() { sh.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(shadowRunTimeout):
		log.Warn("shadow workers still running after shutdown")
	}
}
