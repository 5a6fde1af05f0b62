//go:build cgo

package repository

// Tests of Repository.Apply against the native library (lib/libpolicyd.so), on repositories
// of copies of ../shared/peers/models/mlp-small.onnx (obs FP32[-1,8] → action FP32[-1,2]) and
// mlp-med.onnx (obs FP32[-1,64] → action FP32[-1,8]).

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

const mlpMed = "../../shared/peers/models/mlp-med.onnx"

// obsWidth is the observation width of each test model.
var obsWidth = map[string]int{mlpSmall: 8, mlpMed: 64}

// putModel copies src to DIR/model/version/model.onnx and seals the version folder.
func putModel(t *testing.T, dir, model, version, src string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Skip("model missing:", err)
	}
	writeModel(t, dir, model, version, b)
}

func writeModel(t *testing.T, dir, model, version string, content []byte) {
	t.Helper()
	vdir := filepath.Join(dir, model, version)
	if err := os.MkdirAll(vdir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vdir, ModelFile), content, 0o644); err != nil {
		t.Fatal(err)
	}
	seal(t, vdir, nil)
}

// obs is an FP32[batch,width] input whose values depend on seed.
func obs(batch, width int, seed float32) bridge.Tensor {
	b := make([]byte, 4*width*batch)
	for i := 0; i < width*batch; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(seed+float32(i%17)/32))
	}
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{int64(batch), int64(width)}, Data: b}
}

// nativeRepository is an empty Repository on the native runtime, closed at the end of the test.
func nativeRepository(t *testing.T, l EngineLoader) *Repository {
	t.Helper()
	r := NewRepository(l, nil)
	t.Cleanup(func() { r.Close() })
	return r
}

// runOnce acquires model@version, runs in and returns a copy of the first output.
func runOnce(r *Repository, model, version string, in bridge.Tensor) ([]float32, error) {
	v, err := r.Acquire(model, version)
	if err != nil {
		return nil, err
	}
	defer v.Release()
	var out []float32
	err = v.Do(context.Background(), []bridge.Tensor{in}, engines.RunOptions{}, func(o []bridge.Tensor) error {
		out = enginestest.Floats(o[0])
		return nil
	})

	return out, err
}

// checkTimings checks the backend and timings of the changes that loaded something.
func checkTimings(t *testing.T, rep Report) {
	t.Helper()
	for _, c := range append(append([]Change(nil), rep.Loaded...), rep.Reloaded...) {
		if c.Backend != "cpu" || c.Load <= 0 || c.Instances < 1 {
			t.Errorf("%s@%s: backend %q, load %v, instances %d", c.Model, c.Version, c.Backend, c.Load, c.Instances)
		}
	}
	for _, c := range append(append([]Change(nil), rep.Unloaded...), rep.Reloaded...) {
		if c.Unload <= 0 {
			t.Errorf("%s@%s: unload took %v", c.Model, c.Version, c.Unload)
		}
	}
	if rep.Took <= 0 {
		t.Errorf("report took %v", rep.Took)
	}
}

