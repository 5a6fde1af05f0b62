package engines

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"sync/atomic"
	"time"

	"github.com/policyd/policyd/bridge"
)

// Deadlines (docs/engine.md, Deadlines). A request may carry a deadline (RunOptions.Deadline):
// the queue serves it before the requests of its level without one, earliest deadline first,
// and it runs only if it can still finish in time. It is checked twice against the version's
// expected service time (Stats.ExpectedService): when it arrives (Pool.Do, Batcher.Do) and
// when a worker or batch former takes it from the queue. A request that fails a check is not
// run: Do returns a *DeadlineError at once, and the caller answers it some other way (package
// server's fallbacks, or 504).

// ErrDeadline is what a *DeadlineError matches (errors.Is).
var ErrDeadline = errors.New("deadline cannot be met")

// DeadlineError is returned by Do for a request that was not run because its deadline had
// passed or could not be met.
type DeadlineError struct {
	// Left is the time left to the deadline when it was checked (<= 0: it had passed).
	Left time.Duration
	// Expected is the version's expected service time for the request's batch then; 0
	// when the version has not measured one yet (only a deadline passed fails then).
	Expected time.Duration
	// Queued: checked when the request was taken from the queue (else on arrival).
	Queued bool
	// Ahead is, on arrival at a pool, the requests queued before it when Expected counts
	// their runs too (Expected is then the expected time to its answer); else 0.
	Ahead int
	// Last holds the outputs of the sequence's last step, when the request was a step of a
	// sequence whose store keeps them (Sequences.KeepLast) and one ran before: a copy, the
	// caller's to keep.
	Last []bridge.Tensor
}

// Passed reports whether the deadline had passed when checked.
func (e *DeadlineError) Passed() bool { return e.Left <= 0 }

// Reason is "passed" or "infeasible": the metric label of why it was not run.
func (e *DeadlineError) Reason() string {
	if e.Passed() {
		return "passed"
	}
	return "infeasible"
}

func (e *DeadlineError) Error() string {
	if e.Passed() {
		return "deadline passed: " + e.Detail()
	}
	return "deadline cannot be met: " + e.Detail()
}

// Detail is the message without its head: how long ago it passed, or the expected service
// time and the time left, and when it was checked.
func (e *DeadlineError) Detail() string {
	where := "on arrival"
	if e.Queued {
		where = "while queued"
	}
	if e.Passed() {
		return fmt.Sprintf("%s ago, %s", fmtDur(-e.Left), where)
	}
	if e.Ahead > 0 {
		return fmt.Sprintf("expected time to answer %s (%d queued ahead), %s left %s", fmtDur(e.Expected), e.Ahead, fmtDur(e.Left), where)
	}
	return fmt.Sprintf("expected service time %s, %s left %s", fmtDur(e.Expected), fmtDur(e.Left), where)
}

func (e *DeadlineError) Unwrap() error { return ErrDeadline }

// fmtDur writes d in µs below 10ms, else in ms with one decimal.
func fmtDur(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%dµs", d.Microseconds())
	}
	return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
}

// checkDeadline checks deadline dl (ns since the epoch; 0: none) of a request of rows rows
// against the expected service time of s at now: nil when it can be met.
func checkDeadline(s *Stats, dl int64, rows int, now time.Time, queued bool) *DeadlineError {
	if dl == 0 {
		return nil
	}
	left := time.Duration(dl - now.UnixNano())
	exp := s.ExpectedService(rows)
	if left <= 0 || exp > left {
		return &DeadlineError{Left: left, Expected: exp, Queued: queued}
	}
	return nil
}

// checkArrival is checkDeadline on arrival, with ahead requests queued before this one
// (prioQueue.ahead): they run first, perWave at a time (a pool's instances; a batcher's
// instances × MaxBatchSize), so the answer is expected after ahead/perWave runs of runRows
// rows more than the request's own (runRows: the rows of the run it will be part of, its own
// without a batcher). A request that cannot make it is refused at once, so that its caller's
// fallback answers it now rather than when the queue timer gives up on it just before the
// deadline. The estimate counts neither the runs in progress nor the sizes of the requests
// ahead; the check when the request is taken from the queue stays the one that decides.
func checkArrival(s *Stats, dl int64, runRows int, now time.Time, ahead, perWave int) *DeadlineError {
	if ahead <= 0 || perWave <= 0 {
		return checkDeadline(s, dl, runRows, now, false)
	}
	left := time.Duration(dl - now.UnixNano())
	exp := s.ExpectedService(runRows)
	wait := exp * time.Duration(1+ahead/perWave)
	if left <= 0 || wait > left {
		e := &DeadlineError{Left: left, Expected: exp}
		if left > 0 && exp <= left {
			e.Expected, e.Ahead = wait, ahead
		}
		return e
	}
	return nil
}

