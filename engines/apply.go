package engines

import (
	"cmp"
	"crypto/ed25519"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

// ModelSpec says how to serve one model, or one version of it.
type ModelSpec struct {
	// Name is the model's folder name in the repository.
	Name string
	// Version selects the versions served: "" every version found; an exact version
	// ("1.2.3", "v1.2.3", "1.3.0-rc.1") that one; else a semver constraint ("^1.2", "~1.2.3",
	// ">=1.0 <2", "1.x", "*") every version it matches (resolved with artifacts.Resolve:
	// pre-releases only match a constraint that names one). A constraint matching nothing lists
	// the model UNAVAILABLE ("no version of m matches ^3 (found: 1.0.0, 2.0.0)").
	Version string
	// Digest pins the artifact of an exact Version: "sha256:<64 hex>" of its manifest.json. A
	// version whose digest differs is refused (UNAVAILABLE). Only with an exact Version.
	Digest string
	// Backends in order of preference ("cpu", ...): each is tried in turn, the next one only
	// when the previous one fails; ModelVersion.Backend says which one loaded. Empty: the
	// Default's, or the library's default when that is empty too.
	Backends []string
	// Fallback lets the next backend of Backends serve when one cannot load the model (its
	// plugin or GPU is missing, an op is unsupported); the reasons of the backends skipped are
	// logged. False: only the first backend may serve it; when it cannot, the version is
	// UNAVAILABLE with its reason. Nil: the Default's, or true.
	Fallback *bool
	// Devices selects the GPUs of a backend that has devices (cuda, tensorrt): their ordinals
	// as the backend lists them (bridge.Runtime.Devices). The version gets one engine per
	// GPU (bridge.EngineOptions.Device), each with Instances contexts, all taking requests from
	// the version's one queue (and batcher). A listed GPU the backend lacks makes that backend
	// fail ("devices: GPU 3 not found ..."). Nil: the Default's, or every GPU. Ignored by
	// backends without devices (cpu).
	Devices []int
	// Instances is the number of execution contexts (workers) of the version's pool, per GPU
	// on a backend with devices; 0: the Default's, or 1.
	Instances int
	// Threads per context run; 0: the Default's, or the library's default (1).
	Threads int
	// Params are backend build parameters, "<backend>.<name>" -> value
	// (bridge.EngineOptions.Params), passed to every backend tried: each reads only its own.
	// A key not set here takes the Default's value.
	Params map[string]string
	// Batching configures the version's dynamic batcher (when Desired.Batching is on and the
	// model is batchable); each zero field takes the Default's.
	Batching BatchingSpec
	// Sequence, when set, keeps state between the steps of a sequence (see SequenceSpec). Its
	// state pairs are checked against the model's signature at load; a mismatch leaves the
	// version UNAVAILABLE with the reason. Not inherited from the Default.
	Sequence *SequenceSpec
}

// BatchingSpec is the part of BatcherOptions a ModelSpec sets.
type BatchingSpec struct {
	// MaxBatchSize: 0 the Default's, or DefaultMaxBatchSize.
	MaxBatchSize int
	// MaxQueueDelay: 0 the Default's (0 there too: no wait).
	MaxQueueDelay time.Duration
	// PreferredBatchSizes: empty the Default's.
	PreferredBatchSizes []int
	// PriorityLevels and DefaultPriorityLevel order the version's queue, batched or not (see
	// BatcherOptions and PoolOptions); 0 the Default's (0 there too: one level, lowest default).
	PriorityLevels, DefaultPriorityLevel int
}

// Desired is the state a Repository is to serve; Apply makes it so.
type Desired struct {
	// Dir is the model repository folder, laid out DIR/<model>/<X.Y.Z>/{manifest.json,model.onnx}.
	Dir string
	// Models lists what to serve. Empty: every version of every model in Dir, with Default.
	// Otherwise only the models listed are served, and a model or version listed that Dir
	// lacks is listed UNAVAILABLE ("not found in repository DIR"). A model may be listed more
	// than once with distinct exact versions; a listing with every version ("") must be its
	// model's only one.
	Models []ModelSpec
	// Default gives Backends, Instances and Threads to the models not listed and to the fields
	// left zero in Models. Its Name and Version are ignored.
	Default ModelSpec
	// QueueLen bounds the requests waiting per version (0: 64 per instance).
	QueueLen int
	// Batching puts a dynamic batcher (see Batcher) in front of the pool of every batchable
	// version (Batchable); the others, and every version when false, run on the plain pool.
	Batching bool
	// Seed is the base seed of the random operators of every pool (see PoolOptions.Seed).
	Seed uint64
	// RequireEngineCaches refuses to build a GPU engine from source: an engine on a GPU
	// comes from the artifact's matching engine cache (artifacts.Artifact.EngineCache) or the
	// backend fails with "... rebuild engines". False: a GPU engine without a matching cache is
	// built from model.onnx (and not stored: policyctl engines build stores caches). A
	// stale or mismatched cache is never used either way.
	RequireEngineCaches bool
	// TrustedKeys, when not empty, require every version's manifest.sig to verify with one of
	// them: unsigned or wrongly signed versions are refused.
	TrustedKeys []ed25519.PublicKey
	// OnVerifyFailure, when set, is called (by Apply, synchronously) once per version whose
	// artifacts.Verify failed, with the reason: refused, or kept serving by KeepTampered;
	// cmd/policyd counts them in a metric.
	OnVerifyFailure func(model, version, reason string)
	// KeepTampered keeps serving a version that serves ready when its files fail verification
	// (they changed after it loaded): its engine, built from the verified bytes, stays, and the
	// failure is logged at warn level, reported to OnVerifyFailure, listed in Report.Failed
	// with KeptPrevious, and shown as the reason of the ready version (ModelVersion.Ready)
	// until the files verify again. Only while what it is verified against (TrustedKeys and
	// the model's Digest pin) is unchanged since it loaded: a tightened requirement refuses it.
	// A version that does not serve ready is refused either way. False (config
	// artifacts.on_tamper: retire): the version is refused and its engine retired.
	KeepTampered bool
	// MaxModelMemory bounds the host memory of each engine built (bridge.EngineOptions
	// MaxMemory: constants, then those plus one context's arena at batch 1); 0: no limit. A
	// version over it is UNAVAILABLE with the reason. A change applies to the engines built
	// from then on: the versions serving are not rebuilt for it.
	MaxModelMemory uint64
}

// settings are the effective settings of one version; a change of any of them rebuilds it.
type settings struct {
	backends  string // preference order joined by "\x00"; "" = the library's default
	fallback  bool   // the next backend may serve when one fails
	devices   string // the GPU ordinals selected, "0,2"; "" = every GPU
	instances int
	threads   int
	queueLen  int
	seed      uint64
	batching  bool // a batcher, if the model is batchable
	maxBatch  int
	delay     time.Duration
	preferred string // PreferredBatchSizes, formatted
	levels    int    // priority levels
	defLevel  int    // default priority level
	sequence  string // SequenceSpec.key(); "" without sequences
	needCache bool   // Desired.RequireEngineCaches
	params    string // ModelSpec.Params over the Default's, "k=v" sorted, joined by "\x00"
}

// paramMap is the backend parameters of the version; nil when none.
func (s settings) paramMap() map[string]string {
	if s.params == "" {
		return nil
	}
	out := map[string]string{}
	for _, kv := range strings.Split(s.params, "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		out[k] = v
	}
	return out
}

// batchProfile is the batch profile (bridge.EngineOptions MinBatch, OptBatch, MaxBatch) of
// the engines of a version whose model has the signature io (the manifest's): min 1, max the
// version's max batch size, opt the largest preferred batch size up to max, else max when
// the batcher forms batches, else 1. A model whose inputs do not all have a dynamic
// dimension 0 (-1) is not batchable and gets no profile (all zero), nor does one whose
// manifest lists no signature.
func (s settings) batchProfile(io artifacts.IO) (lo, opt, hi int) {
	if len(io.Inputs) == 0 {
		return 0, 0, 0
	}
	for _, in := range io.Inputs {
		if len(in.Shape) == 0 || in.Shape[0] != -1 {
			return 0, 0, 0
		}
	}
	opt = 1
	if s.batching {
		opt = s.maxBatch
	}
	for _, n := range s.batcherOptions().PreferredBatchSizes {
		if n <= s.maxBatch {
			opt = n // sorted: the last that fits is the largest
		}
	}
	return 1, opt, s.maxBatch
}

func (s settings) batcherOptions() BatcherOptions {
	o := BatcherOptions{MaxBatchSize: s.maxBatch, MaxQueueDelay: s.delay, QueueLen: s.queueLen,
		PriorityLevels: s.levels, DefaultPriorityLevel: s.defLevel}
	for _, f := range strings.Fields(strings.Trim(s.preferred, "[]")) {
		n, _ := strconv.Atoi(f)
		o.PreferredBatchSizes = append(o.PreferredBatchSizes, n)
	}
	return o
}

// deviceList is the GPUs selected; nil: every GPU.
func (s settings) deviceList() []int {
	if s.devices == "" {
		return nil
	}
	var out []int
	for _, f := range strings.Split(s.devices, ",") {
		n, _ := strconv.Atoi(f)
		out = append(out, n)
	}
	return out
}

func (s settings) backendList() []string {
	if s.backends == "" {
		return nil
	}
	return strings.Split(s.backends, "\x00")
}

// target is one version the desired state asks for.
type target struct {
	model, version string
	semver         *semver.Version
	dir            string
	missing        string // why the repository lacks it; "" when found
	refused        string // found.refused
	set            settings
	digest         string // the pin of ModelSpec.Digest
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// isExact reports whether a ModelSpec.Version names one version (rather than a constraint),
// and returns it canonical.
func isExact(version string) (string, bool) {
	c, err := artifacts.CanonicalVersion(version)
	return c, err == nil
}

// validate lists every problem of d at once, each with its field path.
func (d *Desired) validate() error {
	var problems []string
	add := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	if d.Dir == "" {
		add("dir: empty")
	}
	if d.QueueLen < 0 {
		add("queue_len: must not be negative, got %d", d.QueueLen)
	}
	checkSettings := func(path string, m ModelSpec) {
		if m.Instances < 0 {
			add("%s.instances: must not be negative, got %d", path, m.Instances)
		}
		if m.Threads < 0 {
			add("%s.threads: must not be negative, got %d", path, m.Threads)
		}
		if m.Batching.MaxBatchSize < 0 {
			add("%s.batching.max_batch_size: must not be negative, got %d", path, m.Batching.MaxBatchSize)
		}
		if m.Batching.MaxQueueDelay < 0 {
			add("%s.batching.max_queue_delay: must not be negative, got %s", path, m.Batching.MaxQueueDelay)
		}
		for i, n := range m.Batching.PreferredBatchSizes {
			if n <= 0 {
				add("%s.batching.preferred_batch_sizes[%d]: must be positive, got %d", path, i, n)
			}
		}
		if l := m.Batching.PriorityLevels; l < 0 || l > MaxPriorityLevels {
			add("%s.batching.priority_levels: must be 0..%d, got %d", path, MaxPriorityLevels, l)
		}
		if l := m.Batching.DefaultPriorityLevel; l < 0 || l > MaxPriorityLevels {
			add("%s.batching.default_priority_level: must be 0..%d, got %d", path, MaxPriorityLevels, l)
		}
		m.Sequence.check(path, add)
		for i, g := range m.Devices {
			if g < 0 {
				add("%s.devices[%d]: must not be negative, got %d", path, i, g)
			} else if slices.Index(m.Devices, g) < i {
				add("%s.devices[%d]: GPU %d listed twice", path, i, g)
			}
		}
		for _, k := range slices.Sorted(maps.Keys(m.Params)) {
			if b, name, ok := strings.Cut(k, "."); !ok || b == "" || name == "" {
				add("%s.params: key %q is not <backend>.<name>", path, k)
			}
		}
		for i, b := range m.Backends {
			if b == "" {
				add("%s.backends[%d]: empty", path, i)
			} else if slices.Index(m.Backends, b) < i {
				add("%s.backends[%d]: %q listed twice", path, i, b)
			}
		}
	}
	checkSettings("default", d.Default)
	type listed struct {
		index  int
		semver *semver.Version // nil: every version, or a constraint
	}
	seen := map[string][]listed{}
	for i, m := range d.Models {
		path := fmt.Sprintf("models[%d]", i)
		checkSettings(path, m)
		switch {
		case m.Name == "":
			add("%s.name: empty", path)
			continue
		case strings.HasPrefix(m.Name, ".") || strings.ContainsAny(m.Name, `/\`):
			add("%s.name: %q is not a model folder name", path, m.Name)
			continue
		}
		var sv *semver.Version
		if c, exact := isExact(m.Version); exact {
			sv = semver.MustParse(c)
		} else if m.Version != "" {
			if _, err := semver.NewConstraint(m.Version); err != nil {
				add("%s.version: %q is neither an exact version (1.2.3) nor a constraint (^1.2, ~1.2.3, >=1.0 <2): %v", path, m.Version, err)
				continue
			}
		}
		switch {
		case m.Digest != "" && sv == nil:
			add("%s.digest: a digest pins one version; set an exact version, not %q", path, m.Version)
		case m.Digest != "" && !digestRE.MatchString(m.Digest):
			add("%s.digest: %q is not sha256:<64 lower-case hex digits>", path, m.Digest)
		}
		for _, o := range seen[m.Name] {
			if sv == nil || o.semver == nil || sv.Equal(o.semver) {
				add("%s: model %q version %q is also selected by models[%d]", path, m.Name, m.Version, o.index)
				break
			}
		}
		seen[m.Name] = append(seen[m.Name], listed{i, sv})
	}
	if len(problems) > 0 {
		return fmt.Errorf("engines: invalid desired state: %s", strings.Join(problems, "; "))
	}
	return nil
}

// settingsOf resolves the zero fields of m from d.Default.
func (d *Desired) settingsOf(m ModelSpec) settings {
	s := settings{
		backends:  strings.Join(m.Backends, "\x00"),
		instances: m.Instances,
		threads:   m.Threads,
		queueLen:  d.QueueLen,
		seed:      d.Seed,
		sequence:  m.Sequence.key(),
		needCache: d.RequireEngineCaches,
	}
	if len(m.Backends) == 0 {
		s.backends = strings.Join(d.Default.Backends, "\x00")
	}
	params := maps.Clone(d.Default.Params)
	if params == nil {
		params = map[string]string{}
	}
	maps.Copy(params, m.Params)
	for _, k := range slices.Sorted(maps.Keys(params)) {
		if s.params != "" {
			s.params += "\x00"
		}
		s.params += k + "=" + params[k]
	}
	s.fallback = true
	if f := cmp.Or(m.Fallback, d.Default.Fallback); f != nil {
		s.fallback = *f
	}
	devs := m.Devices
	if devs == nil {
		devs = d.Default.Devices
	}
	if len(devs) > 0 {
		devs = slices.Clone(devs)
		slices.Sort(devs)
		parts := make([]string, len(devs))
		for i, g := range devs {
			parts[i] = strconv.Itoa(g)
		}
		s.devices = strings.Join(parts, ",")
	}
	if s.instances == 0 {
		s.instances = max(d.Default.Instances, 1)
	}
	if s.threads == 0 {
		s.threads = d.Default.Threads
	}
	s.levels = cmp.Or(m.Batching.PriorityLevels, d.Default.Batching.PriorityLevels)
	s.defLevel = cmp.Or(m.Batching.DefaultPriorityLevel, d.Default.Batching.DefaultPriorityLevel)
	if s.defLevel > max(s.levels, 1) {
		s.defLevel = 0 // refused by validate when set on the model; a Default's applies only where it fits
	}
	// The max and preferred batch sizes also make the batch profile of the engines, so they
	// are resolved with batching off too.
	b, def := m.Batching, d.Default.Batching
	s.maxBatch = cmp.Or(b.MaxBatchSize, def.MaxBatchSize, DefaultMaxBatchSize)
	pref := b.PreferredBatchSizes
	if len(pref) == 0 {
		pref = def.PreferredBatchSizes
	}
	pref = slices.Clone(pref)
	slices.Sort(pref)
	if len(pref) > 0 {
		s.preferred = fmt.Sprint(pref)
	}
	if d.Batching {
		s.batching = true
		s.delay = cmp.Or(b.MaxQueueDelay, def.MaxQueueDelay)
	}
	return s
}

// targets lists the versions d asks for, given what scan found: models by name, versions
// lowest first. others lists the versions found that d does not select, for Index.
func (d *Desired) targets(scanned []found) (out []target, others []IndexEntry) {
	byModel := map[string][]found{}
	var names []string
	for _, f := range scanned {
		if _, ok := byModel[f.model]; !ok {
			names = append(names, f.model)
		}
		byModel[f.model] = append(byModel[f.model], f)
	}
	specs := d.Models
	if len(specs) == 0 {
		for _, n := range names {
			specs = append(specs, ModelSpec{Name: n})
		}
	}
	notFound := fmt.Sprintf("not found in repository %s", d.Dir)
	selected := map[string]bool{} // dir → selected
	listed := map[string]string{} // model → how it is selected
	for _, m := range specs {
		set := d.settingsOf(m)
		fs := byModel[m.Name]
		add := func(f found) {
			selected[f.dir] = true
			out = append(out, target{model: f.model, version: f.version, semver: f.semver, dir: f.dir, refused: f.refused, set: set, digest: m.Digest})
		}
		if m.Version == "" {
			listed[m.Name] = "every version"
			if len(fs) == 0 {
				out = append(out, target{model: m.Name, missing: notFound, set: set})
			}
			for _, f := range fs {
				add(f)
			}
			continue
		}
		if l, ok := listed[m.Name]; ok {
			listed[m.Name] = l + ", " + m.Version
		} else {
			listed[m.Name] = "version " + m.Version
		}
		var canonical []string
		for _, f := range fs {
			if f.semver != nil {
				canonical = append(canonical, f.version)
			}
		}
		if c, exact := isExact(m.Version); exact {
			sv := semver.MustParse(c)
			var hit *found
			for i := range fs {
				if fs[i].version == c {
					hit = &fs[i]
					break
				}
				if hit == nil && fs[i].semver != nil && fs[i].semver.Equal(sv) {
					hit = &fs[i] // same precedence, other build metadata
				}
			}
			if hit == nil {
				out = append(out, target{model: m.Name, version: c, semver: sv, missing: notFound, set: set, digest: m.Digest})
				continue
			}
			add(*hit)
			continue
		}
		match, err := artifacts.Resolve(canonical, m.Version)
		if err != nil || len(match) == 0 {
			why := fmt.Sprintf("no version of %s matches %s (found: %s)", m.Name, m.Version, strings.Join(canonical, ", "))
			if len(canonical) == 0 {
				why = fmt.Sprintf("no version of %s matches %s (found: none in repository %s)", m.Name, m.Version, d.Dir)
			}
			if err != nil {
				why = err.Error()
			}
			out = append(out, target{model: m.Name, missing: why, set: set})
			continue
		}
		for _, v := range match {
			for _, f := range fs {
				if f.version == v {
					add(f)
				}
			}
		}
	}
	for _, f := range scanned {
		if selected[f.dir] {
			continue
		}
		why := "not selected by the configuration (models lists no " + f.model + ")"
		switch l, ok := listed[f.model]; {
		case f.semver == nil && ok:
			why = "not a version folder: its name is not a canonical semantic version (e.g. 1.2.3)"
		case ok:
			why = "not selected by the configuration (" + f.model + ": " + l + ")"
		}
		others = append(others, IndexEntry{Model: f.model, Version: f.version, State: StateUnloaded, Reason: why})
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.model != b.model {
			return a.model < b.model
		}
		return lessVersion(a.semver, b.semver, a.version, b.version)
	})
	return out, others
}

// Report says what an Apply did. Each list is ordered by model, then version.
type Report struct {
	// Loaded: versions that serve now and did not before (new, or UNAVAILABLE before).
	Loaded []Change
	// Reloaded: versions that served before and now serve on a new engine and pool, because
	// their settings or their model file changed. The previous engine was drained and closed.
	Reloaded []Change
	// Unloaded: versions no longer served; drained and closed.
	Unloaded []Change
	// Failed: versions whose load failed (or that the repository lacks). A new one is listed
	// UNAVAILABLE with the reason; a failed reload of a version that was serving keeps the
	// previous engine serving with its previous settings (KeptPrevious), and the next Apply
	// tries again.
	Failed []Change
	// Unchanged counts the versions that kept serving untouched, on the same pool.
	Unchanged int
	// Took is how long the whole Apply took.
	Took time.Duration
}

// Change is what Apply did to one version.
type Change struct {
	Model, Version string
	// Backend the version's engine runs on ("" when none loaded).
	Backend string
	// Instances of the pool loaded (or asked for, on a failure), per GPU on a backend with
	// devices.
	Instances int
	// Devices are the GPU ordinals the version runs on, one engine each (nil: a backend
	// without devices).
	Devices []int
	// Reason of a failure.
	Reason string
	// KeptPrevious: a failed reload left the previous engine serving.
	KeptPrevious bool
	// Load is how long reading the model and building its engine and pool took.
	Load time.Duration
	// Unload is how long waiting for the holders, draining the pool and closing the engine of
	// the version unloaded (or replaced, for a reload) took.
	Unload time.Duration
}

// Changed reports whether the Apply loaded, reloaded, unloaded or failed anything.
func (r *Report) Changed() bool {
	return len(r.Loaded)+len(r.Reloaded)+len(r.Unloaded)+len(r.Failed) > 0
}

// String summarizes the report on one line, e.g.
// "loaded [b@1]; reloaded [a@2]; unloaded []; failed [c@1]; unchanged 3; took 12ms".
func (r *Report) String() string {
	list := func(cs []Change) string {
		s := make([]string, len(cs))
		for i, c := range cs {
			s[i] = c.Model + "@" + c.Version
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	return fmt.Sprintf("loaded %s; reloaded %s; unloaded %s; failed %s; unchanged %d; took %s",
		list(r.Loaded), list(r.Reloaded), list(r.Unloaded), list(r.Failed), r.Unchanged, r.Took.Round(time.Microsecond))
}

// Apply makes the repository serve d, failing no request:
//
//  1. It validates d and scans d.Dir; a problem with either is returned and nothing changes.
//  2. It verifies every version d selects (artifacts.Verify with d.TrustedKeys and the
//     model's Digest pin), every time, also those that serve unchanged: a version whose files
//     were tampered with since it was loaded is caught here. A version that fails is refused:
//     listed UNAVAILABLE with the verification error as its reason (logged at error level,
//     reported to d.OnVerifyFailure), and the engine it served on, if any, is retired. With
//     d.KeepTampered, a version that serves ready keeps serving instead (see KeepTampered).
//  3. It loads every verified version that is new, UNAVAILABLE, or whose settings (backends,
//     threads, instances, queue length, seed, batching, fallback, devices, required
//     engine caches) or artifact (digest, signer) changed, on a new
//     engine and pool, from the bytes of model.onnx checked against the manifest as they are
//     read (no gap between check and use), while the current table keeps serving. Versions
//     that did not change keep their pool.
//  4. It swaps the served table atomically: a Get or Acquire sees either the whole old table
//     or the whole new one. A default pinned by SetDefault carries over while its version
//     still serves ready; otherwise the pin is cleared (and logged).
//  5. It retires what is no longer served (removed or unloaded versions, refused ones, and the
//     engines of reloaded ones): it waits until every holder (Acquire) released it, drains its
//     pool, closes its engine. A request that acquired an old version therefore finishes on it.
//
// Versions unloaded by Unload stay off (listed UNLOADED by Index) until Load. A failure to
// verify or load a version is not an error of Apply: the version is served UNAVAILABLE with
// its reason (or, for a failed reload of a verified artifact, the previous engine keeps
// serving), and the Report lists it. Apply calls are serialized; Apply returns once the
// retired versions are closed, so it must not be called by a goroutine that holds a version
// (it could wait for itself). After Close it returns ErrClosed.
func (r *Repository) Apply(d Desired) (Report, error) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	return r.apply(d)
}

// apply is Apply; the caller holds applyMu.
func (r *Repository) apply(d Desired) (Report, error) {
	if r.closed.Load() {
		return Report{}, ErrClosed
	}
	start := time.Now()
	if err := d.validate(); err != nil {
		return Report{}, err
	}
	found, err := scan(d.Dir, r.log)
	if err != nil {
		return Report{}, err
	}
	r.last = &d
	targets, others := d.targets(found)

	old := r.cur.Load()
	keyIDs := make([]string, len(d.TrustedKeys))
	for i, k := range d.TrustedKeys {
		keyIDs[i] = artifacts.KeyID(k)
	}
	slices.Sort(keyIDs)
	var rep Report
	served := make([]*ModelVersion, 0, len(targets))
	kept := map[*ModelVersion]bool{}
	reloaded := map[*ModelVersion]int{} // replaced version → index in rep.Reloaded
	for _, t := range targets {
		if r.unloaded[modelVersion{t.model, ""}] || r.unloaded[modelVersion{t.model, t.version}] {
			if t.missing == "" {
				others = append(others, IndexEntry{Model: t.model, Version: t.version, State: StateUnloaded, Reason: reasonUnloaded})
			}
			continue
		}
		prev := old.find(t.model, t.version)
		prevReady := prev != nil && prev.State() == StateReady
		checks := t.digest + "\x00" + strings.Join(keyIDs, ",")
		var art *artifacts.Artifact
		if t.missing == "" {
			if t.refused != "" {
				art, err = nil, &artifacts.VerifyError{Model: t.model, Version: t.version, Problem: t.refused, Err: artifacts.ErrLayout}
			} else {
				art, err = artifacts.Verify(t.dir, artifacts.VerifyOptions{TrustedKeys: d.TrustedKeys, Digest: t.digest})
			}
			if err != nil && d.KeepTampered && prevReady && prev.dir == t.dir && prev.checks == checks {
				r.keepTampered(prev, err, d.OnVerifyFailure)
				served = append(served, prev)
				kept[prev] = true
				rep.Failed = append(rep.Failed, Change{Model: prev.name, Version: prev.version, Backend: prev.Backend(),
					Instances: prev.set.instances, Devices: prev.devices, Reason: prev.Reason(), KeptPrevious: true})
				continue
			}
			if err != nil {
				v := r.refuse(t, err, start, d.OnVerifyFailure)
				served = append(served, v)
				rep.Failed = append(rep.Failed, Change{Model: v.name, Version: v.version, Instances: t.set.instances, Reason: v.reason})
				continue
			}
			if prevReady && prev.dir == t.dir && prev.set == t.set && prev.digest == art.Digest && prev.signer == art.SignedBy {
				if prev.warn("") != "" {
					r.log.Info("model version's artifact verifies again", zap.String("model", prev.name),
						zap.String("version", prev.version), zap.String("digest", prev.digest))
				}
				prev.checks = checks
				served = append(served, prev)
				kept[prev] = true
				rep.Unchanged++
				continue
			}
		}
		v := r.load(t, art)
		v.checks = checks
		c := Change{Model: v.name, Version: v.version, Backend: v.Backend(), Instances: t.set.instances, Devices: v.devices, Load: v.loadTime}
		if ok, reason := v.Ready(); ok {
			served = append(served, v)
			if prevReady {
				reloaded[prev] = len(rep.Reloaded)
				rep.Reloaded = append(rep.Reloaded, c)
				r.log.Info("model version reloaded", zap.String("model", v.name), zap.String("version", v.version),
					zap.String("digest", v.digest), zap.String("backend", v.Backend()), zap.String("device", v.Device()),
					zap.Int("instances", t.set.instances), zap.Duration("load_time", v.loadTime))
			} else {
				rep.Loaded = append(rep.Loaded, c)
				r.log.Info("model version loaded", zap.String("model", v.name), zap.String("version", v.version),
					zap.String("state", v.State().String()), zap.String("digest", v.digest), zap.String("signer", v.signer),
					zap.String("backend", v.Backend()), zap.String("device", v.Device()), zap.Int("instances", t.set.instances),
					zap.Duration("load_time", v.loadTime))
			}
		} else {
			c.Reason = reason
			if prevReady {
				c.KeptPrevious = true
				served = append(served, prev)
				kept[prev] = true
			} else {
				served = append(served, v)
			}
			rep.Failed = append(rep.Failed, c)
			r.log.Warn("model version unavailable", zap.String("model", v.name), zap.String("version", v.version),
				zap.String("state", v.State().String()), zap.String("reason", reason),
				zap.Bool("kept_previous", c.KeptPrevious), zap.Duration("load_time", v.loadTime))
		}
	}
	next := newTable(d.Dir, served)
	next.others = others
	var gone []*ModelVersion
	for _, v := range old.all() {
		if !kept[v] {
			gone = append(gone, v)
		}
	}

	// The swap. From here on Acquire sees only next; what holds a version of old keeps it
	// until its Release, and retire waits for that. A pin set since old was read carries over.
	r.swapMu.Lock()
	next.pins = r.keepPins(r.cur.Load().pins, next)
	r.cur.Store(next)
	r.swapMu.Unlock()
	took := retireAll(gone, "unloaded", r.log)
	for i, v := range gone {
		if k, ok := reloaded[v]; ok {
			rep.Reloaded[k].Unload = took[i]
			continue
		}
		if next.find(v.name, v.version) != nil {
			continue // replaced by a new attempt (or refused), listed above
		}
		rep.Unloaded = append(rep.Unloaded, Change{
			Model: v.name, Version: v.version, Backend: v.Backend(), Instances: v.set.instances, Unload: took[i],
		})
		r.log.Info("model version unloaded", zap.String("model", v.name), zap.String("version", v.version),
			zap.Duration("unload_time", took[i]))
	}
	rep.Took = time.Since(start)
	r.log.Info("repository applied", zap.String("repository", d.Dir),
		zap.Int("loaded", len(rep.Loaded)), zap.Int("reloaded", len(rep.Reloaded)),
		zap.Int("unloaded", len(rep.Unloaded)), zap.Int("failed", len(rep.Failed)),
		zap.Int("unchanged", rep.Unchanged), zap.Duration("took", rep.Took))
	return rep, nil
}

// runner builds the runner of a version: one pool over the contexts of all its engines (one
// engine per GPU, set.instances contexts each), behind a Batcher when batching is on and the
// model is batchable. es is never empty except in tests of versions the repository lacks.
func (r *Repository) runner(es []*bridge.Engine, set settings, stats *Stats) (Runner, error) {
	var e *bridge.Engine
	if len(es) > 0 {
		e = es[0]
	}
	if e != nil {
		stats.Batched = Batchable(e.Batchable(), e.Inputs(), e.Outputs())
	}
	var warmup [][]bridge.Tensor
	if e != nil {
		var sizes []int
		if set.batching && Batchable(e.Batchable(), e.Inputs(), e.Outputs()) {
			for _, n := range set.batcherOptions().PreferredBatchSizes {
				if n <= set.maxBatch {
					sizes = append(sizes, n)
				}
			}
		}
		warmup = WarmupInputs(e.Inputs(), sizes)
	}
	p, err := r.newRunner(es, PoolOptions{
		Instances: set.instances * max(len(es), 1), QueueLen: set.queueLen, Seed: set.seed, Stats: stats,
		PriorityLevels: set.levels, DefaultPriorityLevel: set.defLevel,
		LockOSThread: lockThreads(e, set.threads), Warmup: warmup,
	})
	if err != nil || !set.batching || e == nil || !Batchable(e.Batchable(), e.Inputs(), e.Outputs()) {
		return p, err
	}
	bp, ok := p.(batchPool)
	if !ok {
		return p, nil
	}
	return newBatcher(bp, e.Inputs(), e.Outputs(), set.batcherOptions())
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

// reasonUnloaded is the Index reason of a version switched off by Unload.
const reasonUnloaded = "unloaded through the repository API (POST /v2/repository/models/{m}/load loads it again)"

// keepPins returns the pins of next: those of pins whose version next serves ready. The others
// are cleared with a log line.
func (r *Repository) keepPins(pins map[string]string, next *table) map[string]string {
	if len(pins) == 0 {
		return nil
	}
	out := make(map[string]string, len(pins))
	for m, p := range pins {
		if v := next.find(m, p); v != nil && v.State() == StateReady {
			out[m] = p
			continue
		}
		r.log.Warn("default version pin cleared: the pinned version no longer serves",
			zap.String("model", m), zap.String("version", p))
	}
	return out
}

// verifyReason is the reason a version gets for a failed artifacts.Verify: every problem.
func verifyReason(err error) string {
	problems := artifacts.Problems(err)
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.Error()
	}
	var ve *artifacts.VerifyError
	if errors.As(err, &ve) && len(problems) == 1 {
		return "artifact verification failed: " + ve.Error()
	}
	return "artifact verification failed: " + strings.Join(msgs, "; ")
}

// keepTampered keeps the ready version v serving although its artifact failed verification
// (Desired.KeepTampered): the reason becomes v's warning, is logged at warn level and is
// reported to hook.
func (r *Repository) keepTampered(v *ModelVersion, err error, hook func(model, version, reason string)) {
	reason := verifyReason(err) + "; still serving the engine loaded from the verified files (artifacts.on_tamper: keep)"
	v.warn(reason)
	r.log.Warn("model version kept serving: its artifact failed verification after it loaded", zap.String("model", v.name),
		zap.String("version", v.version), zap.String("folder", v.dir), zap.String("digest", v.digest), zap.String("reason", reason))
	if hook != nil {
		hook(v.name, v.version, reason)
	}
}

// refuse makes the UNAVAILABLE version of a target whose artifact failed verification: it
// logs the reason at error level and reports it to hook.
func (r *Repository) refuse(t target, err error, start time.Time, hook func(model, version, reason string)) *ModelVersion {
	reason := verifyReason(err)
	v := &ModelVersion{
		name: t.model, version: t.version, semver: t.semver, dir: t.dir, set: t.set,
		state: StateUnavailable, reason: reason, drained: make(chan struct{}), loadTime: time.Since(start), obs: r.obs,
	}
	r.log.Error("model version refused: artifact verification failed", zap.String("model", t.model),
		zap.String("version", t.version), zap.String("folder", t.dir), zap.String("reason", reason))
	if hook != nil {
		hook(t.model, t.version, reason)
	}
	return v
}

// load builds one verified version, trying its backends in order, from the bytes of its
// model.onnx read and checked against the manifest in one step (Artifact.ReadFile); a failure
// is recorded in the version, never returned. art is nil only for a target the repository
// lacks.
func (r *Repository) load(t target, art *artifacts.Artifact) *ModelVersion {
	start := time.Now()
	v := &ModelVersion{
		name: t.model, version: t.version, semver: t.semver, dir: t.dir, set: t.set,
		state: StateUnavailable, drained: make(chan struct{}), stats: new(Stats), obs: r.obs,
	}
	if r.obs != nil && t.missing == "" {
		r.obs.Loading(t.model, t.version)
	}
	defer func() {
		v.loadTime = time.Since(start)
		if r.obs != nil {
			v.stats.setObservers(r.obs.Loaded(v))
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
	backends := t.set.backendList()
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
		es, devs, err := r.engines(onnx, art, t, b)
		if err == nil {
			var p Runner
			var seqs *Sequences
			if spec := parseSequenceKey(t.set.sequence); spec != nil {
				if seqs, err = NewSequences(*spec, es[0].Inputs(), es[0].Outputs()); err != nil {
					closeEngines(es)
					v.reason = err.Error() // the same for every backend: the signature is the model's
					return v
				}
			}
			if p, err = r.runner(es, t.set, v.stats); err == nil {
				v.engine, v.engines, v.devices, v.runner, v.seqs, v.state = es[0], es, devs, p, seqs, StateReady
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
	opts := bridge.EngineOptions{Backend: b, Threads: t.set.threads, Name: t.model + "@" + t.version, Params: t.set.paramMap()}
	if art != nil {
		opts.MinBatch, opts.OptBatch, opts.MaxBatch = t.set.batchProfile(art.Manifest.IO)
	}
	return opts
}

// engines builds the engines of target t on backend b: one per GPU it selects (devicesOf),
// each from the artifact's engine cache for its architecture when one matches (gpuEngine),
// or one engine for a backend without devices. On a failure every engine built is closed.
func (r *Repository) engines(onnx []byte, art *artifacts.Artifact, t target, b string) ([]*bridge.Engine, []int, error) {
	opts := engineOptions(t, art, b)
	if r.last != nil { // under applyMu, as every load is
		opts.MaxMemory = r.last.MaxModelMemory
	}
	devs, err := r.devicesOf(b, t.set.deviceList())
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
