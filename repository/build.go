package repository

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

// The engine builder behind `policyctl engines build` and `make engines`: engine caches of the
// repository's versions for each local GPU architecture, stored in the artifacts
// (artifacts.AddEngineCache). docs/gpu.md, Engine caches.

// Builder is what BuildEngineCaches needs of the runtime; *bridge.Runtime implements it.
type Builder interface {
	EngineLoader
	DeviceLister
}

// BuildTarget is one architecture of one GPU backend: the first GPU that has it.
type BuildTarget struct {
	Backend, BackendVersion string
	Device                  bridge.Device
}

// BuildTargets lists one GPU per architecture of every GPU backend of rt that loaded; when
// there is none, why is the reason of each backend ("cuda: no usable CUDA device (…)").
func BuildTargets(rt Builder) (targets []BuildTarget, why string) {
	var reasons []string
	for _, b := range rt.Backends() {
		if b.Name == "cpu" {
			continue
		}
		if !b.Available {
			reasons = append(reasons, b.Name+": "+b.Reason)
			continue
		}
		devs, err := rt.Devices(b.Name)
		if err != nil || len(devs) == 0 {
			reasons = append(reasons, fmt.Sprintf("%s: no device (%v)", b.Name, err))
			continue
		}
		seen := map[string]bool{}
		for _, d := range devs {
			if !seen[d.Target] {
				seen[d.Target] = true
				targets = append(targets, BuildTarget{Backend: b.Name, BackendVersion: b.Version, Device: d})
			}
		}
	}
	if len(reasons) == 0 {
		reasons = []string{"no GPU backend plugin found"}
	}
	return targets, strings.Join(reasons, "; ")
}

// BuildOptions configure BuildEngineCaches.
type BuildOptions struct {
	Repository string
	// Model limits the build to NAME or NAME@VERSION; "" every version of every model.
	Model string
	// SignKey signs the new manifests; a signed version fails without it.
	SignKey ed25519.PrivateKey
	// Force rebuilds caches that match already.
	Force bool
	// Builder is recorded in engine.json ("policyctl v0.3.0").
	Builder string
	// Progress, when set, is called after each step, in order.
	Progress func(BuildStep)
	// Stop, when set, is checked before each step; true ends the build (interrupted).
	Stop func() bool
	// Serving is the desired state of the servers that will load the caches (cmd/policyctl
	// makes it from their config; Dir is ignored): each version is built with the batch
	// profile and backend parameters those servers build it with (the backends that use
	// them bind them into the cache, and refuse a cache made with others). A version it does
	// not select gets its Default's.
	Serving Desired
}

// Outcomes of a BuildStep.
const (
	Built    = "built"
	UpToDate = "up to date"
	Skipped  = "skipped"
	Failed   = "failed"
)

// BuildStep is the build of one version for one target.
type BuildStep struct {
	Index, Total   int // 1-based
	Model, Version string
	Target         BuildTarget
	Outcome        string // Built, UpToDate, Skipped or Failed
	// Detail: the reason of Skipped (the backend cannot run the model: the server runs it on
	// the next backend) or Failed.
	Detail string
	// Built: the cache's folder in the artifact, its size, the build time, the artifact's new
	// digest.
	Dir    string
	Bytes  int
	Took   time.Duration
	Digest string
	// TimingBytes is the size of the timing cache stored beside the engine (0: the backend
	// left none, and the folder's own, if any, was kept).
	TimingBytes int
}

// ErrBuildStopped is returned by BuildEngineCaches when Stop ended it.
var ErrBuildStopped = errors.New("engine build interrupted")

// BuildEngineCaches builds the engine of every selected version for every target and stores
// it in the version's artifact. A version whose matching cache is there is UpToDate (unless
// Force); one the backend cannot run (CodeUnsupported) is Skipped. The steps are returned in
// order; a failed step does not stop the others. The error is about the repository or
// selection (nothing built), or ErrBuildStopped.
func BuildEngineCaches(rt Builder, targets []BuildTarget, o BuildOptions) ([]BuildStep, error) {
	refs, err := BuildVersions(o.Repository, o.Model)
	if err != nil {
		return nil, err
	}
	serving, err := servingTargets(o)
	if err != nil {
		return nil, err
	}
	total := len(refs) * len(targets)
	steps := make([]BuildStep, 0, total)
	for _, ref := range refs {
		for _, t := range targets {
			if o.Stop != nil && o.Stop() {
				return steps, ErrBuildStopped
			}
			s := BuildStep{Index: len(steps) + 1, Total: total, Model: ref[0], Version: ref[1], Target: t}
			st, ok := serving[ref[0]+"@"+ref[1]]
			if !ok {
				st = target{model: ref[0], version: ref[1], set: o.Serving.settingsOf(ModelSpec{Name: ref[0]})}
			}
			buildOne(rt, filepath.Join(o.Repository, ref[0], ref[1]), st, o, &s)
			steps = append(steps, s)
			if o.Progress != nil {
				o.Progress(s)
			}
		}
	}
	return steps, nil
}

