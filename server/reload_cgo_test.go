//go:build cgo

package server

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/repository"
)

const mlpSmall = "../../shared/peers/models/mlp-small.onnx"

// A hot reload under HTTP load fails no request: clients infer on model A (default version and
// version 1) and poll /v2/health/ready while Repository.Apply flips A's instances, adds and
// removes A@2, and adds and removes model B. Every answer is 200 with the same outputs.
func TestReloadUnderLoadFailsNoRequest(t *testing.T) {
	rt, model := nativeRuntime(t, mlpSmall)
	dir := t.TempDir()
	put := func(name, version string) {
		t.Helper()
		addArtifact(t, dir, name, version, model, nil)
	}
	put("A", "1.0.0")
	put("B", "1.0.0")
	repo := repository.NewRepository(rt, nil)
	defer repo.Close()
	desired := func(instances int, withB bool) repository.Desired {
		d := repository.Desired{Dir: dir, QueueLen: 4096, Models: []repository.ModelSpec{{Name: "A", Instances: instances}}}
		if withB {
			d.Models = append(d.Models, repository.ModelSpec{Name: "B"})
		}
		return d
	}
	if _, err := repo.Apply(desired(1, false)); err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, NewRegistry(repo), Options{})

	body := []byte(`{"inputs":[{"name":"obs","shape":[2,8],"datatype":"FP32","data":[` +
		strings.TrimSuffix(strings.Repeat("0.5,-0.25,", 8), ",") + `]}]}`)
	type answer struct {
		Outputs []struct {
			Name string    `json:"name"`
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	outputs := func(r response) (any, bool) {
		var a answer
		if r.status != 200 || json.Unmarshal(r.body, &a) != nil {
			return nil, false
		}
		return a.Outputs, true
	}
	want, ok := outputs(ts.do(t, "POST", "/v2/models/A/infer", body))
	if !ok {
		t.Fatal("first request failed")
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var requests, failures, probes atomic.Int64
	fail := func(format string, args ...any) {
		if failures.Add(1) <= 10 {
			t.Errorf(format, args...)
		}
	}
	for g := range 8 {
		path := "/v2/models/A/infer"
		if g%2 == 1 {
			path = "/v2/models/A/versions/v1.0.0/infer"
		}
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := ts.do(t, "POST", path, body)
				requests.Add(1)
				if got, ok := outputs(r); !ok || !reflect.DeepEqual(got, want) {
					fail("POST %s = %d %s", path, r.status, r.body)
				}
			}
		})
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, path := range []string{"/v2/health/ready", "/v2/models/A/ready", "/v2/models/A"} {
				if r := ts.do(t, "GET", path, nil); r.status != 200 {
					fail("GET %s = %d %s", path, r.status, r.body)
				}
				probes.Add(1)
			}
		}
	})

	steps := []func() repository.Desired{
		func() repository.Desired { return desired(2, false) },
		func() repository.Desired { return desired(2, true) },
		func() repository.Desired { return desired(2, false) },
		func() repository.Desired { put("A", "2.0.0"); return desired(2, false) },
		func() repository.Desired {
			if err := os.RemoveAll(filepath.Join(dir, "A", "2.0.0")); err != nil {
				t.Error(err)
			}
			return desired(2, false)
		},
		func() repository.Desired { return desired(1, false) },
	}
	applies := 0
	for deadline := time.Now().Add(1500 * time.Millisecond); time.Now().Before(deadline) || applies < len(steps); applies++ {
		rep, err := repo.Apply(steps[applies%len(steps)]())
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Failed) != 0 || !rep.Changed() {
			t.Errorf("apply %d: %s", applies, &rep)
		}
	}
	time.Sleep(20 * time.Millisecond)
	close(stop)
	wg.Wait()
	t.Logf("%d applies, %d inference requests, %d probes", applies, requests.Load(), probes.Load())
	if n := failures.Load(); n != 0 {
		t.Errorf("%d requests failed", n)
	}
}
