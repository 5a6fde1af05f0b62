package engines

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// TestQueueEDFWithinLevel: within a level, items with a deadline go first, earliest first
// (ties in arrival order), then items without one in arrival order; a higher level still
// goes before a lower one whatever the deadlines.
func TestQueueEDFWithinLevel(t *testing.T) {
	for _, levels := range []int{1, 3} {
		q := newPrioQueue[int](levels, 16)
		low := levels - 1
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(q.push(1, low))              // no deadline
		must(q.pushDeadline(2, low, 300)) // deadlines 300, 100, 200, 100 (tie: arrival order)
		must(q.pushDeadline(3, low, 100))
		must(q.push(4, low))
		must(q.pushDeadline(5, low, 200))
		must(q.pushDeadline(6, low, 100))
		want := []int{3, 6, 5, 2, 1, 4}
		if levels > 1 {
			must(q.push(7, 0)) // the highest level first, also before deadlines of a lower one
			must(q.pushDeadline(8, 0, 999))
			want = append([]int{8, 7}, want...)
		}
		if got := q.len(); got != len(want) {
			t.Fatalf("levels %d: len %d, want %d", levels, got, len(want))
		}
		var got []int
		for range want {
			v, ok := q.pop()
			if !ok {
				t.Fatal("pop: closed")
			}
			got = append(got, v)
		}
		if !slices.Equal(got, want) {
			t.Errorf("levels %d: popped %v, want %v", levels, got, want)
		}
	}
}

// TestQueueEDFInterleaved: pushes and pops interleaved keep the order, across the parking of
// items without a deadline (resolve), and the capacity counts both kinds.
func TestQueueEDFInterleaved(t *testing.T) {
	full := newPrioQueue[int](1, 2)
	full.push(1, 0)
	full.pushDeadline(2, 0, 5)
	if err, err2 := full.pushDeadline(3, 0, 1), full.push(4, 0); !errors.Is(err, ErrOverloaded) || !errors.Is(err2, ErrOverloaded) {
		t.Fatalf("third item on a level of 2: %v, %v, want ErrOverloaded", err, err2)
	}
	q := newPrioQueue[int](1, 8)
	q.push(1, 0)
	q.push(2, 0)
	q.pushDeadline(10, 0, 50)
	q.pushDeadline(11, 0, 40)
	var got []int
	pop := func() {
		v, ok, _ := q.tryPop()
		if !ok {
			t.Fatal("tryPop: empty")
		}
		got = append(got, v)
	}
	pop()        // 11 (deadline 40), 1 parked
	q.push(3, 0) // after 1 and 2
	q.pushDeadline(13, 0, 45)
	pop() // 13
	pop() // 10
	pop() // 1
	q.pushDeadline(14, 0, 99)
	pop() // 14
	pop() // 2
	pop() // 3
	if want := []int{11, 13, 10, 1, 14, 2, 3}; !slices.Equal(got, want) {
		t.Errorf("popped %v, want %v", got, want)
	}
	if _, ok, _ := q.tryPop(); ok || q.len() != 0 {
		t.Errorf("queue not empty: len %d", q.len())
	}
}

// TestQueueEDFConcurrent: concurrent pushers with and without deadlines and concurrent
// poppers lose nothing and duplicate nothing; each popper sees the deadline items of one
// pusher in deadline order relative to each other when they were queued together.
func TestQueueEDFConcurrent(t *testing.T) {
	for _, levels := range []int{1, 2} {
		const pushers, per = 4, 500
		q := newPrioQueue[int](levels, pushers*per)
		var wg sync.WaitGroup
		for p := range pushers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range per {
					v := p*per + i
					var err error
					if v%2 == 0 {
						err = q.pushDeadline(v, v%levels, int64(rand.IntN(1000)+1))
					} else {
						err = q.push(v, v%levels)
					}
					if err != nil {
						t.Error(err)
					}
				}
			}()
		}
		seen := make(chan int, pushers*per)
		var cw sync.WaitGroup
		for range 3 {
			cw.Add(1)
			go func() {
				defer cw.Done()
				for {
					v, ok := q.pop()
					if !ok {
						return
					}
					seen <- v
				}
			}()
		}
		wg.Wait()
		enginesWaitEmpty(t, q)
		q.close()
		cw.Wait()
		close(seen)
		got := map[int]bool{}
		for v := range seen {
			if got[v] {
				t.Fatalf("levels %d: %d popped twice", levels, v)
			}
			got[v] = true
		}
		if len(got) != pushers*per {
			t.Errorf("levels %d: popped %d items, want %d", levels, len(got), pushers*per)
		}
	}
}

