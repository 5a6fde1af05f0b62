package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

const (
	ballModel = "../../../shared/models/mlagents/3DBall.onnx"
	ballRefB1 = "../../testdata/reference/mlagents-3DBall_b1.json"
	ballRefB8 = "../../testdata/reference/mlagents-3DBall_b8.json"
)

// needBall skips without the native library or 3DBall.
func needBall(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(ballModel); err != nil {
		t.Skipf("no model: %v", err)
	}
	if err := bridge.Available(); err != nil {
		t.Skipf("native library: %v", err)
	}
}

// ballGoldenFile writes 3DBall's golden file from ONNX Runtime's references (testdata/
// reference, batch 1 and 8); edit changes it first.
func ballGoldenFile(t *testing.T, edit func(*artifacts.Golden)) string {
	t.Helper()
	g := &artifacts.Golden{Schema: artifacts.GoldenSchema}
	for _, f := range []string{ballRefB1, ballRefB8} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		c, err := artifacts.ReferenceCase(b)
		if err != nil {
			t.Fatal(err)
		}
		g.Cases = append(g.Cases, c)
	}
	if edit != nil {
		edit(g)
	}
	b, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "golden.json")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGoldenUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"artifacts", "add", "--repository", "r", "--name", "m", "--version", "1.0.0", "--golden", "g", "--golden-from", "onnxruntime", "x.onnx"}, "exclude each other"},
		{[]string{"artifacts", "add", "--repository", "r", "--name", "m", "--version", "1.0.0", "--golden-from", "tensorflow", "x.onnx"}, `--golden-from "tensorflow": want onnxruntime`},
		{[]string{"artifacts", "add", "--repository", "r", "--name", "m", "--version", "1.0.0", "--golden-inputs", "i", "x.onnx"}, "go with --golden-from onnxruntime"},
		{[]string{"artifacts", "add", "--repository", "r", "--name", "m", "--version", "1.0.0", "--golden-from", "onnxruntime", "--golden-cases", "0", "x.onnx"}, "--golden-cases 0"},
		{[]string{"artifacts", "verify", "--golden", "d", "--repository", "r"}, "no --repository"},
	} {
		code, _, errs := call(c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs)
		}
	}
}

// artifacts add --golden stores the file signed with the version; verify --golden runs it on
// the cpu backend: it passes with ONNX Runtime's values, fails with a wrong one (numbers
// printed), and a golden.json changed after signing fails verification.
func TestAddAndVerifyGolden(t *testing.T) {
	needBall(t)
	repo := t.TempDir()
	keys := filepath.Join(t.TempDir(), "k")
	if code, _, errs := call("artifacts", "keygen", "--out", keys); code != 0 {
		t.Fatal(errs)
	}
	add := func(version, golden string) {
		t.Helper()
		code, out, errs := call("artifacts", "add", "--repository", repo, "--name", "3DBall", "--version", version,
			"--golden", golden, "--sign-key", keys+".key", ballModel)
		if code != 0 || !strings.Contains(out, "golden.json: 2 golden cases") {
			t.Fatalf("add %s: exit %d\n%s%s", version, code, out, errs)
		}
	}
	add("1.0.0", ballGoldenFile(t, nil))
	add("1.1.0", ballGoldenFile(t, func(g *artifacts.Golden) {
		out := g.Cases[0].Outputs
		out[len(out)-1].Data[1] -= 0.25 // deterministic_continuous_actions, batch 1
	}))

	code, out, errs := call("artifacts", "verify", "--golden", filepath.Join(repo, "3DBall", "1.0.0"), "--trusted-key", keys+".pub")
	if code != 0 || !strings.Contains(out, "ok 3DBall@1.0.0") || !strings.Contains(out, "golden check passed on cpu: 2 cases, 8 outputs") ||
		!strings.Contains(out, `pass case "mlagents-3DBall_b8" output "deterministic_continuous_actions": max abs error`) {
		t.Errorf("verify --golden 1.0.0: exit %d\n%s%s", code, out, errs)
	}
	code, out, errs = call("artifacts", "verify", "--golden", filepath.Join(repo, "3DBall", "1.1.0"), "--backend", "cpu")
	if code != 1 || !strings.Contains(out, `FAIL case "mlagents-3DBall_b1" output "deterministic_continuous_actions": max abs error 0.25`) ||
		!strings.Contains(out, "beyond tolerance (atol 0.0001, rtol 0.001) at index 1") || !strings.Contains(errs, "golden check failed on cpu: 1 of 8 outputs") {
		t.Errorf("verify --golden 1.1.0: exit %d\n%s%s", code, out, errs)
	}

	// Changed after signing: verification refuses it before anything runs.
	p := filepath.Join(repo, "3DBall", "1.0.0", artifacts.GoldenFile)
	b, _ := os.ReadFile(p)
	os.WriteFile(p, []byte(strings.Replace(string(b), `"schema": 1,`, `"schema": 1, "tolerance": {"atol": 10},`, 1)), 0o644)
	code, out, errs = call("artifacts", "verify", "--golden", filepath.Join(repo, "3DBall", "1.0.0"), "--trusted-key", keys+".pub")
	if code != 1 || !strings.Contains(errs, "3DBall@1.0.0: golden.json: size mismatch") {
		t.Errorf("verify --golden after editing golden.json: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := call("artifacts", "verify", "--repository", repo, "3DBall@1.0.0"); code != 1 || !strings.Contains(errs, "golden.json") {
		t.Errorf("verify after editing golden.json: exit %d, %s", code, errs)
	}

	// A version without golden cases has nothing to run.
	plain := t.TempDir()
	if code, _, errs := call("artifacts", "add", "--repository", plain, "--name", "3DBall", "--version", "1.0.0", ballModel); code != 0 {
		t.Fatal(errs)
	}
	if code, _, errs := call("artifacts", "verify", "--golden", filepath.Join(plain, "3DBall", "1.0.0")); code != 1 || !strings.Contains(errs, "has no golden.json") {
		t.Errorf("verify --golden without golden.json: exit %d, %s", code, errs)
	}
}

// ortNodeModules finds onnxruntime-node where make refs (tools/reference) or
// bench/prepare-ort.sh (build/peers/node) installs it, or the main checkout's.
func ortNodeModules(t *testing.T) string {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("no node on PATH: --golden-from onnxruntime is not tested (make deps installs Node.js)")
	}
	for _, d := range []string{
		filepath.Join("..", "..", "tools", "reference", "node_modules"),
		filepath.Join("..", "..", "build", "peers", "node", "node_modules"),
		filepath.Join("..", "..", "..", "main", "build", "peers", "node", "node_modules"),
	} {
		if _, err := os.Stat(filepath.Join(d, "onnxruntime-node", "package.json")); err == nil {
			abs, _ := filepath.Abs(d)
			return abs
		}
	}
	t.Skip("no onnxruntime-node: `make refs` installs it under tools/reference (make test does too)")
	return ""
}