// BuildVersions lists {model, version} of the repository, or of the model NAME[@VERSION]: what
// BuildEngineCaches builds. A model or version the repository lacks is an error.
func BuildVersions(repo, only string) ([][2]string, error) {
	name, version, _ := strings.Cut(only, "@")
	models := []string{name}
	if only == "" {
		ms, err := artifacts.Models(repo)
		if err != nil {
			return nil, err
		}
		models = ms
	} else if err := artifacts.ValidateName(name); err != nil {
		return nil, err
	}
	var out [][2]string
	for _, m := range models {
		vs, err := artifacts.Versions(repo, m)
		if err != nil {
			return nil, err
		}
		if version != "" {
			c, err := artifacts.CanonicalVersion(version)
			if err != nil {
				return nil, err
			}
			if !slices.Contains(vs, c) {
				return nil, fmt.Errorf("no version %s of %s in %s (found: %s)", c, m, repo, strings.Join(vs, ", "))
			}
			vs = []string{c}
		}
		if only != "" && len(vs) == 0 {
			return nil, fmt.Errorf("no version of %s in %s", m, repo)
		}
		for _, v := range vs {
			out = append(out, [2]string{m, v})
		}
	}
	return out, nil
}

// servingTargets are the versions of the repository as o.Serving selects them, with their
// settings, by "model@version".
func servingTargets(o BuildOptions) (map[string]target, error) {
	d := o.Serving
	d.Dir = o.Repository
	if err := d.validate(); err != nil {
		return nil, err
	}
	found, err := scan(d.Dir, zap.NewNop())
	if err != nil {
		return nil, err
	}
	ts, _ := d.targets(found)
	out := make(map[string]target, len(ts))
	for _, t := range ts {
		if t.missing == "" {
			out[t.model+"@"+t.version] = t
		}
	}
	return out, nil
}

// buildOne builds and stores the cache of the version folder dir for s.Target with the
// settings of st, filling s. The folder's timing cache, when it has one, is where the build
// starts from; the one the build leaves, when not empty, is stored beside the engine.
func buildOne(rt Builder, dir string, st target, o BuildOptions, s *BuildStep) {
	fail := func(err error) { s.Outcome, s.Detail = Failed, err.Error() }
	t := s.Target
	a, err := artifacts.Verify(dir, artifacts.VerifyOptions{})
	if err != nil {
		fail(err)
		return
	}
	if a.SignedBy != "" && o.SignKey == nil {
		fail(fmt.Errorf("%s is signed (key %s) and adding a cache changes its manifest: give the signing key to sign it again", a.Ref(), a.SignedBy))
		return
	}
	onnx, err := a.ReadFile(ModelFile)
	if err != nil {
		fail(err)
		return
	}
	external, err := a.ExternalData(onnx)
	if err != nil {
		fail(err)
		return
	}
	sum := a.Manifest.File(ModelFile).SHA256
	opts := engineOptions(st, a, t.Backend)
	opts.External = external
	opts.Device, opts.ModelDigest, opts.Name, opts.Threads = t.Device.Ordinal, "sha256:"+sum, a.Ref(), 0
	if _, data, err := a.EngineCache(t.Backend, t.BackendVersion, t.Device.Target, ""); err == nil && data != nil && !o.Force {
		// Up to date when the backend takes it for these options (profile, parameters).
		withCache := opts
		withCache.Cache = data
		e, err := rt.NewEngine(onnx, withCache)
		if err == nil {
			e.Close()
			s.Outcome = UpToDate
			return
		}
		if !errors.Is(err, &bridge.Error{Code: bridge.CodeInvalidArg}) {
			fail(err)
			return
		}
	}
	if opts.TimingCache, err = a.TimingCache(t.Backend, t.BackendVersion, t.Device.Target); err != nil {
		fail(err)
		return
	}
	start := time.Now()
	e, err := rt.NewEngine(onnx, opts)
	if errors.Is(err, &bridge.Error{Code: bridge.CodeUnsupported}) {
		s.Outcome, s.Detail = Skipped, err.Error()
		return
	}
	if err != nil {
		fail(err)
		return
	}
	data, err := e.Serialize()
	if err != nil {
		e.Close()
		fail(fmt.Errorf("serialize: %w", err))
		return
	}
	timing, err := e.TimingCache()
	e.Close()
	if err != nil {
		fail(fmt.Errorf("timing cache: %w", err))
		return
	}
	s.Took = time.Since(start)
	b, err := artifacts.AddEngineCache(dir, artifacts.AddEngineRequest{
		Backend: t.Backend, BackendVersion: t.BackendVersion, Target: t.Device.Target, Device: t.Device.Name,
		Data: data, TimingCache: timing, ModelSHA256: sum, SignKey: o.SignKey, Builder: o.Builder,
	})
	if err != nil {
		fail(err)
		return
	}
	s.Outcome, s.Dir, s.Bytes, s.TimingBytes, s.Digest = Built, artifacts.EngineCacheDir(t.Backend, t.BackendVersion, t.Device.Target), len(data), len(timing), b.Digest
}
