package suite

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"
)

// server is a process the suite started and must stop: a policyd or a peer.
type server struct {
	name string
	addr string // 127.0.0.1:PORT
	log  string // its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// servers tracks every server started, so that all are stopped, by PID, whatever happens.
type servers struct {
	mu   sync.Mutex
	live map[*server]bool
}

// freePort asks the kernel for a free loopback port.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// start runs argv (with env added) logging to logPath and waits until GET /v2/health/ready on
// addr answers 200, the process exits, or readyTimeout passes.
func (ss *servers) start(ctx context.Context, name, addr string, argv, env []string, logPath string, readyTimeout time.Duration) (*server, error) {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Killed with us, should we die without running our deferred stops (SIGKILL).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &server{name: name, addr: addr, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { s.err = cmd.Wait(); close(s.done) }()
	ss.mu.Lock()
	if ss.live == nil {
		ss.live = map[*server]bool{}
	}
	ss.live[s] = true
	ss.mu.Unlock()

	deadline := time.Now().Add(readyTimeout)
	for {
		code, _, err := fasthttp.GetTimeout(nil, "http://"+addr+"/v2/health/ready", time.Second)
		if err == nil && code == 200 {
			return s, nil
		}
		select {
		case <-s.done:
			ss.stop(s)
			return nil, fmt.Errorf("%s exited during start-up (%v): %s", name, s.err, tail(logPath, 600))
		case <-ctx.Done():
			ss.stop(s)
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			ss.stop(s)
			return nil, fmt.Errorf("%s not ready on %s after %v: %s", name, addr, readyTimeout, tail(logPath, 600))
		}
	}
}

// pids is the server's PID and its direct children's (uvicorn workers), for CPU accounting.
func (s *server) pids() []int {
	pid := s.cmd.Process.Pid
	out := []int{pid}
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pid))
	for _, t := range tasks {
		b, _ := os.ReadFile(t)
		for _, f := range strings.Fields(string(b)) {
			if c, err := strconv.Atoi(f); err == nil {
				out = append(out, c)
			}
		}
	}
	return out
}

func (s *server) pid() int { return s.cmd.Process.Pid }

// stop sends SIGTERM to the server, waits up to 10 s, then SIGKILLs it and its children.
func (ss *servers) stop(s *server) {
	if s == nil {
		return
	}
	ss.mu.Lock()
	delete(ss.live, s)
	ss.mu.Unlock()
	kids := s.pids()[1:]
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
}

// stopAll stops every server still running.
func (ss *servers) stopAll() {
	ss.mu.Lock()
	var all []*server
	for s := range ss.live {
		all = append(all, s)
	}
	ss.mu.Unlock()
	for _, s := range all {
		ss.stop(s)
	}
}

// alive reports whether the server is still running.
func (s *server) alive() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// explain adds to a load error that the server is gone, when it is: the load's own error
// ("connection refused") does not say why.
func (s *server) explain(err error) error {
	if err == nil || s.alive() {
		return err
	}
	return fmt.Errorf("%w (%s exited: %v; log %s: %s)", err, s.name, s.err, s.log, tail(s.log, 300))
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

// metrics fetches the server's /metrics and returns the values of the named series (summed
// over their labels); a name absent from the exposition is absent from the map.
func metrics(addr string, names ...string) (map[string]float64, error) {
	code, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/metrics", 5*time.Second)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /metrics: status %d", code)
	}
	return parseMetrics(string(body), names...), nil
}

// parseMetrics reads Prometheus text exposition (with prometheus/common's parser): for each
// wanted name, the sum of its samples (gauges, counters, untyped). A name absent from the text
// is absent from the map. Text the parser refuses yields an empty map.
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
