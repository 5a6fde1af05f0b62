package artifacts

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Kinds of verification failure, for errors.Is on a *VerifyError.
var (
	ErrNoManifest = errors.New("no manifest")                  // the version folder has no manifest.json
	ErrOldSchema  = errors.New("old manifest schema")          // schema 1: run policyctl artifacts migrate
	ErrManifest   = errors.New("invalid manifest")             // unparsable, unknown fields, bad paths, wrong name/version
	ErrLayout     = errors.New("invalid repository layout")    // folder names, symlinked folders
	ErrIntegrity  = errors.New("file does not match manifest") // a file missing, extra, changed, a symlink
	ErrUnsigned   = errors.New("unsigned")                     // trusted keys configured, no manifest.sig
	ErrSignature  = errors.New("signature refused")            // malformed, forged, or by a key not trusted
	ErrDigest     = errors.New("digest mismatch")              // the manifest's digest differs from the pinned one
)

// VerifyError is one problem of one version. Its message names the version and the file:
//
//	3DBall@1.0.0: model.onnx: sha256 mismatch (manifest 4f3c2a1b9e0d…, file 9a8b7c6d5e4f…)
//
// Unwrap returns the kind (ErrIntegrity, ErrSignature, ...). Verify joins several with
// errors.Join; errors.As finds the first.
type VerifyError struct {
	Model   string
	Version string
	File    string // relative to the version folder; "" when the problem is not one file's
	Problem string
	Err     error // the kind
}

func (e *VerifyError) Error() string {
	var b strings.Builder
	b.WriteString(e.Model + "@" + e.Version + ": ")
	if e.File != "" {
		b.WriteString(e.File + ": ")
	}
	b.WriteString(e.Problem)
	return b.String()
}

func (e *VerifyError) Unwrap() error { return e.Err }

// VerifyOptions tighten Verify.
type VerifyOptions struct {
	// TrustedKeys, when not empty, require manifest.sig to verify with one of them.
	TrustedKeys []ed25519.PublicKey
	// Digest, when set ("sha256:<hex>"), pins the manifest: the artifact's digest must equal it.
	Digest string
}

// Artifact is a verified version folder. Immutable; safe for concurrent use.
type Artifact struct {
	Dir      string
	Manifest *Manifest
	Digest   string // "sha256:" + hex SHA-256 of manifest.json
	// SignedBy is the key ID manifest.sig names ("" when unsigned). Verified tells whether
	// it was checked against a trusted key (only when VerifyOptions.TrustedKeys was set).
	SignedBy string
	Verified bool
}

// Ref is "name@version".
func (a *Artifact) Ref() string { return a.Manifest.Name + "@" + a.Manifest.Version }

// ReadFile reads a file of the artifact (e.g. ModelFile) and checks it against the manifest
// again, so that the bytes used are the bytes verified even if the folder changed since.
func (a *Artifact) ReadFile(p string) ([]byte, error) {
	f := a.Manifest.File(p)
	if f == nil {
		return nil, &VerifyError{a.Manifest.Name, a.Manifest.Version, p, "not listed in the manifest", ErrIntegrity}
	}
	b, _, err := readNoFollow(filepath.Join(a.Dir, filepath.FromSlash(p)), f.Size)
	if err != nil {
		return nil, &VerifyError{a.Manifest.Name, a.Manifest.Version, p, err.Error(), ErrIntegrity}
	}
	if problem := compareFile(f, int64(len(b)), sha256Hex(b)); problem != "" {
		return nil, &VerifyError{a.Manifest.Name, a.Manifest.Version, p, problem, ErrIntegrity}
	}
	return b, nil
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12] + "…"
	}
	return h
}

// compareFile says how a file of size and sum differs from its manifest entry ("" if not).
func compareFile(f *File, size int64, sum string) string {
	if size != f.Size {
		return fmt.Sprintf("size mismatch (manifest %d bytes, file %d bytes)", f.Size, size)
	}
	if sum != f.SHA256 {
		return fmt.Sprintf("sha256 mismatch (manifest %s, file %s)", short(f.SHA256), short(sum))
	}
	return ""
}

