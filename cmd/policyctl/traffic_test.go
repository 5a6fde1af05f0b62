package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/repository"
	"github.com/policyd/policyd/server"
)

// A stand-in server: checks the token, records what it is sent, answers a traffic document.
func TestTrafficSetAndStatus(t *testing.T) {
	var got struct {
		method, path, auth string
		body               []byte
	}
	doc := server.TrafficDocument{Model: "3DBall", Policy: true, Source: "admin",
		Versions: []repository.TrafficVersion{
			{Version: "1.0.0", Weight: 90, Ready: true, Share: 0.9, Routes: map[string]uint64{"split": 9, "sticky": 81}},
			{Version: "1.1.0", Weight: 10, Ready: true, Share: 0.1, Routes: map[string]uint64{"split": 1}},
		},
		GateStatus: &repository.GateStatus{Candidate: "1.1.0", State: "rolled_back", History: []repository.GateAction{{
			Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Action: "rollback", Reason: "error rate 0.2 above 0.05",
			Weights: map[string]int{"1.0.0": 90, "1.1.0": 0}}}},
	}
	doc.Weights = map[string]int{"1.0.0": 90, "1.1.0": 10}
	doc.Shadows = []server.ShadowStatus{{Model: "3DBall", Primary: "1.0.0", Shadow: "1.1.0", Samples: 120, Dropped: 3,
		MeanAbs: 0.00042, MaxAbs: 0.0031, MaxRel: 0.02, Agreement: 1, Since: time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC),
		Outputs: []server.ShadowOutputReport{{Output: "continuous_actions", Elements: 240, MeanAbs: 0.00073, MaxAbs: 0.0031, MaxRel: 0.02}}}}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.method, got.path, got.auth = r.Method, r.URL.Path, r.Header.Get("Authorization")
		got.body, _ = io.ReadAll(r.Body)
		if got.auth != "Bearer tok" {
			w.WriteHeader(401)
			w.Write([]byte(`{"error":"missing or wrong bearer token"}`))
			return
		}
		json.NewEncoder(w).Encode(doc)
	}))
	defer ts.Close()
	tokFile := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tokFile, []byte("tok\n"), 0o600)

	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"policyctl", "traffic", "set", "3DBall", "v1.0.0=90", "1.1.0=10", "--server", ts.URL, "--token-file", tokFile}, &out, &errb)
	if code != 0 || got.method != "PUT" || got.path != "/v2/admin/models/3DBall/traffic" || string(got.body) != `{"weights":{"1.0.0":90,"1.1.0":10}}` {
		t.Fatalf("set: code %d, sent %s %s %s; stderr %s", code, got.method, got.path, got.body, errb.String())
	}
	for _, want := range []string{"traffic policy set by admin", "1.0.0    90", "90.0%", "gates: candidate 1.1.0, rolled back",
		"2026-01-02T03:04:05Z rollback → 1.0.0=90 1.1.0=0: error rate 0.2 above 0.05",
		"shadow 1.1.0 beside 1.0.0 since 2026-01-02T03:00:00Z: 120 compared, 3 dropped, 0 errors, 0 skipped; mean |diff| 0.00042",
		"continuous_actions: mean |diff| 0.00073, max |diff| 0.0031, max rel 0.02 over 240 elements"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("set's output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if code := run(context.Background(), []string{"policyctl", "traffic", "status", "3DBall", "--server", ts.URL, "--token-file", tokFile, "--format", "json"}, &out, &errb); code != 0 || got.method != "GET" {
		t.Fatalf("status: code %d, %s", code, errb.String())
	}
	var back server.TrafficDocument
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || back.Weights["1.1.0"] != 10 {
		t.Errorf("status --format json: %v\n%s", err, out.String())
	}
	errb.Reset()
	if code := run(context.Background(), []string{"policyctl", "traffic", "status", "3DBall", "--server", ts.URL}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "401") {
		t.Errorf("status without a token: code %d, %s", code, errb.String())
	}
	for _, args := range [][]string{{"3DBall", "1.0.0"}, {"3DBall", "^1=5"}, {"3DBall", "1.0.0=-1"}, {"3DBall"}} {
		errb.Reset()
		if code := run(context.Background(), append([]string{"policyctl", "traffic", "set"}, args...), &out, &errb); code != 2 {
			t.Errorf("set %v: code %d, want 2 (%s)", args, code, errb.String())
		}
	}
}
