package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/metrics"
	"github.com/policyd/policyd/repository"
)

// shadowOf returns an Options.Shadow naming version at rate for every model, switched by on.
func shadowOf(version string, rate float64, on *atomic.Bool) func(string) (string, float64, bool) {
	return func(string) (string, float64, bool) {
		if on != nil && !on.Load() {
			return "", 0, false
		}
		return version, rate, true
	}
}

// waitShadow waits until the shadow (model, primary, shadow) has accounted for n requests.
func waitShadow(t *testing.T, s *Server, model, primary, shadow string, n int64) ShadowReport {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		r := s.ShadowReport(model, primary, shadow)
		if r.Samples+r.Errors+r.Dropped+r.Skipped >= n {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("shadow %s %s→%s: %+v after 20s, want %d requests accounted for", model, primary, shadow, r, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// offsetPolicy is policyModel(version) whose action is 2*obs + off and whose positive output
// is flipped for the elements of obs listed in flip (by their value).
func offsetPolicy(version string, off float32, flip float32) *fakeModel {
	m := policyModel(version)
	base := m.run
	m.run = func(in []bridge.Tensor) []bridge.Tensor {
		out := base(in)
		for i := 0; i < len(out[0].Data); i += 4 {
			f := math.Float32frombits(binary.LittleEndian.Uint32(out[0].Data[i:]))
			binary.LittleEndian.PutUint32(out[0].Data[i:], math.Float32bits(f+off))
			if math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[i:])) == flip {
				out[2].Data[i/4] ^= 1
			}
		}
		return out
	}
	return m
}

// The report of a shadow that answers 2*obs+0.5 instead of 2*obs, and flips one boolean of
// four, is what the arithmetic says: mean and max absolute difference 0.5, relative
// difference 0.5/max(|2x|,|2x+0.5|) at its largest for the smallest |x|, agreement 3/4 over
// positive and index; NaN and ±Inf equal on both sides differ by 0. The metrics say the same.
func TestShadowReportArithmetic(t *testing.T) {
	reg := newFakeRegistry(policyModel("1"), offsetPolicy("2", 0.5, 3))
	preg := prometheus.NewRegistry()
	mets, err := metrics.NewShadow(preg)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, reg, Options{Shadow: shadowOf("2", 1, nil), ShadowMetrics: mets, ShadowCPUShare: noShadowBudget})
	for range 10 {
		r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,-2,3,4]}]}`))
		if r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	r := waitShadow(t, ts.srv, "policy", "1", "2", 10)
	if r.Samples != 10 || r.Errors != 0 || r.Dropped != 0 {
		t.Fatalf("report %+v, want 10 samples", r)
	}
	// action: 4 elements, |diff| 0.5 each; special: 3 equal (NaN, +Inf, -Inf): 7 floating
	// elements, sum 2.0 per request.
	if want := 2.0 / 7; math.Abs(r.MeanAbs-want) > 1e-12 {
		t.Errorf("MeanAbs %v, want %v", r.MeanAbs, want)
	}
	if r.MaxAbs != 0.5 {
		t.Errorf("MaxAbs %v, want 0.5", r.MaxAbs)
	}
	if want := 0.5 / 2.5; math.Abs(r.MaxRel-want) > 1e-12 { // x=1: 2 vs 2.5
		t.Errorf("MaxRel %v, want %v", r.MaxRel, want)
	}
	// index (1 element, equal) and positive (4 elements, one flipped): 4/5.
	if want := 4.0 / 5; math.Abs(r.Agreement-want) > 1e-12 {
		t.Errorf("Agreement %v, want %v", r.Agreement, want)
	}
	if r.NonFinite != 0 {
		t.Errorf("NonFinite %d, want 0", r.NonFinite)
	}
	sts := ts.srv.ShadowStatuses()
	if len(sts) != 1 || len(sts[0].Outputs) != 4 {
		t.Fatalf("statuses %+v", sts)
	}
	for _, o := range sts[0].Outputs {
		switch o.Output {
		case "action":
			if o.MeanAbs != 0.5 || o.Elements != 40 || o.Discrete {
				t.Errorf("action %+v", o)
			}
		case "positive":
			if o.Agreement != 0.75 || !o.Discrete {
				t.Errorf("positive %+v", o)
			}
		case "index", "special":
			if o.Agreement != 1 || o.MaxAbs != 0 {
				t.Errorf("%s %+v", o.Output, o)
			}
		}
	}
	text := gatherShadow(t, preg)
	for _, want := range []string{
		`policyd_shadow_requests_total{model=policy,primary=1,result=compared,shadow=2} 10`,
		`policyd_shadow_requests_total{model=policy,primary=1,result=dropped,shadow=2} 0`,
		`policyd_shadow_abs_diff{model=policy,output=action,primary=1,shadow=2} count=10 sum=5`,
		`policyd_shadow_abs_diff{model=policy,output=special,primary=1,shadow=2} count=10 sum=0`,
		`policyd_shadow_agreement_ratio{model=policy,output=positive,primary=1,shadow=2} 0.75`,
		`policyd_shadow_agreement_ratio{model=policy,output=index,primary=1,shadow=2} 1`,
		`policyd_shadow_mean_abs_diff{model=policy,output=action,primary=1,shadow=2} 0.5`,
	} {
		if !strings.Contains(text, want+"\n") {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}

	ts.srv.ResetShadow("policy", "1", "2")
	if r := ts.srv.ShadowReport("policy", "1", "2"); r.Samples != 0 || r.MaxAbs != 0 || r.Agreement != 1 {
		t.Errorf("after reset %+v", r)
	}
}

// gatherShadow writes the series of reg one a line: name{labels} value, or for a histogram
// name{labels} count=N sum=S.
func gatherShadow(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			var ls []string
			for _, l := range m.Label {
				ls = append(ls, l.GetName()+"="+l.GetValue())
			}
			fmt.Fprintf(&b, "%s{%s} ", mf.GetName(), strings.Join(ls, ","))
			switch {
			case m.Histogram != nil:
				fmt.Fprintf(&b, "count=%d sum=%v\n", m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum())
			case m.Counter != nil:
				fmt.Fprintf(&b, "%v\n", m.Counter.GetValue())
			default:
				fmt.Fprintf(&b, "%v\n", m.Gauge.GetValue())
			}
		}
	}
	return b.String()
}

// A shadow identical to the primary reports zero difference and full agreement.
func TestShadowIdenticalIsZero(t *testing.T) {
	reg := newFakeRegistry(policyModel("1"), policyModel("2"))
	ts := startServer(t, reg, Options{Shadow: shadowOf("2", 1, nil), ShadowCPUShare: noShadowBudget})
	for i := range 5 {
		body := fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[2,4],"data":[%d,-2,3,4,0,0,-1e-30,7]}]}`, i)
		if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(body)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	r := waitShadow(t, ts.srv, "policy", "1", "2", 5)
	if r.Samples != 5 || r.MeanAbs != 0 || r.MaxAbs != 0 || r.MaxRel != 0 || r.Agreement != 1 || r.Errors != 0 {
		t.Errorf("report %+v, want 5 samples, 0 difference, agreement 1", r)
	}
}

