package repository

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

// trafficRepo serves model m in versions (fake pools, all ready but those whose content is
// "bad") with the traffic policy spec from the desired state.
func trafficRepo(t *testing.T, versions map[string]string, spec *TrafficSpec) (*Repository, Desired) {
	t.Helper()
	files := map[string]string{}
	for v, content := range versions {
		files["m/"+v+"/model.onnx"] = content
	}
	dir := writeRepo(t, files)
	r, _ := fakeRepository(t, &applyLoader{})
	d := Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Traffic: spec}}}
	mustApply(t, r, d)
	return r, d
}

// routeOf acquires the version key gets and releases it.
func routeOf(t *testing.T, r *Repository, version, key string) (string, Route) {
	t.Helper()
	v, route, err := r.AcquireRoute("m", version, key)
	if err != nil {
		t.Fatalf("AcquireRoute(%q, %q): %v", version, key, err)
	}
	v.Release()
	return v.Version(), route
}

func shares(t *testing.T, r *Repository, n int, key func(i int) string) map[string]float64 {
	t.Helper()
	count := map[string]int{}
	for i := range n {
		v, _ := routeOf(t, r, "", key(i))
		count[v]++
	}
	out := map[string]float64{}
	for v, c := range count {
		out[v] = float64(c) / float64(n)
	}
	return out
}

func checkShares(t *testing.T, got map[string]float64, want map[string]float64) {
	t.Helper()
	for v, w := range want {
		if math.Abs(got[v]-w) > 0.02 {
			t.Errorf("share of %s = %.4f, want %.2f ± 0.02 (all: %v)", v, got[v], w, got)
		}
	}
	for v := range got {
		if _, ok := want[v]; !ok {
			t.Errorf("version %s got share %.4f, want none", v, got[v])
		}
	}
}

func TestTrafficSharesFollowWeights(t *testing.T) {
	r, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok", "1.2.0": "ok", "2.0.0": "ok"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 70, "1.1.0": 20, "v1.2.0": 10, "2.0.0": 0}})
	want := map[string]float64{"1.0.0": 0.7, "1.1.0": 0.2, "1.2.0": 0.1}
	t.Run("keys", func(t *testing.T) {
		checkShares(t, shares(t, r, 10000, func(i int) string { return fmt.Sprintf("episode-%d", i) }), want)
	})
	t.Run("per request", func(t *testing.T) {
		checkShares(t, shares(t, r, 10000, func(int) string { return "" }), want)
	})
	st, ok := r.Traffic("m")
	if !ok || st.Source != "config" || st.StickyKeys != 10000 {
		t.Fatalf("Traffic = %+v, %v; want source config, 10000 sticky keys", st, ok)
	}
	for _, v := range st.Versions {
		if v.Version == "1.0.0" && (v.Share != 0.7 || v.Routes["split"] < 13000) {
			t.Errorf("status of 1.0.0 = %+v, want share 0.7 and ~14000 split requests", v)
		}
	}
}

// The hashing alone (no memory of keys) moves only the keys it must: a 10 → 20 % change of two
// versions moves 10 % of the keys, all from the version whose weight fell to the one whose
// weight rose; raising one version's weight among three moves keys only to it, as many as its
// share grew.
func TestTrafficRendezvousMovesOnlyWhatItMust(t *testing.T) {
	r, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok", "1.2.0": "ok"}, nil)
	tab := r.cur.Load()
	race := func(w map[string]int) []weighted {
		p := newTrafficPolicy("m")
		p.set((&TrafficSpec{Weights: w}).canonical(), "test")
		return *p.race.Load()
	}
	for _, tt := range []struct {
		before, after map[string]int
		to            string  // the only version keys may move to
		moved         float64 // the share that must move
	}{
		{map[string]int{"1.0.0": 90, "1.1.0": 10}, map[string]int{"1.0.0": 80, "1.1.0": 20}, "1.1.0", 0.10},
		{map[string]int{"1.0.0": 60, "1.1.0": 30, "1.2.0": 10}, map[string]int{"1.0.0": 60, "1.1.0": 30, "1.2.0": 25}, "1.2.0", 25.0/115 - 0.10},
	} {
		before, after := race(tt.before), race(tt.after)
		const n = 10000
		moved := 0
		for i := range n {
			h := mix(hashString(fmt.Sprintf("k%d", i)))
			a, b := choose(tab, "m", before, h).Version(), choose(tab, "m", after, h).Version()
			if a == b {
				continue
			}
			moved++
			if b != tt.to {
				t.Fatalf("%v → %v: key k%d moved %s → %s; keys may move only to %s", tt.before, tt.after, i, a, b, tt.to)
			}
		}
		if f := float64(moved) / n; math.Abs(f-tt.moved) > 0.02 {
			t.Errorf("%v → %v: %.4f of the keys moved, want %.3f ± 0.02", tt.before, tt.after, f, tt.moved)
		}
	}
}

