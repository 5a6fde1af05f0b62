package artifacts

import (
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func engineReq(data string) AddEngineRequest {
	return AddEngineRequest{Backend: "cuda", BackendVersion: "0.1.0-k1-cudart11080", Target: "sm_90",
		Device: "GPU A", Data: []byte(data), Builder: "policyctl test", Now: testNow}
}

func TestAddEngineCacheRoundTrip(t *testing.T) {
	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	before := a.Digest

	b, err := AddEngineCache(a.Dir, engineReq("ENGINE-1"))
	if err != nil {
		t.Fatal(err)
	}
	if b.Digest == before {
		t.Error("adding a cache left the digest unchanged")
	}
	v, err := Verify(a.Dir, VerifyOptions{Digest: b.Digest})
	if err != nil {
		t.Fatalf("Verify after AddEngineCache: %v", err)
	}
	dir := "engines/cuda-0.1.0-k1-cudart11080/sm_90"
	if got := v.Manifest.EngineCaches(); !reflect.DeepEqual(got, []string{"cuda-0.1.0-k1-cudart11080/sm_90"}) {
		t.Errorf("EngineCaches = %v", got)
	}
	for _, f := range []string{dir + "/engine.bin", dir + "/engine.json", ModelFile} {
		if v.Manifest.File(f) == nil {
			t.Errorf("manifest lacks %s", f)
		}
	}
	if _, err := Verify(a.Dir, VerifyOptions{Digest: before}); !errors.Is(err, ErrDigest) {
		t.Errorf("the old pin still verifies: %v", err)
	}
	c, data, err := v.EngineCache("cuda", "0.1.0-k1-cudart11080", "sm_90", "")
	if err != nil || string(data) != "ENGINE-1" || c.ModelSHA256 != v.Manifest.File(ModelFile).SHA256 || c.Device != "GPU A" || c.Builder != "policyctl test" {
		t.Fatalf("EngineCache = %+v, %q, %v", c, data, err)
	}
	// Another target or backend version has none.
	if c, data, err := v.EngineCache("cuda", "0.1.0-k1-cudart11080", "sm_80", ""); c != nil || data != nil || err != nil {
		t.Errorf("sm_80: %+v, %q, %v; want none", c, data, err)
	}
	// Other options: stale.
	if _, _, err := v.EngineCache("cuda", "0.1.0-k1-cudart11080", "sm_90", "fp16"); !errors.Is(err, ErrStaleEngine) ||
		!strings.Contains(err.Error(), `options is "", this load needs "fp16"; rebuild engines`) {
		t.Errorf("other options: %v", err)
	}

	// A rebuild replaces the cache; a second target is added beside it; no work folder is left.
	req := engineReq("ENGINE-2")
	if _, err := AddEngineCache(a.Dir, req); err != nil {
		t.Fatal(err)
	}
	req.Target = "sm_80"
	if _, err := AddEngineCache(a.Dir, req); err != nil {
		t.Fatal(err)
	}
	v, err = Verify(a.Dir, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, data, _ := v.EngineCache("cuda", "0.1.0-k1-cudart11080", "sm_90", ""); string(data) != "ENGINE-2" {
		t.Errorf("rebuilt cache = %q", data)
	}
	if got := len(v.Manifest.EngineCaches()); got != 2 {
		t.Errorf("%d caches, want 2", got)
	}
	des, _ := os.ReadDir(filepath.Dir(a.Dir))
	if len(des) != 1 {
		t.Errorf("model folder holds %v, want the version only", des)
	}
}

func TestEngineCacheTamperedOrStale(t *testing.T) {
	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	if _, err := AddEngineCache(a.Dir, engineReq("ENGINE")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(a.Dir, "engines", "cuda-0.1.0-k1-cudart11080", "sm_90")
	v, err := Verify(a.Dir, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Bytes changed after Verify: ReadFile's check refuses them.
	if err := os.WriteFile(filepath.Join(dir, "engine.bin"), []byte("EVIL!!"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := v.EngineCache("cuda", "0.1.0-k1-cudart11080", "sm_90", ""); !errors.Is(err, ErrIntegrity) {
		t.Errorf("tampered engine.bin: %v", err)
	}
	if _, err := Verify(a.Dir, VerifyOptions{}); !errors.Is(err, ErrIntegrity) {
		t.Errorf("Verify of a tampered cache: %v", err)
	}

	// A cache built from another model.onnx: stale even though every file verifies.
	b := add(t, repo, "m", "2.0.0", nil)
	req := engineReq("ENGINE")
	req.ModelSHA256 = strings.Repeat("ab", 32)
	if _, err := AddEngineCache(b.Dir, req); err == nil || !strings.Contains(err.Error(), "the engine was built from model.onnx sha256") {
		t.Errorf("AddEngineCache of another model's engine: %v", err)
	}
	if _, err := AddEngineCache(b.Dir, engineReq("ENGINE")); err != nil {
		t.Fatal(err)
	}
	vb, err := Verify(b.Dir, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := vb.EngineCache("cuda", "0.1.0-k1-cudart11080", "sm_90", "")
	if err != nil {
		t.Fatal(err)
	}
	c.ModelSHA256 = strings.Repeat("0", 64)
	if err := c.Match("cuda", c.BackendVersion, "sm_90", strings.Repeat("1", 64), ""); !errors.Is(err, ErrStaleEngine) ||
		!strings.Contains(err.Error(), "model_sha256") {
		t.Errorf("Match of another model: %v", err)
	}
	if err := c.Match("cuda", "0.2.0", "sm_90", c.ModelSHA256, ""); !errors.Is(err, ErrStaleEngine) || !strings.Contains(err.Error(), "backend_version") {
		t.Errorf("Match of another backend version: %v", err)
	}
}

func TestAddEngineCacheSigned(t *testing.T) {
	repo := t.TempDir()
	key := newKey(t)
	a := add(t, repo, "m", "1.0.0", key)
	if _, err := AddEngineCache(a.Dir, engineReq("E")); err == nil || !strings.Contains(err.Error(), "the version is signed") {
		t.Fatalf("AddEngineCache without the key = %v", err)
	}
	if _, err := Verify(a.Dir, VerifyOptions{TrustedKeys: []ed25519.PublicKey{pub(key)}}); err != nil {
		t.Fatalf("a refused add changed the version: %v", err)
	}
	req := engineReq("E")
	req.SignKey = key
	b, err := AddEngineCache(a.Dir, req)
	if err != nil {
		t.Fatal(err)
	}
	v, err := Verify(a.Dir, VerifyOptions{TrustedKeys: []ed25519.PublicKey{pub(key)}})
	if err != nil || v.Digest != b.Digest || !v.Verified {
		t.Errorf("Verify of the re-signed version: %+v, %v", v, err)
	}
}

func TestAddEngineCacheRefusesBadInput(t *testing.T) {
	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	for _, tt := range []struct {
		edit func(*AddEngineRequest)
		want string
	}{
		{func(r *AddEngineRequest) { r.Target = "../x" }, `target "../x" is not usable in a folder name`},
		{func(r *AddEngineRequest) { r.BackendVersion = "" }, `backend version "" is not usable`},
		{func(r *AddEngineRequest) { r.Backend = "a/b" }, `backend "a/b" is not usable`},
		{func(r *AddEngineRequest) { r.Data = nil }, "no data"},
	} {
		req := engineReq("E")
		tt.edit(&req)
		if _, err := AddEngineCache(a.Dir, req); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: %v, want %q", req, err, tt.want)
		}
	}
	if _, err := AddEngineCache(filepath.Join(repo, "m", "9.0.0"), engineReq("E")); err == nil {
		t.Error("AddEngineCache to a missing version succeeded")
	}
}

// A timing cache is stored beside the engine, listed and verified like it, read back by
// TimingCache, kept when a rebuild gives none, and refused when tampered with.
func TestTimingCache(t *testing.T) {
	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	const bv = "0.1.0-k1-cudart11080"
	if tc, err := a.TimingCache("cuda", bv, "sm_90"); tc != nil || err != nil {
		t.Fatalf("TimingCache of a version without one = %q, %v; want none", tc, err)
	}
	req := engineReq("ENGINE-1")
	req.TimingCache = []byte("TIMINGS-1")
	if _, err := AddEngineCache(a.Dir, req); err != nil {
		t.Fatal(err)
	}
	v, err := Verify(a.Dir, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := "engines/cuda-" + bv + "/sm_90/timing.cache"
	if f := v.Manifest.File(p); f == nil || f.Size != 9 || f.SHA256 != sha256Hex([]byte("TIMINGS-1")) {
		t.Errorf("manifest entry of %s = %+v", p, f)
	}
	if tc, err := v.TimingCache("cuda", bv, "sm_90"); string(tc) != "TIMINGS-1" || err != nil {
		t.Errorf("TimingCache = %q, %v", tc, err)
	}
	if tc, err := v.TimingCache("cuda", bv, "sm_80"); tc != nil || err != nil {
		t.Errorf("TimingCache of another target = %q, %v; want none", tc, err)
	}
	if _, err := v.TimingCache("cuda", bv, "../sm_90"); err == nil || !strings.Contains(err.Error(), "not usable in a folder name") {
		t.Errorf("TimingCache of a bad target = %v", err)
	}

	// A rebuild whose engine left no timing cache keeps the folder's; one that left one
	// replaces it.
	if _, err := AddEngineCache(a.Dir, engineReq("ENGINE-2")); err != nil {
		t.Fatal(err)
	}
	v, err = Verify(a.Dir, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if tc, _ := v.TimingCache("cuda", bv, "sm_90"); string(tc) != "TIMINGS-1" {
		t.Errorf("after a rebuild without one: %q, want the old one kept", tc)
	}
	req = engineReq("ENGINE-3")
	req.TimingCache = []byte("TIMINGS-2")
	if _, err := AddEngineCache(a.Dir, req); err != nil {
		t.Fatal(err)
	}
	if v, err = Verify(a.Dir, VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	if tc, _ := v.TimingCache("cuda", bv, "sm_90"); string(tc) != "TIMINGS-2" {
		t.Errorf("after a rebuild with one: %q", tc)
	}

	// Changed after Verify: ReadFile's check refuses it, and Verify does too.
	if err := os.WriteFile(filepath.Join(a.Dir, filepath.FromSlash(p)), []byte("TIMINGS-X"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := v.TimingCache("cuda", bv, "sm_90"); !errors.Is(err, ErrIntegrity) {
		t.Errorf("tampered timing.cache: %v", err)
	}
	if _, err := Verify(a.Dir, VerifyOptions{}); !errors.Is(err, ErrIntegrity) {
		t.Errorf("Verify of a tampered timing.cache: %v", err)
	}
}

// A timing.cache put in the folder by hand without a manifest entry makes the version fail
// verification, as any unlisted file does: it is never read.
func TestTimingCacheUnlisted(t *testing.T) {
	repo := t.TempDir()
	a := add(t, repo, "m", "1.0.0", nil)
	if _, err := AddEngineCache(a.Dir, engineReq("ENGINE")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(a.Dir, "engines", "cuda-0.1.0-k1-cudart11080", "sm_90")
	if err := os.WriteFile(filepath.Join(dir, TimingCacheFile), []byte("HAND-MADE"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Verify(a.Dir, VerifyOptions{}); err == nil || !strings.Contains(err.Error(), "sm_90/timing.cache: not listed in the manifest") {
		t.Errorf("Verify with an unlisted timing.cache = %v", err)
	}
}
