package suite

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/policyd/policyd/bench/proc"
)

// server is a process the suite started and must stop: a policyd or a peer.
type server struct {
	*proc.Proc
	GRPCAddr string // a policyd's gRPC listener, when it serves gRPC
}

// servers tracks every server started, so that all are stopped, by PID, whatever happens.
type servers struct {
	mu   sync.Mutex
	live map[*server]bool
}

// start runs argv (with env added) logging to logPath and waits until GET /v2/health/ready on
// addr answers 200, the process exits, or readyTimeout passes.
func (ss *servers) start(ctx context.Context, name, addr string, argv, env []string, logPath string, readyTimeout time.Duration) (*server, error) {
	p, err := proc.Start(proc.Spec{Name: name, Addr: addr, Argv: argv, Env: env, Log: logPath, Append: true})
	if err != nil {
		return nil, err
	}
	s := &server{Proc: p}
	ss.mu.Lock()
	if ss.live == nil {
		ss.live = map[*server]bool{}
	}
	ss.live[s] = true
	ss.mu.Unlock()
	if err := s.WaitReady(ctx, readyTimeout); err != nil {
		ss.stop(s)
		return nil, err
	}
	return s, nil
}

// stop stops the server (SIGTERM, then after 10 s SIGKILL, it and its children).
func (ss *servers) stop(s *server) {
	if s == nil {
		return
	}
	ss.mu.Lock()
	delete(ss.live, s)
	ss.mu.Unlock()
	s.Stop()
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

// explain adds to a load error that the server is gone, when it is: the load's own error
// ("connection refused") does not say why.
func (s *server) explain(err error) error {
	if err == nil || s.Alive() {
		return err
	}
	return fmt.Errorf("%w (%s exited: %v; log %s: %s)", err, s.Name, s.Err(), s.Log, proc.Tail(s.Log, 300))
}
