package engines

import (
	"context"
	"encoding/binary"
	"errors"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
)

// batchContext doubles its FP32 input (output 0, batched) and reports the rows of each run as
// output 1 (no batch dimension). A run whose input holds a negative value fails. When gate is
// set, every run reports on started and then waits for gate.
type batchContext struct {
	rec     *runRecord
	seeds   []uint64 // the row seeds set
	out     []byte
	rows    [4]byte
	started chan struct{}
	gate    chan struct{}
}

type runRecord struct {
	mu     sync.Mutex
	runs   int
	shapes [][]int64
	seen   map[float32]bool
	order  [][]float32 // per run, the first column of its rows
	seeds  [][]uint64  // per run, the row seeds set (nil: the context's stream)
	light  bool        // record runs only (benchmarks: no allocation per run)

	waiting atomic.Int64 // rows of the runs waiting for the gate
}

func (c *batchContext) SetSeed(uint64) error { return nil }

func (c *batchContext) SetRowSeeds(seeds []uint64) error {
	c.seeds = slices.Clone(seeds)
	return nil
}
func (c *batchContext) Close() error { return nil }

func (c *batchContext) Run(in, out []bridge.Tensor) error {
	if c.started != nil {
		var rows int64
		if len(in) > 0 && len(in[0].Shape) > 0 {
			rows = in[0].Shape[0]
		}
		c.rec.waiting.Add(rows)
		c.started <- struct{}{}
		<-c.gate
		c.rec.waiting.Add(-rows)
	}
	t := in[0]
	if int64(len(t.Data)) != bridge.NumElements(t.Shape)*4 {
		return errors.New("input size does not match its shape")
	}
	c.rec.mu.Lock()
	c.rec.runs++
	c.out = append(c.out[:0], t.Data...)
	if !c.rec.light {
		c.rec.shapes = append(c.rec.shapes, append([]int64(nil), t.Shape...))
		var col []float32
		if len(t.Shape) == 2 && t.Shape[1] > 0 {
			for r := int64(0); r < t.Shape[0]; r++ {
				col = append(col, math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*r*t.Shape[1]:])))
			}
		}
		c.rec.order = append(c.rec.order, col)
		c.rec.seeds = append(c.rec.seeds, c.seeds)
	}
	fail := false
	for i := 0; i+4 <= len(c.out); i += 4 {
		f := math.Float32frombits(binary.LittleEndian.Uint32(c.out[i:]))
		c.rec.seen[f] = true
		fail = fail || f < 0
		binary.LittleEndian.PutUint32(c.out[i:], math.Float32bits(2*f))
	}
	c.rec.mu.Unlock()
	if fail {
		return errors.New("negative input")
	}
	out[0].DType = bridge.Float32
	out[0].Shape = append(out[0].Shape[:0], t.Shape...)
	out[0].Data = c.out
	binary.LittleEndian.PutUint32(c.rows[:], uint32(t.Shape[0]))
	out[1].DType = bridge.Int32
	out[1].Shape = append(out[1].Shape[:0], 1)
	out[1].Data = c.rows[:]
	return nil
}

var (
	batchInputs  = []bridge.IOInfo{{Name: "x", DType: bridge.Float32, Shape: []int64{-1, -1}, BatchDim: 0}}
	batchOutputs = []bridge.IOInfo{
		{Name: "y", DType: bridge.Float32, Shape: []int64{-1, -1}, BatchDim: 0},
		{Name: "rows", DType: bridge.Int32, Shape: []int64{1}, BatchDim: -1},
	}
)

type batchFixture struct {
	b       *Batcher
	rec     *runRecord
	started chan struct{}
	gate    chan struct{}
}

func newTestBatcher(t *testing.T, instances int, gated bool, opts BatcherOptions) *batchFixture {
	t.Helper()
	return newBatchFixture(t, instances, gated, opts, nil)
}

