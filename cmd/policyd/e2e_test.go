//go:build cgo

package main

// End-to-end tests: build the real policyd binary (or take $POLICYD_BIN), serve a temporary
// repository made of the models of testdata/reference/*.json, and check every reference output
// over HTTP.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/policyd/policyd/internal/e2etest"
)

// repoRoot is the repository root, seen from this package's folder.
const repoRoot = "../.."

const invalidModel = "../shared/models/mlagents/deterDiscrete1obs3action_INVALID.onnx"
const invalidID = "mlagents-deterDiscrete1obs3action_INVALID"

// policydBinary builds cmd/policyd once per test run, unless $POLICYD_BIN names a binary.
func policydBinary(t *testing.T) string {
	return e2etest.PolicydBinary(t)
}

// reference is one testdata/reference/*.json file.
type reference struct {
	file    string
	Model   string            `json:"model"`
	ID      string            `json:"id"`
	Batch   int64             `json:"batch"`
	Inputs  []json.RawMessage `json:"inputs"`
	Outputs []struct {
		Name          string          `json:"name"`
		Datatype      string          `json:"datatype"`
		Shape         []int64         `json:"shape"`
		Deterministic bool            `json:"deterministic"`
		Data          json.RawMessage `json:"data"`
	} `json:"outputs"`
}

func loadReferences(t *testing.T) []reference {
	t.Helper()
	names, refs := e2etest.References[reference](t, repoRoot)
	if len(refs) == 0 {
		t.Skip("no testdata/reference/*.json yet")
	}
	for i := range refs {
		refs[i].file = names[i]
	}
	return refs
}

// linkModel adds model (a path relative to the repository root) to repo as the artifact
// <id>@1.0.0, as "policyctl artifacts add" would (without loading it: the invalid model too).
func linkModel(t *testing.T, repo, id, model string) {
	t.Helper()
	e2etest.LinkModel(t, repoRoot, repo, id, model, "e2e test")
}

