//go:build cgo

package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/repository"
)

// addBallGolden adds 3DBall as name@1.0.0 with its signature as the engine reports it and a
// golden case from ONNX Runtime's reference outputs (testdata/reference, batch 8); skew is
// added to one expected value.
func addBallGolden(t *testing.T, repo, name string, skew float64) {
	t.Helper()
	src := filepath.Join(repoRoot, "..", "shared", "models", "mlagents", "3DBall.onnx")
	onnx, err := os.ReadFile(src)
	if err != nil {
		t.Skip("model missing:", err)
	}
	ref, err := os.ReadFile(filepath.Join(repoRoot, "testdata", "reference", "mlagents-3DBall_b8.json"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := artifacts.ReferenceCase(ref)
	if err != nil {
		t.Fatal(err)
	}
	c.Outputs[len(c.Outputs)-1].Data[3] += skew
	golden, err := (&artifacts.Golden{Schema: artifacts.GoldenSchema, Cases: []artifacts.GoldenCase{c}}).Encode()
	if err != nil {
		t.Fatal(err)
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Skip("native runtime:", err)
	}
	defer rt.Close()
	e, err := rt.NewEngine(onnx, bridge.EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	io := repository.Signature(e)
	e.Close()
	if _, err := artifacts.Add(repo, artifacts.AddRequest{Name: name, Version: "1.0.0", Model: src, IO: io, Golden: golden, Tool: "e2e test"}); err != nil {
		t.Fatal(err)
	}
}

// The server runs the golden cases at load: the version that meets them serves, the one
// whose expected value is off is UNAVAILABLE with the numbers, in its ready answer, the
// health details and the metric.
func TestGoldenChecksServed(t *testing.T) {
	repo := t.TempDir()
	addBallGolden(t, repo, "ball", 0)
	addBallGolden(t, repo, "ball-off", 0.02)
	d := startDaemon(t, repo, "--admin.allow-unauthenticated", "true")

	if r := d.do(t, "GET", "/v2/models/ball/ready", nil); r.status != 200 {
		t.Errorf("ball ready = %d %s", r.status, r.body)
	}
	r := d.do(t, "GET", "/v2/models/ball-off/ready", nil)
	if r.status == 200 {
		t.Errorf("ball-off ready = %d", r.status)
	}

	r = d.do(t, "GET", "/v2/health/details", nil)
	var doc struct {
		Versions []struct {
			Model  string `json:"model"`
			State  string `json:"state"`
			Reason string `json:"reason"`
			Golden []struct {
				Backend, Device, Result, Summary string
			} `json:"golden"`
		} `json:"versions"`
	}
	if err := json.Unmarshal(r.body, &doc); err != nil || r.status != 200 {
		t.Fatalf("details = %d %s (%v)", r.status, r.body, err)
	}
	seen := 0
	for _, v := range doc.Versions {
		switch v.Model {
		case "ball":
			seen++
			if v.State != "READY" || len(v.Golden) != 1 || v.Golden[0].Result != "pass" || v.Golden[0].Backend != "cpu" ||
				!strings.Contains(v.Golden[0].Summary, "golden check passed on cpu: 1 cases, 4 outputs") {
				t.Errorf("ball: %+v", v)
			}
		case "ball-off":
			seen++
			want := `case "mlagents-3DBall_b8" output "deterministic_continuous_actions": max abs error 0.02`
			if v.State != "UNAVAILABLE" || !strings.Contains(v.Reason, want) || !strings.Contains(v.Reason, "at index 3") ||
				len(v.Golden) != 1 || v.Golden[0].Result != "fail" || !strings.Contains(v.Golden[0].Summary, want) {
				t.Errorf("ball-off: %+v", v)
			}
		}
	}
	if seen != 2 {
		t.Errorf("health details list %d of the 2 versions: %s", seen, r.body)
	}

	scrape := d.do(t, "GET", "/metrics", nil)
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(scrape.body))
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	if mf := mfs["policyd_golden_checks_total"]; mf != nil {
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, p := range m.GetLabel() {
				l[p.GetName()] = p.GetValue()
			}
			got[l["model"]+"/"+l["backend"]+"/"+l["result"]] = m.GetCounter().GetValue()
		}
	}
	if got["ball/cpu/pass"] != 1 || got["ball-off/cpu/fail"] != 1 || len(got) != 2 {
		t.Errorf("policyd_golden_checks_total = %v, want ball/cpu/pass 1 and ball-off/cpu/fail 1", got)
	}
}
