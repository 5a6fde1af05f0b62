package repository

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

// Tests of Apply that need no native library: engines are empty bridge.Engine values and pools
// run fake contexts (see pool_test.go), which double their first FP32 input.

// applyLoader builds fake engines. Models whose bytes start with "bad" fail, and so does every
// backend named in fail.
type applyLoader struct {
	mu       sync.Mutex
	built    []string // "model@version/backend" of every engine asked for
	fail     map[string]bool
	delay    time.Duration
	inflight atomic.Int32
	maxIn    atomic.Int32
}

func (l *applyLoader) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	n := l.inflight.Add(1)
	defer l.inflight.Add(-1)
	for {
		m := l.maxIn.Load()
		if n <= m || l.maxIn.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(l.delay)
	l.mu.Lock()
	l.built = append(l.built, o.Name+"/"+o.Backend)
	fail := l.fail[o.Backend]
	l.mu.Unlock()
	if strings.HasPrefix(string(onnx), "bad") {
		return nil, &bridge.Error{Code: bridge.CodeInvalidArg, Msg: string(onnx)}
	}
	if fail {
		return nil, &bridge.Error{Code: bridge.CodeUnavailable, Msg: "backend " + o.Backend + " unavailable"}
	}
	return &bridge.Engine{}, nil
}

func (l *applyLoader) takeBuilt() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.built
	l.built = nil
	return b
}

// fakeRepository is a Repository whose pools run fake contexts; factory counts them.
func fakeRepository(t testing.TB, l EngineLoader) (*Repository, *fakeFactory) {
	t.Helper()
	f := &fakeFactory{}
	r := NewRepository(l, nil)
	r.newRunner = func(_ []*bridge.Engine, o engines.PoolOptions) (engines.Runner, error) {
		p, err := engines.NewPoolFunc(f.newCtx, 1, o)
		if err != nil {
			return nil, err
		}
		return p, nil
	}
	t.Cleanup(func() { r.Close() })
	return r, f
}

func mustApply(t *testing.T, r *Repository, d Desired) Report {
	t.Helper()
	rep, err := r.Apply(d)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return rep
}

// names lists "model@version" of changes.
func names(cs []Change) []string {
	out := []string{}
	for _, c := range cs {
		out = append(out, c.Model+"@"+c.Version)
	}
	return out
}

func checkReport(t *testing.T, rep Report, loaded, reloaded, unloaded, failed []string, unchanged int) {
	t.Helper()
	for _, l := range []struct {
		what      string
		got, want []string
	}{
		{"loaded", names(rep.Loaded), loaded},
		{"reloaded", names(rep.Reloaded), reloaded},
		{"unloaded", names(rep.Unloaded), unloaded},
		{"failed", names(rep.Failed), failed},
	} {
		if l.want == nil {
			l.want = []string{}
		}
		if !reflect.DeepEqual(l.got, l.want) {
			t.Errorf("%s = %v, want %v (report: %s)", l.what, l.got, l.want, &rep)
		}
	}
	if rep.Unchanged != unchanged {
		t.Errorf("unchanged = %d, want %d (report: %s)", rep.Unchanged, unchanged, &rep)
	}
}

func TestApplyRejectsInvalidDesiredState(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	mustApply(t, r, Desired{Dir: dir})
	before := r.All()
	for _, tt := range []struct {
		d    Desired
		want []string
	}{
		{Desired{}, []string{"dir: empty"}},
		{Desired{Dir: filepath.Join(dir, "nope")}, []string{"model repository", "no such file"}},
		{Desired{Dir: dir, QueueLen: -1, Default: ModelSpec{Instances: -2, Backends: []string{"cpu", "cpu"}}}, []string{
			"queue_len: must not be negative, got -1", "default.instances: must not be negative, got -2",
			`default.backends[1]: "cpu" listed twice`,
		}},
		{Desired{Dir: dir, Models: []ModelSpec{
			{Name: ""}, {Name: "../x"}, {Name: "a", Version: "latest"}, {Name: "a", Threads: -1, Backends: []string{""}},
			{Name: "b", Version: "1.0.0"}, {Name: "b", Version: "v1.0.0"}, {Name: "b", Version: "2.0.0"},
		}}, []string{
			"models[0].name: empty", `models[1].name: "../x" is not a model folder name`,
			`models[2].version: "latest" is neither an exact version`, "models[3].threads: must not be negative, got -1",
			"models[3].backends[0]: empty",
			`models[5]: model "b" version "v1.0.0" is also selected by models[4]`,
			`models[6]: model "b" version "2.0.0" is also selected by models[4]; list a model once`,
		}},
		{Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Version: "2.0.0"}, {Name: "a"}}}, []string{
			`models[1]: model "a" version "" is also selected by models[0]`,
		}},
	} {
		_, err := r.Apply(tt.d)
		if err == nil {
			t.Errorf("Apply(%+v) succeeded", tt.d)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("Apply(%+v) = %q, lacks %q", tt.d, err, w)
			}
		}
	}
	if after := r.All(); !reflect.DeepEqual(after, before) {
		t.Error("a rejected Apply changed the served table")
	}
}

