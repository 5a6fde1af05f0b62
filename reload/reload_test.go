package reload

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/metrics"
	"github.com/policyd/policyd/repository"
)

// gateRepo is a repository whose Apply, once closed, blocks until opened again: a reload held
// inside a slow load (an engine build). It records what it was asked to apply.
type gateRepo struct {
	mu      sync.Mutex
	gate    chan struct{} // nil: open
	entered chan struct{} // an Apply is waiting at the gate
	applied []repository.Desired
}

func (g *gateRepo) Apply(d repository.Desired) (repository.Report, error) {
	g.mu.Lock()
	gate := g.gate
	g.applied = append(g.applied, d)
	g.mu.Unlock()
	if gate != nil {
		g.entered <- struct{}{}
		<-gate
	}
	return repository.Report{}, nil
}

// close makes the next Apply block; open releases it.
func (g *gateRepo) close() {
	g.mu.Lock()
	g.gate, g.entered = make(chan struct{}), make(chan struct{}, 1)
	g.mu.Unlock()
}

func (g *gateRepo) open() {
	g.mu.Lock()
	close(g.gate)
	g.gate = nil
	g.mu.Unlock()
}

// fixture is a reloader over a gateRepo with a config file in a temporary folder.
type fixture struct {
	rl   *Reloader
	repo *gateRepo
	file string
}

