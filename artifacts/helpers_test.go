package artifacts

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// payload is the model file of the tests: the real mlp-small.onnx of the peers when present.
func payload(t *testing.T) string {
	t.Helper()
	p := filepath.Join("..", "..", "shared", "peers", "models", "mlp-small.onnx")
	if _, err := os.Stat(p); err == nil {
		return p
	}
	p = filepath.Join(t.TempDir(), "model.onnx")
	b := make([]byte, 4096)
	rand.Read(b)
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

var testIO = IO{
	Inputs:  []Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{-1, 8}}},
	Outputs: []Tensor{{Name: "action", Datatype: "FP32", Shape: []int64{-1, 2}}},
}

var testNow = func() time.Time { return time.Date(2026, 3, 4, 5, 6, 7, 800, time.FixedZone("X", 3600)) }

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// add adds name@version of the payload to repo and fails the test on error.
func add(t *testing.T, repo, name, version string, key ed25519.PrivateKey) *Artifact {
	t.Helper()
	a, err := Add(repo, AddRequest{Name: name, Version: version, Model: payload(t), IO: testIO,
		Metadata: map[string]string{"training_run": "run-7"}, SignKey: key, Tool: "policyctl test", Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// editManifest rewrites dir's manifest.json through a generic JSON value.
func editManifest(t *testing.T, dir string, edit func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(dir, ManifestFile)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	if b, err = json.MarshalIndent(m, "", "  "); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func firstFile(m map[string]any) map[string]any {
	return m["files"].([]any)[0].(map[string]any)
}

func mustWrite(t *testing.T, p string, b []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// wantErr checks err is of kind and its message contains every want.
func wantErr(t *testing.T, err, kind error, want ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want %v %q", kind, want)
	}
	if kind != nil && !errors.Is(err, kind) {
		t.Errorf("error %q is not %v", err, kind)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q lacks %q", err, w)
		}
	}
}