// A model is listed once, as config requires (models are unique by name): two listings with
// distinct exact versions are refused too; one constraint selects both versions.
func TestApplyListsAModelOnce(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "a/2.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	_, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Version: "1.0.0"}, {Name: "a", Version: "2.0.0"}}})
	if want := `models[1]: model "a" version "2.0.0" is also selected by models[0]; list a model once`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a listed twice: %v, want %q", err, want)
	}
	rep := mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Version: ">=1.0.0 <3"}}})
	checkReport(t, rep, []string{"a@1.0.0", "a@2.0.0"}, nil, nil, nil, 0)
}

func TestApplyListedModelMissingIsUnavailable(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "a/2.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	rep := mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{
		{Name: "a", Version: "2.0.0"}, {Name: "b", Version: "3.0.0"}, {Name: "ghost"},
	}})
	checkReport(t, rep, []string{"a@2.0.0"}, nil, nil, []string{"b@3.0.0", "ghost@"}, 0)
	for _, c := range rep.Failed {
		if c.Reason != "not found in repository "+dir {
			t.Errorf("%s@%s: reason %q", c.Model, c.Version, c.Reason)
		}
	}
	if got := r.Models(); !reflect.DeepEqual(got, []string{"a", "b", "ghost"}) {
		t.Errorf("Models() = %v", got)
	}
	if v, err := r.Get("a", ""); err != nil || v.Version() != "2.0.0" {
		t.Errorf("default of a = %v, %v; want the ready 2 (1 is not listed)", v, err)
	}
	if _, err := r.Get("a", "1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unlisted a@1: %v, want not found", err)
	}
	v, err := r.Acquire("ghost", "")
	if err != nil {
		t.Fatal(err)
	}
	var ue *UnavailableError
	if err := v.Do(t.Context(), nil, engines.RunOptions{}, nil); !errors.As(err, &ue) ||
		err.Error() != `model "ghost" is not ready: not found in repository `+dir {
		t.Errorf("Do on a missing model = %v", err)
	}
	v.Release() // before the next Apply, which waits for the holders of what it replaces
	if r.Ready() {
		t.Error("Ready() with missing models")
	}

	// The model appears: the next Apply loads it.
	if err := os.MkdirAll(filepath.Join(dir, "ghost", "1.0.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ghost", "1.0.0", ModelFile), []byte("ok"), 0o644); err != nil {
		t.Fatal(err)
	}
	seal(t, filepath.Join(dir, "ghost", "1.0.0"), nil)
	rep = mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Version: "2.0.0"}, {Name: "ghost"}}})
	checkReport(t, rep, []string{"ghost@1.0.0"}, nil, []string{"b@3.0.0", "ghost@"}, nil, 1)
	if !r.Ready() {
		t.Error("not ready once everything is found")
	}
}