// readNoFollow reads a regular file without following a symlink in its last component. It
// reads at most limit+1 bytes (limit < 0: no limit) and returns the file's size.
func readNoFollow(path string, limit int64) ([]byte, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		if st, lerr := os.Lstat(path); lerr == nil && st.Mode()&fs.ModeSymlink != 0 {
			return nil, 0, fmt.Errorf("is a symlink")
		}
		return nil, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if !st.Mode().IsRegular() {
		return nil, 0, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	var r io.Reader = f
	if limit >= 0 {
		r = io.LimitReader(f, limit+1)
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, 0, err
	}
	return b, st.Size(), nil
}

// hashNoFollow returns the hex SHA-256 and size of a regular file, not following symlinks.
func hashNoFollow(path string) (string, int64, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|oNoFollow, 0)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	if !st.Mode().IsRegular() {
		return "", 0, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return "", 0, err
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// AddCommand is the policyctl command line that adds model@version to repo.
func AddCommand(repo, model, version string) string {
	return fmt.Sprintf("policyctl artifacts add --repository %s --name %s --version %s MODEL.onnx", repo, model, version)
}

// Verify checks the version folder dir (REPOSITORY/<model>/<version>) completely: the manifest
// (schema, fields, name and version equal to the folder's), the digest pin and the signature
// of opts, and every file: each listed file is a regular file of the listed size and SHA-256,
// no other file is there (but manifest.json and manifest.sig), and nothing is a symlink. It
// returns the artifact, or every problem found as *VerifyError (joined when several).
func Verify(dir string, opts VerifyOptions) (*Artifact, error) {
	dir = filepath.Clean(dir)
	model, version := filepath.Base(filepath.Dir(dir)), filepath.Base(dir)
	fail := func(file, problem string, kind error) *VerifyError {
		return &VerifyError{Model: model, Version: version, File: file, Problem: problem, Err: kind}
	}
	st, err := os.Lstat(dir)
	switch {
	case err != nil:
		return nil, fail("", err.Error(), ErrLayout)
	case st.Mode()&fs.ModeSymlink != 0:
		return nil, fail("", fmt.Sprintf("version folder %s is a symlink; version folders must be real folders", dir), ErrLayout)
	case !st.IsDir():
		return nil, fail("", fmt.Sprintf("%s is not a folder", dir), ErrLayout)
	}
	if st, err := os.Lstat(filepath.Dir(dir)); err == nil && st.Mode()&fs.ModeSymlink != 0 {
		return nil, fail("", fmt.Sprintf("model folder %s is a symlink; model folders must be real folders", filepath.Dir(dir)), ErrLayout)
	}
	if c, err := CanonicalVersion(version); err != nil {
		return nil, fail("", fmt.Sprintf("folder %s: %v", dir, err), ErrLayout)
	} else if c != version {
		return nil, fail("", fmt.Sprintf("folder %s: version folders are named by the canonical version; rename it to %s", dir, c), ErrLayout)
	}
	if err := ValidateName(model); err != nil {
		return nil, fail("", fmt.Sprintf("folder %s: %v", filepath.Dir(dir), err), ErrLayout)
	}

	raw, _, err := readNoFollow(filepath.Join(dir, ManifestFile), -1)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fail("", fmt.Sprintf("no %s in %s: add the model with %q", ManifestFile, dir,
			AddCommand(filepath.Dir(filepath.Dir(dir)), model, version)), ErrNoManifest)
	}
	if err != nil {
		return nil, fail(ManifestFile, err.Error(), ErrManifest)
	}
	m, err := ParseManifest(raw)
	if errors.Is(err, errSchema1) {
		return nil, fail(ManifestFile, err.Error(), ErrOldSchema)
	}
	if err != nil {
		return nil, fail(ManifestFile, err.Error(), ErrManifest)
	}
	if m.Name != model || m.Version != version {
		return nil, fail(ManifestFile, fmt.Sprintf("manifest is of %s@%s, not of its folder", m.Name, m.Version), ErrManifest)
	}
	a := &Artifact{Dir: dir, Manifest: m, Digest: Digest(raw)}
	var problems []error

	if opts.Digest != "" && opts.Digest != a.Digest {
		problems = append(problems, fail("", fmt.Sprintf("digest %s, pinned %s", a.Digest, opts.Digest), ErrDigest))
	}

	sig, _, err := readNoFollow(filepath.Join(dir, SignatureFile), 1<<16)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if len(opts.TrustedKeys) > 0 {
			problems = append(problems, fail("", "unsigned artifact; trusted keys are configured", ErrUnsigned))
		}
	case err != nil:
		problems = append(problems, fail(SignatureFile, err.Error(), ErrSignature))
	case len(opts.TrustedKeys) > 0:
		if id, err := checkSignature(raw, sig, opts.TrustedKeys); err != nil {
			problems = append(problems, fail(SignatureFile, err.Error(), ErrSignature))
		} else {
			a.SignedBy, a.Verified = id, true
		}
	default:
		var s Signature
		if err := decodeStrict(sig, &s); err != nil {
			problems = append(problems, fail(SignatureFile, "malformed signature file: "+err.Error(), ErrSignature))
		} else {
			a.SignedBy = s.KeyID
		}
	}

	seen := map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			rel, _ := filepath.Rel(dir, p)
			problems = append(problems, fail(filepath.ToSlash(rel), err.Error(), ErrIntegrity))
			return nil
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		switch t := d.Type(); {
		case t&fs.ModeSymlink != 0:
			target, _ := os.Readlink(p)
			problems = append(problems, fail(rel, fmt.Sprintf("is a symlink (to %s); a version folder holds no symlinks", target), ErrIntegrity))
		case t.IsDir():
		case !t.IsRegular():
			problems = append(problems, fail(rel, fmt.Sprintf("not a regular file (%s)", t), ErrIntegrity))
		case rel == ManifestFile || rel == SignatureFile:
		default:
			f := m.File(rel)
			if f == nil {
				problems = append(problems, fail(rel, "not listed in the manifest", ErrIntegrity))
				return nil
			}
			seen[rel] = true
			sum, size, err := hashNoFollow(p)
			if err != nil {
				problems = append(problems, fail(rel, err.Error(), ErrIntegrity))
			} else if problem := compareFile(f, size, sum); problem != "" {
				problems = append(problems, fail(rel, problem, ErrIntegrity))
			}
		}
		return nil
	})
	if err != nil {
		problems = append(problems, fail("", err.Error(), ErrIntegrity))
	}
	for _, f := range m.Files {
		if !seen[f.Path] && !hasProblem(problems, f.Path) {
			problems = append(problems, fail(f.Path, "missing", ErrIntegrity))
		}
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	return a, nil
}

func hasProblem(problems []error, file string) bool {
	for _, p := range problems {
		var ve *VerifyError
		if errors.As(p, &ve) && ve.File == file {
			return true
		}
	}
	return false
}

// Problems splits an error of Verify into its *VerifyErrors (or the error itself).
func Problems(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}
