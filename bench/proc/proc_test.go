package proc

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.log")
	if err := os.WriteFile(p, []byte("first line\nsecond\n  line\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := Tail(p, 15); got != "second line" {
		t.Errorf("Tail = %q", got)
	}
	if got := Tail(filepath.Join(t.TempDir(), "none"), 10); !strings.HasPrefix(got, "(no log: ") {
		t.Errorf("Tail of a missing file = %q", got)
	}
}

func TestStartExitDuringStartup(t *testing.T) {
	log := filepath.Join(t.TempDir(), "logs", "boom.log")
	p, err := Start(Spec{Name: "boom", Addr: "127.0.0.1:1", Argv: []string{"sh", "-c", "echo boom; exit 3"}, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	err = p.WaitReady(context.Background(), 10*time.Second)
	if err == nil || !strings.Contains(err.Error(), "boom exited during start-up") || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("WaitReady = %v", err)
	}
	if p.Alive() || p.Err() == nil {
		t.Errorf("Alive %v, Err %v after exit 3", p.Alive(), p.Err())
	}
	p.Stop() // an ended process is left alone
}

func TestStop(t *testing.T) {
	p, err := Start(Spec{Name: "sleep", Argv: []string{"sleep", "30"}, Log: filepath.Join(t.TempDir(), "sleep.log")})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Alive() || p.Err() != nil {
		t.Fatalf("Alive %v, Err %v just after start", p.Alive(), p.Err())
	}
	p.Stop()
	if p.Alive() {
		t.Error("alive after Stop")
	}
	var nilProc *Proc
	nilProc.Stop()
}

func TestAbsPaths(t *testing.T) {
	a, empty := "x/y", ""
	if err := AbsPaths(&a, &empty); err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(a) || empty != "" {
		t.Errorf("AbsPaths: %q, %q", a, empty)
	}
}
