package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// artifacts.on_tamper is retire or keep, retire by default; any other value is refused with
// its key path, from a file and from the environment; a change applies live.
func TestOnTamper(t *testing.T) {
	if got := Defaults().Artifacts.OnTamper; got != "retire" {
		t.Errorf("default on_tamper = %q, want retire", got)
	}
	for _, tt := range []struct {
		value, want string // want "" = valid
	}{
		{"retire", ""},
		{"keep", ""},
		{"ignore", `artifacts.on_tamper: must be one of retire, keep, got "ignore"`},
		{"Keep", `artifacts.on_tamper: must be one of retire, keep, got "Keep"`},
		{"", ""}, // an empty enum is not checked; policyd keeps tampered versions only for "keep"
	} {
		c := Defaults()
		c.Repository.Path = "testdata/repo"
		c.Artifacts.OnTamper = tt.value
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("on_tamper %q: %v", tt.value, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("on_tamper %q: %v, want %q", tt.value, err, tt.want)
		}
	}

	repo, _ := filepath.Abs("testdata/repo")
	file := filepath.Join(t.TempDir(), "policyd.yaml")
	if err := os.WriteFile(file, []byte("repository:\n  path: "+repo+"\nartifacts:\n  on_tamper: keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _, err := Load(LoadOptions{File: file, Env: []string{}})
	if err != nil || c.Artifacts.OnTamper != "keep" {
		t.Fatalf("Load = %v, %v; want on_tamper keep", c, err)
	}
	_, _, err = Load(LoadOptions{File: file, Env: []string{"POLICYD_ARTIFACTS__ON_TAMPER=serve"}})
	if err == nil || !strings.Contains(err.Error(), `artifacts.on_tamper: must be one of retire, keep, got "serve"`) {
		t.Errorf("Load with POLICYD_ARTIFACTS__ON_TAMPER=serve = %v", err)
	}
	next := Defaults()
	next.Repository.Path = c.Repository.Path
	cur := *next
	next.Artifacts.OnTamper = "keep"
	if live, pending := Live(&cur, next); live.Artifacts.OnTamper != "keep" || len(pending) != 0 {
		t.Errorf("on_tamper held back for a restart: %v", pending)
	}
}