func TestApplyBackendPreference(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "b/1.0.0/model.onnx": "ok"})
	l := &applyLoader{fail: map[string]bool{"tensorrt": true, "cuda": true}}
	r, _ := fakeRepository(t, l)
	rep := mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{
		{Name: "a", Backends: []string{"tensorrt", "cpu", "cuda"}},
		{Name: "b", Backends: []string{"tensorrt", "cuda"}},
	}})
	checkReport(t, rep, []string{"a@1.0.0"}, nil, nil, []string{"b@1.0.0"}, 0)
	if got, want := l.takeBuilt(), []string{"a@1.0.0/tensorrt", "a@1.0.0/cpu", "b@1.0.0/tensorrt", "b@1.0.0/cuda"}; !reflect.DeepEqual(got, want) {
		t.Errorf("engines asked for %v, want %v (stop at the first that loads)", got, want)
	}
	if want := `backend "tensorrt": backend tensorrt unavailable; backend "cuda": backend cuda unavailable`; rep.Failed[0].Reason != want {
		t.Errorf("reason = %q, want %q", rep.Failed[0].Reason, want)
	}
	v, _ := r.Get("a", "1")
	if got := v.spec(); !reflect.DeepEqual(got, ModelSpec{Name: "a", Version: "1.0.0", Backends: []string{"tensorrt", "cpu", "cuda"}, Instances: 1}) {
		t.Errorf("Spec() = %+v", got)
	}

	// Default backends apply to models that name none; a reorder is a change.
	rep = mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cpu"}}, Models: []ModelSpec{
		{Name: "a", Backends: []string{"cpu", "tensorrt", "cuda"}}, {Name: "b"},
	}})
	checkReport(t, rep, []string{"b@1.0.0"}, []string{"a@1.0.0"}, nil, nil, 0)
	if got, want := l.takeBuilt(), []string{"a@1.0.0/cpu", "b@1.0.0/cpu"}; !reflect.DeepEqual(got, want) {
		t.Errorf("engines asked for %v, want %v", got, want)
	}
}

// A reload that fails keeps the version serving on its previous pool; the next Apply retries.
// A model file that changes on disk is loaded again.
func TestApplyFailedReloadKeepsPrevious(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	l := &applyLoader{fail: map[string]bool{"cuda": true}}
	r, _ := fakeRepository(t, l)
	mustApply(t, r, Desired{Dir: dir})
	v1, _ := r.Get("a", "1")

	rep := mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda"}}})
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0"}, 0)
	if !rep.Failed[0].KeptPrevious || !strings.Contains(rep.Failed[0].Reason, "cuda unavailable") {
		t.Errorf("failed reload: %+v", rep.Failed[0])
	}
	if v, _ := r.Get("a", "1"); v != v1 || v.State() != StateReady {
		t.Fatalf("a failed reload replaced the serving version (%p → %p, %s)", v1, v, v.State())
	}
	if err := v1.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(1)}, engines.RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
		t.Errorf("previous version after a failed reload: %v", err)
	}
	rep = mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Backends: []string{"cuda"}}})
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0"}, 0) // tried again

	// Back to the settings it serves with: nothing to do.
	rep = mustApply(t, r, Desired{Dir: dir})
	checkReport(t, rep, nil, nil, nil, nil, 1)

	// The artifact is rewritten (a new digest): it is built again; broken, the previous one
	// stays.
	path := filepath.Join(dir, "a", "1.0.0", ModelFile)
	if err := os.WriteFile(path, []byte("bad bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	seal(t, filepath.Dir(path), nil)
	rep = mustApply(t, r, Desired{Dir: dir})
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0"}, 0)
	if !rep.Failed[0].KeptPrevious || rep.Failed[0].Reason != "bad bytes" {
		t.Errorf("failed reload of a broken file: %+v", rep.Failed[0])
	}
	if err := os.WriteFile(path, []byte("ok again"), 0o644); err != nil {
		t.Fatal(err)
	}
	seal(t, filepath.Dir(path), nil)
	rep = mustApply(t, r, Desired{Dir: dir})
	checkReport(t, rep, nil, []string{"a@1.0.0"}, nil, nil, 0)
	if v1.State() != StateUnavailable || v1.Reason() != "unloaded" {
		t.Errorf("replaced version: %s %q", v1.State(), v1.Reason())
	}
	if err := v1.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(1)}, engines.RunOptions{}, nil); !errors.Is(err, engines.ErrClosed) {
		t.Errorf("Do on a replaced version not held = %v, want engines.ErrClosed", err)
	}
}