// A shadow that is slow and a small queue: under many concurrent requests the shadow drops
// work, and every primary request is answered 200, none of them slowed by the shadow.
func TestShadowOverloadDropsShadowOnly(t *testing.T) {
	slow := policyModel("2")
	slow.hook = func(ctx context.Context) { time.Sleep(20 * time.Millisecond) }
	primary := policyModel("1")
	reg := newFakeRegistry(primary, slow)
	ts := startServer(t, reg, Options{Shadow: shadowOf("2", 1, nil), ShadowQueueLen: 2})
	const conns, each = 16, 25
	var wg sync.WaitGroup
	var failed atomic.Int64
	var maxLat atomic.Int64
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range each {
				start := time.Now()
				r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`))
				d := int64(time.Since(start))
				for old := maxLat.Load(); d > old && !maxLat.CompareAndSwap(old, d); old = maxLat.Load() {
				}
				if r.status != 200 {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if n := failed.Load(); n != 0 {
		t.Errorf("%d primary requests failed", n)
	}
	if st := primary.stats.Snapshot(); st.Fail.Count != 0 || st.Success.Count != conns*each {
		t.Errorf("primary stats: %d ok, %d failed; want %d ok", st.Success.Count, st.Fail.Count, conns*each)
	}
	r := waitShadow(t, ts.srv, "policy", "1", "2", conns*each)
	if r.Dropped == 0 || r.Samples+r.Dropped != conns*each || r.Errors != 0 {
		t.Errorf("report %+v: want drops > 0 and samples + drops = %d", r, conns*each)
	}
	t.Logf("%d compared, %d dropped; slowest primary answer %v", r.Samples, r.Dropped, time.Duration(maxLat.Load()))
}

// Sampling is by sequence: at rate 0.5, every step of a sequence is shadowed or none is,
// and about half of the sequences are.
func TestShadowSamplesBySequence(t *testing.T) {
	sh := &shadows{choose: shadowOf("2", 0.5, nil)}
	sh.jobs.New = func() any { return newShadowJob() }
	m := policyModel("1")
	store := &engines.Sequences{}
	sampled := 0
	const n = 2000
	for id := uint64(1); id <= n; id++ {
		first := false
		for step := range 4 {
			opts := engines.RunOptions{Sequence: engines.SequenceStep{Store: store, ID: engines.SequenceID{Num: id}, Start: step == 0}}
			j := sh.sample(m, &opts)
			if step == 0 {
				first = j != nil
				if first {
					sampled++
				}
			} else if (j != nil) != first {
				t.Fatalf("sequence %d: step %d sampled %v, step 0 %v", id, step, j != nil, first)
			}
			if j != nil {
				if !opts.Seeded || opts.Seed != j.seed {
					t.Fatalf("sampled step not seeded alike: opts %v/%d, job %d", opts.Seeded, opts.Seed, j.seed)
				}
				sh.put(j)
			}
		}
	}
	if sampled < n*45/100 || sampled > n*55/100 {
		t.Errorf("%d of %d sequences sampled at rate 0.5", sampled, n)
	}
}

// A request not sampled costs no allocation; a seeded one keeps its seed when sampled.
func TestShadowNotSampledAllocatesNothing(t *testing.T) {
	sh := &shadows{choose: shadowOf("2", 0, nil)}
	sh.jobs.New = func() any { return newShadowJob() }
	m := policyModel("1")
	opts := engines.RunOptions{}
	if n := testing.AllocsPerRun(1000, func() {
		if sh.sample(m, &opts) != nil {
			t.Fatal("sampled at rate 0")
		}
	}); n != 0 {
		t.Errorf("%v allocations per request not sampled", n)
	}
	sh.choose = shadowOf("1", 1, nil) // the primary itself: never shadowed
	if sh.sample(m, &opts) != nil {
		t.Error("a version shadowed by itself")
	}
	sh.choose = shadowOf("2", 1, nil)
	opts = engines.RunOptions{Seed: 42, Seeded: true}
	j := sh.sample(m, &opts)
	if j == nil || j.seed != 42 || opts.Seed != 42 {
		t.Errorf("seeded request: job %v", j)
	}
}

// A shadow with another signature, or one that fails, is counted as an error with the reason;
// the primary answers as always.
func TestShadowErrors(t *testing.T) {
	other := multiModel()
	other.name, other.version = "policy", "3"
	failing := policyModel("2")
	failing.err = fmt.Errorf("engine exploded")
	reg := newFakeRegistry(policyModel("1"), failing, other)
	var version atomic.Value
	version.Store("2")
	ts := startServer(t, reg, Options{Shadow: func(string) (string, float64, bool) { return version.Load().(string), 1, true }, ShadowCPUShare: noShadowBudget})
	send := func() {
		t.Helper()
		if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	send()
	waitShadow(t, ts.srv, "policy", "1", "2", 1)
	version.Store("3")
	send()
	waitShadow(t, ts.srv, "policy", "1", "3", 1)
	version.Store("9")
	send()
	waitShadow(t, ts.srv, "policy", "1", "9", 1)
	sts := ts.srv.ShadowStatuses()
	want := map[string]string{"2": "engine exploded", "3": "has 11 inputs", "9": "unknown version"}
	if len(sts) != 3 {
		t.Fatalf("statuses %+v", sts)
	}
	for _, st := range sts {
		if st.Errors != 1 || !strings.Contains(st.LastError, want[st.Shadow]) {
			t.Errorf("shadow %s: %d errors, last %q; want 1 naming %q", st.Shadow, st.Errors, st.LastError, want[st.Shadow])
		}
	}
}

// Sequences under shadow overload: a slow shadow drops some steps. The shadow never goes on
// with a state that missed a step: it ends such a sequence on its side and skips the rest of
// it, so every step it does compare agrees exactly with the primary (both versions are the
// same accumulating policy, whose outputs depend on every earlier step).
func TestShadowSequenceDropEndsShadowSequence(t *testing.T) {
	for _, workers := range []int{1, 2} {
		t.Run(fmt.Sprintf("workers=%d", workers), func(t *testing.T) { testShadowSequenceDrop(t, workers) })
	}
}

func testShadowSequenceDrop(t *testing.T, workers int) {
	primary := recurrentModel(t, engines.SequenceSpec{})
	shadow := recurrentModel(t, engines.SequenceSpec{})
	shadow.version = "2"
	shadow.hook = func(context.Context) { time.Sleep(300 * time.Microsecond) }
	ts := startServer(t, newFakeRegistry(primary, shadow), Options{Shadow: shadowOf("2", 1, nil), ShadowQueueLen: 2, ShadowWorkers: workers, ShadowCPUShare: noShadowBudget})
	const seqs, steps = 8, 12
	var wg sync.WaitGroup
	for s := range seqs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range steps {
				r := ts.do(t, "POST", "/v2/models/rnn/versions/1/infer", seqBody(100+s, k == 0, k == steps-1, float32(k+1), float32(s)))
				if r.status != 200 {
					t.Errorf("sequence %d step %d: %d %s", s, k, r.status, r.body)
				}
				time.Sleep(time.Duration(s) * 100 * time.Microsecond) // some sequences fast, some slow
			}
		}()
	}
	wg.Wait()
	r := waitShadow(t, ts.srv, "rnn", "1", "2", seqs*steps)
	if r.Errors != 0 || r.Dropped == 0 || r.Samples == 0 || r.Skipped == 0 {
		t.Errorf("report %+v: want drops, skipped steps, comparisons and no errors", r)
	}
	if r.MaxAbs != 0 {
		t.Errorf("a shadow step ran on a state that missed a step: max difference %v (%+v)", r.MaxAbs, r)
	}
	t.Logf("%d compared, %d dropped, %d skipped", r.Samples, r.Dropped, r.Skipped)
}

// The shadow follows every front end of the inference path: gRPC ModelInfer (typed and raw)
// and TensorFlow Serving's :predict are shadowed like KServe v2 over HTTP.
func TestShadowFrontEnds(t *testing.T) {
	reg := newFakeRegistry(policyModel("1"), offsetPolicy("2", 0.25, 99))
	gs := startGRPC(t, reg, Options{Shadow: shadowOf("2", 1, nil), ShadowCPUShare: noShadowBudget})
	req := obsRequest("1", 1, 2, 3, 4)
	if _, err := gs.client.ModelInfer(grpcCtx(t), req); err != nil {
		t.Fatal(err)
	}
	raw := obsRequest("1", 0, 0, 0, 0)
	raw.Inputs[0].Contents = nil
	raw.RawInputContents = [][]byte{f32bytes(1, 2, 3, 4)}
	if _, err := gs.client.ModelInfer(grpcCtx(t), raw); err != nil {
		t.Fatal(err)
	}
	r := waitShadow(t, gs.srv, "policy", "1", "2", 2)
	if r.Samples != 2 || r.MaxAbs != 0.25 {
		t.Errorf("gRPC: %+v, want 2 samples with max difference 0.25", r)
	}

	reg = newFakeRegistry(policyModel("1"), offsetPolicy("2", 0.25, 99))
	ts := startServer(t, reg, Options{Shadow: shadowOf("2", 1, nil), ShadowCPUShare: noShadowBudget})
	if resp := ts.do(t, "POST", "/v1/models/policy/versions/1:predict", []byte(`{"instances":[[1,2,3,4]]}`)); resp.status != 200 {
		t.Fatalf("predict: %d %s", resp.status, resp.body)
	}
	if r := waitShadow(t, ts.srv, "policy", "1", "2", 1); r.Samples != 1 || r.MaxAbs != 0.25 {
		t.Errorf("predict: %+v, want 1 sample with max difference 0.25", r)
	}
}

// The whole HTTP handler with a shadow configured but the request not sampled allocates as
// often as without a shadow: the primary's hot path pays nothing for a request not sampled.
func TestShadowHandlerNotSampledAllocatesNothingMore(t *testing.T) {
	if grpcRaceEnabled {
		t.Skip("the race detector adds allocations (the counts differ by one run to run)")
	}
	body := []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)
	allocs := func(opts Options) float64 {
		m := policyModel("1")
		m.keepOutputs = true
		outs := m.run([]bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 4}, Data: f32bytes(1, 2, 3, 4)}})
		m.run = func([]bridge.Tensor) []bridge.Tensor { return outs }
		s := New(newFakeRegistry(m, policyModel("2")), nil, opts)
		defer s.Shutdown(context.Background())
		h := s.Handler()
		var ctx fasthttp.RequestCtx
		return testing.AllocsPerRun(200, func() {
			ctx.Request.Reset()
			ctx.Response.Reset()
			ctx.Request.Header.SetMethod("POST")
			ctx.Request.SetRequestURI("/v2/models/policy/versions/1/infer")
			ctx.Request.SetBody(body)
			h(&ctx)
			if ctx.Response.StatusCode() != 200 {
				t.Fatalf("%d %s", ctx.Response.StatusCode(), ctx.Response.Body())
			}
		})
	}
	without := allocs(Options{})
	notSampled := allocs(Options{Shadow: shadowOf("2", 0, nil)})
	if notSampled > without {
		t.Errorf("%.1f allocations per request with a shadow that samples nothing, %.1f without", notSampled, without)
	}
	t.Logf("allocations per request: %.1f without a shadow, %.1f with a shadow not sampling, %.1f sampling every request (the shadow worker's included)",
		without, notSampled, allocs(Options{Shadow: shadowOf("2", 1, nil), ShadowCPUShare: noShadowBudget}))
}

// BenchmarkShadowHandler is the whole HTTP handler for a batch-1 FP32[1,4] request on a fake
// engine: without a shadow, with one that samples nothing, and sampling every request (the
// copy of inputs and outputs and the hand-over; the shadow's own run happens on its worker,
// which this benchmark's ns/op includes only as the CPU it takes from the loop).
//
//	go test -run '^$' -bench BenchmarkShadowHandler ./server/
func BenchmarkShadowHandler(b *testing.B) {
	body := []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)
	for _, c := range []struct {
		name   string
		shadow func(string) (string, float64, bool)
	}{{"none", nil}, {"not-sampled", shadowOf("2", 0, nil)}, {"sampled", shadowOf("2", 1, nil)}} {
		b.Run(c.name, func(b *testing.B) {
			m := policyModel("1")
			m.keepOutputs = true
			outs := m.run([]bridge.Tensor{{DType: bridge.Float32, Shape: []int64{1, 4}, Data: f32bytes(1, 2, 3, 4)}})
			m.run = func([]bridge.Tensor) []bridge.Tensor { return outs }
			sh := policyModel("2")
			sh.keepOutputs = true
			sh.run = m.run
			s := New(newFakeRegistry(m, sh), nil, Options{Shadow: c.shadow, ShadowQueueLen: 1024, ShadowCPUShare: noShadowBudget})
			defer s.Shutdown(context.Background())
			h := s.Handler()
			b.ReportAllocs()
			benchInfer(b, h, "/v2/models/policy/versions/1/infer", body)
		})
	}
}

// A shadow whose inputs are named otherwise is an error naming the input.
func TestShadowInputNamesDiffer(t *testing.T) {
	other := policyModel("2")
	other.inputs = []bridge.IOInfo{{Name: "observation", DType: bridge.Float32, Shape: []int64{-1, 4}, BatchDim: 0}}
	ts := startServer(t, newFakeRegistry(policyModel("1"), other), Options{Shadow: shadowOf("2", 1, nil), ShadowCPUShare: noShadowBudget})
	if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	waitShadow(t, ts.srv, "policy", "1", "2", 1)
	if st := ts.srv.ShadowStatuses(); len(st) != 1 || st[0].Errors != 1 || !strings.Contains(st[0].LastError, `input 0 is "observation", the primary's is "obs"`) {
		t.Errorf("statuses %+v", st)
	}
}

