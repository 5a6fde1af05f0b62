package repository

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// Tests of artifact verification, version constraints and digest pins, with fake engines
// (no native library needed).

func newKey(t *testing.T) ed25519.PrivateKey {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func pub(k ed25519.PrivateKey) ed25519.PublicKey { return k.Public().(ed25519.PublicKey) }

// putVersion writes files (path → content) into DIR/model/version and seals it with key (nil:
// unsigned). It returns the version folder and the artifact's digest.
func putVersion(t *testing.T, dir, model, version string, files map[string]string, key ed25519.PrivateKey) (string, string) {
	t.Helper()
	vdir := filepath.Join(dir, model, version)
	for p, c := range files {
		full := filepath.Join(vdir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return vdir, seal(t, vdir, key)
}

type verifyFailure struct{ model, version, reason string }

// hook records OnVerifyFailure calls.
type hook struct {
	mu    sync.Mutex
	calls []verifyFailure
}

func (h *hook) fn(model, version, reason string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, verifyFailure{model, version, reason})
}

func (h *hook) take() map[string]string {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := map[string]string{}
	for _, c := range h.calls {
		out[c.model+"@"+c.version] = c.reason
	}
	h.calls = nil
	return out
}

// state returns "READY" or "UNAVAILABLE: reason" of model@version, or "absent".
func state(r *Repository, model, version string) string {
	v := r.cur.Load().find(model, version)
	if v == nil {
		return "absent"
	}
	if ok, reason := v.Ready(); !ok {
		return "UNAVAILABLE: " + reason
	}
	return "READY"
}

// Every kind of tampering is caught: the tampered version is UNAVAILABLE with a reason naming
// the file, reported to the hook and logged at error level, while the other version of the
// same model serves and is the default.
func TestTamperedVersionsNeverServe(t *testing.T) {
	trusted, forger := newKey(t), newKey(t)
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "evil.onnx")
	if err := os.WriteFile(outside, []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	model := map[string]string{ModelFile: "ok model", "engines/cpu.bin": "cache"}
	cases := []struct {
		name   string
		tamper func(vdir string)
		want   []string // substrings of the reason
	}{
		{"flipped-byte", func(vdir string) {
			p := filepath.Join(vdir, ModelFile)
			b, _ := os.ReadFile(p)
			b[3] ^= 0x01
			os.WriteFile(p, b, 0o644)
		}, []string{"model.onnx: sha256 mismatch"}},
		{"replaced-file", func(vdir string) {
			os.WriteFile(filepath.Join(vdir, ModelFile), []byte("another model entirely"), 0o644)
		}, []string{"model.onnx: size mismatch"}},
		{"extra-file", func(vdir string) {
			os.WriteFile(filepath.Join(vdir, "engines", "extra.bin"), []byte("x"), 0o644)
		}, []string{"engines/extra.bin: not listed in the manifest"}},
		{"missing-file", func(vdir string) {
			os.Remove(filepath.Join(vdir, "engines", "cpu.bin"))
		}, []string{"engines/cpu.bin: missing"}},
		{"edited-manifest", func(vdir string) {
			p := filepath.Join(vdir, artifacts.ManifestFile)
			b, _ := os.ReadFile(p)
			os.WriteFile(p, []byte(strings.Replace(string(b), `"tool": "engines test"`, `"tool": "engines test!"`, 1)), 0o644)
		}, []string{"manifest.sig", "signature"}},
		{"stripped-signature", func(vdir string) {
			os.Remove(filepath.Join(vdir, artifacts.SignatureFile))
		}, []string{"unsigned"}},
		{"forged-signature", func(vdir string) {
			seal(t, vdir, forger)
		}, []string{"manifest.sig"}},
		{"symlink-out", func(vdir string) {
			p := filepath.Join(vdir, ModelFile)
			os.Remove(p)
			os.Symlink(outside, p)
		}, []string{"model.onnx: is a symlink", outside}},
		{"no-manifest", func(vdir string) {
			os.Remove(filepath.Join(vdir, artifacts.ManifestFile))
			os.Remove(filepath.Join(vdir, artifacts.SignatureFile))
		}, []string{"no manifest.json", "policyctl artifacts add --repository " + dir + " --name no-manifest --version 2.0.0"}},
	}
	for _, c := range cases {
		putVersion(t, dir, c.name, "1.0.0", model, trusted)
		vdir, _ := putVersion(t, dir, c.name, "2.0.0", model, trusted)
		c.tamper(vdir)
	}
	// A version folder that is a symlink, a model folder that leads out of the repository,
	// and a folder that is not named by a canonical version.
	putVersion(t, dir, "linked-version", "1.0.0", model, trusted)
	elsewhere, _ := putVersion(t, t.TempDir(), "linked-version", "2.0.0", model, trusted)
	if err := os.Symlink(elsewhere, filepath.Join(dir, "linked-version", "2.0.0")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	outRepo := t.TempDir()
	putVersion(t, outRepo, "linked-model", "2.0.0", model, trusted)
	if err := os.Symlink(filepath.Join(outRepo, "linked-model"), filepath.Join(dir, "linked-model")); err != nil {
		t.Fatal(err)
	}
	putVersion(t, dir, "integer-folder", "1.0.0", model, trusted)
	if err := os.MkdirAll(filepath.Join(dir, "integer-folder", "2"), 0o755); err != nil {
		t.Fatal(err)
	}
	putVersion(t, dir, "integer-folder", "v3.0.0", model, trusted)

	h := &hook{}
	log, logs := observedLogger()
	r := NewRepository(&applyLoader{}, log)
	t.Cleanup(func() { r.Close() })
	r.newRunner = func(_ []*bridge.Engine, o engines.PoolOptions) (engines.Runner, error) {
		return engines.NewPoolFunc((&fakeFactory{}).newCtx, 1, o)
	}
	mustApply(t, r, Desired{Dir: dir, TrustedKeys: []ed25519.PublicKey{pub(trusted)}, OnVerifyFailure: h.fn})

	refused := h.take()
	check := func(model, version string, want ...string) {
		t.Helper()
		got := state(r, model, version)
		if !strings.HasPrefix(got, "UNAVAILABLE: artifact verification failed: ") {
			t.Errorf("%s@%s: %s, want refused", model, version, got)
			return
		}
		for _, w := range want {
			if !strings.Contains(got, w) {
				t.Errorf("%s@%s: reason %q lacks %q", model, version, got, w)
			}
		}
		if refused[model+"@"+version] == "" {
			t.Errorf("%s@%s: no OnVerifyFailure call", model, version)
		}
		if v, err := r.Get(model, ""); model != "linked-model" && (err != nil || v.Version() == version) {
			t.Errorf("%s: default = %v, %v; want the untampered version", model, v, err)
		}
		if v, _ := r.Get(model, version); v.Digest() != "" {
			t.Errorf("%s@%s: refused version has digest %q", model, version, v.Digest())
		}
	}
	for _, c := range cases {
		if got := state(r, c.name, "1.0.0"); got != "READY" {
			t.Errorf("%s@1.0.0 beside a tampered version: %s", c.name, got)
		}
		check(c.name, "2.0.0", c.want...)
	}
	check("linked-version", "2.0.0", "is a symlink")
	check("linked-model", "2.0.0", "outside the repository")
	check("integer-folder", "2", `version "2" is not a semantic version`)
	check("integer-folder", "v3.0.0", "rename it to 3.0.0")
	if n := len(logs.FilterMessage("model version refused: artifact verification failed").FilterLevelExact(zap.ErrorLevel).All()); n != len(refused) {
		t.Errorf("%d error logs for %d refused versions", n, len(refused))
	}
	if len(refused) != len(cases)+4 {
		t.Errorf("%d versions refused, want %d: %v", len(refused), len(cases)+4, refused)
	}
}

// A file tampered with after its version loaded is caught by the next Apply: the version stops
// serving (its engine is retired, not kept) and the default moves; once the artifact is
// restored, Load (or the next Apply) serves it again.
func TestTamperedAfterLoadCaughtOnNextApply(t *testing.T) {
	dir := t.TempDir()
	putVersion(t, dir, "m", "1.0.0", map[string]string{ModelFile: "one"}, nil)
	vdir, digest := putVersion(t, dir, "m", "2.0.0", map[string]string{ModelFile: "two"}, nil)
	r, _ := fakeRepository(t, &applyLoader{})
	h := &hook{}
	d := Desired{Dir: dir, OnVerifyFailure: h.fn}
	mustApply(t, r, d)
	v2, _ := r.Get("m", "")
	if v2.Version() != "2.0.0" || v2.Digest() != digest || v2.Signer() != "" {
		t.Fatalf("default %s digest %q signer %q, want 2.0.0 %s unsigned", v2.Version(), v2.Digest(), v2.Signer(), digest)
	}

	// unchanged: verified again, kept
	rep := mustApply(t, r, d)
	checkReport(t, rep, nil, nil, nil, nil, 2)

	if err := os.WriteFile(filepath.Join(vdir, ModelFile), []byte("tw0"), 0o644); err != nil {
		t.Fatal(err)
	}
	rep = mustApply(t, r, d)
	checkReport(t, rep, nil, nil, nil, []string{"m@2.0.0"}, 1)
	if rep.Failed[0].KeptPrevious || !strings.Contains(rep.Failed[0].Reason, "model.onnx: sha256 mismatch") {
		t.Errorf("tampered after load: %+v", rep.Failed[0])
	}
	if v2.State() != StateUnavailable {
		t.Error("the engine of the tampered version still serves")
	}
	if v, _ := r.Get("m", ""); v.Version() != "1.0.0" {
		t.Errorf("default = %s, want 1.0.0", v.Version())
	}
	var ue *UnavailableError
	if v, _ := r.Get("m", "2.0.0"); !errors.As(v.Do(t.Context(), nil, engines.RunOptions{}, nil), &ue) {
		t.Error("the tampered version answers")
	}
	if got := h.take(); !strings.Contains(got["m@2.0.0"], "sha256 mismatch") {
		t.Errorf("hook calls %v", got)
	}

	if err := os.WriteFile(filepath.Join(vdir, ModelFile), []byte("two"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := r.Load("m", "2.0.0"); err != nil {
		t.Fatalf("Load after the repair: %v", err)
	}
	if v, _ := r.Get("m", ""); v.Version() != "2.0.0" || v.Digest() != digest {
		t.Errorf("after the repair: default %s %s", v.Version(), v.Digest())
	}
}

// The bytes the engine gets are the bytes checked: a model.onnx swapped between Verify's walk
// and the read is refused by the read itself (Artifact.ReadFile checks what it read).
func TestLoadUsesTheVerifiedBytes(t *testing.T) {
	dir := t.TempDir()
	vdir, _ := putVersion(t, dir, "m", "1.0.0", map[string]string{ModelFile: "good"}, nil)
	a, err := artifacts.Verify(vdir, artifacts.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(vdir, ModelFile), []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	l := &bytesLoader{}
	r := NewRepository(l, nil)
	defer r.Close()
	v := r.load(target{model: "m", version: "1.0.0", dir: vdir, set: settings{instances: 1}}, a)
	if ok, reason := v.Ready(); ok || !strings.Contains(reason, "model.onnx: sha256 mismatch") {
		t.Errorf("swapped after verify: ready=%v %q", ok, reason)
	}
	if len(l.got) != 0 {
		t.Errorf("the engine was built from %q", l.got)
	}
}

type bytesLoader struct{ got []string }

func (l *bytesLoader) NewEngine(onnx []byte, _ bridge.EngineOptions) (*bridge.Engine, error) {
	l.got = append(l.got, string(onnx))
	return &bridge.Engine{}, nil
}

// Constraints select versions as Masterminds semver does: pre-releases only when named, build
// metadata ignored for precedence; one that matches nothing lists the model UNAVAILABLE with
// the versions found. Digest pins hold an exact version to its bytes.
func TestVersionConstraintsAndDigestPins(t *testing.T) {
	dir := t.TempDir()
	digests := map[string]string{}
	for _, v := range []string{"1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "1.4.0+build.7", "2.0.0"} {
		_, digests[v] = putVersion(t, dir, "m", v, map[string]string{ModelFile: "m " + v}, nil)
	}
	r, _ := fakeRepository(t, &applyLoader{})
	served := func() []string {
		out := []string{}
		for _, v := range r.Versions("m") {
			out = append(out, v.Version())
		}
		return out
	}
	for _, tt := range []struct {
		version, digest string
		want            []string
		def             string
	}{
		{"", "", []string{"1.0.0", "1.2.0", "1.2.5", "1.3.0-rc.1", "1.4.0+build.7", "2.0.0"}, "2.0.0"},
		{"^1.2", "", []string{"1.2.0", "1.2.5", "1.4.0+build.7"}, "1.4.0+build.7"},
		{"~1.2.0", "", []string{"1.2.0", "1.2.5"}, "1.2.5"},
		{">=1.0 <2", "", []string{"1.0.0", "1.2.0", "1.2.5", "1.4.0+build.7"}, "1.4.0+build.7"},
		{">=1.3.0-0 <1.4", "", []string{"1.3.0-rc.1"}, "1.3.0-rc.1"},
		{"1.x", "", []string{"1.0.0", "1.2.0", "1.2.5", "1.4.0+build.7"}, "1.4.0+build.7"},
		{"1.3.0-rc.1", "", []string{"1.3.0-rc.1"}, "1.3.0-rc.1"},
		{"v1.2.5", digests["1.2.5"], []string{"1.2.5"}, "1.2.5"},
		{"1.4.0", "", []string{"1.4.0+build.7"}, "1.4.0+build.7"}, // equal precedence
	} {
		rep := mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Version: tt.version, Digest: tt.digest}}})
		if len(rep.Failed) != 0 {
			t.Errorf("%q: failed %v", tt.version, rep.Failed)
		}
		if got := served(); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("%q serves %v, want %v", tt.version, got, tt.want)
		}
		if def, pinned := r.DefaultVersion("m"); def != tt.def || pinned {
			t.Errorf("%q: default %s (pinned %v), want %s", tt.version, def, pinned, tt.def)
		}
		n := 0
		for _, e := range r.Index() {
			if e.State == StateUnloaded {
				n++
				if !strings.Contains(e.Reason, "not selected by the configuration (m: version "+tt.version+")") && tt.version != "" {
					t.Errorf("%q: index %+v", tt.version, e)
				}
			}
		}
		if n != 6-len(tt.want) {
			t.Errorf("%q: %d versions UNLOADED in the index, want %d", tt.version, n, 6-len(tt.want))
		}
	}

	for _, c := range []string{"^3", ">2.0.0", "1.5.x"} {
		rep := mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Version: c}}})
		want := "no version of m matches " + c + " (found: 1.0.0, 1.2.0, 1.2.5, 1.3.0-rc.1, 1.4.0+build.7, 2.0.0)"
		if len(rep.Failed) != 1 || rep.Failed[0].Reason != want {
			t.Errorf("%q: failed %+v, want %q", c, rep.Failed, want)
		}
		if v, err := r.Get("m", ""); err != nil || v.State() != StateUnavailable || v.Reason() != want {
			t.Errorf("%q: Get = %v, %v", c, v, err)
		}
	}

	// A wrong digest pin refuses the version; the right one serves it.
	h := &hook{}
	rep := mustApply(t, r, Desired{Dir: dir, OnVerifyFailure: h.fn, Models: []ModelSpec{{Name: "m", Version: "2.0.0", Digest: digests["1.0.0"]}}})
	if len(rep.Failed) != 1 || !strings.Contains(rep.Failed[0].Reason, "digest "+digests["2.0.0"]+", pinned "+digests["1.0.0"]) {
		t.Errorf("wrong pin: %+v", rep.Failed)
	}
	if len(h.take()) != 1 {
		t.Error("no hook call for a digest mismatch")
	}

	// Validation: a digest needs an exact version; a malformed constraint or digest is refused.
	for _, tt := range []struct {
		spec ModelSpec
		want string
	}{
		{ModelSpec{Name: "m", Version: "^1", Digest: digests["1.0.0"]}, "models[0].digest: a digest pins one version"},
		{ModelSpec{Name: "m", Digest: digests["1.0.0"]}, "models[0].digest: a digest pins one version"},
		{ModelSpec{Name: "m", Version: "1.0.0", Digest: "sha256:xyz"}, "models[0].digest: \"sha256:xyz\" is not sha256:<64 lower-case hex digits>"},
		{ModelSpec{Name: "m", Version: ">=1 <"}, `models[0].version: ">=1 <" is neither an exact version`},
	} {
		if _, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{tt.spec}}); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", tt.spec, err, tt.want)
		}
	}
	if _, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{{Name: "m", Version: "^1"}, {Name: "m", Version: "2.0.0"}}}); err == nil ||
		!strings.Contains(err.Error(), "is also selected by models[0]") {
		t.Errorf("a constraint beside another listing: %v", err)
	}
}
