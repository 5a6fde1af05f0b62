package server

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

type statsDuration struct {
	Count *uint64 `json:"count"`
	NS    *uint64 `json:"ns"`
}

type modelStat struct {
	Name           string                       `json:"name"`
	Version        string                       `json:"version"`
	LastInference  *int64                       `json:"last_inference"`
	InferenceCount *uint64                      `json:"inference_count"`
	ExecutionCount *uint64                      `json:"execution_count"`
	InferenceStats map[string]statsDuration     `json:"inference_stats"`
	BatchStats     []map[string]json.RawMessage `json:"batch_stats"`
}

func getStats(t *testing.T, ts *testServer, path string) []modelStat {
	t.Helper()
	r := ts.do(t, "GET", path, nil)
	if r.status != 200 || r.header["Content-Type"] != "application/json" {
		t.Fatalf("GET %s = %d %s", path, r.status, r.body)
	}
	var body struct {
		ModelStats []modelStat `json:"model_stats"`
	}
	if err := json.Unmarshal(r.body, &body); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, r.body)
	}
	for _, ms := range body.ModelStats {
		if ms.LastInference == nil || ms.InferenceCount == nil || ms.ExecutionCount == nil {
			t.Errorf("%s@%s lacks a count: %s", ms.Name, ms.Version, r.body)
		}
		for _, k := range []string{"success", "fail", "queue", "compute_input", "compute_infer", "compute_output"} {
			if d, ok := ms.InferenceStats[k]; !ok || d.Count == nil || d.NS == nil {
				t.Errorf("%s@%s: inference_stats.%s missing or incomplete: %s", ms.Name, ms.Version, k, r.body)
			}
		}
		if len(ms.InferenceStats) != 6 {
			t.Errorf("inference_stats has %d keys, want 6", len(ms.InferenceStats))
		}
	}
	return body.ModelStats
}

