package engines

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

func TestPriorityLevelsCheck(t *testing.T) {
	for _, c := range []struct {
		levels, def     int
		wantLvl, wantDf int
		bad             bool
	}{
		{0, 0, 1, 1, false}, {1, 0, 1, 1, false}, {3, 0, 3, 3, false}, {3, 1, 3, 1, false},
		{-1, 0, 0, 0, true}, {MaxPriorityLevels + 1, 0, 0, 0, true}, {2, 3, 0, 0, true}, {0, 2, 0, 0, true},
	} {
		p, err := newPriorities(c.levels, c.def)
		if (err != nil) != c.bad || (!c.bad && (p.levels != c.wantLvl || p.def != c.wantDf)) {
			t.Errorf("newPriorities(%d, %d) = %+v, %v", c.levels, c.def, p, err)
		}
	}
	p, _ := newPriorities(3, 2)
	for prio, want := range map[int]int{0: 1, 1: 0, 2: 1, 3: 2} {
		if got, err := p.level(prio); err != nil || got != want {
			t.Errorf("level(%d) = %d, %v; want %d", prio, got, err, want)
		}
	}
	var pe *PriorityError
	if _, err := p.level(4); !errors.As(err, &pe) || pe.Priority != 4 || pe.Levels != 3 {
		t.Errorf("level(4) = %v, want a PriorityError", err)
	}
	if _, err := p.level(-1); !errors.As(err, &pe) {
		t.Errorf("level(-1) = %v, want a PriorityError", err)
	}
}

// queuePriorities queues one request per entry of prios (value i+1 for entry i, one row)
// behind a request that holds the only worker, then releases the worker and returns the
// runs in the order they happened, each the values of its rows.
func queuePriorities(t *testing.T, opts BatcherOptions, prios []int) [][]float32 {
	t.Helper()
	fx := newTestBatcher(t, 1, true, opts)
	first := fx.busy(t)
	var wg sync.WaitGroup
	for i, p := range prios {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, float32(i+1))}, RunOptions{Priority: p},
				func([]bridge.Tensor) error { return nil }); err != nil {
				t.Errorf("request %d (priority %d): %v", i+1, p, err)
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
	defer fx.rec.mu.Unlock()
	return slices.Clone(fx.rec.order[1:]) // the first run is the busy request's
}

func TestBatcherPriorityLevels(t *testing.T) {
	// Levels 1 (highest) .. 3, default 3 (the lowest). Queued: 1@3 2@0(=3) 3@1 4@2 5@1 6@3.
	got := queuePriorities(t, BatcherOptions{MaxBatchSize: 2, PriorityLevels: 3}, []int{3, 0, 1, 2, 1, 3})
	want := [][]float32{{3, 5}, {4, 1}, {2, 6}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("runs = %v, want %v (highest level first, oldest first within a level)", got, want)
	}
	// A default level in the middle: priority 0 ranks with 2.
	got = queuePriorities(t, BatcherOptions{MaxBatchSize: 1, PriorityLevels: 3, DefaultPriorityLevel: 2}, []int{3, 0, 2, 1})
	want = [][]float32{{4}, {2}, {3}, {1}}
	if !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("runs = %v, want %v", got, want)
	}
	// One level: arrival order, whatever the priorities say.
	got = queuePriorities(t, BatcherOptions{MaxBatchSize: 1}, []int{1, 0, 1})
	if want := [][]float32{{1}, {2}, {3}}; !slices.EqualFunc(got, want, slices.Equal) {
		t.Errorf("one level: runs = %v, want %v", got, want)
	}
}

