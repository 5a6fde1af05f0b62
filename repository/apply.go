package repository

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/engines"
)

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
		return Report{}, engines.ErrClosed
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
	served := make([]*Version, 0, len(targets))
	kept := map[*Version]bool{}
	reloaded := map[*Version]int{} // replaced version → index in rep.Reloaded
	for _, t := range targets {
		if r.unloaded[modelVersion{t.model, ""}] || r.unloaded[modelVersion{t.model, t.version}] {
			if t.missing == "" {
				others = append(others, IndexEntry{Model: t.model, Version: t.version, State: StateUnloaded, Reason: reasonUnloaded, Unloaded: true})
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
			if prevReady && prev.dir == t.dir && prev.set.equal(t.set) && prev.digest == art.Digest && prev.signer == art.SignedBy {
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
	var gone []*Version
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
	r.applyTraffic(d)
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
