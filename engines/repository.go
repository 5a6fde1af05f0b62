package engines

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.uber.org/zap"

	"github.com/policyd/policyd/bridge"
)

// ModelFile is the name of the ONNX file inside a version folder.
const ModelFile = "model.onnx"

// ErrNotFound matches (with errors.Is) the error of a lookup of an unknown model or version.
var ErrNotFound = errors.New("engines: not found")

// NotFoundError is returned by Repository.Get for an unknown model or version. It matches
// ErrNotFound with errors.Is.
type NotFoundError struct {
	Model   string
	Version string // "" when the model itself is unknown
}

// Error says which model or version is unknown.
func (e *NotFoundError) Error() string {
	if e.Version == "" {
		return fmt.Sprintf("unknown model %q", e.Model)
	}
	return fmt.Sprintf("unknown version %q of model %q", e.Version, e.Model)
}

// Is reports whether target is ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// UnavailableError is returned by ModelVersion.Do for a version that is not ready; Reason says
// why (the load error, or that the repository was closed).
type UnavailableError struct {
	Model   string
	Version string
	Reason  string
}

// Error names the version and says why it is not ready.
func (e *UnavailableError) Error() string {
	return fmt.Sprintf("model %q version %q is not ready: %s", e.Model, e.Version, e.Reason)
}

// State is the state of a model version.
type State int32

// States of a model version.
const (
	// StateUnavailable: the version failed to load (see ModelVersion.Reason) or was closed.
	StateUnavailable State = iota
	// StateReady: the version is loaded and serves requests.
	StateReady
)

// String returns "READY" or "UNAVAILABLE", the names Triton uses.
func (s State) String() string {
	switch s {
	case StateReady:
		return "READY"
	case StateUnavailable:
		return "UNAVAILABLE"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// EngineLoader builds an engine from ONNX bytes. *bridge.Runtime implements it.
type EngineLoader interface {
	NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error)
}

// ModelVersion is one version of one model of a Repository: its engine and the pool that runs
// it, or the reason it is unavailable. It is safe for concurrent use.
type ModelVersion struct {
	name    string
	version string
	semver  *semver.Version
	dir     string

	engine   *bridge.Engine // nil when the load failed
	runner   Runner         // nil when the load failed
	loadTime time.Duration

	mu     sync.RWMutex
	state  State
	reason string
}

// Name is the model's name (its folder name).
func (v *ModelVersion) Name() string { return v.name }

// Version is the version's folder name as written ("1", "1.2.0", "v2.0.0").
func (v *ModelVersion) Version() string { return v.version }

// SemVer is the parsed version (an integer N is N.0.0).
func (v *ModelVersion) SemVer() *semver.Version { return v.semver }

// Dir is the version's folder.
func (v *ModelVersion) Dir() string { return v.dir }

// State is the version's current state.
func (v *ModelVersion) State() State {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.state
}

// Reason says why the version is unavailable ("" when ready).
func (v *ModelVersion) Reason() string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.reason
}

// Ready reports whether the version serves requests and, when not, why.
func (v *ModelVersion) Ready() (bool, string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.state == StateReady, v.reason
}

// LoadDuration is how long reading and building the version took.
func (v *ModelVersion) LoadDuration() time.Duration { return v.loadTime }

// Backend is the backend the version's engine runs on ("" when it failed to load).
func (v *ModelVersion) Backend() string {
	if v.engine == nil {
		return ""
	}
	return v.engine.Backend()
}

// Inputs is the model's input signature (nil when it failed to load).
func (v *ModelVersion) Inputs() []bridge.IOInfo {
	if v.engine == nil {
		return nil
	}
	return v.engine.Inputs()
}

// Outputs is the model's output signature (nil when it failed to load).
func (v *ModelVersion) Outputs() []bridge.IOInfo {
	if v.engine == nil {
		return nil
	}
	return v.engine.Outputs()
}

// Batchable reports whether the model takes any batch size on a shared dimension 0.
func (v *ModelVersion) Batchable() bool {
	return v.engine != nil && v.engine.Batchable()
}

// Do runs the model once; see Pool.Do for the contract of inputs, fn and the errors. A version
// that is not ready returns an *UnavailableError; ErrOverloaded and ErrClosed come wrapped with
// the model and version. Errors of the run itself (*bridge.Error) and of fn are returned as
// they are.
func (v *ModelVersion) Do(ctx context.Context, inputs []bridge.Tensor, fn func(outputs []bridge.Tensor) error) error {
	if v.runner == nil {
		return &UnavailableError{Model: v.name, Version: v.version, Reason: v.Reason()}
	}
	err := v.runner.Do(ctx, inputs, fn)
	if err == ErrOverloaded || err == ErrClosed {
		return fmt.Errorf("model %q version %q: %w", v.name, v.version, err)
	}
	return err
}

