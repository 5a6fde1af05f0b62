package server

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// The CPU budget of shadow evaluation (docs/rollout.md, Shadow evaluation, The CPU budget).
// A bounded queue alone does not keep the shadow off the primary when the CPU is the
// bottleneck: a worker that always finds work runs it, and every shadow run takes CPU time the
// primary's requests would have used. The budget bounds the shadow to a share of the machine:
// a token bucket holding CPU time, refilled by wall time at share × GOMAXPROCS seconds per
// second, up to shadowBudgetBurst of that, and charged after each shadow run with the
// time it took (engine run and comparison, measured as wall time on the worker: the engine
// runs a shadow request on one context, so wall time bounds the CPU it used from above,
// queueing on the shadow version included). A sampled request that finds the bucket empty is
// dropped in sample, before anything is copied, and counted (result dropped, reason budget).
// A run is admitted while any time is left, and then reserves what shadow runs have taken
// lately (a moving average): the runs admitted while others are still queued or running are
// paid for at once, so a burst of sampled requests cannot queue far more than the budget
// before the first of them is charged. When the run ends its measured time replaces the
// reservation (a run dropped after it was admitted gives it back); the bucket may go into
// debt by what the reservations underestimated, and refills before admitting again.

// DefaultShadowCPUShare is the share of the machine (of GOMAXPROCS CPU-seconds per second)
// shadow work may use when Options.ShadowCPUShare is 0.
const DefaultShadowCPUShare = 0.025

// shadowBudgetBurst is how much wall time of refill the bucket holds: what a quiet moment
// leaves unused may be spent at once, never more. Short, so that the share holds over any
// stretch longer than a few of these (a burst of a second would let the shadow take a core
// for a fifth of a second at 0.1 of 2 CPUs) and a budget drop follows the load closely.
const shadowBudgetBurst = 50 * time.Millisecond

// shadowBudget is the token bucket. It is safe for concurrent use.
type shadowBudget struct {
	now  func() time.Time // time.Now; a test injects its own clock
	rate float64          // nanoseconds of shadow time earned per nanosecond of wall time
	cap  float64          // most nanoseconds held

	// dry is when (ns since the epoch) a bucket found empty holds time again at the earliest:
	// until then take refuses with a clock read and an atomic load, without the lock, so that
	// the requests the budget drops under load cost the primary no shared lock.
	dry atomic.Int64

	mu     sync.Mutex
	tokens float64 // nanoseconds of shadow time left; negative: in debt
	last   time.Time
	est    float64 // moving average of a run's nanoseconds: what an admitted run reserves
}

// newShadowBudget returns the budget of share (0 < share ≤ 1) of procs CPUs, full; nil (no
// budget) when share ≥ 1.
func newShadowBudget(share float64, procs int, now func() time.Time) *shadowBudget {
	if share >= 1 {
		return nil
	}
	if share <= 0 {
		share = DefaultShadowCPUShare
	}
	if procs <= 0 {
		procs = runtime.GOMAXPROCS(0)
	}
	if now == nil {
		now = time.Now
	}
	r := share * float64(procs)
	b := &shadowBudget{now: now, rate: r, cap: r * float64(shadowBudgetBurst), last: now()}
	b.tokens = b.cap
	return b
}

// refill adds the time earned since the last call; b.mu is held.
func (b *shadowBudget) refill() {
	t := b.now()
	if d := t.Sub(b.last); d > 0 {
		b.tokens = min(b.tokens+float64(d)*b.rate, b.cap)
		b.last = t
	}
}

// take reports whether a shadow run may be admitted now (any time left in the bucket) and, when
// it is, reserves the time a run takes on average; the caller passes that reservation back to
// charge (the run ended) or refund (it was dropped).
func (b *shadowBudget) take() (reserved time.Duration, ok bool) {
	if b.now().UnixNano() < b.dry.Load() {
		return 0, false
	}
	b.mu.Lock()
	b.refill()
	if ok = b.tokens > 0; ok {
		b.tokens -= b.est
		reserved = time.Duration(b.est)
	}
	b.markDry()
	b.mu.Unlock()
	return reserved, ok
}

// markDry sets dry from the tokens; b.mu is held, and refill has just run.
func (b *shadowBudget) markDry() {
	if b.tokens > 0 {
		b.dry.Store(0)
		return
	}
	// The refill brings the tokens above 0 just after -tokens/rate of wall time.
	b.dry.Store(b.last.UnixNano() + int64(-b.tokens/b.rate) + 1)
}

// charge settles a run admitted with reservation reserved that took d.
func (b *shadowBudget) charge(d, reserved time.Duration) {
	b.mu.Lock()
	b.refill()
	b.tokens -= float64(d - reserved)
	if b.est == 0 {
		b.est = float64(d)
	} else {
		b.est += (float64(d) - b.est) / 8
	}
	b.markDry()
	b.mu.Unlock()
}

// refund gives back the reservation of a run admitted and then not run.
func (b *shadowBudget) refund(reserved time.Duration) {
	if reserved == 0 {
		return
	}
	b.mu.Lock()
	b.tokens = min(b.tokens+float64(reserved), b.cap)
	b.markDry()
	b.mu.Unlock()
}
