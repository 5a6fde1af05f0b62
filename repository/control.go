package repository

import (
	"fmt"
	"sort"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/engines"
)

// IndexEntry is one model version Repository.Index knows of.
type IndexEntry struct {
	Model   string
	Version string // "" for a model listed with every version (or a constraint) that has none
	State   State  // READY, UNAVAILABLE (Reason says why) or UNLOADED (Reason says why)
	Reason  string // also on READY: a warning, e.g. files that failed verification after load under artifacts.on_tamper: keep
	// Unloaded: UNLOADED through Unload (the repository API), not for want of the desired set.
	Unloaded bool
}

// Index lists every model version known: the versions served (READY or UNAVAILABLE with the
// reason: a verification or load failure, or a listed version the repository lacks) and the
// versions found in the repository that are not served (UNLOADED: unloaded through Unload, or
// not selected by the desired state, with the reason), ordered by model, then version.
func (r *Repository) Index() []IndexEntry {
	t := r.cur.Load()
	out := make([]IndexEntry, 0, len(t.others)+8)
	for _, v := range t.all() {
		ok, reason := v.Ready()
		st := StateReady
		if !ok {
			st = StateUnavailable
		}
		out = append(out, IndexEntry{Model: v.name, Version: v.version, State: st, Reason: reason})
	}
	out = append(out, t.others...)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Model != b.Model {
			return a.Model < b.Model
		}
		av, _ := artifacts.RequestedVersion(a.Version)
		bv, _ := artifacts.RequestedVersion(b.Version)
		return lessVersion(av, bv, a.Version, b.Version)
	})
	return out
}

// DefaultVersion returns the version requests that name none get: the version pinned by
// SetDefault (pinned true), else the highest version that is ready (or, when none is, the
// highest one). It returns "" for a model not served.
func (r *Repository) DefaultVersion(model string) (version string, pinned bool) {
	t := r.cur.Load()
	if p, ok := t.pins[model]; ok {
		return p, true
	}
	if v := pick(t.models[model], ""); v != nil {
		return v.version, false
	}
	return "", false
}

// SetDefault pins the version of model that requests naming no version get (a rollback, or a
// roll forward), or with version "" clears the pin, so that the default is again the highest
// ready version. The switch is one atomic store of a new table: a request that acquired the
// previous default finishes on it, and none fails. It returns how long the switch took. A
// version that is not served is a *NotFoundError; one that is not ready is refused with an
// *UnavailableError. A pin holds across Apply while its version still serves ready, and is
// cleared (with a log line) once it does not. version may be written as Get takes it
// ("v1.2.3"); the pin names the folder.
func (r *Repository) SetDefault(model, version string) (took time.Duration, err error) {
	start := time.Now()
	if r.closed.Load() {
		return 0, engines.ErrClosed
	}
	r.swapMu.Lock()
	cur := r.cur.Load()
	vs, ok := cur.models[model]
	if !ok {
		r.swapMu.Unlock()
		return 0, &NotFoundError{Model: model}
	}
	pin := ""
	if version != "" {
		v := pick(vs, version)
		if v == nil {
			r.swapMu.Unlock()
			return 0, &NotFoundError{Model: model, Version: version}
		}
		if ok, reason := v.Ready(); !ok {
			r.swapMu.Unlock()
			return 0, &UnavailableError{Model: model, Version: v.version, Reason: reason}
		}
		pin = v.version
	}
	prev := cur.pins[model]
	r.cur.Store(cur.withPin(model, pin))
	r.swapMu.Unlock()
	took = time.Since(start)
	if pin == "" {
		def, _ := r.DefaultVersion(model)
		r.log.Info("default version unpinned", zap.String("model", model), zap.String("was", prev),
			zap.String("default", def), zap.Duration("switch_time", took))
	} else {
		r.log.Info("default version pinned", zap.String("model", model), zap.String("version", pin),
			zap.String("was", prev), zap.Duration("switch_time", took))
	}
	return took, nil
}