// newBatchFixture is newTestBatcher whose pool records into st (nil: no statistics).
func newBatchFixture(t *testing.T, instances int, gated bool, opts BatcherOptions, st *Stats) *batchFixture {
	t.Helper()
	fx := &batchFixture{rec: &runRecord{seen: map[float32]bool{}}}
	if gated {
		fx.started, fx.gate = make(chan struct{}, 64), make(chan struct{})
	}
	newCtx := func() (ExecContext, error) {
		return &batchContext{rec: fx.rec, started: fx.started, gate: fx.gate}, nil
	}
	p, err := newPool(newCtx, 2, PoolOptions{Instances: instances, Stats: st, LockOSThread: testLockedWorkers})
	if err != nil {
		t.Fatal(err)
	}
	b, err := newBatcher(p, batchInputs, batchOutputs, opts)
	if err != nil {
		t.Fatal(err)
	}
	fx.b = b
	t.Cleanup(func() {
		if fx.gate != nil {
			select {
			case <-fx.gate:
			default:
				close(fx.gate)
			}
		}
		b.Close()
	})
	return fx
}

// rowsTensor is a [len(rows), width] FP32 tensor whose row i holds rows[i] in every column.
func rowsTensor(width int, rows ...float32) bridge.Tensor {
	b := make([]byte, 4*width*len(rows))
	for i, v := range rows {
		for k := range width {
			binary.LittleEndian.PutUint32(b[4*(i*width+k):], math.Float32bits(v))
		}
	}
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{int64(len(rows)), int64(width)}, Data: b}
}

type result struct {
	err      error
	shape    []int64
	vals     []float32
	runRows  int32
	duration time.Duration
}

// do sends in and returns what its callback saw.
func do(ctx context.Context, b Runner, in bridge.Tensor) result {
	var res result
	start := time.Now()
	res.err = b.Do(ctx, []bridge.Tensor{in}, RunOptions{}, func(out []bridge.Tensor) error {
		res.shape = append([]int64(nil), out[0].Shape...)
		for i := 0; i+4 <= len(out[0].Data); i += 4 {
			res.vals = append(res.vals, math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data[i:])))
		}
		res.runRows = int32(binary.LittleEndian.Uint32(out[1].Data))
		return nil
	})

	res.duration = time.Since(start)
	return res
}

// busy starts one request that holds the only worker until the gate opens.
func (fx *batchFixture) busy(t *testing.T) <-chan result {
	t.Helper()
	ch := make(chan result, 1)
	go func() { ch <- do(context.Background(), fx.b, rowsTensor(2, 1000)) }()
	<-fx.started
	return ch
}

// waitQueued waits until n requests are queued.
func (fx *batchFixture) waitQueued(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for fx.b.queue.len() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", fx.b.queue.len(), n)
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// openWhenQueued opens the gate once n rows are queued or held by runs waiting for it: the
// concurrent requests of a test then meet in the queue however the machine schedules them.
func (fx *batchFixture) openWhenQueued(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for int(fx.rec.waiting.Load())+fx.b.queue.len() < n {
		if time.Now().After(deadline) {
			fx.open()
			t.Fatalf("%d rows waiting and %d queued, want %d", fx.rec.waiting.Load(), fx.b.queue.len(), n)
		}
		time.Sleep(100 * time.Microsecond)
	}
	fx.open()
}

func (fx *batchFixture) open() {
	close(fx.gate)
	go func() {
		for range fx.started {
		}
	}()
}

func TestBatcherFormsBatchesAndSplitsOutputs(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 32, MaxQueueDelay: time.Millisecond})
	first := fx.busy(t)
	// 10 requests of 1, 2 or 3 rows, each row holding a value that names it.
	var wg sync.WaitGroup
	results := make([]result, 10)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rows := make([]float32, i%3+1)
			for r := range rows {
				rows[r] = float32(100*i + r)
			}
			results[i] = do(context.Background(), fx.b, rowsTensor(2, rows...))
		}()
		fx.waitQueued(t, i+1)
	}
	fx.open()
	wg.Wait()
	if r := <-first; r.err != nil || r.runRows != 1 {
		t.Fatalf("first: %+v", r)
	}
	total := 0
	for i, r := range results {
		n := i%3 + 1
		total += n
		if r.err != nil {
			t.Fatalf("request %d: %v", i, r.err)
		}
		if len(r.shape) != 2 || r.shape[0] != int64(n) || r.shape[1] != 2 {
			t.Fatalf("request %d: output shape %v, want [%d 2]", i, r.shape, n)
		}
		for k, v := range r.vals {
			if want := float32(2 * (100*i + k/2)); v != want {
				t.Fatalf("request %d: value %d = %v, want %v (outputs: %v)", i, k, v, want, r.vals)
			}
		}
	}
	for i, r := range results {
		if int(r.runRows) != total {
			t.Errorf("request %d ran in a batch of %d rows, want all %d", i, r.runRows, total)
		}
	}
	if fx.rec.runs != 2 {
		t.Errorf("%d runs for 11 requests, want 2 (shapes %v)", fx.rec.runs, fx.rec.shapes)
	}
}

