//go:build cgo

package policyd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/policyd/policyd/internal/e2etest"
)

// reference is one testdata/reference/*.json file (ONNX Runtime's outputs).
type reference struct {
	file   string
	Model  string `json:"model"`
	ID     string `json:"id"`
	Batch  int64  `json:"batch"`
	Inputs []struct {
		Name     string          `json:"name"`
		Datatype string          `json:"datatype"`
		Shape    []int64         `json:"shape"`
		Data     json.RawMessage `json:"data"`
	} `json:"inputs"`
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
		t.Fatal("no testdata/reference/*.json")
	}
	for i := range refs {
		refs[i].file = names[i]
	}
	return refs
}

func (r reference) inputs(t *testing.T) []Tensor {
	t.Helper()
	var ins []Tensor
	for _, in := range r.Inputs {
		raw, err := jsonToRaw(in.Datatype, in.Data)
		if err != nil {
			t.Fatalf("%s: input %s: %v", r.file, in.Name, err)
		}
		ins = append(ins, Tensor{Name: in.Name, Datatype: in.Datatype, Shape: in.Shape, Data: raw})
	}
	return ins
}

// checkOutputs compares res with ONNX Runtime's outputs as cmd/policyd/e2e_test.go does:
// datatype and shape of every output, values of deterministic ones within 1e-4 + 1e-3·|want|.
func checkOutputs(t *testing.T, how string, ref reference, res *InferResult) {
	t.Helper()
	if res.ModelName != ref.ID || res.ModelVersion != "1.0.0" {
		t.Errorf("%s %s: model %q version %q", how, ref.file, res.ModelName, res.ModelVersion)
	}
	if len(res.Outputs) != len(ref.Outputs) {
		t.Errorf("%s %s: %d outputs, want %d", how, ref.file, len(res.Outputs), len(ref.Outputs))
	}
	for _, want := range ref.Outputs {
		got, ok := res.Output(want.Name)
		if !ok {
			t.Errorf("%s %s: output %q missing", how, ref.file, want.Name)
			continue
		}
		if got.Datatype != want.Datatype {
			t.Errorf("%s %s: output %q datatype %s, want %s", how, ref.file, want.Name, got.Datatype, want.Datatype)
		}
		shapeOK := len(got.Shape) == len(want.Shape)
		for i := 0; shapeOK && i < len(want.Shape); i++ {
			shapeOK = got.Shape[i] == want.Shape[i] || i == 0 && !want.Deterministic && got.Shape[i] == ref.Batch
		}
		if !shapeOK {
			t.Errorf("%s %s: output %q shape %v, want %v", how, ref.file, want.Name, got.Shape, want.Shape)
			continue
		}
		gv, err := got.AsFloat64()
		if err != nil || int64(len(gv)) != got.NumElements() {
			t.Errorf("%s %s: output %q: %d values for shape %v (%v)", how, ref.file, want.Name, len(gv), got.Shape, err)
			continue
		}
		if !want.Deterministic {
			continue
		}
		wraw, err := jsonToRaw(want.Datatype, want.Data)
		if err != nil {
			t.Fatalf("%s: reference output %q: %v", ref.file, want.Name, err)
		}
		wv, _ := Tensor{Datatype: want.Datatype, Data: wraw}.AsFloat64()
		bad := 0
		for i := range wv {
			w, g := wv[i], gv[i]
			if math.IsNaN(w) != math.IsNaN(g) || !math.IsNaN(w) && math.Abs(g-w) > 1e-4+1e-3*math.Abs(w) {
				if bad < 3 {
					t.Errorf("%s %s: output %q[%d] = %v, want %v", how, ref.file, want.Name, i, g, w)
				}
				bad++
			}
		}
	}
}

// clients returns an HTTP and a gRPC client of d, closed at the end of the test.
func clients(t *testing.T, d *daemon, opts ...Option) (hc, gc *Client) {
	t.Helper()
	hc, err := New(d.url, opts...)
	if err != nil {
		t.Fatal(err)
	}
	gc, err = NewGRPC(d.grpcAddr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hc.Close(); gc.Close() })
	return hc, gc
}

