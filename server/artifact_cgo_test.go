//go:build cgo

package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policyd/policyd/repository"
)

// Against a real repository of artifacts: infer by "1.0.0" and "v1.0.0", model metadata with
// the default version and digests, a rollback through the admin route, and a tampered version
// that never serves while the other does.
func TestArtifactsEndToEnd(t *testing.T) {
	rt, model := nativeRuntime(t, mlpSmall)
	dir := t.TempDir()
	a1 := addArtifact(t, dir, "A", "1.0.0", model, nil)
	a2 := addArtifact(t, dir, "A", "v2.0.0", model, nil)
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	if _, err := repo.Apply(repository.Desired{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, NewRegistry(repo), Options{Admin: Admin{Repository: repo, Token: func() string { return "tok" }}})

	body := []byte(`{"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[1,2,3,4,5,6,7,8]}]}`)
	for _, v := range []string{"1.0.0", "v1.0.0", "2.0.0", "v2.0.0"} {
		if r := ts.do(t, "POST", "/v2/models/A/versions/"+v+"/infer", body); r.status != 200 ||
			!strings.Contains(string(r.body), `"model_version":"`+strings.TrimPrefix(v, "v")+`"`) {
			t.Errorf("infer %s = %d %s", v, r.status, r.body)
		}
	}
	type meta struct {
		Versions       []string          `json:"versions"`
		Version        string            `json:"version"`
		DefaultVersion string            `json:"default_version"`
		DefaultPinned  bool              `json:"default_pinned"`
		Digest         string            `json:"digest"`
		Digests        map[string]string `json:"digests"`
	}
	get := func(path string) meta {
		t.Helper()
		r := ts.do(t, "GET", path, nil)
		var m meta
		if r.status != 200 || json.Unmarshal(r.body, &m) != nil {
			t.Fatalf("GET %s = %d %s", path, r.status, r.body)
		}
		return m
	}
	m := get("/v2/models/A")
	if m.Version != "2.0.0" || m.DefaultVersion != "2.0.0" || m.DefaultPinned || m.Digest != a2.Digest ||
		m.Digests["1.0.0"] != a1.Digest || m.Digests["2.0.0"] != a2.Digest {
		t.Errorf("metadata %+v", m)
	}

	// Roll back to 1.0.0.
	r := ts.doAuth(t, "POST", "/v2/admin/models/A/default", "Bearer tok", []byte(`{"version":"1.0.0"}`))
	if r.status != 200 {
		t.Fatalf("rollback = %d %s", r.status, r.body)
	}
	if m := get("/v2/models/A"); m.Version != "1.0.0" || m.DefaultVersion != "1.0.0" || !m.DefaultPinned || m.Digest != a1.Digest {
		t.Errorf("metadata after the rollback %+v", m)
	}
	if r := ts.do(t, "POST", "/v2/models/A/infer", body); !strings.Contains(string(r.body), `"model_version":"1.0.0"`) {
		t.Errorf("infer after the rollback = %d %s", r.status, r.body)
	}

	// 1.0.0 is tampered with: the next Apply refuses it, the pin is cleared, 2.0.0 serves.
	if err := os.WriteFile(filepath.Join(dir, "A", "1.0.0", "model.onnx"), append(model, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := repo.Apply(repository.Desired{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	if r := ts.do(t, "POST", "/v2/models/A/versions/1.0.0/infer", body); r.status != 503 ||
		!strings.Contains(errorMessage(t, r), "artifact verification failed: A@1.0.0: model.onnx: size mismatch") {
		t.Errorf("infer on the tampered version = %d %s", r.status, r.body)
	}
	if r := ts.do(t, "POST", "/v2/models/A/infer", body); r.status != 200 || !strings.Contains(string(r.body), `"model_version":"2.0.0"`) {
		t.Errorf("infer beside the tampered version = %d %s", r.status, r.body)
	}
	r = ts.doAuth(t, "POST", "/v2/repository/index", "Bearer tok", nil)
	if !strings.Contains(string(r.body), `"state": "UNAVAILABLE"`) || !strings.Contains(string(r.body), "size mismatch") {
		t.Errorf("index = %s", r.body)
	}
}