// --golden-from onnxruntime on the reference's inputs gives the reference's outputs exactly
// (both are ONNX Runtime's), sampled outputs left out; on random observations it makes cases
// the cpu backend then meets.
func TestGoldenFromONNXRuntime(t *testing.T) {
	needBall(t)
	modules := ortNodeModules(t)
	repo := t.TempDir()
	out := filepath.Join(t.TempDir(), "made.json")
	code, stdout, errs := call("artifacts", "add", "--repository", repo, "--name", "3DBall", "--version", "1.0.0",
		"--golden-from", "onnxruntime", "--golden-inputs", ballRefB8, "--node-modules", modules, "--golden-out", out, ballModel)
	if code != 0 {
		t.Fatalf("add --golden-from onnxruntime: exit %d\n%s%s", code, stdout, errs)
	}
	if !strings.Contains(errs, "continuous_actions changed between runs under ONNX Runtime (sampled): not checked") {
		t.Errorf("no note of the sampled output: %s", errs)
	}
	a, err := artifacts.Verify(filepath.Join(repo, "3DBall", "1.0.0"), artifacts.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := a.Golden()
	if err != nil || g == nil {
		t.Fatalf("stored golden: %v", err)
	}
	if made, _ := os.ReadFile(out); len(made) == 0 {
		t.Error("--golden-out wrote nothing")
	}
	refBytes, _ := os.ReadFile(ballRefB8)
	ref, err := artifacts.ReferenceCase(refBytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Cases) != 1 || len(g.Cases[0].Outputs) != len(ref.Outputs) || !strings.HasPrefix(g.Generator, "onnxruntime-node ") {
		t.Fatalf("stored %d cases, generator %q; want 1 case with the %d deterministic outputs", len(g.Cases), g.Generator, len(ref.Outputs))
	}
	for i, want := range ref.Outputs {
		got := g.Cases[0].Outputs[i]
		if got.Name != want.Name || got.Datatype != want.Datatype || !slices.Equal(got.Shape, want.Shape) || !slices.Equal(got.Data, want.Data) {
			t.Errorf("output %d: %s %s %v %v, reference %s %s %v %v", i, got.Name, got.Datatype, got.Shape, got.Data, want.Name, want.Datatype, want.Shape, want.Data)
		}
	}

	// Random observations over the signature: the cpu backend meets ONNX Runtime on them.
	code, stdout, errs = call("artifacts", "add", "--repository", repo, "--name", "3DBall", "--version", "1.1.0",
		"--golden-from", "onnxruntime", "--golden-cases", "3", "--golden-seed", "7", "--node-modules", modules, ballModel)
	if code != 0 || !strings.Contains(stdout, "golden.json: 3 golden cases") {
		t.Fatalf("add --golden-from onnxruntime --golden-cases 3: exit %d\n%s%s", code, stdout, errs)
	}
	code, stdout, errs = call("artifacts", "verify", "--golden", filepath.Join(repo, "3DBall", "1.1.0"))
	if code != 0 || !strings.Contains(stdout, "golden check passed on cpu: 3 cases") {
		t.Errorf("verify --golden of random cases: exit %d\n%s%s", code, stdout, errs)
	}
}

// Without node, --golden-from onnxruntime says what it needs.
func TestGoldenFromONNXRuntimeWithoutNode(t *testing.T) {
	needBall(t)
	t.Setenv("PATH", t.TempDir())
	code, _, errs := call("artifacts", "add", "--repository", t.TempDir(), "--name", "3DBall", "--version", "1.0.0",
		"--golden-from", "onnxruntime", ballModel)
	if code != 1 || !strings.Contains(errs, "--golden-from onnxruntime needs Node.js (node on PATH) and onnxruntime-node") || !strings.Contains(errs, "make refs") {
		t.Errorf("exit %d, stderr %q", code, errs)
	}
}
