package server

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// filledDetails is a HealthDetails with every field set, and every "none yet" of one kind.
func filledDetails() HealthDetails {
	t0 := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	change := ConfigChange{Key: "limits.queue_len", Old: "64", New: "8"}
	restart := ConfigChange{Key: "server.addr", Old: "127.0.0.1:8000", New: "0.0.0.0:8000", Restart: true}
	applied := ReloadOutcome{Time: t0.Add(time.Minute), Trigger: "SIGHUP", Outcome: "applied",
		Applied: []ConfigChange{change}, RestartPending: []ConfigChange{restart},
		Models: &ReloadModels{Loaded: []string{"b@1.0.0"}, Reloaded: []string{"a@1.0.0"}, Unloaded: []string{"c@2.0.0"},
			Failed: []string{"d@1.0.0: no such version"}, Unchanged: 1},
		TokenRotated: true, TookSeconds: 1.5}
	rejected := ReloadOutcome{Time: t0.Add(2 * time.Minute), Trigger: "file change", Outcome: "rejected",
		Error: "limits.queue_len: must be ≥ 1, got 0", TookSeconds: 0.001}
	return HealthDetails{
		Status: "not ready",
		Server: HealthServer{Version: "1.4.0", Started: t0, UptimeSeconds: 180},
		Versions: []HealthVersion{
			{Model: "a", Version: "1.0.0", State: "READY", Backend: "cpu", Device: "cpu", Digest: "sha256:ab",
				Signer: "ed25519:cd", Default: true, Pinned: true, LoadSeconds: 0.25, InFlight: 2, QueueDepth: 1},
			{Model: "d", Version: "1.0.0", State: "UNAVAILABLE", Reason: "no such version"},
			{Model: "e", Version: "1.0.0", State: "UNLOADED", Reason: "unloaded through the repository API"},
		},
		Backends: []HealthBackend{
			{Name: "cpu", Version: "3.6", Path: "/opt/policyd/lib/libpolicyd_cpu.so", Available: true},
			{Name: "cuda", Path: "/opt/policyd/lib/libpolicyd_cuda.so", Reason: "no CUDA driver"},
		},
		Devices: HealthDevices{
			CPU: HealthCPU{Model: "AMD EPYC 7B13", Cores: 2, Arch: "amd64"},
			GPUs: []HealthGPU{{UUID: "GPU-1", Index: 0, Name: "NVIDIA H100", MemoryTotalBytes: 80 << 30,
				MemoryUsedBytes: 1 << 30, Unsupported: []string{"power"}}},
		},
		Artifacts: HealthArtifacts{TrustedKeys: 1, LastVerification: &HealthVerification{Time: t0.Add(time.Minute), Versions: 3,
			Failed: []HealthVerifyFailure{{Model: "d", Version: "1.0.0", Reason: "model.onnx: sha256 mismatch"}}}},
		Config: HealthConfig{File: "/etc/policyd/policyd.yaml", Profile: "prod", Digest: "sha256:0123",
			Repository: "/models", LogLevel: "info", Models: 4, RestartPending: []ConfigChange{restart},
			LastReload: &rejected, Reloads: []ReloadOutcome{rejected, applied}},
		Shadows: []ShadowStatus{{Model: "a", Primary: "1.0.0", Shadow: "1.1.0", Samples: 120, Dropped: 3, Skipped: 1,
			MeanAbs: 0.0015, MaxAbs: 0.25, MaxRel: 0.5, Agreement: 0.99, Since: t0, LastError: "",
			Outputs: []ShadowOutputReport{{Output: "action", Elements: 480, MeanAbs: 0.0015, MaxAbs: 0.25, MaxRel: 0.5, Agreement: 1},
				{Output: "discrete", Discrete: true, Elements: 120, Agreement: 0.99}}}},
	}
}

// TestHealthDetailsGolden: GET /v2/health/details writes HealthDetails with the JSON names
// operators and the e2e tests read (testdata/golden/health_details.json; -update rewrites it),
// and a document with nothing yet (no GPU, no verification, no reload) writes nulls and empty
// lists where the typed struct says so.
func TestHealthDetailsGolden(t *testing.T) {
	empty := HealthDetails{Status: "ready", Ready: true, Versions: []HealthVersion{}, Backends: []HealthBackend{},
		Devices: HealthDevices{GPUs: []HealthGPU{}, GPUsReason: "NVML not available"}, Shadows: []ShadowStatus{}}
	for name, d := range map[string]HealthDetails{"health_details.json": filledDetails(), "health_details_empty.json": empty} {
		t.Run(name, func(t *testing.T) {
			ts := startServer(t, testRegistry(), Options{Admin: Admin{
				AllowUnauthenticated: func() bool { return true },
				Details:              func() HealthDetails { return d },
			}})
			r := ts.do(t, "GET", "/v2/health/details", nil)
			if r.status != 200 || r.header["Content-Type"] != "application/json" {
				t.Fatalf("details = %d %q %s", r.status, r.header["Content-Type"], r.body)
			}
			golden := filepath.Join("testdata", "golden", name)
			if *update {
				if err := os.WriteFile(golden, append(r.body, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want := bytes.TrimSuffix(readTestdata(t, filepath.Join("golden", name)), []byte("\n"))
			if !bytes.Equal(r.body, want) {
				t.Errorf("response\n%s\nwant (testdata/golden/%s; -update rewrites it)\n%s", r.body, name, want)
			}
		})
	}
}
