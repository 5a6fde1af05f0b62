package artifacts

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"strings"
	"time"
)

// File names of a version folder.
const (
	ManifestFile  = "manifest.json"
	SignatureFile = "manifest.sig"
	ModelFile     = "model.onnx"
)

// Schema is the manifest schema this package writes and serves. Schema 1 (a single file, no
// sizes) is only read by Migrate.
const Schema = 2

// Manifest is manifest.json, schema 2. Written by Add with encoding/json (fields in this
// order, 2-space indent, trailing newline); read strictly (unknown fields are an error).
type Manifest struct {
	Schema   int               `json:"schema"`
	Name     string            `json:"name"`
	Version  string            `json:"version"`
	Created  time.Time         `json:"created"` // RFC 3339, UTC, whole seconds
	Tool     string            `json:"tool"`    // "policyctl v0.3.0"
	Files    []File            `json:"files"`   // every file of the folder but manifest.json/.sig, sorted by path
	IO       IO                `json:"io"`      // the model's input/output signature (not the ed25519 one)
	Metadata map[string]string `json:"metadata,omitempty"`
}

// File is one file of a version folder, bound by its size and SHA-256.
type File struct {
	Path   string `json:"path"`   // slash-separated, relative to the version folder
	SHA256 string `json:"sha256"` // lower-case hex
	Size   int64  `json:"size"`
}

// IO is a model's input/output signature.
type IO struct {
	Inputs  []Tensor `json:"inputs"`
	Outputs []Tensor `json:"outputs"`
}

// Tensor describes one input or output: KServe v2 datatype ("FP32"), shape with -1 for a
// dimension the model does not fix.
type Tensor struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// manifestV1 is schema 1, the format Migrate rewrites.
type manifestV1 struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Model   string `json:"model"`
	SHA256  string `json:"sha256"`
}

// Encode returns the canonical bytes of m.
func (m *Manifest) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Digest is "sha256:" + the hex SHA-256 of b, the digest of an artifact whose manifest.json is b.
func Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// File returns the entry of path, or nil.
func (m *Manifest) File(p string) *File {
	for i := range m.Files {
		if m.Files[i].Path == p {
			return &m.Files[i]
		}
	}
	return nil
}

// errSchema1 says a manifest is of schema 1.
var errSchema1 = fmt.Errorf("manifest is of schema 1; rewrite it with \"policyctl artifacts migrate\"")

// schemaOf returns the "schema" of a manifest, 1 when absent.
func schemaOf(b []byte) (int, error) {
	var probe struct {
		Schema *json.RawMessage `json:"schema"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return 0, fmt.Errorf("manifest is not valid JSON: %v", err)
	}
	if probe.Schema == nil {
		return 1, nil
	}
	var n int
	if err := json.Unmarshal(*probe.Schema, &n); err != nil {
		return 0, fmt.Errorf("manifest schema %s is not an integer", *probe.Schema)
	}
	return n, nil
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and trailing data.
func decodeStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("data after the JSON value")
	}
	return nil
}

// ParseManifest parses manifest.json bytes of schema 2 and checks them on their own: fields,
// names, version, file paths and hashes. It does not look at any file.
func ParseManifest(b []byte) (*Manifest, error) {
	schema, err := schemaOf(b)
	if err != nil {
		return nil, err
	}
	switch {
	case schema == 1:
		return nil, errSchema1
	case schema != Schema:
		return nil, fmt.Errorf("manifest schema %d is not supported (this policyd reads schema %d)", schema, Schema)
	}
	var m Manifest
	if err := decodeStrict(b, &m); err != nil {
		return nil, fmt.Errorf("manifest: %v", err)
	}
	if err := m.check(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Manifest) check() error {
	if err := ValidateName(m.Name); err != nil {
		return fmt.Errorf("manifest: %v", err)
	}
	if !isCanonical(m.Version) {
		return fmt.Errorf("manifest: version %q is not a canonical semantic version (e.g. 1.2.3)", m.Version)
	}
	if len(m.Files) == 0 {
		return fmt.Errorf("manifest lists no files")
	}
	seen := map[string]bool{}
	for _, f := range m.Files {
		if err := checkPath(f.Path); err != nil {
			return fmt.Errorf("manifest: %v", err)
		}
		if seen[f.Path] {
			return fmt.Errorf("manifest lists %s twice", f.Path)
		}
		seen[f.Path] = true
		if !isHexSHA256(f.SHA256) {
			return fmt.Errorf("manifest: %s: sha256 %q is not 64 lower-case hex digits", f.Path, f.SHA256)
		}
		if f.Size < 0 {
			return fmt.Errorf("manifest: %s: negative size %d", f.Path, f.Size)
		}
	}
	if !seen[ModelFile] {
		return fmt.Errorf("manifest lists no %s", ModelFile)
	}
	return nil
}

// checkPath refuses a manifest path that is not a clean, slash-separated path inside the
// folder, or that names manifest.json or manifest.sig.
func checkPath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf("empty file path")
	case strings.Contains(p, `\`):
		return fmt.Errorf("file path %q contains a backslash", p)
	case strings.HasPrefix(p, "/"):
		return fmt.Errorf("file path %q is absolute", p)
	case p == ".." || strings.HasPrefix(p, "../") || strings.Contains(p, "/../") || strings.HasSuffix(p, "/.."):
		return fmt.Errorf("file path %q leaves the version folder (..)", p)
	case path.Clean(p) != p || p == ".":
		return fmt.Errorf("file path %q is not clean (want e.g. engines/cpu.bin)", p)
	case p == ManifestFile || p == SignatureFile:
		return fmt.Errorf("file path %q is reserved", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("file path %q contains NUL", p)
	}
	return nil
}

func isHexSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
