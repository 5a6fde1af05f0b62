//go:build cgo

package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/artifacts"
)

// TestTrafficAcrossConfigReload runs the real binary with a traffic policy in its config file:
// every episode (X-Episode-ID) stays on its version when the file's weights change (watched
// reload), new episodes follow the new weights, and the policy shows in the admin route,
// health details and /metrics.
func TestTrafficAcrossConfigReload(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	src, _ := filepath.Abs(filepath.Join(repoRoot, "../shared/peers/models/mlp-small.onnx"))
	rec := []artifacts.Tensor{{Name: "recorded-by-policyctl", Datatype: "FP32", Shape: []int64{-1}}}
	for _, v := range []string{"1.0.0", "1.1.0"} {
		if _, err := artifacts.Add(repo, artifacts.AddRequest{Name: "a", Version: v, Model: src,
			IO: artifacts.IO{Inputs: rec, Outputs: rec}, Tool: "e2e test"}); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("tr4ffic\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "policyd.yaml")
	write := func(weights string) {
		t.Helper()
		body := "repository:\n  path: repo\nadmin:\n  token_file: token\nmodels:\n  - name: a\n    traffic:\n      weights: " + weights + "\n"
		if err := os.WriteFile(cfg+".tmp", []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(cfg+".tmp", cfg); err != nil {
			t.Fatal(err)
		}
	}
	write("[1.0.0=90, 1.1.0=10]")
	d := startDaemon(t, "", "--config", cfg)
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(path string) []byte {
		t.Helper()
		req, _ := http.NewRequest("GET", d.url+path, nil)
		req.Header.Set("Authorization", "Bearer tr4ffic")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
		}
		return b
	}
	obs := `{"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`
	step := func(e int) string {
		t.Helper()
		req, _ := http.NewRequest("POST", d.url+"/v2/models/a/infer", strings.NewReader(obs))
		req.Header.Set("X-Episode-ID", fmt.Sprintf("episode-%d", e))
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			ModelVersion string `json:"model_version"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.ModelVersion != resp.Header.Get("X-Model-Version") {
			t.Fatalf("episode %d: %d %v, model_version %q, X-Model-Version %q", e, resp.StatusCode, err, out.ModelVersion, resp.Header.Get("X-Model-Version"))
		}
		return out.ModelVersion
	}
	seen := map[int]string{}
	count := map[string]int{}
	for e := range 100 {
		seen[e] = step(e)
		count[seen[e]]++
	}
	if count["1.0.0"] <= count["1.1.0"] {
		t.Fatalf("100 episodes at 90/10: %v", count)
	}
	write("[1.0.0=10, 1.1.0=90]")
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(string(get("/v2/admin/models/a/traffic")), `"1.1.0": 90`) {
		if time.Now().After(deadline) {
			t.Fatalf("the reload did not set the new weights: %s", get("/v2/admin/models/a/traffic"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	for e := range 100 {
		if v := step(e); v != seen[e] {
			t.Fatalf("after the reload episode %d went to %s, its earlier steps to %s", e, v, seen[e])
		}
	}
	count = map[string]int{}
	for e := 100; e < 200; e++ {
		count[step(e)]++
	}
	if count["1.1.0"] <= count["1.0.0"] {
		t.Errorf("new episodes at 10/90: %v", count)
	}
	var details struct {
		Traffic []struct {
			Model  string `json:"model"`
			Source string `json:"source"`
		} `json:"traffic"`
	}
	if err := json.Unmarshal(get("/v2/health/details"), &details); err != nil || len(details.Traffic) != 1 || details.Traffic[0].Source != "config" {
		t.Errorf("health details traffic: %+v %v", details.Traffic, err)
	}
	if m := string(get("/metrics")); !strings.Contains(m, `policyd_traffic_requests_total{model="a",route="sticky",version=`) {
		t.Errorf("/metrics lacks the sticky requests")
	}
}
