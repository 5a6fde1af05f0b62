//go:build cgo

package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/policyd/policyd/artifacts/artifactstest"
)

// TestExternalDataEndToEnd: a model whose weights live in model.onnx.data (as PyTorch exports
// it) goes through "policyctl artifacts add", which stores and lists the sidecar, and serves
// over HTTP exactly as the self-contained model does; a tampered sidecar is refused at the
// next reload naming it.
func TestExternalDataEndToEnd(t *testing.T) {
	dir := t.TempDir()
	src, _ := filepath.Abs(filepath.Join(repoRoot, "../shared/peers/models/mlp-small.onnx"))
	plain, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("no shared model: %v", err)
	}
	model, data, err := artifactstest.Externalize(plain, "model.onnx.data", 4096)
	if err != nil {
		t.Fatal(err)
	}
	exported := filepath.Join(dir, "export")
	if err := os.MkdirAll(exported, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{"policy.onnx": model, "model.onnx.data": data} {
		if err := os.WriteFile(filepath.Join(exported, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	ctl := filepath.Join(dir, "policyctl")
	if out, err := exec.Command("go", "build", "-o", ctl, "../policyctl").CombinedOutput(); err != nil {
		t.Fatalf("go build policyctl: %v\n%s", err, out)
	}
	repo := filepath.Join(dir, "models")
	add := func(name, model string) string {
		t.Helper()
		out, err := exec.Command(ctl, "artifacts", "add", "--repository", repo, "--name", name, "--version", "1.0.0", model).CombinedOutput()
		if err != nil {
			t.Fatalf("policyctl artifacts add %s: %v\n%s", name, err, out)
		}
		return string(out)
	}
	add("plain", src)
	add("ext", filepath.Join(exported, "policy.onnx"))
	manifest, err := os.ReadFile(filepath.Join(repo, "ext", "1.0.0", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(manifest), `"path": "model.onnx.data"`) {
		t.Errorf("the manifest does not list the sidecar:\n%s", manifest)
	}
	// Without its sidecar the model is refused, naming it.
	os.Remove(filepath.Join(exported, "model.onnx.data"))
	out, err := exec.Command(ctl, "artifacts", "add", "--repository", repo, "--name", "ext", "--version", "2.0.0",
		filepath.Join(exported, "policy.onnx")).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `"model.onnx.data" is missing`) {
		t.Errorf("add without the sidecar: %v\n%s", err, out)
	}

	cfg := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(cfg, []byte("repository: {path: models}\nmodels:\n  - name: plain\n  - name: ext\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", "--config", cfg)
	obs := []byte(`{"inputs":[{"name":"obs","shape":[2,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8,-1,0.5,0,2,-3,1,4,-2]}]}`)
	outputs := func(model string) string {
		t.Helper()
		r := d.do(t, "POST", "/v2/models/"+model+"/infer", obs)
		if r.status != 200 {
			t.Fatalf("%s: %d %s", model, r.status, r.body)
		}
		var resp struct {
			Outputs json.RawMessage `json:"outputs"`
		}
		if err := json.Unmarshal(r.body, &resp); err != nil {
			t.Fatal(err)
		}
		return string(resp.Outputs)
	}
	want, got := outputs("plain"), outputs("ext")
	if got != want {
		t.Errorf("external-data model answers\n%s\nthe self-contained one\n%s", got, want)
	}

	// Tamper with the stored sidecar: the next reload refuses the version, naming the file.
	f := filepath.Join(repo, "ext", "1.0.0", "model.onnx.data")
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 1
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := d.do(t, "GET", "/v2/models/ext/versions/1.0.0/ready", nil)
		if r.status == 400 && strings.Contains(r.notReady, "model.onnx.data") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tampered ext@1.0.0 still %d %q", r.status, r.notReady)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if outputs("plain") != want {
		t.Error("plain changed its answer")
	}
}