// A holder keeps its version alive: the Apply that removes it swaps the table at once (new
// lookups miss it) but waits for the Release before it drains the pool.
func TestApplyWaitsForHolders(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "b/1.0.0/model.onnx": "ok"})
	r, f := fakeRepository(t, &applyLoader{})
	log, logs := observedLogger()
	r.log = log
	defer func(d time.Duration) { holderWarnEvery = d }(holderWarnEvery)
	holderWarnEvery = 5 * time.Millisecond
	mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Instances: 2}})
	b, err := r.Acquire("b", "")
	if err != nil {
		t.Fatal(err)
	}
	b2, err := r.Acquire("b", "1")
	if err != nil || b2 != b {
		t.Fatalf("second Acquire = %v, %v", b2, err)
	}
	applied := make(chan Report, 1)
	go func() {
		rep, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Instances: 2}}})
		if err != nil {
			t.Error(err)
		}
		applied <- rep
	}()
	enginestest.WaitFor(t, func() bool { _, err := r.Get("b", ""); return errors.Is(err, ErrNotFound) })
	if _, err := r.Acquire("b", ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("Acquire of a removed model = %v", err)
	}
	time.Sleep(20 * time.Millisecond)
	select {
	case <-applied:
		t.Fatal("Apply closed a version still held")
	default:
	}
	if ok, _ := b.Ready(); !ok {
		t.Error("a held version turned unavailable before its release")
	}
	for _, held := range []*Version{b, b2} {
		if err := held.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(3)}, engines.RunOptions{}, func(out []bridge.Tensor) error {
			if got := enginestest.FirstF32(out[0]); got != 6 {
				t.Errorf("output %v, want 6", got)
			}
			return nil
		}); err != nil {
			t.Errorf("Do on a held version during its removal: %v", err)
		}
	}
	b.Release()
	time.Sleep(10 * time.Millisecond)
	select {
	case <-applied:
		t.Fatal("Apply returned with one holder left")
	default:
	}
	b2.Release()
	rep := <-applied
	checkReport(t, rep, nil, nil, []string{"b@1.0.0"}, nil, 1)
	if rep.Unloaded[0].Unload < 20*time.Millisecond {
		t.Errorf("unload took %v, want the wait for the holders included", rep.Unloaded[0].Unload)
	}
	if got := f.Closed.Load(); got != 2 {
		t.Errorf("%d contexts closed, want b's 2", got)
	}
	if n := len(logs.FilterMessage("unloading model version: still waiting for requests that hold it").All()); n == 0 {
		t.Error("no warning while waiting for the holders")
	}
	if n := len(logs.FilterMessage("model version unloaded").All()); n != 1 {
		t.Errorf("%d 'model version unloaded' logs, want 1", n)
	}
	if err := b.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(3)}, engines.RunOptions{}, nil); !errors.Is(err, engines.ErrClosed) {
		t.Errorf("Do after the removal = %v, want engines.ErrClosed", err)
	}
}

