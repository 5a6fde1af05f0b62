package repository

import (
	"cmp"
	"maps"
	"slices"
	"time"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/engines"
)

// settings are the effective settings of one version; a change of any of them rebuilds it
// (equal). Slices and maps are never modified once made: a settings value is shared by the
// targets and versions made from it.
type settings struct {
	backends  []string // preference order; nil = the library's default
	fallback  bool     // the next backend may serve when one fails
	devices   []int    // the GPU ordinals selected, sorted; nil = every GPU
	instances int
	threads   int
	queueLen  int
	seed      uint64
	batching  bool // a batcher, if the model is batchable
	maxBatch  int
	delay     time.Duration
	preferred []int                 // PreferredBatchSizes, sorted; nil = none
	levels    int                   // priority levels
	defLevel  int                   // default priority level
	sequence  *engines.SequenceSpec // defaults resolved; nil without sequences
	needCache bool                  // Desired.RequireEngineCaches
	params    map[string]string     // ModelSpec.Params over the Default's; nil when none
	actionFb  *ActionFallback       // ModelSpec.ActionFallback
}

// equal reports whether s and o are the same settings: a version loaded with s need not be
// rebuilt for o. An empty list or map equals a nil one.
func (s settings) equal(o settings) bool {
	return slices.Equal(s.backends, o.backends) && s.fallback == o.fallback &&
		slices.Equal(s.devices, o.devices) && s.instances == o.instances && s.threads == o.threads &&
		s.queueLen == o.queueLen && s.seed == o.seed && s.batching == o.batching &&
		s.maxBatch == o.maxBatch && s.delay == o.delay && slices.Equal(s.preferred, o.preferred) &&
		s.levels == o.levels && s.defLevel == o.defLevel && s.sequence.Equal(o.sequence) &&
		s.needCache == o.needCache && maps.Equal(s.params, o.params) && s.actionFb.equal(o.actionFb)
}

// batchProfile is the batch profile (bridge.EngineOptions MinBatch, OptBatch, MaxBatch) of
// the engines of a version whose model has the signature io (the manifest's): min 1, max the
// version's max batch size, opt the largest preferred batch size up to max, else max when
// the batcher forms batches, else 1. A model whose inputs do not all have a dynamic
// dimension 0 (-1) is not batchable and gets no profile (all zero), nor does one whose
// manifest lists no signature.
func (s settings) batchProfile(io artifacts.IO) (lo, opt, hi int) {
	if len(io.Inputs) == 0 {
		return 0, 0, 0
	}
	for _, in := range io.Inputs {
		if len(in.Shape) == 0 || in.Shape[0] != -1 {
			return 0, 0, 0
		}
	}
	opt = 1
	if s.batching {
		opt = s.maxBatch
	}
	for _, n := range s.batcherOptions().PreferredBatchSizes {
		if n <= s.maxBatch {
			opt = n // sorted: the last that fits is the largest
		}
	}
	return 1, opt, s.maxBatch
}

func (s settings) batcherOptions() engines.BatcherOptions {
	return engines.BatcherOptions{MaxBatchSize: s.maxBatch, MaxQueueDelay: s.delay, QueueLen: s.queueLen,
		PreferredBatchSizes: slices.Clone(s.preferred), PriorityLevels: s.levels, DefaultPriorityLevel: s.defLevel}
}

// settingsOf resolves the zero fields of m from d.Default.
func (d *Desired) settingsOf(m ModelSpec) settings {
	s := settings{
		backends:  slices.Clone(m.Backends),
		instances: m.Instances,
		threads:   m.Threads,
		queueLen:  d.QueueLen,
		seed:      d.Seed,
		sequence:  resolveSequence(m.Sequence),
		needCache: d.RequireEngineCaches,
		actionFb:  m.ActionFallback,
	}
	if len(m.Backends) == 0 {
		s.backends = slices.Clone(d.Default.Backends)
	}
	if len(d.Default.Params)+len(m.Params) > 0 {
		s.params = maps.Clone(d.Default.Params)
		if s.params == nil {
			s.params = make(map[string]string, len(m.Params))
		}
		maps.Copy(s.params, m.Params)
	}
	s.fallback = true
	if f := cmp.Or(m.Fallback, d.Default.Fallback); f != nil {
		s.fallback = *f
	}
	devs := m.Devices
	if devs == nil {
		devs = d.Default.Devices
	}
	if len(devs) > 0 {
		s.devices = slices.Sorted(slices.Values(devs))
	}
	if s.instances == 0 {
		s.instances = max(d.Default.Instances, 1)
	}
	if s.threads == 0 {
		s.threads = d.Default.Threads
	}
	s.levels = cmp.Or(m.Batching.PriorityLevels, d.Default.Batching.PriorityLevels)
	s.defLevel = cmp.Or(m.Batching.DefaultPriorityLevel, d.Default.Batching.DefaultPriorityLevel)
	if s.defLevel > max(s.levels, 1) {
		s.defLevel = 0 // refused by validate when set on the model; a Default's applies only where it fits
	}
	// The max and preferred batch sizes also make the batch profile of the engines, so they
	// are resolved with batching off too.
	b, def := m.Batching, d.Default.Batching
	s.maxBatch = cmp.Or(b.MaxBatchSize, def.MaxBatchSize, engines.DefaultMaxBatchSize)
	pref := b.PreferredBatchSizes
	if len(pref) == 0 {
		pref = def.PreferredBatchSizes
	}
	if len(pref) > 0 {
		s.preferred = slices.Sorted(slices.Values(pref))
	}
	if d.Batching {
		s.batching = true
		s.delay = cmp.Or(b.MaxQueueDelay, def.MaxQueueDelay)
	}
	return s
}

// resolveSequence returns a copy of spec with its zero fields set to their defaults; nil for
// nil.
func resolveSequence(spec *engines.SequenceSpec) *engines.SequenceSpec {
	if spec == nil {
		return nil
	}
	out := &engines.SequenceSpec{States: slices.Clone(spec.States), Controls: slices.Clone(spec.Controls), IdleTimeout: spec.IdleTimeout, MaxSequences: spec.MaxSequences}
	if out.IdleTimeout <= 0 {
		out.IdleTimeout = engines.DefaultSequenceIdleTimeout
	}
	if out.MaxSequences <= 0 {
		out.MaxSequences = engines.DefaultMaxSequences
	}
	return out
}
