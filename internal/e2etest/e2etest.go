// Package e2etest is what the end-to-end tests of several packages share: the real policyd
// binary, built once per test binary (or named by $POLICYD_BIN), and models added to a
// temporary repository as policyctl would add them. Only tests import it.
package e2etest

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/policyd/policyd/artifacts"
)

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// PolicydBinary builds cmd/policyd once per test binary, unless $POLICYD_BIN names a binary.
func PolicydBinary(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("POLICYD_BIN"); p != "" {
		return p
	}
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "policyd-e2e-")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "policyd")
		out, err := exec.Command("go", "build", "-o", binPath, "github.com/policyd/policyd/cmd/policyd").CombinedOutput()
		if err != nil {
			binErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		tb.Fatal(binErr)
	}
	return binPath
}

// LinkModel adds model (a path relative to root, the repository root) to repo as the
// artifact <id>@1.0.0, as "policyctl artifacts add" would, without loading it (an invalid
// model too); an artifact already there is kept. tool names the test in the manifest.
func LinkModel(tb testing.TB, root, repo, id, model, tool string) {
	tb.Helper()
	src, err := filepath.Abs(filepath.Join(root, model))
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		tb.Fatal(err)
	}
	// The signature is what policyctl would record; these tests do not read it back.
	rec := []artifacts.Tensor{{Name: "recorded-by-policyctl", Datatype: "FP32", Shape: []int64{-1}}}
	io := artifacts.IO{Inputs: rec, Outputs: rec}
	if _, err := artifacts.Add(repo, artifacts.AddRequest{Name: id, Version: "1.0.0", Model: src, IO: io, Tool: tool}); err != nil && !errors.Is(err, artifacts.ErrExists) {
		tb.Fatalf("add %s: %v", id, err)
	}
}

// References decodes each testdata/reference/*.json under root (the ONNX Runtime references
// of `make refs`) into a T, in file name order, with the files' base names; none when there are
// none.
func References[T any](tb testing.TB, root string) (names []string, refs []T) {
	tb.Helper()
	files, err := filepath.Glob(filepath.Join(root, "testdata", "reference", "*.json"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			tb.Fatal(err)
		}
		var r T
		if err := json.Unmarshal(b, &r); err != nil {
			tb.Fatalf("%s: %v", f, err)
		}
		names, refs = append(names, filepath.Base(f)), append(refs, r)
	}
	return names, refs
}