// close stops the pool, then closes the engine.
func (v *ModelVersion) close() {
	v.mu.Lock()
	if v.state == StateReady {
		v.state, v.reason = StateUnavailable, "repository closed"
	}
	v.mu.Unlock()
	if v.runner != nil {
		v.runner.Close()
	}
	if v.engine != nil {
		v.engine.Close()
	}
}

// RepositoryOptions configure OpenRepository. Zero values pick the defaults.
type RepositoryOptions struct {
	// Pool configures the pool of every model version.
	Pool PoolOptions
	// Backend to build engines for ("" = the library's default, "cpu").
	Backend string
	// Threads per context run (0 = the library's default, 1).
	Threads int
	// Logger receives one line per loaded version and a warning per skipped folder
	// (nil = no logs).
	Logger *zap.Logger
}

// Repository is the set of model versions found in a model repository folder laid out as
// DIR/<model>/<version>/model.onnx. A version that fails to load stays listed as UNAVAILABLE
// with its reason while the others serve. It is safe for concurrent use.
type Repository struct {
	dir    string
	mu     sync.RWMutex
	models map[string][]*ModelVersion // versions lowest first
	names  []string                   // sorted model names
	closed bool
	once   sync.Once
}

// OpenRepository scans dir and loads every model version it finds with loader (which the
// caller owns and closes after Repository.Close). It fails only when dir cannot be read; a
// folder that is not a version is skipped with a warning, and a version that fails to load is
// kept as UNAVAILABLE.
func OpenRepository(loader EngineLoader, dir string, opts RepositoryOptions) (*Repository, error) {
	log := opts.Logger
	if log == nil {
		log = zap.NewNop()
	}
	found, err := scan(dir, log)
	if err != nil {
		return nil, err
	}
	r := &Repository{dir: dir, models: make(map[string][]*ModelVersion)}
	for _, f := range found {
		v := load(loader, f, opts)
		if ok, reason := v.Ready(); ok {
			log.Info("model version loaded",
				zap.String("model", v.name), zap.String("version", v.version),
				zap.String("state", v.State().String()), zap.String("backend", v.Backend()),
				zap.Duration("load_time", v.loadTime))
		} else {
			log.Warn("model version unavailable",
				zap.String("model", v.name), zap.String("version", v.version),
				zap.String("state", v.State().String()), zap.String("reason", reason),
				zap.Duration("load_time", v.loadTime))
		}
		if _, ok := r.models[v.name]; !ok {
			r.names = append(r.names, v.name)
		}
		r.models[v.name] = append(r.models[v.name], v)
	}
	sort.Strings(r.names)
	return r, nil
}

// found is a version folder that scan accepted.
type found struct {
	model, version string
	semver         *semver.Version
	dir            string
}

// scan lists the version folders of dir: models in byte order, versions lowest first.
func scan(dir string, log *zap.Logger) ([]found, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("model repository %q: not a directory", dir)
	}
	models, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	var out []found
	for _, m := range models {
		if strings.HasPrefix(m.Name(), ".") {
			continue
		}
		mdir := filepath.Join(dir, m.Name())
		if !isDir(mdir) {
			continue // a file beside the models (README, config): not ours
		}
		entries, err := os.ReadDir(mdir)
		if err != nil {
			log.Warn("skipping model folder", zap.String("model", m.Name()), zap.Error(err))
			continue
		}
		var versions []found
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			vdir := filepath.Join(mdir, e.Name())
			if !isDir(vdir) {
				continue // e.g. a Triton config.pbtxt beside the versions
			}
			sv, err := ParseVersion(e.Name())
			if err != nil {
				log.Warn("skipping folder that is not a version",
					zap.String("model", m.Name()), zap.String("folder", vdir), zap.Error(err))
				continue
			}
			versions = append(versions, found{model: m.Name(), version: e.Name(), semver: sv, dir: vdir})
		}
		sort.SliceStable(versions, func(i, j int) bool { return versions[i].semver.LessThan(versions[j].semver) })
		n := 0
		for i, v := range versions {
			if n > 0 && versions[n-1].semver.Equal(v.semver) {
				log.Warn("skipping version folder that names the same version as another",
					zap.String("model", m.Name()), zap.String("folder", v.dir),
					zap.String("kept", versions[n-1].version))
				continue
			}
			versions[n] = versions[i]
			n++
		}
		if n == 0 {
			log.Warn("skipping model folder without version folders", zap.String("model", m.Name()), zap.String("folder", mdir))
			continue
		}
		out = append(out, versions[:n]...)
	}
	return out, nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path) // follows symbolic links
	return err == nil && fi.IsDir()
}

