package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestInvalidConfigurationListsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "f")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(bad, []byte("server:\n  adr: x\nlog:\n  level: loud\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want []string // every line must appear on stderr
	}{
		{"no repository", nil, []string{"repository.path: is required"}},
		{"missing repository", []string{"--repository", filepath.Join(dir, "nope")}, []string{"repository.path: folder " + filepath.Join(dir, "nope") + ": no such file or directory (flag:--repository)"}},
		{"every problem at once", []string{"--repository", file, "--log-level", "loud", "--addr", "nowhere", "--queue-len", "-1"},
			[]string{"repository.path:", `log.level: must be one of debug, info, warn, error, got "loud" (flag:--log-level)`,
				`server.addr: must be HOST:PORT`, "limits.queue_len: must be ≥ 1, got -1"}},
		{"file with a typo", []string{"--config", bad}, []string{"server.adr: unknown key (did you mean server.addr?)", `log.level: must be one of`}},
		{"unexpected argument", []string{"extra"}, []string{"unexpected arguments: extra"}},
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

func TestCheckAndPrintConfig(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--config", "../../examples/config/policyd.yaml", "--profile", "prod", "--check-config"}, &stdout, &stderr, nil); code != 0 {
		t.Fatalf("--check-config: exit %d: %s", code, stderr.String())
	}
	if !strings.Contains(stdout.String(), "configuration ok") {
		t.Errorf("--check-config printed %q", stdout.String())
	}
	stdout.Reset()
	t.Setenv("POLICYD_LOG__LEVEL", "warn")
	if code := run([]string{"--config", "../../examples/config/policyd.yaml", "--addr", "127.0.0.1:9999", "--print-config"}, &stdout, &stderr, nil); code != 0 {
		t.Fatalf("--print-config: exit %d: %s", code, stderr.String())
	}
	for _, w := range []string{"addr: 127.0.0.1:9999", "# flag:--addr", "level: warn", "# env:POLICYD_LOG__LEVEL", "# file:"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("--print-config lacks %q:\n%s", w, stdout.String())
		}
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