func TestTrafficStickyAcrossWeightChangeAndReload(t *testing.T) {
	r, d := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 90, "1.1.0": 10}})
	const n = 4000
	first := map[string]string{}
	for i := range n {
		k := fmt.Sprintf("ep-%d", i)
		v, route := routeOf(t, r, "", k)
		if route != RouteSplit {
			t.Fatalf("first request of %s: route %v, want split", k, route)
		}
		first[k] = v
	}
	check := func(when string) {
		t.Helper()
		for k, want := range first {
			if v, route := routeOf(t, r, "", k); v != want || route != RouteSticky {
				t.Fatalf("%s: key %s got %s (route %v), had %s", when, k, v, route, want)
			}
		}
	}
	check("same weights")
	if err := r.SetTraffic("m", &TrafficSpec{Weights: map[string]int{"1.0.0": 10, "1.1.0": 90}}, "admin"); err != nil {
		t.Fatal(err)
	}
	check("after an admin weight change")
	// new keys follow the new weights
	got := shares(t, r, 10000, func(i int) string { return fmt.Sprintf("new-%d", i) })
	checkShares(t, got, map[string]float64{"1.0.0": 0.1, "1.1.0": 0.9})

	// a reload whose config leaves the traffic section as it was keeps the admin's weights
	mustApply(t, r, d)
	if st, _ := r.Traffic("m"); st.Source != "admin" || st.Spec.Weights["1.1.0"] != 90 {
		t.Fatalf("after a reload with the same traffic section: source %s weights %v, want the admin's", st.Source, st.Spec.Weights)
	}
	check("after a reload")
	// a reload that changes it replaces them; live keys still keep their version
	d2 := d
	d2.Models = []ModelSpec{{Name: "m", Traffic: &TrafficSpec{Weights: map[string]int{"1.0.0": 50, "1.1.0": 50}}}}
	mustApply(t, r, d2)
	if st, _ := r.Traffic("m"); st.Source != "config" || st.Spec.Weights["1.1.0"] != 50 {
		t.Fatalf("after a reload changing the traffic section: source %s weights %v, want the config's", st.Source, st.Spec.Weights)
	}
	check("after a reload changing the weights")
	// the end of a key (sequence end) lets it follow the weights anew
	r.EndKey("m", "ep-0")
	if _, route := routeOf(t, r, "", "ep-0"); route != RouteSplit {
		t.Errorf("after EndKey: route %v, want split", route)
	}
	// a config without traffic removes the policy
	d3 := d
	d3.Models = []ModelSpec{{Name: "m"}}
	mustApply(t, r, d3)
	if r.HasTraffic("m") {
		t.Error("the policy survived a config without traffic")
	}
}

func TestTrafficStickyIdleExpiryAndBound(t *testing.T) {
	r, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 50, "1.1.0": 50}, MaxStickyKeys: 100, StickyIdleTimeout: 50 * time.Millisecond})
	for i := range 150 {
		routeOf(t, r, "", fmt.Sprintf("k%d", i))
	}
	st, _ := r.Traffic("m")
	if st.StickyKeys != 100 || st.StickyFull != 50 {
		t.Fatalf("sticky keys %d, full %d; want 100 and 50", st.StickyKeys, st.StickyFull)
	}
	time.Sleep(60 * time.Millisecond)
	routeOf(t, r, "", "fresh") // a full table is swept when a new key comes
	if st, _ := r.Traffic("m"); st.StickyKeys != 1 {
		t.Fatalf("sticky keys after idling out: %d, want 1", st.StickyKeys)
	}
	time.Sleep(60 * time.Millisecond)
	if st, _ := r.Traffic("m"); st.StickyKeys != 0 { // the status sweeps too
		t.Fatalf("sticky keys after idling out, read by the status: %d, want 0", st.StickyKeys)
	}
}

func TestTrafficNamedVersionBypasses(t *testing.T) {
	r, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 100, "1.1.0": 0}})
	for i := range 100 {
		if v, route := routeOf(t, r, "1.1.0", fmt.Sprintf("k%d", i)); v != "1.1.0" || route != RouteNamed {
			t.Fatalf("named 1.1.0: got %s route %v", v, route)
		}
		if v, _ := routeOf(t, r, "", fmt.Sprintf("k%d", i)); v != "1.0.0" {
			t.Fatalf("unnamed: got %s, want 1.0.0 (weight 100)", v)
		}
	}
}

