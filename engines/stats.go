package engines

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/policyd/policyd/bridge"
)

// MaxStatsBatchSize is the largest batch size Stats keeps in its fixed array; larger batches
// go to a small map (one allocation the first time a size is seen).
const MaxStatsBatchSize = 256

// Duration is a count of events and their cumulative duration, the unit of Triton's
// statistics extension.
type Duration struct {
	Count uint64
	NS    uint64
}

type durationStat struct{ count, ns atomic.Uint64 }

func (d *durationStat) add(n uint64, ns int64) {
	if ns < 0 {
		ns = 0
	}
	d.count.Add(n)
	d.ns.Add(n * uint64(ns))
}

func (d *durationStat) load() Duration { return Duration{Count: d.count.Load(), NS: d.ns.Load()} }

type batchStat struct{ input, infer, output durationStat }

// Stats are the statistics of one model version (Triton's statistics extension), kept with
// atomics: recording takes no lock and allocates nothing (but for the first batch of a size
// above MaxStatsBatchSize). The zero value is ready to use; a nil *Stats records nothing. Safe
// for concurrent use.
//
// The request stages are recorded once per request: Queue from the request's enqueue to the
// moment a batch former or worker takes it; ComputeInput gathering a batch's inputs (0 for a
// request run alone); ComputeInfer the engine run; ComputeOutput the output callbacks (for a
// batch, all of its requests' encoding). A request of a batch is charged the durations of its
// batch, as Triton does. Batch statistics are recorded once per engine run, by its size in rows.
// The Observers a VersionObserver returns at load receive the same values as they are
// recorded (the Prometheus histograms of package metrics).
type Stats struct {
	// Batched says that inputs share a batch dimension 0: a run's batch size is then its
	// first input's dimension 0, else 1.
	Batched bool

	success, fail, queue, input, infer, output durationStat
	inferences, executions                     atomic.Uint64
	lastInference                              atomic.Int64 // ms since the epoch
	batches                                    [MaxStatsBatchSize + 1]batchStat
	large                                      sync.Map // int → *batchStat, sizes above MaxStatsBatchSize
	obs                                        atomic.Pointer[Observers]
	service                                    [serviceBuckets]serviceEWMA // deadline.go
}

// SetObservers makes the stats feed o (nil: nothing) besides their own counters.
func (s *Stats) SetObservers(o *Observers) {
	if s != nil {
		s.obs.Store(o)
	}
}

// observe records d, in seconds, n times into o (nil: nothing).
func observe(o Observer, n int, d time.Duration) {
	if o == nil {
		return
	}
	sec := max(d, 0).Seconds()
	for range n {
		o.Observe(sec)
	}
}

// StatsSnapshot is a copy of Stats at one moment.
type StatsSnapshot struct {
	LastInference  int64 // ms since the epoch; 0 before the first success
	InferenceCount uint64
	ExecutionCount uint64
	Success        Duration
	Fail           Duration
	Queue          Duration
	ComputeInput   Duration
	ComputeInfer   Duration
	ComputeOutput  Duration
	Batches        []BatchStats // sizes ascending, only those run
}

// BatchStats are the statistics of the engine runs of one batch size.
type BatchStats struct {
	BatchSize     int
	ComputeInput  Duration
	ComputeInfer  Duration
	ComputeOutput Duration
}

// RecordRequest records the end of one request: success or failure and how long it took in the
// handler. end is when it ended (last_inference is set from it on success).
func (s *Stats) RecordRequest(ok bool, d time.Duration, end time.Time) {
	if s == nil {
		return
	}
	if ok {
		s.success.add(1, int64(d))
		s.lastInference.Store(end.UnixMilli())
		return
	}
	s.fail.add(1, int64(d))
}

// recordQueue records n requests that waited d in a queue.
func (s *Stats) recordQueue(n int, d time.Duration) {
	if s == nil {
		return
	}
	s.queue.add(uint64(n), int64(d))
	if o := s.obs.Load(); o != nil {
		observe(o.Queue, n, d)
	}
}

// recordRun records one successful engine run of rows rows serving reqs requests: the
// durations of gathering its inputs, of the run and of the output callbacks. A failed run is
// not recorded (its requests count as failures in RecordRequest).
func (s *Stats) recordRun(reqs, rows int, input, infer, output time.Duration) {
	if s == nil {
		return
	}
	s.input.add(uint64(reqs), int64(input))
	s.infer.add(uint64(reqs), int64(infer))
	s.output.add(uint64(reqs), int64(output))
	b := s.batch(rows)
	b.input.add(1, int64(input))
	b.infer.add(1, int64(infer))
	b.output.add(1, int64(output))
	s.executions.Add(1)
	s.inferences.Add(uint64(rows))
	s.recordService(rows, infer+output)
	if o := s.obs.Load(); o != nil {
		observe(o.ComputeInput, reqs, input)
		observe(o.ComputeInfer, reqs, infer)
		observe(o.ComputeOutput, reqs, output)
		if o.BatchSize != nil {
			o.BatchSize.Observe(float64(rows))
		}
		if o.Inferences != nil {
			o.Inferences.Add(float64(rows))
		}
		if o.Executions != nil {
			o.Executions.Add(1)
		}
	}
}

// rowsOf is the batch size of a run of inputs.
func (s *Stats) rowsOf(inputs []bridge.Tensor) int {
	if !s.Batched || len(inputs) == 0 || len(inputs[0].Shape) == 0 || inputs[0].Shape[0] < 1 {
		return 1
	}
	return int(inputs[0].Shape[0])
}

func (s *Stats) batch(rows int) *batchStat {
	if rows >= 0 && rows <= MaxStatsBatchSize {
		return &s.batches[rows]
	}
	if b, ok := s.large.Load(rows); ok {
		return b.(*batchStat)
	}
	b, _ := s.large.LoadOrStore(rows, new(batchStat))
	return b.(*batchStat)
}

// Snapshot copies the statistics. Counters are read one by one while requests may run, so a
// snapshot taken under load may be off by the requests in flight.
func (s *Stats) Snapshot() StatsSnapshot {
	if s == nil {
		return StatsSnapshot{}
	}
	snap := StatsSnapshot{
		LastInference:  s.lastInference.Load(),
		InferenceCount: s.inferences.Load(),
		ExecutionCount: s.executions.Load(),
		Success:        s.success.load(),
		Fail:           s.fail.load(),
		Queue:          s.queue.load(),
		ComputeInput:   s.input.load(),
		ComputeInfer:   s.infer.load(),
		ComputeOutput:  s.output.load(),
	}
	add := func(size int, b *batchStat) {
		bs := BatchStats{BatchSize: size, ComputeInput: b.input.load(), ComputeInfer: b.infer.load(), ComputeOutput: b.output.load()}
		if bs.ComputeInput.Count|bs.ComputeInfer.Count|bs.ComputeOutput.Count != 0 {
			snap.Batches = append(snap.Batches, bs)
		}
	}
	for i := range s.batches {
		add(i, &s.batches[i])
	}
	var large []int
	s.large.Range(func(k, _ any) bool { large = append(large, k.(int)); return true })
	slices.Sort(large)
	for _, k := range large {
		add(k, s.batch(k))
	}
	return snap
}
