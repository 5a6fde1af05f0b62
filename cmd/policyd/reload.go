package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/gpu"
	"github.com/policyd/policyd/repository"
	"github.com/policyd/policyd/server"
)

// reloader owns the live configuration: it loads the layers anew (on a file change, SIGHUP or
// POST /v2/admin/reload), rejects an invalid result and keeps the old one, holds back changes
// that need a restart, and applies the rest — log level, limits, the served models — in one
// step. Safe for concurrent use; reloads are serialized.
type reloader struct {
	opts  config.LoadOptions
	log   *zap.Logger
	level zap.AtomicLevel
	repo  *repository.Repository
	srv   *server.Server // set once serving

	mu      sync.Mutex
	cur     *config.Config
	src     *config.Sources
	pending []config.Change // changes that wait for a restart
	last    reloadResult
	history []reloadResult // the last reloadHistory reloads, most recent first
	token   atomic.Value   // string: the admin bearer token ("" = none, or its file unreadable)
	tokPath atomic.Value   // string: admin.token_file in force, as the watch follows it
	allow   atomic.Bool    // admin.allow_unauthenticated in force, and no token file
	rewatch chan struct{}  // the token file's path changed: watch the new one

	gpus    *gpu.Collector // nil: no GPU section in health details
	started time.Time

	vmu      sync.Mutex // guards the verification record; Apply calls verifyFailed under mu
	vPending []verifyFailure
	vLast    *verification

	reloads        *prometheus.CounterVec
	verifyFailures *prometheus.CounterVec
	lastOK         prometheus.Gauge
	lastTime       prometheus.Gauge
	pendingG       prometheus.Gauge
}

// reloadHistory is how many reloads health details list.
const reloadHistory = 16

// reloadResult is what one reload did; health details and POST /v2/admin/reload show it.
type reloadResult struct {
	Time           time.Time       `json:"time"`
	Trigger        string          `json:"trigger"`
	Outcome        string          `json:"outcome"` // applied, rejected, failed, unchanged
	Error          string          `json:"error,omitempty"`
	Applied        []config.Change `json:"applied,omitempty"`
	RestartPending []config.Change `json:"restart_pending,omitempty"`
	Models         *modelReport    `json:"models,omitempty"`
	TokenRotated   bool            `json:"token_rotated,omitempty"` // the admin token changed (its file was re-read)
	TookSeconds    float64         `json:"took_seconds"`
}

type modelReport struct {
	Loaded    []string `json:"loaded,omitempty"`
	Reloaded  []string `json:"reloaded,omitempty"`
	Unloaded  []string `json:"unloaded,omitempty"`
	Failed    []string `json:"failed,omitempty"`
	Unchanged int      `json:"unchanged"`
}

func newReloader(opts config.LoadOptions, cfg *config.Config, src *config.Sources, log *zap.Logger,
	level zap.AtomicLevel, repo *repository.Repository, reg prometheus.Registerer) *reloader {
	r := &reloader{opts: opts, cur: cfg, src: src, log: log, level: level, repo: repo, started: time.Now(),
		rewatch: make(chan struct{}, 1)}
	r.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policyd_config_reloads_total",
		Help: "Configuration reloads by outcome: applied, unchanged, rejected (invalid config; the old one keeps running), failed (valid config the server could not apply).",
	}, []string{"outcome"})
	r.lastOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "policyd_config_last_reload_successful",
		Help: "1 when the last configuration reload was applied (or changed nothing), 0 when it was rejected or failed.",
	})
	r.lastTime = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "policyd_config_last_reload_timestamp_seconds",
		Help: "Unix time of the last configuration reload attempt.",
	})
	r.pendingG = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "policyd_config_restart_pending_changes",
		Help: "Configuration changes loaded but held back until a restart (e.g. server.addr).",
	})
	r.verifyFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policyd_artifact_verification_failures_total",
		Help: "Artifact verifications that failed (checked at start and at every reload): the version is refused, or, with artifacts.on_tamper: keep, one already serving serves on.",
	}, []string{"model", "version"})
	reg.MustRegister(r.verifyFailures)
	for _, o := range []string{"applied", "unchanged", "rejected", "failed"} {
		r.reloads.WithLabelValues(o)
	}
	r.lastOK.Set(1)
	reg.MustRegister(r.reloads, r.lastOK, r.lastTime, r.pendingG)
	r.token.Store("")
	r.tokPath.Store("")
	r.readToken(cfg, "start")
	return r
}