func enginesWaitEmpty(t *testing.T, q *prioQueue[int]) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); q.len() > 0; {
		if time.Now().After(end) {
			t.Fatalf("queue still holds %d", q.len())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestBatcherEDFOrder: requests queued behind a busy worker run earliest deadline first,
// those without a deadline last in arrival order; batches are formed in that order.
func TestBatcherEDFOrder(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 2})
	first := fx.busy(t)
	base := time.Now().Add(time.Hour)
	// value i+1 with deadline offsets (ms; -1: none)
	offsets := []int{-1, 30, 10, -1, 20, 40}
	var wg sync.WaitGroup
	for i, off := range offsets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			opts := RunOptions{}
			if off >= 0 {
				opts.Deadline = base.Add(time.Duration(off) * time.Millisecond)
			}
			if err := fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, float32(i+1))}, opts, func([]bridge.Tensor) error { return nil }); err != nil {
				t.Errorf("request %d: %v", i+1, err)
			}
		}()
		fx.waitQueued(t, i+1)
	}
	fx.open()
	wg.Wait()
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	fx.rec.mu.Lock()
	got := slices.Clone(fx.rec.order[1:])
	fx.rec.mu.Unlock()
	want := [][]float32{{3, 5}, {2, 6}, {1, 4}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("runs = %v, want %v (earliest deadline first, then arrival order)", got, want)
	}
}

// TestPoolDeadlinePassedInQueue: a request whose deadline passes while it waits is not run;
// Do answers a *DeadlineError checked when it was taken from the queue.
func TestPoolDeadlinePassedInQueue(t *testing.T) {
	p, f, release, done := blockedPool(t, 4)
	got := make(chan error, 1)
	ran := false
	go func() {
		got <- p.Do(context.Background(), []bridge.Tensor{f32(1)}, RunOptions{Deadline: time.Now().Add(20 * time.Millisecond)},
			func([]bridge.Tensor) error { ran = true; return nil })
	}()
	waitLen(t, p.jobs, 1)
	time.Sleep(40 * time.Millisecond)
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	err := <-got
	var de *DeadlineError
	if !errors.As(err, &de) || !errors.Is(err, ErrDeadline) || !de.Queued || !de.Passed() || de.Reason() != "passed" {
		t.Fatalf("Do = %v, want a DeadlineError passed in the queue", err)
	}
	if ran {
		t.Error("the callback ran for a request past its deadline")
	}
	if n := len(f.Made()); n != 1 {
		t.Fatalf("%d contexts", n)
	}
}

// TestDeadlineInfeasibleOnArrival: with a measured service time of 10ms a deadline 2ms away is
// refused on arrival, with both numbers in the message; a deadline 1s away runs.
func TestDeadlineInfeasibleOnArrival(t *testing.T) {
	st := &Stats{}
	for range 4 {
		st.recordService(1, 10*time.Millisecond)
	}
	if e := st.ExpectedService(1); e < 10*time.Millisecond || e > 20*time.Millisecond {
		t.Fatalf("ExpectedService(1) = %s after four runs of 10ms", e)
	}
	if e := st.ExpectedService(8); e != st.ExpectedService(1) {
		t.Errorf("ExpectedService(8) = %s: an unmeasured size takes the nearest smaller bucket's", e)
	}
	fx := newBatchFixture(t, 1, false, BatcherOptions{MaxBatchSize: 4}, st)
	for _, r := range []Runner{fx.b, fx.b.pool.(*Pool)} {
		ran := false
		err := r.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1)}, RunOptions{Deadline: time.Now().Add(2 * time.Millisecond)},
			func([]bridge.Tensor) error { ran = true; return nil })
		var de *DeadlineError
		if !errors.As(err, &de) || de.Queued || de.Passed() || de.Expected < 10*time.Millisecond || de.Reason() != "infeasible" {
			t.Fatalf("%T: Do = %v, want infeasible on arrival", r, err)
		}
		if ran {
			t.Errorf("%T: ran", r)
		}
		t.Logf("%T: %v", r, err)
		if err := r.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1)}, RunOptions{Deadline: time.Now().Add(time.Second)},
			func([]bridge.Tensor) error { return nil }); err != nil {
			t.Errorf("%T: a feasible deadline: %v", r, err)
		}
	}
}

