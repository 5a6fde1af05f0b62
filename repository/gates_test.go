package repository

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
)

// fakeShadow is the shadow evaluation as the gates see it: the test scripts its report.
type fakeShadow struct {
	mu  sync.Mutex
	rep ShadowReport
}

func (f *fakeShadow) report(model, primary, candidate string) ShadowReport {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rep
}

func (f *fakeShadow) add(samples int64, meanAbs float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rep.Samples += samples
	f.rep.MeanAbs = meanAbs
	f.rep.Agreement = 1
}

// fault is what a version does to a request: fail, or take delay.
type fault struct {
	err   error
	delay time.Duration
}

// serve sends n requests of new episodes through the split, each answered by a fake model
// whose behaviour faults scripts per version (none: 1 ms, ok), recorded as the server records
// them. It returns the requests per version.
func serve(t *testing.T, r *Repository, n int, prefix string, faults map[string]fault) map[string]int {
	t.Helper()
	got := map[string]int{}
	for i := range n {
		v, _, err := r.AcquireRoute("m", "", fmt.Sprintf("%s-%d", prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		f := faults[v.Version()]
		d := max(f.delay, time.Millisecond)
		r.RecordRouted("m", v.Version(), f.err == nil, d)
		got[v.Version()]++
		v.Release()
	}
	return got
}

func gatedRepo(t *testing.T, gates *GatesSpec) (*Repository, *fakeShadow, *Gates, *[]GateAction) {
	t.Helper()
	dir := writeRepo(t, map[string]string{"m/1.0.0/model.onnx": "ok", "m/1.1.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	log, _ := observedLogger()
	r.log = log
	mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Traffic: &TrafficSpec{
		Weights: map[string]int{"1.0.0": 95, "1.1.0": 5}, Shadow: &ShadowSpec{Version: "1.1.0", Rate: 1}, Gates: gates,
	}}}})
	sh := &fakeShadow{}
	var actions []GateAction
	g := NewGates(r, GatesOptions{Shadow: sh.report, OnAction: func(a GateAction) { actions = append(actions, a) }})
	return r, sh, g, &actions
}

func weightsOf(r *Repository) map[string]int {
	st, _ := r.Traffic("m")
	return st.Spec.Weights
}

