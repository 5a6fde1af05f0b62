package engines

import (
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// TestSpreadContexts: a pool over several engines gets the same number of contexts from
// each, and its one queue feeds all of them.
func TestSpreadContexts(t *testing.T) {
	fs := []*fakeFactory{{}, {}}
	var mu sync.Mutex
	asked := map[int]int{}
	newCtx := spreadContexts(len(fs), func(k int) (ExecContext, error) {
		mu.Lock()
		asked[k]++
		mu.Unlock()
		return fs[k].newCtx()
	})
	p, err := newPool(newCtx, 1, PoolOptions{Instances: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !reflect.DeepEqual(asked, map[int]int{0: 2, 1: 2}) {
		t.Errorf("contexts per engine = %v, want 2 each", asked)
	}
	// Hold every worker in a run at once: all four contexts, both engines', take a request.
	started, gate := make(chan struct{}), make(chan struct{})
	for _, f := range fs {
		for _, c := range f.Made() {
			c.Hold(started, gate)
		}
	}
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			if err := p.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(float32(i))}, RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	for range 4 {
		<-started
	}
	close(gate)
	wg.Wait()
	for k, f := range fs {
		for _, c := range f.Made() {
			if c.Out == nil {
				t.Errorf("a context of engine %d ran nothing", k)
			}
		}
	}

	failing := spreadContexts(2, func(k int) (ExecContext, error) {
		if k == 1 {
			return nil, errors.New("no memory")
		}
		return (&fakeFactory{}).newCtx()
	})
	if _, err := newPool(failing, 1, PoolOptions{Instances: 2}); err == nil || !strings.Contains(err.Error(), "engine 1 of 2: no memory") {
		t.Errorf("newPool with a failing engine = %v", err)
	}
}
