package main

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

func TestEnginesBuildUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"engines", "build"}, "--repository is required"},
		{[]string{"engines", "build", "--repository", "x", "extra"}, `unexpected argument "extra"`},
	} {
		code, _, errs := call(tt.args...)
		if code != 2 || !strings.Contains(errs, tt.want) {
			t.Errorf("%v: exit %d %q, want 2 and %q", tt.args, code, errs, tt.want)
		}
	}
	code, out, _ := call("engines", "build", "--help")
	if code != 0 || !strings.Contains(out, "engines/<backend>-<backend version>/<sm_XX>/") {
		t.Errorf("--help: exit %d %q", code, out)
	}
	code, _, errs := call("engines", "build", "--repository", t.TempDir(), "--model", "nope")
	if code != 1 || !strings.Contains(errs, "nope") {
		t.Errorf("--model of a missing model: exit %d %q", code, errs)
	}
}

// On this machine (no GPU) there is nothing to build, said plainly, exit 0.
func TestEnginesBuildWithoutGPU(t *testing.T) {
	model := peerModel(t)
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Skip(err)
	}
	for _, b := range rt.Backends() {
		if b.Name != "cpu" && b.Available {
			t.Skipf("this machine has a usable %s backend", b.Name)
		}
	}
	rt.Close()
	repo := t.TempDir()
	if code, out, errs := call("artifacts", "add", "--repository", repo, "--name", "mlp", "--version", "1.0.0", model); code != 0 {
		t.Fatal(out, errs)
	}
	code, out, errs := call("engines", "build", "--repository", repo)
	if code != 0 || !strings.HasPrefix(out, "nothing to build: no GPU backend can build engines on this machine (") || !strings.Contains(out, "cuda: ") {
		t.Errorf("exit %d, out %q, err %q", code, out, errs)
	}
	if a, err := artifacts.Verify(filepath.Join(repo, "mlp", "1.0.0"), artifacts.VerifyOptions{}); err != nil || len(a.Manifest.EngineCaches()) != 0 {
		t.Errorf("the version changed: %v, %v", a, err)
	}
}

// With the cuda backend on the CPU emulation of CUDA (build/fakecuda, one sm_90 device): build,
// up to date, skip of a model the backend cannot run, signed versions.
func TestEnginesBuildFakeCuda(t *testing.T) {
	model := peerModel(t)
	plugins := filepath.Join("..", "..", "build", "fakecuda")
	if _, err := os.Stat(filepath.Join(plugins, "libpolicyd_backend_cuda.so")); err != nil {
		t.Skip("no build/fakecuda")
	}
	random := filepath.Join("..", "..", "..", "shared", "models", "mlagents", "3DBall.onnx")
	repo, keys := t.TempDir(), t.TempDir()
	key := filepath.Join(keys, "k")
	mustOK := func(args ...string) string {
		t.Helper()
		code, out, errs := call(args...)
		if code != 0 {
			t.Fatalf("%v: exit %d\n%s%s", args, code, out, errs)
		}
		return out
	}
	mustOK("artifacts", "keygen", "--out", key)
	mustOK("artifacts", "add", "--repository", repo, "--name", "mlp", "--version", "1.0.0", model)
	mustOK("artifacts", "add", "--repository", repo, "--name", "signed", "--version", "1.0.0", model, "--sign-key", key+".key")
	if _, err := os.Stat(random); err == nil {
		mustOK("artifacts", "add", "--repository", repo, "--name", "ball", "--version", "1.0.0", random)
	}

	code, out, _ := call("engines", "build", "--repository", repo, "--backend-dir", plugins)
	if code != 1 {
		t.Errorf("exit %d, want 1 (the signed version needs --sign-key):\n%s", code, out)
	}
	for _, re := range []string{
		`(?m)^target cuda-\S+ sm_90 on GPU 0 \(`,
		`(?m)^\[\d/\d\] mlp@1\.0\.0 cuda sm_90: built \S+ KiB in \S+ ms \(engines/cuda-\S+/sm_90\), digest sha256:[0-9a-f]{64}$`,
		`(?m)^\[\d/\d\] signed@1\.0\.0 cuda sm_90: FAILED: signed@1\.0\.0 is signed \(key [0-9a-f]+\) and adding a cache changes its manifest`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
	if _, err := os.Stat(random); err == nil && !regexp.MustCompile(`(?m)^\[\d/\d\] ball@1\.0\.0 cuda sm_90: skipped: .*RandomNormalLike`).MatchString(out) {
		t.Errorf("the random model is not skipped:\n%s", out)
	}
	a, err := artifacts.Verify(filepath.Join(repo, "mlp", "1.0.0"), artifacts.VerifyOptions{})
	if err != nil || len(a.Manifest.EngineCaches()) != 1 || !strings.Contains(out, "mlp@1.0.0 "+a.Digest) {
		t.Fatalf("mlp after the build: %v, %v\n%s", a, err, out)
	}

	out = mustOK("engines", "build", "--repository", repo, "--backend-dir", plugins, "--model", "signed", "--sign-key", key+".key")
	if !strings.Contains(out, "built 1, up to date 0, skipped 0, failed 0") {
		t.Errorf("signed build:\n%s", out)
	}
	pub, err := artifacts.LoadPublicKey(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := artifacts.Verify(filepath.Join(repo, "signed", "1.0.0"), artifacts.VerifyOptions{TrustedKeys: []ed25519.PublicKey{pub}}); err != nil {
		t.Errorf("the signed version after its build: %v", err)
	}
	out = mustOK("engines", "build", "--repository", repo, "--backend-dir", plugins, "--model", "mlp@1.0.0")
	if !strings.Contains(out, "mlp@1.0.0 cuda sm_90: up to date") {
		t.Errorf("second build:\n%s", out)
	}
	// cuda keeps no timing cache: none is written.
	for _, f := range a.Manifest.Files {
		if strings.HasSuffix(f.Path, "/timing.cache") {
			t.Errorf("the manifest lists %s", f.Path)
		}
	}

	// With the servers' config: its batch profile and parameters, which cuda does not bind
	// (its cache stays up to date); repository.path comes from it.
	cfg := filepath.Join(t.TempDir(), "policyd.yaml")
	if err := os.WriteFile(cfg, []byte("repository:\n  path: "+repo+"\nbatching:\n  max_batch_size: 8\nengine:\n  backend_parameters:\n    tensorrt.precision: fp16\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out = mustOK("engines", "build", "--config", cfg, "--backend-dir", plugins, "--model", "mlp@1.0.0")
	if !strings.Contains(out, "mlp@1.0.0 cuda sm_90: up to date") {
		t.Errorf("build with --config:\n%s", out)
	}
}

func TestEnginesBuildConfigErrors(t *testing.T) {
	code, _, errs := call("engines", "build", "--repository", t.TempDir(), "--profile", "prod")
	if code != 2 || !strings.Contains(errs, "--profile needs --config") {
		t.Errorf("--profile alone: exit %d %q", code, errs)
	}
	repo := t.TempDir()
	cfg := filepath.Join(t.TempDir(), "policyd.yaml")
	if err := os.WriteFile(cfg, []byte("repository:\n  path: "+repo+"\nengine:\n  backend_parameters:\n    tensorrt.precision: fp8\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, _, errs = call("engines", "build", "--config", cfg)
	if code != 1 || !strings.Contains(errs, `engine.backend_parameters.tensorrt.precision: must be fp32, fp16 or bf16, got "fp8"`) {
		t.Errorf("a bad parameter: exit %d %q", code, errs)
	}
}
