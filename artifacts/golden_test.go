package artifacts

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goldenJSON is a golden file of testIO (obs FP32[-1,8] → action FP32[-1,2]).
const goldenJSON = `{
  "schema": 1,
  "tolerance": {"atol": 0.001},
  "outputs": {"action": {"rtol": 0.01}},
  "cases": [
    {"name": "zeros",
     "inputs": [{"name": "obs", "datatype": "FP32", "shape": [1, 8], "data": [0, 0, 0, 0, 0, 0, 0, 0]}],
     "outputs": [{"name": "action", "datatype": "FP32", "shape": [1, 2], "data": [0.5, -0.25]}]}
  ]
}
`

func f32Bytes(xs ...float32) []byte {
	b := make([]byte, 4*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

func i64Bytes(xs ...int64) []byte {
	b := make([]byte, 8*len(xs))
	for i, x := range xs {
		binary.LittleEndian.PutUint64(b[8*i:], uint64(x))
	}
	return b
}

func TestParseGoldenRefuses(t *testing.T) {
	okCase := `{"name": "c", "inputs": [{"name": "obs", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}], "outputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [3]}]}`
	for _, c := range []struct{ name, json, want string }{
		{"unknown field", `{"schema": 1, "cases": [` + okCase + `], "tolerances": {}}`, `unknown field "tolerances"`},
		{"schema", `{"schema": 2, "cases": [` + okCase + `]}`, "schema 2 is not supported"},
		{"no cases", `{"schema": 1, "cases": []}`, "no cases"},
		{"twice", `{"schema": 1, "cases": [` + okCase + `,` + okCase + `]}`, `case "c" appears twice`},
		{"short data", `{"schema": 1, "cases": [{"name": "c", "inputs": [{"name": "obs", "datatype": "FP32", "shape": [1, 3], "data": [1, 2]}], "outputs": [{"name": "a", "datatype": "FP32", "shape": [], "data": [1]}]}]}`, `"obs": shape [1 3] holds 3 elements, data has 2`},
		{"datatype", `{"schema": 1, "cases": [{"name": "c", "inputs": [{"name": "obs", "datatype": "FLOAT", "shape": [1], "data": [1]}], "outputs": [{"name": "a", "datatype": "FP32", "shape": [], "data": [1]}]}]}`, `datatype "FLOAT"`},
		{"fraction in an integer", `{"schema": 1, "cases": [{"name": "c", "inputs": [{"name": "obs", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": [{"name": "a", "datatype": "INT64", "shape": [1], "data": [1.5]}]}]}`, "is not an integer"},
		{"negative atol", `{"schema": 1, "tolerance": {"atol": -1}, "cases": [` + okCase + `]}`, "atol -1 must be a finite number >= 0"},
		{"argmax and discrete", `{"schema": 1, "outputs": {"a": {"argmax": true, "discrete": true}}, "cases": [` + okCase + `]}`, "exclude each other"},
		{"no outputs", `{"schema": 1, "cases": [{"name": "c", "inputs": [{"name": "obs", "datatype": "FP32", "shape": [1], "data": [1]}], "outputs": []}]}`, "no expected outputs"},
		{"not numbers", `{"schema": 1, "cases": [{"name": "c", "inputs": [{"name": "obs", "datatype": "FP32", "shape": [1], "data": ["1"]}], "outputs": []}]}`, "data[0]"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseGolden([]byte(c.json))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("ParseGolden: %v, want an error containing %q", err, c.want)
			}
		})
	}
}

func TestGoldenCheckIO(t *testing.T) {
	g, err := ParseGolden([]byte(goldenJSON))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.CheckIO(testIO); err != nil {
		t.Fatalf("CheckIO: %v", err)
	}
	for _, c := range []struct {
		name string
		io   IO
		want string
	}{
		{"other input", IO{Inputs: []Tensor{{Name: "x", Datatype: "FP32", Shape: []int64{-1, 8}}}, Outputs: testIO.Outputs}, `no input "obs"`},
		{"width", IO{Inputs: []Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{-1, 4}}}, Outputs: testIO.Outputs}, "the model takes [-1 4]"},
		{"datatype", IO{Inputs: []Tensor{{Name: "obs", Datatype: "FP16", Shape: []int64{-1, 8}}}, Outputs: testIO.Outputs}, "datatype FP32, the model takes FP16"},
		{"output", IO{Inputs: testIO.Inputs, Outputs: []Tensor{{Name: "act", Datatype: "FP32"}}}, `no such output`},
	} {
		if err := g.CheckIO(c.io); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: CheckIO: %v, want %q", c.name, err, c.want)
		}
	}
}