func TestTrafficUnreadyVersionGetsNoTraffic(t *testing.T) {
	r, d := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "bad model"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 50, "1.1.0": 50}})
	got := shares(t, r, 2000, func(i int) string { return fmt.Sprintf("k%d", i) })
	checkShares(t, got, map[string]float64{"1.0.0": 1})
	st, _ := r.Traffic("m")
	for _, v := range st.Versions {
		if v.Version == "1.1.0" && (v.Ready || v.Share != 0) {
			t.Errorf("status of the unready version: %+v", v)
		}
	}

	// a version that stops serving loses its live keys to the others, counted as misses
	r2, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 50, "1.1.0": 50}})
	on11 := []string{}
	for i := range 200 {
		k := fmt.Sprintf("k%d", i)
		if v, _ := routeOf(t, r2, "", k); v == "1.1.0" {
			on11 = append(on11, k)
		}
	}
	if err := r2.Unload("m", "1.1.0"); err != nil {
		t.Fatal(err)
	}
	for _, k := range on11 {
		if v, route := routeOf(t, r2, "", k); v != "1.0.0" || route != RouteSplit {
			t.Fatalf("key %s of the unloaded version: got %s (route %v)", k, v, route)
		}
	}
	if st, _ := r2.Traffic("m"); st.StickyMisses != uint64(len(on11)) {
		t.Errorf("sticky misses = %d, want %d", st.StickyMisses, len(on11))
	}
	_ = d

	// no weighted version ready: the default serves
	r3, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "bad"},
		&TrafficSpec{Weights: map[string]int{"1.1.0": 1}})
	if v, route := routeOf(t, r3, "", "k"); v != "1.0.0" || route != RouteDefault {
		t.Errorf("no weighted version ready: got %s route %v, want 1.0.0 default", v, route)
	}
}

func TestTrafficValidation(t *testing.T) {
	dir := writeRepo(t, map[string]string{"m/1.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	_, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Traffic: &TrafficSpec{
		Weights: map[string]int{"^1": 1, "1.0.0": -1},
		Shadow:  &ShadowSpec{Version: "1.x", Rate: 2},
		Gates: &GatesSpec{Candidate: "1.9.0", Promote: &PromoteGate{Steps: []int{50, 20}},
			Rollback: &RollbackGate{}},
	}}}})
	if err == nil {
		t.Fatal("Apply accepted an invalid traffic policy")
	}
	for _, want := range []string{
		`models[0].traffic.weights: "^1" is not an exact version`,
		"models[0].traffic.weights[1.0.0]: must not be negative, got -1",
		`models[0].traffic.shadow.version: "1.x" is not an exact version`,
		"models[0].traffic.shadow.rate: must be 0..1, got 2",
		`models[0].traffic.gates.candidate: "1.9.0" is not one of the weights' versions`,
		"models[0].traffic.gates.promote.min_samples: must be positive",
		"models[0].traffic.gates.promote.steps[1]: must rise within 1..100, got 20",
		"models[0].traffic.gates.rollback: set max_error_rate, max_p99 or max_mean_abs",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "m"}}})
	var nf *NotFoundError
	if err := r.SetTraffic("m", &TrafficSpec{Weights: map[string]int{"1.0.0": 1, "2.0.0": 1}}, "admin"); !errors.As(err, &nf) || nf.Version != "2.0.0" {
		t.Errorf("SetTraffic naming a version not served: %v", err)
	}
	if err := r.SetTraffic("nope", &TrafficSpec{Weights: map[string]int{"1.0.0": 1}}, "admin"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetTraffic of an unknown model: %v", err)
	}
	if err := r.SetTraffic("m", &TrafficSpec{Weights: map[string]int{"1.0.0": 0}}, "admin"); err == nil || !strings.Contains(err.Error(), "at least one weight must be above 0") {
		t.Errorf("SetTraffic with every weight 0: %v", err)
	}
}

func TestAcquireRouteWithoutPolicyAllocatesNothing(t *testing.T) {
	r, _ := trafficRepo(t, map[string]string{"1.0.0": "ok"}, nil)
	if n := testing.AllocsPerRun(100, func() {
		v, _, err := r.AcquireRoute("m", "", "episode-1")
		if err != nil {
			t.Fatal(err)
		}
		v.Release()
	}); n != 0 {
		t.Errorf("AcquireRoute without a policy: %v allocations, want 0", n)
	}
	r2, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok"}, &TrafficSpec{Weights: map[string]int{"1.0.0": 1, "1.1.0": 1}})
	routeOf(t, r2, "", "episode-1")
	if n := testing.AllocsPerRun(100, func() {
		v, _, _ := r2.AcquireRoute("m", "", "episode-1")
		v.Release()
	}); n != 0 {
		t.Errorf("AcquireRoute of a remembered key: %v allocations, want 0", n)
	}
}