func TestStatsEndpoint(t *testing.T) {
	reg := testRegistry()
	ts := startServer(t, reg, Options{})
	body := []byte(`{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	for range 3 {
		if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", body); r.status != 200 {
			t.Fatalf("infer = %d %s", r.status, r.body)
		}
	}
	if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(`{"inputs":[]}`)); r.status != 400 {
		t.Fatalf("bad infer = %d %s", r.status, r.body)
	}
	// Record a run as the engines would, to see batch_stats encoded.
	p1 := reg.models["policy"][0]
	p1.stats.RecordRequest(true, 0, time.Now())

	all := getStats(t, ts, "/v2/models/stats")
	if len(all) != 6 {
		t.Fatalf("%d model_stats for every version, want 6", len(all))
	}
	vs := getStats(t, ts, "/v2/models/policy/stats")
	if len(vs) != 3 || vs[0].Version != "1" || vs[2].Version != "3" {
		t.Fatalf("policy stats: %+v", vs)
	}
	one := getStats(t, ts, "/v2/models/policy/versions/1/stats")
	if len(one) != 1 || one[0].Name != "policy" || one[0].Version != "1" {
		t.Fatalf("policy@1 stats: %+v", one)
	}
	is := one[0].InferenceStats
	if *is["success"].Count != 4 || *is["fail"].Count != 1 || *is["success"].NS == 0 {
		t.Errorf("success %d (%dns), fail %d; want 4 (>0ns) and 1", *is["success"].Count, *is["success"].NS, *is["fail"].Count)
	}
	if now := time.Now().UnixMilli(); *one[0].LastInference < now-60_000 || *one[0].LastInference > now {
		t.Errorf("last_inference %d, now %d", *one[0].LastInference, now)
	}
	if two := getStats(t, ts, "/v2/models/policy/versions/2/stats"); *two[0].InferenceStats["success"].Count != 0 {
		t.Errorf("version 2 counted requests of version 1")
	}
	if r := ts.do(t, "GET", "/v2/models/nope/stats", nil); r.status != 404 {
		t.Errorf("unknown model: %d %s", r.status, r.body)
	}
	if r := ts.do(t, "GET", "/v2/models/policy/versions/9/stats", nil); r.status != 404 {
		t.Errorf("unknown version: %d %s", r.status, r.body)
	}
}

func TestStatsJSONShape(t *testing.T) {
	st := engines.StatsSnapshot{
		LastInference: 1700000000123, InferenceCount: 5, ExecutionCount: 2,
		Success: engines.Duration{Count: 3, NS: 30}, Fail: engines.Duration{Count: 1, NS: 10},
		Queue: engines.Duration{Count: 4, NS: 40}, ComputeInput: engines.Duration{Count: 4, NS: 4},
		ComputeInfer: engines.Duration{Count: 4, NS: 400}, ComputeOutput: engines.Duration{Count: 4, NS: 8},
		Batches: []engines.BatchStats{{BatchSize: 1, ComputeInfer: engines.Duration{Count: 1, NS: 100}}, {BatchSize: 4,
			ComputeInput: engines.Duration{Count: 1, NS: 4}, ComputeInfer: engines.Duration{Count: 1, NS: 300}, ComputeOutput: engines.Duration{Count: 1, NS: 8}}},
	}
	got := string(appendModelStats(nil, "p", "1.0.0", st))
	want := `{"name":"p","version":"1.0.0","last_inference":1700000000123,"inference_count":5,"execution_count":2,` +
		`"inference_stats":{"success":{"count":3,"ns":30},"fail":{"count":1,"ns":10},"queue":{"count":4,"ns":40},` +
		`"compute_input":{"count":4,"ns":4},"compute_infer":{"count":4,"ns":400},"compute_output":{"count":4,"ns":8}},` +
		`"batch_stats":[{"batch_size":1,"compute_input":{"count":0,"ns":0},"compute_infer":{"count":1,"ns":100},"compute_output":{"count":0,"ns":0}},` +
		`{"batch_size":4,"compute_input":{"count":1,"ns":4},"compute_infer":{"count":1,"ns":300},"compute_output":{"count":1,"ns":8}}]}`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	if !json.Valid([]byte(got)) {
		t.Error("not valid JSON")
	}
}

// slowRunner is a one-worker runner with a bounded queue, like engines.Pool: each run takes
// delay; a request that finds the queue full fails at once with ErrOverloaded; one whose ctx
// ends while queued leaves with ctx.Err() and never runs.
type slowRunner struct {
	queue chan struct{}
	work  sync.Mutex
	delay time.Duration
	out   func(in []bridge.Tensor) []bridge.Tensor
	runs  atomic.Int64
}

func (r *slowRunner) Do(ctx context.Context, in []bridge.Tensor, fn func([]bridge.Tensor) error) error {
	select {
	case r.queue <- struct{}{}:
	default:
		return fmt.Errorf("model %q: %w", "slow", engines.ErrOverloaded)
	}
	defer func() { <-r.queue }()
	got := make(chan struct{})
	go func() { r.work.Lock(); close(got) }()
	select {
	case <-got:
	case <-ctx.Done():
		go func() { <-got; r.work.Unlock() }()
		return ctx.Err()
	}
	defer r.work.Unlock()
	time.Sleep(r.delay)
	r.runs.Add(1)
	return fn(r.out(in))
}

func TestOverload(t *testing.T) {
	const queueLen, delay, timeout = 8, 20 * time.Millisecond, 100 * time.Millisecond
	runner := &slowRunner{queue: make(chan struct{}, queueLen), delay: delay}
	slow := policyModel("1")
	slow.name, slow.doFn, runner.out = "slow", runner.Do, slow.run
	ts := startServer(t, newFakeRegistry(slow), Options{QueueTimeout: timeout})

	body := []byte(`{"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	runtime.GC()
	baseG := runtime.NumGoroutine()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	const n = 10 * queueLen
	type answer struct {
		status  int
		retry   string
		msg     string
		elapsed time.Duration
	}
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			start := time.Now()
			r := ts.do(t, "POST", "/v2/models/slow/infer", body)
			a := answer{status: r.status, retry: r.header["Retry-After"], elapsed: time.Since(start)}
			if r.status != 200 {
				a.msg = errorMessage(t, r)
			}
			answers[i] = a
		})
	}
	wg.Wait()
	var ok, full, timedOut int
	for _, a := range answers {
		switch {
		case a.status == 200:
			ok++
		case a.status == 503 && a.retry == "1" && containsAll(a.msg, "queue full"):
			full++
			if a.elapsed > delay*queueLen {
				t.Errorf("overloaded answer took %v: not immediate", a.elapsed)
			}
		case a.status == 503 && a.retry == "1" && containsAll(a.msg, "timed out", "queue timeout of 100ms"):
			timedOut++
		default:
			t.Errorf("unexpected answer %+v", a)
		}
	}
	t.Logf("%d requests: %d served, %d refused (queue full), %d timed out in the queue", n, ok, full, timedOut)
	// With every request arriving at once, all but queueLen+1 are refused; on a loaded machine
	// the burst spreads over a few delays and a few more get into the queue as it drains, so the
	// bound leaves room for two more queues' worth (still far from "nothing refused").
	if minFull := n - 3*queueLen; full < minFull || timedOut == 0 || ok == 0 {
		t.Errorf("want at least %d refused, some timed out and some served", minFull)
	}
	if int(runner.runs.Load()) != ok {
		t.Errorf("%d runs for %d served requests: timed-out requests ran", runner.runs.Load(), ok)
	}
	if st := slow.stats.Snapshot(); st.Success.Count != uint64(ok) || st.Fail.Count != uint64(full+timedOut) {
		t.Errorf("stats: success %d fail %d, want %d and %d", st.Success.Count, st.Fail.Count, ok, full+timedOut)
	}

	// The server keeps answering once the burst is over.
	waitIdle := time.Now().Add(5 * time.Second)
	for len(runner.queue) > 0 && time.Now().Before(waitIdle) {
		time.Sleep(time.Millisecond)
	}
	if r := ts.do(t, "POST", "/v2/models/slow/infer", body); r.status != 200 {
		t.Fatalf("after the burst: %d %s", r.status, r.body)
	}
	// No goroutine or memory growth after the burst: once the client's kept-alive connections
	// close, no goroutine is left in a handler or a runner. (fasthttp keeps idle workers of its
	// own pool for up to 10s; they hold nothing of ours.)
	ts.client.CloseIdleConnections()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtime.GC()
		ours, dump := goroutinesIn("(*Server).infer", "slowRunner")
		g := runtime.NumGoroutine()
		if ours == 0 && g <= baseG+n+16 { // at most one idle fasthttp worker per connection of the burst
			t.Logf("goroutines: %d before the burst, %d after", baseG, g)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the burst (%d before), %d in handlers or runners:\n%s", g, baseG, ours, dump)
		}
		time.Sleep(10 * time.Millisecond)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 16<<20 {
		t.Errorf("heap grew by %d bytes over the burst", grew)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// goroutinesIn counts the goroutines whose stack mentions any of funcs, and returns their stacks.
func goroutinesIn(funcs ...string) (int, string) {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	var dump strings.Builder
	for _, g := range strings.Split(string(buf), "\n\n") {
		for _, f := range funcs {
			if strings.Contains(g, f) {
				n++
				dump.WriteString(g + "\n\n")
				break
			}
		}
	}
	return n, dump.String()
}
