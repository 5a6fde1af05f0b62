package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFlagErrors(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string // every line must appear on stderr
	}{
		{"no repository", nil, []string{"policyd: --repository is required"}},
		{"missing repository", []string{"--repository", filepath.Join(dir, "nope")}, []string{"--repository " + filepath.Join(dir, "nope") + ": no such file or directory"}},
		{"repository is a file", []string{"--repository", file}, []string{": not a directory"}},
		{"every problem at once", []string{"--instances", "0", "--log-level", "loud", "--addr", "nowhere", "--queue-len", "-1", "extra"},
			[]string{"--repository is required", "--instances 0: must be at least 1", `--log-level "loud"`, `--addr "nowhere"`, "--queue-len -1", "unexpected arguments: extra"}},
		{"unknown flag", []string{"--bogus"}, []string{"flag provided but not defined: -bogus"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(tt.args, &stdout, &stderr, nil); code != 2 {
				t.Errorf("exit code %d, want 2", code)
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr.String())
				}
			}
		})
	}
}

func TestVersionFlag(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--version"}, &stdout, &stderr, nil); code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stdout.String(), "policyd ") || !strings.Contains(stdout.String(), "libpolicyd") {
		t.Errorf("--version printed %q", stdout.String())
	}
}

func TestDefaultInstances(t *testing.T) {
	if n := defaultInstances(); n < 1 || n > maxDefaultInstances {
		t.Errorf("defaultInstances() = %d, want 1..%d", n, maxDefaultInstances)
	}
}
