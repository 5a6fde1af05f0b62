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
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
)

// ErrExists is returned by Add when the version is already in the repository.
var ErrExists = errors.New("version exists")

// tmpPrefix starts the name of Add's work folders under a model folder.
const tmpPrefix = ".tmp-"

// AddRequest is what Add stores.
type AddRequest struct {
	Name    string // model name
	Version string // semantic version; "v1.2.3" is stored as 1.2.3
	Model   string // path of the .onnx file, copied as model.onnx
	// ModelSHA256, when set, is the hex SHA-256 of the bytes the caller checked (loaded): Add
	// refuses if the file it copies differs, e.g. because it changed in between.
	ModelSHA256 string
	// ExternalSHA256, when set, is the hex SHA-256 of each external-data file the caller
	// checked, by location (ReadExternalData): Add refuses one that differs or was not checked.
	ExternalSHA256 map[string]string
	IO             IO                 // the model's input/output signature, as the engine reports it
	Metadata       map[string]string  // free: training_run, parent_version, ...
	SignKey        ed25519.PrivateKey // when set, manifest.sig is written too
	Tool           string             // "policyctl v0.3.0"
	Now            func() time.Time   // default time.Now
	// Golden, when set, is the golden.json of the version (ParseGolden; checked against IO):
	// stored as GoldenFile and listed in the manifest, so hashed and signed with it.
	Golden []byte
}

// beforeRename is a test hook called with the work folder just before it is renamed into place.
var beforeRename func(tmp string) error

