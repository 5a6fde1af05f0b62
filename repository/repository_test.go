package repository

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// fakeLoader records the engines asked for. Models whose bytes start with "bad" fail with
// their content as the message; the others get an engine that has no native handle, whose
// contexts therefore cannot be created (with or without cgo), so they end UNAVAILABLE too,
// with the context error as the reason.
type fakeLoader struct {
	mu    sync.Mutex
	names []string
}

func (l *fakeLoader) NewEngine(onnx []byte, o bridge.EngineOptions) (*bridge.Engine, error) {
	l.mu.Lock()
	l.names = append(l.names, o.Name)
	l.mu.Unlock()
	if strings.HasPrefix(string(onnx), "bad") {
		return nil, &bridge.Error{Code: bridge.CodeInvalidArg, Msg: string(onnx)}
	}
	return &bridge.Engine{}, nil
}

// writeRepo creates files (path → content) under a temp folder; a path ending in "/" is a
// folder. Every version folder with a model.onnx (and no manifest.json) is then sealed.
func writeRepo(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for p, content := range files {
		full := filepath.Join(dir, filepath.FromSlash(p))
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sealAll(t, dir)
	return dir
}

func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return zap.New(core), logs
}

func TestScanLayouts(t *testing.T) {
	dir := writeRepo(t, map[string]string{
		"a/1.0.0/model.onnx":        "x",
		"a/2.0.0/model.onnx":        "x",
		"a/10.0.0/model.onnx":       "x",
		"a/config.pbtxt":            "x",
		"a/latest/model.onnx":       "x",
		"a/.hidden/model.onnx":      "x",
		"a/.tmp-3.0.0-123/":         "",
		"b/v1.2.0/model.onnx":       "x",
		"b/1.10.0/model.onnx":       "x",
		"b/1.2.0-rc.1/":             "",
		"b/1.2.0+build.7/":          "",
		"c/1/":                      "",
		"empty/":                    "",
		"README.md":                 "x",
		".git/1.0.0/model.onnx":     "x",
		"e/2.0.0-beta/model.onn":    "x",
		"e/2.0.0-beta.2/model.onnx": "x",
	})
	log, logs := observedLogger()
	got, err := scan(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range got {
		n := f.model + "@" + f.version
		if f.semver == nil {
			n += "(not canonical)"
		}
		names = append(names, n)
	}
	want := []string{
		"a@latest(not canonical)", "a@1.0.0", "a@2.0.0", "a@10.0.0",
		"b@v1.2.0(not canonical)", "b@1.2.0-rc.1", "b@1.2.0+build.7", "b@1.10.0",
		"c@1(not canonical)",
		"e@2.0.0-beta", "e@2.0.0-beta.2",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("scan found %v\nwant %v", names, want)
	}
	if n := len(logs.FilterMessage("skipping model folder without version folders").All()); n != 1 {
		t.Errorf("%d warnings for the empty model folder, want 1", n)
	}
}

func asString(v any) string {
	s, _ := v.(string)
	return s
}

func TestScanMissingRepository(t *testing.T) {
	if _, err := scan(filepath.Join(t.TempDir(), "nope"), zap.NewNop()); err == nil || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("scan of a missing folder = %v, want ErrNotExist", err)
	}
	file := writeRepo(t, map[string]string{"f": "x"})
	if _, err := scan(filepath.Join(file, "f"), zap.NewNop()); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("scan of a file = %v, want 'not a directory'", err)
	}
}

