//go:build cgo

package main

import (
	"bytes"
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
)

// TestReloadUnderLoad changes every reloadable setting of a running policyd — through the
// watched file, SIGHUP and the admin API — while clients hammer a model, and checks that no
// request fails, that an invalid config is rejected (log, metric, health details) with the old
// one still serving, and that a restart-only change is held back, not half-applied.
func TestReloadUnderLoad(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	linkModel(t, repo, "a", "../shared/peers/models/mlp-small.onnx")
	linkModel(t, repo, "b", "../shared/peers/models/mlp-med.onnx")
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("s3cret-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "policyd.yaml")
	write := func(body string) {
		t.Helper()
		// Write a new file and rename it over the old one, as editors and ConfigMaps do.
		tmp := cfg + ".tmp"
		if err := os.WriteFile(tmp, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, cfg); err != nil {
			t.Fatal(err)
		}
	}
	base := "repository:\n  path: repo\nadmin:\n  token_file: token\n"
	write(base + "models:\n  - name: a\n    instances: 1\n")
	d := startDaemon(t, "", "--config", cfg)

	obs := `{"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`
	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Post(d.url+"/v2/models/a/infer", "application/json", strings.NewReader(obs))
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				var body bytes.Buffer
				body.ReadFrom(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("%d %s", resp.StatusCode, body.String()))
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	status := func(path string) int { return d.do(t, http.MethodGet, path, nil).status }
	// Health details need the admin token: the first one, or the one step 5 rotates to.
	details := func() map[string]any {
		for _, tok := range []string{"s3cret-token", "other-token"} {
			req, _ := http.NewRequest(http.MethodGet, d.url+"/v2/health/details", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]any
			err = json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			if resp.StatusCode == http.StatusUnauthorized {
				continue
			}
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("details: %d %v", resp.StatusCode, err)
			}
			return m
		}
		t.Fatal("details: both tokens refused")
		return nil
	}
	lastReload := func() map[string]any {
		c, _ := details()["config"].(map[string]any)
		lr, _ := c["last_reload"].(map[string]any)
		return lr
	}

	// 1. File change: more instances for a, model b added, debug logs, a smaller body limit.
	write(base + "log:\n  level: debug\nlimits:\n  max_request_size: 2KiB\nmodels:\n  - name: a\n    instances: 2\n  - name: b\n")
	waitFor("model b to load", func() bool { return status("/v2/models/b/ready") == 200 })
	waitFor("the reload to be recorded", func() bool { lr := lastReload(); return lr != nil && lr["outcome"] == "applied" })
	big := `{"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[` + strings.Repeat("0.000000001,", 300) + `0]}]}`
	if r := d.do(t, http.MethodPost, "/v2/models/a/infer", []byte(big)); r.status != 413 || !strings.Contains(string(r.body), "2048 bytes") {
		t.Errorf("body over the reloaded limit: %d %s", r.status, r.body)
	}

	// 2. SIGHUP: b removed again, a back to one instance.
	write(base + "models:\n  - name: a\n")
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor("model b to unload", func() bool { return status("/v2/models/b/ready") == 404 })

	// 3. An invalid config is rejected; the old one keeps serving.
	write(base + "limits:\n  queue_len: 0\nmodels:\n  - name: a\n  - name: nosuchmodel\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	waitFor("the rejection", func() bool { lr := lastReload(); return lr != nil && lr["outcome"] == "rejected" })
	if e, _ := lastReload()["error"].(string); !strings.Contains(e, "limits.queue_len") || !strings.Contains(e, "models[1].name") {
		t.Errorf("rejection does not name the problems: %q", e)
	}
	metrics := string(d.do(t, http.MethodGet, "/metrics", nil).body)
	if !strings.Contains(metrics, `policyd_config_reloads_total{outcome="rejected"}`) ||
		!strings.Contains(metrics, "policyd_config_last_reload_successful 0") {
		t.Errorf("metrics lack the rejection:\n%s", grepLines(metrics, "policyd_config"))
	}
	if status("/v2/models/a/ready") != 200 {
		t.Error("model a stopped serving after a rejected reload")
	}

	// 4. A restart-only change is reported, not applied; the admin API needs the token.
	write(strings.Replace(base, "repository:", "server:\n  read_timeout: 5s\nrepository:", 1) + "models:\n  - name: a\n")
	if r := d.do(t, http.MethodPost, "/v2/admin/reload", nil); r.status != 401 {
		t.Errorf("admin reload without a token: %d %s", r.status, r.body)
	}
	req, _ := http.NewRequest(http.MethodPost, d.url+"/v2/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer s3cret-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var res map[string]any
	json.NewDecoder(resp.Body).Decode(&res)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(fmt.Sprint(res["restart_pending"]), "server.read_timeout") {
		t.Errorf("admin reload: %d %v", resp.StatusCode, res)
	}
	c, _ := details()["config"].(map[string]any)
	if !strings.Contains(fmt.Sprint(c["restart_pending"]), "server.read_timeout") {
		t.Errorf("health details do not show the change pending a restart: %v", c)
	}

	// 5. Every other reloadable key, one change at a time, each seen applied.
	repo2 := filepath.Join(dir, "repo2")
	linkModel(t, repo2, "a", "../shared/peers/models/mlp-small.onnx")
	if err := os.WriteFile(filepath.Join(dir, "token2"), []byte("other-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	steps := []struct{ key, body string }{
		{"limits.queue_len", base + "limits:\n  queue_len: 8\nmodels:\n  - name: a\n"},
		{"engine.seed", base + "limits:\n  queue_len: 8\nengine:\n  seed: 7\nmodels:\n  - name: a\n"},
		{"engine.threads", base + "limits:\n  queue_len: 8\nengine:\n  seed: 7\n  threads: 2\nmodels:\n  - name: a\n"},
		{".threads", base + "models:\n  - name: a\n    threads: 1\n"},
		{".backends", base + "models:\n  - name: a\n    threads: 1\n    backends: [cuda, cpu]\n"},
		{".version", base + "models:\n  - name: a\n    version: \"1.0.0\"\n"},
		{"repository.path", strings.Replace(base, "path: repo", "path: repo2", 1) + "models:\n  - name: a\n"},
		{"admin.token_file", strings.Replace(base, "token_file: token", "token_file: token2", 1) + "models:\n  - name: a\n"},
	}
	for _, st := range steps {
		t0 := time.Now().UTC()
		write(st.body)
		waitFor(st.key+" applied", func() bool {
			c, _ := details()["config"].(map[string]any)
			hist, _ := c["reloads"].([]any)
			for _, h := range hist {
				m, _ := h.(map[string]any)
				when, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(m["time"]))
				if m["outcome"] == "applied" && !when.Before(t0.Add(-time.Millisecond)) && strings.Contains(fmt.Sprint(m["applied"]), st.key) {
					return true
				}
			}
			return false
		})
		if status("/v2/models/a/ready") != 200 {
			t.Fatalf("after %s: model a not ready", st.key)
		}
	}
	req, _ = http.NewRequest(http.MethodPost, d.url+"/v2/admin/reload", nil)
	req.Header.Set("Authorization", "Bearer other-token")
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 200 {
		t.Errorf("admin reload with the reloaded token: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d of %d requests failed during reloads; first: %v", failed.Load(), failed.Load()+ok.Load(), firstErr.Load())
	}
	if ok.Load() < 100 {
		t.Fatalf("only %d requests ran", ok.Load())
	}
	t.Logf("%d requests, none failed, across %d reloads", ok.Load(), 4+len(steps))
	d.stop(t) // the log is complete (and no longer written) once policyd exited
	if strings.Contains(d.stderr.String(), "s3cret-token") {
		t.Error("the admin token appeared in the log")
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestTokenRotation rotates the admin token with the config untouched: once by writing the
// token file (the watch reloads), once by writing it and sending SIGHUP. Each time the new token
// is accepted and the previous one refused at once; health details record the rotation.
func TestTokenRotation(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	linkModel(t, repo, "a", "../shared/peers/models/mlp-small.onnx")
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("first-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(cfg, []byte("repository:\n  path: repo\nadmin:\n  token_file: token\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", "--config", cfg)
	call := func(tok string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, d.url+"/v2/health/details", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := call("first-token"); got != 200 {
		t.Fatalf("health details with the first token: %d", got)
	}
	rotate := func(how, old, next string, signal bool) {
		t.Helper()
		if err := os.WriteFile(token, []byte(next+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if signal {
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		deadline := time.Now().Add(10 * time.Second)
		for call(next) != 200 {
			if time.Now().After(deadline) {
				t.Fatalf("%s: the new token is still refused after 10s", how)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if got := call(old); got != 401 {
			t.Errorf("%s: the previous token answers %d, want 401", how, got)
		}
	}
	rotate("file watch", "first-token", "second-token", false)
	rotate("SIGHUP", "second-token", "third-token", true)

	req, _ := http.NewRequest(http.MethodGet, d.url+"/v2/health/details", nil)
	req.Header.Set("Authorization", "Bearer third-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var det map[string]any
	json.NewDecoder(resp.Body).Decode(&det)
	resp.Body.Close()
	c, _ := det["config"].(map[string]any)
	if !strings.Contains(fmt.Sprint(c["reloads"]), "token_rotated:true") {
		t.Errorf("health details' reload history shows no rotation: %v", c["reloads"])
	}
	d.stop(t)
	for _, tok := range []string{"first-token", "second-token", "third-token"} {
		if strings.Contains(d.stderr.String(), tok) {
			t.Errorf("the token %q appeared in the log", tok)
		}
	}
}