// slowContext copies its first input to its first output after sleeping d; it records when
// each run started.
type slowContext struct {
	d   time.Duration
	out []byte
}

func (c *slowContext) SetSeed(uint64) error       { return nil }
func (c *slowContext) SetRowSeeds([]uint64) error { return nil }
func (c *slowContext) Close() error               { return nil }
func (c *slowContext) Run(in, out []bridge.Tensor) error {
	time.Sleep(c.d)
	c.out = append(c.out[:0], in[0].Data...)
	out[0] = bridge.Tensor{DType: in[0].DType, Shape: append(out[0].Shape[:0], in[0].Shape...), Data: c.out}
	return nil
}

// TestDeadlineOverloadNoLateAnswers: a slow model (2ms a run, one instance) offered far more
// than it can serve, every request with a deadline 8ms after it is sent. No answer comes later
// than its deadline plus its own run (the start is checked against the expected service
// time); the others are refused with a *DeadlineError at once; some of each happen. Pool alone
// and Batcher (batch size 1, so the run time stays put).
func TestDeadlineOverloadNoLateAnswers(t *testing.T) {
	for _, batched := range []bool{false, true} {
		st := &Stats{}
		p, err := newPool(func() (ExecContext, error) { return &slowContext{d: 2 * time.Millisecond}, nil }, 1,
			PoolOptions{Instances: 1, Stats: st, QueueLen: 1024, LockOSThread: testLockedWorkers})
		if err != nil {
			t.Fatal(err)
		}
		var r Runner = p
		if batched {
			if r, err = newBatcher(p, batchInputs[:1], batchOutputs[:1], BatcherOptions{MaxBatchSize: 1, QueueLen: 1024}); err != nil {
				t.Fatal(err)
			}
		}
		// Warm the estimate: a few runs without deadlines.
		for range 5 {
			if err := r.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1)}, RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
				t.Fatal(err)
			}
		}
		const n, budget = 400, 8 * time.Millisecond
		var mu sync.Mutex
		var ok, refused, late int
		var worst time.Duration
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dl := time.Now().Add(budget)
				var answered time.Time
				err := r.Do(context.Background(), []bridge.Tensor{rowsTensor(2, float32(i))}, RunOptions{Deadline: dl}, func([]bridge.Tensor) error {
					answered = time.Now()
					return nil
				})
				own := 3 * st.ExpectedService(1) // the answer's own time, generously
				mu.Lock()
				defer mu.Unlock()
				var de *DeadlineError
				switch {
				case err == nil:
					ok++
					if over := answered.Sub(dl); over > worst {
						worst = over
					}
					if answered.After(dl.Add(own)) {
						late++
						t.Errorf("batched %v: answer %s after its deadline (own time %s)", batched, answered.Sub(dl), own)
					}
				case errors.As(err, &de):
					refused++
					// Refused on arrival, at dequeue or by the wait's timer (the deadline less
					// the expected service): never later than the deadline plus the own time.
					if over := time.Since(dl); over > own {
						t.Errorf("batched %v: refusal %s after its deadline (own time %s)", batched, over, own)
					}
				default:
					t.Errorf("request %d: %v", i, err)
				}
			}()
			if i%8 == 7 {
				time.Sleep(time.Millisecond) // ~8 requests a ms: 16x what one 2ms instance serves
			}
		}
		wg.Wait()
		r.Close()
		t.Logf("batched %v: %d answered, %d refused for their deadline, worst answer %s after its deadline; expected service %s",
			batched, ok, refused, worst, st.ExpectedService(1))
		if ok == 0 || refused == 0 {
			t.Errorf("batched %v: %d answered, %d refused: want some of each under overload", batched, ok, refused)
		}
	}
}

func f32(v float32) bridge.Tensor {
	b := make([]byte, 4)
	binary.LittleEndian.PutUint32(b, math.Float32bits(v))
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{1, 1}, Data: b}
}