// Add stores a new version in the repository repo: DIR/<name>/<version>/ with model.onnx,
// the external-data files the model names (ExternalDataFiles, copied from beside req.Model to
// the same relative paths), manifest.json listing and hashing them all and, with a SignKey,
// manifest.sig. A named external-data file that is missing, a symlink, not a regular file, or
// whose location is absolute, has "..", or is a reserved name, is an error naming it. The version is written in a work folder
// DIR/<name>/.tmp-* and renamed into place once complete and synced, never over an existing
// version (ErrExists), so a crash never leaves a half version visible; on failure the work
// folder is removed (what a crash leaves there, RemoveStale removes later). Adds of different
// versions may run concurrently (also from several processes); of the same version, exactly
// one succeeds.
func Add(repo string, req AddRequest) (*Artifact, error) {
	if err := ValidateName(req.Name); err != nil {
		return nil, err
	}
	version, err := CanonicalVersion(req.Version)
	if err != nil {
		return nil, err
	}
	ref := req.Name + "@" + version
	if len(req.IO.Inputs) == 0 || len(req.IO.Outputs) == 0 {
		return nil, fmt.Errorf("add %s: the model's input/output signature is empty", ref)
	}
	for k := range req.Metadata {
		if k == "" {
			return nil, fmt.Errorf("add %s: empty metadata key", ref)
		}
	}
	if req.Golden != nil {
		g, err := ParseGolden(req.Golden)
		if err != nil {
			return nil, fmt.Errorf("add %s: %w", ref, err)
		}
		if err := g.CheckIO(req.IO); err != nil {
			return nil, fmt.Errorf("add %s: %w", ref, err)
		}
	}
	now, tool := time.Now, req.Tool
	if req.Now != nil {
		now = req.Now
	}
	if tool == "" {
		tool = "policyd/artifacts"
	}
	// A new repository is created, as a first `git init` would be; its parent must exist.
	if err := os.Mkdir(repo, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("add %s: repository: %w", ref, err)
	}
	if st, err := os.Stat(repo); err != nil {
		return nil, fmt.Errorf("add %s: repository: %w", ref, err)
	} else if !st.IsDir() {
		return nil, fmt.Errorf("add %s: repository %s is not a folder", ref, repo)
	}
	modelDir := filepath.Join(repo, req.Name)
	final := filepath.Join(modelDir, version)
	if err := os.Mkdir(modelDir, 0o755); err == nil {
		if err := syncDir(repo); err != nil {
			return nil, err
		}
	} else if !errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	if err := checkNew(modelDir, req.Name, version); err != nil {
		return nil, err
	}

	tmp, err := os.MkdirTemp(modelDir, tmpPrefix+version+"-")
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	done := false
	defer func() {
		if !done {
			os.RemoveAll(tmp)
		}
	}()
	// Held until Add returns, so that RemoveStale never takes the folder of an add that runs
	// (where the file system cannot lock, the folder's age protects it).
	if release, err := lockWork(tmp); err == nil {
		defer release()
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	sum, size, err := copyFile(req.Model, filepath.Join(tmp, ModelFile))
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	if req.ModelSHA256 != "" && req.ModelSHA256 != sum {
		return nil, fmt.Errorf("add %s: %s changed while being added (checked sha256 %s, copied %s)", ref, req.Model, short(req.ModelSHA256), short(sum))
	}
	files := []File{{Path: ModelFile, SHA256: sum, Size: size}}
	sidecars, err := copyExternalData(req.Model, tmp, req.ExternalSHA256)
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	files = append(files, sidecars...)
	if req.Golden != nil {
		p := filepath.Join(tmp, GoldenFile)
		if err := writeNew(p, req.Golden, 0o644); err != nil {
			return nil, fmt.Errorf("add %s: %w", ref, err)
		}
		files = append(files, File{Path: GoldenFile, SHA256: sha256Hex(req.Golden), Size: int64(len(req.Golden))})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	m := &Manifest{
		Schema:   Schema,
		Name:     req.Name,
		Version:  version,
		Created:  now().UTC().Truncate(time.Second),
		Tool:     tool,
		Files:    files,
		IO:       req.IO,
		Metadata: req.Metadata,
	}
	raw, err := m.Encode()
	if err != nil {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	if err := writeNew(filepath.Join(tmp, ManifestFile), raw, 0o644); err != nil {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	a := &Artifact{Dir: final, Manifest: m, Digest: Digest(raw)}
	if req.SignKey != nil {
		sig, err := SignManifest(raw, req.SignKey)
		if err != nil {
			return nil, fmt.Errorf("add %s: %w", ref, err)
		}
		if err := writeNew(filepath.Join(tmp, SignatureFile), sig, 0o644); err != nil {
			return nil, fmt.Errorf("add %s: %w", ref, err)
		}
		a.SignedBy = KeyID(req.SignKey.Public().(ed25519.PublicKey))
	}
	if beforeRename != nil {
		if err := beforeRename(tmp); err != nil {
			return nil, fmt.Errorf("add %s: %w", ref, err)
		}
	}
	if err := renameNoReplace(tmp, final); err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("add %s: version %s of %s already exists: %w", ref, version, req.Name, ErrExists)
		}
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	done = true
	if err := syncDir(modelDir); err != nil {
		return nil, fmt.Errorf("add %s: %w", ref, err)
	}
	return a, nil
}

// checkNew refuses a version that exists, also one of equal precedence that differs only in
// build metadata (1.2.3+a and 1.2.3+b are the same version to a constraint). The exact-name
// check is repeated atomically by the rename; the build-metadata one is best effort.
func checkNew(modelDir, name, version string) error {
	v := semver.MustParse(version)
	have, err := versionsIn(modelDir)
	if err != nil {
		return err
	}
	for _, h := range have {
		if h == version {
			return fmt.Errorf("add %s@%s: version %s of %s already exists: %w", name, version, version, name, ErrExists)
		}
		if semver.MustParse(h).Equal(v) {
			return fmt.Errorf("add %s@%s: version %s of %s already exists and differs only in build metadata: %w", name, version, h, name, ErrExists)
		}
	}
	return nil
}

// copyExternalData copies the external-data files the model at tmp/model.onnx (the copy, so
// that what is listed is what the stored model names) names, from beside the source model
// src to the same relative paths under tmp, and returns their manifest entries. sums, when
// set, are the hex SHA-256 of the bytes the caller checked, by name: a file that differs, or
// one the caller did not check, is refused.
func copyExternalData(src, tmp string, sums map[string]string) ([]File, error) {
	model, err := os.ReadFile(filepath.Join(tmp, ModelFile))
	if err != nil {
		return nil, err
	}
	names, err := ExternalDataFiles(model)
	if errors.Is(err, errNotONNX) {
		// Not a protobuf: it names no files (and no engine loads it; Add stores bytes).
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	var out []File
	for _, name := range names {
		p, err := externalDataPath(src, name)
		if err != nil {
			return nil, err
		}
		dst := filepath.Join(tmp, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		sum, size, err := copyFile(p, dst)
		if err != nil {
			return nil, fmt.Errorf("external data file %q: %w", name, err)
		}
		if sums != nil && sums[name] != sum {
			return nil, fmt.Errorf("%s changed while being added (checked sha256 %s, copied %s)", p, short(sums[name]), short(sum))
		}
		out = append(out, File{Path: name, SHA256: sum, Size: size})
	}
	return out, nil
}

// externalDataPath returns the path of external-data file name (a clean location from
// ExternalDataFiles) of the model at modelPath, refusing a reserved name, a missing file, a
// symlink (the file or any folder on its way) and anything but a regular file, naming it.
func externalDataPath(modelPath, name string) (string, error) {
	if name == ModelFile || name == ManifestFile || name == SignatureFile || name == GoldenFile || name == "engines" || strings.HasPrefix(name, "engines/") || isTemp(name) {
		return "", fmt.Errorf("%s: external data file %q has a name the artifact reserves", modelPath, name)
	}
	if err := checkPath(name); err != nil {
		return "", fmt.Errorf("%s: external data: %v", modelPath, err)
	}
	base := filepath.Dir(modelPath)
	parts := strings.Split(name, "/")
	for i := range parts {
		p := filepath.Join(base, filepath.FromSlash(strings.Join(parts[:i+1], "/")))
		st, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s: external data file %q is missing (%s)", modelPath, name, p)
		}
		if err != nil {
			return "", fmt.Errorf("%s: external data file %q: %w", modelPath, name, err)
		}
		if st.Mode()&fs.ModeSymlink != 0 {
			return "", fmt.Errorf("%s: external data file %q: %s is a symlink; external data must be real files beside the model", modelPath, name, p)
		}
		if i == len(parts)-1 && !st.Mode().IsRegular() {
			return "", fmt.Errorf("%s: external data file %q is not a regular file", modelPath, name)
		}
	}
	return filepath.Join(base, filepath.FromSlash(name)), nil
}

// ReadExternalData reads the external-data files the model (model, the bytes of the file at
// modelPath) names from beside it, keyed by location as ExternalDataFiles writes it, with the
// checks Add makes (missing, symlinked, absolute, "..", reserved: an error naming the file);
// nil when it names none. For loading a model before Add (policyctl artifacts add).
func ReadExternalData(modelPath string, model []byte) (map[string][]byte, error) {
	names, err := ExternalDataFiles(model)
	if errors.Is(err, errNotONNX) {
		return nil, nil // the engine says what is wrong with it
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", modelPath, err)
	}
	if len(names) == 0 {
		return nil, nil
	}
	out := make(map[string][]byte, len(names))
	for _, name := range names {
		p, err := externalDataPath(modelPath, name)
		if err != nil {
			return nil, err
		}
		b, _, err := readNoFollow(p, -1)
		if err != nil {
			return nil, fmt.Errorf("%s: external data file %q: %w", modelPath, name, err)
		}
		out[name] = b
	}
	return out, nil
}

// copyFile copies a regular file src to the new file dst, syncs it, and returns its hex
// SHA-256 and size as written.
func copyFile(src, dst string) (string, int64, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", 0, err
	}
	defer in.Close()
	if st, err := in.Stat(); err != nil {
		return "", 0, err
	} else if !st.Mode().IsRegular() {
		return "", 0, fmt.Errorf("%s is not a regular file", src)
	}
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", 0, err
	}
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(out, h), in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", 0, fmt.Errorf("copy %s: %w", src, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}

// renameLocked is renameNoReplace for file systems without RENAME_NOREPLACE: an O_EXCL lock
// file .tmp-<version>.lock beside the version serialises the check and the rename.
func renameLocked(tmp, final string) error {
	lock := filepath.Join(filepath.Dir(final), tmpPrefix+filepath.Base(final)+".lock")
	f, err := os.OpenFile(lock, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("another add of %s is in progress (or left %s after a crash: remove it): %w", filepath.Base(final), lock, os.ErrExist)
		}
		return err
	}
	f.Close()
	defer os.Remove(lock)
	if _, err := os.Lstat(final); err == nil {
		return os.ErrExist
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Rename(tmp, final)
}

// isTemp reports whether an entry of a model folder is the work of Add or AddEngineCache (a
// .tmp-* work folder or lock file), never a version. It is the one predicate of work: entries
// skips it, Report lists it as stale, RemoveStale removes it once old.
func isTemp(name string) bool { return strings.HasPrefix(name, tmpPrefix) }