// (a) 16 goroutines hammer model A (and 2 model B) while Apply flips A's instances 1↔2, adds
// and removes B, adds and removes a version 2 of A: no request of A fails, and every report
// says exactly what changed.
func TestNativeApplyUnderLoad(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	dir := t.TempDir()
	putModel(t, dir, "A", "1.0.0", mlpSmall)
	putModel(t, dir, "B", "1.0.0", mlpMed)
	r := nativeRepository(t, rt)
	desired := func(instA int, withB bool) Desired {
		d := Desired{Dir: dir, QueueLen: 4096, Models: []ModelSpec{{Name: "A", Instances: instA}}}
		if withB {
			d.Models = append(d.Models, ModelSpec{Name: "B"})
		}
		return d
	}
	checkReport(t, mustApply(t, r, desired(1, true)), []string{"A@1.0.0", "B@1.0.0"}, nil, nil, nil, 0)

	// References: one run per input, before the load starts.
	const hammers = 16
	inA := make([]bridge.Tensor, hammers)
	wantA := make([][]float32, hammers)
	for g := range inA {
		inA[g] = obs(1+g%3, 8, float32(g)/8)
		var err error
		if wantA[g], err = runOnce(r, "A", "1", inA[g]); err != nil {
			t.Fatal(err)
		}
	}
	inB := obs(2, 64, 0.25)
	wantB, err := runOnce(r, "B", "", inB)
	if err != nil {
		t.Fatal(err)
	}
	checkReport(t, mustApply(t, r, desired(1, false)), nil, nil, []string{"B@1.0.0"}, nil, 1)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures, bServed, bMissed atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	for g := range hammers {
		version := ""
		if g%2 == 1 {
			version = "1"
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := runOnce(r, "A", version, inA[g])
				requests.Add(1)
				if err != nil {
					fail("A@%q: %v", version, err)
					continue
				}
				if !reflect.DeepEqual(got, wantA[g]) {
					fail("A@%q: output %v, want %v", version, got, wantA[g])
				}
			}
		})
	}
	for range 2 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := runOnce(r, "B", "", inB)
				switch {
				case errors.Is(err, ErrNotFound):
					bMissed.Add(1) // B is not served at the moment: not a failure of a request in flight
					time.Sleep(time.Millisecond)
				case err != nil:
					fail("B: %v", err)
				case !reflect.DeepEqual(got, wantB):
					fail("B: output %v, want %v", got, wantB)
				default:
					bServed.Add(1)
				}
			}
		})
	}

	type step struct {
		name                       string
		fs                         func()
		d                          Desired
		loaded, reloaded, unloaded []string
		unchanged                  int
	}
	addA2 := func() { putModel(t, dir, "A", "2.0.0", mlpSmall) }
	rmA2 := func() {
		if err := os.RemoveAll(filepath.Join(dir, "A", "2.0.0")); err != nil {
			t.Fatal(err)
		}
	}
	steps := []step{
		{name: "A instances 1→2", d: desired(2, false), reloaded: []string{"A@1.0.0"}},
		{name: "add B", d: desired(2, true), loaded: []string{"B@1.0.0"}, unchanged: 1},
		{name: "remove B", d: desired(2, false), unloaded: []string{"B@1.0.0"}, unchanged: 1},
		{name: "add A@2.0.0", fs: addA2, d: desired(2, false), loaded: []string{"A@2.0.0"}, unchanged: 1},
		{name: "remove A@2.0.0", fs: rmA2, d: desired(2, false), unloaded: []string{"A@2.0.0"}, unchanged: 1},
		{name: "A instances 2→1", d: desired(1, false), reloaded: []string{"A@1.0.0"}},
	}
	applies := 0
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline) || applies < len(steps); {
		s := steps[applies%len(steps)]
		if s.fs != nil {
			s.fs()
		}
		rep := mustApply(t, r, s.d)
		applies++
		checkReport(t, rep, s.loaded, s.reloaded, s.unloaded, nil, s.unchanged)
		checkTimings(t, rep)
		if t.Failed() {
			t.Logf("step %q failed", s.name)
			break
		}
	}
	// Let the hammers see the final state a little, then stop them.
	time.Sleep(50 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d applies, %d requests to A, %d to B served, %d while B was not served", applies, requests.Load(), bServed.Load(), bMissed.Load())
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d requests failed", n, requests.Load())
	}
	if requests.Load() < hammers {
		t.Errorf("only %d requests ran", requests.Load())
	}
}

