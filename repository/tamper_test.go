package repository

import (
	"crypto/ed25519"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/engines/enginestest"
)

// What Apply does with a version whose files change after it loaded, for both values of
// Desired.KeepTampered (config artifacts.on_tamper): retire refuses it and retires its engine;
// keep serves on from the engine loaded from the verified files, with the failure reported
// (hook, warn log, Report.Failed, the ready version's reason) until the files verify again. A
// version tampered before it loaded is refused either way, and so is a kept one once what it
// is verified against is tightened.
func TestOnTamperAfterLoad(t *testing.T) {
	for _, keep := range []bool{false, true} {
		name := map[bool]string{false: "retire", true: "keep"}[keep]
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			putVersion(t, dir, "m", "1.0.0", map[string]string{ModelFile: "one"}, nil)
			vdir, digest := putVersion(t, dir, "m", "2.0.0", map[string]string{ModelFile: "two"}, nil)
			early, _ := putVersion(t, dir, "m", "3.0.0", map[string]string{ModelFile: "three"}, nil)
			if err := os.WriteFile(filepath.Join(early, ModelFile), []byte("thr3e"), 0o644); err != nil {
				t.Fatal(err)
			}
			log, logs := observedLogger()
			r, _ := fakeRepository(t, &applyLoader{})
			r.log = log
			h := &hook{}
			d := Desired{Dir: dir, OnVerifyFailure: h.fn, KeepTampered: keep}
			rep := mustApply(t, r, d)
			checkReport(t, rep, []string{"m@1.0.0", "m@2.0.0"}, nil, nil, []string{"m@3.0.0"}, 0)
			v2, _ := r.Get("m", "2.0.0")
			if got := h.take(); len(got) != 1 || !strings.Contains(got["m@3.0.0"], "sha256 mismatch") {
				t.Errorf("hook calls at the first load: %v", got)
			}

			if err := os.WriteFile(filepath.Join(vdir, ModelFile), []byte("tw0"), 0o644); err != nil {
				t.Fatal(err)
			}
			rep = mustApply(t, r, d)
			checkReport(t, rep, nil, nil, nil, []string{"m@2.0.0", "m@3.0.0"}, 1)
			if got := state(r, "m", "3.0.0"); !strings.HasPrefix(got, "UNAVAILABLE: artifact verification failed") {
				t.Errorf("m@3.0.0, tampered before it loaded: %s", got)
			}
			if got := h.take(); !strings.Contains(got["m@2.0.0"], "model.onnx: sha256 mismatch") || got["m@3.0.0"] == "" {
				t.Errorf("hook calls after tampering: %v", got)
			}
			run := func(v *Version) error {
				return v.Do(t.Context(), []bridge.Tensor{enginestest.F32Tensor(3)}, engines.RunOptions{}, func(out []bridge.Tensor) error {
					if got := enginestest.FirstF32(out[0]); got != 6 {
						t.Errorf("output %v, want 6", got)
					}
					return nil
				})
			}
			cur, _ := r.Get("m", "2.0.0")
			if !keep {
				if rep.Failed[0].KeptPrevious || !strings.Contains(rep.Failed[0].Reason, "model.onnx: sha256 mismatch") {
					t.Errorf("failed %+v", rep.Failed[0])
				}
				if v2.State() != StateUnavailable || cur == v2 {
					t.Error("the engine of the tampered version still serves")
				}
				var ue *UnavailableError
				if err := run(cur); !errors.As(err, &ue) {
					t.Errorf("the tampered version answers: %v", err)
				}
				if v, _ := r.Get("m", ""); v.Version() != "1.0.0" {
					t.Errorf("default = %s, want 1.0.0", v.Version())
				}
				if n := len(logs.FilterMessage("model version refused: artifact verification failed").FilterField(zap.String("version", "2.0.0")).All()); n != 1 {
					t.Errorf("%d error logs for m@2.0.0, want 1", n)
				}
				return
			}

			// keep: the same version, ready, answering, its warning everywhere.
			if f := rep.Failed[0]; !f.KeptPrevious || !strings.Contains(f.Reason, "model.onnx: sha256 mismatch") || !strings.Contains(f.Reason, "on_tamper: keep") {
				t.Errorf("failed %+v, want kept with the reason", f)
			}
			if cur != v2 || v2.Digest() != digest {
				t.Fatalf("m@2.0.0 is %p (digest %s), want the loaded %p", cur, cur.Digest(), v2)
			}
			ok, reason := v2.Ready()
			if !ok || !strings.Contains(reason, "artifact verification failed: m@2.0.0: model.onnx: sha256 mismatch") ||
				!strings.Contains(reason, "still serving the engine loaded from the verified files") {
				t.Errorf("Ready() = %v, %q", ok, reason)
			}
			if err := run(v2); err != nil {
				t.Errorf("the kept version: %v", err)
			}
			if v, _ := r.Get("m", ""); v != v2 {
				t.Errorf("default = %s, want the kept 2.0.0", v.Version())
			}
			var entry IndexEntry
			for _, e := range r.Index() {
				if e.Model == "m" && e.Version == "2.0.0" {
					entry = e
				}
			}
			if entry.State != StateReady || entry.Reason != reason {
				t.Errorf("index entry %+v, want READY with the reason", entry)
			}
			warns := logs.FilterMessage("model version kept serving: its artifact failed verification after it loaded").All()
			if len(warns) != 1 || warns[0].Level != zap.WarnLevel || asString(warns[0].ContextMap()["reason"]) != reason {
				t.Errorf("warn logs %v", warns)
			}
			if n := len(logs.FilterMessage("model version refused: artifact verification failed").FilterField(zap.String("version", "2.0.0")).All()); n != 0 {
				t.Errorf("%d refusal logs for the kept version", n)
			}

			// Every Apply checks again and keeps it; restored files clear the warning.
			rep = mustApply(t, r, d)
			checkReport(t, rep, nil, nil, nil, []string{"m@2.0.0", "m@3.0.0"}, 1)
			if got := h.take(); got["m@2.0.0"] != reason {
				t.Errorf("hook calls on the next Apply: %v", got)
			}
			if err := os.WriteFile(filepath.Join(vdir, ModelFile), []byte("two"), 0o644); err != nil {
				t.Fatal(err)
			}
			rep = mustApply(t, r, d)
			checkReport(t, rep, nil, nil, nil, []string{"m@3.0.0"}, 2)
			if cur, _ := r.Get("m", "2.0.0"); cur != v2 {
				t.Error("the restored version was reloaded")
			}
			if ok, reason := v2.Ready(); !ok || reason != "" {
				t.Errorf("after the repair: Ready() = %v, %q", ok, reason)
			}
			if n := len(logs.FilterMessage("model version's artifact verifies again").All()); n != 1 {
				t.Errorf("%d logs that it verifies again, want 1", n)
			}

			// A tightened requirement (trusted keys now) refuses it even with keep.
			if err := os.WriteFile(filepath.Join(vdir, ModelFile), []byte("tw0"), 0o644); err != nil {
				t.Fatal(err)
			}
			d.TrustedKeys = []ed25519.PublicKey{pub(newKey(t))}
			mustApply(t, r, d)
			if got := state(r, "m", "2.0.0"); !strings.HasPrefix(got, "UNAVAILABLE: artifact verification failed") {
				t.Errorf("kept version once trusted keys are required: %s", got)
			}
			if v2.State() != StateUnavailable {
				t.Error("the engine of the refused version still serves")
			}
		})
	}
}

