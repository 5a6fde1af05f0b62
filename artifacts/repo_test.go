package artifacts

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeygenSignVerify(t *testing.T) {
	dir := t.TempDir()
	name := filepath.Join(dir, "release")
	pubKey, err := GenerateKeyFiles(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := GenerateKeyFiles(name); err == nil || !strings.Contains(err.Error(), "not overwriting") {
		t.Errorf("keygen over existing keys: %v", err)
	}
	if st, _ := os.Stat(name + ".key"); st.Mode().Perm() != 0o600 {
		t.Errorf("private key mode %v", st.Mode())
	}
	if b := mustRead(t, name+".key"); !strings.HasPrefix(string(b), "-----BEGIN POLICYD ED25519 PRIVATE KEY-----") {
		t.Errorf("private key file:\n%s", b)
	}
	priv, err := LoadPrivateKey(name + ".key")
	if err != nil {
		t.Fatal(err)
	}
	loadedPub, err := LoadPublicKey(name + ".pub")
	if err != nil || !loadedPub.Equal(pubKey) || !pub(priv).Equal(pubKey) {
		t.Fatalf("keys do not round-trip: %v", err)
	}
	if _, err := LoadPublicKey(name + ".key"); err == nil || !strings.Contains(err.Error(), `want "POLICYD ED25519 PUBLIC KEY"`) {
		t.Errorf("private key loaded as public: %v", err)
	}
	os.Chmod(name+".key", 0o644)
	if _, err := LoadPrivateKey(name + ".key"); err == nil || !strings.Contains(err.Error(), "too open") {
		t.Errorf("world-readable private key: %v", err)
	}

	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	trusted := VerifyOptions{TrustedKeys: []ed25519.PublicKey{loadedPub}}
	_, err = Verify(a.Dir, trusted)
	wantErr(t, err, ErrUnsigned, "unsigned artifact")
	signed, err := Sign(a.Dir, priv)
	if err != nil {
		t.Fatal(err)
	}
	if signed.Digest != a.Digest || signed.SignedBy != KeyID(pubKey) {
		t.Errorf("signed %+v", signed)
	}
	v, err := Verify(a.Dir, trusted)
	if err != nil || !v.Verified || v.SignedBy != KeyID(pubKey) {
		t.Fatalf("verify signed: %+v %v", v, err)
	}
	var sig Signature
	if err := json.Unmarshal(mustRead(t, filepath.Join(a.Dir, SignatureFile)), &sig); err != nil || len(sig.KeyID) != 16 {
		t.Errorf("manifest.sig: %+v %v", sig, err)
	}
	// Re-signing with another key replaces the signature; the old key no longer verifies it.
	if _, err := Sign(a.Dir, newKey(t)); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(a.Dir, trusted)
	wantErr(t, err, ErrSignature, "not trusted")
	// A tampered version is not signed.
	mustWrite(t, filepath.Join(a.Dir, "extra"), nil)
	_, err = Sign(a.Dir, priv)
	wantErr(t, err, ErrIntegrity, "extra: not listed")
}

func writeSchema1(t *testing.T, repo, name, version string, sum string) string {
	t.Helper()
	dir := filepath.Join(repo, name, version)
	mustWrite(t, filepath.Join(dir, ModelFile), mustRead(t, payload(t)))
	if sum == "" {
		sum = sha256Hex(mustRead(t, payload(t)))
	}
	mustWrite(t, filepath.Join(dir, ManifestFile), []byte(`{"name":"`+name+`","version":"`+version+`","model":"model.onnx","sha256":"`+sum+`"}`+"\n"))
	return dir
}

func TestMigrate(t *testing.T) {
	repo := t.TempDir()
	good := writeSchema1(t, repo, "m", "1.0.0", "")
	mustWrite(t, filepath.Join(good, SignatureFile), []byte(`{"key_id":"00","signature":"AA=="}`))
	bad := writeSchema1(t, repo, "m", "1.1.0", strings.Repeat("0", 64))
	badBefore := mustRead(t, filepath.Join(bad, ManifestFile))
	current := add(t, repo, "m", "2.0.0", nil)

	_, err := Verify(good, VerifyOptions{})
	wantErr(t, err, ErrOldSchema, "m@1.0.0: manifest.json: manifest is of schema 1", "policyctl artifacts migrate")

	inspected := 0
	ms, err := Migrate(repo, MigrateOptions{Tool: "policyctl test", Now: testNow, Inspect: func(b []byte) (IO, error) {
		inspected++
		return testIO, nil
	}})
	if err != nil || len(ms) != 2 {
		t.Fatalf("migrate: %v %+v", err, ms)
	}
	if ms[0].Ref != "m@1.0.0" || ms[0].Err != nil || !ms[0].Unsigned || ms[0].Digest == "" {
		t.Errorf("1.0.0: %+v", ms[0])
	}
	if ms[1].Ref != "m@1.1.0" || ms[1].Err == nil || !strings.Contains(ms[1].Err.Error(), "sha256 mismatch") {
		t.Errorf("1.1.0: %+v", ms[1])
	}
	if inspected != 1 {
		t.Errorf("inspected %d models", inspected)
	}
	a, err := Verify(good, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if a.Digest != ms[0].Digest || a.Manifest.Metadata["migrated_from_schema"] != "1" || len(a.Manifest.IO.Inputs) != 1 || a.SignedBy != "" {
		t.Errorf("migrated %+v", a.Manifest)
	}
	if _, err := os.Stat(filepath.Join(good, SignatureFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("stale manifest.sig kept")
	}
	if string(mustRead(t, filepath.Join(bad, ManifestFile))) != string(badBefore) {
		t.Error("a version whose model does not match was rewritten")
	}
	if v, err := Verify(current.Dir, VerifyOptions{Digest: current.Digest}); err != nil || v == nil {
		t.Errorf("schema 2 touched: %v", err)
	}
	// Again: nothing left but the broken one.
	ms, err = Migrate(repo, MigrateOptions{})
	if err != nil || len(ms) != 1 || ms[0].Err == nil {
		t.Errorf("second migrate: %v %+v", err, ms)
	}
	// An extra file in a schema-1 folder is refused; so is another model file name.
	odd := writeSchema1(t, repo, "n", "1.0.0", "")
	mustWrite(t, filepath.Join(odd, "notes.txt"), nil)
	ms, _ = Migrate(repo, MigrateOptions{})
	if len(ms) != 2 || ms[1].Err == nil || !strings.Contains(ms[1].Err.Error(), "notes.txt: not part of a schema-1 version") {
		t.Errorf("extra file: %+v", ms)
	}
}

func TestReportRenderings(t *testing.T) {
	repo := t.TempDir()
	key := newKey(t)
	ok := add(t, repo, "3DBall", "1.0.0", key)
	bad := add(t, repo, "3DBall", "1.1.0-rc.1", nil)
	add(t, repo, "walker", "0.1.0", nil)
	os.MkdirAll(filepath.Join(repo, "walker", "latest"), 0o755)
	p := filepath.Join(bad.Dir, ModelFile)
	b := mustRead(t, p)
	b[0] ^= 1
	mustWrite(t, p, b)
	mustWrite(t, filepath.Join(repo, "3DBall", ".tmp-1.2.0-1", ModelFile), nil)
	size := len(b)
	sum := sha256Hex(mustRead(t, payload(t)))

	rep, err := Report(repo, ReportOptions{TrustedKeys: []ed25519.PublicKey{pub(key)}})
	if err != nil {
		t.Fatal(err)
	}
	var text strings.Builder
	if err := rep.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	got := strings.ReplaceAll(text.String(), repo, "REPO")
	for _, want := range []string{
		"repository REPO\n",
		"\n3DBall\n  1.0.0       ok     " + ok.Digest + "  signed by " + KeyID(pub(key)) + " (verified)\n",
		"    created 2026-03-04T04:06:07Z by policyctl test\n",
		"    training_run=run-7\n",
		"    model.onnx  sha256:" + sum + "  " + itoa(size) + " bytes\n",
		"  1.1.0-rc.1  error  " + bad.Digest + "  unsigned\n",
		"    error: 3DBall@1.1.0-rc.1: model.onnx: sha256 mismatch (manifest " + sum[:12] + "…, file ",
		"    error: 3DBall@1.1.0-rc.1: unsigned artifact; trusted keys are configured\n",
		"\nwalker\n  0.1.0   error  ",
		"  latest  error  -  unsigned\n    error: walker@latest: folder REPO/walker/latest: version \"latest\" is not a semantic version",
		"stale work folders of interrupted adds (not versions; remove when no add runs):\n  REPO/3DBall/.tmp-1.2.0-1\n",
		"\n1 ok, 3 with errors\n",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("text report lacks %q:\n%s", want, got)
		}
	}

	var js strings.Builder
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Repository string
		Models     []struct {
			Name     string
			Versions []struct {
				Version, Status, Digest string
				SignedBy                string `json:"signed_by"`
				SignatureVerified       bool   `json:"signature_verified"`
				Problems                []string
				Files                   []File
			}
		}
		Stale     []string
		OK, Error int
	}
	if err := json.Unmarshal([]byte(js.String()), &back); err != nil {
		t.Fatalf("%v:\n%s", err, js.String())
	}
	v0 := back.Models[0].Versions[0]
	if back.Repository != repo || len(back.Models) != 2 || v0.Version != "1.0.0" || v0.Status != "ok" || v0.Digest != ok.Digest ||
		v0.SignedBy != KeyID(pub(key)) || !v0.SignatureVerified || len(v0.Files) != 1 || v0.Files[0].SHA256 != sum || back.OK != 1 {
		t.Errorf("json report:\n%s", js.String())
	}
	if v1 := back.Models[0].Versions[1]; v1.Status != "error" || len(v1.Problems) != 2 {
		t.Errorf("json report of the bad version: %+v", v1)
	}

	// Selections.
	one, err := Report(repo, ReportOptions{Model: "3DBall", Version: "v1.0.0"})
	if err != nil || len(one.Models) != 1 || len(one.Models[0].Versions) != 1 || one.OK != 1 {
		t.Errorf("one version: %v %+v", err, one)
	}
	if _, err := Report(repo, ReportOptions{Model: "nope"}); err == nil || !strings.Contains(err.Error(), "no model nope") {
		t.Errorf("unknown model: %v", err)
	}
	if _, err := Report(repo, ReportOptions{Model: "3DBall", Version: "9.9.9"}); err == nil || !strings.Contains(err.Error(), "no version 9.9.9 of 3DBall") {
		t.Errorf("unknown version: %v", err)
	}
	list, err := List(repo)
	if err != nil || len(list) != 2 || list[0].Versions[0].SignatureVerified || list[0].Versions[0].SignedBy == "" {
		t.Errorf("list: %v %+v", err, list)
	}
	if vs, err := Versions(repo, "walker"); err != nil || len(vs) != 1 {
		t.Errorf("versions skip non-version folders: %v %v", vs, err)
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