// (b) A removed model is not found afterwards; its pool is drained and closed, its workers
// gone. A request that holds it during the removal finishes on it first.
func TestNativeApplyRemovesModel(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	dir := t.TempDir()
	putModel(t, dir, "A", "1.0.0", mlpSmall)
	putModel(t, dir, "B", "1.0.0", mlpMed)
	base := settledGoroutines()
	r := NewRepository(rt, nil)
	defer r.Close()
	checkReport(t, mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Instances: 4}}), []string{"A@1.0.0", "B@1.0.0"}, nil, nil, nil, 0)
	loaded := runtime.NumGoroutine()
	if loaded < base+8 {
		t.Errorf("%d goroutines with 8 workers, %d before", loaded, base)
	}

	held, err := r.Acquire("B", "1")
	if err != nil {
		t.Fatal(err)
	}
	pool := held.runner.(*engines.Pool)
	applied := make(chan Report, 1)
	go func() {
		rep, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{{Name: "A", Instances: 4}}})
		if err != nil {
			t.Error(err)
		}
		applied <- rep
	}()
	enginestest.WaitFor(t, func() bool { _, err := r.Get("B", ""); return errors.Is(err, ErrNotFound) })
	in := obs(3, 64, 0.5)
	for i := 0; i < 3; i++ {
		if err := held.Do(context.Background(), []bridge.Tensor{in}, engines.RunOptions{}, func(out []bridge.Tensor) error {
			if got := out[0].Shape; len(got) != 2 || got[0] != 3 || got[1] != 8 {
				return fmt.Errorf("output shape %v", got)
			}
			return nil
		}); err != nil {
			t.Errorf("held B during its removal: %v", err)
		}
	}
	select {
	case <-applied:
		t.Fatal("Apply closed B while a request held it")
	case <-time.After(20 * time.Millisecond):
	}
	if pool.Closed() {
		t.Fatal("B's pool closed while held")
	}
	held.Release()
	rep := <-applied
	checkReport(t, rep, nil, nil, []string{"B@1.0.0"}, nil, 1)
	checkTimings(t, rep)

	for _, version := range []string{"", "1"} {
		if _, err := r.Acquire("B", version); !errors.Is(err, ErrNotFound) || err.Error() != `unknown model "B"` {
			t.Errorf("Acquire(B, %q) after removal = %v, want unknown model", version, err)
		}
	}
	if got := r.Models(); !reflect.DeepEqual(got, []string{"A"}) {
		t.Errorf("Models() = %v", got)
	}
	if !pool.Closed() {
		t.Error("B's pool is not closed")
	}
	if err := held.Do(context.Background(), []bridge.Tensor{in}, engines.RunOptions{}, func([]bridge.Tensor) error { return nil }); !errors.Is(err, engines.ErrClosed) {
		t.Errorf("Do on the removed B = %v, want engines.ErrClosed", err)
	}
	if ok, reason := held.Ready(); ok || reason != "unloaded" {
		t.Errorf("removed B: ready %v, %q", ok, reason)
	}
	enginestest.WaitFor(t, func() bool { return runtime.NumGoroutine() <= loaded-4 })
	if _, err := runOnce(r, "A", "", obs(1, 8, 0)); err != nil {
		t.Errorf("A after B's removal: %v", err)
	}

	r.Close()
	enginestest.WaitFor(t, func() bool { return runtime.NumGoroutine() <= base })
}