func TestBatcherPriorityErrorsAndOverload(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 1, PriorityLevels: 2, QueueLen: 1})
	first := fx.busy(t)
	var pe *PriorityError
	if err := fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1)}, RunOptions{Priority: 3}, nil); !errors.As(err, &pe) {
		t.Fatalf("priority 3 of 2 levels: %v, want a PriorityError", err)
	}
	// Each level holds QueueLen requests: level 2 full does not refuse level 1.
	done := make(chan error, 2)
	for _, p := range []int{2, 1} {
		go func() {
			done <- fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1)}, RunOptions{Priority: p}, func([]bridge.Tensor) error { return nil })
		}()
	}
	fx.waitQueued(t, 2)
	for _, p := range []int{2, 1} {
		if err := fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1)}, RunOptions{Priority: p}, nil); !errors.Is(err, ErrOverloaded) {
			t.Errorf("level %d full: %v, want ErrOverloaded", p, err)
		}
	}
	fx.open()
	for range 2 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
}

func TestPoolPriorityLevels(t *testing.T) {
	rec := &runRecord{seen: map[float32]bool{}}
	started, gate := make(chan struct{}, 64), make(chan struct{})
	newCtx := func() (ExecContext, error) {
		return &batchContext{rec: rec, started: started, gate: gate}, nil
	}
	p, err := newPool(newCtx, 2, PoolOptions{PriorityLevels: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	run := func(v float32, prio int) error {
		return p.Do(context.Background(), []bridge.Tensor{rowsTensor(2, v)}, RunOptions{Priority: prio}, func([]bridge.Tensor) error { return nil })
	}
	busy := make(chan error, 1)
	go func() { busy <- run(100, 0) }()
	<-started
	var wg sync.WaitGroup
	for i, prio := range []int{0, 2, 1, 0, 1} {
		wg.Add(1)
		go func() { defer wg.Done(); _ = run(float32(i+1), prio) }()
		enginestest.WaitFor(t, func() bool { return p.jobs.len() == i+1 })
	}
	close(gate)
	go func() {
		for range started {
		}
	}()
	wg.Wait()
	if err := <-busy; err != nil {
		t.Fatal(err)
	}
	var got []float32
	for _, o := range rec.order[1:] {
		got = append(got, o...)
	}
	if want := []float32{3, 5, 1, 2, 4}; !slices.Equal(got, want) {
		t.Errorf("pool runs = %v, want %v", got, want)
	}
	if _, err := newPool(newCtx, 2, PoolOptions{PriorityLevels: 2, DefaultPriorityLevel: 3}); err == nil {
		t.Error("a default level above the levels was accepted")
	}
}

// TestPrioQueueConcurrent pushes from many goroutines at random levels and pops from several:
// every item comes out exactly once, and close lets the poppers drain and stop.
func TestPrioQueueConcurrent(t *testing.T) {
	const pushers, per = 8, 500
	q := newPrioQueue[int](4, pushers*per)
	var seen sync.Map
	var popped sync.WaitGroup
	for range 3 {
		popped.Add(1)
		go func() {
			defer popped.Done()
			for {
				v, ok := q.pop()
				if !ok {
					return
				}
				if _, dup := seen.LoadOrStore(v, true); dup {
					t.Errorf("item %d popped twice", v)
				}
			}
		}()
	}
	var pushed sync.WaitGroup
	for g := range pushers {
		pushed.Add(1)
		go func() {
			defer pushed.Done()
			for i := range per {
				if err := q.push(g*per+i, (g+i)%4); err != nil {
					t.Errorf("push: %v", err)
				}
			}
		}()
	}
	pushed.Wait()
	q.close()
	popped.Wait()
	n := 0
	seen.Range(func(any, any) bool { n++; return true })
	if n != pushers*per {
		t.Errorf("%d items popped, want %d", n, pushers*per)
	}
	if err := q.push(1, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("push after close: %v", err)
	}
}

// TestBatcherRowSeeds: a batch holding seeded requests runs with each seeded request's row
// seeds at its rows (RowSeed(seed, j)) and fresh seeds at the other rows; a batch without
// seeded requests runs on the context's stream again.
func TestBatcherRowSeeds(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 32})
	first := fx.busy(t)
	var wg sync.WaitGroup
	for i, q := range []struct {
		rows []float32
		opts RunOptions
	}{
		{[]float32{1, 2}, RunOptions{Seed: 7, Seeded: true}},
		{[]float32{3}, RunOptions{}},
		{[]float32{4}, RunOptions{Seed: 9, Seeded: true}},
	} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, q.rows...)}, q.opts, func([]bridge.Tensor) error { return nil }); err != nil {
				t.Error(err)
			}
		}()
		fx.waitQueued(t, i+1)
	}
	fx.open()
	wg.Wait()
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	for _, q := range []struct {
		v    float32
		opts RunOptions
	}{{5, RunOptions{}}, {6, RunOptions{Seed: 5, Seeded: true}}, {7, RunOptions{}}} {
		if err := fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, q.v)}, q.opts, func([]bridge.Tensor) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	fx.rec.mu.Lock()
	defer fx.rec.mu.Unlock()
	if got := fx.rec.order[1:]; !slices.EqualFunc(got, [][]float32{{1, 2, 3, 4}, {5}, {6}, {7}}, slices.Equal) {
		t.Fatalf("runs = %v", got)
	}
	s := fx.rec.seeds[1:]
	if len(s[0]) != 4 || s[0][0] != RowSeed(7, 0) || s[0][1] != RowSeed(7, 1) || s[0][3] != RowSeed(9, 0) ||
		s[0][2] == RowSeed(7, 2) || s[0][1] == s[0][0] {
		t.Errorf("batch row seeds = %x, want [7·0 7·1 fresh 9·0]", s[0])
	}
	if s[1] != nil || !slices.Equal(s[2], []uint64{RowSeed(5, 0)}) || s[3] != nil {
		t.Errorf("row seeds of unseeded, seeded, unseeded runs = %x %x %x", s[1], s[2], s[3])
	}
	if RowSeed(5, 0) != 5 {
		t.Errorf("RowSeed(5, 0) = %d, want the seed itself", RowSeed(5, 0))
	}
}