// BenchmarkRoute compares Acquire+Release without a traffic policy with the split: a request
// with a remembered key (every step of an episode but the first), one without a key.
func BenchmarkRoute(b *testing.B) {
	setup := func(b *testing.B, spec *TrafficSpec) *Repository {
		b.Helper()
		files := map[string]string{"m/1.0.0/model.onnx": "ok", "m/1.1.0/model.onnx": "ok"}
		dir := writeRepo(b, files)
		r, _ := fakeRepository(b, &applyLoader{})
		if _, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Traffic: spec}}}); err != nil {
			b.Fatal(err)
		}
		return r
	}
	run := func(b *testing.B, r *Repository, key func(i int) string) {
		keys := make([]string, 1024)
		for i := range keys {
			keys[i] = key(i)
		}
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			v, _, err := r.AcquireRoute("m", "", keys[i&1023])
			if err != nil {
				b.Fatal(err)
			}
			v.Release()
		}
	}
	spec := &TrafficSpec{Weights: map[string]int{"1.0.0": 90, "1.1.0": 10}}
	b.Run("NoPolicy", func(b *testing.B) { run(b, setup(b, nil), func(int) string { return "" }) })
	b.Run("SplitStickyKey", func(b *testing.B) {
		run(b, setup(b, spec), func(i int) string { return fmt.Sprintf("episode-%d", i) })
	})
	b.Run("SplitNoKey", func(b *testing.B) { run(b, setup(b, spec), func(int) string { return "" }) })
}

// Under concurrent requests, admin changes, gate evaluations and reloads, no key ever sees
// two versions.
func TestTrafficStickyUnderConcurrentChanges(t *testing.T) {
	r, d := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 50, "1.1.0": 50}})
	g := NewGates(r, GatesOptions{})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for w := range 4 {
		wg.Go(func() {
			seen := map[string]string{}
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := fmt.Sprintf("w%d-k%d", w, i%300)
				v, _, err := r.AcquireRoute("m", "", k)
				if err != nil {
					errs <- err.Error()
					return
				}
				if prev, ok := seen[k]; ok && prev != v.Version() {
					errs <- fmt.Sprintf("key %s saw %s, then %s", k, prev, v.Version())
					v.Release()
					return
				}
				seen[k] = v.Version()
				r.RecordRouted("m", v.Version(), true, time.Millisecond)
				v.Release()
			}
		})
	}
	for i := range 20 {
		w := map[string]int{"1.0.0": i%5 + 1, "1.1.0": 5 - i%5}
		if i%3 == 0 {
			d2 := d
			d2.Models = []ModelSpec{{Name: "m", Traffic: &TrafficSpec{Weights: w}}}
			mustApply(t, r, d2)
		} else if err := r.SetTraffic("m", &TrafficSpec{Weights: w, Gates: &GatesSpec{Candidate: "1.1.0", Interval: time.Nanosecond,
			Rollback: &RollbackGate{MaxP99: time.Hour}}}, "admin"); err != nil {
			t.Fatal(err)
		}
		g.Evaluate(time.Now())
		time.Sleep(2 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// The key passed to AcquireRoute may be a view of a request's bytes that are reused after the
// call (the server's HTTP codec passes one): the table keeps copies, on insert and on update.
func TestTrafficKeyMayBeAView(t *testing.T) {
	r, _ := trafficRepo(t, map[string]string{"1.0.0": "ok", "1.1.0": "ok"},
		&TrafficSpec{Weights: map[string]int{"1.0.0": 50, "1.1.0": 50}})
	buf := []byte("episode-0")
	view := func() string { return unsafe.String(unsafe.SliceData(buf), len(buf)) }
	first := map[string]string{}
	for i := range 50 {
		copy(buf, fmt.Sprintf("episode-%d", i%10))
		v, _ := routeOf(t, r, "", view())
		k := fmt.Sprintf("episode-%d", i%10)
		if f, ok := first[k]; ok && f != v {
			t.Fatalf("%s went to %s, then %s", k, f, v)
		}
		first[k] = v
		copy(buf, "XXXXXXXXX") // the request's bytes are reused
	}
	st, _ := r.Traffic("m")
	if st.StickyKeys != 10 {
		t.Errorf("%d keys remembered, want 10", st.StickyKeys)
	}
	r.policy("m").sticky.mu.Lock()
	for k := range r.policy("m").sticky.m {
		if !strings.HasPrefix(k, "episode-") {
			t.Errorf("a remembered key changed under the table: %q", k)
		}
	}
	r.policy("m").sticky.mu.Unlock()
}