// The shadow starts sequences on the shadow version only up to half its max_sequences, so
// that version's own traffic keeps the rest: beyond, a sampled sequence is skipped whole.
func TestShadowSequencesTakeHalfTheShadowsTable(t *testing.T) {
	primary := recurrentModel(t, engines.SequenceSpec{})
	shadow := recurrentModel(t, engines.SequenceSpec{MaxSequences: 4})
	shadow.version = "2"
	shadow.serving = &repository.Serving{Sequence: &engines.SequenceSpec{MaxSequences: 4}}
	ts := startServer(t, newFakeRegistry(primary, shadow), Options{Shadow: shadowOf("2", 1, nil), ShadowCPUShare: noShadowBudget})
	for id := 1; id <= 5; id++ { // five sequences started, none ended
		if r := ts.do(t, "POST", "/v2/models/rnn/versions/1/infer", seqBody(id, true, false, 1, 2)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		waitShadow(t, ts.srv, "rnn", "1", "2", int64(id))
	}
	for id := 1; id <= 5; id++ { // a second step of each
		if r := ts.do(t, "POST", "/v2/models/rnn/versions/1/infer", seqBody(id, false, false, 3, 4)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	r := waitShadow(t, ts.srv, "rnn", "1", "2", 10)
	if r.Samples != 4 || r.Skipped != 6 || r.Errors != 0 || r.MaxAbs != 0 {
		t.Errorf("report %+v: want 2 sequences compared at both steps, 3 skipped at both", r)
	}
	if n := shadow.seqs.Len(); n != 2 {
		t.Errorf("the shadow keeps %d sequences on a version of max_sequences 4, want 2", n)
	}
}
