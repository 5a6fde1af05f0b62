package artifacts

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// entries lists the names of a folder's entries, sorted, without Add's work folders.
func entries(dir string) ([]os.DirEntry, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	out := des[:0]
	for _, de := range des {
		if !isTemp(de.Name()) {
			out = append(out, de)
		}
	}
	return out, nil
}

// versionsIn lists the canonical version folder names of a model folder, ascending.
func versionsIn(modelDir string) ([]string, error) {
	des, err := entries(modelDir)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, de := range des {
		if isCanonical(de.Name()) {
			out = append(out, de.Name())
		}
	}
	sortVersions(out)
	return out, nil
}

// Models lists the model folder names of a repository, sorted. Hidden entries (".*") and
// plain files are left out.
func Models(repo string) ([]string, error) {
	des, err := os.ReadDir(repo)
	if err != nil {
		return nil, fmt.Errorf("repository: %w", err)
	}
	var out []string
	for _, de := range des {
		if de.Name()[0] == '.' || (!de.IsDir() && de.Type()&fs.ModeSymlink == 0) {
			continue
		}
		out = append(out, de.Name())
	}
	return out, nil
}

// Versions lists the versions of a model, ascending by semver: the folders named by a
// canonical version, to give to Resolve. Other entries are left out (Report shows them).
func Versions(repo, model string) ([]string, error) {
	if err := ValidateName(model); err != nil {
		return nil, err
	}
	vs, err := versionsIn(filepath.Join(repo, model))
	if err != nil {
		return nil, fmt.Errorf("model %s: %w", model, err)
	}
	return vs, nil
}

// VersionStatus is the state of one version folder in a repository.
type VersionStatus struct {
	Version  string    `json:"version"`
	Dir      string    `json:"dir"`
	Status   string    `json:"status"`             // "ok" or "error"
	Problems []string  `json:"problems,omitempty"` // every problem, each naming its file
	Digest   string    `json:"digest,omitempty"`
	Created  time.Time `json:"created,omitzero"`
	Tool     string    `json:"tool,omitempty"`
	// SignedBy is the key ID manifest.sig names; SignatureVerified whether a trusted key
	// verified it (only checked when trusted keys are given).
	SignedBy          string            `json:"signed_by,omitempty"`
	SignatureVerified bool              `json:"signature_verified"`
	Files             []File            `json:"files,omitempty"`
	Metadata          map[string]string `json:"metadata,omitempty"`
	Err               error             `json:"-"` // nil when ok
}

// ModelStatus is one model folder with its versions, ascending by semver (folders not
// named by a canonical version last).
type ModelStatus struct {
	Name     string          `json:"name"`
	Problem  string          `json:"problem,omitempty"` // the model folder itself is wrong
	Versions []VersionStatus `json:"versions"`
}

// ReportOptions select and tighten Report.
type ReportOptions struct {
	TrustedKeys []ed25519.PublicKey
	Model       string // only this model ("" = all)
	Version     string // only this version of Model ("" = all)
}

// RepositoryReport is the integrity report of a repository: every model, version and file.
type RepositoryReport struct {
	Repository string        `json:"repository"`
	Models     []ModelStatus `json:"models"`
	// Stale lists Add's work folders and lock files (.tmp-*) found, never versions: those of
	// adds running now, and those left by interrupted ones, which RemoveStale removes once
	// they are StaleAge old (policyctl artifacts add and the server do).
	Stale  []string `json:"stale,omitempty"`
	OK     int      `json:"ok"`
	Errors int      `json:"errors"`
}

// List verifies every version of every model (without trusted keys) and returns them.
func List(repo string) ([]ModelStatus, error) {
	r, err := Report(repo, ReportOptions{})
	if err != nil {
		return nil, err
	}
	return r.Models, nil
}

