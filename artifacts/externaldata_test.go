package artifacts

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/policyd/policyd/artifacts/artifactstest"
)

// externalModel writes into a new folder model.onnx whose initializers live in the file
// location (written too unless write is false) and returns the model's path and the data.
func externalModel(t *testing.T, location string, write bool) (string, []byte) {
	t.Helper()
	src := filepath.Join("..", "..", "shared", "peers", "models", "mlp-small.onnx")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("no shared model: %v", err)
	}
	m, data, err := artifactstest.Externalize(b, location, 64)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := filepath.Join(dir, "model.onnx")
	mustWrite(t, p, m)
	if write && !filepath.IsAbs(location) && !strings.Contains(location, "..") {
		f := filepath.Join(dir, filepath.FromSlash(location))
		if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
			t.Fatal(err)
		}
		mustWrite(t, f, data)
	}
	return p, data
}

func TestExternalDataFiles(t *testing.T) {
	p, _ := externalModel(t, "./model.onnx.data", true)
	b, _ := os.ReadFile(p)
	got, err := ExternalDataFiles(b)
	if err != nil || len(got) != 1 || got[0] != "model.onnx.data" {
		t.Fatalf("ExternalDataFiles = %q, %v; want [model.onnx.data]", got, err)
	}
	plain, _ := os.ReadFile(filepath.Join("..", "..", "shared", "peers", "models", "mlp-small.onnx"))
	if got, err := ExternalDataFiles(plain); err != nil || len(got) != 0 {
		t.Errorf("self-contained model: %q, %v; want none", got, err)
	}
	if _, err := ExternalDataFiles([]byte("not really onnx\n")); !errors.Is(err, errNotONNX) {
		t.Errorf("garbage: %v; want errNotONNX", err)
	}
	// An EXTERNAL tensor without a location, inside a Constant node's attribute of a subgraph.
	var tensor, attr, node, graph, model []byte
	tensor = protowire.AppendTag(tensor, fTensorName, protowire.BytesType)
	tensor = protowire.AppendString(tensor, "w")
	tensor = protowire.AppendTag(tensor, fTensorLocation, protowire.VarintType)
	tensor = protowire.AppendVarint(tensor, 1)
	attr = protowire.AppendTag(attr, fAttrTensor, protowire.BytesType)
	attr = protowire.AppendBytes(attr, tensor)
	node = protowire.AppendTag(node, fNodeAttribute, protowire.BytesType)
	node = protowire.AppendBytes(node, attr)
	graph = protowire.AppendTag(graph, fGraphNode, protowire.BytesType)
	graph = protowire.AppendBytes(graph, node)
	model = protowire.AppendTag(model, fModelGraph, protowire.BytesType)
	model = protowire.AppendBytes(model, graph)
	if _, err := ExternalDataFiles(model); err == nil || !strings.Contains(err.Error(), `tensor "w" is EXTERNAL but names no location`) {
		t.Errorf("no location: %v", err)
	}
	for loc, want := range map[string]string{"": "empty", "/abs/w.data": "absolute", "C:w.data": "absolute",
		"../w.data": "'..'", "a/../../w.data": "'..'", `a\w.data`: "backslash", ".": "names no file"} {
		if _, err := ExternalDataLocation(loc); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ExternalDataLocation(%q) = %v; want %q", loc, err, want)
		}
	}
	if c, err := ExternalDataLocation("./w//a.bin"); err != nil || c != "w/a.bin" {
		t.Errorf("ExternalDataLocation(./w//a.bin) = %q, %v", c, err)
	}
}

