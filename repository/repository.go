package repository

import (
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/Masterminds/semver/v3"
	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

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
	newRunner func(es []*bridge.Engine, o engines.PoolOptions) (engines.Runner, error) // tests substitute fakes
	// goldenOpen opens what runs an engine's golden cases (nil: openGolden); tests substitute fakes.
	goldenOpen func(e *bridge.Engine) (GoldenExec, []bridge.IOInfo, []bridge.IOInfo, error)

	applyMu  sync.Mutex            // serializes Apply, Load, Unload and Close
	last     *Desired              // the desired state of the last Apply (under applyMu)
	unloaded map[modelVersion]bool // Unload's overrides, {model, ""} for a whole model (under applyMu)

	swapMu sync.Mutex            // serializes the stores of cur (Apply's swap, SetDefault)
	cur    atomic.Pointer[table] // the served table, never nil; replaced, never modified
	closed atomic.Bool
	obs    VersionObserver // SetObserver (under applyMu)

	trafficMu sync.Mutex                                // serializes the changes of traffic (traffic.go)
	traffic   atomic.Pointer[map[string]*trafficPolicy] // model → its live traffic policy; replaced, never modified
}

type modelVersion struct{ model, version string }

// table is an immutable snapshot of the served versions.
type table struct {
	dir    string
	models map[string][]*Version // versions lowest first
	names  []string              // sorted model names
	pins   map[string]string     // model → pinned default version (SetDefault)
	others []IndexEntry          // versions known but not served (UNLOADED), for Index
}

func newTable(dir string, vs []*Version) *table {
	t := &table{dir: dir, models: make(map[string][]*Version)}
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
func (t *table) find(model, version string) *Version {
	for _, v := range t.models[model] {
		if v.version == version {
			return v
		}
	}
	return nil
}

func (t *table) all() []*Version {
	var out []*Version
	for _, n := range t.names {
		out = append(out, t.models[n]...)
	}
	return out
}

func (t *table) get(model, version string) (*Version, error) {
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

func newPoolRunner(es []*bridge.Engine, o engines.PoolOptions) (engines.Runner, error) {
	p, err := engines.NewPoolOver(es, o)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// found is a version folder that scan found. semver is nil when its name is not a canonical
// version: such a folder is never selected by a version or constraint, and with every version

// Dir is the repository folder of the last Apply ("" before the first).
func (r *Repository) Dir() string { return r.cur.Load().dir }

// Models lists the model names served, sorted.
func (r *Repository) Models() []string {
	return append([]string(nil), r.cur.Load().names...)
}

// Versions lists the versions of model served, lowest first (nil for an unknown model). They
// are not held (see Version).
func (r *Repository) Versions(model string) []*Version {
	return append([]*Version(nil), r.cur.Load().models[model]...)
}

// All lists every version of every model served, models sorted by name, versions lowest
// first. They are not held (see Version).
func (r *Repository) All() []*Version {
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
func (r *Repository) Get(model, version string) (*Version, error) {
	if r.closed.Load() {
		return nil, engines.ErrClosed
	}
	return r.cur.Load().get(model, version)
}

// Acquire returns a version of model, as Get does, and holds it: until the caller calls its
// Release, no Apply or Close drains its pool or closes its engine, so its Do never fails with
// ErrClosed for that reason. A request acquires once, uses the version for its whole life,
// and releases it after its response is encoded. Acquire allocates nothing.
func (r *Repository) Acquire(model, version string) (*Version, error) {
	for {
		if r.closed.Load() {
			return nil, engines.ErrClosed
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
func pick(vs []*Version, version string) *Version {
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
	sv, err := artifacts.RequestedVersion(version)
	if err != nil {
		return nil
	}
	// An integer N (a Triton client's version, or an imported Triton repository's folder N)
	// names exactly N.0.0: not N.0.0+build, which semver precedence holds equal.
	integer := strings.Trim(version, "0123456789") == ""
	for _, v := range vs {
		if integer && v.version == sv.String() || !integer && v.semver != nil && v.semver.Equal(sv) {
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