// Report verifies every version of repo (or of opts.Model / opts.Version) and reports
// each. The error is for a repository that cannot be read or a selection that does not exist;
// problems of versions are in the report (RepositoryReport.Errors > 0).
func Report(repo string, opts ReportOptions) (*RepositoryReport, error) {
	rep := &RepositoryReport{Repository: repo, Models: []ModelStatus{}}
	models, err := Models(repo)
	if err != nil {
		return nil, err
	}
	var version string
	if opts.Version != "" {
		if opts.Model == "" {
			return nil, fmt.Errorf("a version needs a model")
		}
		if version, err = CanonicalVersion(opts.Version); err != nil {
			return nil, err
		}
	}
	if opts.Model != "" {
		if err := ValidateName(opts.Model); err != nil {
			return nil, err
		}
		if st, err := os.Stat(filepath.Join(repo, opts.Model)); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("no model %s in %s", opts.Model, repo)
		}
		models = []string{opts.Model}
	}
	for _, name := range models {
		ms := ModelStatus{Name: name, Versions: []VersionStatus{}, Problem: modelProblem(repo, name)}
		dir := filepath.Join(repo, name)
		if ms.Problem != "" {
			rep.Models = append(rep.Models, ms)
			rep.Errors++
			continue
		}
		all, err := os.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		var names, odd []string
		for _, de := range all {
			switch n := de.Name(); {
			case isTemp(n):
				rep.Stale = append(rep.Stale, filepath.Join(dir, n))
			case isCanonical(n):
				names = append(names, n)
			default:
				odd = append(odd, n)
			}
		}
		sortVersions(names)
		names = append(names, odd...)
		if version != "" {
			if !contains(names, version) {
				return nil, fmt.Errorf("no version %s of %s in %s", version, name, repo)
			}
			names = []string{version}
		}
		for _, v := range names {
			vs := statusOf(filepath.Join(dir, v), opts.TrustedKeys)
			if vs.Err == nil {
				rep.OK++
			} else {
				rep.Errors++
			}
			ms.Versions = append(ms.Versions, vs)
		}
		rep.Models = append(rep.Models, ms)
	}
	return rep, nil
}

func contains(s []string, x string) bool {
	for _, e := range s {
		if e == x {
			return true
		}
	}
	return false
}

// statusOf verifies one version folder and describes it, also when it fails (with what of the
// manifest could be read).
func statusOf(dir string, trusted []ed25519.PublicKey) VersionStatus {
	vs := VersionStatus{Version: filepath.Base(dir), Dir: dir, Status: "ok"}
	a, err := Verify(dir, VerifyOptions{TrustedKeys: trusted})
	if err == nil {
		m := a.Manifest
		vs.Digest, vs.Created, vs.Tool, vs.Files, vs.Metadata = a.Digest, m.Created, m.Tool, m.Files, m.Metadata
		vs.SignedBy, vs.SignatureVerified = a.SignedBy, a.Verified
		return vs
	}
	vs.Status, vs.Err = "error", err
	for _, p := range Problems(err) {
		vs.Problems = append(vs.Problems, p.Error())
	}
	// What the manifest says, for the report, even though the version is refused.
	if raw, _, err := readNoFollow(filepath.Join(dir, ManifestFile), -1); err == nil {
		vs.Digest = Digest(raw)
		if m, err := ParseManifest(raw); err == nil {
			vs.Created, vs.Tool, vs.Files, vs.Metadata = m.Created, m.Tool, m.Files, m.Metadata
		}
	}
	if b, _, err := readNoFollow(filepath.Join(dir, SignatureFile), 1<<16); err == nil {
		var s Signature
		if decodeStrict(b, &s) == nil {
			vs.SignedBy = s.KeyID
		}
	}
	return vs
}

// Sign writes manifest.sig for the version folder dir, signing its manifest.json with key,
// after verifying the folder (a tampered version is not signed). An existing manifest.sig is
// replaced atomically.
func Sign(dir string, key ed25519.PrivateKey) (*Artifact, error) {
	a, err := Verify(dir, VerifyOptions{})
	if err != nil {
		return nil, err
	}
	raw, _, err := readNoFollow(filepath.Join(dir, ManifestFile), -1)
	if err != nil {
		return nil, err
	}
	if Digest(raw) != a.Digest {
		return nil, fmt.Errorf("sign %s: manifest.json changed while signing", a.Ref())
	}
	sig, err := SignManifest(raw, key)
	if err != nil {
		return nil, err
	}
	if err := replaceFile(filepath.Join(dir, SignatureFile), sig); err != nil {
		return nil, fmt.Errorf("sign %s: %w", a.Ref(), err)
	}
	a.SignedBy, a.Verified = KeyID(key.Public().(ed25519.PublicKey)), true
	return a, nil
}

// replaceFile writes b to path through a synced temporary file renamed over it.
func replaceFile(path string, b []byte) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	if err := writeNew(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}