func TestBatcherConcurrentRunsFewerThanRequests(t *testing.T) {
	fx := newTestBatcher(t, 2, true, BatcherOptions{MaxBatchSize: 8, MaxQueueDelay: 200 * time.Microsecond})
	var wg sync.WaitGroup
	var bad atomic.Int32
	const goroutines, each = 16, 200
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				v := float32(g*each + i)
				r := do(context.Background(), fx.b, rowsTensor(3, v))
				if r.err != nil || len(r.vals) != 3 || r.vals[0] != 2*v || r.vals[2] != 2*v || r.runRows > 8 {
					bad.Add(1)
				}
			}
		}()
	}
	fx.openWhenQueued(t, goroutines)
	wg.Wait()
	if n := bad.Load(); n != 0 {
		t.Fatalf("%d requests failed or got outputs that are not theirs", n)
	}
	t.Logf("%d runs for %d requests", fx.rec.runs, goroutines*each)
	if fx.rec.runs >= goroutines*each {
		t.Errorf("%d runs for %d requests: no batching", fx.rec.runs, goroutines*each)
	}
}

func TestBatcherNeverMixesShapes(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 32})
	first := fx.busy(t)
	var wg sync.WaitGroup
	results := make([]result, 12)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = do(context.Background(), fx.b, rowsTensor(2+i%3, float32(i)))
		}()
		fx.waitQueued(t, i+1)
	}
	fx.open()
	wg.Wait()
	<-first
	for i, r := range results {
		if r.err != nil || len(r.shape) != 2 || r.shape[1] != int64(2+i%3) || r.vals[0] != float32(2*i) {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	// Every run has one width; 12 requests of 3 widths, queued interleaved, with one
	// incompatible request carried over per batch: more than 3 runs, fewer than 13.
	for _, s := range fx.rec.shapes {
		if len(s) != 2 {
			t.Fatalf("run shape %v", s)
		}
	}
	if fx.rec.runs < 1+3 || fx.rec.runs > 1+12 {
		t.Errorf("%d runs", fx.rec.runs)
	}
}

func TestBatcherTimeoutInQueueNeverRuns(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{})
	first := fx.busy(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	r := do(ctx, fx.b, rowsTensor(2, 77))
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("Do = %v, want DeadlineExceeded", r.err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	go func() { fx.waitQueued(t, 2); ccancel() }()
	if r := do(cctx, fx.b, rowsTensor(2, 78)); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("Do = %v, want Canceled", r.err)
	}
	fx.open()
	<-first
	if r := do(context.Background(), fx.b, rowsTensor(2, 5)); r.err != nil || r.vals[0] != 10 {
		t.Fatalf("after: %+v", r)
	}
	fx.rec.mu.Lock()
	defer fx.rec.mu.Unlock()
	if fx.rec.seen[77] || fx.rec.seen[78] {
		t.Errorf("a request that timed out in the queue ran (seen %v)", fx.rec.seen)
	}
}

func TestBatcherQueueFull(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{QueueLen: 2})
	first := fx.busy(t)
	queued := make(chan result, 2)
	for i := range 2 {
		go func() { queued <- do(context.Background(), fx.b, rowsTensor(2, float32(i))) }()
	}
	fx.waitQueued(t, 2)
	if r := do(context.Background(), fx.b, rowsTensor(2, 9)); !errors.Is(r.err, ErrOverloaded) {
		t.Fatalf("Do on a full queue = %v, want ErrOverloaded", r.err)
	}
	fx.open()
	<-first
	for range 2 {
		if r := <-queued; r.err != nil {
			t.Fatal(r.err)
		}
	}
}

func TestBatcherFailingRequestSparesBatchMates(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{})
	first := fx.busy(t)
	var wg sync.WaitGroup
	results := make([]result, 6)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			v := float32(i)
			if i == 3 {
				v = -1
			}
			results[i] = do(context.Background(), fx.b, rowsTensor(2, v))
		}()
		fx.waitQueued(t, i+1)
	}
	fx.open()
	wg.Wait()
	<-first
	for i, r := range results {
		if i == 3 {
			if r.err == nil {
				t.Errorf("the failing request succeeded")
			}
			continue
		}
		if r.err != nil || r.vals[0] != float32(2*i) {
			t.Errorf("request %d failed with its failing batch-mate: %+v", i, r)
		}
	}
	// 1 (busy) + 1 (the failed batch) + 6 (each alone).
	if fx.rec.runs != 8 {
		t.Errorf("%d runs, want 8", fx.rec.runs)
	}
}

