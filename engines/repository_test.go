package engines

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

	"github.com/policyd/policyd/bridge"
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

// writeRepo creates files (path → content) under a temp folder; a path ending in "/" is a folder.
func writeRepo(t *testing.T, files map[string]string) string {
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
	return dir
}

func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return zap.New(core), logs
}

func TestScanLayouts(t *testing.T) {
	dir := writeRepo(t, map[string]string{
		"a/1/model.onnx":         "x",
		"a/2/model.onnx":         "x",
		"a/10/model.onnx":        "x",
		"a/config.pbtxt":         "x",
		"a/latest/model.onnx":    "x",
		"a/.hidden/model.onnx":   "x",
		"b/v1.2.0/model.onnx":    "x",
		"b/1.10.0/model.onnx":    "x",
		"b/1.2.0-rc.1/":          "",
		"c/1/":                   "",
		"c/1.0.0/":               "",
		"empty/":                 "",
		"onlybad/x/model.onnx":   "x",
		"README.md":              "x",
		".git/1/model.onnx":      "x",
		"d/01/model.onnx":        "x",
		"d/3/nested/model.onnx":  "x",
		"e/1.2/model.onnx":       "x",
		"e/2.0.0-beta/model.onn": "x",
	})
	log, logs := observedLogger()
	got, err := scan(dir, log)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range got {
		names = append(names, f.model+"@"+f.version)
	}
	want := []string{
		"a@1", "a@2", "a@10",
		"b@1.2.0-rc.1", "b@v1.2.0", "b@1.10.0",
		"c@1",
		"d@3",
		"e@2.0.0-beta",
	}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("scan found %v\nwant %v", names, want)
	}
	warned := map[string]bool{}
	for _, e := range logs.All() {
		if e.Level != zap.WarnLevel {
			continue
		}
		f := e.ContextMap()
		warned[e.Message+" "+filepath.Base(asString(f["folder"]))] = true
	}
	for _, w := range []string{
		"skipping folder that is not a version latest",
		"skipping folder that is not a version 01",
		"skipping folder that is not a version 1.2",
		"skipping folder that is not a version x",
		"skipping version folder that names the same version as another 1.0.0",
		"skipping model folder without version folders empty",
		"skipping model folder without version folders onlybad",
	} {
		if !warned[w] {
			t.Errorf("no warning %q; got %v", w, warned)
		}
	}
	if warned["skipping folder that is not a version .hidden"] {
		t.Error("hidden folders must be skipped silently")
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

func TestScanFollowsSymlinks(t *testing.T) {
	target := writeRepo(t, map[string]string{"7/model.onnx": "x"})
	dir := t.TempDir()
	if err := os.Symlink(target, filepath.Join(dir, "linked")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}
	got, err := scan(dir, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].model != "linked" || got[0].version != "7" {
		t.Errorf("scan = %+v, want linked@7", got)
	}
}

func TestOpenRepositoryKeepsFailedVersions(t *testing.T) {
	dir := writeRepo(t, map[string]string{
		"m/1/model.onnx":     "bad graph: output \"y\" is missing",
		"m/2/model.onnx":     "ok",
		"m/3/":               "",
		"n/1.0.0/model.onnx": "bad other",
	})
	loader := &fakeLoader{}
	log, logs := observedLogger()
	r, err := OpenRepository(loader, dir, RepositoryOptions{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	if got := r.Models(); !reflect.DeepEqual(got, []string{"m", "n"}) {
		t.Errorf("Models() = %v", got)
	}
	if got := loader.names; !reflect.DeepEqual(got, []string{"m@1", "m@2", "n@1.0.0"}) {
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
	if !strings.Contains(reasons["1"], `output "y" is missing`) {
		t.Errorf("reason of m@1 = %q, want the engine error", reasons["1"])
	}
	if !strings.Contains(reasons["3"], "read model") || !strings.Contains(reasons["3"], ModelFile) {
		t.Errorf("reason of m@3 = %q, want the missing file", reasons["3"])
	}
	if n := len(logs.FilterMessage("model version unavailable").All()); n != 4 {
		t.Errorf("%d 'model version unavailable' logs, want 4", n)
	}

	// Get: exact folder, equal version, default = highest when none is ready.
	for _, tt := range []struct{ model, version, want string }{
		{"m", "2", "2"},
		{"m", "2.0.0", "2"},
		{"m", "", "3"},
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
	if err := v.Do(t.Context(), nil, nil); !errors.As(err, &ue) || !strings.Contains(err.Error(), "missing") {
		t.Errorf("Do on an unavailable version = %v, want *UnavailableError with the reason", err)
	}

	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := r.Get("m", "2"); !errors.Is(err, ErrClosed) {
		t.Errorf("Get after Close = %v, want ErrClosed", err)
	}
}

func TestOpenRepositoryErrors(t *testing.T) {
	if _, err := OpenRepository(&fakeLoader{}, filepath.Join(t.TempDir(), "missing"), RepositoryOptions{}); err == nil {
		t.Error("OpenRepository of a missing folder succeeded")
	}
	r, err := OpenRepository(&fakeLoader{}, t.TempDir(), RepositoryOptions{})
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
	mk := func(name string, s State) *ModelVersion {
		sv, err := ParseVersion(name)
		if err != nil {
			t.Fatal(err)
		}
		return &ModelVersion{name: "m", version: name, semver: sv, state: s}
	}
	vs := []*ModelVersion{mk("1", StateReady), mk("2", StateReady), mk("3", StateUnavailable)}
	if got := pick(vs, ""); got.Version() != "2" {
		t.Errorf("default = %s, want 2 (highest ready)", got.Version())
	}
	if got := pick(vs, "3"); got.Version() != "3" {
		t.Errorf("explicit 3 = %s", got.Version())
	}
	if got := pick(nil, ""); got != nil {
		t.Errorf("pick(nil) = %v", got)
	}
}

func TestStateString(t *testing.T) {
	if StateReady.String() != "READY" || StateUnavailable.String() != "UNAVAILABLE" {
		t.Errorf("State strings: %s %s", StateReady, StateUnavailable)
	}
}
