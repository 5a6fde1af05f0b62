package config

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Backend parameters: both file forms, the profile overlay and the environment merge key by
// key; every bad key or value is reported with its key path; models[] override engine's.
func TestBackendParametersLayers(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "policyd.yaml"), `repository:
  path: `+absRepo(t)+`
engine:
  backend_parameters:
    tensorrt.precision: fp16
    tensorrt:
      workspace_mib: 512
models:
  - name: policy-a
    backend_parameters:
      tensorrt.builder_optimization_level: 5
`)
	write(t, filepath.Join(dir, "policyd.prod.yaml"), "engine:\n  backend_parameters:\n    tensorrt:\n      precision: bf16\n")
	c, s := mustLoad(t, LoadOptions{File: file, Profile: "prod",
		Env: []string{"POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__WORKSPACE_MIB=2048"}})
	want := BackendParams{"tensorrt.precision": "bf16", "tensorrt.workspace_mib": "2048"}
	if !reflect.DeepEqual(c.Engine.BackendParameters, want) {
		t.Errorf("engine.backend_parameters = %v, want %v", c.Engine.BackendParameters, want)
	}
	if got := s.Of("engine.backend_parameters"); got != "env:POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__WORKSPACE_MIB" {
		t.Errorf("source = %q", got)
	}
	m := c.Models[0].BackendParameters
	if !reflect.DeepEqual(m, BackendParams{"tensorrt.builder_optimization_level": "5"}) {
		t.Errorf("models[0].backend_parameters = %v", m)
	}
	merged := m.Merge(c.Engine.BackendParameters)
	if want := (BackendParams{"tensorrt.precision": "bf16", "tensorrt.workspace_mib": "2048", "tensorrt.builder_optimization_level": "5"}); !reflect.DeepEqual(merged, want) {
		t.Errorf("Merge = %v, want %v", merged, want)
	}
	over := BackendParams{"tensorrt.precision": "fp32"}.Merge(c.Engine.BackendParameters)
	if over["tensorrt.precision"] != "fp32" || over["tensorrt.workspace_mib"] != "2048" {
		t.Errorf("a model's key does not override the default's: %v", over)
	}

	// The whole map as key=value pairs, as a flag gives it.
	c, s = mustLoad(t, LoadOptions{File: file, Flags: map[string]any{"engine.backend_parameters": "tensorrt.precision=fp32, tensorrt.workspace_mib=64"}})
	if want := (BackendParams{"tensorrt.precision": "fp32", "tensorrt.workspace_mib": "64"}); !reflect.DeepEqual(c.Engine.BackendParameters, want) {
		t.Errorf("from the flag: %v, want %v", c.Engine.BackendParameters, want)
	}
	if got := s.Of("engine.backend_parameters"); got != "flag:--engine.backend-parameters" {
		t.Errorf("source = %q", got)
	}
}

func TestBackendParametersProblems(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "policyd.yaml"), `repository:
  path: `+absRepo(t)+`
engine:
  backend_parameters:
    tensorrt.precision: fp8
    tensorrt.workspace_mib: 0
    tensorrt.precison: fp16
    cuda.streams: 2
models:
  - name: policy-a
    backend_parameters:
      tensorrt:
        builder_optimization_level: 6
      precision: fp16
`)
	_, _, err := load(t, LoadOptions{File: file})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v", err)
	}
	src := " (file:" + file + ")"
	for _, want := range []string{
		`engine.backend_parameters.cuda.streams: unknown backend parameter: known for cuda: cuda.graphs, cuda.mapped_io` + src,
		`engine.backend_parameters.tensorrt.precision: must be fp32, fp16 or bf16, got "fp8"` + src,
		`engine.backend_parameters.tensorrt.precison: unknown backend parameter (did you mean tensorrt.precision?): known for tensorrt: tensorrt.precision, tensorrt.workspace_mib, tensorrt.builder_optimization_level, tensorrt.graphs` + src,
		`engine.backend_parameters.tensorrt.workspace_mib: must be an integer from 1 to 1048576, got "0"` + src,
		`models[0].backend_parameters.precision: unknown backend parameter: a key is <backend>.<name>, one of tensorrt.precision, tensorrt.workspace_mib, tensorrt.builder_optimization_level, tensorrt.graphs, cuda.graphs, cuda.mapped_io` + src,
		`models[0].backend_parameters.tensorrt.builder_optimization_level: must be an integer from 0 to 5, got "6"` + src,
	} {
		if !slicesContains(ve.Problems, want) {
			t.Errorf("problems lack\n%s\ngot\n%v", want, err)
		}
	}
	if len(ve.Problems) != 6 {
		t.Errorf("%d problems, want 6:\n%v", len(ve.Problems), err)
	}

	for _, c := range []struct{ env, want string }{
		{"POLICYD_ENGINE__BACKEND_PARAMETERS__PRECISION=fp16", "engine.backend_parameters.precision: a backend parameter is <backend>.<name>, as POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__PRECISION"},
		{"POLICYD_ENGINE__BACKEND_PARAMETERS=tensorrt.precision", `engine.backend_parameters: must be backend parameters like tensorrt.precision=fp16,tensorrt.workspace_mib=1024: "tensorrt.precision" is not key=value`},
		{"POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__PRECISION=int8", `engine.backend_parameters.tensorrt.precision: must be fp32, fp16 or bf16, got "int8" (env:POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__PRECISION)`},
	} {
		_, _, err := load(t, LoadOptions{File: "testdata/good/minimal.yaml", Env: []string{c.env}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error\n%v\nwant it to contain\n%s", c.env, err, c.want)
		}
	}
}

