//go:build cgo

package metrics

// Tests on the native library (lib/libpolicyd.so): a repository of ../shared/peers/models/
// mlp-small.onnx (obs FP32[-1,8] → action FP32[-1,2]), an invalid model and a version the
// repository lacks, a scripted set of requests through the engines layer and ObserveRequest,
// and the families gathered from the registry compared with testdata/families.golden.

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

var update = flag.Bool("update", false, "rewrite testdata/families.golden")

const (
	mlpSmall     = "../../shared/peers/models/mlp-small.onnx"
	invalidModel = "../../shared/models/mlagents/deterDiscrete1obs3action_INVALID.onnx"
)

func addModel(t *testing.T, repo, name, src string) {
	t.Helper()
	if _, err := os.Stat(src); err != nil {
		t.Skip("model missing:", err)
	}
	rec := []artifacts.Tensor{{Name: "x", Datatype: "FP32", Shape: []int64{-1}}}
	if _, err := artifacts.Add(repo, artifacts.AddRequest{Name: name, Version: "1.0.0", Model: src,
		IO: artifacts.IO{Inputs: rec, Outputs: rec}, Tool: "metrics test"}); err != nil {
		t.Fatal(err)
	}
}

func obs(rows int) bridge.Tensor {
	b := make([]byte, 4*8*rows)
	for i := range 8 * rows {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(float32(i%5)/4))
	}
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{int64(rows), 8}, Data: b}
}

// fixture is a repository served with metrics: mlp@1.0.0 ready, broken@1.0.0 failed (invalid
// model), ghost@2.0.0 failed (not in the repository).
type fixture struct {
	reg  *prometheus.Registry
	repo *repository.Repository
	m    *Server
	dir  string
	d    repository.Desired
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	rt, err := bridge.NewRuntime("")
	if err != nil {
		t.Skip("native runtime:", err)
	}
	t.Cleanup(func() { rt.Close() })
	dir := t.TempDir()
	addModel(t, dir, "mlp", mlpSmall)
	addModel(t, dir, "broken", invalidModel)
	f := &fixture{reg: prometheus.NewPedanticRegistry(), repo: repository.NewRepository(rt, nil), dir: dir}
	t.Cleanup(func() { f.repo.Close() })
	if f.m, err = New(f.reg, f.repo); err != nil {
		t.Fatal(err)
	}
	f.d = repository.Desired{
		Dir: dir, Batching: true,
		Default: repository.ModelSpec{Instances: 1, Batching: repository.BatchingSpec{MaxBatchSize: 8, PreferredBatchSizes: []int{4}}},
		Models:  []repository.ModelSpec{{Name: "mlp"}, {Name: "broken"}, {Name: "ghost", Version: "2.0.0"}},
	}
	rep, err := f.repo.Apply(f.d)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Loaded) != 1 || len(rep.Failed) != 2 {
		t.Fatalf("apply: %s", rep.String())
	}
	return f
}

// infer runs one request of rows rows on model@version as the HTTP layer does and records it.
func (f *fixture) infer(t *testing.T, model, version string, rows int) {
	t.Helper()
	start := time.Now()
	v, err := f.repo.Acquire(model, version)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Release()
	err = v.Do(context.Background(), []bridge.Tensor{obs(rows)}, engines.RunOptions{}, func(out []bridge.Tensor) error {
		if len(out) != 1 || out[0].Shape[0] != int64(rows) {
			return fmt.Errorf("outputs %v", out)
		}
		return nil
	})
	code := 200
	var ue *repository.UnavailableError
	if errors.As(err, &ue) {
		code = 503
	} else if err != nil {
		t.Fatal(err)
	}
	f.m.ObserveRequest(model, v.Version(), "v2", code, OutcomeOf(code, false, false), time.Since(start))
}