// MigrateOptions are the inputs of Migrate that schema 1 lacks.
type MigrateOptions struct {
	// Inspect returns the input/output signature of a model (policyctl loads it through the
	// engine). nil leaves the manifest's io empty.
	Inspect func(model []byte) (IO, error)
	Tool    string
	Now     func() time.Time
}

// Migration is what Migrate did to one version folder.
type Migration struct {
	Dir string
	Ref string // name@version
	// Digest is the new digest; Unsigned is set when a manifest.sig of the old manifest was
	// removed: the version must be signed again (policyctl artifacts sign).
	Digest   string
	Unsigned bool
	Err      error
}

// Migrate rewrites every schema-1 manifest of repo as schema 2, after checking the model file
// against the old hash. Versions already of schema 2 are left alone (and not listed); a
// manifest.sig of an old manifest no longer matches and is removed (Migration.Unsigned).
func Migrate(repo string, opts MigrateOptions) ([]Migration, error) {
	models, err := Models(repo)
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, model := range models {
		des, err := entries(filepath.Join(repo, model))
		if err != nil {
			return nil, err
		}
		for _, de := range des {
			dir := filepath.Join(repo, model, de.Name())
			raw, _, err := readNoFollow(filepath.Join(dir, ManifestFile), -1)
			if err != nil {
				continue // no manifest: nothing to migrate (verify says so)
			}
			if n, err := schemaOf(raw); err != nil || n != 1 {
				continue
			}
			mg := migrateOne(dir, model, de.Name(), raw, opts)
			out = append(out, mg)
		}
	}
	return out, nil
}

func migrateOne(dir, model, version string, raw []byte, opts MigrateOptions) Migration {
	mg := Migration{Dir: dir, Ref: model + "@" + version}
	fail := func(format string, args ...any) Migration {
		mg.Err = fmt.Errorf("migrate %s: %s", mg.Ref, fmt.Sprintf(format, args...))
		return mg
	}
	var old manifestV1
	if err := decodeStrict(raw, &old); err != nil {
		return fail("schema-1 manifest: %v", err)
	}
	if old.Name != model || old.Version != version {
		return fail("manifest is of %s@%s, not of its folder", old.Name, old.Version)
	}
	if !isCanonical(version) {
		return fail("folder name %q is not a canonical version", version)
	}
	if old.Model != ModelFile {
		return fail("the model file is %q; rename it to %s and set \"model\" to match first", old.Model, ModelFile)
	}
	b, _, err := readNoFollow(filepath.Join(dir, ModelFile), -1)
	if err != nil {
		return fail("%s: %v", ModelFile, err)
	}
	if sum := sha256Hex(b); sum != old.SHA256 {
		return fail("%s: sha256 mismatch (manifest %s, file %s); not migrating a changed model", ModelFile, short(old.SHA256), short(sum))
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return fail("%v", err)
	}
	for _, de := range des {
		if n := de.Name(); n != ModelFile && n != ManifestFile && n != SignatureFile {
			return fail("%s: not part of a schema-1 version (which holds only %s); remove it first", n, ModelFile)
		}
	}
	now, tool := time.Now, opts.Tool
	if opts.Now != nil {
		now = opts.Now
	}
	if tool == "" {
		tool = "policyd/artifacts"
	}
	m := &Manifest{
		Schema: Schema, Name: model, Version: version, Created: now().UTC().Truncate(time.Second), Tool: tool,
		Files:    []File{{Path: ModelFile, SHA256: old.SHA256, Size: int64(len(b))}},
		IO:       IO{Inputs: []Tensor{}, Outputs: []Tensor{}},
		Metadata: map[string]string{"migrated_from_schema": "1"},
	}
	if opts.Inspect != nil {
		if m.IO, err = opts.Inspect(b); err != nil {
			return fail("%s: %v", ModelFile, err)
		}
	}
	enc, err := m.Encode()
	if err != nil {
		return fail("%v", err)
	}
	// The stale signature goes first: a crash in between leaves an unsigned old manifest,
	// never a signature that does not match.
	if err := os.Remove(filepath.Join(dir, SignatureFile)); err == nil {
		mg.Unsigned = true
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fail("%v", err)
	}
	if err := replaceFile(filepath.Join(dir, ManifestFile), enc); err != nil {
		return fail("%v", err)
	}
	mg.Digest = Digest(enc)
	return mg
}

// sortedKeys returns the keys of m, sorted.
func sortedKeys(m map[string]string) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