func TestCompareOutput(t *testing.T) {
	g := &Golden{Schema: 1, Outputs: map[string]GoldenOutput{"logits": {Argmax: true, Tolerance: Tolerance{Atol: ptr(0.01)}}, "score": {Discrete: true}}}
	for _, c := range []struct {
		name     string
		want     GoldenTensor
		datatype string
		shape    []int64
		got      []byte
		pass     bool
		flipped  int
		says     []string
	}{
		{"float within", GoldenTensor{Name: "a", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{0.5, -0.25}},
			"FP32", []int64{1, 2}, f32Bytes(0.50004, -0.25), true, -1, []string{"within tolerance (atol 0.0001, rtol 0.001)"}},
		{"float beyond", GoldenTensor{Name: "a", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{0.5, -0.25}},
			"FP32", []int64{1, 2}, f32Bytes(0.5, -0.5), false, -1, []string{`case "c" output "a": max abs error 0.25 beyond tolerance (atol 0.0001, rtol 0.001) at index 1 (expected -0.25, got -0.5); max rel error 1`}},
		{"NaN", GoldenTensor{Name: "a", Datatype: "FP32", Shape: []int64{1}, Data: []float64{1}},
			"FP32", []int64{1}, f32Bytes(float32(math.NaN())), false, -1, []string{"max abs error +Inf"}},
		{"integer flipped", GoldenTensor{Name: "act", Datatype: "INT64", Shape: []int64{3}, Data: []float64{0, 2, 1}},
			"INT64", []int64{3}, i64Bytes(0, 1, 1), false, 1, []string{"discrete action flipped at index 1 (expected 2, got 1)"}},
		{"integer equal", GoldenTensor{Name: "act", Datatype: "INT64", Shape: []int64{3}, Data: []float64{0, 2, 1}},
			"INT64", []int64{3}, i64Bytes(0, 2, 1), true, -1, []string{"discrete, all equal"}},
		// Inside atol 0.01 everywhere, but row 1's choice moves from class 0 to class 1.
		{"argmax flipped inside atol", GoldenTensor{Name: "logits", Datatype: "FP32", Shape: []int64{2, 2}, Data: []float64{0.9, 0.1, 0.502, 0.498}},
			"FP32", []int64{2, 2}, f32Bytes(0.9, 0.1, 0.499, 0.501), false, 1, []string{"within tolerance", "argmax flipped at row 1 (expected 0, got 1)"}},
		{"argmax kept", GoldenTensor{Name: "logits", Datatype: "FP32", Shape: []int64{2, 2}, Data: []float64{0.9, 0.1, 0.502, 0.498}},
			"FP32", []int64{2, 2}, f32Bytes(0.9, 0.1, 0.505, 0.497), true, -1, nil},
		{"float flagged discrete", GoldenTensor{Name: "score", Datatype: "FP32", Shape: []int64{2}, Data: []float64{3, 1}},
			"FP32", []int64{2}, f32Bytes(3, 1.00001), false, 1, []string{"discrete action flipped at index 1 (expected 1, got 1)"}},
		{"shape", GoldenTensor{Name: "a", Datatype: "FP32", Shape: []int64{1, 2}, Data: []float64{0.5, -0.25}},
			"FP32", []int64{2, 1}, f32Bytes(0.5, -0.25), false, -1, []string{"the engine returned shape [2 1], expected [1 2]"}},
		{"datatype", GoldenTensor{Name: "a", Datatype: "FP32", Shape: []int64{1}, Data: []float64{0.5}},
			"FP64", []int64{1}, make([]byte, 8), false, -1, []string{"datatype FP64"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := g.CompareOutput("c", &c.want, c.datatype, c.shape, c.got)
			if r.Pass != c.pass || r.Flipped != c.flipped {
				t.Errorf("pass %v flipped %d, want %v %d: %s", r.Pass, r.Flipped, c.pass, c.flipped, r)
			}
			for _, s := range c.says {
				if !strings.Contains(r.String(), s) {
					t.Errorf("%q lacks %q", r.String(), s)
				}
			}
		})
	}
}

func ptr(x float64) *float64 { return &x }

