//go:build cgo

package repository

// Golden checks on the real cpu backend with 3DBall (../shared/models/mlagents/3DBall.onnx) and
// ONNX Runtime's outputs for it (testdata/reference/mlagents-3DBall_b{1,8}.json, made by
// tools/reference/make_refs.js) as the expected values.

import (
	"encoding/binary"
	"math"
	"os"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

const ballModel = "../../shared/models/mlagents/3DBall.onnx"

// ballGolden is 3DBall's golden file from the ONNX Runtime references at batch 1 and 8; edit,
// when set, changes it before it is encoded.
func ballGolden(t *testing.T, edit func(g *artifacts.Golden)) []byte {
	t.Helper()
	return refGolden(t, "mlagents-3DBall", edit)
}

// refGolden is the golden file of reference id at batch 1 and 8 (testdata/reference).
func refGolden(t *testing.T, id string, edit func(g *artifacts.Golden)) []byte {
	t.Helper()
	g := &artifacts.Golden{Schema: artifacts.GoldenSchema, Generator: "onnxruntime-node (testdata/reference)"}
	for _, f := range []string{"../testdata/reference/" + id + "_b1.json", "../testdata/reference/" + id + "_b8.json"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Skip("reference missing:", err)
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
	return b
}

// addBall adds 3DBall as name@1.0.0 with golden to repo, as policyctl artifacts add does.
func addBall(t *testing.T, rt *bridge.Runtime, repo, name string, golden []byte) {
	t.Helper()
	addGolden(t, rt, repo, name, ballModel, golden)
}

// addGolden adds model as name@1.0.0 with golden to repo, as policyctl artifacts add does.
func addGolden(t *testing.T, rt *bridge.Runtime, repo, name, model string, golden []byte) {
	t.Helper()
	onnx, err := os.ReadFile(model)
	if err != nil {
		t.Skip("model missing:", err)
	}
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{Backend: "cpu"})
	if err != nil {
		t.Fatal(err)
	}
	io := Signature(e)
	e.Close()
	if _, err := artifacts.Add(repo, artifacts.AddRequest{Name: name, Version: "1.0.0", Model: model, IO: io, Golden: golden, Tool: "golden test"}); err != nil {
		t.Fatal(err)
	}
}

// skewLoader builds engines of backend "skewed" as cpu ones and remembers them: their golden
// contexts add 0.01 to the first deterministic action, a backend that computes differently.
type skewLoader struct {
	rt     *bridge.Runtime
	mu     sync.Mutex
	skewed map[*bridge.Engine]bool
}

func (l *skewLoader) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	skew := o.Backend == "skewed"
	if skew {
		o.Backend = "cpu"
	}
	e, err := l.rt.NewEngine(onnx, o)
	if err == nil && skew {
		l.mu.Lock()
		l.skewed[e] = true
		l.mu.Unlock()
	}
	return e, err
}

type skewCtx struct {
	GoldenExec
	outs []bridge.IOInfo
}

func (c *skewCtx) Run(inputs, outputs []bridge.Tensor) error {
	if err := c.GoldenExec.Run(inputs, outputs); err != nil {
		return err
	}
	i := bridge.IOIndex(c.outs, "deterministic_continuous_actions")
	b := append([]byte(nil), outputs[i].Data...) // the context's memory is not ours to change
	x := math.Float32frombits(binary.LittleEndian.Uint32(b))
	binary.LittleEndian.PutUint32(b, math.Float32bits(x+0.01))
	outputs[i].Data = b
	return nil
}

