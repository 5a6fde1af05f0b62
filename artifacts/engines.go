package artifacts

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Engine caches: a built engine stored in its version folder under
// engines/<backend>-<backend version>/<target>/, as two files listed in the manifest like every
// other: engine.bin (the bytes of bridge.Engine.Serialize) and engine.json (EngineCache, the
// binding); and beside them, for backends that keep one, timing.cache (bridge.Engine.TimingCache:
// what a later build for the same target may start from). The manifest schema does not change, so servers that know nothing of caches still
// verify such an artifact. See docs/artifacts.md, Engine caches.

// File names of an engine cache folder.
const (
	EngineDataFile    = "engine.bin"
	EngineBindingFile = "engine.json"
	TimingCacheFile   = "timing.cache"
)

// EngineCache is engine.json: what an engine cache was built from and for. A cache is used
// only when every field but Builder, Device and Created matches the load (Match).
type EngineCache struct {
	Backend        string `json:"backend"`         // "cuda"
	BackendVersion string `json:"backend_version"` // bridge.BackendInfo.Version
	Target         string `json:"target"`          // the device's architecture, "sm_90"
	// ModelSHA256 is the hex SHA-256 of the model.onnx it was built from.
	ModelSHA256 string `json:"model_sha256"`
	// Options are the build options that change the engine ("" when none); the backend's own
	// envelope binds its options again.
	Options string    `json:"options"`
	Builder string    `json:"builder"`          // "policyctl v0.3.0"
	Device  string    `json:"device,omitempty"` // the GPU it was built on, "NVIDIA H100 80GB HBM3"
	Created time.Time `json:"created"`          // RFC 3339, UTC, whole seconds
}