// render writes the families of the registry: name, type, and per series its labels and the
// values that do not depend on timing (counters, gauges but engine memory, histogram counts,
// batch-size buckets).
func render(t *testing.T, reg prometheus.Gatherer) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		fmt.Fprintf(&b, "%s %s\n", mf.GetName(), mf.GetType())
		var lines []string
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			line := "  {" + strings.Join(ls, ",") + "}"
			switch {
			case mf.GetName() == "policyd_engine_memory_bytes":
				line += fmt.Sprintf(" positive=%t", m.GetGauge().GetValue() > 0)
			case m.Counter != nil:
				line += fmt.Sprintf(" %g", m.GetCounter().GetValue())
			case m.Gauge != nil:
				line += fmt.Sprintf(" %g", m.GetGauge().GetValue())
			case m.Histogram != nil:
				line += fmt.Sprintf(" count=%d", m.GetHistogram().GetSampleCount())
				if mf.GetName() == "policyd_batch_size" {
					for _, bk := range m.GetHistogram().GetBucket() {
						line += fmt.Sprintf(" le%g=%d", bk.GetUpperBound(), bk.GetCumulativeCount())
					}
				}
			}
			lines = append(lines, line)
		}
		sort.Strings(lines)
		b.WriteString(strings.Join(lines, "\n") + "\n")
	}
	return b.String()
}

// TestFamiliesGolden: the families after a scripted set of requests, against
// testdata/families.golden (go test ./metrics -update rewrites it).
func TestFamiliesGolden(t *testing.T) {
	f := newFixture(t)
	for _, rows := range []int{1, 1, 4, 2} {
		f.infer(t, "mlp", "1.0.0", rows)
	}
	f.infer(t, "broken", "1.0.0", 1)
	f.m.ObserveRequest("mlp", "1.0.0", "v2-binary", 400, OutcomeFromCode, time.Millisecond)
	f.m.ObserveRequest("mlp", "1.0.0", "v2", 503, OutcomeOf(503, true, true), time.Millisecond)
	f.m.ObserveRequest("mlp", "1.0.0", "predict", 503, OutcomeOf(503, true, false), time.Millisecond)
	f.m.ObserveRequest("mlp", "9.9.9", "v2", 404, OutcomeFromCode, time.Millisecond)
	f.m.ObserveRequest("nope", "", "v2", 404, OutcomeFromCode, time.Millisecond)
	f.m.ObserveRequest("mlp", "1.0.0", "grpc", 200, OutcomeFromCode, time.Millisecond)

	got := render(t, f.reg)
	golden := filepath.Join("testdata", "families.golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test ./metrics -update writes it)", err)
	}
	if got != string(want) {
		t.Errorf("families differ from %s (-update rewrites it):\n%s", golden, diff(string(want), got))
	}
}

// diff lists the lines only in want (-) and only in got (+).
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var out []string
	for _, l := range w {
		if !slices.Contains(g, l) {
			out = append(out, "- "+l)
		}
	}
	for _, l := range g {
		if !slices.Contains(w, l) {
			out = append(out, "+ "+l)
		}
	}
	return strings.Join(out, "\n")
}

// gauge returns the value of the series of name whose labels include want, and whether there
// is one.
func gauge(t *testing.T, reg prometheus.Gatherer, name string, want map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			return value(m), true
		}
	}
	return 0, false
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return math.NaN()
}

