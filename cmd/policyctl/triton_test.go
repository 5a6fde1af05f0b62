package main

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/config"
)

// import-triton of the bundled examples/triton: signed versions, the config alone on stdout
// (loadable as it is), the report on stderr; a second run keeps the versions and says so.
func TestImportTritonExample(t *testing.T) {
	if err := bridge.Available(); err != nil {
		t.Skip("native library unusable:", err)
	}
	dir := t.TempDir()
	repo, key := filepath.Join(dir, "repo"), filepath.Join(dir, "ops")
	if code, out, errs := call("artifacts", "keygen", "--out", key); code != 0 {
		t.Fatalf("keygen: %d %s %s", code, out, errs)
	}
	code, out, errs := call("artifacts", "import-triton", "../../examples/triton", "--repository", repo, "--sign-key", key+".key")
	if code != 0 {
		t.Fatalf("import-triton: exit %d\n%s\n%s", code, out, errs)
	}
	if !strings.Contains(errs, "added 3DBall@1.0.0 sha256:") ||
		!strings.Contains(errs, "model 3DBall: optimization.execution_accelerators.gpu_execution_accelerator.name: not carried over") {
		t.Errorf("stderr:\n%s", errs)
	}
	pub, err := artifacts.LoadPublicKey(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(repo, "3DBall", "1.0.0", "manifest.sig")); err != nil {
		t.Errorf("no signature: %v", err)
	}
	cfgFile := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(cfgFile, []byte(out+"artifacts: {trusted_keys: ["+key+".pub]}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, _, err := config.Load(config.LoadOptions{File: cfgFile, Env: []string{}, DotEnv: config.NoDotEnv})
	if err != nil {
		t.Fatalf("config.Load of stdout: %v\n%s", err, out)
	}
	m := cfg.Models[0]
	if len(cfg.Models) != 1 || m.Name != "3DBall" || m.Instances != 2 || m.Batching.MaxBatchSize != 32 ||
		m.Batching.MaxQueueDelay.Microseconds() != 200 || strings.Join(m.Backends, ",") != "cpu" {
		t.Errorf("config: %+v", cfg.Models)
	}
	a, err := artifacts.Verify(filepath.Join(repo, "3DBall", "1.0.0"), artifacts.VerifyOptions{TrustedKeys: []ed25519.PublicKey{pub}})
	if err != nil || a.SignedBy == "" || a.Manifest.Metadata["triton_version"] != "1" {
		t.Errorf("verify: %v %+v", err, a)
	}
	code, _, errs = call("artifacts", "import-triton", "../../examples/triton", "--repository", repo)
	if code != 0 || !strings.Contains(errs, "model 3DBall: version 1.0.0 exists in "+repo+"; kept as it is") {
		t.Errorf("second import: exit %d\n%s", code, errs)
	}
}
