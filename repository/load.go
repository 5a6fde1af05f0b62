package repository

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// runner builds the runner of a version: one pool over the contexts of all its engines (one
// engine per GPU, set.instances contexts each), behind a Batcher when batching is on and the
// model is batchable. es is never empty except in tests of versions the repository lacks.
func (r *Repository) runner(es []*bridge.Engine, set settings, stats *engines.Stats) (engines.Runner, error) {
	var e *bridge.Engine
	if len(es) > 0 {
		e = es[0]
	}
	if e != nil {
		stats.Batched = engines.Batchable(e.Batchable(), e.Inputs(), e.Outputs())
	}
	var warmup [][]bridge.Tensor
	if e != nil {
		var sizes []int
		if set.batching && engines.Batchable(e.Batchable(), e.Inputs(), e.Outputs()) {
			for _, n := range set.batcherOptions().PreferredBatchSizes {
				if n <= set.maxBatch {
					sizes = append(sizes, n)
				}
			}
		}
		warmup = engines.WarmupInputs(e.Inputs(), sizes)
	}
	p, err := r.newRunner(es, engines.PoolOptions{
		Instances: set.instances * max(len(es), 1), QueueLen: set.queueLen, Seed: set.seed, Stats: stats,
		PriorityLevels: set.levels, DefaultPriorityLevel: set.defLevel,
		LockOSThread: lockThreads(e, set.threads), Warmup: warmup,
	})
	if err != nil || !set.batching || e == nil || !engines.Batchable(e.Batchable(), e.Inputs(), e.Outputs()) {
		return p, err
	}
	bp, ok := p.(*engines.Pool)
	if !ok {
		return p, nil
	}
	return engines.NewBatcher(bp, e.Inputs(), e.Outputs(), set.batcherOptions())
}

// lockThreads reports whether the workers of an engine's pool lock their OS threads: only
// on the CPU when a context runs an OpenMP team of more than one thread (the team belongs to
// the thread that starts it; a worker moving between threads would start one per thread).
// The other contexts keep no per-thread state: a one-thread CPU context sets its OpenMP
// thread count on every run, and a GPU context makes its device current at the start of every
// run (cudaSetDevice) and keeps its stream, graphs and handles as process-wide objects. Their
// workers stay plain goroutines: handing a request to a locked worker and back costs two OS
// thread wake-ups (docs/engine.md: half the latency of a small policy over HTTP on the CPU;
// on a 16-core H100 machine, batch-1 HTTP p50 140 → 111 µs and 16-connection throughput +25%).
func lockThreads(e *bridge.Engine, threads int) bool {
	if e == nil {
		return true
	}
	return e.Backend() == "cpu" && threads > 1
}

