package server

import (
	"bytes"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/repository"
)

// fakeRepo records the control calls; versions of "m" are 1.0.0 (ready) and 2.0.0 (not).
type fakeRepo struct {
	mu     sync.Mutex
	calls  []string
	pinned string
}

func (f *fakeRepo) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeRepo) take() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.calls
	f.calls = nil
	return c
}

func (f *fakeRepo) Index() []repository.IndexEntry {
	return []repository.IndexEntry{
		{Model: "m", Version: "1.0.0", State: repository.StateReady},
		{Model: "m", Version: "2.0.0", State: repository.StateUnavailable, Reason: "artifact verification failed: m@2.0.0: model.onnx: sha256 mismatch"},
		{Model: "m", Version: "3.0.0", State: repository.StateUnloaded, Reason: "unloaded"},
	}
}

func (f *fakeRepo) check(model, version string) error {
	switch {
	case model != "m":
		return &repository.NotFoundError{Model: model}
	case version == "2.0.0":
		return &repository.UnavailableError{Model: model, Version: version, Reason: "model.onnx: sha256 mismatch"}
	case version != "" && version != "1.0.0" && version != "v1.0.0":
		return &repository.NotFoundError{Model: model, Version: version}
	}
	return nil
}

func (f *fakeRepo) Load(model, version string) error {
	f.record("load " + model + "@" + version)
	return f.check(model, version)
}

func (f *fakeRepo) Unload(model, version string) error {
	f.record("unload " + model + "@" + version)
	return f.check(model, version)
}

func (f *fakeRepo) SetDefault(model, version string) (time.Duration, error) {
	f.record("default " + model + "@" + version)
	if err := f.check(model, version); err != nil {
		return 0, err
	}
	f.mu.Lock()
	f.pinned = strings.TrimPrefix(version, "v")
	f.mu.Unlock()
	return 1500 * time.Microsecond, nil
}

func (f *fakeRepo) DefaultVersion(model string) (string, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.pinned != "" {
		return f.pinned, true
	}
	return "1.0.0", false
}

// doAuth is do with an Authorization header ("" = none).
func (ts *testServer) doAuth(t *testing.T, method, path, auth string, body []byte) response {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd" + path)
	req.Header.SetMethod(method)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != nil {
		req.SetBody(body)
	}
	if err := ts.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return response{status: resp.StatusCode(), header: map[string]string{"Content-Type": string(resp.Header.Peek("Content-Type"))},
		body: append([]byte(nil), resp.Body()...)}
}