func TestBatcherCallbackErrorIsItsOwn(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{})
	first := fx.busy(t)
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			errs <- fx.b.Do(context.Background(), []bridge.Tensor{rowsTensor(2, float32(i))}, RunOptions{}, func([]bridge.Tensor) error {
				switch i {
				case 1:
					return errors.New("encode failed")
				case 2:
					panic("bug")
				}
				return nil
			})

		}()
		fx.waitQueued(t, i+1)
	}
	fx.open()
	<-first
	var ok, failed int
	for range 3 {
		if err := <-errs; err == nil {
			ok++
		} else {
			failed++
		}
	}
	if ok != 1 || failed != 2 {
		t.Errorf("%d ok, %d failed; want 1 and 2", ok, failed)
	}
}

func TestBatcherAloneRunsWithoutDelay(t *testing.T) {
	const delay = 500 * time.Millisecond
	fx := newTestBatcher(t, 1, false, BatcherOptions{MaxQueueDelay: delay, PreferredBatchSizes: []int{4, 8}})
	for i := range 5 {
		r := do(context.Background(), fx.b, rowsTensor(2, float32(i)))
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.duration > delay/5 {
			t.Fatalf("a request alone took %s, the delay is %s: it waited", r.duration, delay)
		}
	}
}

func TestBatcherCloseAndDrain(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{})
	first := fx.busy(t)
	queued := make(chan result, 1)
	go func() { queued <- do(context.Background(), fx.b, rowsTensor(2, 1)) }()
	fx.waitQueued(t, 1)
	drained := make(chan struct{})
	go func() { fx.b.Drain(); close(drained) }()
	for !fx.b.queue.closed.Load() {
		time.Sleep(100 * time.Microsecond)
	}
	if r := do(context.Background(), fx.b, rowsTensor(2, 2)); !errors.Is(r.err, ErrClosed) {
		t.Fatalf("Do while draining = %v, want ErrClosed", r.err)
	}
	fx.open()
	<-drained
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	if r := <-queued; r.err != nil {
		t.Fatalf("a request queued before Drain: %v", r.err)
	}

	fx = newTestBatcher(t, 1, true, BatcherOptions{})
	first = fx.busy(t)
	go func() { queued <- do(context.Background(), fx.b, rowsTensor(2, 1)) }()
	fx.waitQueued(t, 1)
	closed := make(chan struct{})
	go func() { fx.b.Close(); close(closed) }()
	for !fx.b.abort.Load() {
		time.Sleep(100 * time.Microsecond)
	}
	fx.open()
	<-closed
	<-first
	if r := <-queued; !errors.Is(r.err, ErrClosed) {
		t.Fatalf("a request queued before Close = %v, want ErrClosed", r.err)
	}
}

// BenchmarkBatcherDo: 16 goroutines each sending batch-1 requests; allocs/op is per request.
func BenchmarkBatcherDo(b *testing.B) {
	rec := &runRecord{seen: map[float32]bool{}, light: true}
	newCtx := func() (ExecContext, error) { return &batchContext{rec: rec}, nil }
	p, err := newPool(newCtx, 2, PoolOptions{Instances: 2})
	if err != nil {
		b.Fatal(err)
	}
	bt, err := newBatcher(p, batchInputs, batchOutputs, BatcherOptions{MaxQueueDelay: 100 * time.Microsecond})
	if err != nil {
		b.Fatal(err)
	}
	defer bt.Close()
	b.SetParallelism(max(1, 16/runtime.GOMAXPROCS(0))) // 16 goroutines (RunParallel runs p×GOMAXPROCS)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		in := []bridge.Tensor{rowsTensor(8, 1)}
		var sink float32
		fn := func(out []bridge.Tensor) error {
			sink += math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data))
			return nil
		}
		for pb.Next() {
			if err := bt.Do(context.Background(), in, RunOptions{}, fn); err != nil {
				b.Error(err)
				return
			}
		}
		_ = sink
	})
	b.ReportMetric(float64(rec.runs), "runs")
	b.ReportMetric(float64(b.N)/float64(max(rec.runs, 1)), "requests/run")
}
