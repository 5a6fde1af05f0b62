package server

import "time"

// HealthDetails is the document of GET /v2/health/details (docs/observability.md, Health
// details): readiness, every model version with its state, reason and device, the backends and
// why one is unavailable, the devices, the last artifact verification, and the configuration in
// force with its digest and reloads, and the shadow evaluations. Every field is always written; a JSON null says "none yet"
// (no verification, no reload).
type HealthDetails struct {
	Status    string          `json:"status"` // "ready" or "not ready"
	Ready     bool            `json:"ready"`
	Server    HealthServer    `json:"server"`
	Versions  []HealthVersion `json:"versions"`
	Backends  []HealthBackend `json:"backends"`
	Devices   HealthDevices   `json:"devices"`
	Artifacts HealthArtifacts `json:"artifacts"`
	Config    HealthConfig    `json:"config"`
	// Shadows are the shadow evaluations that have seen a request (Server.ShadowStatuses):
	// what each measured since it started or was reset.
	Shadows []ShadowStatus `json:"shadows"`
	// Traffic lists the live traffic policies (traffic.go), with their gates' history.
	Traffic []TrafficDocument `json:"traffic,omitempty"`
}

// HealthServer is the process: its version and since when it runs.
type HealthServer struct {
	Version       string    `json:"version"`
	Started       time.Time `json:"started"`
	UptimeSeconds float64   `json:"uptime_seconds"`
}

// HealthVersion is a model version the repository knows: served (any state) or unloaded
// through the repository API (then only model, version, state and reason).
type HealthVersion struct {
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
	// Golden: the golden checks of the load, one line each with its numbers (docs/rollout.md).
	Golden []HealthGolden `json:"golden,omitempty"`
}

// HealthGolden is one golden check of a version's load: the backend and device it ran on,
// its result (pass, fail, error) and the numbers.
type HealthGolden struct {
	Backend string `json:"backend"`
	Device  string `json:"device,omitempty"`
	Result  string `json:"result"`
	Summary string `json:"summary"`
}

// HealthBackend is a backend plugin and whether it can run here.
type HealthBackend struct {
	Name      string `json:"name"`
	Version   string `json:"version,omitempty"`
	Path      string `json:"path"`
	Available bool   `json:"available"`
	Reason    string `json:"reason,omitempty"`
}

// HealthDevices are the CPU and the GPUs NVML sees; GPUsReason says why there are none.
type HealthDevices struct {
	CPU        HealthCPU   `json:"cpu"`
	GPUs       []HealthGPU `json:"gpus"`
	GPUsReason string      `json:"gpus_reason"`
}

// HealthCPU is the CPU.
type HealthCPU struct {
	Model string `json:"model"`
	Cores int    `json:"cores"` // logical CPUs this process may use
	Arch  string `json:"arch"`
}

// HealthGPU is a GPU as NVML last sampled it.
type HealthGPU struct {
	UUID             string   `json:"uuid"`
	Index            int      `json:"index"`
	Name             string   `json:"name"`
	MemoryTotalBytes uint64   `json:"memory_total_bytes"`
	MemoryUsedBytes  uint64   `json:"memory_used_bytes"`
	Unsupported      []string `json:"unsupported,omitempty"` // fields the GPU answered NOT_SUPPORTED for
}

// HealthArtifacts is the artifact trust in force and the last verification of the repository.
type HealthArtifacts struct {
	TrustedKeys      int                 `json:"trusted_keys"`
	LastVerification *HealthVerification `json:"last_verification"` // nil before the first load
}

// HealthVerification is the outcome of the last artifact verification (start, every reload).
type HealthVerification struct {
	Time     time.Time             `json:"time"`
	Versions int                   `json:"versions"` // versions selected, and so verified
	Failed   []HealthVerifyFailure `json:"failed"`   // never nil
}

// HealthVerifyFailure is a version refused by artifact verification, with why.
type HealthVerifyFailure struct {
	Model   string `json:"model"`
	Version string `json:"version"`
	Reason  string `json:"reason"`
}

// HealthConfig is the configuration in force and its reloads.
type HealthConfig struct {
	File           string          `json:"file"`
	Profile        string          `json:"profile"`
	Digest         string          `json:"digest"` // "sha256:<hex>" of the configuration in force
	Repository     string          `json:"repository"`
	LogLevel       string          `json:"log_level"`
	Models         int             `json:"models"`
	RestartPending []ConfigChange  `json:"restart_pending"`
	LastReload     *ReloadOutcome  `json:"last_reload"` // nil before the first reload
	Reloads        []ReloadOutcome `json:"reloads"`     // the last ones, most recent first
}

// ConfigChange is one key a reload changed or holds back. Its JSON names are those of
// config.Change, which has no tags.
type ConfigChange struct {
	Key     string `json:"Key"`
	Old     string `json:"Old"`
	New     string `json:"New"`
	Restart bool   `json:"Restart"`
}

// ReloadOutcome is what one configuration reload did.
type ReloadOutcome struct {
	Time           time.Time      `json:"time"`
	Trigger        string         `json:"trigger"`
	Outcome        string         `json:"outcome"` // applied, rejected, failed, unchanged
	Error          string         `json:"error,omitempty"`
	Applied        []ConfigChange `json:"applied,omitempty"`
	RestartPending []ConfigChange `json:"restart_pending,omitempty"`
	Models         *ReloadModels  `json:"models,omitempty"`
	TokenRotated   bool           `json:"token_rotated,omitempty"` // the admin token changed
	TookSeconds    float64        `json:"took_seconds"`
}

// ReloadModels is what a reload did to the served versions ("model@version"; a failure with
// its reason).
type ReloadModels struct {
	Loaded    []string `json:"loaded,omitempty"`
	Reloaded  []string `json:"reloaded,omitempty"`
	Unloaded  []string `json:"unloaded,omitempty"`
	Failed    []string `json:"failed,omitempty"`
	Unchanged int      `json:"unchanged"`
}