// Add lists and hashes the sidecar beside model.onnx; Verify catches it tampered with,
// truncated or removed; Artifact.ExternalData hands over the verified bytes.
func TestAddExternalData(t *testing.T) {
	for _, loc := range []string{"model.onnx.data", "weights/w.bin"} {
		t.Run(loc, func(t *testing.T) {
			p, data := externalModel(t, loc, true)
			repo := t.TempDir()
			a, err := Add(repo, AddRequest{Name: "m", Version: "1.0.0", Model: p, IO: testIO, Now: testNow})
			if err != nil {
				t.Fatal(err)
			}
			s := sha256.Sum256(data)
			f := a.Manifest.File(loc)
			if f == nil || f.SHA256 != hex.EncodeToString(s[:]) || f.Size != int64(len(data)) {
				t.Fatalf("manifest entry of %s = %+v; files %+v", loc, f, a.Manifest.Files)
			}
			if len(a.Manifest.Files) != 2 || a.Manifest.Files[0].Path > a.Manifest.Files[1].Path {
				t.Errorf("files not two, sorted: %+v", a.Manifest.Files)
			}
			v, err := Verify(a.Dir, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			onnx, err := v.ReadFile(ModelFile)
			if err != nil {
				t.Fatal(err)
			}
			ext, err := v.ExternalData(onnx)
			if err != nil || len(ext) != 1 || string(ext[loc]) != string(data) {
				t.Fatalf("ExternalData = %d files, %v", len(ext), err)
			}
			stored := filepath.Join(a.Dir, filepath.FromSlash(loc))
			tampered := append([]byte{}, data...)
			tampered[len(tampered)-1] ^= 1
			for name, change := range map[string]func(){
				"tampered":  func() { mustWrite(t, stored, tampered) },
				"truncated": func() { mustWrite(t, stored, data[:len(data)/2]) },
				"missing":   func() { os.Remove(stored) },
			} {
				change()
				_, err := Verify(a.Dir, VerifyOptions{})
				if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), loc) {
					t.Errorf("%s sidecar: Verify = %v; want an integrity error naming %s", name, err, loc)
				}
				if _, err := v.ExternalData(onnx); err == nil {
					t.Errorf("%s sidecar: ExternalData of the verified artifact read it", name)
				}
				mustWrite(t, stored, data)
			}
		})
	}
}

func TestAddRefusesBadExternalData(t *testing.T) {
	cases := []struct {
		name, loc, want string
		prep            func(t *testing.T, model string, data []byte)
	}{
		{"missing", "model.onnx.data", `external data file "model.onnx.data" is missing`, func(t *testing.T, model string, _ []byte) {
			os.Remove(filepath.Join(filepath.Dir(model), "model.onnx.data"))
		}},
		{"absolute", "/tmp/model.onnx.data", `"/tmp/model.onnx.data" is an absolute path`, nil},
		{"dot-dot", "../model.onnx.data", `"../model.onnx.data" contains '..'`, nil},
		{"symlink", "model.onnx.data", "is a symlink", func(t *testing.T, model string, data []byte) {
			d := filepath.Dir(model)
			real := filepath.Join(t.TempDir(), "real.data")
			mustWrite(t, real, data)
			os.Remove(filepath.Join(d, "model.onnx.data"))
			if err := os.Symlink(real, filepath.Join(d, "model.onnx.data")); err != nil {
				t.Fatal(err)
			}
		}},
		{"symlinked folder", "w/model.onnx.data", "is a symlink", func(t *testing.T, model string, data []byte) {
			d := filepath.Dir(model)
			real := t.TempDir()
			mustWrite(t, filepath.Join(real, "model.onnx.data"), data)
			os.RemoveAll(filepath.Join(d, "w"))
			if err := os.Symlink(real, filepath.Join(d, "w")); err != nil {
				t.Fatal(err)
			}
		}},
		{"reserved", "manifest.json", "reserves", nil},
		{"folder", "model.onnx.data", "not a regular file", func(t *testing.T, model string, _ []byte) {
			p := filepath.Join(filepath.Dir(model), "model.onnx.data")
			os.Remove(p)
			os.Mkdir(p, 0o755)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, data := externalModel(t, c.loc, true)
			if c.prep != nil {
				c.prep(t, p, data)
			}
			b, _ := os.ReadFile(p)
			if _, err := ReadExternalData(p, b); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ReadExternalData = %v; want %q", err, c.want)
			}
			repo := t.TempDir()
			_, err := Add(repo, AddRequest{Name: "m", Version: "1.0.0", Model: p, IO: testIO})
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Add = %v; want %q", err, c.want)
			}
			if _, err := os.Stat(filepath.Join(repo, "m", "1.0.0")); !os.IsNotExist(err) {
				t.Errorf("a refused add left the version: %v", err)
			}
		})
	}
	// A sidecar that changed after the caller checked it.
	p, _ := externalModel(t, "model.onnx.data", true)
	_, err := Add(t.TempDir(), AddRequest{Name: "m", Version: "1.0.0", Model: p, IO: testIO,
		ExternalSHA256: map[string]string{"model.onnx.data": strings.Repeat("0", 64)}})
	if err == nil || !strings.Contains(err.Error(), "changed while being added") {
		t.Errorf("changed sidecar: %v", err)
	}
}
