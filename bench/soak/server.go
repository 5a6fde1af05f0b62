package soak

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"
)

// server is a policyd this package started; stop ends it by its PID.
type server struct {
	addr string // 127.0.0.1:PORT
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// startPolicyd writes a config serving repo on a free loopback port (limits as given) and
// starts binary with env added, waiting until /v2/health/ready answers 200.
func startPolicyd(ctx context.Context, binary, dir, tag, repo string, models []string, env []string) (*server, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := l.Addr().String()
	l.Close()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "server:\n  addr: %q\nrepository:\n  path: %q\nmodels:\n", addr, repo)
	for _, m := range models {
		fmt.Fprintf(&cfg, "  - name: %s\n", m)
	}
	cfgPath := filepath.Join(dir, tag+".yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o644); err != nil {
		return nil, err
	}
	logPath := filepath.Join(dir, tag+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(binary, "--config", cfgPath)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with us
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", binary, err)
	}
	s := &server{addr: addr, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, _, err := fasthttp.GetTimeout(nil, "http://"+addr+"/v2/health/ready", time.Second)
		if err == nil && code == 200 {
			return s, nil
		}
		select {
		case <-s.done:
			return nil, fmt.Errorf("policyd exited during start-up (%v): %s", s.err, tail(logPath, 600))
		case <-ctx.Done():
			s.stop()
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("policyd not ready on %s after 60s: %s", addr, tail(logPath, 600))
		}
	}
}

func (s *server) pid() int { return s.cmd.Process.Pid }

func (s *server) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM to the server's PID, waits up to 10 s, then SIGKILLs it.
func (s *server) stop() {
	if s == nil || !s.alive() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// tail is the last n bytes of a file, on one line.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.Join(strings.Fields(string(b)), " ")
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

// scrape fetches the server's /metrics and returns the values of the named series, summed
// over their labels; a name absent from the exposition is absent from the map.
func scrape(addr string, names ...string) (map[string]float64, error) {
	code, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/metrics", 5*time.Second)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /metrics: status %d", code)
	}
	return parseMetrics(string(body), names...), nil
}

func parseMetrics(text string, names ...string) map[string]float64 {
	out := map[string]float64{}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return out
	}
	for _, n := range names {
		mf, ok := families[n]
		if !ok {
			continue
		}
		sum := 0.0
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Untyped != nil:
				sum += m.GetUntyped().GetValue()
			}
		}
		out[n] = sum
	}
	return out
}