// Every scan removes the work that interrupted adds left (an hour old), logging each, and
// leaves the work of an add that may still run.
func TestScanRemovesStaleWork(t *testing.T) {
	dir := writeRepo(t, map[string]string{
		"a/1.0.0/model.onnx":         "x",
		"a/.tmp-1.1.0-1/model.onnx":  "half",
		"a/.tmp-1.2.0-2/model.onnx":  "being written",
		"b/.tmp-1.0.0-3/model.onnx":  "half",
		"b/2.0.0/model.onnx":         "x",
		"b/2.0.0/engines/c/e.engine": "x",
	})
	old := time.Now().Add(-2 * artifacts.StaleAge)
	for _, p := range []string{"a/.tmp-1.1.0-1", "b/.tmp-1.0.0-3", "b/2.0.0"} {
		err := filepath.WalkDir(filepath.Join(dir, p), func(p string, _ fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Chtimes(p, old, old)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	log, logs := observedLogger()
	got, err := scan(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range got {
		names = append(names, f.model+"@"+f.version)
	}
	if want := []string{"a@1.0.0", "b@2.0.0"}; !reflect.DeepEqual(names, want) {
		t.Errorf("scan found %v, want %v", names, want)
	}
	for p, want := range map[string]bool{"a/.tmp-1.1.0-1": false, "b/.tmp-1.0.0-3": false, "a/.tmp-1.2.0-2": true, "b/2.0.0": true} {
		if _, err := os.Stat(filepath.Join(dir, p)); (err == nil) != want {
			t.Errorf("%s: present %v, want %v", p, err == nil, want)
		}
	}
	var removed []string
	for _, e := range logs.FilterMessage("removed the stale work folder of an interrupted add").All() {
		removed = append(removed, asString(e.ContextMap()["path"]))
	}
	if want := []string{filepath.Join(dir, "a/.tmp-1.1.0-1"), filepath.Join(dir, "b/.tmp-1.0.0-3")}; !reflect.DeepEqual(removed, want) {
		t.Errorf("logged removals %v, want %v", removed, want)
	}
}
