package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestValidateDeadlineFallback(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pi"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	c.Repository.Path = dir
	model := func(f ModelFallback) Model {
		m := DefaultModel()
		m.Name = "pi"
		m.DeadlineFallback = f
		return m
	}
	for _, f := range []ModelFallback{
		{Kind: "none"},
		{Kind: "constant", Constant: []FallbackConstant{{Output: "action", Values: []float64{0, 0.5}}}},
		{Kind: "last_action"},
		{Kind: "last_action", Constant: []FallbackConstant{{Output: "action", Values: []float64{0}}}},
		{Kind: "version", Version: "pi-small"},
		{Kind: "version", Version: "pi@1.0.0"},
	} {
		c.Models = []Model{model(f)}
		if err := c.Validate(); err != nil {
			t.Errorf("%+v refused: %v", f, err)
		}
	}
	for _, tc := range []struct {
		f    ModelFallback
		key  string
		text string
	}{
		{ModelFallback{Kind: "constant"}, "models[0].deadline_fallback.constant", "needs the constant action"},
		{ModelFallback{Kind: "version"}, "models[0].deadline_fallback.version", "needs the fallback version"},
		{ModelFallback{Kind: "version", Version: "pi"}, "models[0].deadline_fallback.version", "the model itself"},
		{ModelFallback{Kind: "version", Version: "a@b@c"}, "models[0].deadline_fallback.version", "must match"},
		{ModelFallback{Kind: "constant", Version: "x"}, "models[0].deadline_fallback.version", "used by kind version only"},
		{ModelFallback{Kind: "fast"}, "models[0].deadline_fallback.kind", "must be one of"},
		{ModelFallback{Kind: "constant", Constant: []FallbackConstant{{Output: "a", Values: []float64{1}}, {Output: "a", Values: []float64{2}}}}, "models[0].deadline_fallback.constant[1].output", "listed twice"},
		{ModelFallback{Kind: "constant", Constant: []FallbackConstant{{Output: "a"}}}, "models[0].deadline_fallback.constant[0].values", "empty"},
	} {
		c.Models = []Model{model(tc.f)}
		err := c.Validate()
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Errorf("%+v: Validate = %v, want a problem at %s", tc.f, err, tc.key)
			continue
		}
		found := false
		for _, p := range ve.Problems {
			found = found || strings.HasPrefix(p.Key, tc.key) && strings.Contains(p.Msg, tc.text)
		}
		if !found {
			t.Errorf("%+v: problems %v, want %s: …%s…", tc.f, ve.Problems, tc.key, tc.text)
		}
	}
}

// TestLoadDeadlineFallback reads the section from YAML: the numbers of a constant, the kind.
func TestLoadDeadlineFallback(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "pi"), 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "policyd.yaml")
	yaml := "repository:\n  path: " + dir + "\nmodels:\n  - name: pi\n    deadline_fallback:\n      kind: constant\n      constant:\n        - output: action\n          values: [0, -0.5, 1e-3]\n"
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ := mustLoad(t, LoadOptions{File: file})
	want := ModelFallback{Kind: "constant", Constant: []FallbackConstant{{Output: "action", Values: []float64{0, -0.5, 1e-3}}}}
	if got := c.Models[0].DeadlineFallback; !reflect.DeepEqual(got, want) {
		t.Errorf("deadline_fallback = %+v, want %+v", got, want)
	}
	bad := strings.Replace(yaml, "[0, -0.5, 1e-3]", "[0, zero]", 1)
	if err := os.WriteFile(file, []byte(bad), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := Load(LoadOptions{File: file}); err == nil || !strings.Contains(err.Error(), "models[0].deadline_fallback.constant[0].values[1]") {
		t.Errorf("a value that is no number: %v", err)
	}
}
