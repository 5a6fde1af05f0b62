package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/policyd/policyd/bridge"
)

func call(args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := run(context.Background(), append([]string{"policyctl"}, args...), &out, &errb)
	return code, out.String(), errb.String()
}

func TestHelpAtEveryLevel(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--help"}, "bench"},
		{[]string{"help"}, "bench"},
		{[]string{"bench", "--help"}, "engine"},
		{[]string{"bench", "-h"}, "engine"},
		{[]string{"bench", "engine", "--help"}, "-ort-script"},
		{[]string{"bench", "engine", "-h"}, "-format"},
	} {
		code, out, _ := call(c.args...)
		if code != 0 || !strings.Contains(out, c.want) {
			t.Errorf("%v: exit %d, stdout %q", c.args, code, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "Commands:"},
		{[]string{"bench"}, "engine"},
		{[]string{"bench", "nope"}, `unknown command "nope"`},
		{[]string{"nope"}, `unknown command "nope"`},
		{[]string{"bench", "engine", "--bogus"}, "flag provided but not defined"},
		{[]string{"bench", "engine", "--batch", "1,x"}, `"x" is not an integer`},
		{[]string{"bench", "engine", "--modes", "mt"}, `mode "mt"`},
		{[]string{"bench", "engine", "--format", "csv"}, "--format"},
		{[]string{"bench", "engine", "extra"}, "unexpected arguments"},
		{[]string{"bench", "engine", "--ort-script", "/nonexistent/ort_bench.js"}, "--ort-script"},
		// main.go stands in for ort_bench.js: there is no ort_outputs.js beside it.
		{[]string{"bench", "engine", "--ort-script", "main.go"}, "--check: "},
	} {
		code, _, errs := call(c.args...)
		if code != 2 || !strings.Contains(errs, c.want) {
			t.Errorf("%v: exit %d, stderr %q", c.args, code, errs)
		}
	}
}

func TestBenchEngineRuns(t *testing.T) {
	models := filepath.Join("..", "..", "..", "shared", "peers", "models")
	if _, err := os.Stat(filepath.Join(models, "models.json")); err != nil {
		t.Skipf("no peer models: %v", err)
	}
	if _, err := bridge.NewRuntime(""); err != nil {
		t.Skipf("native library: %v", err)
	}
	code, out, errs := call("bench", "engine", "--models", models, "--model", "mlp-small", "--batch", "1",
		"--seconds", "0.02", "--warmup", "0", "--max-iters", "20")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, s := range []string{"| mlp-small | 1 |", "Command: `policyctl bench engine --models", "| nproc |"} {
		if !strings.Contains(out, s) {
			t.Errorf("report lacks %q:\n%s", s, out)
		}
	}
	if code, _, errs := call("bench", "engine", "--models", models, "--model", "nope"); code != 1 || !strings.Contains(errs, "unknown model") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}