// An unloaded version's series go, its state turns unavailable; loading it again brings them
// back from zero. A reload (new settings) keeps the series: the new engine loads before the
// old one is retired.
func TestUnloadAndReload(t *testing.T) {
	f := newFixture(t)
	f.infer(t, "mlp", "1.0.0", 1)
	mlp := map[string]string{"model": "mlp", "version": "1.0.0"}
	if v, ok := gauge(t, f.reg, "policyd_inferences_total", mlp); !ok || v != 1 {
		t.Fatalf("inferences %v %v, want 1", v, ok)
	}

	f.d.Default.Instances = 2 // a reload
	if rep, err := f.repo.Apply(f.d); err != nil || len(rep.Reloaded) != 1 {
		t.Fatalf("reload: %v %s", err, rep.String())
	}
	if v, ok := gauge(t, f.reg, "policyd_inferences_total", mlp); !ok || v != 1 {
		t.Errorf("after a reload inferences %v %v, want 1 (kept)", v, ok)
	}
	if v, ok := gauge(t, f.reg, "policyd_model_load_duration_seconds", mlp); !ok || v != 2 {
		t.Errorf("load durations observed %v %v, want 2", v, ok)
	}
	// The failed version was tried again (and failed again): its series stay, counting on.
	broken := map[string]string{"model": "broken", "version": "1.0.0"}
	if v, ok := gauge(t, f.reg, "policyd_model_load_duration_seconds", broken); !ok || v != 2 {
		t.Errorf("load durations of the failed version %v %v, want 2", v, ok)
	}

	if err := f.repo.Unload("mlp", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"policyd_inferences_total", "policyd_requests_total", "policyd_queue_depth", "policyd_engine_memory_bytes", "policyd_queue_duration_seconds"} {
		if _, ok := gauge(t, f.reg, name, mlp); ok {
			t.Errorf("%s of mlp@1.0.0 still exported after its unload", name)
		}
	}
	st := map[string]string{"model": "mlp", "version": "1.0.0", "state": "unavailable"}
	if v, ok := gauge(t, f.reg, "policyd_model_state", st); !ok || v != 1 {
		t.Errorf("state unavailable = %v %v after an unload, want 1", v, ok)
	}

	if err := f.repo.Load("mlp", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	f.infer(t, "mlp", "1.0.0", 3)
	if v, ok := gauge(t, f.reg, "policyd_inferences_total", mlp); !ok || v != 3 {
		t.Errorf("inferences after load %v %v, want 3", v, ok)
	}
	st["state"] = "ready"
	if v, ok := gauge(t, f.reg, "policyd_model_state", st); !ok || v != 1 {
		t.Errorf("state ready = %v %v, want 1", v, ok)
	}
}

// ObserveRequest allocates nothing for a served version and the usual codes, also the first
// time a code is seen after the warm-up below.
func TestObserveRequestAllocatesNothing(t *testing.T) {
	f := newFixture(t)
	for _, p := range []string{"v2", "v2-binary", "predict"} {
		for _, c := range []int{200, 400, 503} {
			f.m.ObserveRequest("mlp", "1.0.0", p, c, OutcomeFromCode, time.Millisecond)
		}
	}
	n := testing.AllocsPerRun(1000, func() {
		f.m.ObserveRequest("mlp", "1.0.0", "v2", 200, OutcomeSuccess, time.Millisecond)
		f.m.ObserveRequest("mlp", "1.0.0", "v2-binary", 400, OutcomeFromCode, time.Millisecond)
		f.m.ObserveRequest("mlp", "1.0.0", "predict", 503, OutcomeFromCode, time.Millisecond)
	})
	if n != 0 {
		t.Errorf("%v allocations per 3 requests, want 0", n)
	}
}

func BenchmarkObserveRequest(b *testing.B) {
	rt, err := bridge.NewRuntime("")
	if err != nil {
		b.Skip(err)
	}
	defer rt.Close()
	dir := b.TempDir()
	rec := []artifacts.Tensor{{Name: "x", Datatype: "FP32", Shape: []int64{-1}}}
	if _, err := artifacts.Add(dir, artifacts.AddRequest{Name: "mlp", Version: "1.0.0", Model: mlpSmall,
		IO: artifacts.IO{Inputs: rec, Outputs: rec}}); err != nil {
		b.Skip(err)
	}
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	m, err := New(prometheus.NewRegistry(), repo)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := repo.Apply(repository.Desired{Dir: dir}); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			m.ObserveRequest("mlp", "1.0.0", "v2", 200, OutcomeSuccess, 300*time.Microsecond)
		}
	})
}

// docFamily is a row of the metric table of docs/observability.md.
type docFamily struct {
	typ    string
	labels []string
}

