package engines

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// fakeFactory makes enginestest's fake contexts for a pool.
type fakeFactory struct{ enginestest.Factory }

func (f *fakeFactory) newCtx() (ExecContext, error) { return f.New() }

func newTestPool(t *testing.T, f *fakeFactory, opts PoolOptions) *Pool {
	t.Helper()
	opts.LockOSThread = opts.LockOSThread || testLockedWorkers
	p, err := newPool(f.newCtx, 1, opts)
	if err != nil {
		t.Fatalf("newPool: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestPoolConcurrentDo(t *testing.T) {
	f := &fakeFactory{}
	p := newTestPool(t, f, PoolOptions{Instances: 4, QueueLen: 1024})
	var wg sync.WaitGroup
	var failures atomic.Int32
	for g := 0; g < 32; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				want := float32(g*1000 + i)
				var got float32
				err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(want / 2)}, RunOptions{}, func(out []bridge.Tensor) error {
					got = enginestest.FirstF32(out[0])
					return nil
				})

				if err != nil || got != want {
					failures.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d of 3200 calls failed or returned a wrong value", n)
	}
	if got := p.Instances(); got != 4 {
		t.Errorf("Instances() = %d, want 4", got)
	}
}

func TestPoolSeedsAreDistinct(t *testing.T) {
	f := &fakeFactory{}
	newTestPool(t, f, PoolOptions{Instances: 4, Seed: 100})
	seen := map[uint64]bool{}
	for _, c := range f.Made() {
		seen[c.Seed] = true
	}
	for s := uint64(100); s < 104; s++ {
		if !seen[s] {
			t.Errorf("no worker got seed %d (seeds %v)", s, seen)
		}
	}
}

// blockedPool returns a one-worker pool whose worker is busy with a job until release is
// called; done receives that job's error.
func blockedPool(t *testing.T, queueLen int) (p *Pool, f *fakeFactory, release func(), done chan error) {
	t.Helper()
	f = &fakeFactory{enginestest.Factory{Started: make(chan struct{}, 16), Gate: make(chan struct{})}}
	p = newTestPool(t, f, PoolOptions{Instances: 1, QueueLen: queueLen})
	done = make(chan error, 1)
	go func() {
		done <- p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
	}()
	<-f.Started
	var once sync.Once
	release = func() { once.Do(func() { close(f.Gate) }) }
	t.Cleanup(release)
	return p, f, release, done
}

func TestPoolQueueFull(t *testing.T) {
	p, _, release, done := blockedPool(t, 1)
	queued := make(chan error, 1)
	go func() {
		queued <- p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
	}()
	enginestest.WaitFor(t, func() bool { return p.jobs.len() == 1 })
	err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
	if !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Do on a full queue: %v, want ErrOverloaded", err)
	}
	release()
	if err := <-done; err != nil {
		t.Errorf("running job: %v", err)
	}
	if err := <-queued; err != nil {
		t.Errorf("queued job: %v", err)
	}
}

func TestPoolCancelWhileQueued(t *testing.T) {
	p, _, release, done := blockedPool(t, 4)
	ctx, cancel := context.WithCancel(context.Background())
	called := atomic.Bool{}
	res := make(chan error, 1)
	go func() {
		res <- p.Do(ctx, []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { called.Store(true); return nil })
	}()
	enginestest.WaitFor(t, func() bool { return p.jobs.len() == 1 })
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Do after cancel: %v, want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Do did not return after its context was cancelled")
	}
	release()
	<-done
	// The worker must skip the abandoned job and keep serving.
	if err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
		t.Fatalf("Do after a cancelled job: %v", err)
	}
	if called.Load() {
		t.Error("the callback of a cancelled job ran")
	}
}

func TestPoolCancelWhileRunningWaits(t *testing.T) {
	f := &fakeFactory{enginestest.Factory{Started: make(chan struct{}, 1), Gate: make(chan struct{})}}
	p := newTestPool(t, f, PoolOptions{Instances: 1})
	ctx, cancel := context.WithCancel(context.Background())
	res := make(chan error, 1)
	go func() {
		res <- p.Do(ctx, []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
	}()
	<-f.Started
	cancel()
	select {
	case err := <-res:
		t.Fatalf("Do returned (%v) while its job was still running", err)
	case <-time.After(50 * time.Millisecond):
	}
	close(f.Gate)
	if err := <-res; err != nil {
		t.Fatalf("Do of a job that ran: %v", err)
	}
}

func TestPoolCloseDrainsQueue(t *testing.T) {
	p, f, release, done := blockedPool(t, 4)
	queued := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			queued <- p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
		}()
	}
	enginestest.WaitFor(t, func() bool { return p.jobs.len() == 2 })
	closed := make(chan struct{})
	go func() { p.Close(); close(closed) }()
	enginestest.WaitFor(t, func() bool { return p.jobs.closed.Load() })
	release()
	if err := <-done; err != nil {
		t.Errorf("the job running at Close: %v, want it to finish", err)
	}
	for i := 0; i < 2; i++ {
		if err := <-queued; !errors.Is(err, ErrClosed) {
			t.Errorf("a job queued at Close: %v, want ErrClosed", err)
		}
	}
	<-closed
	if n := f.Closed.Load(); n != 1 {
		t.Errorf("%d contexts closed, want 1", n)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := p.Do(context.Background(), nil, RunOptions{}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Do after Close: %v, want ErrClosed", err)
	}
}

