package main

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/repository"
)

// goldenORTScript computes expected outputs with onnxruntime-node (artifacts add
// --golden-from onnxruntime).
//
//go:embed golden_ort.js
var goldenORTScript []byte

// goldenInputs reads the observations of --golden-inputs: a golden file whose cases may lack
// outputs (its tolerance and outputs options are kept), or one reference file of
// testdata/reference (top-level inputs; a case named by its id).
func goldenInputs(path string) (*artifacts.Golden, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var probe struct {
		ID     string                   `json:"id"`
		Inputs []artifacts.GoldenTensor `json:"inputs"`
		Cases  json.RawMessage          `json:"cases"`
	}
	if err := json.Unmarshal(b, &probe); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	g := &artifacts.Golden{Schema: artifacts.GoldenSchema}
	switch {
	case probe.Cases != nil:
		if err := json.Unmarshal(b, g); err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
	case probe.Inputs != nil:
		c, err := artifacts.ReferenceCase(b)
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		c.Outputs = nil // ONNX Runtime computes them anew
		g.Cases = []artifacts.GoldenCase{c}
	default:
		return nil, fmt.Errorf("%s: neither cases nor inputs: want a golden file or a reference file", path)
	}
	if len(g.Cases) == 0 {
		return nil, fmt.Errorf("%s: no cases", path)
	}
	return g, nil
}

// randomGoldenCases draws n cases over the model's inputs from seed, batch 1 (every
// dimension the model leaves free is 1), with make_refs.js's rules: floats uniform in [-1, 1)
// exact in float32; inputs whose name contains "mask" all ones; BOOL a coin; integers 0..3.
func randomGoldenCases(sig artifacts.IO, n int, seed uint64) ([]artifacts.GoldenCase, error) {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	var cases []artifacts.GoldenCase
	for c := range n {
		gc := artifacts.GoldenCase{Name: fmt.Sprintf("random-%d-%d", seed, c+1)}
		for _, in := range sig.Inputs {
			shape := make([]int64, len(in.Shape))
			elems := 1
			for d, x := range in.Shape {
				shape[d] = max(x, 1)
				if x < 0 {
					shape[d] = 1
				}
				elems *= int(shape[d])
			}
			if elems > 1<<22 {
				return nil, fmt.Errorf("input %q of shape %v is too large for random golden cases: give --golden-inputs", in.Name, in.Shape)
			}
			data := make([]float64, elems)
			for i := range data {
				switch {
				case strings.Contains(in.Name, "mask"):
					data[i] = 1
				case artifacts.IsFloatDatatype(in.Datatype):
					data[i] = -1 + float64(rng.Uint32()>>8)/float64(1<<23)
				case in.Datatype == "BOOL":
					data[i] = float64(rng.Uint32() >> 31)
				default:
					data[i] = float64(rng.Uint32() >> 30)
				}
			}
			gc.Inputs = append(gc.Inputs, artifacts.GoldenTensor{Name: in.Name, Datatype: in.Datatype, Shape: shape, Data: data})
		}
		cases = append(cases, gc)
	}
	return cases, nil
}

// errNoORT says what --golden-from onnxruntime needs.
var errNoORT = errors.New("--golden-from onnxruntime needs Node.js (node on PATH) and onnxruntime-node: " +
	"install Node.js, then `make refs` (npm ci under tools/reference) or bash bench/prepare-ort.sh (build/peers/node), " +
	"or pass --node-modules DIR holding onnxruntime-node")