// mainDaemon serves every reference model, 3DBall (the README's), the dtypes model and the
// invalid model, once for the tests that share it.
var (
	mainOnce sync.Once
	mainD    *daemon
	mainRefs []reference
)

const invalidID = "mlagents-deterDiscrete1obs3action_INVALID"

func mainDaemon(t *testing.T) (*daemon, []reference) {
	t.Helper()
	mainOnce.Do(func() {
		refs := loadReferences(t)
		repo, err := os.MkdirTemp("", "policyd-client-repo-")
		if err != nil {
			t.Fatal(err)
		}
		cleanups = append(cleanups, func() { os.RemoveAll(repo) })
		seen := map[string]bool{}
		for _, r := range refs {
			if !seen[r.ID] {
				linkModel(t, repo, r.ID, r.Model)
				seen[r.ID] = true
			}
		}
		linkModel(t, repo, "3DBall", "examples/repository/3DBall/1.0.0/model.onnx")
		for _, dt := range []string{BOOL, INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64, FP16, BF16, FP32, FP64} {
			linkModel(t, repo, "identity-"+dt, "clients/go/testdata/identity_"+dt+".onnx")
		}
		linkModel(t, repo, invalidID, "../shared/models/mlagents/deterDiscrete1obs3action_INVALID.onnx")
		// The daemon outlives this test: it is shared, and stopped by TestMain.
		started := false
		tb := noCleanup{T: t, started: &started}
		d := startDaemon(tb, repo, "")
		started = true
		mainD = d
		mainRefs = refs
	})
	if mainD == nil {
		t.Fatal("the shared policyd did not start")
	}
	return mainD, mainRefs
}

// noCleanup is the testing.TB of the shared daemon: its cleanups run at the end of
// TestMain, and once the daemon is up (started), what it reports goes to stderr and fails
// the run, since the test that started it is over by then.
type noCleanup struct {
	*testing.T
	started *bool
}

var (
	cleanups   []func()
	mainFailed bool
)

func (n noCleanup) Cleanup(f func()) { cleanups = append(cleanups, f) }
func (n noCleanup) TempDir() string {
	d, err := os.MkdirTemp("", "policyd-client-")
	if err != nil {
		n.T.Fatal(err)
	}
	cleanups = append(cleanups, func() { os.RemoveAll(d) })
	return d
}
func (n noCleanup) Failed() bool { return *n.started && mainFailed || !*n.started && n.T.Failed() }
func (n noCleanup) Errorf(format string, args ...any) {
	if !*n.started {
		n.T.Errorf(format, args...)
		return
	}
	mainFailed = true
	fmt.Fprintf(os.Stderr, "shared policyd: "+format+"\n", args...)
}
func (n noCleanup) Error(args ...any) { n.Errorf("%s", fmt.Sprint(args...)) }
func (n noCleanup) Logf(format string, args ...any) {
	if !*n.started {
		n.T.Logf(format, args...)
		return
	}
	fmt.Fprintf(os.Stderr, "shared policyd: "+format+"\n", args...)
}

func TestMain(m *testing.M) {
	code := m.Run()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	if mainFailed && code == 0 {
		code = 1
	}
	os.Exit(code)
}

// TestReferences: every reference model over HTTP binary, HTTP JSON and gRPC equals ONNX
// Runtime's outputs.
func TestReferences(t *testing.T) {
	d, refs := mainDaemon(t)
	hc, gc := clients(t, d)
	ctx := context.Background()
	for _, ref := range refs {
		t.Run(ref.file, func(t *testing.T) {
			ins := ref.inputs(t)
			for _, how := range []string{"http-binary", "http-json", "grpc"} {
				c, opts := hc, []InferOption{WithRequestID(ref.file)}
				switch how {
				case "http-json":
					opts = append(opts, WithJSON())
				case "grpc":
					c = gc
				}
				res, err := c.Infer(ctx, ref.ID, ins, opts...)
				if err != nil {
					t.Errorf("%s: %v", how, err)
					continue
				}
				if res.ID != ref.file {
					t.Errorf("%s: id %q, want %q", how, res.ID, ref.file)
				}
				checkOutputs(t, how, ref, res)
			}
		})
	}
}