// load builds one verified version, trying its backends in order, from the bytes of its
// model.onnx read and checked against the manifest in one step (Artifact.ReadFile); a failure
// is recorded in the version, never returned. art is nil only for a target the repository
// lacks.
func (r *Repository) load(t target, art *artifacts.Artifact) *Version {
	start := time.Now()
	v := &Version{
		name: t.model, version: t.version, semver: t.semver, dir: t.dir, set: t.set,
		state: StateUnavailable, drained: make(chan struct{}), stats: new(engines.Stats), obs: r.obs,
	}
	if r.obs != nil && t.missing == "" {
		r.obs.Loading(t.model, t.version)
	}
	defer func() {
		v.loadTime = time.Since(start)
		if r.obs != nil {
			v.stats.SetObservers(r.obs.Loaded(v))
		}
	}()
	if t.missing != "" {
		v.reason = t.missing
		return v
	}
	v.digest, v.signer = art.Digest, art.SignedBy
	onnx, err := art.ReadFile(ModelFile)
	if err != nil {
		v.reason = fmt.Sprintf("read model: %v", err)
		return v
	}
	external, err := art.ExternalData(onnx)
	if err != nil {
		v.reason = fmt.Sprintf("read model's external data: %v", err)
		return v
	}
	golden, err := art.Golden()
	if err != nil {
		v.reason = fmt.Sprintf("golden cases: %v", err)
		return v
	}
	backends := t.set.backends
	if len(backends) == 0 {
		backends = []string{""} // the library's default
	}
	tried := backends
	if !t.set.fallback {
		tried = backends[:1]
	}
	// errs: why each backend tried did not serve; refusals: those of backends this machine
	// has (a backend it does not have is skipped without a warning: the runtime logged its
	// state once at start).
	var errs, refusals []error
	absent := r.absentBackends()
	for _, b := range tried {
		es, devs, err := r.engines(onnx, external, art, t, b)
		if err == nil && golden != nil {
			// On the backend and devices the version would serve on, before it serves.
			if err = r.checkGoldenEngines(v, es, devs, b, golden); err != nil {
				closeEngines(es)
			}
		}
		if err == nil {
			var p engines.Runner
			var seqs *engines.Sequences
			if spec := t.set.sequence; spec != nil {
				if seqs, err = engines.NewSequences(*spec, es[0].Inputs(), es[0].Outputs()); err != nil {
					closeEngines(es)
					v.reason = err.Error() // the same for every backend: the signature is the model's
					return v
				}
			}
			fb, ferr := NewFallback(t.set.actionFb, es[0].Outputs())
			if ferr != nil {
				seqs.Close()
				closeEngines(es)
				v.reason = ferr.Error() // the same for every backend: the signature is the model's
				return v
			}
			if fb != nil && fb.Kind == FallbackLastAction && seqs != nil {
				seqs.KeepLast(true)
			}
			if p, err = r.runner(es, t.set, v.stats); err == nil {
				v.engine, v.engines, v.devices, v.runner, v.seqs, v.state = es[0], es, devs, p, seqs, StateReady
				v.fallback = fb
				v.inputs, v.batchOne = engines.BatchOne(es[0].Batchable(), es[0].Inputs())
				v.backend = cmp.Or(es[0].Backend(), b)
				if len(refusals) > 0 {
					r.log.Warn("model version fell back to a later backend", zap.String("model", t.model),
						zap.String("version", t.version), zap.String("backend", b), zap.Error(errors.Join(refusals...)))
				} else if len(errs) > 0 {
					r.log.Debug("model version skipped backends this machine does not have", zap.String("model", t.model),
						zap.String("version", t.version), zap.String("backend", b), zap.Error(errors.Join(errs...)))
				}
				return v
			}
			seqs.Close()
			closeEngines(es)
		}
		if len(backends) > 1 {
			err = fmt.Errorf("backend %q: %w", b, err)
		}
		errs = append(errs, err)
		if !absent[b] {
			refusals = append(refusals, err)
		}
	}
	msgs := make([]string, len(errs))
	for i, err := range errs {
		msgs[i] = err.Error()
	}
	v.reason = strings.Join(msgs, "; ")
	if len(tried) < len(backends) {
		v.reason += fmt.Sprintf("; fallback is off for this model (fallback: false), so %s was not tried",
			strings.Join(backends[len(tried):], ", "))
	}
	return v
}

// DeviceLister is an EngineLoader that lists the backends and the devices of a backend;
// *bridge.Runtime implements it. A loader without it builds every engine for device 0 and
// uses no engine cache.
type DeviceLister interface {
	Devices(backend string) ([]bridge.Device, error)
	Backends() []bridge.BackendInfo
}

// devicesOf returns the GPU ordinals a version runs on with backend b: those of want (nil:
// every GPU the backend lists), or nil for a backend without devices (cpu) and for one that
// lists none (it did not load: NewEngine says why). A wanted GPU the backend lacks is an error.
func (r *Repository) devicesOf(b string, want []int) ([]bridge.Device, error) {
	dl, ok := r.loader.(DeviceLister)
	if !ok || b == "" || b == "cpu" {
		return nil, nil
	}
	list, err := dl.Devices(b)
	if err != nil || len(list) == 0 {
		return nil, nil
	}
	have := make([]int, len(list))
	names := make([]string, len(list))
	for i, d := range list {
		have[i] = d.Ordinal
		names[i] = fmt.Sprintf("%d (%s, %s)", d.Ordinal, d.Name, d.Target)
	}
	if len(want) == 0 {
		return list, nil
	}
	var out []bridge.Device
	for _, g := range want {
		i := slices.Index(have, g)
		if i < 0 {
			return nil, fmt.Errorf("devices: GPU %d not found: %s has %d: %s", g, b, len(list), strings.Join(names, ", "))
		}
		out = append(out, list[i])
	}
	return out, nil
}

// engineOptions are the options of every engine of target t on backend b: its batch profile
// (settings.batchProfile) and backend parameters included.
func engineOptions(t target, art *artifacts.Artifact, b string) bridge.EngineOptions {
	opts := bridge.EngineOptions{Backend: b, Threads: t.set.threads, Name: t.model + "@" + t.version, Params: maps.Clone(t.set.params)}
	if art != nil {
		opts.MinBatch, opts.OptBatch, opts.MaxBatch = t.set.batchProfile(art.Manifest.IO)
	}
	return opts
}

