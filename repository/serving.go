package repository

import (
	"slices"
	"time"

	"github.com/policyd/policyd/engines"
)

// Serving is how a loaded version serves requests: its effective settings as the runner was
// built with them. The server's model configuration document (Triton's ModelConfig) is made
// from it; it changes only when a reload rebuilds the version.
type Serving struct {
	// Backend is the backend its engines run on ("cpu", "cuda", "tensorrt").
	Backend string
	// Devices are the GPU ordinals of its engines, one engine each; nil on the cpu backend.
	Devices []int
	// Instances is the number of execution contexts per engine (ModelSpec.Instances).
	Instances int
	// Batched reports whether a dynamic batcher forms batches in front of the pool: batching
	// is on (Desired.Batching) and the model is batchable (engines.Batchable).
	Batched bool
	// MaxBatchSize is the most rows of one batch the batcher forms, and the engines' batch
	// profile maximum; set whether or not batching is on.
	MaxBatchSize int
	// MaxQueueDelay and PreferredBatchSizes are the batcher's (meaningful when Batched).
	MaxQueueDelay       time.Duration
	PreferredBatchSizes []int
	// PriorityLevels (0: one level) and DefaultPriorityLevel (0: the lowest) order the queue.
	PriorityLevels, DefaultPriorityLevel int
	// QueueLen is the capacity of the version's queue (Desired.QueueLen, or its default of
	// 64 per instance).
	QueueLen int
	// Sequence is the sequence spec, its defaults resolved; nil without sequences.
	Sequence *engines.SequenceSpec
}

// Serving reports how the version serves; ok is false for a version that is not loaded.
func (v *Version) Serving() (s Serving, ok bool) {
	if v.engine == nil {
		return Serving{}, false
	}
	set := v.set
	instances := max(set.instances, 1)
	queueLen := set.queueLen
	if queueLen <= 0 {
		queueLen = 64 * instances * max(len(v.engines), 1) // engines.PoolOptions' default
	}
	var seq *engines.SequenceSpec
	if set.sequence != nil {
		c := *set.sequence
		c.States = slices.Clone(c.States)
		seq = &c
	}
	return Serving{
		Backend:              v.Backend(),
		Devices:              v.Devices(),
		Instances:            instances,
		Batched:              set.batching && engines.Batchable(v.engine.Batchable(), v.engine.Inputs(), v.engine.Outputs()),
		MaxBatchSize:         set.maxBatch,
		MaxQueueDelay:        set.delay,
		PreferredBatchSizes:  slices.Clone(set.preferred),
		PriorityLevels:       set.levels,
		DefaultPriorityLevel: set.defLevel,
		QueueLen:             queueLen,
		Sequence:             seq,
	}, true
}
