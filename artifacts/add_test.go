package artifacts

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

var update = flag.Bool("update", false, "rewrite golden files")

// TestManifestGolden pins the exact bytes Add writes for a fixed payload and time.
func TestManifestGolden(t *testing.T) {
	repo := t.TempDir()
	model := filepath.Join(t.TempDir(), "in.onnx")
	mustWrite(t, model, []byte("not really onnx\n"))
	a, err := Add(repo, AddRequest{Name: "3DBall", Version: "v1.2.3-rc.1+build.5", Model: model, IO: testIO,
		Metadata: map[string]string{"training_run": "run-7", "parent_version": "1.2.2"}, Tool: "policyctl v0.3.0", Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	got := mustRead(t, filepath.Join(repo, "3DBall", "1.2.3-rc.1+build.5", ManifestFile))
	golden := filepath.Join("testdata", "manifest.golden.json")
	if *update {
		mustWrite(t, golden, got)
	}
	if want := mustRead(t, golden); string(got) != string(want) {
		t.Errorf("manifest.json:\n%s\nwant (go test -update to accept):\n%s", got, want)
	}
	if a.Digest != Digest(got) || !strings.HasPrefix(a.Digest, "sha256:") || len(a.Digest) != 71 {
		t.Errorf("digest %s", a.Digest)
	}
	m, err := ParseManifest(got)
	if err != nil {
		t.Fatal(err)
	}
	if enc, _ := m.Encode(); string(enc) != string(got) {
		t.Error("manifest does not round-trip through Encode")
	}
}

func TestAddRefuses(t *testing.T) {
	repo := t.TempDir()
	add(t, repo, "m", "1.2.3+a", nil)
	for _, c := range []struct {
		name string
		req  AddRequest
		kind error
		want string
	}{
		{"existing version", AddRequest{Name: "m", Version: "v1.2.3+a"}, ErrExists, "version 1.2.3+a of m already exists"},
		{"equal but for build metadata", AddRequest{Name: "m", Version: "1.2.3+b"}, ErrExists, "differs only in build metadata"},
		{"short version", AddRequest{Name: "m", Version: "1.2"}, nil, `version "1.2" is not a semantic version`},
		{"leading zero", AddRequest{Name: "m", Version: "01.2.3"}, nil, "is not a semantic version"},
		{"latest", AddRequest{Name: "m", Version: "latest"}, nil, "is not a semantic version"},
		{"bad name", AddRequest{Name: "../m", Version: "1.0.0"}, nil, `model name "../m"`},
		{"hidden name", AddRequest{Name: ".m", Version: "1.0.0"}, nil, "model name"},
		{"no io", AddRequest{Name: "m", Version: "2.0.0", IO: IO{}}, nil, "signature is empty"},
		{"source missing", AddRequest{Name: "m", Version: "2.0.0", Model: "/nonexistent.onnx"}, nil, "no such file"},
		{"source changed", AddRequest{Name: "m", Version: "2.0.0", ModelSHA256: strings.Repeat("0", 64)}, nil, "changed while being added"},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := c.req
			if req.Model == "" {
				req.Model = payload(t)
			}
			if req.IO.Inputs == nil && c.name != "no io" {
				req.IO = testIO
			}
			_, err := Add(repo, req)
			wantErr(t, err, c.kind, c.want)
		})
	}
	if vs, _ := Versions(repo, "m"); fmt.Sprint(vs) != "[1.2.3+a]" {
		t.Errorf("versions %v", vs)
	}
	assertNoTemp(t, filepath.Join(repo, "m"))
}

func assertNoTemp(t *testing.T, modelDir string) {
	t.Helper()
	des, _ := os.ReadDir(modelDir)
	for _, de := range des {
		if isTemp(de.Name()) {
			t.Errorf("left %s behind", de.Name())
		}
	}
}

