package server

import (
	"strings"
	"sync"
	"testing"

	"github.com/valyala/fasthttp"
)

// TestAdminDoor checks who may call each operator route in each of the three states: no token
// and admin.allow_unauthenticated off (the default: the routes that change state or show the
// configuration are 403 naming the settings, and call nothing), allow_unauthenticated on (open),
// and a token configured (401 without it or with another, whatever allow_unauthenticated says;
// the token read on every request, so a rotation takes effect at once). /metrics and the
// health checks stay open in every state.
func TestAdminDoor(t *testing.T) {
	var mu sync.Mutex
	token, allow := "", false
	set := func(tok string, al bool) { mu.Lock(); token, allow = tok, al; mu.Unlock() }
	repo := &fakeRepo{}
	reloads := 0
	ts := startServer(t, testRegistry(), Options{Admin: Admin{
		Reload: func() (any, error) {
			mu.Lock()
			reloads++
			mu.Unlock()
			return map[string]string{"outcome": "unchanged"}, nil
		},
		Token:                func() string { mu.Lock(); defer mu.Unlock(); return token },
		AllowUnauthenticated: func() bool { mu.Lock(); defer mu.Unlock(); return allow },
		Details:              func() HealthDetails { return HealthDetails{Config: HealthConfig{File: "/etc/policyd/policyd.yaml"}} },
		Metrics:              func(ctx *fasthttp.RequestCtx) { ctx.SetBodyString("policyd_up 1\n") },
		Repository:           repo,
	}})
	type route struct {
		method, path, body string
		what               string // the call the 403 names; "" = open without a token
	}
	guarded := []route{
		{"POST", "/v2/admin/reload", "", "admin reload"},
		{"POST", "/v2/admin/models/m/default", `{"version":"1.0.0"}`, "pinning the default version"},
		{"POST", "/v2/repository/models/m/load", "", "repository load"},
		{"POST", "/v2/repository/models/m/unload", "", "repository unload"},
		{"GET", "/v2/health/details", "", "health details"},
		{"POST", "/v2/repository/index", "", ""},
	}
	open := []route{{"GET", "/metrics", "", ""}, {"GET", "/v2/health/live", "", ""}, {"GET", "/v2/health/ready", "", ""}}
	call := func(r route, auth string) response {
		t.Helper()
		var body []byte
		if r.body != "" {
			body = []byte(r.body)
		}
		return ts.doAuth(t, r.method, r.path, auth, body)
	}
	calls := func() int {
		mu.Lock()
		n := reloads
		reloads = 0
		mu.Unlock()
		c := repo.take()
		return n + len(c)
	}

	// The default: no token, allow_unauthenticated off.
	for _, r := range guarded {
		got := call(r, "")
		if r.what == "" {
			if got.status != 200 {
				t.Errorf("no token: %s %s = %d %s, want 200", r.method, r.path, got.status, got.body)
			}
			continue
		}
		want := r.what + " needs a token: set admin.token_file, or admin.allow_unauthenticated: true for loopback development"
		if got.status != 403 || errorMessage(t, got) != want {
			t.Errorf("no token: %s %s = %d %s, want 403 %q", r.method, r.path, got.status, got.body, want)
		}
		// A bearer token sent while none is configured opens nothing either.
		if got := call(r, "Bearer anything"); got.status != 403 {
			t.Errorf("no token, a bearer sent: %s %s = %d, want 403", r.method, r.path, got.status)
		}
	}
	if n := calls(); n != 0 {
		t.Errorf("refused requests made %d calls", n)
	}

	// allow_unauthenticated: every route is open.
	set("", true)
	for _, r := range guarded {
		if got := call(r, ""); got.status != 200 {
			t.Errorf("allow_unauthenticated: %s %s = %d %s, want 200", r.method, r.path, got.status, got.body)
		}
	}
	if n := calls(); n != 4 { // reload, default, load, unload; the index calls none
		t.Errorf("allowed requests made %d calls, want 4", n)
	}

	// A token configured: it wins over allow_unauthenticated.
	for _, al := range []bool{true, false} {
		set("tok-A", al)
		for _, r := range guarded {
			for _, auth := range []string{"", "Bearer tok-B", "tok-A", "Bearer tok-A2", "bearer tok-A"} {
				got := call(r, auth)
				if got.status != 401 || errorMessage(t, got) != "missing or wrong bearer token" {
					t.Errorf("token, allow %v: %s %s with %q = %d %s, want 401", al, r.method, r.path, auth, got.status, got.body)
				}
			}
			if got := call(r, "Bearer tok-A"); got.status != 200 {
				t.Errorf("token: %s %s with it = %d %s", r.method, r.path, got.status, got.body)
			}
		}
	}
	if n := calls(); n != 8 {
		t.Errorf("authorized requests made %d calls, want 8", n)
	}
	// Rotated: the next request needs the new token, the old one is refused.
	set("tok-B", false)
	if got := call(guarded[0], "Bearer tok-A"); got.status != 401 {
		t.Errorf("the old token after a rotation: %d", got.status)
	}
	if got := call(guarded[0], "Bearer tok-B"); got.status != 200 {
		t.Errorf("the new token after a rotation: %d %s", got.status, got.body)
	}

	// Open in every state.
	for _, st := range []struct {
		tok string
		al  bool
	}{{"", false}, {"", true}, {"tok", false}} {
		set(st.tok, st.al)
		for _, r := range open {
			if got := call(r, ""); got.status == 401 || got.status == 403 || got.status >= 500 {
				t.Errorf("token %q allow %v: %s %s = %d %s, want it open", st.tok, st.al, r.method, r.path, got.status, got.body)
			}
		}
	}
	// The 401 says how to authenticate.
	set("tok", false)
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd/v2/health/details")
	if err := ts.client.Do(req, resp); err != nil {
		t.Fatal(err)
	}
	if h := string(resp.Header.Peek("WWW-Authenticate")); resp.StatusCode() != 401 || !strings.HasPrefix(h, "Bearer ") {
		t.Errorf("details without the token: %d, WWW-Authenticate %q", resp.StatusCode(), h)
	}
}