func newFixture(t *testing.T, body string) *fixture {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "repo"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := &fixture{repo: &gateRepo{}, file: filepath.Join(dir, "policyd.yaml")}
	f.write(t, body)
	opts := config.LoadOptions{File: f.file, Env: []string{}, DotEnv: config.NoDotEnv}
	cfg, src, err := config.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	m, err := metrics.NewReload(prometheus.NewPedanticRegistry())
	if err != nil {
		t.Fatal(err)
	}
	f.rl = New(Options{Load: opts, Log: zaptest.NewLogger(t), Level: zap.NewAtomicLevel(), Repo: f.repo, Metrics: m}, cfg, src)
	t.Cleanup(f.rl.Close)
	if _, err := f.rl.Load(); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *fixture) write(t *testing.T, body string) {
	t.Helper()
	if err := os.WriteFile(f.file, []byte("repository:\n  path: "+filepath.Join(filepath.Dir(f.file), "repo")+"\n"+body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// prompt fails the test when fn does not return within 200ms.
func prompt(t *testing.T, what string, fn func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	select {
	case <-done:
	case <-time.After(200 * time.Millisecond):
		t.Errorf("%s waited for the reload in progress", what)
	}
}

// TestSlowReloadBlocksNoReader holds a reload inside a slow apply and checks that everything
// health details and the operator routes read (the configuration in force, its digest, the
// reload record, the verification, the admin token) answers at once, that Close returns at once
// and releases a reload waiting behind the slow one, and that the held reload, once released,
// is recorded as applied.
func TestSlowReloadBlocksNoReader(t *testing.T) {
	f := newFixture(t, "log:\n  level: info\n")
	before := f.rl.State()
	if before.Verification == nil || before.Last != nil || before.Config.Log.Level != "info" {
		t.Fatalf("after the first load: %+v", before)
	}

	f.repo.close()
	f.write(t, "log:\n  level: debug\n")
	held := make(chan error, 1)
	go func() { _, err := f.rl.Reload("SIGHUP"); held <- err }()
	select {
	case <-f.repo.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the reload never reached the repository")
	}
	if !f.rl.Busy() {
		t.Error("Busy is false during a reload")
	}
	prompt(t, "State", func() {
		s := f.rl.State()
		if s.Config.Log.Level != "info" || s.Last != nil || s.Digest != before.Digest {
			t.Errorf("during the reload the state already shows it: level %s, last %+v", s.Config.Log.Level, s.Last)
		}
	})
	prompt(t, "Config", func() { _ = f.rl.Config() })
	prompt(t, "Token", func() { _ = f.rl.Token(); _ = f.rl.AllowUnauthenticated() })

	// An admin reload queues behind the held one; SIGHUP and file changes only ask for one.
	waiting := make(chan error, 1)
	go func() { _, err := f.rl.Reload("admin API"); waiting <- err }()
	prompt(t, "Trigger", func() { f.rl.Trigger("SIGHUP"); f.rl.Trigger("file change") })

	// Shutdown: Close does not wait for the held reload, and releases whoever waits on a reload:
	// the caller of the held one and the one queued behind it.
	prompt(t, "Close", f.rl.Close)
	for what, ch := range map[string]chan error{"held": held, "queued": waiting} {
		select {
		case err := <-ch:
			if !errors.Is(err, ErrClosed) {
				t.Errorf("the %s reload's caller got %v at Close, want ErrClosed", what, err)
			}
		case <-time.After(200 * time.Millisecond):
			t.Errorf("the %s reload's caller still waits after Close", what)
		}
	}
	if !f.rl.Busy() {
		t.Error("Busy is false while the held reload is still in the repository")
	}
	if _, err := f.rl.Reload("admin API"); !errors.Is(err, ErrClosed) {
		t.Errorf("a reload after Close returned %v, want ErrClosed", err)
	}

	// Released, the held reload ends on its own and publishes what it applied.
	f.repo.open()
	deadline := time.Now().Add(10 * time.Second)
	for f.rl.Busy() {
		if time.Now().After(deadline) {
			t.Fatal("the held reload never ended")
		}
		time.Sleep(5 * time.Millisecond)
	}
	s := f.rl.State()
	if s.Config.Log.Level != "debug" || s.Last == nil || s.Last.Outcome != "applied" || s.Last.Trigger != "SIGHUP" ||
		s.Digest == before.Digest || len(s.History) != 1 {
		t.Errorf("after the reload: level %s, last %+v, history %d", s.Config.Log.Level, s.Last, len(s.History))
	}
	if before.Config.Log.Level != "info" || before.Last != nil {
		t.Error("a published State changed")
	}
	f.repo.mu.Lock()
	n := len(f.repo.applied)
	f.repo.mu.Unlock()
	if n != 2 {
		t.Errorf("%d applies, want 2 (the first load and the held reload; none after Close)", n)
	}
}

// TestReloadOutcomes: an invalid config is rejected and the running one stays; a restart-only
// change is held back; the history keeps the last HistoryLen reloads, most recent first.
func TestReloadOutcomes(t *testing.T) {
	f := newFixture(t, "")
	res, err := f.rl.Reload("admin API")
	if err != nil || res.Outcome != "unchanged" {
		t.Fatalf("nothing changed: %+v, %v", res, err)
	}
	f.write(t, "limits:\n  queue_len: 0\n")
	if res, err := f.rl.Reload("file change"); err == nil || res.Outcome != "rejected" {
		t.Errorf("invalid config: %+v, %v", res, err)
	}
	if f.rl.Config().Limits.QueueLen == 0 {
		t.Error("the rejected config is in force")
	}
	f.write(t, "server:\n  addr: 127.0.0.1:9999\n")
	res, err = f.rl.Reload("SIGHUP")
	if err != nil || len(res.RestartPending) != 1 || res.RestartPending[0].Key != "server.addr" {
		t.Errorf("restart-only change: %+v, %v", res, err)
	}
	if s := f.rl.State(); len(s.RestartPending) != 1 || s.Config.Server.Addr == "127.0.0.1:9999" {
		t.Errorf("state after a restart-only change: pending %v, addr %s", s.RestartPending, s.Config.Server.Addr)
	}
	for range HistoryLen {
		f.rl.Reload("admin API")
	}
	if h := f.rl.State().History; len(h) != HistoryLen || h[0].Trigger != "admin API" {
		t.Errorf("history of %d, first %+v", len(h), h[0])
	}
}

// TestTriggerRunsOnTheReloadersGoroutine: Trigger returns at once and the reload runs once
// Watch has started.
func TestTriggerRunsOnTheReloadersGoroutine(t *testing.T) {
	f := newFixture(t, "")
	f.rl.Trigger("SIGHUP")
	f.rl.Watch()
	deadline := time.Now().Add(10 * time.Second)
	for f.rl.State().Last == nil {
		if time.Now().After(deadline) {
			t.Fatal("the triggered reload never ran")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if tr := f.rl.State().Last.Trigger; tr != "SIGHUP" {
		t.Errorf("trigger %q", tr)
	}
}
