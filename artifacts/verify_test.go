package artifacts

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerifyGood(t *testing.T) {
	repo := t.TempDir()
	key := newKey(t)
	added := add(t, repo, "3DBall", "v1.0.0", key)
	dir := filepath.Join(repo, "3DBall", "1.0.0")
	if added.Dir != dir {
		t.Fatalf("Dir %s, want %s", added.Dir, dir)
	}
	for _, opts := range []VerifyOptions{
		{},
		{TrustedKeys: []ed25519.PublicKey{pub(newKey(t)), pub(key)}},
		{Digest: added.Digest},
	} {
		a, err := Verify(dir, opts)
		if err != nil {
			t.Fatalf("%+v: %v", opts, err)
		}
		if a.Digest != added.Digest || a.Ref() != "3DBall@1.0.0" || a.SignedBy != KeyID(pub(key)) || a.Verified != (len(opts.TrustedKeys) > 0) {
			t.Errorf("%+v: artifact %+v", opts, a)
		}
		if a.Digest != Digest(mustRead(t, filepath.Join(dir, ManifestFile))) {
			t.Error("digest is not the SHA-256 of manifest.json")
		}
		b, err := a.ReadFile(ModelFile)
		if err != nil || string(b) != string(mustRead(t, payload(t))) {
			t.Fatalf("ReadFile: %v", err)
		}
	}
}

