package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const examples = "../../examples/config/policyd.yaml"

func TestConfigHelp(t *testing.T) {
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"config", "--help"}, []string{"validate", "schema", "diff"}},
		{[]string{"config", "validate", "--help"}, []string{"config validate FILE [--profile P] [--env]", "-profile", "-env", "exits 1"}},
		{[]string{"config", "validate", "x.yaml", "-h"}, []string{"-profile"}},
		{[]string{"config", "schema", "--help"}, []string{"JSON Schema (draft 2020-12)"}},
		{[]string{"config", "diff", "--help"}, []string{"config diff A B", "-profile-a", "restart needed"}},
	} {
		code, out, errs := call(c.args...)
		if code != 0 {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs)
		}
		for _, w := range c.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: stdout lacks %q:\n%s", c.args, w, out)
			}
		}
	}
}

func TestConfigUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"config"}, "Commands:"},
		{[]string{"config", "nope"}, `unknown command "nope"`},
		{[]string{"config", "validate"}, "want one config FILE, got 0 arguments"},
		{[]string{"config", "validate", "a", "b"}, "want one config FILE, got 2 arguments"},
		{[]string{"config", "validate", "a", "--bogus"}, "flag provided but not defined"},
		{[]string{"config", "schema", "x"}, "unexpected arguments"},
		{[]string{"config", "diff", "a"}, "want two config files A and B, got 1 arguments"},
	} {
		code, _, errs := call(c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, p := range []string{"", "dev", "staging", "prod"} {
		args := []string{"config", "validate", examples}
		if p != "" {
			args = append(args, "--profile", p)
		}
		if code, out, errs := call(args...); code != 0 || out != "ok\n" {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out, errs)
		}
	}
	// flags before the file work too
	if code, out, _ := call("config", "validate", "--profile=prod", examples); code != 0 || out != "ok\n" {
		t.Errorf("flag first: exit %d %q", code, out)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("server:\n  adr: x\nlog:\n  level: verbose\nmodels:\n  - name: a\n    instances: -1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs := call("config", "validate", bad)
	if code != 1 || out != "" {
		t.Fatalf("exit %d, stdout %q", code, out)
	}
	for _, w := range []string{
		"4 problems:",
		"server.adr: unknown key (did you mean server.addr?) (file:" + bad + ")\n",
		`log.level: must be one of debug, info, warn, error, got "verbose"`,
		"repository.path: is required\n",
		"models[0].instances: must be ≥ 0, got -1",
	} {
		if !strings.Contains(errs, w) {
			t.Errorf("stderr lacks %q:\n%s", w, errs)
		}
	}
	if code, _, errs := call("config", "validate", examples, "--profile", "nope"); code != 1 || !strings.Contains(errs, `profile "nope": no overlay file`) {
		t.Errorf("missing profile: exit %d, %s", code, errs)
	}
	// the environment is left out unless --env
	t.Setenv("POLICYD_LOG__LEVEL", "verbose")
	if code, _, _ := call("config", "validate", examples); code != 0 {
		t.Errorf("environment applied without --env")
	}
	if code, _, errs := call("config", "validate", examples, "--env"); code != 1 || !strings.Contains(errs, "(env:POLICYD_LOG__LEVEL)") {
		t.Errorf("--env: exit %d, %s", code, errs)
	}
}

func TestConfigSchema(t *testing.T) {
	code, out, errs := call("config", "schema")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var v map[string]any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if v["$schema"] != "https://json-schema.org/draft/2020-12/schema" || v["additionalProperties"] != false {
		t.Errorf("schema header: %v", v)
	}
}

func TestConfigDiff(t *testing.T) {
	code, out, errs := call("config", "diff", examples, examples, "--profile-b", "prod")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, w := range []string{"KEY", "server.addr", "127.0.0.1:8000", "0.0.0.0:8000", "restart needed",
		`models["3DBall"].backends`, "[tensorrt, cuda, cpu]", "log.level"} {
		if !strings.Contains(out, w) {
			t.Errorf("diff lacks %q:\n%s", w, out)
		}
	}
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "log.level") && strings.Contains(line, "restart") {
			t.Errorf("log.level marked restart: %q", line)
		}
		if strings.HasPrefix(line, "server.addr") && !strings.Contains(line, "restart needed") {
			t.Errorf("server.addr not marked restart: %q", line)
		}
	}
	if !strings.Contains(out, "need a restart") && !strings.Contains(out, "needs a restart") {
		t.Errorf("no summary:\n%s", out)
	}
	if code, out, _ := call("config", "diff", examples, examples); code != 0 || out != "no changes\n" {
		t.Errorf("same file: exit %d, %q", code, out)
	}
	if code, _, errs := call("config", "diff", examples, "nope.yaml"); code != 1 || !strings.Contains(errs, "nope.yaml is invalid") {
		t.Errorf("invalid B: exit %d, %s", code, errs)
	}
}