func TestPoolRowSeeds(t *testing.T) {
	rec := &runRecord{seen: map[float32]bool{}}
	p, err := newPool(func() (ExecContext, error) { return &batchContext{rec: rec}, nil }, 2, PoolOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for _, opts := range []RunOptions{{Seed: 11, Seeded: true}, {}, {Seed: 12, Seeded: true}} {
		if err := p.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1, 2, 3)}, opts, func([]bridge.Tensor) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	// A request run alone on a pool draws its whole output from its row-0 seed.
	if s := rec.seeds; len(s) != 3 || !slices.Equal(s[0], []uint64{11}) || s[1] != nil || !slices.Equal(s[2], []uint64{12}) {
		t.Errorf("pool row seeds = %x", s)
	}
}

// TestBatcherRowSeedsOverMax: a seeded request over MaxBatchSize runs alone with a seed per
// row, RowSeed(seed, j), as its rows would draw in any batch (not one seed for all of them).
func TestBatcherRowSeedsOverMax(t *testing.T) {
	fx := newTestBatcher(t, 1, false, BatcherOptions{MaxBatchSize: 2})
	if err := fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, 1, 2, 3)}, RunOptions{Seed: 21, Seeded: true}, func([]bridge.Tensor) error { return nil }); err != nil {
		t.Fatal(err)
	}
	fx.rec.mu.Lock()
	defer fx.rec.mu.Unlock()
	if got := fx.rec.order; !slices.EqualFunc(got, [][]float32{{1, 2, 3}}, slices.Equal) {
		t.Fatalf("runs = %v", got)
	}
	if want := []uint64{RowSeed(21, 0), RowSeed(21, 1), RowSeed(21, 2)}; !slices.Equal(fx.rec.seeds[0], want) {
		t.Errorf("row seeds = %x, want %x", fx.rec.seeds[0], want)
	}
}
