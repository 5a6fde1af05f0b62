// Package reload turns the configuration into the repository's desired set and applies it, at
// start and on every trigger: a change of a watched file (the config file, its profile overlay,
// the .env file, the admin token file), SIGHUP, or POST /v2/admin/reload. It rejects an invalid
// configuration and keeps the old one, holds back changes that need a restart, applies the rest
// (log level, limits, the served models) in one step, re-reads the admin token every time, and
// records each outcome and the last artifact verification.
//
// Reloads are serialized, and one may take long: applying the desired set can build engines.
// What operators read never waits for one: the configuration in force and its record (State)
// are an immutable snapshot behind an atomic pointer, replaced whole when a reload ends, and the
// admin token is an atomic value. Close does not wait for a reload in progress either.
package reload

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/metrics"
	"github.com/policyd/policyd/repository"
)

// HistoryLen is how many reloads State.History keeps.
const HistoryLen = 16

// ErrClosed is returned by a reload asked for after Close, or still waiting when Close came.
var ErrClosed = errors.New("policyd is stopping: no configuration reload")

// Repository is what the reloader applies the desired set to; *repository.Repository implements
// it. Apply may take long (it loads and builds engines); it is called by one goroutine at a time.
type Repository interface {
	Apply(repository.Desired) (repository.Report, error)
}

// Options is what a Reloader needs.
type Options struct {
	// Load is how the configuration is loaded anew (files, profile, flags).
	Load config.LoadOptions
	Log  *zap.Logger // nil: no log
	// Level is the process log level, set from log.level on every applied reload.
	Level zap.AtomicLevel
	Repo  Repository
	// Metrics records reloads and verification failures; nil: none.
	Metrics *metrics.Reload
	// OnApply is called with the configuration a reload applied, before it is published (for
	// settings that live outside the repository: the server's body limit). Nil: none.
	OnApply func(*config.Config)
}

// State is the configuration in force and what the reloads did: an immutable snapshot, replaced
// whole when a reload ends. Never change one.
type State struct {
	Config  *config.Config
	Sources *config.Sources
	// Digest is "sha256:<hex>" of the JSON encoding of Config: it changes when a reload applies
	// anything, so it names the configuration's version.
	Digest string
	// RestartPending are the changes loaded but held back until a restart.
	RestartPending []config.Change
	// Last is the last reload; nil before the first.
	Last *Result
	// History is the last HistoryLen reloads, most recent first.
	History []Result
	// Verification is the last artifact verification of the repository; nil before the first
	// load.
	Verification *Verification
}

// Result is what one reload did; POST /v2/admin/reload answers it.
type Result struct {
	Time           time.Time       `json:"time"`
	Trigger        string          `json:"trigger"`
	Outcome        string          `json:"outcome"` // applied, rejected, failed, unchanged
	Error          string          `json:"error,omitempty"`
	Applied        []config.Change `json:"applied,omitempty"`
	RestartPending []config.Change `json:"restart_pending,omitempty"`
	Models         *ModelReport    `json:"models,omitempty"`
	TokenRotated   bool            `json:"token_rotated,omitempty"` // the admin token changed (its file was re-read)
	TookSeconds    float64         `json:"took_seconds"`
}

// ModelReport is what a reload did to the served versions: "model@version", a failure with its
// reason.
type ModelReport struct {
	Loaded    []string `json:"loaded,omitempty"`
	Reloaded  []string `json:"reloaded,omitempty"`
	Unloaded  []string `json:"unloaded,omitempty"`
	Failed    []string `json:"failed,omitempty"`
	Unchanged int      `json:"unchanged"`
}

// Verification is the outcome of an artifact verification of the repository (every apply
// verifies every version it selects).
type Verification struct {
	Time     time.Time       `json:"time"`
	Versions int             `json:"versions"` // versions selected (and so verified, but those the repository lacks)
	Failed   []VerifyFailure `json:"failed"`   // never nil
}