// TestTamperingDetected tampers a good version in every way we know and checks Verify refuses
// it every time, naming the problem.
func TestTamperingDetected(t *testing.T) {
	trustedKey, otherKey := newKey(t), newKey(t)
	trusted := []ed25519.PublicKey{pub(trustedKey)}
	resign := func(t *testing.T, dir string, k ed25519.PrivateKey) {
		t.Helper()
		sig, err := SignManifest(mustRead(t, filepath.Join(dir, ManifestFile)), k)
		if err != nil {
			t.Fatal(err)
		}
		mustWrite(t, filepath.Join(dir, SignatureFile), sig)
	}
	for _, c := range []struct {
		name   string
		opts   func(a *Artifact) VerifyOptions
		tamper func(t *testing.T, dir string)
		kind   error
		want   []string
	}{
		{name: "flipped byte", tamper: func(t *testing.T, dir string) {
			p := filepath.Join(dir, ModelFile)
			b := mustRead(t, p)
			b[len(b)/2] ^= 1
			mustWrite(t, p, b)
		}, kind: ErrIntegrity, want: []string{"3DBall@1.0.0: model.onnx: sha256 mismatch (manifest "}},
		{name: "replaced file of the same size", tamper: func(t *testing.T, dir string) {
			p := filepath.Join(dir, ModelFile)
			mustWrite(t, p, make([]byte, len(mustRead(t, p))))
		}, kind: ErrIntegrity, want: []string{"model.onnx: sha256 mismatch"}},
		{name: "truncated file", tamper: func(t *testing.T, dir string) {
			p := filepath.Join(dir, ModelFile)
			mustWrite(t, p, mustRead(t, p)[:10])
		}, kind: ErrIntegrity, want: []string{"model.onnx: size mismatch (manifest "}},
		{name: "extra file", tamper: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "extra.onnx"), []byte("x"))
		}, kind: ErrIntegrity, want: []string{"extra.onnx: not listed in the manifest"}},
		{name: "extra file in a subfolder", tamper: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "engines", "cpu.plan"), []byte("x"))
		}, kind: ErrIntegrity, want: []string{"engines/cpu.plan: not listed in the manifest"}},
		{name: "missing file", tamper: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ModelFile))
		}, kind: ErrIntegrity, want: []string{"model.onnx: missing"}},
		{name: "missing manifest", tamper: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, ManifestFile))
		}, kind: ErrNoManifest, want: []string{"no manifest.json in " + filepath.Join("REPO", "3DBall", "1.0.0") + `: add the model with "policyctl artifacts add --repository REPO --name 3DBall --version 1.0.0 MODEL.onnx"`}},
		{name: "edited manifest, hash updated to a replaced file, trusted keys", opts: withKeys(trusted), tamper: func(t *testing.T, dir string) {
			p := filepath.Join(dir, ModelFile)
			b := mustRead(t, p)
			b[0] ^= 1
			mustWrite(t, p, b)
			editManifest(t, dir, func(m map[string]any) { firstFile(m)["sha256"] = sha256Hex(b) })
		}, kind: ErrSignature, want: []string{"manifest.sig: bad signature"}},
		{name: "edited manifest, re-signed by an untrusted key", opts: withKeys(trusted), tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["metadata"] = map[string]any{"training_run": "evil"} })
			resign(t, dir, otherKey)
		}, kind: ErrSignature, want: []string{"which is not trusted"}},
		{name: "edited manifest, digest pinned", opts: func(a *Artifact) VerifyOptions { return VerifyOptions{Digest: a.Digest} }, tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["metadata"] = map[string]any{"training_run": "evil"} })
		}, kind: ErrDigest, want: []string{"pinned " + "sha256:"}},
		{name: "stripped signature", opts: withKeys(trusted), tamper: func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, SignatureFile))
		}, kind: ErrUnsigned, want: []string{"3DBall@1.0.0: unsigned artifact; trusted keys are configured"}},
		{name: "forged signature (other key)", opts: withKeys(trusted), tamper: func(t *testing.T, dir string) {
			resign(t, dir, otherKey)
		}, kind: ErrSignature, want: []string{"manifest.sig: signed by key " + KeyID(pub(otherKey)) + ", which is not trusted"}},
		{name: "forged signature claiming the trusted key", opts: withKeys(trusted), tamper: func(t *testing.T, dir string) {
			resign(t, dir, otherKey)
			p := filepath.Join(dir, SignatureFile)
			mustWrite(t, p, []byte(strings.Replace(string(mustRead(t, p)), KeyID(pub(otherKey)), KeyID(pub(trustedKey)), 1)))
		}, kind: ErrSignature, want: []string{"bad signature"}},
		{name: "garbage signature file", opts: withKeys(trusted), tamper: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, SignatureFile), []byte("nope"))
		}, kind: ErrSignature, want: []string{"malformed signature file"}},
		{name: "symlink pointing out of the repository", tamper: func(t *testing.T, dir string) {
			out := filepath.Join(t.TempDir(), "model.onnx")
			mustWrite(t, out, mustRead(t, filepath.Join(dir, ModelFile))) // same bytes
			os.Remove(filepath.Join(dir, ModelFile))
			if err := os.Symlink(out, filepath.Join(dir, ModelFile)); err != nil {
				t.Fatal(err)
			}
		}, kind: ErrIntegrity, want: []string{"model.onnx: is a symlink (to /"}},
		{name: "symlink pointing inside the folder", tamper: func(t *testing.T, dir string) {
			if err := os.Rename(filepath.Join(dir, ModelFile), filepath.Join(dir, "engines.bin")); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("engines.bin", filepath.Join(dir, ModelFile)); err != nil {
				t.Fatal(err)
			}
		}, kind: ErrIntegrity, want: []string{"model.onnx: is a symlink (to engines.bin)", "engines.bin: not listed"}},
		{name: "symlinked subfolder", tamper: func(t *testing.T, dir string) {
			if err := os.Symlink("/", filepath.Join(dir, "engines")); err != nil {
				t.Fatal(err)
			}
		}, kind: ErrIntegrity, want: []string{"engines: is a symlink (to /)"}},
		{name: "path with .. in the manifest", tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) {
				m["files"] = append(m["files"].([]any), map[string]any{"path": "../2.0.0/model.onnx", "sha256": strings.Repeat("0", 64), "size": 1})
			})
		}, kind: ErrManifest, want: []string{`file path "../2.0.0/model.onnx" leaves the version folder`}},
		{name: "absolute path in the manifest", tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { firstFile(m)["path"] = "/etc/passwd" })
		}, kind: ErrManifest, want: []string{"is absolute"}},
		{name: "backslash path in the manifest", tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { firstFile(m)["path"] = `..\model.onnx` })
		}, kind: ErrManifest, want: []string{"backslash"}},
		{name: "unclean path in the manifest", tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { firstFile(m)["path"] = "./model.onnx" })
		}, kind: ErrManifest, want: []string{"not clean"}},
		{name: "unknown manifest field", tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["blob"] = "x" })
		}, kind: ErrManifest, want: []string{`unknown field "blob"`}},
		{name: "manifest of another version", tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["version"] = "1.0.1" })
		}, kind: ErrManifest, want: []string{"manifest is of 3DBall@1.0.1, not of its folder"}},
		{name: "schema-1 manifest", tamper: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, ManifestFile), []byte(`{"name":"3DBall","version":"1.0.0","model":"model.onnx","sha256":"`+strings.Repeat("a", 64)+`"}`))
		}, kind: ErrOldSchema, want: []string{`policyctl artifacts migrate`}},
		{name: "future schema", tamper: func(t *testing.T, dir string) {
			editManifest(t, dir, func(m map[string]any) { m["schema"] = 3 })
		}, kind: ErrManifest, want: []string{"schema 3 is not supported"}},
		{name: "named pipe", tamper: func(t *testing.T, dir string) {
			if err := mkfifo(filepath.Join(dir, "fifo")); err != nil {
				t.Skip(err)
			}
		}, kind: ErrIntegrity, want: []string{"fifo: not a regular file"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			repo := t.TempDir()
			a := add(t, repo, "3DBall", "1.0.0", trustedKey)
			opts := VerifyOptions{}
			if c.opts != nil {
				opts = c.opts(a)
			}
			if _, err := Verify(a.Dir, opts); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			c.tamper(t, a.Dir)
			_, err := Verify(a.Dir, opts)
			if err != nil {
				err = errors.New(strings.ReplaceAll(err.Error(), repo, "REPO")) // stable text
				_, err2 := Verify(a.Dir, opts)
				if !errors.Is(err2, c.kind) {
					t.Errorf("error %q is not %v", err2, c.kind)
				}
				var ve *VerifyError
				if !errors.As(err2, &ve) || ve.Model != "3DBall" || ve.Version != "1.0.0" {
					t.Errorf("not a *VerifyError of 3DBall@1.0.0: %#v", err2)
				}
			}
			wantErr(t, err, nil, c.want...)
			if opts.Digest != "" {
				return // a report has no pins: an unsigned edited manifest is only caught by one
			}
			rep, rerr := Report(repo, ReportOptions{TrustedKeys: opts.TrustedKeys})
			if rerr != nil || rep.Errors != 1 || rep.OK != 0 || rep.Models[0].Versions[0].Status != "error" {
				t.Errorf("report: %v %+v", rerr, rep)
			}
		})
	}
}

