package server

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/metrics"
)

// noShadowBudget turns the CPU budget off in the tests of what the shadow computes: they send
// requests back to back (a saturating client), which the budget would rightly thin out.
const noShadowBudget = 1

// fakeClock is an injected clock for the budget.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time      { return c.t }
func (c *fakeClock) add(d time.Duration) { c.t = c.t.Add(d) }
func newFakeClock() *fakeClock           { return &fakeClock{t: time.Unix(1000, 0)} }
func ms(n float64) time.Duration         { return time.Duration(n * float64(time.Millisecond)) }
func tokensMs(b *shadowBudget) float64   { b.mu.Lock(); defer b.mu.Unlock(); return b.tokens / 1e6 }
func mustTake(t *testing.T, b *shadowBudget) time.Duration {
	t.Helper()
	r, ok := b.take()
	if !ok {
		t.Fatalf("budget refused with %.3f ms left", tokensMs(b))
	}
	return r
}

// The bucket: 0.1 of 2 CPUs earns 0.2 ms of shadow time per ms of wall time and holds at most
// 10 ms (0.2 × the 50 ms burst); a run's time is charged, an empty bucket refuses until wall
// time has refilled it.
func TestShadowBudgetDropsWhenSpentAndRefills(t *testing.T) {
	c := newFakeClock()
	b := newShadowBudget(0.1, 2, c.now)
	if got := tokensMs(b); got != 10 {
		t.Fatalf("a new budget holds %.3f ms, want 10 (0.1 × 2 CPUs × 50 ms)", got)
	}
	r := mustTake(t, b) // no run measured yet: reserves nothing
	b.charge(ms(15), r)
	if _, ok := b.take(); ok {
		t.Fatalf("admitted with %.3f ms left after a 15 ms run", tokensMs(b))
	}
	c.add(ms(20)) // +4 ms: -5 + 4 = -1
	if _, ok := b.take(); ok {
		t.Fatalf("admitted with %.3f ms left, want -1", tokensMs(b))
	}
	c.add(ms(10)) // +2 ms: 1
	r = mustTake(t, b)
	if r != ms(15) {
		t.Errorf("reserved %v, want the last run's 15ms", r)
	}
	b.refund(r) // dropped after admission: the reservation comes back
	if got := tokensMs(b); got < 0.999 || got > 1.001 {
		t.Errorf("%.3f ms left after a refund, want 1", got)
	}
	c.add(100 * time.Second) // never more than the burst
	b.take()
	b.refund(ms(10000))
	if got := tokensMs(b); got > 10 {
		t.Errorf("%.3f ms held, more than the 10 ms burst", got)
	}
	// Reservations: runs admitted before any is charged pay at once. The average run is 15 ms
	// here; 10 ms in the bucket admits one, then none until runs are charged.
	b2 := newShadowBudget(0.1, 2, c.now)
	b2.charge(ms(15), 0)
	c.add(10 * time.Second)
	r1 := mustTake(t, b2)
	if _, ok := b2.take(); ok {
		t.Fatalf("a second run admitted before the first was charged, %.3f ms left", tokensMs(b2))
	}
	b2.charge(ms(1), r1) // it took 1 ms only: the rest comes back
	if _, ok := b2.take(); !ok {
		t.Fatalf("refused after a short run was settled, %.3f ms left", tokensMs(b2))
	}
	if newShadowBudget(1, 2, c.now) != nil {
		t.Error("share 1 must mean no budget")
	}
	if d := newShadowBudget(0, 4, c.now); d.rate != DefaultShadowCPUShare*4 {
		t.Errorf("share 0: rate %v, want the default %v × 4", d.rate, DefaultShadowCPUShare)
	}
}

// An empty bucket refuses without its lock until the refill brings it above 0, and admits
// right after: the lock-free refusal (dry) is exact, not a back-off.
func TestShadowBudgetDryUntilRefilled(t *testing.T) {
	c := newFakeClock()
	b := newShadowBudget(0.1, 2, c.now) // 0.2 ms earned per ms
	b.charge(ms(12), mustTake(t, b))    // 10 - 12 = -2 ms: 10 ms of wall time to refill
	if b.dry.Load() == 0 {
		t.Fatal("a bucket in debt is not marked dry")
	}
	c.add(ms(10) - time.Microsecond)
	if _, ok := b.take(); ok {
		t.Fatalf("admitted 1µs before the refill, %.4f ms left", tokensMs(b))
	}
	c.add(2 * time.Microsecond)
	if _, ok := b.take(); !ok {
		t.Fatalf("refused 1µs after the refill, %.4f ms left (dry until %d, now %d)", tokensMs(b), b.dry.Load(), c.t.UnixNano())
	}
	// A refund that refills it lifts the mark at once.
	b2 := newShadowBudget(0.1, 2, c.now)
	b2.charge(ms(11), mustTake(t, b2)) // -1 ms
	b2.refund(ms(2))                   // +2: 1 ms
	if _, ok := b2.take(); !ok {
		t.Fatalf("refused after a refund refilled it, %.3f ms left", tokensMs(b2))
	}
}

