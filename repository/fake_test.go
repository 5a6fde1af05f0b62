package repository

// Fakes of engines' tests, for pools that run no native code.

import (
	"testing"

	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

// fakeFactory makes enginestest's fake contexts for a pool.
type fakeFactory struct{ enginestest.Factory }

func (f *fakeFactory) newCtx() (engines.ExecContext, error) { return f.New() }

func newTestPool(t *testing.T, f *fakeFactory, opts engines.PoolOptions) *engines.Pool {
	t.Helper()
	p, err := engines.NewPoolFunc(f.newCtx, 1, opts)
	if err != nil {
		t.Fatalf("newPool: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}