func withKeys(keys []ed25519.PublicKey) func(*Artifact) VerifyOptions {
	return func(*Artifact) VerifyOptions { return VerifyOptions{TrustedKeys: keys} }
}

func TestReadFileRechecks(t *testing.T) {
	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	p := filepath.Join(a.Dir, ModelFile)
	b := mustRead(t, p)
	b[3] ^= 0xff
	mustWrite(t, p, b)
	_, err := a.ReadFile(ModelFile)
	wantErr(t, err, ErrIntegrity, "m@1.0.0: model.onnx: sha256 mismatch")
	_, err = a.ReadFile("engines/x")
	wantErr(t, err, ErrIntegrity, "not listed")
}

func TestVerifyLayout(t *testing.T) {
	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	for _, c := range []struct{ folder, want string }{
		{"v1.0.0", "rename it to 1.0.0"},
		{"1.0", "is not a semantic version"},
		{"latest", "is not a semantic version"},
	} {
		dir := filepath.Join(repo, "m", c.folder)
		if err := os.Rename(a.Dir, dir); err != nil {
			t.Fatal(err)
		}
		_, err := Verify(dir, VerifyOptions{})
		wantErr(t, err, ErrLayout, c.want)
		os.Rename(dir, a.Dir)
	}
	link := filepath.Join(repo, "m", "2.0.0")
	if err := os.Symlink(a.Dir, link); err != nil {
		t.Fatal(err)
	}
	_, err := Verify(link, VerifyOptions{})
	wantErr(t, err, ErrLayout, "is a symlink")
	modelLink := filepath.Join(repo, "n")
	if err := os.Symlink(filepath.Join(repo, "m"), modelLink); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(filepath.Join(modelLink, "1.0.0"), VerifyOptions{})
	wantErr(t, err, ErrLayout, "model folder "+modelLink+" is a symlink")
	if _, err := Verify(filepath.Join(repo, "m", "3.0.0"), VerifyOptions{}); err == nil {
		t.Fatal("missing folder verified")
	}
}