// deadlineNano is opts.Deadline in ns since the epoch, 0 when it has none.
func deadlineNano(opts *RunOptions) int64 {
	if opts.Deadline.IsZero() {
		return 0
	}
	return opts.Deadline.UnixNano()
}

// serviceBuckets: batch sizes 1, 2, 3-4, 5-8, ... 2^15+1 and above.
const serviceBuckets = 17

func serviceBucket(rows int) int {
	if rows <= 1 {
		return 0
	}
	return min(bits.Len(uint(rows-1)), serviceBuckets-1)
}

// serviceEWMA is the exponentially weighted mean and mean deviation of the service time of
// one bucket of batch sizes (TCP's smoothed RTT and its variation, with gains 1/8 and 1/4),
// in ns, with the fastest run seen and when the last was recorded; races between recorders
// lose an update, never corrupt one.
type serviceEWMA struct{ mean, dev, floor, last atomic.Int64 }

// serviceHalfLife: while no run of a bucket is measured, the part of its expected service
// time above the fastest run seen halves every serviceHalfLife. Without it one slow run (a
// preempted thread) could make every request infeasible, so that nothing runs and the
// estimate never comes down again; with it a version that refuses everything for its
// deadlines runs a request again after a few half-lives, and that run corrects the estimate.
const serviceHalfLife = 25 * time.Millisecond

func (e *serviceEWMA) add(ns int64) {
	e.last.Store(time.Now().UnixNano())
	if f := e.floor.Load(); f == 0 || ns < f {
		e.floor.Store(max(ns, 1))
	}
	m := e.mean.Load()
	if m == 0 {
		e.mean.Store(max(ns, 1))
		e.dev.Store(ns / 2)
		return
	}
	d := ns - m
	if d < 0 {
		d = -d
	}
	dev := e.dev.Load()
	e.dev.Store(dev + (d-dev)/4)
	e.mean.Store(max(m+(ns-m)/8, 1))
}

// expected is mean + 2 deviations, the service time a request plans with; above the fastest
// run it decays while no run is measured (serviceHalfLife).
func (e *serviceEWMA) expected() time.Duration {
	m := e.mean.Load()
	if m == 0 {
		return 0
	}
	exp := m + 2*e.dev.Load()
	if idle := time.Now().UnixNano() - e.last.Load(); idle > int64(serviceHalfLife) {
		f := min(e.floor.Load(), exp)
		exp = f + int64(float64(exp-f)*math.Exp2(-float64(idle)/float64(serviceHalfLife)))
	}
	return time.Duration(exp)
}

// ExpectedService is the service time a run of rows rows is expected to take on this version
// (its engine run and output callbacks): the smoothed mean plus two mean deviations of the
// runs of the same bucket of batch sizes (1, 2, 3-4, 5-8, ...), or of the nearest smaller
// bucket measured; 0 before any run was measured.
func (s *Stats) ExpectedService(rows int) time.Duration {
	if s == nil {
		return 0
	}
	for b := serviceBucket(rows); b >= 0; b-- {
		if d := s.service[b].expected(); d > 0 {
			return d
		}
	}
	return 0
}

// recordService feeds a measured run of rows rows into the expected service time.
func (s *Stats) recordService(rows int, d time.Duration) {
	s.service[serviceBucket(rows)].add(int64(d))
}

// waitDeadline is wait for a ticket with a deadline: it also gives up on the ticket while it
// is still queued once the deadline can no longer be met (the deadline less the expected
// service time when it was queued), answering a *DeadlineError then, so that a request stuck
// behind others is answered by its deadline, not when a worker reaches it.
func (t *ticket) waitDeadline(ctx context.Context, st *Stats) (err error, cancelled bool) {
	if t.deadline == 0 {
		return t.wait(ctx)
	}
	exp := st.ExpectedService(t.rows)
	timer := time.NewTimer(max(time.Duration(t.deadline-time.Now().UnixNano())-exp, 0))
	defer timer.Stop()
	select {
	case err := <-t.done:
		return err, false
	case <-ctx.Done():
		if t.state.CompareAndSwap(jobQueued, jobCancelled) {
			var err error = ctx.Err()
			if now := time.Now().UnixNano(); errors.Is(err, context.DeadlineExceeded) && now >= t.deadline-int64(exp) {
				// The context's deadline is the request's (a gRPC call's): a deadline error,
				// whichever of the two fired first.
				err = &DeadlineError{Left: time.Duration(t.deadline - now), Expected: exp, Queued: true}
			}
			endQueue(t.queue, err)
			t.span, t.queue, t.info = nil, nil, nil
			return err, true
		}
		return <-t.done, false
	case <-timer.C:
		if t.state.CompareAndSwap(jobQueued, jobCancelled) {
			de := &DeadlineError{Left: time.Duration(t.deadline - time.Now().UnixNano()), Expected: exp, Queued: true}
			endQueue(t.queue, de)
			t.span, t.queue, t.info = nil, nil, nil
			return de, true
		}
		return <-t.done, false
	}
}
