package repository

import (
	"context"
	"sync"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

func TestQueueDepthAndInFlight(t *testing.T) {
	f := &fakeFactory{enginestest.Factory{Started: make(chan struct{}, 8), Gate: make(chan struct{})}}
	p := newTestPool(t, f, engines.PoolOptions{Instances: 1, QueueLen: 8})
	v := &Version{runner: p}
	fn := func([]bridge.Tensor) error { return nil }
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			_ = p.Do(context.Background(), []bridge.Tensor{enginestest.F32Tensor(1)}, engines.RunOptions{}, fn)
		})
	}
	<-f.Started // one runs, two wait
	enginestest.WaitFor(t, func() bool { return v.QueueDepth() == 2 })
	v.refs.Add(2)
	if n := v.InFlight(); n != 2 {
		t.Errorf("in flight %d, want 2", n)
	}
	close(f.Gate)
	wg.Wait()
	if d := v.QueueDepth(); d != 0 {
		t.Errorf("queue depth %d after the runs", d)
	}
	if d := (&Version{}).QueueDepth(); d != 0 {
		t.Errorf("queue depth of a version not loaded: %d", d)
	}
}