// Unload stops serving a version of model (version "": every version of it), as Triton's
// repository extension does, on top of the desired state of the last Apply: the version leaves
// the served table at once and is retired like a removed one (its holders finish on it, then
// it is drained and closed; no request fails), and it stays off through later Applies, listed
// UNLOADED by Index, until Load. Unload returns once it is closed. Unloading a version that is
// already unloaded does nothing. An unknown model or version is a *NotFoundError.
func (r *Repository) Unload(model, version string) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.closed.Load() {
		return engines.ErrClosed
	}
	if r.last == nil {
		return &NotFoundError{Model: model, Why: "no model repository applied yet"}
	}
	t := r.cur.Load()
	key := modelVersion{model, ""}
	if version != "" {
		v := r.known(t, model, version)
		if v == "" {
			if _, ok := t.models[model]; !ok && !t.hasOther(model) {
				return &NotFoundError{Model: model}
			}
			return &NotFoundError{Model: model, Version: version}
		}
		key.version = v
	} else if _, ok := t.models[model]; !ok && !t.hasOther(model) {
		return &NotFoundError{Model: model}
	}
	if r.unloaded[key] || r.unloaded[modelVersion{model, ""}] {
		return nil
	}
	r.unloaded[key] = true
	if _, err := r.apply(*r.last); err != nil {
		delete(r.unloaded, key)
		return fmt.Errorf("unload %s: %w", model, err)
	}
	return nil
}

// Load serves again a version of model (version "": every version of it) that Unload switched
// off, by applying the desired state of the last Apply anew: the repository is scanned and
// every version verified again, so Load also retries a version that was refused or failed to
// load (after its files were fixed). It returns nil when the version (for "", at least one
// version of the model) serves ready; an *UnavailableError with the reason when it does not; a
// *NotFoundError when the model or version is not in the repository or not selected by the
// desired state (Load does not serve what the configuration excludes).
func (r *Repository) Load(model, version string) error {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	if r.closed.Load() {
		return engines.ErrClosed
	}
	if r.last == nil {
		return &NotFoundError{Model: model, Why: "no model repository applied yet"}
	}
	t := r.cur.Load()
	want := ""
	if version != "" {
		if want = r.known(t, model, version); want == "" {
			want = canonical(version)
		}
		if want == "" {
			return &NotFoundError{Model: model, Version: version, Why: "not a semantic version"}
		}
	}
	saved := make(map[modelVersion]bool, len(r.unloaded))
	for k := range r.unloaded {
		saved[k] = true
	}
	for k := range r.unloaded {
		if k.model != model {
			continue
		}
		if want == "" || k.version == want {
			delete(r.unloaded, k)
		}
	}
	if want != "" && r.unloaded[modelVersion{model, ""}] {
		// the whole model is off: keep its other versions off, turn this one on
		delete(r.unloaded, modelVersion{model, ""})
		for _, e := range t.others {
			if e.Model == model && e.Unloaded && e.Version != want {
				r.unloaded[modelVersion{model, e.Version}] = true
			}
		}
	}
	if _, err := r.apply(*r.last); err != nil {
		r.unloaded = saved
		return fmt.Errorf("load %s: %w", model, err)
	}
	t = r.cur.Load()
	vs, ok := t.models[model]
	if !ok {
		for _, e := range t.others {
			if e.Model == model {
				return &NotFoundError{Model: model, Version: version, Why: e.Reason}
			}
		}
		return &NotFoundError{Model: model}
	}
	if want == "" {
		v := pick(vs, "")
		if ok, reason := v.Ready(); !ok {
			return &UnavailableError{Model: model, Version: v.version, Reason: reason}
		}
		return nil
	}
	v := pick(vs, want)
	if v == nil {
		for _, e := range t.others {
			if e.Model == model && e.Version == want {
				return &NotFoundError{Model: model, Version: version, Why: e.Reason}
			}
		}
		return &NotFoundError{Model: model, Version: version}
	}
	if ok, reason := v.Ready(); !ok {
		return &UnavailableError{Model: model, Version: v.version, Reason: reason}
	}
	return nil
}

// known returns the folder name of the version of model that version names, among the
// versions served and the others Index lists; "" when none.
func (r *Repository) known(t *table, model, version string) string {
	if v := pick(t.models[model], version); v != nil {
		return v.version
	}
	c := canonical(version)
	for _, e := range t.others {
		if e.Model == model && (e.Version == version || e.Version == c) {
			return e.Version
		}
	}
	return ""
}

func (t *table) hasOther(model string) bool {
	for _, e := range t.others {
		if e.Model == model {
			return true
		}
	}
	return false
}

// canonical returns version as a folder name ("v1.2.3" → "1.2.3", "2" → "2.0.0"); "" when it
// is not a version.
func canonical(version string) string {
	if sv, err := artifacts.RequestedVersion(version); err == nil {
		return sv.String()
	}
	return ""
}
