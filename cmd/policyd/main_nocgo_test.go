//go:build !cgo

package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestNoNativeLibrary(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run([]string{"--repository", t.TempDir()}, &stdout, &stderr, nil)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(stderr.String(), "policyd: native library unavailable: policyd was built without cgo") {
		t.Errorf("stderr lacks the reason:\n%s", stderr.String())
	}
}