// TestDtypes: every datatype the server serves goes there and back unchanged (an Identity
// model per datatype, clients/go/testdata/identity_<DT>.onnx), over binary HTTP and gRPC bit
// for bit, and over JSON for every type JSON can carry; FP16 and BF16 as JSON are refused by
// the client with the reason.
func TestDtypes(t *testing.T) {
	d, _ := mainDaemon(t)
	hc, gc := clients(t, d)
	ctx := context.Background()
	shape := []int64{2, 3}
	binary := []Tensor{
		NewTensor("x", shape, []bool{true, false, true, true, false, false}),
		NewTensor("x", shape, []int8{-128, -1, 0, 1, 2, 127}),
		NewTensor("x", shape, []int16{-32768, -300, 0, 7, 300, 32767}),
		NewTensor("x", shape, []int32{math.MinInt32, -70000, 0, 5, 70000, math.MaxInt32}),
		NewTensor("x", shape, []int64{math.MinInt64, -1 << 53, -1, 0, 1<<53 + 1, math.MaxInt64}),
		NewTensor("x", shape, []uint8{0, 1, 2, 128, 254, 255}),
		NewTensor("x", shape, []uint16{0, 1, 300, 32768, 65534, 65535}),
		NewTensor("x", shape, []uint32{0, 1, 70000, 1 << 31, math.MaxUint32 - 1, math.MaxUint32}),
		NewTensor("x", shape, []uint64{0, 1, 1<<53 + 1, 1 << 63, math.MaxUint64 - 1, math.MaxUint64}),
		NewFP16("x", shape, []uint16{Float32ToFP16(1), Float32ToFP16(-2.5), 0x7bff, 0x0001, 0x7c00, 0x8000}),
		NewBF16("x", shape, []uint16{Float32ToBF16(1), Float32ToBF16(-2.5), 0x7f7f, 0x0001, 0x7f80, 0x8000}),
		NewTensor("x", shape, []float32{0.1, -1e-38, 3.4028235e38, float32(math.Inf(-1)), float32(math.NaN()), 1e-45}),
		NewTensor("x", shape, []float64{0.1, -1e-308, math.MaxFloat64, math.Inf(1), math.NaN(), 5e-324}),
	}
	// JSON cannot carry NaN or Inf: the floats' finite extremes instead.
	jsonable := slices.Clone(binary)
	jsonable[11] = NewTensor("x", shape, []float32{0.1, -1e-38, 3.4028235e38, -7.5, 16777216, 1e-45})
	jsonable[12] = NewTensor("x", shape, []float64{0.1, -1e-308, math.MaxFloat64, -7.5, 1<<53 + 1, 5e-324})
	for i := range binary {
		dt := binary[i].Datatype
		for _, tr := range []struct {
			name string
			c    *Client
			in   Tensor
			opts []InferOption
		}{{"http", hc, binary[i], nil}, {"grpc", gc, binary[i], nil}, {"json", hc, jsonable[i], []InferOption{WithJSON()}}} {
			res, err := tr.c.Infer(ctx, "identity-"+dt, []Tensor{tr.in}, tr.opts...)
			if tr.name == "json" && (dt == FP16 || dt == BF16) {
				if err == nil || !strings.Contains(err.Error(), `input "x": `+dt+` cannot be sent as JSON`) {
					t.Errorf("%s as JSON: %v", dt, err)
				}
				continue
			}
			if err != nil {
				t.Errorf("%s %s: %v", tr.name, dt, err)
				continue
			}
			out, ok := res.Output("y")
			if !ok || out.Datatype != dt || !slices.Equal(out.Shape, shape) || !bytes.Equal(out.Data, tr.in.Data) {
				t.Errorf("%s %s: y = %s %v %x, want %v %x", tr.name, dt, out.Datatype, out.Shape, out.Data, shape, tr.in.Data)
			}
		}
	}
	// The typed accessors read back what was sent.
	res, err := hc.Infer(ctx, "identity-INT64", []Tensor{binary[4]})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := res.Outputs[0].Int64s(); err != nil || v[4] != 1<<53+1 || v[5] != math.MaxInt64 {
		t.Errorf("Int64s: %v %v", v, err)
	}
	if _, err := res.Outputs[0].Float32s(); err == nil {
		t.Errorf("Float32s of an INT64 output: no error")
	}
	res, err = gc.Infer(ctx, "identity-FP16", []Tensor{binary[9]})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := res.Outputs[0].Float32s(); err != nil || v[0] != 1 || v[1] != -2.5 || v[2] != 65504 || !math.IsInf(float64(v[4]), 1) {
		t.Errorf("Float32s of FP16: %v %v", v, err)
	}
}