// readToken reads the admin token of cfg, as every reload does (whatever its outcome), and
// reports whether it changed. A token file that cannot be read refuses every guarded call
// (fail closed: allow_unauthenticated applies only without a token file). The log names the
// file, never the token.
func (r *reloader) readToken(cfg *config.Config, trigger string) (rotated bool) {
	path := cfg.Admin.TokenFile
	t, err := cfg.Admin.Token()
	if err != nil {
		r.log.Error("admin token unreadable: the routes that need it refuse every call until it is fixed",
			zap.String("trigger", trigger), zap.Error(err))
		t = ""
	}
	old := r.token.Swap(t).(string)
	r.allow.Store(cfg.Admin.AllowUnauthenticated && path == "")
	if r.tokPath.Swap(path).(string) != path && trigger != "start" {
		select {
		case r.rewatch <- struct{}{}:
		default:
		}
	}
	rotated = old != t && trigger != "start"
	switch {
	case !rotated:
	case t == "" && err == nil:
		r.log.Warn("admin token removed: no admin.token_file", zap.String("trigger", trigger),
			zap.Bool("allow_unauthenticated", cfg.Admin.AllowUnauthenticated))
	case t != "":
		r.log.Info("admin token rotated: the previous one is refused from now on",
			zap.String("trigger", trigger), zap.String("token_file", path))
	}
	return rotated
}

// verification is the outcome of the last artifact verification of the repository (every
// Apply verifies every version it selects), for health details.
type verification struct {
	Time     time.Time       `json:"time"`
	Versions int             `json:"versions"` // versions selected (and so verified, but those the repository lacks)
	Failed   []verifyFailure `json:"failed"`
}

type verifyFailure struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// verifyFailed is the engines' hook for a version refused by artifact verification.
func (r *reloader) verifyFailed(model, version, reason string) {
	r.verifyFailures.WithLabelValues(model, version).Inc()
	r.vmu.Lock()
	r.vPending = append(r.vPending, verifyFailure{model, version, reason})
	r.vmu.Unlock()
}

// apply applies d to the repository and records its artifact verification.
func (r *reloader) apply(d repository.Desired) (repository.Report, error) {
	start := time.Now()
	r.vmu.Lock()
	r.vPending = nil
	r.vmu.Unlock()
	rep, err := r.repo.Apply(d)
	if err != nil {
		return rep, err
	}
	r.vmu.Lock()
	r.vLast = &verification{Time: start.UTC(), Failed: r.vPending,
		Versions: len(rep.Loaded) + len(rep.Reloaded) + len(rep.Failed) + rep.Unchanged}
	if r.vLast.Failed == nil {
		r.vLast.Failed = []verifyFailure{}
	}
	r.vPending = nil
	r.vmu.Unlock()
	return rep, nil
}

// Token is the bearer token the operator routes need ("" = none configured, or unreadable).
func (r *reloader) Token() string { return r.token.Load().(string) }

// AllowUnauthenticated says whether the operator routes are open without a token:
// admin.allow_unauthenticated set and no admin.token_file.
func (r *reloader) AllowUnauthenticated() bool { return r.allow.Load() }

// Config returns the configuration in force.
func (r *reloader) Config() *config.Config {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cur
}

