package server

import (
	"crypto/ed25519"
	"os"
	"path/filepath"
	"testing"

	"github.com/policyd/policyd/artifacts"
)

// addArtifact stores model bytes as name@version in the repository dir with artifacts.Add
// (signed with key when not nil), as policyctl artifacts add does.
func addArtifact(t *testing.T, dir, name, version string, model []byte, key ed25519.PrivateKey) *artifacts.Artifact {
	t.Helper()
	src := filepath.Join(t.TempDir(), "model.onnx")
	if err := os.WriteFile(src, model, 0o644); err != nil {
		t.Fatal(err)
	}
	a, err := artifacts.Add(dir, artifacts.AddRequest{
		Name: name, Version: version, Model: src, SignKey: key, Tool: "server test",
		IO: artifacts.IO{
			Inputs:  []artifacts.Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{-1, 8}}},
			Outputs: []artifacts.Tensor{{Name: "action", Datatype: "FP32", Shape: []int64{-1, 2}}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return a
}
