package engines

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

// ModelFile is the name of the ONNX file inside a version folder.
const ModelFile = artifacts.ModelFile

// ErrNotFound matches (with errors.Is) the error of a lookup of an unknown model or version.
var ErrNotFound = errors.New("engines: not found")

// NotFoundError is returned by Repository.Get for an unknown model or version. It matches
// ErrNotFound with errors.Is.
type NotFoundError struct {
	Model   string
	Version string // "" when the model itself is unknown
	Why     string // optional: why it is unknown ("not selected by the configuration ...")
}

// Error says which model or version is unknown, and why when known.
func (e *NotFoundError) Error() string {
	s := fmt.Sprintf("unknown version %q of model %q", e.Version, e.Model)
	if e.Version == "" {
		s = fmt.Sprintf("unknown model %q", e.Model)
	}
	if e.Why != "" {
		s += ": " + e.Why
	}
	return s
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
	if e.Version == "" { // a model the desired state lists but the repository lacks
		return fmt.Sprintf("model %q is not ready: %s", e.Model, e.Reason)
	}
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

// ModelVersion is one version of one model of a Repository: its engine and the pool that runs
// it, or the reason it is unavailable. It is safe for concurrent use.
//
// A ModelVersion obtained from Repository.Acquire is held until its Release: an Apply that
// unloads or replaces it waits for every holder to release it before it drains its pool and
// closes its engine, so a holder never sees it closed. One obtained from Get, Versions or All
// is not held: its Do may fail with ErrClosed once an Apply unloaded it.
type ModelVersion struct {
	name    string
	version string
	semver  *semver.Version // nil only for a model that is not in the repository at all
	dir     string          // "" when the version is not in the repository
	set     settings        // effective settings it was (or would have been) loaded with
	digest  string          // the verified artifact's digest ("" when verification failed)
	signer  string          // key ID of the verified signature ("" when unsigned)
	checks  string          // what it was last verified against: digest pin, trusted key IDs (under Repository.applyMu)

	engine   *bridge.Engine   // nil when the load failed; engines[0]
	engines  []*bridge.Engine // one per GPU of devices; just engine on a backend without devices
	devices  []int            // the GPU ordinals of engines; nil on a backend without devices
	backend  string           // engine.Backend(), or the backend asked for when that is "" (test fakes)
	runner   Runner           // nil when the load failed
	seqs     *Sequences       // nil without a sequence spec or when the load failed
	loadTime time.Duration
	stats    *Stats                    // nil for a version that was never loaded
	obs      VersionObserver           // the repository's when the version was made; nil: none
	trace    atomic.Pointer[traceInfo] // span attributes, set by the first traced request

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
func (v *ModelVersion) Name() string { return v.name }

// Version is the version's folder name, a canonical semantic version ("1.2.0",
// "1.3.0-rc.1"); a folder whose name is not one is listed under that name, UNAVAILABLE. For a
// model the desired state lists but the repository lacks, the version asked for ("" for every
// version or a constraint).
func (v *ModelVersion) Version() string { return v.version }

// SemVer is the parsed version; nil for a folder whose name is not a canonical version, and
// for a model the desired state lists but the repository lacks.
func (v *ModelVersion) SemVer() *semver.Version { return v.semver }

// Digest is the digest of the verified artifact the version was loaded from,
// "sha256:<hex of manifest.json>" ("" when it failed verification or is not in the
// repository).
func (v *ModelVersion) Digest() string { return v.digest }

// Signer is the key ID of the trusted key whose signature of the manifest was verified, or
// the key ID manifest.sig names when no trusted keys are configured; "" when unsigned.
func (v *ModelVersion) Signer() string { return v.signer }

// Dir is the version's folder ("" when the repository lacks it).
func (v *ModelVersion) Dir() string { return v.dir }

// Spec is the effective settings the version was loaded with (or failed to load with):
// Name, Version, Backends in preference order (nil for the library's default), Instances and
// Threads (0 for the library's default).
func (v *ModelVersion) Spec() ModelSpec {
	return ModelSpec{
		Name: v.name, Version: v.version, Backends: v.set.backendList(),
		Instances: v.set.instances, Threads: v.set.threads, Sequence: parseSequenceKey(v.set.sequence),
	}
}

// State is the version's current state.
func (v *ModelVersion) State() State {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.state
}

// Reason says why the version is unavailable. For a ready version it is "", or a warning
// about the version that serves: its files failed verification after it loaded and
// Desired.KeepTampered keeps it serving.
func (v *ModelVersion) Reason() string {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.reason
}

// Ready reports whether the version serves requests and, when not, why (when it does, the
// warning Reason describes, if any).
func (v *ModelVersion) Ready() (bool, string) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.state == StateReady, v.reason
}

// warn sets the warning of a ready version ("" clears it) and returns the previous one; a
// version that is not ready keeps its reason.
func (v *ModelVersion) warn(reason string) string {
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
func (v *ModelVersion) LoadDuration() time.Duration { return v.loadTime }

// Backend is the backend the version's engine runs on ("" when it failed to load).
func (v *ModelVersion) Backend() string {
	if v.engine == nil {
		return ""
	}
	return v.backend
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

// Sequences is the state of the version's live sequences; nil when the version keeps none
// (no ModelSpec.Sequence, or not loaded). It is closed, dropping every state, when the version
// is retired.
func (v *ModelVersion) Sequences() *Sequences { return v.seqs }

// Stats is the version's statistics (Triton's statistics extension): the runner records the
// queue and compute stages, the HTTP layer each request's outcome (Stats.RecordRequest). Nil
// for a version refused before loading; a nil *Stats records nothing and reads as zeros.
func (v *ModelVersion) Stats() *Stats { return v.stats }

// Batchable reports whether the model takes any batch size on a shared dimension 0.
func (v *ModelVersion) Batchable() bool {
	return v.engine != nil && v.engine.Batchable()
}

// Do runs the model once; see Pool.Do for the contract of inputs, fn and the errors. A version
// that is not ready returns an *UnavailableError; ErrOverloaded and ErrClosed come wrapped with
// the model and version. Errors of the run itself (*bridge.Error) and of fn are returned as
// they are.
func (v *ModelVersion) Do(ctx context.Context, inputs []bridge.Tensor, opts RunOptions, fn func(outputs []bridge.Tensor) error) error {
	if v.runner == nil {
		return &UnavailableError{Model: v.name, Version: v.version, Reason: v.Reason()}
	}
	if opts.Trace != nil {
		opts.info = v.versionTrace()
	}
	err := v.runner.Do(ctx, inputs, opts, fn)
	if err == ErrOverloaded || err == ErrClosed {
		return fmt.Errorf("model %q version %q: %w", v.name, v.version, err)
	}
	return err
}

// Release ends one use begun by Repository.Acquire. Call it exactly once per successful
// Acquire, after the last use of the version (for a request: once its response is encoded).
// Calling it more often than Acquire is a bug and panics.
func (v *ModelVersion) Release() {
	n := v.refs.Add(-1)
	if n < 0 {
		panic(fmt.Sprintf("engines: %s@%s released more often than acquired", v.name, v.version))
	}
	// Sequentially consistent atomics: either retire sees this decrement, or this load sees
	// retiring set and signals.
	if n == 0 && v.retiring.Load() {
		v.drainOnce.Do(func() { close(v.drained) })
	}
}

// tryHold takes a reference unless the version is being retired.
func (v *ModelVersion) tryHold() bool {
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
func (v *ModelVersion) retire(reason string, log *zap.Logger) time.Duration {
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
func retireAll(vs []*ModelVersion, reason string, log *zap.Logger) []time.Duration {
	took := make([]time.Duration, len(vs))
	var wg sync.WaitGroup
	for i, v := range vs {
		wg.Go(func() { took[i] = v.retire(reason, log) })
	}
	wg.Wait()
	return took
}

// RepositoryOptions configure OpenRepository. Zero values pick the defaults.
type RepositoryOptions struct {
	// Pool configures the pool of every model version.
	Pool PoolOptions
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

// Repository is the set of model versions served from a model repository folder laid out as
// DIR/<model>/<version>/{manifest.json,model.onnx,...}, each version folder a verified artifact
// (see package artifacts). Apply changes that set at run time: it verifies every version, loads
// what is new or changed, swaps the served table atomically, then drains and closes what is no
// longer served. A version that fails verification or fails to load stays listed as UNAVAILABLE
// with its reason while the others serve. SetDefault pins the version served to requests
// that name none; Load and Unload (Triton's repository extension) switch versions off and on
// at run time on top of the desired state. It is safe for concurrent use.
type Repository struct {
	loader    EngineLoader
	log       *zap.Logger
	newRunner func(es []*bridge.Engine, o PoolOptions) (Runner, error) // tests substitute fakes

	applyMu  sync.Mutex            // serializes Apply, Load, Unload and Close
	last     *Desired              // the desired state of the last Apply (under applyMu)
	unloaded map[modelVersion]bool // Unload's overrides, {model, ""} for a whole model (under applyMu)

	swapMu sync.Mutex            // serializes the stores of cur (Apply's swap, SetDefault)
	cur    atomic.Pointer[table] // the served table, never nil; replaced, never modified
	closed atomic.Bool
	obs    VersionObserver // SetObserver (under applyMu)
}

type modelVersion struct{ model, version string }

// table is an immutable snapshot of the served versions.
type table struct {
	dir    string
	models map[string][]*ModelVersion // versions lowest first
	names  []string                   // sorted model names
	pins   map[string]string          // model → pinned default version (SetDefault)
	others []IndexEntry               // versions known but not served (UNLOADED), for Index
}

func newTable(dir string, vs []*ModelVersion) *table {
	t := &table{dir: dir, models: make(map[string][]*ModelVersion)}
	for _, v := range vs {
		if _, ok := t.models[v.name]; !ok {
			t.names = append(t.names, v.name)
		}
		t.models[v.name] = append(t.models[v.name], v)
	}
	sort.Strings(t.names)
	for _, vs := range t.models {
		sort.SliceStable(vs, func(i, j int) bool { return lessVersion(vs[i].semver, vs[j].semver, vs[i].version, vs[j].version) })
	}
	return t
}

// lessVersion orders versions: unparsable ones (nil) first, by name; then by precedence, then
// by name (versions that differ only in build metadata).
func lessVersion(a, b *semver.Version, an, bn string) bool {
	switch {
	case a == nil && b == nil:
		return an < bn
	case a == nil || b == nil:
		return a == nil
	}
	if c := a.Compare(b); c != 0 {
		return c < 0
	}
	return an < bn
}

// withPin returns a copy of t whose default of model is pinned to version ("" = unpinned).
func (t *table) withPin(model, version string) *table {
	n := *t
	n.pins = make(map[string]string, len(t.pins)+1)
	for m, v := range t.pins {
		n.pins[m] = v
	}
	if version == "" {
		delete(n.pins, model)
	} else {
		n.pins[model] = version
	}
	return &n
}

// find returns the version whose folder name (or missing version's name) is exactly version.
func (t *table) find(model, version string) *ModelVersion {
	for _, v := range t.models[model] {
		if v.version == version {
			return v
		}
	}
	return nil
}

func (t *table) all() []*ModelVersion {
	var out []*ModelVersion
	for _, n := range t.names {
		out = append(out, t.models[n]...)
	}
	return out
}

func (t *table) get(model, version string) (*ModelVersion, error) {
	vs, ok := t.models[model]
	if !ok {
		return nil, &NotFoundError{Model: model}
	}
	if version == "" {
		if p, ok := t.pins[model]; ok {
			if v := pick(vs, p); v != nil {
				return v, nil
			}
		}
	}
	if v := pick(vs, version); v != nil {
		return v, nil
	}
	return nil, &NotFoundError{Model: model, Version: version}
}

// NewRepository returns an empty repository that loads engines with loader (which the caller
// owns and closes after Repository.Close). Apply fills it. log may be nil (no logs).
func NewRepository(loader EngineLoader, log *zap.Logger) *Repository {
	if log == nil {
		log = zap.NewNop()
	}
	r := &Repository{loader: loader, log: log, newRunner: newPoolRunner, unloaded: map[modelVersion]bool{}}
	r.cur.Store(newTable("", nil))
	return r
}

func newPoolRunner(es []*bridge.Engine, o PoolOptions) (Runner, error) {
	p, err := newEnginesPool(es, o)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// OpenRepository scans dir and loads every version of every model it finds with loader (which
// the caller owns and closes after Repository.Close), all with the same options: it is
// NewRepository followed by an Apply of that desired state. It fails only when dir cannot be
// read; a version that fails verification or fails to load is kept as UNAVAILABLE.
func OpenRepository(loader EngineLoader, dir string, opts RepositoryOptions) (*Repository, error) {
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

// found is a version folder that scan found. semver is nil when its name is not a canonical
// version: such a folder is never selected by a version or constraint, and with every version
// served it is listed UNAVAILABLE with artifacts.Verify's reason.
type found struct {
	model, version string
	semver         *semver.Version
	dir            string
	refused        string // why the folder is refused before any verification ("" when not)
}

// scan lists the version folders of dir: models in byte order, versions lowest first (folders
// that are not canonical versions first). Hidden folders (".git", artifacts' ".tmp-*" work
// folders) and plain files are skipped silently; a model folder without any version folder is
// skipped with a warning. First it removes the work that interrupted adds left in the model
// folders (artifacts.RemoveStale: ".tmp-*" entries an hour old, never those of an add that
// runs), logging each; one it cannot remove (a read-only repository) is a warning.
//
// A model folder that is a symbolic link is followed only when it leads to a folder inside the
// repository; one that leads out of it has its versions refused, as artifacts.Verify refuses a
// symbolic link inside a version folder or a version folder that is one.
func scan(dir string, log *zap.Logger) ([]found, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("model repository %q: not a directory", dir)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	models, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	removed, err := artifacts.RemoveStale(dir, "", artifacts.StaleAge, time.Now())
	for _, p := range removed {
		log.Info("removed the stale work folder of an interrupted add", zap.String("path", p))
	}
	if err != nil {
		log.Warn("cannot remove the stale work of interrupted adds", zap.Error(err))
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
		refused := ""
		if m.Type()&os.ModeSymlink != 0 {
			real, err := filepath.EvalSymlinks(mdir)
			if rel, rerr := filepath.Rel(root, real); err != nil || rerr != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				refused = fmt.Sprintf("model folder %s is a symlink to %s, outside the repository", mdir, real)
			}
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
			f := found{model: m.Name(), version: e.Name(), dir: vdir, refused: refused}
			if c, err := artifacts.CanonicalVersion(e.Name()); err == nil && c == e.Name() {
				f.semver = semver.MustParse(c)
			}
			versions = append(versions, f)
		}
		sort.SliceStable(versions, func(i, j int) bool {
			return lessVersion(versions[i].semver, versions[j].semver, versions[i].version, versions[j].version)
		})
		if len(versions) == 0 {
			log.Warn("skipping model folder without version folders", zap.String("model", m.Name()), zap.String("folder", mdir))
			continue
		}
		out = append(out, versions...)
	}
	return out, nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path) // follows symbolic links; Verify refuses a symlinked version folder
	return err == nil && fi.IsDir()
}

// Dir is the repository folder of the last Apply ("" before the first).
func (r *Repository) Dir() string { return r.cur.Load().dir }

// Models lists the model names served, sorted.
func (r *Repository) Models() []string {
	return append([]string(nil), r.cur.Load().names...)
}

// Versions lists the versions of model served, lowest first (nil for an unknown model). They
// are not held (see ModelVersion).
func (r *Repository) Versions(model string) []*ModelVersion {
	return append([]*ModelVersion(nil), r.cur.Load().models[model]...)
}

// All lists every version of every model served, models sorted by name, versions lowest
// first. They are not held (see ModelVersion).
func (r *Repository) All() []*ModelVersion {
	return r.cur.Load().all()
}

// Ready reports whether every version served is ready (true for an empty repository, false
// once closed).
func (r *Repository) Ready() bool {
	if r.closed.Load() {
		return false
	}
	for _, vs := range r.cur.Load().models {
		for _, v := range vs {
			if v.State() != StateReady {
				return false
			}
		}
	}
	return true
}

// Get returns a version of model without holding it (see Acquire, which requests must use).
// version is a folder name ("1.2.0") or a version equal to one ("v1.2.0", "1" for folder
// "1.0.0"). version "" picks the default: the version pinned by SetDefault, else the highest
// version that is ready or, when none is, the highest one, so that its Reason explains why.
// An unknown model or version is a *NotFoundError; after Close, Get returns ErrClosed.
func (r *Repository) Get(model, version string) (*ModelVersion, error) {
	if r.closed.Load() {
		return nil, ErrClosed
	}
	return r.cur.Load().get(model, version)
}

// Acquire returns a version of model, as Get does, and holds it: until the caller calls its
// Release, no Apply or Close drains its pool or closes its engine, so its Do never fails with
// ErrClosed for that reason. A request acquires once, uses the version for its whole life,
// and releases it after its response is encoded. Acquire allocates nothing.
func (r *Repository) Acquire(model, version string) (*ModelVersion, error) {
	for {
		if r.closed.Load() {
			return nil, ErrClosed
		}
		v, err := r.cur.Load().get(model, version)
		if err != nil {
			return nil, err
		}
		if v.tryHold() {
			return v, nil
		}
		// v left the table between the load of the table and the hold: Apply stores the new
		// table before it retires anything, so the next round sees the new table (or closed).
	}
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
		if v.semver != nil && v.semver.Equal(sv) {
			return v
		}
	}
	return nil
}

// Close stops serving: Get, Acquire and Apply then return ErrClosed. It waits for the holders
// of every version to release them, drains every pool and closes every engine, versions in
// parallel; the versions stay listed as UNAVAILABLE ("repository closed"). It does not close
// the loader (the runtime), which the caller owns. Idempotent and safe for concurrent use;
// every call returns once the first one finished.
func (r *Repository) Close() error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.closed.Swap(true) {
		return nil
	}
	retireAll(r.cur.Load().all(), "repository closed", r.log)
	return nil
}