// VerifyFailure is a version refused by artifact verification.
type VerifyFailure struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// Reloader owns the live configuration. Safe for concurrent use: reloads are serialized among
// themselves; State, Config, Token and AllowUnauthenticated never wait for one.
type Reloader struct {
	opts Options
	log  *zap.Logger

	mu    sync.Mutex            // serializes loads and reloads; held through Repository.Apply
	state atomic.Pointer[State] // written under mu, read by anyone
	busy  atomic.Bool           // a load or reload holds mu

	token   atomic.Pointer[string] // the admin bearer token ("" = none, or its file unreadable)
	tokPath atomic.Pointer[string] // admin.token_file in force, as the watch follows it
	allow   atomic.Bool            // admin.allow_unauthenticated in force, and no token file
	rewatch chan struct{}          // the token file's path changed: watch the new one

	vmu      sync.Mutex // guards vPending, filled by Apply's verification hook
	vPending []VerifyFailure

	triggers  chan string // reloads asked for and not yet started (at most one: they coalesce)
	ctx       context.Context
	cancel    context.CancelFunc
	closed    atomic.Bool
	watchOnce sync.Once
	watched   chan struct{} // closed when the file watch has stopped
}

// New returns a reloader with cfg (loaded from opts.Load, with its sources src) in force. It
// reads the admin token at once; it applies nothing until Load.
func New(opts Options, cfg *config.Config, src *config.Sources) *Reloader {
	log := opts.Log
	if log == nil {
		log = zap.NewNop()
	}
	r := &Reloader{opts: opts, log: log, rewatch: make(chan struct{}, 1), triggers: make(chan string, 1),
		watched: make(chan struct{})}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.state.Store(&State{Config: cfg, Sources: src, Digest: digest(cfg)})
	empty := ""
	r.token.Store(&empty)
	r.tokPath.Store(&empty)
	r.readToken(cfg, "start")
	return r
}

// State returns the configuration in force and the record of the reloads, at once, whatever a
// reload is doing.
func (r *Reloader) State() *State { return r.state.Load() }

// Config returns the configuration in force, at once, whatever a reload is doing.
func (r *Reloader) Config() *config.Config { return r.state.Load().Config }

// Busy says whether a load or reload is in progress.
func (r *Reloader) Busy() bool { return r.busy.Load() }

// publish replaces the state with a copy changed by edit; the caller holds mu.
func (r *Reloader) publish(edit func(*State)) {
	s := *r.state.Load()
	edit(&s)
	r.state.Store(&s)
}

// lock takes the reload mutex, unless the reloader is closed (also while it waited).
func (r *Reloader) lock() bool {
	if r.closed.Load() {
		return false
	}
	r.mu.Lock()
	r.busy.Store(true)
	if r.closed.Load() {
		r.unlock()
		return false
	}
	return true
}

func (r *Reloader) unlock() {
	r.busy.Store(false)
	r.mu.Unlock()
}

// Load applies the configuration in force to the repository: the first load, while the server
// listens.
func (r *Reloader) Load() (repository.Report, error) {
	if !r.lock() {
		return repository.Report{}, ErrClosed
	}
	defer r.unlock()
	cfg := r.state.Load().Config
	keys, err := TrustedKeys(cfg)
	if err != nil {
		return repository.Report{}, err
	}
	return r.apply(Desired(cfg, keys, r.verifyFailed))
}

// verifyFailed is the repository's hook for a version refused by artifact verification.
func (r *Reloader) verifyFailed(model, version, reason string) {
	if r.opts.Metrics != nil {
		r.opts.Metrics.VerifyFailed(model, version)
	}
	r.vmu.Lock()
	r.vPending = append(r.vPending, VerifyFailure{model, version, reason})
	r.vmu.Unlock()
}

// apply applies d to the repository and publishes its artifact verification; the caller holds
// mu.
func (r *Reloader) apply(d repository.Desired) (repository.Report, error) {
	start := time.Now()
	r.vmu.Lock()
	r.vPending = nil
	r.vmu.Unlock()
	rep, err := r.opts.Repo.Apply(d)
	if err != nil {
		return rep, err
	}
	r.vmu.Lock()
	v := &Verification{Time: start.UTC(), Failed: r.vPending,
		Versions: len(rep.Loaded) + len(rep.Reloaded) + len(rep.Failed) + rep.Unchanged}
	r.vPending = nil
	r.vmu.Unlock()
	if v.Failed == nil {
		v.Failed = []VerifyFailure{}
	}
	r.publish(func(s *State) { s.Verification = v })
	return rep, nil
}