func TestGoldenOnTheCPUBackend(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	repo := t.TempDir()
	addBall(t, rt, repo, "ball-met", ballGolden(t, nil))
	// 2.0.0: a golden value added wrong (its hashes are right: it is what was signed).
	addBall(t, rt, repo, "ball-tampered", ballGolden(t, func(g *artifacts.Golden) {
		for i, o := range g.Cases[1].Outputs {
			if o.Name == "deterministic_continuous_actions" {
				g.Cases[1].Outputs[i].Data[5] += 0.01
			}
		}
	}))
	// 3.0.0, 4.0.0: right golden values, on a backend that computes differently, with and
	// without fallback to cpu.
	addBall(t, rt, repo, "ball-fallback", ballGolden(t, nil))
	addBall(t, rt, repo, "ball-nofallback", ballGolden(t, nil))

	l := &skewLoader{rt: rt, skewed: map[*bridge.Engine]bool{}}
	core, logs := observer.New(zap.InfoLevel)
	r := NewRepository(l, zap.New(core))
	t.Cleanup(func() { r.Close() })
	r.goldenOpen = func(e *bridge.Engine) (GoldenExec, []bridge.IOInfo, []bridge.IOInfo, error) {
		c, ins, outs, err := openGolden(e)
		l.mu.Lock()
		skew := l.skewed[e]
		l.mu.Unlock()
		if err != nil || !skew {
			return c, ins, outs, err
		}
		return &skewCtx{c, outs}, ins, outs, nil
	}
	mustApply(t, r, Desired{Dir: repo, Models: []ModelSpec{
		{Name: "ball-met", Backends: []string{"cpu"}},
		{Name: "ball-tampered", Backends: []string{"cpu"}},
		{Name: "ball-fallback", Backends: []string{"skewed", "cpu"}},
		{Name: "ball-nofallback", Backends: []string{"skewed", "cpu"}, Fallback: ptr(false)},
	}})

	get := func(model string) *Version {
		v, err := r.Get(model, "1.0.0")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	// 1.0.0: the cpu backend meets ONNX Runtime's outputs, and serves.
	v := get("ball-met")
	if ok, reason := v.Ready(); !ok {
		t.Fatalf("1.0.0 not ready: %s", reason)
	}
	checks := v.GoldenChecks()
	if len(checks) != 1 || checks[0].Outcome() != "pass" || len(checks[0].Result.Checks) != 8 {
		t.Fatalf("1.0.0 golden checks: %+v", checks)
	}
	for _, c := range checks[0].Result.Checks {
		if c.MaxAbs > 1e-5 {
			t.Errorf("1.0.0: %s: the cpu backend is further from ONNX Runtime than expected", c)
		}
	}

	// 2.0.0: the wrong value keeps it from serving, the numbers in the reason.
	ok, reason := get("ball-tampered").Ready()
	for _, want := range []string{`case "mlagents-3DBall_b8" output "deterministic_continuous_actions": max abs error 0.01`,
		"beyond tolerance (atol 0.0001, rtol 0.001) at index 5"} {
		if ok || !strings.Contains(reason, want) {
			t.Errorf("2.0.0: ready %v, reason %q lacks %q", ok, reason, want)
		}
	}

	// 3.0.0: the skewed backend fails them and the version falls back to cpu, the skewed
	// numbers logged.
	v = get("ball-fallback")
	if ok, reason := v.Ready(); !ok || v.Backend() != "cpu" {
		t.Fatalf("3.0.0: ready %v on %q (%s), want ready on cpu", ok, v.Backend(), reason)
	}
	if got := outcomes(v); strings.Join(got, " ") != "skewed/cuda:0=fail cpu/cpu=pass" {
		t.Errorf("3.0.0 golden checks %v", got)
	}
	warned := 0
	for _, e := range logs.FilterMessage("golden check failed: outputs leave the tolerance on the serving backend").All() {
		m := e.ContextMap()
		if m["model"] == "ball-fallback" && m["backend"] == "skewed" && m["output"] == "deterministic_continuous_actions" && m["max_abs_error"].(float64) > 0.009 {
			warned++
		}
	}
	if warned != 1 {
		t.Errorf("3.0.0: %d warnings with the skewed backend's numbers, want 1", warned)
	}

	// 4.0.0: without fallback, not ready.
	ok, reason = get("ball-nofallback").Ready()
	if ok || !strings.Contains(reason, `golden check failed on skewed on cuda:0`) || !strings.Contains(reason, "max abs error 0.01") {
		t.Errorf("4.0.0: ready %v, reason %q", ok, reason)
	}
}

// On a GPU backend (the cuda plugin over the CPU emulation of CUDA, build/fakecuda) the cases
// run on the engine of the device the version serves on, and the check names it.
func TestGoldenOnFakeCUDA(t *testing.T) {
	rt := fakeCudaRuntime(t)
	repo := t.TempDir()
	native := enginestest.NativeRuntime(t)
	addGolden(t, native, repo, "mlp-met", mlpSmall, refGolden(t, "peers-mlp-small", nil))
	addGolden(t, native, repo, "mlp-tampered", mlpSmall, refGolden(t, "peers-mlp-small", func(g *artifacts.Golden) {
		g.Cases[0].Outputs[0].Data[0] += 0.01
	}))
	r := NewRepository(rt, nil)
	t.Cleanup(func() { r.Close() })
	mustApply(t, r, Desired{Dir: repo, Default: ModelSpec{Backends: []string{"cuda"}}})
	v, _ := r.Get("mlp-met", "1.0.0")
	if ok, reason := v.Ready(); !ok || v.Device() != "cuda:0" {
		t.Fatalf("mlp-met: ready %v on %q (%s)", ok, v.Device(), reason)
	}
	if got := strings.Join(outcomes(v), " "); got != "cuda/cuda:0=pass" {
		t.Errorf("mlp-met golden checks %q", got)
	}
	v, _ = r.Get("mlp-tampered", "1.0.0")
	ok, reason := v.Ready()
	if ok || !strings.Contains(reason, `golden check failed on cuda on cuda:0: 1 of 2 outputs: case "peers-mlp-small_b1" output "action": max abs error 0.01`) {
		t.Errorf("mlp-tampered: ready %v, reason %q", ok, reason)
	}
}
