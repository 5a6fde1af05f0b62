// Package proc starts the servers a benchmark measures (policyd, its peers) as child
// processes on loopback, waits until they answer, stops them by PID and reads their logs.
package proc

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

	"github.com/valyala/fasthttp"
)

// Spec says how to start a server.
type Spec struct {
	Name   string   // in errors: "policyd", "node"
	Addr   string   // 127.0.0.1:PORT it listens on
	Argv   []string // the binary and its arguments
	Env    []string // added to this process's environment
	Log    string   // the file its stdout and stderr go to (its folder is created)
	Append bool     // append to Log rather than truncate it
}

// Proc is a server process that Start started; Stop ends it by its PID. Its methods are safe
// for concurrent use.
type Proc struct {
	Name string
	Addr string // 127.0.0.1:PORT
	Log  string // its stdout and stderr
	cmd  *exec.Cmd
	done chan struct{}
	err  error // of Wait, valid once done is closed
}

// FreePort asks the kernel for a free loopback port.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start starts the process of s. It is killed with us, should we die without stopping it
// (SIGKILL through Pdeathsig).
func Start(s Spec) (*Proc, error) {
	if err := os.MkdirAll(filepath.Dir(s.Log), 0o755); err != nil {
		return nil, err
	}
	mode := os.O_CREATE | os.O_WRONLY | os.O_TRUNC
	if s.Append {
		mode = os.O_CREATE | os.O_WRONLY | os.O_APPEND
	}
	logf, err := os.OpenFile(s.Log, mode, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(s.Argv[0], s.Argv[1:]...)
	cmd.Env = append(os.Environ(), s.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Name, err)
	}
	p := &Proc{Name: s.Name, Addr: s.Addr, Log: s.Log, cmd: cmd, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); close(p.done) }()
	return p, nil
}

// WaitReady polls GET /v2/health/ready until it answers 200; it fails when the process exits,
// ctx ends or timeout passes. It leaves the process running: the caller stops it.
func (p *Proc) WaitReady(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		code, _, err := fasthttp.GetTimeout(nil, "http://"+p.Addr+"/v2/health/ready", time.Second)
		if err == nil && code == 200 {
			return nil
		}
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during start-up (%v): %s", p.Name, p.err, Tail(p.Log, 600))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready on %s after %v: %s", p.Name, p.Addr, timeout, Tail(p.Log, 600))
		}
	}
}

// PID is the process's ID.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// PIDs is the process's PID and its direct children's (uvicorn workers), for CPU accounting.
func (p *Proc) PIDs() []int {
	pid := p.cmd.Process.Pid
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

// Alive reports whether the process is still running.
func (p *Proc) Alive() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Err is how the process ended (of Wait); nil while it runs.
func (p *Proc) Err() error {
	if p.Alive() {
		return nil
	}
	return p.err
}

// Stop sends SIGTERM to the process, waits up to 10 s, then SIGKILLs it and the children it
// had. A nil or ended Proc is left alone.
func (p *Proc) Stop() {
	if p == nil || !p.Alive() {
		return
	}
	kids := p.PIDs()[1:]
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
	for _, k := range kids {
		_ = syscall.Kill(k, syscall.SIGKILL)
	}
}

// Tail is the last n bytes of a file, on one line.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(no log: " + err.Error() + ")"
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return strings.Join(strings.Fields(string(b)), " ")
}

// AbsPaths makes the paths absolute (an empty one stays empty): a server's config file's
// relative paths are relative to its folder, not to ours.
func AbsPaths(ps ...*string) error {
	for _, p := range ps {
		if *p == "" {
			continue
		}
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	return nil
}