// findNodeModules returns the node_modules folder holding onnxruntime-node: dir when given,
// else the first of tools/reference/node_modules and build/peers/node/node_modules found in
// the working folder or one above it.
func findNodeModules(dir string) (string, error) {
	has := func(d string) bool {
		_, err := os.Stat(filepath.Join(d, "onnxruntime-node", "package.json"))
		return err == nil
	}
	if dir != "" {
		if !has(dir) {
			return "", fmt.Errorf("--node-modules %s holds no onnxruntime-node: %w", dir, errNoORT)
		}
		return filepath.Abs(dir)
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := wd; ; d = filepath.Dir(d) {
		for _, c := range []string{filepath.Join(d, "tools", "reference", "node_modules"), filepath.Join(d, "build", "peers", "node", "node_modules")} {
			if has(c) {
				return c, nil
			}
		}
		if filepath.Dir(d) == d {
			return "", errNoORT
		}
	}
}

// goldenFromORT fills the expected outputs of g's cases with ONNX Runtime's on model (every
// deterministic output; a sampled one, which changes from run to run, is left out and said on
// stderr).
func goldenFromORT(model string, g *artifacts.Golden, nodeModules string, stderr io.Writer) error {
	node, err := exec.LookPath("node")
	if err != nil {
		return errNoORT
	}
	modules, err := findNodeModules(nodeModules)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "policyctl-golden-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "golden_ort.js")
	if err := os.WriteFile(script, goldenORTScript, 0o644); err != nil {
		return err
	}
	type reqCase struct {
		Name   string                   `json:"name"`
		Inputs []artifacts.GoldenTensor `json:"inputs"`
	}
	var req struct {
		Cases []reqCase `json:"cases"`
	}
	for _, c := range g.Cases {
		for _, in := range c.Inputs {
			if in.Datatype == "FP16" || in.Datatype == "BF16" {
				return fmt.Errorf("golden case %q: input %q is %s, which golden_ort.js does not feed; give the expected outputs with --golden", c.Name, in.Name, in.Datatype)
			}
		}
		req.Cases = append(req.Cases, reqCase{c.Name, c.Inputs})
	}
	rb, err := json.Marshal(req)
	if err != nil {
		return err
	}
	reqPath := filepath.Join(tmp, "request.json")
	if err := os.WriteFile(reqPath, rb, 0o644); err != nil {
		return err
	}
	abs, err := filepath.Abs(model)
	if err != nil {
		return err
	}
	cmd := exec.Command(node, script, abs, reqPath)
	cmd.Env = append(os.Environ(), "NODE_PATH="+modules)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("onnxruntime-node (%s): %v: %s", modules, err, strings.TrimSpace(errb.String()))
	}
	var resp struct {
		Generator string `json:"generator"`
		Cases     []struct {
			Name       string                   `json:"name"`
			Outputs    []artifacts.GoldenTensor `json:"outputs"`
			Stochastic []string                 `json:"stochastic"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(out.Bytes(), &resp); err != nil {
		return fmt.Errorf("onnxruntime-node: unreadable answer: %v", err)
	}
	if len(resp.Cases) != len(g.Cases) {
		return fmt.Errorf("onnxruntime-node answered %d cases, asked %d", len(resp.Cases), len(g.Cases))
	}
	for i, c := range resp.Cases {
		if len(c.Stochastic) > 0 {
			fmt.Fprintf(stderr, "note: golden case %q: %s changed between runs under ONNX Runtime (sampled): not checked\n", c.Name, strings.Join(c.Stochastic, ", "))
		}
		if len(c.Outputs) == 0 {
			return fmt.Errorf("golden case %q: every output is sampled: nothing to check", c.Name)
		}
		g.Cases[i].Outputs = c.Outputs
	}
	g.Generator = resp.Generator
	return nil
}

// goldenSource is what artifacts add stores as golden.json, made once the model's signature is
// known: nil when no --golden flag was given.
type goldenSource struct {
	file, from, inputs, nodeModules, out string
	cases                                int
	seed                                 uint64
	stderr                               io.Writer
}

func (s *goldenSource) make(model string, sig artifacts.IO) ([]byte, error) {
	if s.file != "" {
		b, err := os.ReadFile(s.file)
		if err != nil {
			return nil, fmt.Errorf("--golden: %w", err)
		}
		return b, nil
	}
	var g *artifacts.Golden
	if s.inputs != "" {
		var err error
		if g, err = goldenInputs(s.inputs); err != nil {
			return nil, fmt.Errorf("--golden-inputs: %w", err)
		}
	} else {
		cases, err := randomGoldenCases(sig, s.cases, s.seed)
		if err != nil {
			return nil, err
		}
		g = &artifacts.Golden{Schema: artifacts.GoldenSchema, Cases: cases}
	}
	if err := goldenFromORT(model, g, s.nodeModules, s.stderr); err != nil {
		return nil, err
	}
	b, err := g.Encode()
	if err != nil {
		return nil, err
	}
	if s.out != "" {
		if err := os.WriteFile(s.out, b, 0o644); err != nil {
			return nil, fmt.Errorf("--golden-out: %w", err)
		}
	}
	return b, nil
}

// verifyGolden verifies the version folder dir and runs its golden cases on backend (device:
// its GPU ordinal), printing each output's check; it returns the exit code.
func verifyGolden(dir, backend string, device int, trusted []string, stdout, stderr io.Writer) int {
	keys, err := loadTrustedKeys(trusted)
	if err != nil {
		fmt.Fprintf(stderr, "verify: %v\n", err)
		return 1
	}
	a, err := artifacts.Verify(dir, artifacts.VerifyOptions{TrustedKeys: keys})
	if err != nil {
		for _, p := range artifacts.Problems(err) {
			fmt.Fprintln(stderr, p)
		}
		return 1
	}
	g, err := a.Golden()
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	if g == nil {
		fmt.Fprintf(stderr, "verify: %s has no %s: add one with policyctl artifacts add --golden FILE (or --golden-from onnxruntime)\n", a.Ref(), artifacts.GoldenFile)
		return 1
	}
	onnx, err := a.ReadFile(artifacts.ModelFile)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	external, err := a.ExternalData(onnx)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		fmt.Fprintf(stderr, "verify: engine: %v\n", err)
		return 1
	}
	defer rt.Close()
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{Name: a.Ref(), Backend: backend, Device: device, External: external})
	if err != nil {
		fmt.Fprintf(stderr, "verify: %s on backend %s: %v\n", a.Ref(), backend, err)
		return 1
	}
	defer e.Close()
	dev := "cpu"
	if backend != "cpu" {
		dev = fmt.Sprintf("cuda:%d", device)
	}
	res, err := repository.CheckGolden(e, g, backend, dev)
	for _, c := range res.Checks {
		verdict := "pass"
		if !c.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(stdout, "%s %s\n", verdict, c)
	}
	if err != nil {
		fmt.Fprintf(stderr, "verify: %s: %v\n", a.Ref(), err)
		return 1
	}
	if !res.Pass {
		fmt.Fprintf(stderr, "%s: %s\n", a.Ref(), res.Summary())
		return 1
	}
	fmt.Fprintf(stdout, "ok %s %s: %s\n", a.Ref(), a.Digest, res.Summary())
	return 0
}
