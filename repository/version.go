package repository

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.uber.org/zap"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// State is the state of a model version.
type State int32

// States of a model version.
const (
	// StateUnavailable: the version failed to load (see Version.Reason) or was closed.
	StateUnavailable State = iota
	// StateReady: the version is loaded and serves requests.
	StateReady
	// StateUnloaded: the version is in the repository but not served: unloaded through
	// Repository.Unload, or not selected by the desired state. Only Index lists it.
	StateUnloaded
)

// String returns "READY", "UNAVAILABLE" or "UNLOADED", the names Triton uses.
func (s State) String() string {
	switch s {
	case StateReady:
		return "READY"
	case StateUnavailable:
		return "UNAVAILABLE"
	case StateUnloaded:
		return "UNLOADED"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// EngineLoader builds an engine from ONNX bytes. *bridge.Runtime implements it.
type EngineLoader interface {
	NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error)
}

// Version is one version of one model of a Repository: its engine and the pool that runs
// it, or the reason it is unavailable. It is safe for concurrent use.
//
// A Version obtained from Repository.Acquire is held until its Release: an Apply that
// unloads or replaces it waits for every holder to release it before it drains its pool and
// closes its engine, so a holder never sees it closed. One obtained from Get, Versions or All
// is not held: its Do may fail with ErrClosed once an Apply unloaded it.
type Version struct {
	name    string
	version string
	semver  *semver.Version // nil only for a model that is not in the repository at all
	dir     string          // "" when the version is not in the repository
	set     settings        // effective settings it was (or would have been) loaded with
	digest  string          // the verified artifact's digest ("" when verification failed)
	signer  string          // key ID of the verified signature ("" when unsigned)
	checks  string          // what it was last verified against: digest pin, trusted key IDs (under Repository.applyMu)

	engine   *bridge.Engine     // nil when the load failed; engines[0]
	inputs   []bridge.IOInfo    // the signature served: engine.Inputs(), or engines.BatchOne's
	batchOne bool               // the graph fixes the batch at 1 (engines.BatchOne)
	engines  []*bridge.Engine   // one per GPU of devices; just engine on a backend without devices
	devices  []int              // the GPU ordinals of engines; nil on a backend without devices
	backend  string             // engine.Backend(), or the backend asked for when that is "" (test fakes)
	runner   engines.Runner     // nil when the load failed
	seqs     *engines.Sequences // nil without a sequence spec or when the load failed
	fallback *Fallback          // the deadline fallback action resolved at load; nil: none
	loadTime time.Duration
	golden   []GoldenCheck                           // the golden checks of the load (GoldenChecks)
	stats    *engines.Stats                          // nil for a version that was never loaded
	obs      VersionObserver                         // the repository's when the version was made; nil: none
	trace    atomic.Pointer[engines.TraceAttributes] // span attributes, set by the first traced request

	// Holders: refs counts Acquire calls not yet released. retiring is set once the version
	// left the served table; drained is closed when refs drops to 0 after that.
	refs      atomic.Int64
	retiring  atomic.Bool
	drained   chan struct{}
	drainOnce sync.Once

	mu     sync.RWMutex
	state  State
	reason string
}

// Name is the model's name (its folder name).
func (v *Version) Name() string { return v.name }

// Version is the version's folder name, a canonical semantic version ("1.2.0",
// "1.3.0-rc.1"); a folder whose name is not one is listed under that name, UNAVAILABLE. For a
// model the desired state lists but the repository lacks, the version asked for ("" for every
// version or a constraint).
func (v *Version) Version() string { return v.version }

// Digest is the digest of the verified artifact the version was loaded from,
// "sha256:<hex of manifest.json>" ("" when it failed verification or is not in the
// repository).
func (v *Version) Digest() string { return v.digest }

// Signer is the key ID of the trusted key whose signature of the manifest was verified, or
// the key ID manifest.sig names when no trusted keys are configured; "" when unsigned.
func (v *Version) Signer() string { return v.signer }

// Dir is the version's folder ("" when the repository lacks it).
func (v *Version) Dir() string { return v.dir }

// spec is the effective settings the version was loaded with (or failed to load with):
// Name, Version, Backends in preference order (nil for the library's default), Instances,
// Threads (0 for the library's default) and Sequence (its defaults resolved).
func (v *Version) spec() ModelSpec {
	return ModelSpec{
		Name: v.name, Version: v.version, Backends: slices.Clone(v.set.backends),
		Instances: v.set.instances, Threads: v.set.threads, Sequence: v.set.sequence,
	}
}

// State is the version's current state.
func (v *Version) State() State {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.state
}

// Reason says why the version is unavailable. For a ready version it is "", or a warning
// about the version that serves: its files failed verification after it loaded and
// Desired.KeepTampered keeps it serving.
func (v *Version) Reason() string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.reason
}

// Ready reports whether the version serves requests and, when not, why (when it does, the
// warning Reason describes, if any).
func (v *Version) Ready() (bool, string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.state == StateReady, v.reason
}

// warn sets the warning of a ready version ("" clears it) and returns the previous one; a
// version that is not ready keeps its reason.
func (v *Version) warn(reason string) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.state != StateReady {
		return ""
	}
	was := v.reason
	v.reason = reason
	return was
}

// LoadDuration is how long reading and building the version took.
func (v *Version) LoadDuration() time.Duration { return v.loadTime }

// Backend is the backend the version's engine runs on ("" when it failed to load).
func (v *Version) Backend() string {
	if v.engine == nil {
		return ""
	}
	return v.backend
}

