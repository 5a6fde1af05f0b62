package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// models[].version takes an exact version or a semver constraint; models[].digest pins an
// exact version only; artifacts.trusted_keys lists files that must exist, relative to the
// config file that names them.
func TestVersionsDigestsTrustedKeys(t *testing.T) {
	digest := "sha256:" + strings.Repeat("ab", 32)
	for _, tt := range []struct {
		version, digest string
		want            string // "" = valid
	}{
		{"1.2.3", "", ""},
		{"v1.2.3", digest, ""},
		{"1.3.0-rc.1+build.5", digest, ""},
		{"^1.2", "", ""},
		{"~1.2.3", "", ""},
		{">=1.0 <2", "", ""},
		{"1.x", "", ""},
		{"*", "", ""},
		{"1", "", ""}, // a constraint: 1.x
		{"latest", "", `models[0].version: must be empty (every version), an exact version like 1.2.3`},
		{"^1.2", digest, `models[0].digest: a digest pins one version: set models[0].version to an exact version like 1.2.3, not "^1.2"`},
		{"", digest, `models[0].digest: a digest pins one version`},
		{"1.2.3", "sha256:ABC", `models[0].digest: must match ^sha256:[0-9a-f]{64}$, got "sha256:ABC"`},
		{"1.2.3", "md5:" + strings.Repeat("a", 32), `models[0].digest: must match`},
	} {
		c := Defaults()
		c.Repository.Path = "testdata/repo"
		c.Models = []Model{{Name: "policy-a", Version: tt.version, Digest: tt.digest, Backends: []string{"cpu"}}}
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("version %q digest %q: %v", tt.version, tt.digest, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("version %q digest %q: %v, want %q", tt.version, tt.digest, err, tt.want)
		}
	}

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "release.pub"), []byte("key"), 0o644); err != nil {
		t.Fatal(err)
	}
	repo, _ := filepath.Abs("testdata/repo")
	file := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(file, []byte("repository:\n  path: "+repo+"\nartifacts:\n  trusted_keys: [release.pub, missing.pub]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err := Load(LoadOptions{File: file})
	want := "artifacts.trusted_keys[1]: file " + filepath.Join(dir, "missing.pub") + ": no such file or directory"
	if err == nil || !strings.Contains(err.Error(), want) || strings.Contains(err.Error(), "trusted_keys[0]") {
		t.Fatalf("Load = %v, want only %q", err, want)
	}
	if err := os.WriteFile(file, []byte("repository:\n  path: "+repo+"\nartifacts:\n  trusted_keys: [release.pub]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(LoadOptions{File: file})
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Artifacts.TrustedKeys; len(got) != 1 || got[0] != filepath.Join(dir, "release.pub") {
		t.Errorf("trusted_keys = %v, want the path relative to the config file", got)
	}
}
