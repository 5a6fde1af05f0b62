package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Control inputs load from YAML with their defaults (false 0, true 1), and every broken rule
// is reported at its key.
func TestSequenceControls(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "triton"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := write(t, filepath.Join(dir, "policyd.yaml"), `
repository: {path: `+dir+`}
models:
  - name: triton
    sequence:
      controls:
        - {input: START, kind: start, datatype: INT32}
        - {input: END, kind: end, datatype: FP32, false_value: -1, true_value: 2.5}
        - {input: READY, kind: ready, datatype: BOOL}
        - {input: CORRID, kind: corrid, datatype: UINT64}
`)
	c, _ := mustLoad(t, LoadOptions{File: file})
	got := c.Models[0].Sequence.Controls
	want := []SequenceControl{
		{Input: "START", Kind: "start", DataType: "INT32", TrueValue: 1},
		{Input: "END", Kind: "end", DataType: "FP32", FalseValue: -1, TrueValue: 2.5},
		{Input: "READY", Kind: "ready", DataType: "BOOL", TrueValue: 1},
		{Input: "CORRID", Kind: "corrid", DataType: "UINT64", TrueValue: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("controls = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("controls[%d] = %+v, want %+v", i, got[i], want[i])
		}
	}

	bad := write(t, filepath.Join(dir, "bad.yaml"), `
repository: {path: `+dir+`}
models:
  - name: triton
    sequence:
      states: ["h:h_out"]
      controls:
        - {input: START, kind: start, datatype: UINT64}
        - {input: START, kind: start, datatype: INT32, true_value: 0}
        - {input: R, kind: ready, datatype: BOOL, true_value: 2}
        - {input: h, kind: corrid}
        - {kind: end, datatype: INT32, true_value: 1.5}
        - {input: X, kind: stop, datatype: INT32}
`)
	_, _, err := load(t, LoadOptions{File: bad})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Load = %v, want a *ValidationError", err)
	}
	const p = "models[0].sequence.controls"
	for key, words := range map[string]string{
		p + "[0].datatype":   "a start control is one of [FP32 INT32 BOOL], got UINT64",
		p + "[1].input":      `"START" is also controls[0]`,
		p + "[1].kind":       "start is also controls[0]",
		p + "[1].true_value": "equals false_value",
		p + "[2]":            "BOOL control's false_value and true_value are 0 or 1",
		p + "[3].datatype":   "is required",
		p + "[3].input":      "also a state input",
		p + "[4].input":      "is required",
		p + "[4]":            "INT32 control's false_value and true_value are 32-bit integers",
		p + "[5].kind":       "stop",
	} {
		found := false
		for _, pr := range ve.Problems {
			if pr.Key == key && strings.Contains(pr.Msg, words) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem at %s saying %q in:\n%v", key, words, err)
		}
	}
}