// A sampled request that finds the budget spent is dropped in sample, before anything is
// copied or seeded: it allocates nothing, leaves the request's options alone and is counted
// dropped with the reason budget; a step of a sequence marks the sequence broken.
func TestShadowBudgetDropBeforeCopyAllocatesNothing(t *testing.T) {
	reg := prometheus.NewRegistry()
	mets, err := metrics.NewShadow(reg)
	if err != nil {
		t.Fatal(err)
	}
	c := newFakeClock()
	sh := &shadows{choose: shadowOf("2", 1, nil), metrics: mets, triples: map[shadowKey]*shadowTriple{},
		broken: map[shadowSeqKey]time.Time{}, budget: newShadowBudget(0.1, 1, c.now)}
	sh.jobs.New = func() any { return newShadowJob() }
	sh.budget.charge(time.Second, 0) // spent: -900 ms
	m := policyModel("1")
	opts := engines.RunOptions{}
	sh.triple(shadowKey{"policy", "1", "2"}) // made once, on the first sampled request
	const runs = 1000
	if n := testing.AllocsPerRun(runs, func() {
		if sh.sample(m, &opts) != nil {
			t.Fatal("sampled with the budget spent")
		}
	}); n != 0 {
		t.Errorf("%v allocations per request dropped by the budget", n)
	}
	if opts.Seeded {
		t.Error("a dropped request was seeded")
	}
	tr := sh.triple(shadowKey{"policy", "1", "2"})
	tr.mu.Lock()
	r, _ := tr.report()
	tr.mu.Unlock()
	if r.Dropped != runs+1 || r.DroppedBudget != runs+1 || r.Samples != 0 {
		t.Errorf("report %+v, want %d dropped by the budget", r, runs+1)
	}
	got := gatherShadow(t, reg)
	for _, want := range []string{
		fmt.Sprintf("policyd_shadow_dropped_total{model=policy,primary=1,reason=budget,shadow=2} %d\n", runs+1),
		"policyd_shadow_dropped_total{model=policy,primary=1,reason=queue_full,shadow=2} 0\n",
		fmt.Sprintf("policyd_shadow_requests_total{model=policy,primary=1,result=dropped,shadow=2} %d\n", runs+1),
	} {
		if !strings.Contains(got, want) {
			t.Errorf("metrics lack %q:\n%s", want, got)
		}
	}
	// A step of a sequence dropped by the budget breaks the shadow's copy of it; once the
	// budget has refilled, the next step is offered stale (not compared), a start repairs it.
	store := &engines.Sequences{}
	id := engines.SequenceID{Num: 7}
	step := engines.RunOptions{Sequence: engines.SequenceStep{Store: store, ID: id, Start: true}}
	if sh.sample(m, &step) != nil {
		t.Fatal("sampled with the budget spent")
	}
	c.add(10 * time.Second)
	step = engines.RunOptions{Sequence: engines.SequenceStep{Store: store, ID: id}}
	j := sh.sample(m, &step)
	if j == nil {
		t.Fatal("refilled budget refused")
	}
	if !sh.stale(j) {
		t.Error("a step after a start the budget dropped is not stale")
	}
	sh.put(j)
}

// With spare CPU the budget takes nothing away: at rate 1 every request is compared.
func TestShadowBudgetLowLoadComparesEveryRequest(t *testing.T) {
	reg := newFakeRegistry(policyModel("1"), policyModel("2"))
	opts := Options{Shadow: shadowOf("2", 1, nil)} // the default share
	if grpcRaceEnabled {
		// The race detector makes each shadow run several times dearer than the share was set
		// for (make test's -race run, packages in parallel on two cores).
		opts.ShadowCPUShare = 0.5
	}
	ts := startServer(t, reg, opts)
	const n = 300
	for i := range n {
		body := fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[%d,2,3,4]}]}`, i)
		if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", []byte(body)); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
		time.Sleep(500 * time.Microsecond) // a client that thinks: the shadow keeps up
	}
	r := waitShadow(t, ts.srv, "policy", "1", "2", n)
	if r.Samples != n || r.Dropped != 0 {
		t.Errorf("report %+v, want all %d compared at low load", r, n)
	}
}

// A shadow that takes far more than its share: after one run (charged 30 ms against a budget of
// 0.001 × GOMAXPROCS × 50 ms, refilled at a few ms per second) the sampled requests are dropped for
// the budget; the primary answers every one.
func TestShadowBudgetSpentDropsShadowOnly(t *testing.T) {
	slow := policyModel("2")
	slow.hook = func(ctx context.Context) { time.Sleep(30 * time.Millisecond) }
	primary := policyModel("1")
	ts := startServer(t, newFakeRegistry(primary, slow), Options{Shadow: shadowOf("2", 1, nil), ShadowCPUShare: 0.001})
	body := []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}`)
	if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", body); r.status != 200 {
		t.Fatalf("%d %s", r.status, r.body)
	}
	waitShadow(t, ts.srv, "policy", "1", "2", 1)
	const n = 20
	for range n {
		if r := ts.do(t, "POST", "/v2/models/policy/versions/1/infer", body); r.status != 200 {
			t.Fatalf("%d %s", r.status, r.body)
		}
	}
	r := waitShadow(t, ts.srv, "policy", "1", "2", n+1)
	if r.Samples != 1 || r.DroppedBudget != n || r.Dropped != n {
		t.Errorf("report %+v, want 1 compared and %d dropped by the budget", r, n)
	}
	if st := primary.stats.Snapshot(); st.Success.Count != n+1 || st.Fail.Count != 0 {
		t.Errorf("primary: %d ok, %d failed", st.Success.Count, st.Fail.Count)
	}
	var found bool
	for _, s := range ts.srv.ShadowStatuses() {
		found = found || s.DroppedBudget == n
	}
	if !found {
		t.Errorf("health details lack dropped_budget %d: %+v", n, ts.srv.ShadowStatuses())
	}
}