// TestSeed: the seed makes 3DBall's sampled actions reproducible through the client, over
// both protocols; without one, two calls sample differently.
func TestSeed(t *testing.T) {
	d, _ := mainDaemon(t)
	hc, gc := clients(t, d)
	ctx := context.Background()
	obs := Obs([]float32{0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875})
	for _, c := range []*Client{hc, gc} {
		p := NewPolicy(c, "3DBall", PolicyOutput("continuous_actions"))
		act := func(opts ...ActOption) []float32 {
			t.Helper()
			a, err := p.Act(ctx, obs, opts...)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.Shape, []int64{2}) {
				t.Fatalf("one observation's action has shape %v, want [2]", a.Shape)
			}
			v, _ := a.Float32s()
			return v
		}
		a, b := act(WithSeed(42)), act(WithSeed(42))
		if !slices.Equal(a, b) {
			t.Errorf("seed 42 twice: %v and %v", a, b)
		}
		if c := act(WithSeed(43)); slices.Equal(a, c) {
			t.Errorf("seeds 42 and 43 sampled the same %v", a)
		}
		if u, v := act(), act(); slices.Equal(u, v) {
			t.Errorf("two unseeded calls sampled the same %v", u)
		}
	}
}

// TestPolicy: Act adds and removes the batch dimension; a batch stays a batch; the values
// equal ONNX Runtime's (peers-mlp-small b1 and b8 references).
func TestPolicy(t *testing.T) {
	d, refs := mainDaemon(t)
	hc, gc := clients(t, d)
	ctx := context.Background()
	for _, c := range []*Client{hc, gc} {
		p := NewPolicy(c, "peers-mlp-small")
		for _, ref := range refs {
			if ref.ID != "peers-mlp-small" {
				continue
			}
			in := ref.inputs(t)[0]
			obs := in
			obs.Name = ""
			if ref.Batch == 1 {
				obs.Shape = obs.Shape[1:] // one observation, no batch dimension
			}
			a, err := p.Act(ctx, obs)
			if err != nil {
				t.Fatal(err)
			}
			wantShape := ref.Outputs[0].Shape
			if ref.Batch == 1 {
				wantShape = wantShape[1:]
			}
			if !slices.Equal(a.Shape, wantShape) {
				t.Errorf("%s: Act shape %v, want %v", ref.file, a.Shape, wantShape)
			}
			a.Shape = ref.Outputs[0].Shape
			checkOutputs(t, "policy", ref, &InferResult{ModelName: ref.ID, ModelVersion: "1.0.0", Outputs: []Tensor{a}})
		}
		if _, err := p.Act(ctx, Obs([]float32{1, 2, 3})); err == nil || !strings.Contains(err.Error(), "400") && !strings.Contains(err.Error(), "[-1,8]") {
			t.Errorf("a wrong observation: %v", err)
		}
		multi := NewPolicy(c, "3DBall")
		if _, err := multi.Act(ctx, Obs(make([]float32, 8))); err == nil || !strings.Contains(err.Error(), "PolicyOutput") {
			t.Errorf("Act on a model of 5 outputs without PolicyOutput: %v", err)
		}
		all, err := multi.ActAll(ctx, []Tensor{NewTensor("obs_0", []int64{8}, make([]float32, 8))})
		if err != nil || len(all) != 5 || !slices.Equal(all["deterministic_continuous_actions"].Shape, []int64{2}) || !slices.Equal(all["version_number"].Shape, []int64{1}) {
			t.Errorf("ActAll: %v %v", all, err)
		}
	}
}

