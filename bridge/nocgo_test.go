//go:build !cgo

package bridge

import (
	"errors"
	"testing"
)

func TestWithoutCgoEverythingSaysUnavailable(t *testing.T) {
	if err := Available(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Available() = %v", err)
	}
	if _, err := NewRuntime(""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewRuntime: %v", err)
	}
	var e *Engine
	if _, err := e.NewContext(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("NewContext: %v", err)
	}
}