// Inputs is the model's input signature (nil when it failed to load). For a model whose
// graph fixes the batch at 1 while its inputs declare dimension 0 free, dimension 0 is 1
// (see engines.BatchOne and BatchOne): what the model takes, not what it declares.
func (v *Version) Inputs() []bridge.IOInfo {
	if v.engine == nil {
		return nil
	}
	if v.inputs != nil {
		return v.inputs
	}
	return v.engine.Inputs()
}

// BatchOne reports whether the model's inputs declare a free dimension 0 that its graph fixes
// at 1 (a Reshape to [1, …]): the engine is not batchable and the version serves batch 1
// only, which Inputs says with a dimension 0 of 1.
func (v *Version) BatchOne() bool { return v.batchOne }

// Outputs is the model's output signature (nil when it failed to load).
func (v *Version) Outputs() []bridge.IOInfo {
	if v.engine == nil {
		return nil
	}
	return v.engine.Outputs()
}

// Sequences is the state of the version's live sequences; nil when the version keeps none
// (no ModelSpec.Sequence, or not loaded). It is closed, dropping every state, when the version
// is retired.
func (v *Version) Sequences() *engines.Sequences { return v.seqs }

// Stats is the version's statistics (Triton's statistics extension): the runner records the
// queue and compute stages, the HTTP layer each request's outcome (Stats.RecordRequest). Nil
// for a version refused before loading; a nil *Stats records nothing and reads as zeros.
func (v *Version) Stats() *engines.Stats { return v.stats }

// Batchable reports whether the model takes any batch size on a shared dimension 0.
func (v *Version) Batchable() bool {
	return v.engine != nil && v.engine.Batchable()
}

// traceAttributes returns v's span attributes (engines.RunOptions.Version), made once.
func (v *Version) traceAttributes() *engines.TraceAttributes {
	if ta := v.trace.Load(); ta != nil {
		return ta
	}
	v.trace.CompareAndSwap(nil, engines.NewTraceAttributes(v.name, v.version, v.Backend(), v.Device()))
	return v.trace.Load()
}

// Do runs the model once; see Pool.Do for the contract of inputs, fn and the errors. A version
// that is not ready returns an *UnavailableError; ErrOverloaded and ErrClosed come wrapped with
// the model and version. Errors of the run itself (*bridge.Error) and of fn are returned as
// they are.
func (v *Version) Do(ctx context.Context, inputs []bridge.Tensor, opts engines.RunOptions, fn func(outputs []bridge.Tensor) error) error {
	if v.runner == nil {
		return &UnavailableError{Model: v.name, Version: v.version, Reason: v.Reason()}
	}
	if opts.Trace != nil {
		opts.Version = v.traceAttributes()
	}
	err := v.runner.Do(ctx, inputs, opts, fn)
	if err == engines.ErrOverloaded || err == engines.ErrClosed {
		return fmt.Errorf("model %q version %q: %w", v.name, v.version, err)
	}
	return err
}

// Release ends one use begun by Repository.Acquire. Call it exactly once per successful
// Acquire, after the last use of the version (for a request: once its response is encoded).
// Calling it more often than Acquire is a bug and panics.
func (v *Version) Release() {
	n := v.refs.Add(-1)
	if n < 0 {
		panic(fmt.Sprintf("repository: %s@%s released more often than acquired", v.name, v.version))
	}
	// Sequentially consistent atomics: either retire sees this decrement, or this load sees
	// retiring set and signals.
	if n == 0 && v.retiring.Load() {
		v.drainOnce.Do(func() { close(v.drained) })
	}
}

// tryHold takes a reference unless the version is being retired.
func (v *Version) tryHold() bool {
	v.refs.Add(1)
	if !v.retiring.Load() {
		return true
	}
	v.Release()
	return false
}

// holderWarnEvery is how often retire logs that it still waits for holders.
var holderWarnEvery = 10 * time.Second

// retire takes a version out of service, after it left the served table: it waits until no
// holder remains (logging a warning every holderWarnEvery meanwhile), marks the version
// unavailable with reason, drains its pool (queued jobs of non-holders still run; each worker
// closes its context on its own thread), then closes the engine. It returns how long all of
// that took.
func (v *Version) retire(reason string, log *zap.Logger) time.Duration {
	start := time.Now()
	v.retiring.Store(true)
	if v.obs != nil {
		v.obs.Unloading(v)
		defer v.obs.Unloaded(v)
	}
	if v.refs.Load() > 0 {
		tick := time.NewTicker(holderWarnEvery)
	wait:
		for {
			select {
			case <-v.drained:
				break wait
			case <-tick.C:
				log.Warn("unloading model version: still waiting for requests that hold it",
					zap.String("model", v.name), zap.String("version", v.version),
					zap.Int64("holders", v.refs.Load()), zap.Duration("waited", time.Since(start)))
			}
		}
		tick.Stop()
	}
	v.mu.Lock()
	if v.state == StateReady {
		v.state, v.reason = StateUnavailable, reason
	}
	v.mu.Unlock()
	if v.runner != nil {
		v.runner.Drain()
	}
	v.seqs.Close()
	closeEngines(v.engines)
	return time.Since(start)
}

// retireAll retires versions in parallel and returns how long each took.
func retireAll(vs []*Version, reason string, log *zap.Logger) []time.Duration {
	took := make([]time.Duration, len(vs))
	var wg sync.WaitGroup
	for i, v := range vs {
		wg.Go(func() { took[i] = v.retire(reason, log) })
	}
	wg.Wait()
	return took
}