func TestGoldenValuesRoundTrip(t *testing.T) {
	for _, dt := range []string{"FP32", "FP64", "FP16", "BF16", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64", "BOOL"} {
		data := []float64{0, 1, 2, 3}
		if IsFloatDatatype(dt) {
			data = []float64{0, -1.5, 0.25, 3}
		}
		if dt == "BOOL" {
			data = []float64{0, 1, 1, 0}
		}
		gt := GoldenTensor{Name: "x", Datatype: dt, Shape: []int64{4}, Data: data}
		b, err := gt.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		back, err := DecodeValues(dt, b)
		if err != nil {
			t.Fatal(err)
		}
		for i := range data {
			if back[i] != data[i] {
				t.Errorf("%s: %v → %v", dt, data, back)
				break
			}
		}
	}
	if h := float32ToHalf(65504); halfToFloat32(h) != 65504 {
		t.Errorf("fp16 max: %v", halfToFloat32(h))
	}
	if h := float32ToHalf(1e-7); halfToFloat32(h) == 0 {
		t.Error("fp16 subnormal lost")
	}
}

// The golden file is a file of the artifact: listed in the manifest with its hash, so that
// changing it afterwards fails verification, and covered by the signature, so that re-hashing
// it in the manifest breaks the signature.
func TestGoldenIsHashedAndSigned(t *testing.T) {
	repo := t.TempDir()
	key := newKey(t)
	a, err := Add(repo, AddRequest{Name: "m", Version: "1.0.0", Model: payload(t), IO: testIO, SignKey: key,
		Golden: []byte(goldenJSON), Tool: "test", Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	f := a.Manifest.File(GoldenFile)
	if f == nil || f.SHA256 != sha256Hex([]byte(goldenJSON)) || f.Size != int64(len(goldenJSON)) {
		t.Fatalf("manifest entry of %s: %+v", GoldenFile, f)
	}
	trusted := VerifyOptions{TrustedKeys: []ed25519.PublicKey{pub(key)}}
	v, err := Verify(a.Dir, trusted)
	if err != nil {
		t.Fatal(err)
	}
	g, err := v.Golden()
	if err != nil || g == nil || len(g.Cases) != 1 || g.Cases[0].Outputs[0].Data[0] != 0.5 {
		t.Fatalf("Golden: %+v, %v", g, err)
	}

	// An expected value changed after signing.
	p := filepath.Join(a.Dir, GoldenFile)
	tampered := strings.Replace(goldenJSON, "[0.5, -0.25]", "[0.6, -0.25]", 1)
	if err := os.WriteFile(p, []byte(tampered), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Verify(a.Dir, trusted)
	if !errors.Is(err, ErrIntegrity) || !strings.Contains(err.Error(), "golden.json: sha256 mismatch") {
		t.Errorf("Verify after editing golden.json: %v", err)
	}
	if _, err := v.Golden(); !errors.Is(err, ErrIntegrity) {
		t.Errorf("Golden after editing golden.json: %v", err)
	}
	// ... and the manifest re-hashed to match: the signature no longer does.
	editManifest(t, a.Dir, func(m map[string]any) {
		for _, f := range m["files"].([]any) {
			if f := f.(map[string]any); f["path"] == GoldenFile {
				f["sha256"] = sha256Hex([]byte(tampered))
			}
		}
	})
	_, err = Verify(a.Dir, trusted)
	if !errors.Is(err, ErrSignature) || errors.Is(err, ErrIntegrity) {
		t.Errorf("Verify after re-hashing golden.json in the manifest: %v", err)
	}
}

func TestAddRefusesGoldenOfAnotherModel(t *testing.T) {
	other := IO{Inputs: []Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{-1, 4}}}, Outputs: testIO.Outputs}
	_, err := Add(t.TempDir(), AddRequest{Name: "m", Version: "1.0.0", Model: payload(t), IO: other, Golden: []byte(goldenJSON)})
	if err == nil || !strings.Contains(err.Error(), `golden case "zeros": input "obs": shape [1 8], the model takes [-1 4]`) {
		t.Errorf("Add: %v", err)
	}
	_, err = Add(t.TempDir(), AddRequest{Name: "m", Version: "1.0.0", Model: payload(t), IO: testIO, Golden: []byte("{")})
	if err == nil || !strings.Contains(err.Error(), "golden file") {
		t.Errorf("Add of a broken golden file: %v", err)
	}
}
