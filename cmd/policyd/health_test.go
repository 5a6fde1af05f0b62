package main

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/reload"
	"github.com/policyd/policyd/repository"
	"github.com/policyd/policyd/server"
)

// emptyRepo serves nothing, to the server and to health details.
type emptyRepo struct{}

func (emptyRepo) Models() []string               { return nil }
func (emptyRepo) Versions(string) []server.Model { return nil }
func (emptyRepo) Acquire(m, _ string) (server.Model, error) {
	return nil, &repository.NotFoundError{Model: m}
}
func (emptyRepo) All() []*repository.Version                          { return nil }
func (emptyRepo) Index() []repository.IndexEntry                      { return nil }
func (emptyRepo) Ready() bool                                         { return true }
func (emptyRepo) DefaultVersion(string) (version string, pinned bool) { return "", false }

// slowApply blocks every Apply after the first until release is closed.
type slowApply struct {
	n       int
	entered chan struct{}
	release chan struct{}
}

func (s *slowApply) Apply(repository.Desired) (repository.Report, error) {
	if s.n++; s.n > 1 {
		close(s.entered)
		<-s.release
	}
	return repository.Report{}, nil
}

// TestShutdownDuringASlowReload: while an admin reload is held inside a slow load (an engine
// build), GET /v2/health/details answers at once, and the shutdown sequence of run (the
// reloader's Close, then the HTTP drain) returns at once, the admin call answered.
func TestShutdownDuringASlowReload(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(file, []byte("repository:\n  path: "+dir+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	opts := config.LoadOptions{File: file, Env: []string{}, DotEnv: config.NoDotEnv}
	cfg, src, err := config.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)
	slow := &slowApply{entered: make(chan struct{}), release: make(chan struct{})}
	defer close(slow.release)
	rl := reload.New(reload.Options{Load: opts, Log: log, Level: zap.NewAtomicLevel(), Repo: slow}, cfg, src)
	if _, err := rl.Load(); err != nil {
		t.Fatal(err)
	}
	hd := &health{load: opts, rl: rl, repo: emptyRepo{}, started: time.Now()}
	srv := server.New(emptyRepo{}, log, server.Options{Admin: server.Admin{
		Reload:               func() (any, error) { return rl.Reload("admin API") },
		AllowUnauthenticated: func() bool { return true },
		Details:              hd.details,
	}})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	url := "http://" + ln.Addr().String()

	reloaded := make(chan int, 1)
	go func() {
		resp, err := http.Post(url+"/v2/admin/reload", "", nil)
		if err != nil {
			reloaded <- 0
			return
		}
		resp.Body.Close()
		reloaded <- resp.StatusCode
	}()
	select {
	case <-slow.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the admin reload never reached the repository")
	}

	client := &http.Client{Timeout: 200 * time.Millisecond}
	resp, err := client.Get(url + "/v2/health/details")
	if err != nil {
		t.Fatalf("health details during a slow reload: %v", err)
	}
	var d server.HealthDetails
	err = json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || d.Config.Digest == "" || d.Config.LastReload != nil || d.Artifacts.LastVerification == nil || d.Shadows == nil {
		t.Errorf("health details during a slow reload: %d %+v (%v)", resp.StatusCode, d, err)
	}

	start := time.Now()
	rl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), rl.Config().Server.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Errorf("HTTP drain: %v", err)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("shutdown took %v with a reload in progress", took)
	}
	if code := <-reloaded; code != http.StatusBadRequest {
		t.Errorf("the admin reload cut short by shutdown answered %d, want 400", code)
	}
	if !rl.Busy() {
		t.Error("Busy is false while the reload is held in the repository: run would close the repository under it")
	}
}
