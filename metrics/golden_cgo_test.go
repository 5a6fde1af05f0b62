//go:build cgo

package metrics

import (
	"os"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/repository"
)

const ballModel = "../../shared/models/mlagents/3DBall.onnx"

// addBall adds 3DBall as name@1.0.0 with a golden case from ONNX Runtime's reference outputs
// (testdata/reference); skew, when not 0, is added to one expected value.
func addBall(t *testing.T, rt *bridge.Runtime, repo, name string, skew float64) {
	t.Helper()
	onnx, err := os.ReadFile(ballModel)
	if err != nil {
		t.Skip("model missing:", err)
	}
	ref, err := os.ReadFile("../testdata/reference/mlagents-3DBall_b8.json")
	if err != nil {
		t.Skip("reference missing:", err)
	}
	c, err := artifacts.ReferenceCase(ref)
	if err != nil {
		t.Fatal(err)
	}
	c.Outputs[len(c.Outputs)-1].Data[0] += skew
	golden, err := (&artifacts.Golden{Schema: artifacts.GoldenSchema, Cases: []artifacts.GoldenCase{c}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	io := repository.Signature(e)
	e.Close()
	if _, err := artifacts.Add(repo, artifacts.AddRequest{Name: name, Version: "1.0.0", Model: ballModel, IO: io, Golden: golden, Tool: "metrics test"}); err != nil {
		t.Fatal(err)
	}
}

// policyd_golden_checks_total counts each load's golden check by result, and goes with the
// version.
func TestGoldenChecksCounted(t *testing.T) {
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Skip("native runtime:", err)
	}
	t.Cleanup(func() { rt.Close() })
	dir := t.TempDir()
	addBall(t, rt, dir, "ball", 0)
	addBall(t, rt, dir, "skewed", 0.5)
	reg := prometheus.NewPedanticRegistry()
	repo := repository.NewRepository(rt, nil)
	t.Cleanup(func() { repo.Close() })
	if _, err := New(reg, repo); err != nil {
		t.Fatal(err)
	}
	d := repository.Desired{Dir: dir, Default: repository.ModelSpec{Backends: []string{"cpu"}}}
	if _, err := repo.Apply(d); err != nil {
		t.Fatal(err)
	}
	count := func(model, result string) float64 {
		v, _ := gauge(t, reg, "policyd_golden_checks_total", map[string]string{"model": model, "version": "1.0.0", "backend": "cpu", "result": result})
		return v
	}
	if count("ball", "pass") != 1 || count("ball", "fail") != 0 || count("skewed", "fail") != 1 || count("skewed", "pass") != 0 {
		t.Errorf("golden checks: ball pass %v fail %v, skewed pass %v fail %v; want 1 0 0 1",
			count("ball", "pass"), count("ball", "fail"), count("skewed", "pass"), count("skewed", "fail"))
	}
	d.Models = []repository.ModelSpec{{Name: "ball"}}
	if _, err := repo.Apply(d); err != nil {
		t.Fatal(err)
	}
	if count("skewed", "fail") != 0 || count("ball", "pass") != 1 {
		t.Errorf("after unloading skewed: skewed fail %v, ball pass %v; want 0 1", count("skewed", "fail"), count("ball", "pass"))
	}
}