// Many goroutines acquire, run and release while Apply flips instances, adds and removes a
// version: no request fails.
func TestApplyUnderLoadFake(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	r, f := fakeRepository(t, &applyLoader{})
	mustApply(t, r, Desired{Dir: dir, QueueLen: 1024})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures atomic.Int64
	for g := range 8 {
		wg.Go(func() {
			in := []bridge.Tensor{enginestest.F32Tensor(float32(g))}
			for {
				select {
				case <-stop:
					return
				default:
				}
				v, err := r.Acquire("a", "")
				if err != nil {
					failures.Add(1)
					t.Errorf("Acquire: %v", err)
					return
				}
				err = v.Do(context.Background(), in, engines.RunOptions{}, func(out []bridge.Tensor) error {
					if got := enginestest.FirstF32(out[0]); got != 2*float32(g) {
						return errors.New("wrong output")
					}
					return nil
				})

				v.Release()
				requests.Add(1)
				if err != nil {
					failures.Add(1)
					t.Errorf("Do: %v", err)
					return
				}
				// Pause a little: 8 spinning clients on 2 Ps starve the pools' OS-locked
				// workers, and a retire then waits seconds for the one request it holds.
				time.Sleep(20 * time.Microsecond)
			}
		})
	}
	v2 := filepath.Join(dir, "a", "2.0.0")
	deadline := time.Now().Add(300 * time.Millisecond)
	for i := 0; time.Now().Before(deadline); i++ {
		checkReport(t, mustApply(t, r, Desired{Dir: dir, QueueLen: 1024, Default: ModelSpec{Instances: 2}}), nil, []string{"a@1.0.0"}, nil, nil, 0)
		if err := os.MkdirAll(v2, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v2, ModelFile), []byte("ok"), 0o644); err != nil {
			t.Fatal(err)
		}
		seal(t, v2, nil)
		checkReport(t, mustApply(t, r, Desired{Dir: dir, QueueLen: 1024, Default: ModelSpec{Instances: 2}}), []string{"a@2.0.0"}, nil, nil, nil, 1)
		if err := os.RemoveAll(v2); err != nil {
			t.Fatal(err)
		}
		checkReport(t, mustApply(t, r, Desired{Dir: dir, QueueLen: 1024}), nil, []string{"a@1.0.0"}, []string{"a@2.0.0"}, nil, 0)
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 || requests.Load() == 0 {
		t.Errorf("%d of %d requests failed", failures.Load(), requests.Load())
	}
	r.Close()
	made := len(f.Made())
	if got := int(f.Closed.Load()); got != made {
		t.Errorf("%d contexts made, %d closed", made, got)
	}
}

func TestApplyIsSerialized(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok", "b/1.0.0/model.onnx": "ok"})
	l := &applyLoader{delay: 5 * time.Millisecond}
	r, _ := fakeRepository(t, l)
	mustApply(t, r, Desired{Dir: dir})
	var wg sync.WaitGroup
	reports := make([]Report, 6)
	for i := range reports {
		wg.Go(func() {
			reports[i] = mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Instances: 1 + i%2}})
		})
	}
	wg.Wait()
	if m := l.maxIn.Load(); m != 1 {
		t.Errorf("%d engines built at once, want 1: Apply calls overlapped", m)
	}
	for i, rep := range reports {
		if n := len(rep.Reloaded) + rep.Unchanged; n != 2 || len(rep.Loaded)+len(rep.Unloaded)+len(rep.Failed) != 0 {
			t.Errorf("Apply %d: %s; want a and b each reloaded or unchanged", i, &rep)
		}
	}
}

func TestApplyAndAcquireAfterClose(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	r, f := fakeRepository(t, &applyLoader{})
	mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Instances: 3}})
	v, err := r.Acquire("a", "")
	if err != nil {
		t.Fatal(err)
	}
	closed := make(chan struct{})
	go func() { r.Close(); close(closed) }()
	enginestest.WaitFor(t, func() bool {
		w, err := r.Acquire("a", "")
		if err == nil {
			w.Release()
		}
		return errors.Is(err, engines.ErrClosed)
	})
	if err := v.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(1)}, engines.RunOptions{}, func([]bridge.Tensor) error { return nil }); err != nil {
		t.Errorf("held version during Close: %v", err)
	}
	v.Release()
	<-closed
	if got := f.Closed.Load(); got != 3 {
		t.Errorf("%d contexts closed, want 3", got)
	}
	if _, err := r.Apply(Desired{Dir: dir}); !errors.Is(err, engines.ErrClosed) {
		t.Errorf("Apply after Close = %v", err)
	}
	if ok, reason := v.Ready(); ok || reason != "repository closed" {
		t.Errorf("after Close: %v %q", ok, reason)
	}
}

func TestReleaseMoreThanAcquiredPanics(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	mustApply(t, r, Desired{Dir: dir})
	v, _ := r.Acquire("a", "1")
	v.Release()
	defer func() {
		if recover() == nil {
			t.Error("a second Release did not panic")
		}
		v.refs.Store(0)
	}()
	v.Release()
}

func TestAcquireAllocatesNothing(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	mustApply(t, r, Desired{Dir: dir})
	if n := testing.AllocsPerRun(100, func() {
		v, err := r.Acquire("a", "")
		if err != nil {
			t.Fatal(err)
		}
		v.Release()
	}); n != 0 {
		t.Errorf("Acquire+Release: %v allocations, want 0", n)
	}
}
