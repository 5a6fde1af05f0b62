package repository

import (
	"crypto/ed25519"

	"go.uber.org/zap"

	"github.com/policyd/policyd/engines"
)

// repositoryOptions configure openRepository, which tests use to serve every version of a
// folder with the same options. Zero values pick the defaults.
type repositoryOptions struct {
	// Pool configures the pool of every model version.
	Pool engines.PoolOptions
	// Backend to build engines for ("" = the library's default, "cpu").
	Backend string
	// Threads per context run (0 = the library's default, 1).
	Threads int
	// Logger receives one line per loaded version and one per refused one (nil = no logs).
	Logger *zap.Logger
	// TrustedKeys and OnVerifyFailure are those of Desired.
	TrustedKeys     []ed25519.PublicKey
	OnVerifyFailure func(model, version, reason string)
}

// openRepository scans dir and loads every version of every model it finds with loader (which
// the caller owns and closes after Repository.Close), all with the same options: it is
// NewRepository followed by an Apply of that desired state. It fails only when dir cannot be
// read; a version that fails verification or fails to load is kept as UNAVAILABLE.
func openRepository(loader EngineLoader, dir string, opts repositoryOptions) (*Repository, error) {
	r := NewRepository(loader, opts.Logger)
	d := Desired{
		Dir: dir,
		Default: ModelSpec{
			Instances: max(opts.Pool.Instances, 0), Threads: max(opts.Threads, 0),
		},
		QueueLen:        max(opts.Pool.QueueLen, 0),
		Seed:            opts.Pool.Seed,
		TrustedKeys:     opts.TrustedKeys,
		OnVerifyFailure: opts.OnVerifyFailure,
	}
	if opts.Backend != "" {
		d.Default.Backends = []string{opts.Backend}
	}
	if _, err := r.Apply(d); err != nil {
		return nil, err
	}
	return r, nil
}