// A change of the parameters is a live change, shown sorted by key.
func TestBackendParametersDiffAndSchema(t *testing.T) {
	a, b := Defaults(), Defaults()
	b.Engine.BackendParameters = BackendParams{"tensorrt.workspace_mib": "64", "tensorrt.precision": "fp16"}
	got := Diff(a, b)
	want := []Change{{Key: "engine.backend_parameters", Old: "{}", New: "{tensorrt.precision: fp16, tensorrt.workspace_mib: 64}"}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Diff = %v, want %v", got, want)
	}
	var v map[string]any
	if err := json.Unmarshal(Schema(), &v); err != nil {
		t.Fatal(err)
	}
	bp := v["properties"].(map[string]any)["engine"].(map[string]any)["properties"].(map[string]any)["backend_parameters"].(map[string]any)
	props := bp["properties"].(map[string]any)
	if bp["additionalProperties"] != false || props["tensorrt.precision"] == nil ||
		props["tensorrt"].(map[string]any)["properties"].(map[string]any)["builder_optimization_level"] == nil {
		t.Errorf("schema of engine.backend_parameters: %v", bp)
	}
}

func absRepo(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs("testdata/repo")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func slicesContains(ps []Problem, s string) bool {
	for _, p := range ps {
		if p.String() == s {
			return true
		}
	}
	return false
}

// The GPU backends' run switches are booleans: a YAML boolean or the strings from the
// environment; anything else is refused naming the key.
func TestBackendParametersBooleans(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "policyd.yaml"), `repository:
  path: `+absRepo(t)+`
engine:
  backend_parameters:
    cuda.graphs: false
    cuda:
      mapped_io: true
    tensorrt.graphs: "false"
`)
	c, _ := mustLoad(t, LoadOptions{File: file, Env: []string{"POLICYD_ENGINE__BACKEND_PARAMETERS__CUDA__MAPPED_IO=false"}})
	want := BackendParams{"cuda.graphs": "false", "cuda.mapped_io": "false", "tensorrt.graphs": "false"}
	if !reflect.DeepEqual(c.Engine.BackendParameters, want) {
		t.Errorf("engine.backend_parameters = %v, want %v", c.Engine.BackendParameters, want)
	}
	for _, c := range []struct{ env, want string }{
		{"POLICYD_ENGINE__BACKEND_PARAMETERS__CUDA__GRAPHS=0", `engine.backend_parameters.cuda.graphs: must be true or false, got "0"`},
		{"POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__GRAPHS=off", `engine.backend_parameters.tensorrt.graphs: must be true or false, got "off"`},
		{"POLICYD_ENGINE__BACKEND_PARAMETERS__CUDA__GRAPH=false", `engine.backend_parameters.cuda.graph: unknown backend parameter (did you mean cuda.graphs?): known for cuda: cuda.graphs, cuda.mapped_io`},
	} {
		_, _, err := load(t, LoadOptions{File: "testdata/good/minimal.yaml", Env: []string{c.env}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error\n%v\nwant it to contain\n%s", c.env, err, c.want)
		}
	}
}