// TestAddAtomic makes Add fail after it wrote everything, just before the rename, and when
// the source cannot be read: no version becomes visible and nothing is left behind.
func TestAddAtomic(t *testing.T) {
	repo := t.TempDir()
	beforeRename = func(tmp string) error {
		if _, err := os.Stat(filepath.Join(tmp, ManifestFile)); err != nil {
			t.Errorf("work folder incomplete at rename: %v", err)
		}
		return errors.New("injected failure")
	}
	_, err := Add(repo, AddRequest{Name: "m", Version: "1.0.0", Model: payload(t), IO: testIO})
	beforeRename = nil
	wantErr(t, err, nil, "injected failure")
	_, err = Add(repo, AddRequest{Name: "m", Version: "1.0.1", Model: t.TempDir(), IO: testIO}) // a folder: unreadable as a model
	wantErr(t, err, nil, "not a regular file")
	if vs, err := Versions(repo, "m"); err != nil || len(vs) != 0 {
		t.Errorf("versions %v %v", vs, err)
	}
	assertNoTemp(t, filepath.Join(repo, "m"))
	// A crash leaves a work folder: it is no version, and the report calls it stale.
	mustWrite(t, filepath.Join(repo, "m", ".tmp-1.0.0-123", ModelFile), []byte("half"))
	add(t, repo, "m", "1.0.0", nil)
	rep, err := Report(repo, ReportOptions{})
	if err != nil || rep.OK != 1 || rep.Errors != 0 || len(rep.Stale) != 1 || !strings.HasSuffix(rep.Stale[0], ".tmp-1.0.0-123") {
		t.Errorf("report %v %+v", err, rep)
	}
}

func TestAddConcurrent(t *testing.T) {
	t.Run("different versions all succeed", func(t *testing.T) {
		repo := t.TempDir()
		const n = 24
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = Add(repo, AddRequest{Name: "m", Version: fmt.Sprintf("1.%d.0", i), Model: payload(t), IO: testIO})
			})
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("1.%d.0: %v", i, err)
			}
		}
		rep, err := Report(repo, ReportOptions{})
		if err != nil || rep.OK != n || rep.Errors != 0 {
			t.Fatalf("report %v %+v", err, rep)
		}
		if vs := rep.Models[0].Versions; vs[0].Version != "1.0.0" || vs[n-1].Version != fmt.Sprintf("1.%d.0", n-1) {
			t.Errorf("not sorted by semver: %s .. %s", vs[0].Version, vs[n-1].Version)
		}
		assertNoTemp(t, filepath.Join(repo, "m"))
	})
	t.Run("same version exactly one succeeds", func(t *testing.T) {
		repo := t.TempDir()
		const n = 24
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				_, errs[i] = Add(repo, AddRequest{Name: "m", Version: "1.0.0", Model: payload(t), IO: testIO,
					Metadata: map[string]string{"writer": fmt.Sprint(i)}})
			})
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			if err == nil {
				ok++
			} else if !errors.Is(err, ErrExists) {
				t.Errorf("want ErrExists, got %v", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d adds succeeded", ok)
		}
		if _, err := Verify(filepath.Join(repo, "m", "1.0.0"), VerifyOptions{}); err != nil {
			t.Error(err)
		}
		assertNoTemp(t, filepath.Join(repo, "m"))
	})
}

// TestRenameLocked covers the fallback for file systems without RENAME_NOREPLACE.
func TestRenameLocked(t *testing.T) {
	dir := t.TempDir()
	tmp, final := filepath.Join(dir, ".tmp-x"), filepath.Join(dir, "1.0.0")
	os.Mkdir(tmp, 0o755)
	if err := renameLocked(tmp, final); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(tmp, 0o755)
	mustWrite(t, filepath.Join(tmp, "f"), []byte("x"))
	if err := renameLocked(tmp, final); !errors.Is(err, os.ErrExist) {
		t.Errorf("over an existing version: %v", err)
	}
	mustWrite(t, filepath.Join(dir, ".tmp-2.0.0.lock"), nil)
	if err := renameLocked(tmp, filepath.Join(dir, "2.0.0")); !errors.Is(err, os.ErrExist) || !strings.Contains(err.Error(), "in progress") {
		t.Errorf("with a lock held: %v", err)
	}
	if err := renameNoReplace(tmp, final); !errors.Is(err, os.ErrExist) {
		t.Errorf("renameNoReplace over an existing version: %v", err)
	}
}
