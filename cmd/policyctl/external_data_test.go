package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/artifacts/artifactstest"
)

// A model with its weights in model.onnx.data: "artifacts add" stores and lists the sidecar
// and refuses the model without it; "engines build" (cuda on build/fakecuda) passes the
// verified sidecar to the engine, and the cache it stores is up to date for the next build.
func TestExternalDataAddAndBuild(t *testing.T) {
	b, err := os.ReadFile(peerModel(t))
	if err != nil {
		t.Fatal(err)
	}
	model, data, err := artifactstest.Externalize(b, "w/model.onnx.data", 64)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "policy.onnx")
	mustWrite := func(p string, b []byte) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mustWrite(p, model)
	repo := t.TempDir()
	code, out, errs := call("artifacts", "add", "--repository", repo, "--name", "ext", "--version", "1.0.0", p)
	if code != 1 || !strings.Contains(errs, `external data file "w/model.onnx.data" is missing`) {
		t.Errorf("add without the sidecar: exit %d\n%s%s", code, out, errs)
	}
	mustWrite(filepath.Join(dir, "w", "model.onnx.data"), data)
	if code, out, errs := call("artifacts", "add", "--repository", repo, "--name", "ext", "--version", "1.0.0", p); code != 0 {
		t.Fatalf("add: exit %d\n%s%s", code, out, errs)
	}
	a, err := artifacts.Verify(filepath.Join(repo, "ext", "1.0.0"), artifacts.VerifyOptions{})
	if err != nil || a.Manifest.File("w/model.onnx.data") == nil {
		t.Fatalf("the stored version: %v, %+v", err, a)
	}

	plugins := filepath.Join("..", "..", "build", "fakecuda")
	if _, err := os.Stat(filepath.Join(plugins, "libpolicyd_backend_cuda.so")); err != nil {
		t.Skip("no build/fakecuda")
	}
	code, out, errs = call("engines", "build", "--repository", repo, "--backend-dir", plugins)
	if code != 0 || !strings.Contains(out, "ext@1.0.0 cuda sm_90: built") {
		t.Fatalf("build: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = call("engines", "build", "--repository", repo, "--backend-dir", plugins)
	if code != 0 || !strings.Contains(out, "ext@1.0.0 cuda sm_90: up to date") {
		t.Errorf("second build: exit %d\n%s%s", code, out, errs)
	}
}
