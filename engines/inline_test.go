package engines

import (
	"bytes"
	"context"
	"runtime"
	"strconv"
	"testing"

	"github.com/policyd/policyd/bridge"
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
			if got := ranOn(t, p, f32Tensor(1)); (got == me) == lock {
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