// pathPart is a backend, backend version or target usable in a folder name.
var pathPart = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+-]*$`)

// EngineCacheDir is the folder of the cache of backend at backendVersion for target, relative
// to the version folder: "engines/cuda-0.1.0-k3f2/sm_90".
func EngineCacheDir(backend, backendVersion, target string) string {
	return path.Join("engines", backend+"-"+backendVersion, target)
}

func checkEngineKey(backend, backendVersion, target string) error {
	for _, p := range []struct{ what, v string }{{"backend", backend}, {"backend version", backendVersion}, {"target", target}} {
		if !pathPart.MatchString(p.v) || strings.Contains(p.v, "..") {
			return fmt.Errorf("engine cache: %s %q is not usable in a folder name (letters, digits, '.', '_', '+', '-')", p.what, p.v)
		}
	}
	return nil
}

// ErrStaleEngine marks an engine cache that does not match the load it was asked for: it must
// be rebuilt (policyctl engines build).
var ErrStaleEngine = errors.New("stale engine cache")

// Match reports how c differs from a load of the model whose model.onnx has SHA-256
// modelSHA256 with options; nil when it matches.
func (c *EngineCache) Match(backend, backendVersion, target, modelSHA256, options string) error {
	for _, f := range []struct{ field, have, want string }{
		{"backend", c.Backend, backend},
		{"backend_version", c.BackendVersion, backendVersion},
		{"target", c.Target, target},
		{"model_sha256", c.ModelSHA256, modelSHA256},
		{"options", c.Options, options},
	} {
		if f.have != f.want {
			return fmt.Errorf("%w: %s is %q, this load needs %q; rebuild engines", ErrStaleEngine, f.field, f.have, f.want)
		}
	}
	return nil
}

// EngineCache reads the engine cache of backend at backendVersion for target: its binding and
// its bytes, each checked against the manifest as it is read (Artifact.ReadFile). It returns
// nil, nil, nil when the manifest lists none, and an error wrapping ErrStaleEngine when the
// binding does not match this artifact's model.onnx, options or the key asked for.
func (a *Artifact) EngineCache(backend, backendVersion, target, options string) (*EngineCache, []byte, error) {
	if err := checkEngineKey(backend, backendVersion, target); err != nil {
		return nil, nil, err
	}
	dir := EngineCacheDir(backend, backendVersion, target)
	if a.Manifest.File(dir+"/"+EngineBindingFile) == nil && a.Manifest.File(dir+"/"+EngineDataFile) == nil {
		return nil, nil, nil
	}
	raw, err := a.ReadFile(dir + "/" + EngineBindingFile)
	if err != nil {
		return nil, nil, err
	}
	var c EngineCache
	if err := decodeStrict(raw, &c); err != nil {
		return nil, nil, fmt.Errorf("%s/%s: %v", dir, EngineBindingFile, err)
	}
	if err := c.Match(backend, backendVersion, target, a.Manifest.File(ModelFile).SHA256, options); err != nil {
		return &c, nil, fmt.Errorf("%s: %w", dir, err)
	}
	data, err := a.ReadFile(dir + "/" + EngineDataFile)
	if err != nil {
		return &c, nil, err
	}
	return &c, data, nil
}

// TimingCache reads the timing cache of backend at backendVersion for target
// (EngineCacheDir/timing.cache), checked against the manifest as it is read. It returns nil,
// nil when the manifest lists none. A timing cache carries no binding: it only speeds up a
// build for the target, whose backend ignores one it cannot use.
func (a *Artifact) TimingCache(backend, backendVersion, target string) ([]byte, error) {
	if err := checkEngineKey(backend, backendVersion, target); err != nil {
		return nil, err
	}
	p := EngineCacheDir(backend, backendVersion, target) + "/" + TimingCacheFile
	if a.Manifest.File(p) == nil {
		return nil, nil
	}
	return a.ReadFile(p)
}

// EngineCaches lists the bindings of the engine caches the manifest lists (not read: the
// folder names), as "backend-version/target" folders relative to engines/.
func (m *Manifest) EngineCaches() []string {
	var out []string
	for _, f := range m.Files {
		if d, ok := strings.CutSuffix(f.Path, "/"+EngineBindingFile); ok && strings.HasPrefix(d, "engines/") {
			out = append(out, strings.TrimPrefix(d, "engines/"))
		}
	}
	return out
}

// AddEngineRequest is what AddEngineCache stores.
type AddEngineRequest struct {
	Backend, BackendVersion, Target string
	Options                         string // the build options ("" none)
	Device                          string // the GPU it was built on
	Data                            []byte // bridge.Engine.Serialize
	// TimingCache, when not empty, is stored as timing.cache beside the engine
	// (bridge.Engine.TimingCache), replacing the one there; empty leaves the folder's own.
	TimingCache []byte
	// ModelSHA256 is the hex SHA-256 of the model.onnx the engine was built from: AddEngineCache
	// refuses when the artifact's differs (the folder changed since it was read).
	ModelSHA256 string
	// SignKey re-signs the new manifest. Required when the version is signed: its manifest.sig
	// would not verify the new manifest.
	SignKey ed25519.PrivateKey
	Builder string           // "policyctl v0.3.0"
	Now     func() time.Time // default time.Now
}

// AddEngineCache stores an engine cache (and its timing cache, when given) in the verified
// version folder dir, replacing one of the same backend, backend version and target. It rewrites manifest.json (and
// manifest.sig with req.SignKey), so the artifact's digest changes: a models[].digest pin
// must be updated to the returned Artifact's Digest. The version is rebuilt beside it (a
// .tmp- folder of hard links to its files, plus the new ones) and exchanged with it in one
// rename, so a reader sees the old folder or the new one, never a mix.
func AddEngineCache(dir string, req AddEngineRequest) (*Artifact, error) {
	if err := checkEngineKey(req.Backend, req.BackendVersion, req.Target); err != nil {
		return nil, err
	}
	if len(req.Data) == 0 {
		return nil, errors.New("engine cache: no data")
	}
	a, err := Verify(dir, VerifyOptions{})
	if err != nil {
		return nil, err
	}
	ref := a.Ref()
	if a.SignedBy != "" && req.SignKey == nil {
		return nil, fmt.Errorf("add engine cache to %s: the version is signed (key %s) and adding a cache changes its manifest: give the signing key to sign it again", ref, a.SignedBy)
	}
	model := a.Manifest.File(ModelFile)
	if req.ModelSHA256 != "" && req.ModelSHA256 != model.SHA256 {
		return nil, fmt.Errorf("add engine cache to %s: the engine was built from model.onnx sha256 %s, the artifact holds %s", ref, short(req.ModelSHA256), short(model.SHA256))
	}
	now, builder := time.Now, req.Builder
	if req.Now != nil {
		now = req.Now
	}
	if builder == "" {
		builder = "policyd/artifacts"
	}
	binding, err := json.MarshalIndent(EngineCache{
		Backend: req.Backend, BackendVersion: req.BackendVersion, Target: req.Target, ModelSHA256: model.SHA256,
		Options: req.Options, Builder: builder, Device: req.Device, Created: now().UTC().Truncate(time.Second),
	}, "", "  ")
	if err != nil {
		return nil, err
	}
	binding = append(binding, '\n')
	cdir := EngineCacheDir(req.Backend, req.BackendVersion, req.Target)
	added := map[string][]byte{cdir + "/" + EngineDataFile: req.Data, cdir + "/" + EngineBindingFile: binding}
	if len(req.TimingCache) > 0 {
		added[cdir+"/"+TimingCacheFile] = req.TimingCache
	}

	m := *a.Manifest
	m.Files = slices.DeleteFunc(slices.Clone(a.Manifest.Files), func(f File) bool { return added[f.Path] != nil })
	for p, b := range added {
		m.Files = append(m.Files, File{Path: p, SHA256: sha256Hex(b), Size: int64(len(b))})
	}
	slices.SortFunc(m.Files, func(x, y File) int { return strings.Compare(x.Path, y.Path) })
	raw, err := m.Encode()
	if err != nil {
		return nil, err
	}

	tmp, err := os.MkdirTemp(filepath.Dir(a.Dir), tmpPrefix+m.Version+"-engines-")
	if err != nil {
		return nil, fmt.Errorf("add engine cache to %s: %w", ref, err)
	}
	defer os.RemoveAll(tmp)                        // after the exchange: the old folder
	if release, err := lockWork(tmp); err == nil { // RemoveStale leaves it alone (as Add's)
		defer release()
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		dst := filepath.Join(tmp, filepath.FromSlash(f.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return nil, err
		}
		if b, ok := added[f.Path]; ok {
			err = writeNew(dst, b, 0o644)
		} else {
			err = linkOrCopy(filepath.Join(a.Dir, filepath.FromSlash(f.Path)), dst, f)
		}
		if err != nil {
			return nil, fmt.Errorf("add engine cache to %s: %w", ref, err)
		}
	}
	if err := writeNew(filepath.Join(tmp, ManifestFile), raw, 0o644); err != nil {
		return nil, err
	}
	out := &Artifact{Dir: a.Dir, Manifest: &m, Digest: Digest(raw)}
	if req.SignKey != nil {
		sig, err := SignManifest(raw, req.SignKey)
		if err != nil {
			return nil, err
		}
		if err := writeNew(filepath.Join(tmp, SignatureFile), sig, 0o644); err != nil {
			return nil, err
		}
		out.SignedBy = KeyID(req.SignKey.Public().(ed25519.PublicKey))
	}
	// The folder must still be what was verified: the manifest unchanged.
	if cur, _, err := readNoFollow(filepath.Join(a.Dir, ManifestFile), -1); err != nil || Digest(cur) != a.Digest {
		return nil, fmt.Errorf("add engine cache to %s: manifest.json changed meanwhile; try again", ref)
	}
	if err := exchangeDirs(tmp, a.Dir); err != nil {
		return nil, fmt.Errorf("add engine cache to %s: exchange the version folder: %w", ref, err)
	}
	if err := syncDir(filepath.Dir(a.Dir)); err != nil {
		return nil, err
	}
	return out, nil
}

// linkOrCopy puts the verified file f of the version at dst: a hard link, or a copy checked
// against f where links are not possible.
func linkOrCopy(src, dst string, f File) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	} else if errors.Is(err, fs.ErrNotExist) {
		return err
	}
	sum, size, err := copyFile(src, dst)
	if err != nil {
		return err
	}
	if problem := compareFile(&f, size, sum); problem != "" {
		return fmt.Errorf("%s: %s", f.Path, problem)
	}
	return nil
}
