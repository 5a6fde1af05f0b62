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
	if _, err := e.TimingCache(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("TimingCache: %v", err)
	}
	var c Context
	if err := c.SetRowSeeds([]uint64{1}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("SetRowSeeds: %v", err)
	}
	if _, err := c.Memory(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Memory: %v", err)
	}
}