// docTable reads the metric table of docs/observability.md: name → type and labels (L
// expanded to model, version, backend, device), and the three bucket lists.
func docTable(t *testing.T) (map[string]docFamily, map[string][]float64) {
	t.Helper()
	b, err := os.ReadFile("../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	rows := map[string]docFamily{}
	buckets := map[string][]float64{}
	text := string(b)
	for _, name := range []string{"Duration buckets", "Batch-size buckets", "Model-load buckets", "Divergence buckets"} {
		i := strings.Index(text, "**"+name+"**")
		if i < 0 {
			t.Fatalf("docs: no **%s**", name)
		}
		rest := text[i:]
		a := strings.Index(rest, "`")
		z := strings.Index(rest[a+1:], "`")
		for _, f := range strings.Split(rest[a+1:a+1+z], ",") {
			var v float64
			if _, err := fmt.Sscan(strings.TrimSpace(f), &v); err != nil {
				t.Fatalf("%s: %q: %v", name, f, err)
			}
			buckets[name] = append(buckets[name], v)
		}
	}
	for _, line := range strings.Split(text, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`policyd_") {
			continue
		}
		name := strings.Trim(strings.TrimSpace(cells[1]), "`")
		var labels []string
		for _, l := range strings.Split(cells[3], ",") {
			switch l = strings.Trim(strings.TrimSpace(l), "`"); l {
			case "L":
				labels = append(labels, versionLabels...)
			case "—", "":
			default:
				labels = append(labels, l)
			}
		}
		sort.Strings(labels)
		rows[name] = docFamily{strings.ToUpper(strings.TrimSpace(cells[2])), labels}
	}
	return rows, buckets
}

// The families package metrics exports are those of the docs' table, with its types, labels
// and buckets.
func TestFamiliesMatchTheDocs(t *testing.T) {
	f := newFixture(t)
	f.infer(t, "mlp", "1.0.0", 2)
	f.m.ObserveRequest("mlp", "1.0.0", "v2", 200, OutcomeSuccess, time.Millisecond)
	f.m.ObserveFallback("mlp", "1.0.0", "constant", "infeasible")
	rm, err := NewReload(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	rm.ObserveReload("applied", time.Now(), 0)
	rm.VerifyFailed("mlp", "1.0.0")
	f.m.golden.WithLabelValues("mlp", "1.0.0", "cpu", "pass").Inc() // its own test: TestGoldenChecksCounted
	sm, err := NewShadow(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	sm.ShadowRequests("mlp", "1.0.0", "1.1.0")[0].Inc()
	sm.ShadowDropped("mlp", "1.0.0", "1.1.0")[1].Inc()
	for _, discrete := range []bool{false, true} {
		o := sm.ShadowOutput("mlp", "1.0.0", "1.1.0", "action", discrete)
		if discrete {
			o.Agreement.Set(1)
		} else {
			o.AbsDiff.Observe(0.1)
			o.RelDiff.Observe(0.1)
			o.MeanAbs.Set(0.1)
		}
	}
	tm, err := NewTraffic(f.reg, trafficFixture())
	if err != nil {
		t.Fatal(err)
	}
	tm.GateAction(repository.GateAction{Model: "m", Candidate: "1.1.0", Action: "rollback"})
	docs, buckets := docTable(t)
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		seen[name] = true
		d, ok := docs[name]
		if !ok {
			t.Errorf("%s is exported but not in the table of docs/observability.md", name)
			continue
		}
		if d.typ != mf.GetType().String() {
			t.Errorf("%s: type %s, the docs say %s", name, mf.GetType(), d.typ)
		}
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, l.GetName())
			}
			sort.Strings(labels)
			if !slices.Equal(labels, d.labels) {
				t.Errorf("%s: labels %v, the docs say %v", name, labels, d.labels)
			}
			if h := m.GetHistogram(); h != nil {
				var bounds []float64
				for _, b := range h.GetBucket() {
					bounds = append(bounds, b.GetUpperBound())
				}
				want := buckets["Duration buckets"]
				switch name {
				case "policyd_batch_size":
					want = buckets["Batch-size buckets"]
				case "policyd_model_load_duration_seconds":
					want = buckets["Model-load buckets"]
				case "policyd_shadow_abs_diff", "policyd_shadow_rel_diff":
					want = buckets["Divergence buckets"]
				}
				if !slices.Equal(bounds, want) {
					t.Errorf("%s: buckets %v, the docs say %v", name, bounds, want)
				}
			}
		}
	}
	for name := range docs {
		owned := !strings.HasPrefix(name, "policyd_gpu_")
		if owned && !seen[name] {
			t.Errorf("%s is in the docs' table but package metrics does not export it", name)
		}
	}
}
