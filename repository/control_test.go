package repository

import (
	"errors"
	"fmt"
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

// hammer runs n goroutines that acquire model@version and run it until stop is closed; check
// sees the version each request was answered by. It returns the number of requests and
// failures when stopped (wait).
func hammer(t *testing.T, r *Repository, n int, model, version string, check func(v string) error) (stop func() (requests, failures int64)) {
	t.Helper()
	done := make(chan struct{})
	var wg sync.WaitGroup
	var reqs, fails atomic.Int64
	for g := range n {
		wg.Go(func() {
			in := []bridge.Tensor{enginestest.F32Tensor(float32(g))}
			for {
				select {
				case <-done:
					return
				default:
				}
				reqs.Add(1)
				err := func() error {
					v, err := r.Acquire(model, version)
					if err != nil {
						return err
					}
					defer v.Release()
					if err := check(v.Version()); err != nil {
						return err
					}
					return v.Do(t.Context(), in, engines.RunOptions{}, func(out []bridge.Tensor) error {
						if got := enginestest.FirstF32(out[0]); got != 2*float32(g) {
							return fmt.Errorf("output %v, want %v", got, 2*float32(g))
						}
						return nil
					})

				}()
				if err != nil {
					if fails.Add(1) <= 5 {
						t.Errorf("%s@%q: %v", model, version, err)
					}
				}
				time.Sleep(20 * time.Microsecond) // let the pools' workers run (see TestApplyUnderLoadFake)
			}
		})
	}
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return reqs.Load(), fails.Load()
	}
}

// Rollback under load: 16 goroutines ask for the model without a version while the default
// flips between two versions 50 times. No request fails, each is answered by one of the two,
// and each switch is a table store measured in microseconds.
func TestSetDefaultUnderLoad(t *testing.T) {
	dir := writeRepo(t, map[string]string{"m/1.0.0/model.onnx": "one", "m/2.0.0/model.onnx": "two"})
	r, _ := fakeRepository(t, &applyLoader{})
	mustApply(t, r, Desired{Dir: dir, QueueLen: 1024})
	if def, pinned := r.DefaultVersion("m"); def != "2.0.0" || pinned {
		t.Fatalf("default %s pinned %v, want 2.0.0 unpinned", def, pinned)
	}
	var seen [2]atomic.Int64
	stop := hammer(t, r, 16, "m", "", func(v string) error {
		switch v {
		case "1.0.0":
			seen[0].Add(1)
		case "2.0.0":
			seen[1].Add(1)
		default:
			return fmt.Errorf("answered by %s", v)
		}
		return nil
	})
	var worst, total time.Duration
	for i := range 50 {
		want := []string{"1.0.0", "v2.0.0"}[i%2]
		took, err := r.SetDefault("m", want)
		if err != nil {
			t.Fatalf("SetDefault(%s): %v", want, err)
		}
		worst, total = max(worst, took), total+took
		if v, _ := r.Get("m", ""); "v"+v.Version() != want && v.Version() != want {
			t.Fatalf("after SetDefault(%s) the default is %s", want, v.Version())
		}
		time.Sleep(2 * time.Millisecond)
	}
	reqs, fails := stop()
	t.Logf("50 switches: mean %v, worst %v; %d requests (%d on 1.0.0, %d on 2.0.0), %d failed",
		total/50, worst, reqs, seen[0].Load(), seen[1].Load(), fails)
	if fails != 0 {
		t.Errorf("%d of %d requests failed", fails, reqs)
	}
	if seen[0].Load() == 0 || seen[1].Load() == 0 {
		t.Error("requests did not see both versions")
	}
	if worst > 50*time.Millisecond {
		t.Errorf("worst switch took %v, want < 50ms", worst)
	}
	if def, pinned := r.DefaultVersion("m"); def != "2.0.0" || !pinned {
		t.Errorf("default %s pinned %v, want 2.0.0 pinned", def, pinned)
	}
}

// SetDefault refuses what it cannot pin; a pin survives an Apply while its version serves
// and is cleared once it does not; "" unpins.
func TestSetDefaultRules(t *testing.T) {
	dir := writeRepo(t, map[string]string{
		"m/1.0.0/model.onnx": "one", "m/2.0.0/model.onnx": "two", "m/3.0.0/model.onnx": "bad three",
	})
	r, _ := fakeRepository(t, &applyLoader{})
	d := Desired{Dir: dir}
	mustApply(t, r, d)
	var nf *NotFoundError
	var ue *UnavailableError
	if _, err := r.SetDefault("nope", "1.0.0"); !errors.As(err, &nf) {
		t.Errorf("unknown model: %v", err)
	}
	if _, err := r.SetDefault("m", "9.0.0"); !errors.As(err, &nf) || nf.Version != "9.0.0" {
		t.Errorf("unknown version: %v", err)
	}
	if _, err := r.SetDefault("m", "3.0.0"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "bad three") {
		t.Errorf("unavailable version: %v", err)
	}
	if def, pinned := r.DefaultVersion("m"); def != "2.0.0" || pinned {
		t.Errorf("after refused pins: %s %v", def, pinned)
	}
	if _, err := r.SetDefault("m", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	// An unrelated Apply keeps the pin.
	mustApply(t, r, Desired{Dir: dir, Default: ModelSpec{Instances: 2}})
	if def, pinned := r.DefaultVersion("m"); def != "1.0.0" || !pinned {
		t.Errorf("after an Apply: %s %v, want 1.0.0 pinned", def, pinned)
	}
	// Unpin.
	if _, err := r.SetDefault("m", ""); err != nil {
		t.Fatal(err)
	}
	if def, pinned := r.DefaultVersion("m"); def != "2.0.0" || pinned {
		t.Errorf("after unpin: %s %v", def, pinned)
	}
	// The pinned version leaves: the pin is cleared.
	if _, err := r.SetDefault("m", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Version: ">=2"}}})
	if def, pinned := r.DefaultVersion("m"); def != "2.0.0" || pinned {
		t.Errorf("after the pinned version left: %s %v", def, pinned)
	}
	if d, p := r.DefaultVersion("ghost"); d != "" || p {
		t.Errorf("DefaultVersion of an unknown model: %q %v", d, p)
	}
}

