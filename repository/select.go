package repository

import (
	"fmt"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"

	"github.com/policyd/policyd/artifacts"
)

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
		listed[m.Name] = "version " + m.Version // a model is listed once (Desired.validate)
		var canonical []string
		for _, f := range fs {
			if f.semver != nil {
				canonical = append(canonical, f.version)
			}
		}
		if c, _ := artifacts.ParseSelector(m.Version); c != "" {
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
