package inference

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestGeneratedCodeFresh regenerates the Go code from the .proto files into a temporary
// folder, exactly as `make proto` does, and fails when a committed file differs: a .proto edited
// without `make proto`, or a generated file edited by hand.
func TestGeneratedCodeFresh(t *testing.T) {
	for _, tool := range []string{"protoc", "protoc-gen-go", "protoc-gen-go-grpc"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (make deps-test installs it): cannot check the generated code", tool)
		}
	}
	const pkg = "github.com/policyd/policyd/api/inference"
	out := t.TempDir()
	cmd := exec.Command("protoc", "-I", ".",
		"--go_out="+out, "--go_opt=paths=source_relative",
		"--go_opt=Mgrpc_service.proto="+pkg, "--go_opt=Mmodel_config.proto="+pkg,
		"--go-grpc_out="+out, "--go-grpc_opt=paths=source_relative",
		"--go-grpc_opt=Mgrpc_service.proto="+pkg, "--go-grpc_opt=Mmodel_config.proto="+pkg,
		"grpc_service.proto", "model_config.proto")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("protoc: %v\n%s", err, b)
	}
	gen, err := filepath.Glob(filepath.Join(out, "*.go"))
	if err != nil || len(gen) != 3 {
		t.Fatalf("protoc generated %v (%v), want 3 files", gen, err)
	}
	for _, g := range gen {
		want, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		name := filepath.Base(g)
		got, err := os.ReadFile(name)
		if err != nil {
			t.Errorf("%s is generated but not committed: run make proto", name)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: it differs from what protoc generates from the .proto files now; run make proto", name)
		}
	}
}
