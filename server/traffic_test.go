package server

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/policyd/policyd/repository"
)

// fakeTraffic is a TrafficControl that keeps the last spec set.
type fakeTraffic struct {
	spec *repository.TrafficSpec
	by   string
}

func (f *fakeTraffic) Traffic(model string) (repository.TrafficStatus, bool) {
	if f.spec == nil {
		return repository.TrafficStatus{}, false
	}
	return repository.TrafficStatus{Model: model, Spec: f.spec, Source: f.by}, true
}

func (f *fakeTraffic) SetTraffic(model string, spec *repository.TrafficSpec, source string) error {
	if spec != nil {
		if err := spec.Validate(); err != nil {
			return err
		}
	}
	f.spec, f.by = spec, source
	return nil
}

func TestAdminTrafficRoutes(t *testing.T) {
	reg := newFakeRegistry(&fakeModel{name: "A", version: "1"})
	ft := &fakeTraffic{}
	token := ""
	ts := startServer(t, reg, Options{Admin: Admin{Traffic: ft, Token: func() string { return token }}})
	put := func(auth, body string) response {
		return ts.doAuth(t, "PUT", "/v2/admin/models/A/traffic", auth, []byte(body))
	}
	// no token configured and not opened: 403 naming the settings
	if r := put("", `{"weights":{"1.0.0":1}}`); r.status != 403 || !strings.Contains(string(r.body), "admin.token_file") {
		t.Fatalf("PUT with no token configured: %d %s", r.status, r.body)
	}
	token = "t0k"
	for _, auth := range []string{"", "Bearer wrong"} {
		if r := put(auth, `{"weights":{"1.0.0":1}}`); r.status != 401 {
			t.Fatalf("PUT with %q: %d %s", auth, r.status, r.body)
		}
	}
	if r := ts.doAuth(t, "GET", "/v2/admin/models/A/traffic", "Bearer t0k", nil); r.status != 200 || !strings.Contains(string(r.body), `"policy": false`) {
		t.Fatalf("GET without a policy: %d %s", r.status, r.body)
	}
	if r := ts.doAuth(t, "GET", "/v2/admin/models/nope/traffic", "Bearer t0k", nil); r.status != 404 {
		t.Fatalf("GET of an unknown model: %d %s", r.status, r.body)
	}
	for body, want := range map[string]string{
		`{"shadow":null}`:                    "must name the weights",
		`{"weights":{"1.0.0":1},"colour":1}`: `colour: unknown member`,
		`{"weights":{"1.0.0":"x"}}`:          "weights:",
		`{"weights":{"1.0.0":0}}`:            "at least one weight must be above 0",
		`{"weights":{"1.0.0":1},"gates":{"candidate":"1.0.0","interval":"soon"}}`: "is not a duration like 30s",
	} {
		if r := put("Bearer t0k", body); r.status != 400 || !strings.Contains(string(r.body), want) {
			t.Errorf("PUT %s: %d %s, want 400 with %q", body, r.status, r.body, want)
		}
	}
	r := put("Bearer t0k", `{"weights":{"1.0.0":9,"1.1.0":1},"shadow":{"version":"1.1.0","rate":0.5}}`)
	if r.status != 200 || ft.by != "admin" || ft.spec.Shadow == nil || ft.spec.Shadow.Rate != 0.5 {
		t.Fatalf("PUT: %d %s; set %+v by %s", r.status, r.body, ft.spec, ft.by)
	}
	// weights only: the shadow stays; "shadow": null removes it
	if r := put("Bearer t0k", `{"weights":{"1.0.0":5,"1.1.0":5}}`); r.status != 200 || ft.spec.Shadow == nil || ft.spec.Weights["1.1.0"] != 5 {
		t.Fatalf("PUT weights only: %d %s; %+v", r.status, r.body, ft.spec)
	}
	var doc TrafficDocument
	if err := json.Unmarshal(r.body, &doc); err != nil || !doc.Policy || doc.Shadow == nil || doc.Weights["1.0.0"] != 9 {
		t.Errorf("answer of the first PUT: %v %s", err, r.body)
	}
	if r := put("Bearer t0k", `{"weights":{"1.0.0":5,"1.1.0":5},"shadow":null}`); r.status != 200 || ft.spec.Shadow != nil {
		t.Fatalf("PUT shadow null: %d %s; %+v", r.status, r.body, ft.spec)
	}
	if r := put("Bearer t0k", `{"weights":{}}`); r.status != 200 || ft.spec != nil {
		t.Fatalf("PUT empty weights: %d %s; %+v", r.status, r.body, ft.spec)
	}
}

