//go:build cgo

package main

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// TestMetricsAndHealthDetails serves a valid model and one that fails to load, scrapes
// /metrics (promtool check metrics, when promtool is installed: make deps installs it, so CI
// runs it) and reads /v2/health/details.
func TestMetricsAndHealthDetails(t *testing.T) {
	repo := t.TempDir()
	linkModel(t, repo, "mlp", "../shared/peers/models/mlp-small.onnx")
	linkModel(t, repo, invalidID, invalidModel)
	d := startDaemon(t, repo, "--admin.allow-unauthenticated", "true") // health details below
	body := `{"inputs":[{"name":"obs","datatype":"FP32","shape":[2,8],"data":[` + zeros(16) + `]}]}`
	for range 3 {
		if r := d.do(t, "POST", "/v2/models/mlp/versions/1.0.0/infer", []byte(body)); r.status != 200 {
			t.Fatalf("infer = %d %s", r.status, r.body)
		}
	}
	bad := `{"inputs":[{"name":"obs","datatype":"FP32","shape":[2,7],"data":[` + zeros(14) + `]}]}`
	if r := d.do(t, "POST", "/v2/models/mlp/infer", []byte(bad)); r.status != 400 {
		t.Fatalf("infer with a wrong shape = %d %s", r.status, r.body)
	}

	scrape := d.do(t, "GET", "/metrics", nil)
	if scrape.status != 200 {
		t.Fatalf("/metrics = %d", scrape.status)
	}
	t.Run("promtool check metrics", func(t *testing.T) {
		promtool, err := exec.LookPath("promtool")
		if err != nil {
			t.Skip("promtool not installed (make deps installs the Debian package prometheus)")
		}
		cmd := exec.Command(promtool, "check", "metrics")
		cmd.Stdin = bytes.NewReader(scrape.body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	})

	t.Run("families", func(t *testing.T) {
		p := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := p.TextToMetricFamilies(bytes.NewReader(scrape.body))
		if err != nil {
			t.Fatal(err)
		}
		val := func(name string, labels map[string]string) (float64, bool) {
			mf := mfs[name]
			if mf == nil {
				return 0, false
			}
		next:
			for _, m := range mf.GetMetric() {
				have := map[string]string{}
				for _, l := range m.GetLabel() {
					have[l.GetName()] = l.GetValue()
				}
				for k, v := range labels {
					if have[k] != v {
						continue next
					}
				}
				switch {
				case m.Counter != nil:
					return m.GetCounter().GetValue(), true
				case m.Gauge != nil:
					return m.GetGauge().GetValue(), true
				case m.Histogram != nil:
					return float64(m.GetHistogram().GetSampleCount()), true
				}
			}
			return 0, false
		}
		mlp := map[string]string{"model": "mlp", "version": "1.0.0", "backend": "cpu", "device": "cpu"}
		checks := []struct {
			name   string
			labels map[string]string
			want   float64 // -1: any value > 0
		}{
			{"policyd_ready", nil, 0},
			{"policyd_inferences_total", mlp, 6},
			{"policyd_executions_total", mlp, 3},
			{"policyd_queue_duration_seconds", mlp, 3},
			{"policyd_compute_infer_duration_seconds", mlp, 3},
			{"policyd_batch_size", mlp, 3},
			{"policyd_queue_depth", mlp, 0},
			{"policyd_inflight_requests", mlp, 0},
			{"policyd_engine_memory_bytes", map[string]string{"model": "mlp", "kind": "weights"}, -1},
			{"policyd_model_state", map[string]string{"model": "mlp", "state": "ready"}, 1},
			{"policyd_model_state", map[string]string{"model": invalidID, "state": "failed"}, 1},
			{"policyd_model_load_duration_seconds", map[string]string{"model": "mlp", "backend": "cpu"}, 1},
			{"policyd_pinned_memory_bytes", map[string]string{"device": "cpu"}, 0},
			{"policyd_config_reloads_total", map[string]string{"outcome": "applied"}, 0},
			{"go_goroutines", nil, -1},
			{"policyd_requests_total", map[string]string{"model": "mlp", "version": "1.0.0", "protocol": "v2", "code": "200", "outcome": "success"}, 3},
			{"policyd_requests_total", map[string]string{"model": "mlp", "version": "1.0.0", "protocol": "v2", "code": "400", "outcome": "client_error"}, 1},
			{"policyd_request_duration_seconds", map[string]string{"model": "mlp", "version": "1.0.0"}, 4},
		}
		for _, c := range checks {
			v, ok := val(c.name, c.labels)
			switch {
			case !ok:
				t.Errorf("%s%v: no series", c.name, c.labels)
			case c.want < 0 && v <= 0, c.want >= 0 && v != c.want:
				t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
			}
		}
		for name := range mfs {
			if strings.HasPrefix(name, "policyd_gpu_") {
				t.Logf("GPU family %s present: NVML found a GPU", name)
			}
		}
	})

	t.Run("health details", func(t *testing.T) {
		r := d.do(t, "GET", "/v2/health/details", nil)
		var doc struct {
			Status   string `json:"status"`
			Ready    bool   `json:"ready"`
			Versions []struct {
				Model, Version, State, Reason, Backend, Device string
			} `json:"versions"`
			Devices struct {
				CPU struct {
					Cores int `json:"cores"`
				} `json:"cpu"`
				GPUs       []json.RawMessage `json:"gpus"`
				GPUsReason string            `json:"gpus_reason"`
			} `json:"devices"`
			Backends []struct {
				Name      string `json:"name"`
				Available bool   `json:"available"`
			} `json:"backends"`
			Artifacts struct {
				LastVerification *struct {
					Versions int               `json:"versions"`
					Failed   []json.RawMessage `json:"failed"`
				} `json:"last_verification"`
			} `json:"artifacts"`
			Config struct {
				Digest string `json:"digest"`
			} `json:"config"`
		}
		if err := json.Unmarshal(r.body, &doc); err != nil || r.status != 200 {
			t.Fatalf("details = %d %s (%v)", r.status, r.body, err)
		}
		if doc.Status != "not ready" || doc.Ready {
			t.Errorf("status %q ready %v with a model that failed to load", doc.Status, doc.Ready)
		}
		states := map[string]string{}
		for _, v := range doc.Versions {
			states[v.Model] = v.State
			switch v.Model {
			case invalidID:
				if v.State != "UNAVAILABLE" || !strings.Contains(v.Reason, "memory_size") {
					t.Errorf("failed model: state %q reason %q, want UNAVAILABLE naming the missing output", v.State, v.Reason)
				}
			case "mlp":
				if v.State != "READY" || v.Backend != "cpu" || v.Device != "cpu" || v.Reason != "" {
					t.Errorf("mlp: %+v", v)
				}
			}
		}
		if len(states) != 2 {
			t.Errorf("versions %v, want mlp and %s", states, invalidID)
		}
		if doc.Devices.CPU.Cores < 1 {
			t.Errorf("cpu cores %d", doc.Devices.CPU.Cores)
		}
		if doc.Devices.GPUs == nil || (len(doc.Devices.GPUs) == 0) != (doc.Devices.GPUsReason != "") {
			t.Errorf("gpus %v with reason %q: the reason must say why there are none", doc.Devices.GPUs, doc.Devices.GPUsReason)
		}
		if len(doc.Backends) == 0 || doc.Backends[0].Name == "" {
			t.Errorf("backends %+v", doc.Backends)
		}
		if lv := doc.Artifacts.LastVerification; lv == nil || lv.Versions != 2 || len(lv.Failed) != 0 {
			t.Errorf("last verification %+v, want 2 versions, none failed", lv)
		}
		if !strings.HasPrefix(doc.Config.Digest, "sha256:") {
			t.Errorf("config digest %q", doc.Config.Digest)
		}
	})
}