// (c) A version whose model.onnx is corrupt is UNAVAILABLE with the engine's reason while the
// others serve; mended, the next Apply loads it. Backends fall back in order, and a reload on
// a backend that fails keeps the previous engine serving.
func TestNativeApplyCorruptModel(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	dir := t.TempDir()
	putModel(t, dir, "A", "1.0.0", mlpSmall)
	writeModel(t, dir, "A", "2.0.0", []byte("this is not an ONNX model"))
	writeModel(t, dir, "C", "1.0.0", []byte{0x08, 0x07, 0x12, 0xff, 0xff})
	r := nativeRepository(t, rt)
	rep := mustApply(t, r, Desired{Dir: dir})
	checkReport(t, rep, []string{"A@1.0.0"}, nil, nil, []string{"A@2.0.0", "C@1.0.0"}, 0)
	for _, c := range rep.Failed {
		if c.Reason == "" || c.KeptPrevious || c.Backend != "" {
			t.Errorf("failed %s@%s: %+v", c.Model, c.Version, c)
		}
	}
	t.Logf("reasons: %q, %q", rep.Failed[0].Reason, rep.Failed[1].Reason)
	if r.Ready() {
		t.Error("Ready() with corrupt versions")
	}
	for _, tt := range []struct{ model, version, want string }{{"A", "", "1.0.0"}, {"A", "2", "2.0.0"}, {"C", "", "1.0.0"}} {
		v, err := r.Acquire(tt.model, tt.version)
		if err != nil || v.Version() != tt.want {
			t.Fatalf("Acquire(%s, %q) = %v, %v", tt.model, tt.version, v, err)
		}
		v.Release()
	}
	if _, err := runOnce(r, "A", "", obs(2, 8, 0)); err != nil {
		t.Errorf("A@1.0.0 beside a corrupt A@2: %v", err)
	}
	var ue *UnavailableError
	if _, err := runOnce(r, "C", "", obs(1, 8, 0)); !errors.As(err, &ue) || ue.Reason != rep.Failed[1].Reason {
		t.Errorf("C = %v, want UNAVAILABLE with the load reason", err)
	}

	// C is mended: loaded; A@2.0.0 is still corrupt: tried again.
	putModel(t, dir, "C", "1.0.0", mlpMed)
	rep = mustApply(t, r, Desired{Dir: dir})
	checkReport(t, rep, []string{"C@1.0.0"}, nil, nil, []string{"A@2.0.0"}, 1)
	if _, err := runOnce(r, "C", "", obs(1, 64, 0)); err != nil {
		t.Errorf("mended C: %v", err)
	}

	// A backend that does not exist first: the next one loads.
	a1, _ := r.Get("A", "1")
	rep = mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"nosuch", "cpu"}}})
	checkReport(t, rep, nil, []string{"A@1.0.0", "C@1.0.0"}, nil, []string{"A@2.0.0"}, 0)
	checkTimings(t, rep)
	if a1.State() != StateUnavailable {
		t.Error("the replaced A@1.0.0 still ready")
	}
	// Only the missing backend: the reload fails and the previous engines keep serving.
	a1, _ = r.Get("A", "1")
	rep = mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"nosuch"}}})
	checkReport(t, rep, nil, nil, nil, []string{"A@1.0.0", "A@2.0.0", "C@1.0.0"}, 0)
	for _, c := range rep.Failed {
		if c.KeptPrevious != (c.Version == "1.0.0") || !strings.Contains(c.Reason, "nosuch") && c.Version == "1.0.0" {
			t.Errorf("%s@%s: %+v", c.Model, c.Version, c)
		}
	}
	t.Logf("reason for a missing backend: %q", rep.Failed[0].Reason)
	if v, _ := r.Get("A", "1"); v != a1 || v.Backend() != "cpu" {
		t.Errorf("A@1.0.0 after a failed reload: %p (was %p) on %q", v, a1, v.Backend())
	}
	if _, err := runOnce(r, "A", "1", obs(1, 8, 0)); err != nil {
		t.Errorf("A@1.0.0 after a failed reload: %v", err)
	}
}