func TestRepositoryRoutes(t *testing.T) {
	token, allow := "", false
	var mu sync.Mutex
	repo := &fakeRepo{}
	ts := startServer(t, testRegistry(), Options{Admin: Admin{
		Repository:           repo,
		Token:                func() string { mu.Lock(); defer mu.Unlock(); return token },
		AllowUnauthenticated: func() bool { mu.Lock(); defer mu.Unlock(); return allow },
	}})
	setToken := func(s string) { mu.Lock(); token = s; mu.Unlock() }

	// No token configured: the read-only index is open; load, unload and the default pin
	// are 403 (TestAdminDoor has every route).
	r := ts.doAuth(t, "POST", "/v2/repository/index", "", nil)
	want := `[{"name":"m","version":"1.0.0","state":"READY","reason":""},` +
		`{"name":"m","version":"2.0.0","state":"UNAVAILABLE","reason":"artifact verification failed: m@2.0.0: model.onnx: sha256 mismatch"},` +
		`{"name":"m","version":"3.0.0","state":"UNLOADED","reason":"unloaded"}]`
	if r.status != 200 || compactJSON(t, r.body) != want {
		t.Errorf("index = %d %s\nwant %s", r.status, r.body, want)
	}
	r = ts.doAuth(t, "POST", "/v2/repository/index", "", []byte(`{"ready":true}`))
	if r.status != 200 || compactJSON(t, r.body) != `[{"name":"m","version":"1.0.0","state":"READY","reason":""}]` {
		t.Errorf("index ready = %d %s", r.status, r.body)
	}
	if r := ts.doAuth(t, "POST", "/v2/admin/models/m/default", "", []byte(`{"version":"1.0.0"}`)); r.status != 403 ||
		!strings.Contains(errorMessage(t, r), "set admin.token_file, or admin.allow_unauthenticated: true") {
		t.Errorf("default without a token configured = %d %s", r.status, r.body)
	}

	// Load and unload (admin.allow_unauthenticated, as for loopback development): the version
	// from the body or the query; errors map to statuses.
	mu.Lock()
	allow = true
	mu.Unlock()
	for _, tt := range []struct {
		path string
		body string
		code int
		call string // "" = no call
		msg  string
	}{
		{"/v2/repository/models/m/load", "", 200, "load m@", ""},
		{"/v2/repository/models/m/load", `{"parameters":{"version":"1.0.0"}}`, 200, "load m@1.0.0", ""},
		{"/v2/repository/models/m/unload?version=v1.0.0", "", 200, "unload m@v1.0.0", ""},
		{"/v2/repository/models/m/unload", `{"parameters":{"unload_dependents":false,"version":"1.0.0"}}`, 200, "unload m@1.0.0", ""},
		{"/v2/repository/models/m/load?version=1.0.0", `{"parameters":{"version":"1.0.0"}}`, 200, "load m@1.0.0", ""},
		{"/v2/repository/models/m/load?version=1.0.0", `{"parameters":{"version":"2.0.0"}}`, 400, "", `version "1.0.0" in the query and "2.0.0" in the parameters differ`},
		{"/v2/repository/models/m/load", `{"parameters":{"version":1}}`, 400, "", `parameters.version must be a string`},
		{"/v2/repository/models/m/load", `{"parameters":{"config":"{}"}}`, 400, "", `parameter "config" is not supported`},
		{"/v2/repository/models/m/load", `{"parameters":{"unload_dependents":true}}`, 400, "", `applies to unload only`},
		{"/v2/repository/models/m/load", `{"parameters":`, 400, "", "invalid JSON body"},
		{"/v2/repository/models/m/load", `{"nope":1}`, 400, "", `unknown field "nope"`},
		{"/v2/repository/models/x/load", "", 404, "load x@", `load: unknown model "x"`},
		{"/v2/repository/models/m/unload?version=9.9.9", "", 404, "unload m@9.9.9", `unload: unknown version "9.9.9" of model "m"`},
		{"/v2/repository/models/m/load?version=2.0.0", "", 503, "load m@2.0.0", `load: model "m" version "2.0.0" is not ready: model.onnx: sha256 mismatch`},
	} {
		var body []byte
		if tt.body != "" {
			body = []byte(tt.body)
		}
		r := ts.doAuth(t, "POST", tt.path, "", body)
		calls := repo.take()
		if r.status != tt.code {
			t.Errorf("POST %s %s = %d %s, want %d", tt.path, tt.body, r.status, r.body, tt.code)
			continue
		}
		if tt.code == 200 && string(r.body) != "{}\n" {
			t.Errorf("POST %s = %s, want {}", tt.path, r.body)
		}
		if tt.code != 200 && !strings.Contains(errorMessage(t, r), tt.msg) {
			t.Errorf("POST %s %s: %s, want %q", tt.path, tt.body, r.body, tt.msg)
		}
		if got := strings.Join(calls, ","); got != tt.call {
			t.Errorf("POST %s %s called %q, want %q", tt.path, tt.body, got, tt.call)
		}
	}

	// A token configured: every route needs it, allow_unauthenticated or not.
	setToken("s3cret")
	for _, path := range []string{"/v2/repository/index", "/v2/repository/models/m/load", "/v2/repository/models/m/unload", "/v2/admin/models/m/default"} {
		for _, auth := range []string{"", "Bearer wrong", "s3cret"} {
			if r := ts.doAuth(t, "POST", path, auth, []byte(`{"version":"1.0.0"}`)); r.status != 401 {
				t.Errorf("POST %s with %q = %d %s, want 401", path, auth, r.status, r.body)
			}
		}
	}
	if calls := repo.take(); len(calls) != 0 {
		t.Errorf("unauthorized requests called %v", calls)
	}
	const auth = "Bearer s3cret"
	if r := ts.doAuth(t, "POST", "/v2/repository/models/m/unload", auth, nil); r.status != 200 {
		t.Errorf("unload with the token = %d %s", r.status, r.body)
	}
	repo.take()

	// The default pin.
	r = ts.doAuth(t, "POST", "/v2/admin/models/m/default", auth, []byte(`{"version":"v1.0.0"}`))
	if r.status != 200 || compactJSON(t, r.body) != `{"default":"1.0.0","model":"m","pinned":true,"switch_seconds":0.0015}` {
		t.Errorf("pin = %d %s", r.status, r.body)
	}
	for _, tt := range []struct {
		body string
		code int
		msg  string
	}{
		{`{}`, 400, `body must be {"version":"1.2.3"}`},
		{``, 400, `body must be {"version":"1.2.3"}`},
		{`{"version":2}`, 400, "invalid JSON body"},
		{`{"version":"9.0.0"}`, 404, `unknown version "9.0.0" of model "m"`},
		{`{"version":"2.0.0"}`, 503, "sha256 mismatch"},
	} {
		var body []byte
		if tt.body != "" {
			body = []byte(tt.body)
		}
		r := ts.doAuth(t, "POST", "/v2/admin/models/m/default", auth, body)
		if r.status != tt.code || !strings.Contains(errorMessage(t, r), tt.msg) {
			t.Errorf("default %s = %d %s, want %d %q", tt.body, r.status, r.body, tt.code, tt.msg)
		}
	}
	if r := ts.doAuth(t, "POST", "/v2/admin/models/x/default", auth, []byte(`{"version":""}`)); r.status != 404 {
		t.Errorf("default of an unknown model = %d %s", r.status, r.body)
	}
	repo.mu.Lock()
	repo.pinned = ""
	repo.mu.Unlock()
	r = ts.doAuth(t, "POST", "/v2/admin/models/m/default", auth, []byte(`{"version":""}`))
	if r.status != 200 || compactJSON(t, r.body) != `{"default":"1.0.0","model":"m","pinned":false,"switch_seconds":0.0015}` {
		t.Errorf("unpin = %d %s", r.status, r.body)
	}
	if got := repo.take(); got[len(got)-1] != "default m@" {
		t.Errorf("unpin called %v", got)
	}
	// GET is not allowed on the control routes.
	if r := ts.doAuth(t, "GET", "/v2/repository/index", auth, nil); r.status != 405 {
		t.Errorf("GET index = %d", r.status)
	}
}

// Without Admin.Repository the routes do not exist.
func TestRepositoryRoutesNeedARepository(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	for _, path := range []string{"/v2/repository/index", "/v2/repository/models/m/load", "/v2/admin/models/m/default"} {
		if r := ts.doAuth(t, "POST", path, "", nil); r.status != 404 {
			t.Errorf("POST %s = %d, want 404", path, r.status)
		}
	}
}

// compactJSON is b without insignificant space, keys in the order written.
func compactJSON(t *testing.T, b []byte) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return buf.String()
}