// trustedKeys loads the public keys of artifacts.trusted_keys.
func trustedKeys(c *config.Config) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, p := range c.Artifacts.TrustedKeys {
		k, err := artifacts.LoadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("artifacts.trusted_keys: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// gpuIndexes maps models[].devices (validated by config: "all" alone, or indexes) to
// repository.ModelSpec.Devices: nil for every GPU.
func gpuIndexes(devices []string) []int {
	var out []int
	for _, d := range devices {
		n, err := strconv.Atoi(d)
		if err != nil { // "all"
			return nil
		}
		out = append(out, n)
	}
	return out
}

// desired turns the configuration into the engines' desired state. onVerifyFailure counts
// versions refused by artifact verification.
func desired(c *config.Config, keys []ed25519.PublicKey, onVerifyFailure func(model, version, reason string)) repository.Desired {
	d := repository.Desired{
		Dir:                 c.Repository.Path,
		QueueLen:            c.Limits.QueueLen,
		Batching:            c.Batching.Enabled,
		Seed:                c.Engine.Seed,
		RequireEngineCaches: !c.Engine.BuildEngines,
		MaxModelMemory:      uint64(c.Limits.MaxModelMemory),
		TrustedKeys:         keys,
		OnVerifyFailure:     onVerifyFailure,
		KeepTampered:        c.Artifacts.OnTamper == "keep",
		Default: repository.ModelSpec{
			Backends:  c.Engine.Backends,
			Params:    c.Engine.BackendParameters,
			Instances: c.Instances(config.DefaultModel()),
			Threads:   c.Threads(config.DefaultModel()),
			Batching: repository.BatchingSpec{
				MaxBatchSize:         c.Batching.MaxBatchSize,
				MaxQueueDelay:        c.Batching.MaxQueueDelay,
				PreferredBatchSizes:  c.Batching.PreferredBatchSizes,
				PriorityLevels:       c.Batching.PriorityLevels,
				DefaultPriorityLevel: c.Batching.DefaultPriorityLevel,
			},
		},
	}
	for _, m := range c.Models {
		fallback := m.Fallback
		d.Models = append(d.Models, repository.ModelSpec{
			Name: m.Name, Version: m.Version, Digest: m.Digest, Backends: m.Backends,
			Fallback: &fallback, Devices: gpuIndexes(m.Devices), Params: m.BackendParameters,
			Instances: c.Instances(m), Threads: c.Threads(m),
			Batching: repository.BatchingSpec{
				MaxBatchSize:         m.Batching.MaxBatchSize,
				MaxQueueDelay:        m.Batching.MaxQueueDelay,
				PreferredBatchSizes:  m.Batching.PreferredBatchSizes,
				PriorityLevels:       m.Batching.PriorityLevels,
				DefaultPriorityLevel: m.Batching.DefaultPriorityLevel,
			},
			Sequence: sequenceSpec(m.Sequence),
		})
	}
	return d
}

// sequenceSpec converts models[].sequence (validated) to the engines' spec; nil when it lists
// no state pairs.
func sequenceSpec(s config.ModelSequence) *engines.SequenceSpec {
	pairs, _ := s.StatePairs()
	if len(pairs) == 0 {
		return nil
	}
	spec := &engines.SequenceSpec{IdleTimeout: s.IdleTimeout, MaxSequences: s.MaxSequences}
	for _, p := range pairs {
		spec.States = append(spec.States, engines.StatePair{Input: p[0], Output: p[1]})
	}
	return spec
}

// Reload loads the configuration anew and applies what it can without a restart. It returns
// an error when the new configuration was rejected (invalid) or could not be applied; in both
// cases the previous configuration keeps running untouched.
func (r *reloader) Reload(trigger string) (reloadResult, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	start := time.Now()
	res := reloadResult{Time: start.UTC(), Trigger: trigger}
	finish := func(outcome string, err error) (reloadResult, error) {
		// The token file is re-read on every trigger, whatever the config did: a rotation
		// changes no config key. r.cur is the config in force (the new one once applied).
		res.TokenRotated = r.readToken(r.cur, trigger)
		res.Outcome = outcome
		res.TookSeconds = time.Since(start).Seconds()
		if err != nil {
			res.Error = err.Error()
		}
		r.last = res
		r.history = append([]reloadResult{res}, r.history...)
		if len(r.history) > reloadHistory {
			r.history = r.history[:reloadHistory]
		}
		r.reloads.WithLabelValues(outcome).Inc()
		r.lastTime.Set(float64(start.Unix()))
		if outcome == "applied" || outcome == "unchanged" {
			r.lastOK.Set(1)
		} else {
			r.lastOK.Set(0)
		}
		r.pendingG.Set(float64(len(r.pending)))
		return res, err
	}

	next, src, err := config.Load(r.opts)
	if err != nil {
		r.log.Error("configuration reload rejected; the running configuration stays",
			zap.String("trigger", trigger), zap.Error(err))
		return finish("rejected", err)
	}
	live, pending := config.Live(r.cur, next)
	applied := config.Diff(r.cur, live)
	res.Applied, res.RestartPending = applied, pending
	for _, c := range pending {
		r.log.Warn("configuration change needs a restart; not applied",
			zap.String("key", c.Key), zap.String("running", c.Old), zap.String("loaded", c.New))
	}
	// Models first: if the repository cannot be applied, nothing changes.
	keys, err := trustedKeys(live)
	if err != nil {
		r.log.Error("configuration reload rejected; the running configuration stays",
			zap.String("trigger", trigger), zap.Error(err))
		return finish("rejected", err)
	}
	rep, err := r.apply(desired(live, keys, r.verifyFailed))
	if err != nil {
		r.log.Error("configuration reload failed; the running configuration stays",
			zap.String("trigger", trigger), zap.Error(err))
		return finish("failed", fmt.Errorf("apply models: %w", err))
	}
	res.Models = summarize(rep)
	if len(applied) == 0 && !rep.Changed() {
		// Nothing in the config changed and the repository (rescanned and re-verified: a
		// reload also picks up new or tampered artifacts) serves what it served.
		r.pending, r.src = pending, src
		r.log.Info("configuration reloaded: nothing to apply", zap.String("trigger", trigger),
			zap.Int("restart_pending", len(pending)))
		return finish("unchanged", nil)
	}
	r.level.SetLevel(levelOf(live.Log.Level))
	if r.srv != nil {
		r.srv.SetMaxRequestBodySize(int(live.Limits.MaxRequestSize))
	}
	r.cur, r.src, r.pending = live, src, pending
	fields := []zap.Field{zap.String("trigger", trigger), zap.Int("changes", len(applied)),
		zap.Int("restart_pending", len(pending)), zap.Duration("took", time.Since(start))}
	for _, c := range applied {
		fields = append(fields, zap.String(c.Key, c.Old+" -> "+c.New))
	}
	r.log.Info("configuration reloaded", fields...)
	return finish("applied", nil)
}

func summarize(rep repository.Report) *modelReport {
	m := &modelReport{Unchanged: rep.Unchanged}
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

// watch reloads on every change of the config file, its profile overlay, the .env file and
// the admin token file (a Kubernetes Secret's update included), following the token file when
// a reload changes its path.
func (r *reloader) watch(ctx context.Context) {
	for {
		files := r.opts.Files()
		if p := r.tokPath.Load().(string); p != "" {
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
		err := config.WatchFiles(wctx, files, 200*time.Millisecond, func() { _, _ = r.Reload("file change") })
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

// details is the document of GET /v2/health/details: readiness, every model version with its
// state, reason and device, the devices (CPU, GPUs from NVML), the backends and why one is
// unavailable, the configuration in force with its digest and reloads, and the last artifact
// verification.
func (r *reloader) details(rt *bridge.Runtime) any {
	r.mu.Lock()
	cfg, last, pending, history := r.cur, r.last, r.pending, r.history
	r.mu.Unlock()
	r.vmu.Lock()
	verified := r.vLast
	r.vmu.Unlock()
	type version struct {
		Model       string  `json:"model"`
		Version     string  `json:"version"`
		State       string  `json:"state"`
		Reason      string  `json:"reason,omitempty"`
		Backend     string  `json:"backend,omitempty"`
		Device      string  `json:"device,omitempty"`
		Digest      string  `json:"digest,omitempty"`
		Signer      string  `json:"signer,omitempty"`
		Default     bool    `json:"default"`
		Pinned      bool    `json:"pinned,omitempty"`
		LoadSeconds float64 `json:"load_seconds"`
		InFlight    int     `json:"in_flight"`
		QueueDepth  int     `json:"queue_depth"`
	}
	versions := []version{}
	ready := r.repo.Ready()
	for _, v := range r.repo.All() {
		_, reason := v.Ready()
		def, pinned := r.repo.DefaultVersion(v.Name())
		isDef := def == v.Version()
		versions = append(versions, version{v.Name(), v.Version(), v.State().String(), reason, v.Backend(), v.Device(),
			v.Digest(), v.Signer(), isDef, isDef && pinned, v.LoadDuration().Seconds(), v.InFlight(), v.QueueDepth()})
	}
	for _, e := range r.repo.Index() {
		if e.State == repository.StateUnloaded { // in the repository, not served: say why
			versions = append(versions, version{Model: e.Model, Version: e.Version, State: e.State.String(), Reason: e.Reason})
		}
	}
	type backend struct {
		Name      string `json:"name"`
		Version   string `json:"version,omitempty"`
		Path      string `json:"path"`
		Available bool   `json:"available"`
		Reason    string `json:"reason,omitempty"`
	}
	backends := []backend{}
	if rt != nil {
		for _, b := range rt.Backends() {
			backends = append(backends, backend{b.Name, b.Version, filepath.Clean(b.Path), b.Available, b.Reason})
		}
	}
	status := "ready"
	if !ready {
		status = "not ready"
	}
	lastReload := any(nil)
	if !last.Time.IsZero() {
		lastReload = last
	}
	gpus := []gpu.Device{}
	nvml := "NVML not available (no libnvidia-ml.so.1, no driver or GPU, or built without cgo): the gpu logger's line at start says which"
	if r.gpus != nil && r.gpus.Enabled() {
		gpus = append(gpus, r.gpus.Devices()...)
		nvml = ""
	}
	return map[string]any{
		"status":   status,
		"ready":    ready,
		"server":   map[string]any{"version": versionString(), "started": r.started.UTC(), "uptime_seconds": time.Since(r.started).Seconds()},
		"versions": versions,
		"backends": backends,
		"devices": map[string]any{
			"cpu":         cpuInfo(),
			"gpus":        gpus,
			"gpus_reason": nvml,
		},
		"artifacts": map[string]any{
			"trusted_keys":      len(cfg.Artifacts.TrustedKeys),
			"last_verification": verified,
		},
		"config": map[string]any{
			"file":            r.opts.File,
			"profile":         r.opts.Profile,
			"digest":          configDigest(cfg),
			"repository":      cfg.Repository.Path,
			"log_level":       cfg.Log.Level,
			"models":          len(cfg.Models),
			"restart_pending": pending,
			"last_reload":     lastReload,
			"reloads":         history,
		},
	}
}