// daemon is a running policyd.
type daemon struct {
	url      string
	grpcAddr string // HOST:PORT of its gRPC API
	cmd      *exec.Cmd
	stderr   *bytes.Buffer
	exited   chan error
	once     sync.Once
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startDaemon starts policyd on repo and waits until its first load of the repository is over:
// /v2/health/ready answers, and not "starting" (it listens while it loads).
func startDaemon(t *testing.T, repo string, extra ...string) *daemon {
	t.Helper()
	addr, grpcAddr := freeAddr(t), freeAddr(t)
	args := []string{"--addr", addr, "--grpc-addr", grpcAddr, "--engine.cpu-threads", "2", "--log-level", "debug"}
	if repo != "" {
		args = append([]string{"--repository", repo}, args...)
	}
	args = append(args, extra...)
	cmd := exec.Command(policydBinary(t), args...)
	var stderr bytes.Buffer
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return stderr.Write(p) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &daemon{url: "http://" + addr, grpcAddr: grpcAddr, cmd: cmd, stderr: &stderr, exited: make(chan error, 1)}
	go func() { d.exited <- cmd.Wait() }()
	t.Cleanup(func() {
		d.stop(t)
		if t.Failed() {
			mu.Lock()
			t.Logf("policyd stderr:\n%s", stderr.String())
			mu.Unlock()
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case err := <-d.exited:
			d.exited <- err
			t.Fatalf("policyd exited during start-up: %v", err)
		default:
		}
		resp, err := http.Get(d.url + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if !strings.HasPrefix(resp.Header.Get("X-Not-Ready-Reason"), "starting") {
				return d // the first load is done (ready or not)
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("policyd did not answer within 3 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// stop sends SIGTERM and checks a clean exit.
func (d *daemon) stop(t *testing.T) {
	t.Helper()
	d.once.Do(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.exited:
			if err != nil {
				t.Errorf("policyd exit after SIGTERM: %v", err)
			}
		case <-time.After(60 * time.Second):
			d.cmd.Process.Kill()
			t.Error("policyd did not exit within 60s of SIGTERM")
		}
	})
}

type httpResult struct {
	status   int
	body     []byte
	notReady string // X-Not-Ready-Reason: why a readiness check answered false
}

func (d *daemon) do(t *testing.T, method, path string, body []byte) httpResult {
	t.Helper()
	req, err := http.NewRequest(method, d.url+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return httpResult{resp.StatusCode, b, resp.Header.Get("X-Not-Ready-Reason")}
}

func errorOf(t *testing.T, r httpResult) string {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(r.body, &e); err != nil || e.Error == "" {
		t.Fatalf("body %q is not {\"error\": ...}", r.body)
	}
	return e.Error
}

// TestEndToEnd serves every reference model plus the invalid one from one repository.
func TestEndToEnd(t *testing.T) {
	refs := loadReferences(t)
	repo := t.TempDir()
	ids := map[string]bool{}
	for _, r := range refs {
		if !ids[r.ID] {
			linkModel(t, repo, r.ID, r.Model)
			ids[r.ID] = true
		}
	}
	linkModel(t, repo, invalidID, invalidModel)
	d := startDaemon(t, repo)

	t.Run("health", func(t *testing.T) {
		if r := d.do(t, "GET", "/v2/health/live", nil); r.status != 200 {
			t.Errorf("live = %d", r.status)
		}
		r := d.do(t, "GET", "/v2/health/ready", nil)
		if r.status != 400 || len(r.body) != 0 {
			t.Fatalf("ready with an invalid model = %d %q, want 400 and an empty body (v2: false is a 4xx)", r.status, r.body)
		}
		if msg := r.notReady; !strings.Contains(msg, "1 model version(s) not ready") || !strings.Contains(msg, invalidID) {
			t.Errorf("ready reason %q, want exactly the invalid model named", msg)
		}
		for id := range ids {
			if r := d.do(t, "GET", "/v2/models/"+id+"/versions/1.0.0/ready", nil); r.status != 200 {
				t.Errorf("%s not ready: %d %s", id, r.status, r.body)
			}
		}
	})

	t.Run("invalid model", func(t *testing.T) {
		for _, path := range []string{"/v2/models/" + invalidID + "/ready", "/v2/models/" + invalidID + "/versions/1.0.0/ready"} {
			r := d.do(t, "GET", path, nil)
			if r.status != 400 || len(r.body) != 0 {
				t.Fatalf("%s = %d %q, want 400 and an empty body", path, r.status, r.body)
			}
			msg := r.notReady
			if !strings.Contains(msg, "memory_size") && !strings.Contains(msg, "discrete_action_output_shape") {
				t.Errorf("reason %q does not name the missing graph output", msg)
			}
		}
		body := `{"inputs":[{"name":"obs_0","datatype":"FP32","shape":[1,20],"data":[` + zeros(20) + `]},` +
			`{"name":"action_masks","datatype":"FP32","shape":[1,3],"data":[1,1,1]}]}`
		if r := d.do(t, "POST", "/v2/models/"+invalidID+"/versions/1.0.0/infer", []byte(body)); r.status != 503 {
			t.Errorf("infer on the invalid model = %d, want 503", r.status)
		}
	})

	t.Run("server metadata", func(t *testing.T) {
		r := d.do(t, "GET", "/v2", nil)
		var meta struct {
			Name       string   `json:"name"`
			Version    string   `json:"version"`
			Extensions []string `json:"extensions"`
		}
		if err := json.Unmarshal(r.body, &meta); err != nil || r.status != 200 || meta.Name != "policyd" || meta.Extensions == nil {
			t.Errorf("GET /v2 = %d %s", r.status, r.body)
		}
	})

	for _, ref := range refs {
		t.Run(ref.file, func(t *testing.T) { checkReference(t, d, ref) })
	}

	t.Run("model metadata", func(t *testing.T) {
		r := d.do(t, "GET", "/v2/models/peers-mlp-small", nil)
		// The digest changes with every add (the manifest records its creation time).
		digest := regexp.MustCompile(`sha256:[0-9a-f]{64}`)
		want := `{"name":"peers-mlp-small","versions":["1.0.0"],"version":"1.0.0","default_version":"1.0.0","default_pinned":false,"digest":"D","digests":{"1.0.0":"D"},"platform":"onnx","inputs":[{"name":"obs","datatype":"FP32","shape":[-1,8]}],"outputs":[{"name":"action","datatype":"FP32","shape":[-1,2]}]}`
		if got := digest.ReplaceAllString(string(r.body), "D"); r.status != 200 || got != want {
			t.Errorf("metadata = %d %s\nwant %s", r.status, r.body, want)
		}
	})

	t.Run("errors", func(t *testing.T) {
		ok := `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,8],"data":[` + zeros(8) + `]}]}`
		tests := []struct {
			path, body string
			status     int
			want       []string
		}{
			{"/v2/models/nope/versions/1.0.0/infer", ok, 404, []string{`unknown model "nope"`}},
			{"/v2/models/peers-mlp-small/versions/2/infer", ok, 404, []string{`unknown version "2"`}},
			{"/v2/models/peers-mlp-small/versions/1.0.0/infer",
				`{"inputs":[{"name":"observation","datatype":"FP32","shape":[1,8],"data":[` + zeros(8) + `]}]}`, 400, []string{`"observation"`}},
			{"/v2/models/peers-mlp-small/versions/1.0.0/infer",
				`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,9],"data":[` + zeros(9) + `]}]}`, 400, []string{`input "obs"`, "[-1,8]", "[1,9]"}},
			{"/v2/models/peers-mlp-small/versions/1.0.0/infer",
				`{"inputs":[{"name":"obs","datatype":"INT64","shape":[1,8],"data":[` + zeros(8) + `]}]}`, 400, []string{`input "obs"`, "FP32", "INT64"}},
		}
		for _, tt := range tests {
			r := d.do(t, "POST", tt.path, []byte(tt.body))
			if r.status != tt.status {
				t.Errorf("POST %s %s = %d, want %d (%s)", tt.path, tt.body, r.status, tt.status, r.body)
				continue
			}
			msg := errorOf(t, r)
			for _, w := range tt.want {
				if !strings.Contains(msg, w) {
					t.Errorf("POST %s: error %q lacks %q", tt.path, msg, w)
				}
			}
		}
		if r := d.do(t, "POST", "/v2/models/peers-mlp-small/versions/1.0.0/infer", []byte(ok)); r.status != 200 {
			t.Errorf("a valid request after the errors = %d %s", r.status, r.body)
		}
	})

	t.Run("garbage", func(t *testing.T) {
		rng := rand.New(rand.NewSource(7))
		for i := 0; i < 200; i++ {
			body := make([]byte, rng.Intn(2048))
			rng.Read(body)
			if i%2 == 1 {
				body = append([]byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,8],"data":[`), body...)
			}
			r := d.do(t, "POST", "/v2/models/peers-mlp-small/versions/1.0.0/infer", body)
			if r.status != 400 {
				t.Fatalf("garbage body: %d %s", r.status, r.body)
			}
		}
		if r := d.do(t, "GET", "/v2/health/live", nil); r.status != 200 {
			t.Fatalf("not live after garbage: %d", r.status)
		}
	})

	t.Run("concurrent", func(t *testing.T) {
		var ref *reference
		for i := range refs {
			if refs[i].ID == "peers-mlp-small" && refs[i].Batch == 8 {
				ref = &refs[i]
			}
		}
		if ref == nil {
			t.Skip("no peers-mlp-small_b8 reference")
		}
		var wg sync.WaitGroup
		for g := 0; g < 8; g++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 25 && !t.Failed(); i++ {
					checkReference(t, d, *ref)
				}
			}()
		}
		wg.Wait()
	})
}

func zeros(n int) string { return strings.TrimSuffix(strings.Repeat("0,", n), ",") }

// checkReference posts ref's inputs and compares the outputs: every output's datatype and
// shape, and the values of deterministic outputs within 1e-4 + 1e-3*|want|.
func checkReference(t *testing.T, d *daemon, ref reference) {
	t.Helper()
	var body bytes.Buffer
	fmt.Fprintf(&body, `{"id":%q,"inputs":[`, ref.file)
	for i, in := range ref.Inputs {
		if i > 0 {
			body.WriteByte(',')
		}
		body.Write(in)
	}
	body.WriteString("]}")
	r := d.do(t, "POST", "/v2/models/"+ref.ID+"/versions/1.0.0/infer", body.Bytes())
	if r.status != 200 {
		t.Errorf("%s: status %d: %s", ref.file, r.status, clipped(r.body))
		return
	}
	var resp struct {
		ModelName    string `json:"model_name"`
		ModelVersion string `json:"model_version"`
		ID           string `json:"id"`
		Outputs      []struct {
			Name     string          `json:"name"`
			Datatype string          `json:"datatype"`
			Shape    []int64         `json:"shape"`
			Data     json.RawMessage `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(r.body, &resp); err != nil {
		t.Errorf("%s: response: %v", ref.file, err)
		return
	}
	if resp.ModelName != ref.ID || resp.ModelVersion != "1.0.0" || resp.ID != ref.file {
		t.Errorf("%s: model_name %q model_version %q id %q", ref.file, resp.ModelName, resp.ModelVersion, resp.ID)
	}
	if len(resp.Outputs) != len(ref.Outputs) {
		t.Errorf("%s: %d outputs, want %d", ref.file, len(resp.Outputs), len(ref.Outputs))
	}
	for _, want := range ref.Outputs {
		idx := -1
		for i := range resp.Outputs {
			if resp.Outputs[i].Name == want.Name {
				idx = i
			}
		}
		if idx < 0 {
			t.Errorf("%s: output %q missing", ref.file, want.Name)
			continue
		}
		got := resp.Outputs[idx]
		if got.Datatype != want.Datatype {
			t.Errorf("%s: output %q datatype %s, want %s", ref.file, want.Name, got.Datatype, want.Datatype)
		}
		if !shapeOK(got.Shape, want.Shape, ref.Batch, want.Deterministic) {
			t.Errorf("%s: output %q shape %v, want %v", ref.file, want.Name, got.Shape, want.Shape)
			continue
		}
		gv, err := numbers(got.Data, got.Datatype)
		if err != nil {
			t.Errorf("%s: output %q: %v", ref.file, want.Name, err)
			continue
		}
		if n := product(got.Shape); int64(len(gv)) != n {
			t.Errorf("%s: output %q has %d values for shape %v", ref.file, want.Name, len(gv), got.Shape)
			continue
		}
		if !want.Deterministic {
			continue
		}
		wv, err := numbers(want.Data, want.Datatype)
		if err != nil {
			t.Fatalf("%s: reference output %q: %v", ref.file, want.Name, err)
		}
		bad := 0
		for i := range wv {
			w, g := wv[i], gv[i]
			if math.IsNaN(w) != math.IsNaN(g) || !math.IsNaN(w) && math.Abs(g-w) > 1e-4+1e-3*math.Abs(w) {
				if bad < 5 {
					t.Errorf("%s: output %q[%d] = %v, want %v", ref.file, want.Name, i, g, w)
				}
				bad++
			}
		}
		if bad > 5 {
			t.Errorf("%s: output %q: %d of %d values off", ref.file, want.Name, bad, len(wv))
		}
	}
}

// shapeOK compares shapes exactly, except that dimension 0 of a stochastic output may be the
// batch size.
func shapeOK(got, want []int64, batch int64, deterministic bool) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range want {
		if got[i] != want[i] && !(i == 0 && !deterministic && got[i] == batch) {
			return false
		}
	}
	return true
}

func product(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// numbers reads a flat JSON array; null (NaN/Inf) reads as NaN. INT64 values must be integers.
func numbers(raw json.RawMessage, dtype string) ([]float64, error) {
	var vals []any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&vals); err != nil {
		return nil, err
	}
	out := make([]float64, len(vals))
	for i, v := range vals {
		switch x := v.(type) {
		case nil:
			out[i] = math.NaN()
		case bool:
			if x {
				out[i] = 1
			}
		case json.Number:
			if strings.HasPrefix(dtype, "INT") || strings.HasPrefix(dtype, "UINT") {
				if strings.ContainsAny(string(x), ".eE") {
					return nil, fmt.Errorf("element %d of %s is %s, not an integer", i, dtype, x)
				}
			}
			f, err := x.Float64()
			if err != nil {
				return nil, err
			}
			out[i] = f
		default:
			return nil, fmt.Errorf("element %d is %T", i, v)
		}
	}
	return out, nil
}

func clipped(b []byte) string {
	if len(b) > 500 {
		return string(b[:500]) + "..."
	}
	return string(b)
}

// TestReadyAndCleanExit serves one valid model: ready is 200, and SIGTERM ends policyd with
// status 0 after it closed the repository and the runtime.
func TestReadyAndCleanExit(t *testing.T) {
	repo := t.TempDir()
	linkModel(t, repo, "mlp", "../shared/peers/models/mlp-small.onnx")
	d := startDaemon(t, repo)
	if r := d.do(t, "GET", "/v2/health/ready", nil); r.status != 200 {
		t.Fatalf("ready = %d %s", r.status, r.body)
	}
	if r := d.do(t, "GET", "/v2/models/mlp/ready", nil); r.status != 200 {
		t.Fatalf("model ready = %d %s", r.status, r.body)
	}
	d.stop(t)
	for _, step := range []string{`"HTTP and gRPC servers stopped"`, `"repository closed"`, `"runtime closed"`} {
		if !strings.Contains(d.stderr.String(), step) {
			t.Errorf("log lacks %s", step)
		}
	}
}

// TestMissingRepository: policyd refuses to start without its repository.
func TestMissingRepository(t *testing.T) {
	out, err := exec.Command(policydBinary(t), "--repository", filepath.Join(t.TempDir(), "none")).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() == 0 {
		t.Fatalf("exit %v, want non-zero", err)
	}
	if !strings.Contains(string(out), "no such file or directory") {
		t.Errorf("output %q does not say why", out)
	}
}