// engines builds the engines of target t on backend b: one per GPU it selects (devicesOf),
// each from the artifact's engine cache for its architecture when one matches (gpuEngine),
// or one engine for a backend without devices. external: the model's external-data files as
// read from the artifact (Artifact.ExternalData). On a failure every engine built is closed.
func (r *Repository) engines(onnx []byte, external map[string][]byte, art *artifacts.Artifact, t target, b string) ([]*bridge.Engine, []int, error) {
	opts := engineOptions(t, art, b)
	opts.External = external
	if r.last != nil { // under applyMu, as every load is
		opts.MaxMemory = r.last.MaxModelMemory
	}
	devs, err := r.devicesOf(b, t.set.devices)
	if err != nil {
		return nil, nil, err
	}
	if len(devs) == 0 {
		e, err := r.loader.NewEngine(onnx, opts)
		if err != nil {
			return nil, nil, err
		}
		return []*bridge.Engine{e}, nil, nil
	}
	es := make([]*bridge.Engine, 0, len(devs))
	ords := make([]int, 0, len(devs))
	for _, d := range devs {
		opts.Device = d.Ordinal
		e, err := r.gpuEngine(onnx, art, t, opts, d)
		if err != nil {
			closeEngines(es)
			if len(devs) > 1 {
				err = fmt.Errorf("GPU %d: %w", d.Ordinal, err)
			}
			return nil, nil, err
		}
		es = append(es, e)
		ords = append(ords, d.Ordinal)
	}
	return es, ords, nil
}

// reasonRebuild ends the reason of a version refused for want of a matching engine cache.
const reasonRebuild = "rebuild engines (policyctl engines build --repository DIR --model M, or make engines), or set engine.build_engines: true"

// gpuEngine builds the engine of one GPU: from the artifact's engine cache for the device's
// architecture and the backend's version when one is listed and matches, else from the model
// unless t requires caches, starting from the artifact's timing cache of that folder when it
// has one. A cache that is stale (another model, backend version, target or options:
// artifacts.ErrStaleEngine), fails its checksum, or that the backend refuses (its own
// envelope check, "...; rebuild engines") is never used.
func (r *Repository) gpuEngine(onnx []byte, art *artifacts.Artifact, t target, opts bridge.EngineOptions, d bridge.Device) (*bridge.Engine, error) {
	log := r.log.With(zap.String("model", t.model), zap.String("version", t.version),
		zap.String("backend", opts.Backend), zap.Int("gpu", d.Ordinal), zap.String("target", d.Target))
	if art == nil || r.backendVersion(opts.Backend) == "" {
		return r.loader.NewEngine(onnx, opts)
	}
	bv := r.backendVersion(opts.Backend)
	opts.ModelDigest = "sha256:" + art.Manifest.File(ModelFile).SHA256
	dir := artifacts.EngineCacheDir(opts.Backend, bv, d.Target)
	_, data, err := art.EngineCache(opts.Backend, bv, d.Target, "")
	var problem string
	switch {
	case err != nil:
		problem = fmt.Sprintf("engine cache %s refused: %v", dir, err)
	case data == nil:
		problem = fmt.Sprintf("no engine cache %s in the artifact", dir)
	default:
		withCache := opts
		withCache.Cache = data
		e, err := r.loader.NewEngine(onnx, withCache)
		if err == nil {
			log.Info("engine loaded from its cache", zap.String("cache", dir), zap.Int("bytes", len(data)))
			return e, nil
		}
		var be *bridge.Error
		if !errors.As(err, &be) || be.Code != bridge.CodeInvalidArg {
			return nil, err // not about the cache: the backend cannot build it at all
		}
		problem = fmt.Sprintf("engine cache %s refused by the backend: %v", dir, err)
	}
	if t.set.needCache {
		return nil, fmt.Errorf("%s; %s", strings.TrimSuffix(problem, "; rebuild engines"), reasonRebuild)
	}
	tc, err := art.TimingCache(opts.Backend, bv, d.Target)
	if err != nil { // only a speed-up: build without it
		log.Warn("timing cache refused", zap.String("cache", dir), zap.Error(err))
		tc = nil
	}
	opts.TimingCache = tc
	log.Info("building the engine from the model", zap.String("why", problem), zap.Int("timing_cache_bytes", len(tc)))
	return r.loader.NewEngine(onnx, opts)
}

// absentBackends are the backends the loader lists as not available on this machine (plugin
// not installed or not loadable, no driver, no device): nil when the loader lists none.
func (r *Repository) absentBackends() map[string]bool {
	dl, ok := r.loader.(DeviceLister)
	if !ok {
		return nil
	}
	var out map[string]bool
	for _, bi := range dl.Backends() {
		if !bi.Available {
			if out == nil {
				out = map[string]bool{}
			}
			out[bi.Name] = true
		}
	}
	return out
}

// backendVersion is the version the loader reports for backend b ("" when unknown).
func (r *Repository) backendVersion(b string) string {
	dl, ok := r.loader.(DeviceLister)
	if !ok {
		return ""
	}
	for _, bi := range dl.Backends() {
		if bi.Name == b {
			return bi.Version
		}
	}
	return ""
}

func closeEngines(es []*bridge.Engine) {
	for _, e := range es {
		e.Close()
	}
}