// load reads and builds one version; a failure is recorded in the version, never returned.
func load(loader EngineLoader, f found, opts RepositoryOptions) *ModelVersion {
	start := time.Now()
	v := &ModelVersion{name: f.model, version: f.version, semver: f.semver, dir: f.dir, state: StateUnavailable}
	defer func() { v.loadTime = time.Since(start) }()

	onnx, err := os.ReadFile(filepath.Join(f.dir, ModelFile))
	if err != nil {
		v.reason = fmt.Sprintf("read model: %v", err)
		return v
	}
	e, err := loader.NewEngine(onnx, bridge.EngineOptions{
		Backend: opts.Backend, Threads: opts.Threads, Name: f.model + "@" + f.version,
	})
	if err != nil {
		v.reason = err.Error()
		return v
	}
	p, err := NewPool(e, opts.Pool)
	if err != nil {
		e.Close()
		v.reason = err.Error()
		return v
	}
	v.engine, v.runner, v.state = e, p, StateReady
	return v
}

// Dir is the repository folder.
func (r *Repository) Dir() string { return r.dir }

// Models lists the model names, sorted.
func (r *Repository) Models() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]string(nil), r.names...)
}

// Versions lists the versions of model, lowest first (nil for an unknown model).
func (r *Repository) Versions(model string) []*ModelVersion {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return append([]*ModelVersion(nil), r.models[model]...)
}

// All lists every version of every model, models sorted by name, versions lowest first.
func (r *Repository) All() []*ModelVersion {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []*ModelVersion
	for _, n := range r.names {
		out = append(out, r.models[n]...)
	}
	return out
}

// Ready reports whether every version found is ready (true for an empty repository, false
// once closed).
func (r *Repository) Ready() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return false
	}
	for _, vs := range r.models {
		for _, v := range vs {
			if v.State() != StateReady {
				return false
			}
		}
	}
	return true
}

// Get returns a version of model. version is a folder name ("1", "v1.2.0") or a version equal
// to one ("1.0.0" finds folder "1"). version "" picks the default: the highest version that is
// ready or, when none is, the highest one, so that its Reason explains why. An unknown model or
// version is a *NotFoundError; after Close, Get returns ErrClosed.
func (r *Repository) Get(model, version string) (*ModelVersion, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, ErrClosed
	}
	vs, ok := r.models[model]
	if !ok {
		return nil, &NotFoundError{Model: model}
	}
	if v := pick(vs, version); v != nil {
		return v, nil
	}
	return nil, &NotFoundError{Model: model, Version: version}
}

// pick chooses from versions (lowest first) the one version names; see Repository.Get.
func pick(vs []*ModelVersion, version string) *ModelVersion {
	if len(vs) == 0 {
		return nil
	}
	if version == "" {
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].State() == StateReady {
				return vs[i]
			}
		}
		return vs[len(vs)-1]
	}
	for _, v := range vs {
		if v.version == version {
			return v
		}
	}
	sv, err := ParseVersion(version)
	if err != nil {
		return nil
	}
	for _, v := range vs {
		if v.semver.Equal(sv) {
			return v
		}
	}
	return nil
}

// Close stops every version's pool, then closes every engine. It does not close the loader
// (the runtime), which the caller owns. Idempotent and safe for concurrent use.
func (r *Repository) Close() error {
	r.once.Do(func() {
		r.mu.Lock()
		r.closed = true
		var all []*ModelVersion
		for _, n := range r.names {
			all = append(all, r.models[n]...)
		}
		r.mu.Unlock()
		var wg sync.WaitGroup
		for _, v := range all {
			if v.runner != nil {
				wg.Add(1)
				go func() { defer wg.Done(); v.runner.Close() }()
			}
		}
		wg.Wait() // every pool first: its workers close their contexts
		for _, v := range all {
			v.close() // Runner.Close is idempotent; then the engine
		}
	})
	return nil
}
