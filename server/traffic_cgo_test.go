//go:build cgo

package server

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/repository"
)

// trafficCall sends one inference request and returns the status, the version the body names
// and the X-Model-Version header.
func trafficCall(t *testing.T, ts *testServer, path, body string, headers ...string) (status int, bodyVersion, headerVersion string) {
	t.Helper()
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd" + path)
	req.Header.SetMethod("POST")
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	req.SetBodyString(body)
	if err := ts.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	var out struct {
		ModelVersion string `json:"model_version"`
	}
	_ = json.Unmarshal(resp.Body(), &out)
	if resp.StatusCode() != 200 {
		t.Logf("%s: %d %s", path, resp.StatusCode(), resp.Body())
	}
	return resp.StatusCode(), out.ModelVersion, string(resp.Header.Peek(HeaderModelVersion))
}

// Every step of an episode, whichever way it names itself (X-Episode-ID, episode_id,
// sequence_id), is served by one version, across an admin weight change and a config reload;
// a version named in the URL bypasses the split; an unready version gets no traffic; the
// answer names its version in the body and the X-Model-Version header; the admin routes need
// the token.
func TestTrafficStickyOverHTTP(t *testing.T) {
	rt, model := nativeRuntime(t, mlpSmall)
	dir := t.TempDir()
	for _, v := range []string{"1.0.0", "1.1.0", "1.2.0"} {
		addArtifact(t, dir, "A", v, model, nil)
	}
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	desired := func(w map[string]int) repository.Desired {
		return repository.Desired{Dir: dir, Models: []repository.ModelSpec{{Name: "A", Traffic: &repository.TrafficSpec{Weights: w}}}}
	}
	if _, err := repo.Apply(desired(map[string]int{"1.0.0": 90, "1.1.0": 10})); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, NewRegistry(repo), Options{Admin: Admin{
		Token: func() string { return "s3cret" }, Repository: repo, Traffic: repo,
	}})
	obs := strings.TrimSuffix(strings.Repeat("0.5,", 8), ",")
	// step sends step i of episode e, naming the episode one of three ways.
	step := func(e int, path string) (string, string) {
		t.Helper()
		var status int
		var bv, hv string
		switch e % 3 {
		case 0:
			status, bv, hv = trafficCall(t, ts, path, `{"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[`+obs+`]}]}`, HeaderEpisodeID, fmt.Sprintf("ep-%d", e))
		case 1:
			status, bv, hv = trafficCall(t, ts, path, fmt.Sprintf(`{"parameters":{"episode_id":"ep-%d"},"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[%s]}]}`, e, obs))
		default:
			status, bv, hv = trafficCall(t, ts, path, fmt.Sprintf(`{"parameters":{"sequence_id":%d},"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[%s]}]}`, 1000+e, obs))
		}
		if status != 200 || bv == "" || bv != hv {
			t.Fatalf("episode %d on %s: status %d, model_version %q, %s %q", e, path, status, bv, HeaderModelVersion, hv)
		}
		return bv, hv
	}
	const episodes = 300
	seen := map[int]string{}
	count := map[string]int{}
	for e := range episodes {
		v, _ := step(e, "/v2/models/A/infer")
		seen[e] = v
		count[v]++
	}
	if count["1.2.0"] != 0 || count["1.1.0"] == 0 || count["1.0.0"] < count["1.1.0"] {
		t.Fatalf("split of %d episodes at 90/10: %v", episodes, count)
	}
	steps := func(when string) {
		t.Helper()
		for e := range episodes {
			if v, _ := step(e, "/v2/models/A/infer"); v != seen[e] {
				t.Fatalf("%s: episode %d went to %s, its earlier steps to %s", when, e, v, seen[e])
			}
		}
	}
	steps("second step")
	// TensorFlow Serving's predict takes the episode from X-Episode-ID too
	for e := 0; e < episodes; e += 3 {
		status, _, hv := trafficCall(t, ts, "/v1/models/A:predict", `{"instances":[[`+obs+`]]}`, HeaderEpisodeID, fmt.Sprintf("ep-%d", e))
		if status != 200 || hv != seen[e] {
			t.Fatalf("predict of episode %d: status %d, %s %q, its earlier steps on %s", e, status, HeaderModelVersion, hv, seen[e])
		}
	}

	// the admin API: token required
	put := func(auth, body string) response {
		return ts.doAuth(t, "PUT", "/v2/admin/models/A/traffic", auth, []byte(body))
	}
	if r := put("", `{"weights":{"1.0.0":10,"1.1.0":90}}`); r.status != 401 {
		t.Fatalf("PUT without a token: %d %s", r.status, r.body)
	}
	if r := put("Bearer nope", `{"weights":{"1.0.0":10,"1.1.0":90}}`); r.status != 401 {
		t.Fatalf("PUT with a wrong token: %d %s", r.status, r.body)
	}
	if r := ts.doAuth(t, "GET", "/v2/admin/models/A/traffic", "", nil); r.status != 401 {
		t.Fatalf("GET without a token: %d %s", r.status, r.body)
	}
	if r := put("Bearer s3cret", `{"weights":{"1.0.0":10,"9.0.0":90}}`); r.status != 404 || !strings.Contains(string(r.body), "9.0.0") {
		t.Fatalf("PUT naming a version not served: %d %s", r.status, r.body)
	}
	if r := put("Bearer s3cret", `{"weights":{"1.0.0":-1}}`); r.status != 400 || !strings.Contains(string(r.body), "must not be negative") {
		t.Fatalf("PUT with a negative weight: %d %s", r.status, r.body)
	}
	if r := put("Bearer s3cret", `{"weights":{"1.0.0":10,"1.1.0":90}}`); r.status != 200 {
		t.Fatalf("PUT: %d %s", r.status, r.body)
	}
	steps("after the admin weight change")
	count = map[string]int{}
	for e := episodes; e < 2*episodes; e++ {
		v, _ := step(e, "/v2/models/A/infer")
		seen[e] = v
		count[v]++
	}
	if count["1.1.0"] < count["1.0.0"] {
		t.Errorf("new episodes at 10/90: %v", count)
	}
	r := ts.doAuth(t, "GET", "/v2/admin/models/A/traffic", "Bearer s3cret", nil)
	var doc TrafficDocument
	if err := json.Unmarshal(r.body, &doc); err != nil || r.status != 200 || doc.Source != "admin" || doc.Weights["1.1.0"] != 90 || doc.StickyKeys != 2*episodes {
		t.Fatalf("GET traffic: %d %s", r.status, r.body)
	}

	// a config reload that changes the weights: live episodes keep their version
	if _, err := repo.Apply(desired(map[string]int{"1.0.0": 50, "1.1.0": 50})); err != nil {
		t.Fatal(err)
	}
	for e := range 2 * episodes {
		if v, _ := step(e, "/v2/models/A/infer"); v != seen[e] {
			t.Fatalf("after a reload: episode %d went to %s, its earlier steps to %s", e, v, seen[e])
		}
	}
	// a sequence_end forgets the key once answered: the next sequence with that ID is new
	before, _ := repo.Traffic("A")
	if status, _, _ := trafficCall(t, ts, "/v2/models/A/infer", fmt.Sprintf(`{"parameters":{"sequence_id":%d,"sequence_end":true},"inputs":[{"name":"obs","shape":[1,8],"datatype":"FP32","data":[%s]}]}`, 1002, obs)); status != 200 {
		t.Fatalf("sequence_end: %d", status)
	}
	if after, _ := repo.Traffic("A"); after.StickyKeys != before.StickyKeys-1 {
		t.Errorf("sticky keys %d after a sequence_end, want %d", after.StickyKeys, before.StickyKeys-1)
	}
	delete(seen, 2)
	// a version named in the URL bypasses the split
	for e := range 30 {
		if v, _ := step(e, "/v2/models/A/versions/1.2.0/infer"); v != "1.2.0" {
			t.Fatalf("named 1.2.0, served by %s", v)
		}
	}
	// an unready version gets no traffic: its episodes move (counted), the others stay
	if err := repo.Unload("A", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	moved := 0
	for e := range 2 * episodes {
		v, _ := step(e, "/v2/models/A/infer")
		if v != "1.0.0" {
			t.Fatalf("episode %d served by %s while 1.1.0 is unloaded", e, v)
		}
		if seen[e] == "1.1.0" {
			moved++
		}
	}
	st, _ := repo.Traffic("A")
	if st.StickyMisses != uint64(moved) {
		t.Errorf("sticky misses %d, want %d", st.StickyMisses, moved)
	}
}

