package config

import (
	"reflect"
	"testing"
	"time"
)

func TestDiff(t *testing.T) {
	a := Defaults()
	a.Repository.Path = "repo"
	a.Models = []Model{
		{Name: "policy-a", Backends: []string{"cpu"}, Instances: 2},
		{Name: "policy-b", Backends: []string{"cpu"}},
	}
	b := Defaults()
	b.Repository.Path = "repo"
	b.Server.Addr = ":9"
	b.Server.ReadTimeout = time.Minute
	b.Log.Level = "debug"
	b.Limits.MaxRequestSize = MiB
	b.Engine.CPUThreads = 4
	b.Models = []Model{
		{Name: "policy-c", Backends: []string{"cpu"}},
		{Name: "policy-a", Backends: []string{"cuda", "cpu"}, Instances: 2, Version: "1.0.0"},
	}
	want := []Change{
		{Key: "server.addr", Old: "127.0.0.1:8000", New: `":9"`, Restart: true},
		{Key: "server.read_timeout", Old: "30s", New: "1m", Restart: true},
		{Key: "limits.max_request_size", Old: "64MiB", New: "1MiB"},
		{Key: "log.level", Old: "info", New: "debug"},
		{Key: "engine.cpu_threads", Old: "0", New: "4", Restart: true},
		{Key: `models["policy-a"].version`, Old: `""`, New: "1.0.0"},
		{Key: `models["policy-a"].backends`, Old: "[cpu]", New: "[cuda, cpu]"},
		{Key: `models["policy-b"]`, Old: `{name: policy-b, version: "", digest: "", backends: [cpu], fallback: false, devices: [], instances: 0, threads: 0, backend_parameters: {}, batching: {max_batch_size: 0, max_queue_delay: 0s, preferred_batch_sizes: [], priority_levels: 0, default_priority_level: 0}, sequence: {states: [], idle_timeout: 0s, max_sequences: 0, controls: []}, deadline_fallback: {kind: "", constant: [], version: ""}, traffic: {weights: [], sticky_idle_timeout: 0s, max_sticky_keys: 0, shadow: {version: "", rate: 0}, gates: {candidate: "", interval: 0s, promote: {steps: [], min_samples: 0, max_mean_abs: 0, min_agreement: 0, dwell: 0s}, rollback: {max_error_rate: 0, max_p99: 0s, max_mean_abs: 0, min_requests: 0}}}}`},
		{Key: `models["policy-c"]`, New: `{name: policy-c, version: "", digest: "", backends: [cpu], fallback: false, devices: [], instances: 0, threads: 0, backend_parameters: {}, batching: {max_batch_size: 0, max_queue_delay: 0s, preferred_batch_sizes: [], priority_levels: 0, default_priority_level: 0}, sequence: {states: [], idle_timeout: 0s, max_sequences: 0, controls: []}, deadline_fallback: {kind: "", constant: [], version: ""}, traffic: {weights: [], sticky_idle_timeout: 0s, max_sticky_keys: 0, shadow: {version: "", rate: 0}, gates: {candidate: "", interval: 0s, promote: {steps: [], min_samples: 0, max_mean_abs: 0, min_agreement: 0, dwell: 0s}, rollback: {max_error_rate: 0, max_p99: 0s, max_mean_abs: 0, min_requests: 0}}}}`},
	}
	if got := Diff(a, b); !reflect.DeepEqual(got, want) {
		t.Errorf("Diff:\n%v\nwant\n%v", got, want)
	}
	if got := Diff(a, a); len(got) != 0 {
		t.Errorf("Diff(a, a) = %v", got)
	}
	// duplicate names (an invalid config) fall back to indices
	c := *a
	c.Models = []Model{a.Models[0], a.Models[0]}
	if got := Diff(a, &c); len(got) != 2 || got[0].Key != "models[1].name" || got[1].Key != "models[1].instances" || got[1].New != "2" {
		t.Errorf("Diff with duplicate names: %v", got)
	}
}

// Every key marked reload:"restart" shows as such in Diff.
func TestDiffMarksEveryRestartKey(t *testing.T) {
	a := Defaults()
	b := Defaults()
	b.Server = Server{Addr: ":1", ReadTimeout: 1, WriteTimeout: 1, IdleTimeout: 1, ShutdownTimeout: 1}
	b.Limits = Limits{MaxRequestSize: 1, QueueLen: 1, QueueTimeout: 1}
	b.Log = Log{Level: "error", Format: "console"}
	b.Repository = Repository{Path: "p", BackendDir: "d"}
	b.Engine = Engine{Seed: 1, Threads: 2, CPUThreads: 3}
	b.Batching = Batching{Enabled: false, MaxBatchSize: 2, MaxQueueDelay: 1, PreferredBatchSizes: []int{4}, PriorityLevels: 2, DefaultPriorityLevel: 1}
	b.Admin = Admin{TokenFile: "t", AllowUnauthenticated: true}
	b.Artifacts = Artifacts{TrustedKeys: []string{"k.pub"}}
	b.Metrics = Metrics{GPUInterval: 1}
	b.Tracing = Tracing{Enabled: true, Endpoint: "http://collector:4318", SamplingRatio: 0.5, ServiceName: "s"}
	b.SharedMemory = SharedMemory{Enabled: true, MaxRegions: 2, MaxBytes: 2}
	restart := map[string]bool{}
	for _, ch := range Diff(a, b) {
		restart[ch.Key] = ch.Restart
	}
	rootNode().leaves(func(n *node) {
		if n.path[0:6] == "models" {
			return
		}
		got, ok := restart[n.path]
		if !ok {
			t.Errorf("%s: no change reported", n.path)
		} else if got != n.restart {
			t.Errorf("%s: Restart = %v, want %v", n.path, got, n.restart)
		}
	})
	for key, want := range map[string]bool{"server.addr": true, "log.format": true, "log.level": false, "limits.queue_len": false,
		"repository.path": false, "repository.backend_dir": true, "engine.seed": false, "engine.cpu_threads": true, "admin.token_file": false, "admin.allow_unauthenticated": false, "artifacts.trusted_keys": false, "metrics.gpu_interval": true} {
		if restart[key] != want {
			t.Errorf("%s: Restart = %v, want %v", key, restart[key], want)
		}
	}
}