// Drain refuses new jobs at once but runs the queued ones; a Close during a Drain fails
// what is still queued.
func TestPoolDrainRunsQueue(t *testing.T) {
	p, f, release, done := blockedPool(t, 4)
	queued := make(chan error, 2)
	for i := 0; i < 2; i++ {
		go func() {
			queued <- p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
		}()
	}
	enginestest.WaitFor(t, func() bool { return p.jobs.len() == 2 })
	drained := make(chan struct{})
	go func() { p.Drain(); close(drained) }()
	enginestest.WaitFor(t, func() bool { return p.jobs.closed.Load() })
	if err := p.Do(context.Background(), nil, RunOptions{}, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Do while draining: %v, want ErrClosed", err)
	}
	select {
	case <-drained:
		t.Fatal("Drain returned while a job was running")
	case <-time.After(20 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Errorf("the job running at Drain: %v", err)
	}
	for i := 0; i < 2; i++ {
		if err := <-queued; err != nil {
			t.Errorf("a job queued at Drain: %v, want it run", err)
		}
	}
	<-drained
	if n := f.Closed.Load(); n != 1 {
		t.Errorf("%d contexts closed, want 1", n)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close after Drain: %v", err)
	}

	p2, _, release2, done2 := blockedPool(t, 4)
	go func() {
		queued <- p2.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil })
	}()
	enginestest.WaitFor(t, func() bool { return p2.jobs.len() == 1 })
	drained = make(chan struct{})
	go func() { p2.Drain(); close(drained) }()
	enginestest.WaitFor(t, func() bool { return p2.jobs.closed.Load() })
	closed := make(chan struct{})
	go func() { p2.Close(); close(closed) }()
	enginestest.WaitFor(t, func() bool { return p2.abort.Load() })
	release2()
	<-done2
	if err := <-queued; !errors.Is(err, ErrClosed) {
		t.Errorf("a job queued at Drain, then Close: %v, want ErrClosed", err)
	}
	<-drained
	<-closed
}

func TestPoolNewContextFails(t *testing.T) {
	f := &fakeFactory{enginestest.Factory{FailFrom: 3}}
	_, err := newPool(f.newCtx, 1, PoolOptions{Instances: 4})
	if err == nil || !strings.Contains(err.Error(), "no memory for context") {
		t.Fatalf("newPool error = %v, want the context error", err)
	}
	if got, made := f.Closed.Load(), len(f.Made()); int(got) != made {
		t.Errorf("%d contexts made, %d closed", made, got)
	}
}

func TestPoolRunErrorSkipsCallback(t *testing.T) {
	runErr := &bridge.Error{Code: bridge.CodeInvalidArg, Msg: "input \"obs\": bad shape"}
	f := &fakeFactory{enginestest.Factory{RunErr: runErr}}
	p := newTestPool(t, f, PoolOptions{})
	called := false
	err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { called = true; return nil })
	var be *bridge.Error
	if !errors.As(err, &be) || be.Code != bridge.CodeInvalidArg {
		t.Fatalf("Do error = %v, want the bridge error", err)
	}
	if called {
		t.Error("callback ran after a failed run")
	}
}

func TestPoolCallbackErrorAndPanic(t *testing.T) {
	p := newTestPool(t, &fakeFactory{}, PoolOptions{})
	want := errors.New("encode failed")
	if err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return want }); !errors.Is(err, want) {
		t.Errorf("Do = %v, want the callback's error", err)
	}
	err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { panic("boom") })
	if err == nil || !strings.Contains(err.Error(), "boom") {
		t.Errorf("Do with a panicking callback = %v, want an error naming the panic", err)
	}
	if err := p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
		t.Errorf("Do after a panicking callback = %v, want the worker alive", err)
	}
}

func TestNewPoolNilEngine(t *testing.T) {
	if _, err := NewPool(nil, PoolOptions{}); err == nil {
		t.Fatal("NewPool(nil) succeeded")
	}
}

func BenchmarkPoolDo(b *testing.B) {
	f := &fakeFactory{}
	p, err := newPool(f.newCtx, 1, PoolOptions{Instances: 4})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	in := []bridge.Tensor{enginestest.F32Tensor(make([]float32, 64)...)}
	fn := func([]bridge.Tensor) error { return nil }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := p.Do(context.Background(), in, RunOptions{}, fn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