// A model folder symlinked inside the repository is followed; one leading out of it is refused.
func TestScanSymlinkedModelFolders(t *testing.T) {
	outside := writeRepo(t, map[string]string{"x/7.0.0/model.onnx": "x"})
	dir := writeRepo(t, map[string]string{"real/7.0.0/model.onnx": "x"})
	if err := os.Symlink(filepath.Join(outside, "x"), filepath.Join(dir, "out")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	if err := os.Symlink("real", filepath.Join(dir, "in")); err != nil {
		t.Fatal(err)
	}
	got, err := scan(dir, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	refused := map[string]string{}
	for _, f := range got {
		refused[f.model+"@"+f.version] = f.refused
	}
	if len(got) != 3 || refused["in@7.0.0"] != "" || refused["real@7.0.0"] != "" || !strings.Contains(refused["out@7.0.0"], "outside the repository") {
		t.Errorf("scan = %+v, want in@7.0.0 and real@7.0.0 followed, out@7.0.0 refused", got)
	}
}

func TestOpenRepositoryKeepsFailedVersions(t *testing.T) {
	dir := writeRepo(t, map[string]string{
		"m/1.0.0/model.onnx": "bad graph: output \"y\" is missing",
		"m/2.0.0/model.onnx": "ok",
		"m/3.0.0/":           "",
		"n/1.0.0/model.onnx": "bad other",
	})
	loader := &fakeLoader{}
	log, logs := observedLogger()
	r, err := openRepository(loader, dir, repositoryOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	if got := r.Models(); !reflect.DeepEqual(got, []string{"m", "n"}) {
		t.Errorf("Models() = %v", got)
	}
	if got := loader.names; !reflect.DeepEqual(got, []string{"m@1.0.0", "m@2.0.0", "n@1.0.0"}) {
		t.Errorf("engines built: %v", got)
	}
	if r.Ready() {
		t.Error("Ready() with unavailable versions = true")
	}
	vs := r.Versions("m")
	if len(vs) != 3 {
		t.Fatalf("Versions(m) = %d versions, want 3", len(vs))
	}
	reasons := map[string]string{}
	for _, v := range vs {
		ok, reason := v.Ready()
		if ok || v.State() != StateUnavailable || reason == "" {
			t.Errorf("%s@%s: ready=%v state=%v reason=%q, want UNAVAILABLE with a reason", v.Name(), v.Version(), ok, v.State(), reason)
		}
		reasons[v.Version()] = reason
		if v.Inputs() != nil || v.Batchable() {
			t.Errorf("%s@%s: a failed version has a signature", v.Name(), v.Version())
		}
	}
	if !strings.Contains(reasons["1.0.0"], `output "y" is missing`) {
		t.Errorf("reason of m@1.0.0 = %q, want the engine error", reasons["1.0.0"])
	}
	if !strings.Contains(reasons["3.0.0"], "no manifest.json") || !strings.Contains(reasons["3.0.0"], "policyctl artifacts add") {
		t.Errorf("reason of m@3.0.0 = %q, want the missing manifest and how to add it", reasons["3.0.0"])
	}
	if n := len(logs.FilterMessage("model version unavailable").All()); n != 3 {
		t.Errorf("%d 'model version unavailable' logs, want 3", n)
	}
	if n := len(logs.FilterMessage("model version refused: artifact verification failed").FilterLevelExact(zap.ErrorLevel).All()); n != 1 {
		t.Errorf("%d 'model version refused' error logs, want 1", n)
	}

	// Get: exact folder, equal version, default = highest when none is ready.
	for _, tt := range []struct{ model, version, want string }{
		{"m", "2", "2.0.0"},
		{"m", "v2.0.0", "2.0.0"},
		{"m", "", "3.0.0"},
		{"n", "", "1.0.0"},
		{"n", "1", "1.0.0"},
	} {
		v, err := r.Get(tt.model, tt.version)
		if err != nil {
			t.Errorf("Get(%q, %q): %v", tt.model, tt.version, err)
			continue
		}
		if v.Version() != tt.want {
			t.Errorf("Get(%q, %q) = version %q, want %q", tt.model, tt.version, v.Version(), tt.want)
		}
	}
	for _, tt := range []struct{ model, version, msg string }{
		{"zzz", "", `unknown model "zzz"`},
		{"m", "4", `unknown version "4" of model "m"`},
		{"m", "latest", `unknown version "latest" of model "m"`},
	} {
		_, err := r.Get(tt.model, tt.version)
		if !errors.Is(err, ErrNotFound) || err.Error() != tt.msg {
			t.Errorf("Get(%q, %q) = %v, want %q matching ErrNotFound", tt.model, tt.version, err, tt.msg)
		}
	}

	v, _ := r.Get("m", "1")
	var ue *UnavailableError
	if err := v.Do(t.Context(), nil, engines.RunOptions{}, nil); !errors.As(err, &ue) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Do on an unavailable version = %v, want *UnavailableError with the reason", err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.Get("m", "2"); !errors.Is(err, engines.ErrClosed) {
		t.Errorf("Get after Close = %v, want engines.ErrClosed", err)
	}
}

func TestOpenRepositoryErrors(t *testing.T) {
	if _, err := openRepository(&fakeLoader{}, filepath.Join(t.TempDir(), "missing"), repositoryOptions{}); err == nil {
		t.Error("openRepository of a missing folder succeeded")
	}
	r, err := openRepository(&fakeLoader{}, t.TempDir(), repositoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.Ready() || len(r.All()) != 0 {
		t.Errorf("empty repository: Ready=%v All=%d, want ready and empty", r.Ready(), len(r.All()))
	}
	r.Close()
	if r.Ready() {
		t.Error("Ready() after Close = true")
	}
}

func TestPickDefaultPrefersHighestReady(t *testing.T) {
	mk := func(name string, s State) *Version {
		sv, err := artifacts.ParseVersion(name)
		if err != nil {
			t.Fatal(err)
		}
		return &Version{name: "m", version: name, semver: sv, state: s}
	}
	vs := []*Version{mk("1.0.0", StateReady), mk("2.0.0", StateReady), mk("3.0.0", StateUnavailable)}
	if got := pick(vs, ""); got.Version() != "2.0.0" {
		t.Errorf("default = %s, want 2 (highest ready)", got.Version())
	}
	if got := pick(vs, "3"); got.Version() != "3.0.0" {
		t.Errorf("explicit 3 = %s", got.Version())
	}
	if got := pick(nil, ""); got != nil {
		t.Errorf("pick(nil) = %v", got)
	}
}

// An integer N names exactly N.0.0 (a Triton client's version, an imported Triton folder N);
// a full version matches by semver precedence, as before.
func TestPickIntegerIsExact(t *testing.T) {
	mk := func(name string) *Version {
		sv, err := artifacts.ParseVersion(name)
		if err != nil {
			t.Fatal(err)
		}
		return &Version{name: "m", version: name, semver: sv, state: StateReady}
	}
	vs := []*Version{mk("1.0.0+build.7"), mk("2.0.0"), mk("2.0.1")}
	for _, c := range []struct{ req, want string }{
		{"2", "2.0.0"}, {"1", ""}, {"02", ""}, {"3", ""}, {"1.0.0", "1.0.0+build.7"}, {"v2.0.1", "2.0.1"}, {"2.0.0", "2.0.0"},
	} {
		got := ""
		if v := pick(vs, c.req); v != nil {
			got = v.Version()
		}
		if got != c.want {
			t.Errorf("pick(%q) = %q, want %q", c.req, got, c.want)
		}
	}
}

func TestStateString(t *testing.T) {
	if StateReady.String() != "READY" || StateUnavailable.String() != "UNAVAILABLE" {
		t.Errorf("State strings: %s %s", StateReady, StateUnavailable)
	}
}