func TestGatesPromoteInStepsThenRollBackOnErrors(t *testing.T) {
	r, sh, g, actions := gatedRepo(t, &GatesSpec{
		Candidate: "1.1.0", Interval: 10 * time.Second,
		Promote:  &PromoteGate{MinSamples: 100, MaxMeanAbs: 0.01, Steps: []int{10, 50, 100}, Dwell: 30 * time.Second},
		Rollback: &RollbackGate{MaxErrorRate: 0.05, MaxP99: 50 * time.Millisecond, MinRequests: 20},
	})
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	if a := g.Evaluate(t0); len(a) != 0 {
		t.Fatalf("promoted without shadow samples: %+v", a)
	}
	if st, _ := r.Traffic("m"); !strings.Contains(st.Gates.LastReason, "waiting for shadow samples: 0 of 100") {
		t.Errorf("last reason %q", st.Gates.LastReason)
	}
	sh.add(150, 0.001)
	serve(t, r, 200, "a", nil)
	if a := g.Evaluate(t0.Add(5 * time.Second)); len(a) != 0 {
		t.Fatalf("evaluated before the interval passed: %+v", a)
	}
	a := g.Evaluate(t0.Add(10 * time.Second))
	if len(a) != 1 || a[0].Action != "promote" || !reflect.DeepEqual(weightsOf(r), map[string]int{"1.0.0": 90, "1.1.0": 10}) {
		t.Fatalf("first step: %+v, weights %v; want promote to 1.0.0=90 1.1.0=10", a, weightsOf(r))
	}
	sh.add(150, 0.002)
	if a := g.Evaluate(t0.Add(20 * time.Second)); len(a) != 0 {
		t.Fatalf("stepped within the dwell time: %+v", a)
	}
	if st, _ := r.Traffic("m"); !strings.Contains(st.Gates.LastReason, "dwelling") {
		t.Errorf("last reason %q, want dwelling", st.Gates.LastReason)
	}
	sh.add(50, 0.002)
	if a := g.Evaluate(t0.Add(45 * time.Second)); len(a) != 1 || weightsOf(r)["1.1.0"] != 50 {
		t.Fatalf("second step: %+v, weights %v", a, weightsOf(r))
	}

	// the candidate now fails 20 % of its requests
	var candidateKeys []string
	for i := range 400 {
		k := fmt.Sprintf("b-%d", i)
		v, _, _ := r.AcquireRoute("m", "", k)
		ok := v.Version() != "1.1.0" || i%5 != 0
		if v.Version() == "1.1.0" {
			candidateKeys = append(candidateKeys, k)
		}
		r.RecordRouted("m", v.Version(), ok, time.Millisecond)
		v.Release()
	}
	a = g.Evaluate(t0.Add(55 * time.Second))
	if len(a) != 1 || a[0].Action != "rollback" || !strings.Contains(a[0].Reason, "error rate") {
		t.Fatalf("rollback: %+v", a)
	}
	if w := weightsOf(r); w["1.1.0"] != 0 || w["1.0.0"] != 50 {
		t.Fatalf("weights after the rollback: %v", w)
	}
	for _, k := range candidateKeys {
		if v, _ := routeOf(t, r, "", k); v != "1.0.0" {
			t.Fatalf("key %s still on the rolled back candidate", k)
		}
	}
	if got := serve(t, r, 500, "c", nil); got["1.1.0"] != 0 {
		t.Fatalf("the candidate got %d new requests after the rollback", got["1.1.0"])
	}
	// the gates act no more until the policy is set anew
	sh.add(1000, 0)
	if a := g.Evaluate(t0.Add(10 * time.Minute)); len(a) != 0 {
		t.Fatalf("gates acted after a rollback: %+v", a)
	}
	st, _ := r.Traffic("m")
	if st.Source != "gate" || st.Gates.State != "rolled_back" {
		t.Errorf("source %s, gate state %s", st.Source, st.Gates.State)
	}
	var hist []string
	for _, h := range st.Gates.History {
		hist = append(hist, fmt.Sprintf("%s %s %s", h.Time.Sub(t0), h.Action, formatWeights(h.Weights)))
	}
	want := []string{"10s promote 1.0.0=90 1.1.0=10", "45s promote 1.0.0=50 1.1.0=50", "55s rollback 1.0.0=50 1.1.0=0"}
	if !reflect.DeepEqual(hist, want) {
		t.Errorf("history %q\nwant %q", hist, want)
	}
	if len(*actions) != 3 || st.Gates.Actions["promote"] != 2 || st.Gates.Actions["rollback"] != 1 {
		t.Errorf("actions reported %d, counted %v", len(*actions), st.Gates.Actions)
	}
	for _, h := range st.Gates.History {
		if h.Reason == "" || h.Candidate != "1.1.0" || h.Primary != "1.0.0" {
			t.Errorf("history entry %+v", h)
		}
	}
}

