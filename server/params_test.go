package server

import (
	"context"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

func TestSchedulingParameters(t *testing.T) {
	m := policyModel("1")
	m.recordOpts = true
	ts := startServer(t, newFakeRegistry(m), Options{})
	body := func(params string) []byte {
		return []byte(`{"parameters":` + params + `,"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`)
	}
	r := ts.do(t, "POST", "/v2/models/policy/infer", body(`{"priority":2,"timeout":5000,"seed":18446744073709551615}`))
	if r.status != fasthttp.StatusOK {
		t.Fatalf("status %d: %s", r.status, r.body)
	}
	if got := m.lastOpts.Load(); got == nil || *got != (engines.RunOptions{Priority: 2, Seed: math.MaxUint64, Seeded: true}) {
		t.Errorf("RunOptions = %+v, want priority 2, seed 2^64-1", got)
	}
	r = ts.do(t, "POST", "/v2/models/policy/infer", body(`{}`))
	if got := m.lastOpts.Load(); r.status != fasthttp.StatusOK || *got != (engines.RunOptions{}) {
		t.Errorf("no parameters: status %d, RunOptions = %+v", r.status, got)
	}
	for params, want := range map[string]string{
		`{"priority":-1}`:                  `"priority" must be an unsigned integer, got -1`,
		`{"priority":1.5}`:                 `"priority" must be an unsigned integer, got 1.5`,
		`{"priority":"high"}`:              `"priority" must be an unsigned integer, got string`,
		`{"priority":4294967296}`:          `"priority" is 4294967296, more than its maximum`,
		`{"seed":-5}`:                      `"seed" must be an unsigned integer, got -5`,
		`{"seed":18446744073709551616}`:    `"seed" must be an unsigned integer, got 18446744073709551616`,
		`{"seed":"7"}`:                     `"seed" must be an unsigned integer, got string`,
		`{"timeout":true}`:                 `"timeout" must be an unsigned integer, got true`,
		`{"timeout":3600000001}`:           `"timeout" is 3600000001, more than its maximum 3600000000`,
		`{"timeout":99999999999999999999}`: `"timeout" must be an unsigned integer, got 99999999999999999999`,
	} {
		r := ts.do(t, "POST", "/v2/models/policy/infer", body(params))
		if r.status != fasthttp.StatusBadRequest || !strings.Contains(strings.ReplaceAll(string(r.body), `\"`, `"`), want) {
			t.Errorf("%s: status %d %s, want 400 saying %s", params, r.status, r.body, want)
		}
	}
}

func TestPriorityOutOfRangeIs400(t *testing.T) {
	m := policyModel("1")
	m.doFn = func(context.Context, []bridge.Tensor, func([]bridge.Tensor) error) error {
		return &engines.PriorityError{Priority: 5, Levels: 2}
	}
	ts := startServer(t, newFakeRegistry(m), Options{})
	r := ts.do(t, "POST", "/v2/models/policy/infer",
		[]byte(`{"parameters":{"priority":5},"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`))
	if r.status != fasthttp.StatusBadRequest || !strings.Contains(string(r.body), "priority 5 is out of range: this model has 2 priority level(s)") {
		t.Errorf("status %d %s", r.status, r.body)
	}
}

// The request's own timeout bounds its wait in the queue, and its answer says which bound hit;
// the server's queue timeout still wins when it is shorter.
func TestRequestTimeoutParameter(t *testing.T) {
	m := policyModel("1")
	m.doFn = func(ctx context.Context, _ []bridge.Tensor, _ func([]bridge.Tensor) error) error {
		<-ctx.Done() // never leaves the queue
		return ctx.Err()
	}
	ts := startServer(t, newFakeRegistry(m), Options{QueueTimeout: time.Second})
	req := func(timeoutUS string) (response, time.Duration) {
		start := time.Now()
		r := ts.do(t, "POST", "/v2/models/policy/infer",
			[]byte(`{"parameters":{"timeout":`+timeoutUS+`},"inputs":[{"name":"obs","shape":[1,4],"datatype":"FP32","data":[1,2,3,4]}]}`))
		return r, time.Since(start)
	}
	r, took := req("20000")
	if r.status != fasthttp.StatusServiceUnavailable || r.header["Retry-After"] == "" ||
		!strings.Contains(string(r.body), "still queued after the request's timeout of 20ms") || took > 900*time.Millisecond {
		t.Errorf("own timeout: status %d %s after %s", r.status, r.body, took)
	}
	r, _ = req("5000000") // 5 s: the server's 1 s wins
	if r.status != fasthttp.StatusServiceUnavailable || !strings.Contains(string(r.body), "still queued after the queue timeout of 1s") {
		t.Errorf("queue timeout shorter: status %d %s", r.status, r.body)
	}
}