// Reload loads the configuration anew and applies what it can without a restart, and returns
// what it did. It returns an error when the new configuration was rejected (invalid) or could
// not be applied; in both cases the previous configuration keeps running untouched. It waits
// for a reload in progress to end first, but not past Close: then it returns ErrClosed (the
// reload it started, if any, goes on until the repository is done with it).
func (r *Reloader) Reload(trigger string) (Result, error) {
	type outcome struct {
		res Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := r.reload(trigger)
		done <- outcome{res, err}
	}()
	select {
	case o := <-done:
		return o.res, o.err
	case <-r.ctx.Done():
		return Result{Time: time.Now().UTC(), Trigger: trigger, Outcome: "failed", Error: ErrClosed.Error()}, ErrClosed
	}
}

// Trigger asks for a reload without waiting for it (SIGHUP, a file change): it runs on the
// reloader's own goroutine once Watch has started it. Triggers that come while one is waiting
// join it: the reload reads the files as they are when it starts.
func (r *Reloader) Trigger(trigger string) {
	select {
	case r.triggers <- trigger:
	default:
	}
}

// reload is Reload on the calling goroutine.
func (r *Reloader) reload(trigger string) (Result, error) {
	if !r.lock() {
		return Result{Time: time.Now().UTC(), Trigger: trigger, Outcome: "failed", Error: ErrClosed.Error()}, ErrClosed
	}
	defer r.unlock()
	start := time.Now()
	res := Result{Time: start.UTC(), Trigger: trigger}
	cur := r.state.Load()
	next := &State{Config: cur.Config, Sources: cur.Sources, Digest: cur.Digest, RestartPending: cur.RestartPending}
	finish := func(outcome string, err error) (Result, error) {
		// The token file is re-read on every trigger, whatever the config did: a rotation
		// changes no config key. next.Config is the config in force (the new one once applied).
		res.TokenRotated = r.readToken(next.Config, trigger)
		res.Outcome = outcome
		res.TookSeconds = time.Since(start).Seconds()
		if err != nil {
			res.Error = err.Error()
		}
		r.publish(func(s *State) {
			s.Config, s.Sources, s.Digest, s.RestartPending = next.Config, next.Sources, next.Digest, next.RestartPending
			last := res
			s.Last = &last
			hist := make([]Result, 0, min(len(s.History)+1, HistoryLen))
			hist = append(hist, res)
			hist = append(hist, s.History[:min(len(s.History), HistoryLen-1)]...)
			s.History = hist
		})
		if r.opts.Metrics != nil {
			r.opts.Metrics.ObserveReload(outcome, start, len(next.RestartPending))
		}
		return res, err
	}

	loaded, src, err := config.Load(r.opts.Load)
	if err != nil {
		r.log.Error("configuration reload rejected; the running configuration stays",
			zap.String("trigger", trigger), zap.Error(err))
		return finish("rejected", err)
	}
	live, pending := config.Live(cur.Config, loaded)
	applied := config.Diff(cur.Config, live)
	res.Applied, res.RestartPending = applied, pending
	for _, c := range pending {
		r.log.Warn("configuration change needs a restart; not applied",
			zap.String("key", c.Key), zap.String("running", c.Old), zap.String("loaded", c.New))
	}
	// Models first: if the repository cannot be applied, nothing changes.
	keys, err := TrustedKeys(live)
	if err != nil {
		r.log.Error("configuration reload rejected; the running configuration stays",
			zap.String("trigger", trigger), zap.Error(err))
		return finish("rejected", err)
	}
	rep, err := r.apply(Desired(live, keys, r.verifyFailed))
	if err != nil {
		r.log.Error("configuration reload failed; the running configuration stays",
			zap.String("trigger", trigger), zap.Error(err))
		return finish("failed", fmt.Errorf("apply models: %w", err))
	}
	res.Models = summarize(rep)
	if len(applied) == 0 && !rep.Changed() {
		// Nothing in the config changed and the repository (rescanned and re-verified: a
		// reload also picks up new or tampered artifacts) serves what it served.
		next.RestartPending, next.Sources = pending, src
		r.log.Info("configuration reloaded: nothing to apply", zap.String("trigger", trigger),
			zap.Int("restart_pending", len(pending)))
		return finish("unchanged", nil)
	}
	var level zapcore.Level
	if level.UnmarshalText([]byte(live.Log.Level)) == nil {
		r.opts.Level.SetLevel(level)
	}
	if r.opts.OnApply != nil {
		r.opts.OnApply(live)
	}
	next.Config, next.Sources, next.RestartPending, next.Digest = live, src, pending, digest(live)
	fields := []zap.Field{zap.String("trigger", trigger), zap.Int("changes", len(applied)),
		zap.Int("restart_pending", len(pending)), zap.Duration("took", time.Since(start))}
	for _, c := range applied {
		fields = append(fields, zap.String(c.Key, c.Old+" -> "+c.New))
	}
	r.log.Info("configuration reloaded", fields...)
	return finish("applied", nil)
}

