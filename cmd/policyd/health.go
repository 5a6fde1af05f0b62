package main

import (
	"bufio"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/gpu"
	"github.com/policyd/policyd/reload"
	"github.com/policyd/policyd/repository"
	"github.com/policyd/policyd/server"
)

// served is what health details read of the repository; *repository.Repository implements it.
type served interface {
	All() []*repository.Version
	Index() []repository.IndexEntry
	Ready() bool
	DefaultVersion(model string) (version string, pinned bool)
}

// trafficServed is a served repository with traffic policies (*repository.Repository).
type trafficServed interface {
	TrafficModels() []string
	Traffic(model string) (repository.TrafficStatus, bool)
}

// health gathers the document of GET /v2/health/details from the parts that hold it. Nothing it
// reads waits for a configuration reload: the reloader's state is a snapshot.
type health struct {
	load    config.LoadOptions
	rl      *reload.Reloader
	repo    served
	rt      *bridge.Runtime // nil: no backends listed
	gpus    *gpu.Collector  // nil: no GPU
	started time.Time
	// shadows lists the shadow evaluations (the server's ShadowStatuses); nil: none.
	shadows func() []server.ShadowStatus
}

func (h *health) details() server.HealthDetails {
	st := h.rl.State()
	cfg := st.Config
	d := server.HealthDetails{
		Status:   "ready",
		Ready:    h.repo.Ready(),
		Server:   server.HealthServer{Version: versionString(), Started: h.started.UTC(), UptimeSeconds: time.Since(h.started).Seconds()},
		Versions: []server.HealthVersion{},
		Backends: []server.HealthBackend{},
		Devices: server.HealthDevices{
			CPU:        server.HealthCPU{Model: cpuModel(), Cores: runtime.NumCPU(), Arch: runtime.GOARCH},
			GPUs:       []server.HealthGPU{},
			GPUsReason: "NVML not available (no libnvidia-ml.so.1, no driver or GPU, or built without cgo): the gpu logger's line at start says which",
		},
		Artifacts: server.HealthArtifacts{TrustedKeys: len(cfg.Artifacts.TrustedKeys)},
		Config: server.HealthConfig{File: h.load.File, Profile: h.load.Profile, Digest: st.Digest,
			Repository: cfg.Repository.Path, LogLevel: cfg.Log.Level, Models: len(cfg.Models),
			RestartPending: changes(st.RestartPending)},
		Shadows: []server.ShadowStatus{},
	}
	if h.shadows != nil {
		d.Shadows = h.shadows()
	}
	if !d.Ready {
		d.Status = "not ready"
	}
	for _, v := range h.repo.All() {
		_, reason := v.Ready()
		def, pinned := h.repo.DefaultVersion(v.Name())
		isDef := def == v.Version()
		d.Versions = append(d.Versions, server.HealthVersion{Model: v.Name(), Version: v.Version(), State: v.State().String(),
			Reason: reason, Backend: v.Backend(), Device: v.Device(), Digest: v.Digest(), Signer: v.Signer(),
			Default: isDef, Pinned: isDef && pinned, LoadSeconds: v.LoadDuration().Seconds(),
			InFlight: v.InFlight(), QueueDepth: v.QueueDepth(), Golden: healthGolden(v.GoldenChecks())})
	}
	if tr, ok := h.repo.(trafficServed); ok {
		for _, m := range tr.TrafficModels() {
			d.Traffic = append(d.Traffic, server.TrafficDocumentOf(tr, m))
		}
	}
	for _, e := range h.repo.Index() {
		if e.State == repository.StateUnloaded { // in the repository, not served: say why
			d.Versions = append(d.Versions, server.HealthVersion{Model: e.Model, Version: e.Version, State: e.State.String(), Reason: e.Reason})
		}
	}
	if h.rt != nil {
		for _, b := range h.rt.Backends() {
			d.Backends = append(d.Backends, server.HealthBackend{Name: b.Name, Version: b.Version,
				Path: filepath.Clean(b.Path), Available: b.Available, Reason: b.Reason})
		}
	}
	if h.gpus != nil && h.gpus.Enabled() {
		for _, g := range h.gpus.Devices() {
			d.Devices.GPUs = append(d.Devices.GPUs, server.HealthGPU{UUID: g.UUID, Index: g.Index, Name: g.Name,
				MemoryTotalBytes: g.MemoryTotalBytes, MemoryUsedBytes: g.MemoryUsedBytes, Unsupported: g.Unsupported})
		}
		d.Devices.GPUsReason = ""
	}
	if v := st.Verification; v != nil {
		lv := &server.HealthVerification{Time: v.Time, Versions: v.Versions, Failed: []server.HealthVerifyFailure{}}
		for _, f := range v.Failed {
			lv.Failed = append(lv.Failed, server.HealthVerifyFailure{Model: f.Model, Version: f.Version, Reason: f.Reason})
		}
		d.Artifacts.LastVerification = lv
	}
	if st.Last != nil {
		last := reloadOutcome(*st.Last)
		d.Config.LastReload = &last
	}
	if st.History != nil {
		d.Config.Reloads = make([]server.ReloadOutcome, len(st.History))
		for i, r := range st.History {
			d.Config.Reloads[i] = reloadOutcome(r)
		}
	}
	return d
}

func reloadOutcome(r reload.Result) server.ReloadOutcome {
	o := server.ReloadOutcome{Time: r.Time, Trigger: r.Trigger, Outcome: r.Outcome, Error: r.Error,
		Applied: changes(r.Applied), RestartPending: changes(r.RestartPending), TokenRotated: r.TokenRotated,
		TookSeconds: r.TookSeconds}
	if m := r.Models; m != nil {
		o.Models = &server.ReloadModels{Loaded: m.Loaded, Reloaded: m.Reloaded, Unloaded: m.Unloaded, Failed: m.Failed,
			Unchanged: m.Unchanged}
	}
	return o
}

// changes converts config changes; nil stays nil (JSON null, or left out).
func changes(cs []config.Change) []server.ConfigChange {
	if cs == nil {
		return nil
	}
	out := make([]server.ConfigChange, len(cs))
	for i, c := range cs {
		out[i] = server.ConfigChange{Key: c.Key, Old: c.Old, New: c.New, Restart: c.Restart}
	}
	return out
}

var cpuModel = sync.OnceValue(func() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && (strings.TrimSpace(k) == "model name" || strings.TrimSpace(k) == "Model") {
			return strings.TrimSpace(v)
		}
	}
	return ""
})

// healthGolden are a version's golden checks as health details show them (nil: none).
func healthGolden(checks []repository.GoldenCheck) []server.HealthGolden {
	var out []server.HealthGolden
	for _, c := range checks {
		out = append(out, server.HealthGolden{Backend: c.Result.Backend, Device: c.Result.Device, Result: c.Outcome(), Summary: c.Summary()})
	}
	return out
}
