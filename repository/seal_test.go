package repository

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/policyd/policyd/artifacts"
)

// seal makes the version folder vdir (REPO/<model>/<version>) an artifact: it writes a
// manifest.json listing every file in it with its sha256 and size (replacing one there), and,
// with a key, manifest.sig. It returns the artifact's digest. Tests write their fake model
// bytes first, then seal, as policyctl artifacts add would.
func seal(t testing.TB, vdir string, key ed25519.PrivateKey) string {
	t.Helper()
	m := &artifacts.Manifest{
		Schema:  artifacts.Schema,
		Name:    filepath.Base(filepath.Dir(vdir)),
		Version: filepath.Base(vdir),
		Created: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Tool:    "engines test",
		IO: artifacts.IO{
			Inputs:  []artifacts.Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{-1, 8}}},
			Outputs: []artifacts.Tensor{{Name: "action", Datatype: "FP32", Shape: []int64{-1, 2}}},
		},
	}
	err := filepath.WalkDir(vdir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(vdir, p)
		rel = filepath.ToSlash(rel)
		if rel == artifacts.ManifestFile || rel == artifacts.SignatureFile || !d.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		s := sha256.Sum256(b)
		m.Files = append(m.Files, artifacts.File{Path: rel, SHA256: hex.EncodeToString(s[:]), Size: int64(len(b))})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(m.Files, func(i, j int) bool { return m.Files[i].Path < m.Files[j].Path })
	raw, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vdir, artifacts.ManifestFile), raw, 0o644); err != nil {
		t.Fatal(err)
	}
	sigPath := filepath.Join(vdir, artifacts.SignatureFile)
	if key != nil {
		sig, err := artifacts.SignManifest(raw, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(sigPath, sig, 0o644); err != nil {
			t.Fatal(err)
		}
	} else if err := os.Remove(sigPath); err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	return artifacts.Digest(raw)
}

// sealAll seals every version folder of the repository dir that has a model.onnx and no
// manifest.json yet.
func sealAll(t testing.TB, dir string) {
	t.Helper()
	vdirs, _ := filepath.Glob(filepath.Join(dir, "*", "*", ModelFile))
	for _, f := range vdirs {
		vdir := filepath.Dir(f)
		if _, err := os.Stat(filepath.Join(vdir, artifacts.ManifestFile)); os.IsNotExist(err) {
			seal(t, vdir, nil)
		}
	}
}