// Load and Unload switch versions off and on under load without failing a request of the
// versions that stay; Index says what is off and why.
func TestLoadUnloadUnderLoad(t *testing.T) {
	dir := writeRepo(t, map[string]string{
		"m/1.0.0/model.onnx": "one", "m/2.0.0/model.onnx": "two", "n/1.0.0/model.onnx": "n",
	})
	r, _ := fakeRepository(t, &applyLoader{})
	mustApply(t, r, Desired{Dir: dir, QueueLen: 1024})
	ok := func(string) error { return nil }
	stopM := hammer(t, r, 8, "m", "1.0.0", ok)
	stopN := hammer(t, r, 8, "n", "", ok)
	for i := range 20 {
		if err := r.Unload("m", "2.0.0"); err != nil {
			t.Fatalf("Unload %d: %v", i, err)
		}
		if _, err := r.Get("m", "2.0.0"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unloaded m@2.0.0: %v", err)
		}
		if v, _ := r.Get("m", ""); v.Version() != "1.0.0" {
			t.Fatalf("default with 2.0.0 unloaded: %s", v.Version())
		}
		if err := r.Load("m", "v2.0.0"); err != nil {
			t.Fatalf("Load %d: %v", i, err)
		}
	}
	for _, stop := range []func() (int64, int64){stopM, stopN} {
		if reqs, fails := stop(); fails != 0 || reqs == 0 {
			t.Errorf("%d of %d requests failed", fails, reqs)
		}
	}

	// The whole model off: it is not served, the index lists each version UNLOADED; loading one
	// version brings back only that one.
	if err := r.Unload("m", ""); err != nil {
		t.Fatal(err)
	}
	if err := r.Unload("m", ""); err != nil {
		t.Errorf("a second Unload: %v", err)
	}
	if got := r.Models(); !reflect.DeepEqual(got, []string{"n"}) {
		t.Errorf("Models() = %v with m unloaded", got)
	}
	index := func() []string {
		var out []string
		for _, e := range r.Index() {
			out = append(out, e.Model+"@"+e.Version+" "+e.State.String())
			if e.State == StateUnloaded && (e.Reason != reasonUnloaded || !e.Unloaded) {
				t.Errorf("%+v: reason", e)
			}
		}
		return out
	}
	if got, want := index(), []string{"m@1.0.0 UNLOADED", "m@2.0.0 UNLOADED", "n@1.0.0 READY"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Index() = %v, want %v", got, want)
	}
	// An Apply keeps it off.
	mustApply(t, r, Desired{Dir: dir, QueueLen: 1024})
	if err := r.Load("m", "1.0.0"); err != nil {
		t.Fatal(err)
	}
	if got, want := index(), []string{"m@1.0.0 READY", "m@2.0.0 UNLOADED", "n@1.0.0 READY"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Index() = %v, want %v", got, want)
	}
	if err := r.Load("m", ""); err != nil {
		t.Fatal(err)
	}
	if got, want := index(), []string{"m@1.0.0 READY", "m@2.0.0 READY", "n@1.0.0 READY"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Index() = %v, want %v", got, want)
	}

	// Errors: unknown models and versions, versions the desired state does not select, a
	// version that fails to load.
	var nf *NotFoundError
	for _, tt := range []struct {
		load             bool
		model, ver, want string
	}{
		{false, "ghost", "", `unknown model "ghost"`},
		{false, "m", "9.0.0", `unknown version "9.0.0" of model "m"`},
		{true, "ghost", "", `unknown model "ghost"`},
		{true, "m", "9.0.0", `unknown version "9.0.0" of model "m"`},
		{true, "m", "latest", `unknown version "latest" of model "m": not a semantic version`},
	} {
		op := r.Unload
		if tt.load {
			op = r.Load
		}
		if err := op(tt.model, tt.ver); !errors.As(err, &nf) || err.Error() != tt.want {
			t.Errorf("load=%v %s@%s: %v, want %q", tt.load, tt.model, tt.ver, err, tt.want)
		}
	}
	mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Version: ">=2"}, {Name: "n"}}})
	if err := r.Load("m", "1.0.0"); !errors.As(err, &nf) || !strings.Contains(err.Error(), "not selected by the configuration (m: version >=2)") {
		t.Errorf("Load of a version the configuration excludes: %v", err)
	}
	writeRepoFile(t, dir, "m/3.0.0/model.onnx", "bad three")
	var ue *UnavailableError
	if err := r.Load("m", "3.0.0"); !errors.As(err, &ue) || !strings.Contains(err.Error(), "bad three") {
		t.Errorf("Load of a version that fails: %v", err)
	}
}

// writeRepoFile writes one file (MODEL/VERSION/PATH) into the repository dir and seals its
// version folder.
func writeRepoFile(t *testing.T, dir, path, content string) {
	t.Helper()
	parts := strings.SplitN(path, "/", 3)
	putVersion(t, dir, parts[0], parts[1], map[string]string{parts[2]: content}, nil)
}