// BenchmarkRouteKey is what the HTTP codec adds for a model with a traffic policy before it
// acquires a version: scanning the JSON part once more for the episode (a 3DBall request).
func BenchmarkRouteKey(b *testing.B) {
	r := newInferRequest()
	for _, tt := range []struct{ name, body, header string }{
		{"EpisodeParameter", `{"parameters":{"episode_id":"ep-123456"},"inputs":[{"name":"obs_0","shape":[1,8],"datatype":"FP32","data":[0.1,-0.2,0.05,0.3,-1.2,0.4,0.0,0.9]}]}`, ""},
		{"Header", `{"inputs":[{"name":"obs_0","shape":[1,8],"datatype":"FP32","data":[0.1,-0.2,0.05,0.3,-1.2,0.4,0.0,0.9]}]}`, "ep-123456"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			r.body, r.episode = []byte(tt.body), []byte(tt.header)
			b.ReportAllocs()
			for b.Loop() {
				if k, _ := r.routeKey(); k != "ep-123456" {
					b.Fatalf("key %q", k)
				}
			}
		})
	}
}

func TestRouteKeyOfHTTPRequests(t *testing.T) {
	r := newInferRequest()
	for _, tt := range []struct {
		body, header, want string
		end                bool
	}{
		{`{"parameters":{"sequence_id":42,"episode_id":"e"},"inputs":[]}`, "h", "42", false},
		{`{"parameters":{"sequence_id":"s-1","sequence_end":true},"inputs":[]}`, "", "s-1", true},
		{`{"parameters":{"episode_id":"e\u0031"},"inputs":[]}`, "h", "e1", false},
		{`{"parameters":{"episode_id":""},"inputs":[]}`, "h", "h", false},
		{`{"inputs":[]}`, "h", "h", false},
		{`{"inputs":[`, "h", "h", false}, // bad JSON: decodeRequest says what is wrong
		{`{"inputs":[]}`, "", "", false},
		{`{"parameters":{"episode_id":"` + strings.Repeat("x", maxIDLen+1) + `"}}`, "", "", false},
	} {
		r.body, r.episode = []byte(tt.body), []byte(tt.header)
		if k, end := r.routeKey(); k != tt.want || end != tt.end {
			t.Errorf("%s (header %q): key %q end %v, want %q %v", tt.body, tt.header, k, end, tt.want, tt.end)
		}
	}
}

// TestAdminTrafficShowsShadow: GET …/traffic carries what the model's shadow measured, as
// health details do (policyctl traffic status prints it).
func TestAdminTrafficShowsShadow(t *testing.T) {
	reg := newFakeRegistry(policyModel("1"), offsetPolicy("2", 0.5, 3))
	ft := &fakeTraffic{}
	ts := startServer(t, reg, Options{Shadow: shadowOf("2", 1, nil), Admin: Admin{Traffic: ft, Token: func() string { return "t0k" }}})
	for range 4 {
		if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,-2,3,4]}]}`)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	waitShadow(t, ts.srv, "policy", "1", "2", 4)
	r := ts.doAuth(t, "GET", "/v2/admin/models/policy/traffic", "Bearer t0k", nil)
	var doc TrafficDocument
	if err := json.Unmarshal(r.body, &doc); err != nil || r.status != 200 {
		t.Fatalf("GET: %d %s (%v)", r.status, r.body, err)
	}
	if len(doc.Shadows) != 1 || doc.Shadows[0].Shadow != "2" || doc.Shadows[0].Samples != 4 || doc.Shadows[0].MaxAbs != 0.5 {
		t.Fatalf("shadows %+v", doc.Shadows)
	}
}
