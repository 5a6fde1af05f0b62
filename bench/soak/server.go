package soak

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/policyd/policyd/bench/proc"
)

// startPolicyd writes a config serving repo on a free loopback port (limits as given) and
// starts binary with env added, waiting until /v2/health/ready answers 200.
func startPolicyd(ctx context.Context, binary, dir, tag, repo string, models []string, env []string) (*proc.Proc, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "server:\n  addr: %q\n  grpc_addr: \"off\"\nrepository:\n  path: %q\nmodels:\n", addr, repo)
	for _, m := range models {
		fmt.Fprintf(&cfg, "  - name: %s\n", m)
	}
	cfgPath := filepath.Join(dir, tag+".yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return nil, err
	}
	s, err := proc.Start(proc.Spec{Name: "policyd", Addr: addr, Argv: []string{binary, "--config", cfgPath}, Env: env,
		Log: filepath.Join(dir, tag+".log")})
	if err != nil {
		return nil, err
	}
	if err := s.WaitReady(ctx, 60*time.Second); err != nil {
		s.Stop()
		return nil, err
	}
	return s, nil
}

// Status is what /proc/PID/status says of a process's memory and threads, bytes.
type Status struct {
	RSS     int64 `json:"rss_bytes"`      // VmRSS
	Peak    int64 `json:"peak_rss_bytes"` // VmHWM
	Anon    int64 `json:"rss_anon_bytes"` // RssAnon: heap, arenas, stacks
	File    int64 `json:"rss_file_bytes"` // RssFile: mapped files (the binary, libraries, models)
	Threads int   `json:"threads"`
}

// ReadStatus reads /proc/PID/status.
func ReadStatus(pid int) (Status, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Status{}, err
	}
	return parseStatus(string(raw))
}

func parseStatus(text string) (Status, error) {
	var s Status
	kb := map[string]*int64{"VmRSS": &s.RSS, "VmHWM": &s.Peak, "RssAnon": &s.Anon, "RssFile": &s.File}
	for _, line := range strings.Split(text, "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if k == "Threads" && len(f) == 1 {
			s.Threads, _ = strconv.Atoi(f[0])
			continue
		}
		dst, ok := kb[k]
		if !ok {
			continue
		}
		if len(f) != 2 || f[1] != "kB" {
			return s, fmt.Errorf("status: %s: unexpected %q", k, strings.TrimSpace(v))
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return s, fmt.Errorf("status: %s: %w", k, err)
		}
		*dst = n << 10
	}
	if s.RSS == 0 {
		return s, fmt.Errorf("status: no VmRSS")
	}
	return s, nil
}

// resetPeak resets the process's VmHWM to its current RSS (writing 5 to /proc/PID/clear_refs,
// Linux 4.0+), so that a later VmHWM is the peak since now.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}
