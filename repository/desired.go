package repository

import (
	"crypto/ed25519"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/engines"
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
	// when the previous one fails; Version.Backend says which one loaded. Empty: the
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
	Sequence *engines.SequenceSpec
	// ActionFallback, when set, answers a request that is not run for its deadline (see
	// ActionFallback, Version.ActionFallback). Its constant is checked against the model's
	// outputs at load; a mismatch leaves the version UNAVAILABLE with the reason. Not
	// inherited from the Default.
	ActionFallback *ActionFallback
	// Traffic, when set with weights, splits the requests that name no version between the
	// model's versions (see TrafficSpec). Not inherited from the Default. Applied after the
	// versions: a change replaces a policy set at run time (Repository.SetTraffic).
	Traffic *TrafficSpec
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
	// lacks is listed UNAVAILABLE ("not found in repository DIR"). A model is listed once (as
	// config requires): a constraint selects several of its versions.
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
	// with KeptPrevious, and shown as the reason of the ready version (Version.Ready)
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

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

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
		if l := m.Batching.PriorityLevels; l < 0 || l > engines.MaxPriorityLevels {
			add("%s.batching.priority_levels: must be 0..%d, got %d", path, engines.MaxPriorityLevels, l)
		}
		if l := m.Batching.DefaultPriorityLevel; l < 0 || l > engines.MaxPriorityLevels {
			add("%s.batching.default_priority_level: must be 0..%d, got %d", path, engines.MaxPriorityLevels, l)
		}
		m.Sequence.Check(path, add)
		m.ActionFallback.Check(path, add)
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
	first := map[string]int{} // model → the index of its listing
	for i, m := range d.Models {
		path := fmt.Sprintf("models[%d]", i)
		checkSettings(path, m)
		if m.Name == "" {
			add("%s.name: empty", path)
			continue
		}
		if err := artifacts.ValidateName(m.Name); err != nil {
			add("%s.name: %q is not a model folder name: %v", path, m.Name, err)
			continue
		}
		exact, err := artifacts.ParseSelector(m.Version)
		if err != nil {
			add("%s.version: %v", path, err)
			continue
		}
		switch {
		case m.Digest != "" && exact == "":
			add("%s.digest: a digest pins one version; set an exact version, not %q", path, m.Version)
		case m.Digest != "" && !digestRE.MatchString(m.Digest):
			add("%s.digest: %q is not sha256:<64 lower-case hex digits>", path, m.Digest)
		}
		if j, dup := first[m.Name]; dup {
			add("%s: model %q version %q is also selected by models[%d]; list a model once (a constraint selects several versions)", path, m.Name, m.Version, j)
			continue
		}
		first[m.Name] = i
		m.Traffic.check(path+".traffic", add)
	}
	if len(problems) > 0 {
		return fmt.Errorf("repository: invalid desired state: %s", strings.Join(problems, "; "))
	}
	return nil
}
