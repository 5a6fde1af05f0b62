package engines

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// goid is the calling goroutine's number, read from its stack header ("goroutine 12 [...").
func goid(t *testing.T) int {
	t.Helper()
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	n, err := strconv.Atoi(string(b[:bytes.IndexByte(b, ' ')]))
	if err != nil {
		t.Fatalf("goroutine id from %q: %v", buf[:], err)
	}
	return n
}

// ranOn runs one request through r and returns the goroutine its callback ran on (the
// callback runs on the goroutine that ran the context).
func ranOn(t *testing.T, r Runner, in bridge.Tensor) int {
	t.Helper()
	var g int
	if err := r.Do(context.Background(), []bridge.Tensor{in}, RunOptions{}, func([]bridge.Tensor) error {
		g = goid(t)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return g
}

// Over shared contexts an idle pool runs a request on its caller's goroutine (no hand-over to
// a worker and back); with LockOSThread a worker always runs it.
func TestPoolRunsOnCallerWhenIdle(t *testing.T) {
	for _, lock := range []bool{false, true} {
		p := newTestPool(t, &fakeFactory{}, PoolOptions{Instances: 2, LockOSThread: lock})
		me := goid(t)
		for range 3 {
			if got := ranOn(t, p, enginestest.F32Tensor(1)); (got == me) == lock {
				t.Errorf("LockOSThread %v: ran on goroutine %d, caller %d", lock, got, me)
			}
		}
	}
}

// A batcher over shared contexts runs a lone request on its caller's goroutine when no batch is
// forming or running; behind a busy run, requests queue and a former runs them as a batch.
func TestBatcherRunsOnCallerWhenIdle(t *testing.T) {
	fx := newTestBatcher(t, 1, true, BatcherOptions{MaxBatchSize: 8})
	me := goid(t)
	first := make(chan int, 1)
	go func() { first <- ranOn(t, fx.b, rowsTensor(1, 1)) }()
	<-fx.started // the lone request holds the only context
	queued := make(chan result, 2)
	for i := range 2 {
		go func() { queued <- do(context.Background(), fx.b, rowsTensor(1, float32(10+i))) }()
	}
	fx.waitQueued(t, 2)
	fx.open()
	if g := <-first; g == me {
		t.Errorf("the first request ran on the test's goroutine")
	}
	for range 2 {
		if r := <-queued; r.err != nil || r.runRows != 2 {
			t.Errorf("queued request: %+v, want run in one batch of 2 rows", r)
		}
	}
	if g := ranOn(t, fx.b, rowsTensor(1, 3)); g != me {
		t.Errorf("an idle batcher ran a lone request on goroutine %d, caller %d", g, me)
	}
}

// testLockedWorkers makes the pools of newTestPool and newTestBatcher lock their workers to OS threads (each owns
// its context; formers hand batches to them through the pool's queue).
var testLockedWorkers bool

// The batcher's tests again over workers that own their contexts (LockOSThread: multi-thread
// CPU contexts), the path where formers run batches through the pool's queue.
func TestBatcherLockedWorkers(t *testing.T) {
	testLockedWorkers = true
	defer func() { testLockedWorkers = false }()
	for name, test := range map[string]func(*testing.T){
		"FormsBatchesAndSplitsOutputs":    TestBatcherFormsBatchesAndSplitsOutputs,
		"ConcurrentRunsFewerThanRequests": TestBatcherConcurrentRunsFewerThanRequests,
		"NeverMixesShapes":                TestBatcherNeverMixesShapes,
		"TimeoutInQueueNeverRuns":         TestBatcherTimeoutInQueueNeverRuns,
		"QueueFull":                       TestBatcherQueueFull,
		"FailingRequestSparesBatchMates":  TestBatcherFailingRequestSparesBatchMates,
		"CallbackErrorIsItsOwn":           TestBatcherCallbackErrorIsItsOwn,
		"AloneRunsWithoutDelay":           TestBatcherAloneRunsWithoutDelay,
		"CloseAndDrain":                   TestBatcherCloseAndDrain,
		"PriorityLevels":                  TestBatcherPriorityLevels,
		"PriorityErrorsAndOverload":       TestBatcherPriorityErrorsAndOverload,
		"RowSeeds":                        TestBatcherRowSeeds,
	} {
		t.Run(name, test)
	}
}

// The pool's tests again over workers that own their contexts.
func TestPoolLockedWorkers(t *testing.T) {
	testLockedWorkers = true
	defer func() { testLockedWorkers = false }()
	for name, test := range map[string]func(*testing.T){
		"ConcurrentDo":            TestPoolConcurrentDo,
		"SeedsAreDistinct":        TestPoolSeedsAreDistinct,
		"QueueFull":               TestPoolQueueFull,
		"CancelWhileQueued":       TestPoolCancelWhileQueued,
		"CancelWhileRunningWaits": TestPoolCancelWhileRunningWaits,
		"CloseDrainsQueue":        TestPoolCloseDrainsQueue,
		"DrainRunsQueue":          TestPoolDrainRunsQueue,
		"RunErrorSkipsCallback":   TestPoolRunErrorSkipsCallback,
		"CallbackErrorAndPanic":   TestPoolCallbackErrorAndPanic,
		"PriorityLevels":          TestPoolPriorityLevels,
		"RowSeeds":                TestPoolRowSeeds,
	} {
		t.Run(name, test)
	}
}
