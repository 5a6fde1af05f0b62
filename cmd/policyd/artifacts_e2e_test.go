//go:build cgo

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/policyd/policyd/artifacts"
)

// TestArtifactsEndToEnd: signed artifacts serve, an unsigned one is refused while trusted keys
// are configured (log, metric, health details), a rollback switches the default under load
// without a failed request, and a version tampered with after start is refused at the next
// reload while the rest keeps serving.
func TestArtifactsEndToEnd(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "models")
	if err := os.MkdirAll(repo, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := artifacts.GenerateKeyFiles(filepath.Join(dir, "ops")); err != nil {
		t.Fatal(err)
	}
	key, err := artifacts.LoadPrivateKey(filepath.Join(dir, "ops.key"))
	if err != nil {
		t.Fatal(err)
	}
	src, _ := filepath.Abs(filepath.Join(repoRoot, "../shared/peers/models/mlp-small.onnx"))
	rec := []artifacts.Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{-1, 8}}}
	add := func(name, version string, sign bool) {
		t.Helper()
		req := artifacts.AddRequest{Name: name, Version: version, Model: src, IO: artifacts.IO{Inputs: rec, Outputs: rec}, Tool: "e2e"}
		if sign {
			req.SignKey = key
		}
		if _, err := artifacts.Add(repo, req); err != nil {
			t.Fatal(err)
		}
	}
	add("a", "1.0.0", true)
	add("a", "1.1.0", true)
	add("b", "1.0.0", false)
	if err := os.WriteFile(filepath.Join(dir, "token"), []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(cfg, []byte("repository: {path: models}\nartifacts: {trusted_keys: [ops.pub]}\nadmin: {token_file: token}\n"+
		"models:\n  - name: a\n    version: \"^1.0\"\n  - name: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", "--config", cfg)

	// The unsigned b is refused and says why; a serves its highest version.
	r := d.do(t, "GET", "/v2/models/b/ready", nil)
	if r.status != 400 || !strings.Contains(r.notReady, "unsigned") {
		t.Errorf("b/ready = %d %q, want 400 naming the missing signature", r.status, r.notReady)
	}
	metrics := string(d.do(t, "GET", "/metrics", nil).body)
	if !strings.Contains(metrics, `policyd_artifact_verification_failures_total{model="b",version="1.0.0"} 1`) {
		t.Errorf("no verification-failure metric for b:\n%s", grepLines(metrics, "verification"))
	}
	obs := `{"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`
	versionOf := func(body []byte) string {
		var resp struct {
			ModelVersion string `json:"model_version"`
		}
		json.Unmarshal(body, &resp)
		return resp.ModelVersion
	}
	if r := d.do(t, "POST", "/v2/models/a/infer", []byte(obs)); r.status != 200 || versionOf(r.body) != "1.1.0" {
		t.Fatalf("default of a = %d %s, want 1.1.0", r.status, r.body)
	}

	// Rollback under load: clients never fail and only ever see 1.0.0 or 1.1.0.
	var ok, failed atomic.Int64
	var bad atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := http.Post(d.url+"/v2/models/a/infer", "application/json", strings.NewReader(obs))
				if err != nil {
					failed.Add(1)
					bad.CompareAndSwap(nil, err.Error())
					continue
				}
				var b []byte
				b, _ = readAll(resp)
				if v := versionOf(b); resp.StatusCode != 200 || (v != "1.0.0" && v != "1.1.0") {
					failed.Add(1)
					bad.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, b))
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	rollback := func(version string) map[string]any {
		t.Helper()
		req, _ := http.NewRequest("POST", d.url+"/v2/admin/models/a/default", strings.NewReader(`{"version":"`+version+`"}`))
		req.Header.Set("Authorization", "Bearer tok")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := readAll(resp)
		var m map[string]any
		json.Unmarshal(b, &m)
		if resp.StatusCode != 200 {
			t.Fatalf("rollback to %s: %d %s", version, resp.StatusCode, b)
		}
		return m
	}
	for i := 0; i < 10; i++ {
		rollback("1.0.0")
		time.Sleep(10 * time.Millisecond)
		rollback("1.1.0")
		time.Sleep(10 * time.Millisecond)
	}
	res := rollback("1.0.0")
	t.Logf("rollback answer: %v", res)
	if r := d.do(t, "POST", "/v2/models/a/infer", []byte(obs)); versionOf(r.body) != "1.0.0" {
		t.Errorf("after rollback the default answers %s", r.body)
	}

	// Tamper with a@1.1.0 after start: the next reload refuses it, a keeps serving 1.0.0.
	f := filepath.Join(repo, "a", "1.1.0", "model.onnx")
	b, err := os.ReadFile(f)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)/2] ^= 1
	if err := os.WriteFile(f, b, 0o644); err != nil {
		t.Fatal(err)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := d.do(t, "GET", "/v2/models/a/versions/1.1.0/ready", nil)
		if r.status == 400 && strings.Contains(r.notReady, "model.onnx") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tampered a@1.1.0 still %d %q", r.status, r.notReady)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed; first: %v", failed.Load(), failed.Load()+ok.Load(), bad.Load())
	}
	t.Logf("%d requests across 21 rollbacks and a tampering reload, none failed", ok.Load())
}

func readAll(resp *http.Response) ([]byte, error) {
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			return []byte(sb.String()), nil
		}
	}
}