func summarize(rep repository.Report) *ModelReport {
	m := &ModelReport{Unchanged: rep.Unchanged}
	name := func(c repository.Change) string { return c.Model + "@" + c.Version }
	for _, c := range rep.Loaded {
		m.Loaded = append(m.Loaded, name(c))
	}
	for _, c := range rep.Reloaded {
		m.Reloaded = append(m.Reloaded, name(c))
	}
	for _, c := range rep.Unloaded {
		m.Unloaded = append(m.Unloaded, name(c))
	}
	for _, c := range rep.Failed {
		m.Failed = append(m.Failed, name(c)+": "+c.Reason)
	}
	return m
}

// digest is "sha256:<hex>" of the JSON encoding of c.
func digest(c *config.Config) string {
	b, err := json.Marshal(c)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Watch starts the reloader's goroutines: one runs the triggered reloads, one watches the
// config file, its profile overlay, the .env file and the admin token file (a Kubernetes
// Secret's update included), following the token file when a reload changes its path. Both
// stop at Close. Call it once.
func (r *Reloader) Watch() {
	go func() {
		for {
			select {
			case <-r.ctx.Done():
				return
			case trigger := <-r.triggers:
				_, _ = r.reload(trigger)
			}
		}
	}()
	r.watchOnce.Do(func() {
		go func() {
			defer close(r.watched)
			r.watch(r.ctx)
		}()
	})
}

func (r *Reloader) watch(ctx context.Context) {
	for {
		files := r.opts.Load.Files()
		if p := r.tokenPath(); p != "" {
			files = append(files, p)
		}
		if len(files) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-r.rewatch:
				continue
			}
		}
		wctx, stop := context.WithCancel(ctx)
		moved := make(chan struct{})
		go func() {
			select {
			case <-r.rewatch:
				close(moved)
				stop()
			case <-wctx.Done():
			}
		}()
		err := config.WatchFiles(wctx, files, 200*time.Millisecond, func() { r.Trigger("file change") })
		stop()
		select {
		case <-moved: // the token file's path changed: watch anew
			continue
		default:
		}
		if err != nil && !errors.Is(err, context.Canceled) {
			r.log.Error("config watch stopped; reload with SIGHUP", zap.Error(err))
		}
		return
	}
}

// Close stops the triggers and the file watch and makes every reload asked for from now on, or
// still waiting for the one in progress, return ErrClosed. It does not wait for a reload in
// progress: Busy says whether one is, and the repository must not be closed under it.
func (r *Reloader) Close() {
	if r.closed.Swap(true) {
		return
	}
	r.cancel()
	r.watchOnce.Do(func() { close(r.watched) }) // never started
	<-r.watched                                 // the watch never waits for a reload
}