// TestErrors: each class of failure, with the server's own message, over both protocols.
func TestErrors(t *testing.T) {
	d, _ := mainDaemon(t)
	hc, gc := clients(t, d, WithRetries(0))
	ctx := context.Background()
	obs := []Tensor{NewTensor("obs", []int64{1, 8}, make([]float32, 8))}
	for _, tr := range []struct {
		name string
		c    *Client
	}{{"http", hc}, {"grpc", gc}} {
		_, err := tr.c.Infer(ctx, "peers-mlp-small", []Tensor{NewTensor("obs", []int64{1, 9}, make([]float32, 9))})
		var ia *InvalidArgumentError
		if !errors.As(err, &ia) || !errors.Is(err, ErrInvalidArgument) || !strings.Contains(ia.Message, `input "obs"`) || !strings.Contains(ia.Message, "[-1,8]") || !strings.Contains(ia.Message, "[1,9]") {
			t.Errorf("%s: wrong shape: %v", tr.name, err)
		}
		_, err = tr.c.Infer(ctx, "nope", obs)
		var nf *NotFoundError
		if !errors.As(err, &nf) || !errors.Is(err, ErrNotFound) || !strings.Contains(nf.Message, `unknown model "nope"`) {
			t.Errorf("%s: unknown model: %v", tr.name, err)
		}
		if _, err := tr.c.Metadata(ctx, "peers-mlp-small", "9.9.9"); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: unknown version: %v", tr.name, err)
		}
		_, err = tr.c.Infer(ctx, invalidID, []Tensor{NewTensor("obs_0", []int64{1, 20}, make([]float32, 20)), NewTensor("action_masks", []int64{1, 3}, []float32{1, 1, 1})})
		var un *UnavailableError
		if !errors.As(err, &un) || !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOverloaded) || un.Message == "" {
			t.Errorf("%s: invalid model: %v", tr.name, err)
		}
		if ok, err := tr.c.ModelReady(ctx, invalidID, ""); ok || err != nil {
			t.Errorf("%s: ModelReady(invalid) = %v %v", tr.name, ok, err)
		}
		if ok, err := tr.c.ModelReady(ctx, "peers-mlp-small", "1.0.0"); !ok || err != nil {
			t.Errorf("%s: ModelReady = %v %v", tr.name, ok, err)
		}
		if ok, err := tr.c.Live(ctx); !ok || err != nil {
			t.Errorf("%s: Live = %v %v", tr.name, ok, err)
		}
		if ok, err := tr.c.Ready(ctx); ok || err != nil { // the invalid model is not ready
			t.Errorf("%s: Ready = %v %v", tr.name, ok, err)
		}
		cctx, cancel := context.WithTimeout(ctx, time.Microsecond)
		time.Sleep(time.Millisecond)
		_, err = tr.c.Infer(cctx, "peers-mlp-small", obs)
		cancel()
		var te *TimeoutError
		if !errors.As(err, &te) || !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("%s: deadline passed: %v", tr.name, err)
		}
		m, err := tr.c.Metadata(ctx, "peers-mlp-small", "")
		if err != nil || len(m.Inputs) != 1 || m.Inputs[0].Name != "obs" || !slices.Equal(m.Inputs[0].Shape, []int64{-1, 8}) {
			t.Errorf("%s: metadata %+v %v", tr.name, m, err)
		}
		cfg, err := tr.c.Config(ctx, "peers-mlp-small", "")
		if err != nil || cfg["name"] != "peers-mlp-small" {
			t.Errorf("%s: config %v %v", tr.name, cfg, err)
		}
	}
	// Nothing listens: a connection error, retried (it never ran) and then reported.
	closed := freeAddr(t)
	for _, url := range []string{"http://" + closed, "grpc://" + closed} {
		c, err := New(url, WithRetries(2), WithBackoff(time.Millisecond, 5*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		_, err = c.Infer(ctx, "m", obs)
		var ce *ConnectError
		if !errors.As(err, &ce) || !errors.Is(err, ErrConnect) || ce.MayHaveRun {
			t.Errorf("%s: %v (%T)", url, err, err)
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("%s: took %v", url, time.Since(start))
		}
		c.Close()
	}
}

// TestOptionsReachTheServer: the request options arrive as the parameters they name (a value
// the server refuses comes back refused, naming it), a pinned policy version is the one
// asked for, the call bound ends the call, and dial options are taken.
func TestOptionsReachTheServer(t *testing.T) {
	d, _ := mainDaemon(t)
	hc, gc := clients(t, d, WithRetries(0), WithGRPCDialOptions(grpc.WithUserAgent("policyd-client-test")))
	ctx := context.Background()
	obs := []Tensor{NewTensor("obs", []int64{1, 8}, make([]float32, 8))}
	for _, tr := range []struct {
		name string
		c    *Client
	}{{"http", hc}, {"grpc", gc}} {
		if _, err := tr.c.Infer(ctx, "peers-mlp-small", obs, WithPriority(1), WithTimeout(time.Second)); err != nil {
			t.Errorf("%s: valid options: %v", tr.name, err)
		}
		for _, c := range []struct {
			opt  InferOption
			want string
		}{
			{WithPriority(99), "priority 99 is out of range"},
			{WithParameter("priority", uint64(98)), "priority 98 is out of range"},
			{WithTimeout(2 * time.Hour), "timeout"},
		} {
			_, err := tr.c.Infer(ctx, "peers-mlp-small", obs, c.opt)
			var ia *InvalidArgumentError
			if !errors.As(err, &ia) || !strings.Contains(ia.Message, c.want) {
				t.Errorf("%s: want the server's refusal naming %q, got %v", tr.name, c.want, err)
			}
		}
		_, err := NewPolicy(tr.c, "peers-mlp-small", PolicyVersion("9.9.9")).Act(ctx, NewTensor("", []int64{8}, make([]float32, 8)))
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "9.9.9") {
			t.Errorf("%s: a policy pinned to 9.9.9: %v", tr.name, err)
		}
	}
	for _, url := range []string{d.url, "grpc://" + d.grpcAddr} {
		c, err := New(url, WithRetries(0), WithRequestTimeout(time.Nanosecond))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Infer(ctx, "peers-mlp-small", obs); !errors.Is(err, ErrTimeout) {
			t.Errorf("%s: a call bound of 1ns: %v", url, err)
		}
		c.Close()
	}
}

// TestConcurrent: one client from 16 goroutines (run under -race), answers equal ONNX
// Runtime's.
func TestConcurrent(t *testing.T) {
	d, refs := mainDaemon(t)
	hc, gc := clients(t, d)
	var ref reference
	for _, r := range refs {
		if r.ID == "peers-mlp-small" && r.Batch == 8 {
			ref = r
		}
	}
	ins := ref.inputs(t)
	var wg sync.WaitGroup
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := hc
			if g%2 == 1 {
				c = gc
			}
			for i := 0; i < 20; i++ {
				res, err := c.Infer(context.Background(), ref.ID, ins)
				if err != nil {
					t.Error(err)
					return
				}
				checkOutputs(t, fmt.Sprint("goroutine ", g), ref, res)
			}
		}()
	}
	wg.Wait()
}
