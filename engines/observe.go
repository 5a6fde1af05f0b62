package engines

import (
	"errors"

	"github.com/policyd/policyd/bridge"
)

// Observer receives the values of one histogram (seconds, or rows). prometheus.Observer
// implements it; engines does not import Prometheus.
type Observer interface {
	Observe(float64)
}

// Counter receives the increments of one counter. prometheus.Counter implements it.
type Counter interface {
	Add(float64)
}

// Observers are the histograms and counters a version's runner feeds beside its Stats, resolved
// once per version (label children made at load), so that recording one value is one call
// without a lookup. Nil fields record nothing. The stage histograms get one value per request
// (a request of a batch is charged its batch's durations, as Stats does), BatchSize and the
// counters one per engine run.
type Observers struct {
	Queue, ComputeInput, ComputeInfer, ComputeOutput Observer // seconds
	BatchSize                                        Observer // rows per engine run
	Inferences                                       Counter  // rows served
	Executions                                       Counter  // engine runs
}

// QueueDepth is the number of requests waiting in the pool's queue now.
func (p *Pool) QueueDepth() int { return p.jobs.len() }

// QueueDepth is the number of requests waiting to be formed into a batch now.
func (b *Batcher) QueueDepth() int { return b.queue.len() }

// memoryReporter is a runner whose contexts report their memory.
type memoryReporter interface {
	Memory() (arena, weights uint64, err error)
}

// Memory is the memory of the contexts of the pool the batcher feeds (see Pool.Memory).
func (b *Batcher) Memory() (arena, weights uint64, err error) {
	if m, ok := b.pool.(memoryReporter); ok {
		return m.Memory()
	}
	return 0, 0, nil
}

// memCtx is a context that reports its memory (*bridge.Context; test fakes need not).
type memCtx interface {
	Memory() (bridge.MemoryInfo, error)
}

// Memory is the memory the pool's engines hold (bridge.Context.Memory): arena is the activation
// arenas of every context, weights the engines' weights (counted once per engine) plus every
// context's own weight copies. Safe while the pool serves; 0s before its contexts exist.
func (p *Pool) Memory() (arena, weights uint64, err error) {
	p.ctxMu.Lock()
	ctxs := p.ctxs
	p.ctxMu.Unlock()
	var shared uint64
	for _, c := range ctxs {
		mi, e := c.Memory()
		if errors.Is(e, bridge.ErrClosed) {
			continue // the pool is stopping
		}
		if e != nil {
			err = e
			continue
		}
		arena += mi.ArenaBytes
		weights += mi.ContextWeightBytes
		shared = mi.WeightBytes
	}
	return arena, weights + shared*uint64(max(p.nEngines, 1)), err // each GPU's engine holds its own copy
}