func waitLen[T any](t *testing.T, q *prioQueue[T], n int) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); q.len() < n; {
		if time.Now().After(end) {
			t.Fatalf("queue holds %d, want %d", q.len(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestExpectedServiceRecovers: one very slow run inflates the estimate; while nothing runs it
// decays toward the fastest run seen, so a version does not refuse everything forever.
func TestExpectedServiceRecovers(t *testing.T) {
	st := &Stats{}
	for range 8 {
		st.recordService(1, 100*time.Microsecond)
	}
	st.recordService(1, 20*time.Millisecond) // a preempted run
	high := st.ExpectedService(1)
	if high < 5*time.Millisecond {
		t.Fatalf("after a 20ms run: %s", high)
	}
	time.Sleep(8 * serviceHalfLife)
	if low := st.ExpectedService(1); low > high/64+200*time.Microsecond {
		t.Errorf("after %s without runs: %s, want it back near the fastest run (100µs)", 8*serviceHalfLife, low)
	}
	st.recordService(1, 100*time.Microsecond) // a run resets the clock: no decay right after it
	if e := st.ExpectedService(1); e < 2*time.Millisecond {
		t.Errorf("right after a run: %s, want the smoothed estimate", e)
	}
}

// TestDeadlineQueueAheadOnArrival: a request that would wait behind queued requests past its
// deadline is refused on arrival (not by the queue timer just before its deadline), the queue
// ahead in its message; one whose deadline leaves time for them all is queued and runs.
func TestDeadlineQueueAheadOnArrival(t *testing.T) {
	st := &Stats{}
	for range 4 {
		st.recordService(1, 10*time.Millisecond)
	}
	f := &fakeFactory{enginestest.Factory{Started: make(chan struct{}, 16), Gate: make(chan struct{})}}
	p := newTestPool(t, f, PoolOptions{Instances: 1, QueueLen: 16, Stats: st})
	var once sync.Once
	release := func() { once.Do(func() { close(f.Gate) }) }
	t.Cleanup(release) // before the pool's Close (cleanups run last first)
	done := make(chan error, 8)
	go func() {
		done <- p.Do(context.Background(), []bridge.Tensor{f32(0)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
	}()
	<-f.Started // the one context is busy
	far := time.Now().Add(10 * time.Second)
	for i := range 3 {
		go func() {
			done <- p.Do(context.Background(), []bridge.Tensor{f32(float32(i + 1))}, RunOptions{Deadline: far}, func([]bridge.Tensor) error { return nil })
		}()
		waitLen(t, p.jobs, i+1)
	}
	// The request's own run fits 25ms (≥ 10ms expected), its own run after three more does not.
	if e := st.ExpectedService(1); e > 25*time.Millisecond {
		t.Fatalf("ExpectedService(1) = %s", e)
	}
	// Queued false: refused on arrival, not by the queue timer (which would say queued).
	err := p.Do(context.Background(), []bridge.Tensor{f32(9)}, RunOptions{Deadline: time.Now().Add(25 * time.Millisecond)}, func([]bridge.Tensor) error { return nil })
	var de *DeadlineError
	if !errors.As(err, &de) || de.Queued || de.Passed() || de.Ahead != 3 || de.Expected < 40*time.Millisecond || de.Reason() != "infeasible" {
		t.Fatalf("Do = %v (%+v), want infeasible on arrival with 3 queued ahead", err, de)
	}
	if !strings.Contains(err.Error(), "(3 queued ahead)") {
		t.Errorf("message %q does not name the queue ahead", err)
	}
	release()
	for range 4 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

// TestCheckArrival: the expected time to an answer is the request's run plus one run for each
// wave of perWave requests ahead.
func TestCheckArrival(t *testing.T) {
	st := &Stats{}
	st.recordService(1, time.Millisecond)
	exp := st.ExpectedService(1)
	now := time.Now()
	for _, c := range []struct {
		ahead, perWave int
		left           time.Duration
		refused        bool
	}{
		{0, 1, exp + time.Microsecond, false},
		{0, 1, exp - time.Microsecond, true},
		{3, 1, 4*exp + time.Microsecond, false},
		{3, 1, 4*exp - time.Microsecond, true},
		{3, 2, 2*exp + time.Microsecond, false}, // two instances: one wave ahead
		{3, 4, exp + time.Microsecond, false},   // a batcher's wave of 4: the request joins it
		{7, 4, 2*exp - time.Microsecond, true},
	} {
		err := checkArrival(st, now.Add(c.left).UnixNano(), 1, now, c.ahead, c.perWave)
		if (err != nil) != c.refused {
			t.Errorf("ahead %d per wave %d, %s left: %v, want refused %v", c.ahead, c.perWave, c.left, err, c.refused)
		}
	}
}
