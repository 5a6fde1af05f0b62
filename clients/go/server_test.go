//go:build cgo

package policyd

// Test harness: build the real policyd binary once (or take $POLICYD_BIN), serve a temporary
// repository on free loopback ports (HTTP and gRPC), as cmd/policyd/e2e_test.go does.

import (
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/policyd/policyd/internal/e2etest"
)

// repoRoot is the repository root, seen from this package's folder.
const repoRoot = "../.."

func policydBinary(tb testing.TB) string {
	return e2etest.PolicydBinary(tb)
}

// linkModel adds model (a path relative to the repository root) to repo as <id>@1.0.0.
func linkModel(tb testing.TB, repo, id, model string) {
	tb.Helper()
	e2etest.LinkModel(tb, repoRoot, repo, id, model, "client test")
}

// daemon is a running policyd.
type daemon struct {
	url      string // http://HOST:PORT
	grpcAddr string // HOST:PORT
	cmd      *exec.Cmd
	stderr   *bytes.Buffer
	mu       *sync.Mutex
	exited   chan error
	once     sync.Once
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// startDaemon serves repo (or, with config non-empty, the YAML config whose repository path
// is repo) and waits for the end of its first load.
func startDaemon(tb testing.TB, repo, config string, extra ...string) *daemon {
	tb.Helper()
	addr, grpcAddr := freeAddr(tb), freeAddr(tb)
	args := []string{"--addr", addr, "--grpc-addr", grpcAddr, "--engine.cpu-threads", "1", "--log-level", "warn"}
	if config != "" {
		f := filepath.Join(tb.TempDir(), "policyd.yaml")
		if err := os.WriteFile(f, []byte("repository: {path: "+repo+"}\n"+config), 0o644); err != nil {
			tb.Fatal(err)
		}
		args = append([]string{"--config", f}, args...)
	} else {
		args = append([]string{"--repository", repo}, args...)
	}
	cmd := exec.Command(policydBinary(tb), append(args, extra...)...)
	d := &daemon{url: "http://" + addr, grpcAddr: grpcAddr, cmd: cmd, stderr: &bytes.Buffer{}, mu: &sync.Mutex{}, exited: make(chan error, 1)}
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { d.mu.Lock(); defer d.mu.Unlock(); return d.stderr.Write(p) })
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { d.exited <- cmd.Wait() }()
	tb.Cleanup(func() {
		d.stop(tb)
		if tb.Failed() {
			d.mu.Lock()
			tb.Logf("policyd stderr:\n%s", d.stderr.String())
			d.mu.Unlock()
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for {
		select {
		case err := <-d.exited:
			d.exited <- err
			d.mu.Lock()
			defer d.mu.Unlock()
			tb.Fatalf("policyd exited during start-up: %v\n%s", err, d.stderr.String())
		default:
		}
		resp, err := http.Get(d.url + "/v2/health/ready")
		if err == nil {
			resp.Body.Close()
			if !strings.HasPrefix(resp.Header.Get("X-Not-Ready-Reason"), "starting") {
				return d
			}
		}
		if time.Now().After(deadline) {
			tb.Fatal("policyd did not answer within 3 minutes")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (d *daemon) stop(tb testing.TB) {
	tb.Helper()
	d.once.Do(func() {
		_ = d.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-d.exited:
			if err != nil {
				tb.Errorf("policyd exit after SIGTERM: %v", err)
			}
		case <-time.After(60 * time.Second):
			d.cmd.Process.Kill()
			tb.Error("policyd did not exit within 60s of SIGTERM")
		}
	})
}

// stats returns the success and fail counts of model's version 1.0.0, read with plain
// net/http (not the client under test).
func (d *daemon) stats(tb testing.TB, model string) (success, fail int64) {
	tb.Helper()
	resp, err := http.Get(d.url + "/v2/models/" + model + "/versions/1.0.0/stats")
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var s struct {
		ModelStats []struct {
			InferenceStats struct {
				Success struct{ Count int64 } `json:"success"`
				Fail    struct{ Count int64 } `json:"fail"`
			} `json:"inference_stats"`
		} `json:"model_stats"`
	}
	if err := json.Unmarshal(b, &s); err != nil || len(s.ModelStats) != 1 {
		tb.Fatalf("stats of %s: %v %s", model, err, b)
	}
	return s.ModelStats[0].InferenceStats.Success.Count, s.ModelStats[0].InferenceStats.Fail.Count
}