// (d) Changing one version's instances reloads that version only: the others keep their
// version and pool. (A model is listed once: C stands for a second listed version.)
func TestNativeApplyReloadsOnlyChanged(t *testing.T) {
	rt := enginestest.NativeRuntime(t)
	dir := t.TempDir()
	putModel(t, dir, "A", "2.0.0", mlpSmall)
	putModel(t, dir, "C", "1.0.0", mlpSmall)
	putModel(t, dir, "B", "1.0.0", mlpMed)
	r := nativeRepository(t, rt)
	desired := func(instA2 int) Desired {
		return Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cpu"}}, Models: []ModelSpec{
			{Name: "A", Version: "2.0.0", Instances: instA2}, {Name: "B"}, {Name: "C", Version: "1.0.0"},
		}}
	}
	checkReport(t, mustApply(t, r, desired(1)), []string{"A@2.0.0", "B@1.0.0", "C@1.0.0"}, nil, nil, nil, 0)
	before := map[string]*Version{}
	runners := map[string]engines.Runner{}
	for _, v := range r.All() {
		before[v.Name()+"@"+v.Version()] = v
		runners[v.Name()+"@"+v.Version()] = v.runner
	}

	rep := mustApply(t, r, desired(3))
	checkReport(t, rep, nil, []string{"A@2.0.0"}, nil, nil, 2)
	checkTimings(t, rep)
	if rep.Reloaded[0].Instances != 3 {
		t.Errorf("reloaded with %d instances, want 3", rep.Reloaded[0].Instances)
	}
	for _, v := range r.All() {
		key := v.Name() + "@" + v.Version()
		same := v == before[key] && v.runner == runners[key]
		if same != (key != "A@2.0.0") {
			t.Errorf("%s: same version and pool = %v", key, same)
		}
	}
	a2, _ := r.Get("A", "2")
	if n := a2.runner.(*engines.Pool).Instances(); n != 3 || a2.spec().Instances != 3 {
		t.Errorf("A@2.0.0 has %d instances (spec %d), want 3", n, a2.spec().Instances)
	}
	if !runners["A@2.0.0"].(*engines.Pool).Closed() {
		t.Error("the replaced pool of A@2.0.0 is not closed")
	}
	for _, key := range []string{"B@1.0.0", "C@1.0.0"} {
		if runners[key].(*engines.Pool).Closed() {
			t.Errorf("the pool of the unchanged %s is closed", key)
		}
	}

	rep = mustApply(t, r, desired(3))
	checkReport(t, rep, nil, nil, nil, nil, 3)
	if rep.Changed() {
		t.Errorf("the same desired state again changed something: %s", &rep)
	}
}

// countingLoader wraps the runtime and records how many engines are built at once.
type countingLoader struct {
	rt       *bridge.Runtime
	inflight atomic.Int32
	maxIn    atomic.Int32
	built    atomic.Int32
}

func (l *countingLoader) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	n := l.inflight.Add(1)
	defer l.inflight.Add(-1)
	for m := l.maxIn.Load(); n > m && !l.maxIn.CompareAndSwap(m, n); m = l.maxIn.Load() {
	}
	time.Sleep(10 * time.Millisecond) // widen the window in which overlapping Applies would meet
	l.built.Add(1)
	return l.rt.NewEngine(onnx, o)
}

// (e) Concurrent Apply calls run one after the other: their loads never overlap, and each
// report is that of a whole Apply on the state the previous one left.
func TestNativeApplySerialized(t *testing.T) {
	l := &countingLoader{rt: enginestest.NativeRuntime(t)}
	dir := t.TempDir()
	putModel(t, dir, "A", "1.0.0", mlpSmall)
	putModel(t, dir, "B", "1.0.0", mlpMed)
	r := nativeRepository(t, l)
	mustApply(t, r, Desired{Dir: dir})
	reports := make([]Report, 8)
	var wg sync.WaitGroup
	for i := range reports {
		wg.Go(func() {
			reports[i] = mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Instances: 1 + i%2}})
		})
	}
	wg.Wait()
	if m := l.maxIn.Load(); m != 1 {
		t.Errorf("%d engines built at once: Apply calls overlapped", m)
	}
	reloads := 0
	for i, rep := range reports {
		if len(rep.Reloaded)+rep.Unchanged != 2 || len(rep.Loaded)+len(rep.Unloaded)+len(rep.Failed) != 0 ||
			(len(rep.Reloaded) != 0 && len(rep.Reloaded) != 2) {
			t.Errorf("Apply %d: %s; want A and B both reloaded or both unchanged", i, &rep)
		}
		reloads += len(rep.Reloaded)
	}
	if got := int(l.built.Load()); got != 2+reloads {
		t.Errorf("%d engines built, want %d (2 at first, then one per reload)", got, 2+reloads)
	}
	a, _ := r.Get("A", "")
	for _, v := range r.All() {
		if v.runner.(*engines.Pool).Instances() != a.runner.(*engines.Pool).Instances() {
			t.Errorf("A and B were left with different instances")
		}
	}
}

// settledGoroutines waits until goroutines of earlier tests (workers of closed pools still
// exiting) are gone, so counts taken next compare with a stable baseline.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for stable := 0; stable < 5; {
		time.Sleep(5 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m < n {
			n, stable = m, 0
		} else {
			stable++
		}
	}
	return n
}