func TestGatesRollBackOnSlowCandidateAndDivergence(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	t.Run("p99", func(t *testing.T) {
		r, _, g, _ := gatedRepo(t, &GatesSpec{Candidate: "1.1.0", Interval: time.Second,
			Rollback: &RollbackGate{MaxP99: 20 * time.Millisecond, MinRequests: 10}})
		g.Evaluate(t0)
		// a slow candidate: 3 % of its requests take 100 ms
		n := 0
		for i := range 2000 {
			v, _, _ := r.AcquireRoute("m", "", "")
			d := time.Millisecond
			if v.Version() == "1.1.0" {
				n++
				if n%30 == 0 {
					d = 100 * time.Millisecond
				}
			}
			r.RecordRouted("m", v.Version(), true, d)
			v.Release()
			_ = i
		}
		a := g.Evaluate(t0.Add(time.Second))
		if len(a) != 1 || a[0].Action != "rollback" || !strings.Contains(a[0].Reason, "p99 latency") || weightsOf(r)["1.1.0"] != 0 {
			t.Fatalf("slow candidate (%d requests): %+v, weights %v", n, a, weightsOf(r))
		}
	})
	t.Run("fast enough", func(t *testing.T) {
		r, _, g, _ := gatedRepo(t, &GatesSpec{Candidate: "1.1.0", Interval: time.Second,
			Rollback: &RollbackGate{MaxP99: 20 * time.Millisecond, MaxErrorRate: 0.01, MinRequests: 10}})
		g.Evaluate(t0)
		serve(t, r, 2000, "k", map[string]fault{"1.1.0": {delay: 5 * time.Millisecond}, "1.0.0": {err: errors.New("primary errs: not the candidate's business")}})
		if a := g.Evaluate(t0.Add(time.Second)); len(a) != 0 {
			t.Fatalf("rolled back a healthy candidate: %+v", a)
		}
	})
	t.Run("divergence", func(t *testing.T) {
		r, sh, g, _ := gatedRepo(t, &GatesSpec{Candidate: "1.1.0", Interval: time.Second,
			Rollback: &RollbackGate{MaxMeanAbs: 0.1}})
		sh.add(50, 0.5)
		a := g.Evaluate(t0)
		if len(a) != 1 || !strings.Contains(a[0].Reason, "shadow mean absolute difference 0.5") || weightsOf(r)["1.1.0"] != 0 {
			t.Fatalf("divergent candidate: %+v", a)
		}
		// an operator's new policy starts the gates afresh
		if err := r.SetTraffic("m", &TrafficSpec{Weights: map[string]int{"1.0.0": 1, "1.1.0": 1},
			Gates: &GatesSpec{Candidate: "1.1.0", Rollback: &RollbackGate{MaxMeanAbs: 1}}}, "admin"); err != nil {
			t.Fatal(err)
		}
		if st, _ := r.Traffic("m"); st.Gates.State != "evaluating" || len(st.Gates.History) != 1 {
			t.Errorf("after SetTraffic: %+v", st.Gates)
		}
	})
}

func TestGatesLogEveryChange(t *testing.T) {
	r, sh, g, _ := gatedRepo(t, &GatesSpec{Candidate: "1.1.0", Rollback: &RollbackGate{MaxMeanAbs: 0.1}})
	log, logs := observedLogger()
	r.log = log
	sh.add(10, 1)
	g.Evaluate(time.Now())
	e := logs.FilterMessage("traffic gate rollback").All()
	if len(e) != 1 || e[0].Level != zap.WarnLevel || !strings.Contains(e[0].ContextMap()["reason"].(string), "mean absolute") {
		t.Fatalf("log of the rollback: %+v", e)
	}
}

// The first evaluation of a policy's gates starts the window: what the candidate did before
// (under an earlier policy) does not count.
func TestGatesFirstEvaluationStartsTheWindow(t *testing.T) {
	r, _, g, _ := gatedRepo(t, &GatesSpec{Candidate: "1.1.0", Interval: time.Second,
		Rollback: &RollbackGate{MaxErrorRate: 0.01, MinRequests: 5}})
	serve(t, r, 2000, "old", map[string]fault{"1.1.0": {err: errors.New("boom")}})
	t0 := time.Now()
	if a := g.Evaluate(t0); len(a) != 0 {
		t.Fatalf("the first evaluation judged earlier requests: %+v", a)
	}
	if a := g.Evaluate(t0.Add(time.Second)); len(a) != 0 {
		t.Fatalf("rolled back with no request in the window: %+v", a)
	}
	serve(t, r, 2000, "new", map[string]fault{"1.1.0": {err: errors.New("boom")}})
	if a := g.Evaluate(t0.Add(2 * time.Second)); len(a) != 1 || !strings.Contains(a[0].Reason, "error rate 1.000") {
		t.Fatalf("errors in the window: %+v", a)
	}
}