// Over gRPC the key is the episode_id (or sequence_id) parameter or the x-episode-id metadata,
// and a routed answer carries x-model-version in its response metadata.
func TestTrafficStickyOverGRPC(t *testing.T) {
	rt, model := nativeRuntime(t, mlpSmall)
	dir := t.TempDir()
	for _, v := range []string{"1.0.0", "1.1.0"} {
		addArtifact(t, dir, "A", v, model, nil)
	}
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	if _, err := repo.Apply(repository.Desired{Dir: dir, Models: []repository.ModelSpec{{Name: "A",
		Traffic: &repository.TrafficSpec{Weights: map[string]int{"1.0.0": 50, "1.1.0": 50}}}}}); err != nil {
		t.Fatal(err)
	}
	ts := startGRPC(t, NewRegistry(repo), Options{})
	call := func(e int) string {
		t.Helper()
		req := &inference.ModelInferRequest{ModelName: "A", Inputs: []*inference.ModelInferRequest_InferInputTensor{{
			Name: "obs", Datatype: "FP32", Shape: []int64{1, 8},
			Contents: &inference.InferTensorContents{Fp32Contents: make([]float32, 8)}}}}
		ctx := grpcCtx(t)
		switch e % 3 {
		case 0:
			ctx = metadata.AppendToOutgoingContext(ctx, "x-episode-id", fmt.Sprintf("ep-%d", e))
		case 1:
			req.Parameters = map[string]*inference.InferParameter{"episode_id": {ParameterChoice: &inference.InferParameter_StringParam{StringParam: fmt.Sprintf("ep-%d", e)}}}
		default:
			req.Parameters = map[string]*inference.InferParameter{"episode_id": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(e)}}}
		}
		var hdr metadata.MD
		resp, err := ts.client.ModelInfer(ctx, req, grpc.Header(&hdr))
		if err != nil {
			t.Fatalf("episode %d: %v", e, err)
		}
		if got := hdr.Get("x-model-version"); len(got) != 1 || got[0] != resp.ModelVersion {
			t.Fatalf("episode %d: x-model-version %v, model_version %q", e, got, resp.ModelVersion)
		}
		return resp.ModelVersion
	}
	seen := map[int]string{}
	count := map[string]int{}
	for e := range 120 {
		seen[e] = call(e)
		count[seen[e]]++
	}
	if count["1.0.0"] == 0 || count["1.1.0"] == 0 {
		t.Fatalf("120 episodes at 50/50: %v", count)
	}
	if err := repo.SetTraffic("A", &repository.TrafficSpec{Weights: map[string]int{"1.0.0": 1, "1.1.0": 99}}, "admin"); err != nil {
		t.Fatal(err)
	}
	for e := range 120 {
		if v := call(e); v != seen[e] {
			t.Fatalf("episode %d went to %s, its first step to %s", e, v, seen[e])
		}
	}
}
