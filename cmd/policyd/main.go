// Command policyd serves the ONNX policies of a model repository over HTTP (KServe v2 / Open
// Inference Protocol).
//
// Usage:
//
//	policyd --repository DIR [--addr 127.0.0.1:8000] [--instances N] [--backend-dir DIR] ...
//
// The repository is laid out DIR/<model>/<version>/model.onnx, versions being semantic versions
// (1.2.3, v1.2.3) or integers (1, 2). Every version found is loaded; one that fails is reported
// (log, /v2/health/ready, its ready endpoint) while the others serve.
//
// policyd stops on SIGINT or SIGTERM: it stops accepting connections, answers the requests in
// flight (up to --shutdown-timeout), closes the engines, and exits 0.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// config is what the flags say.
type config struct {
	repository      string
	addr            string
	backendDir      string
	backend         string
	instances       int
	queueLen        int
	seed            uint64
	maxBodySize     int
	shutdownTimeout time.Duration
	logLevel        string
	version         bool
}

// maxDefaultInstances caps the default of --instances: one context per core serves a single
// hot model best, but every model version gets its own pool, and each context holds its own
// memory plan per shape bucket, so a repository of many models would multiply a large count.
const maxDefaultInstances = 8

func defaultInstances() int { return min(runtime.NumCPU(), maxDefaultInstances) }

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("policyd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.repository, "repository", "", "model repository `DIR`, laid out DIR/<model>/<version>/model.onnx (required)")
	fs.StringVar(&c.addr, "addr", "127.0.0.1:8000", "listen address `HOST:PORT`")
	fs.StringVar(&c.backendDir, "backend-dir", "", "folder of the backend plugins (default: beside libpolicyd)")
	fs.StringVar(&c.backend, "backend", "", `backend to build engines for (default: the library's, "cpu")`)
	fs.IntVar(&c.instances, "instances", defaultInstances(),
		fmt.Sprintf("engine contexts (worker threads) per model version; default min(CPUs, %d)", maxDefaultInstances))
	fs.IntVar(&c.queueLen, "queue-len", 0, "requests waiting per model version before 503 (default 64 per instance)")
	fs.Uint64Var(&c.seed, "seed", 0, "base seed of random operators; worker i of each version uses seed+i")
	fs.IntVar(&c.maxBodySize, "max-request-size", server.DefaultMaxRequestBodySize, "largest request body in `bytes`; larger gets 413")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 30*time.Second, "how long shutdown waits for requests in flight")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.version {
		return c, nil
	}
	var problems []string
	if fs.NArg() > 0 {
		problems = append(problems, fmt.Sprintf("unexpected arguments: %s", strings.Join(fs.Args(), " ")))
	}
	if c.repository == "" {
		problems = append(problems, "--repository is required: the model repository folder (DIR/<model>/<version>/model.onnx)")
	} else if fi, err := os.Stat(c.repository); err != nil {
		problems = append(problems, fmt.Sprintf("--repository %s: %v", c.repository, unwrapPath(err)))
	} else if !fi.IsDir() {
		problems = append(problems, fmt.Sprintf("--repository %s: not a directory", c.repository))
	}
	if _, _, err := net.SplitHostPort(c.addr); err != nil {
		problems = append(problems, fmt.Sprintf("--addr %q: %v", c.addr, err))
	}
	if c.instances < 1 {
		problems = append(problems, fmt.Sprintf("--instances %d: must be at least 1", c.instances))
	}
	if c.queueLen < 0 {
		problems = append(problems, fmt.Sprintf("--queue-len %d: must not be negative", c.queueLen))
	}
	if c.maxBodySize < 1 {
		problems = append(problems, fmt.Sprintf("--max-request-size %d: must be positive", c.maxBodySize))
	}
	if c.shutdownTimeout <= 0 {
		problems = append(problems, fmt.Sprintf("--shutdown-timeout %s: must be positive", c.shutdownTimeout))
	}
	if _, err := zapcore.ParseLevel(c.logLevel); err != nil || c.logLevel == "" {
		problems = append(problems, fmt.Sprintf("--log-level %q: want debug, info, warn or error", c.logLevel))
	}
	if len(problems) > 0 {
		return c, &usageError{problems}
	}
	return c, nil
}

// usageError lists every problem of the command line at once.
type usageError struct{ problems []string }

func (e *usageError) Error() string { return strings.Join(e.problems, "; ") }

func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func newLogger(level string, w io.Writer) *zap.Logger {
	lvl, _ := zapcore.ParseLevel(level)
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(w)), lvl)
	return zap.New(core, zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w))))
}

// run is main without the exit: flags, native runtime, repository, HTTP server, signals, and
// shutdown in reverse order. stop, when not nil, replaces SIGINT/SIGTERM (tests).
func run(args []string, stdout, stderr io.Writer, stop <-chan struct{}) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		var ue *usageError
		if errors.As(err, &ue) { // the flag package reports its own parse errors
			for _, p := range ue.problems {
				fmt.Fprintf(stderr, "policyd: %s\n", p)
			}
		}
		return 2
	}
	if cfg.version {
		lib := "unavailable (built without cgo)"
		if bridge.Available() == nil {
			major, minor := bridge.APIVersion()
			lib = fmt.Sprintf("%s (ABI %d.%d)", bridge.LibraryVersion(), major, minor)
		} else if err := bridge.Available(); !errors.Is(err, bridge.ErrUnavailable) {
			lib = err.Error()
		}
		fmt.Fprintf(stdout, "policyd %s, libpolicyd %s, %s\n", versionString(), lib, runtime.Version())
		return 0
	}

	log := newLogger(cfg.logLevel, stderr)
	defer log.Sync()
	if err := bridge.Available(); err != nil {
		log.Error("native library unavailable", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: %v\n", err)
		return 1
	}
	native := log.Named("native")
	bridge.SetLogger(func(level bridge.LogLevel, msg string) {
		switch level {
		case bridge.LogDebug:
			native.Debug(msg)
		case bridge.LogInfo:
			native.Info(msg)
		case bridge.LogWarn:
			native.Warn(msg)
		default:
			native.Error(msg)
		}
	})
	defer bridge.SetLogger(nil)
	major, minor := bridge.APIVersion()
	log.Info("starting", zap.String("version", versionString()), zap.String("library", bridge.LibraryVersion()),
		zap.String("abi", fmt.Sprintf("%d.%d", major, minor)), zap.String("repository", cfg.repository),
		zap.String("addr", cfg.addr), zap.Int("instances", cfg.instances))

	start := time.Now()
	rt, err := bridge.NewRuntime(cfg.backendDir)
	if err != nil {
		log.Error("native runtime", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: native runtime: %v\n", err)
		return 1
	}
	for _, b := range rt.Backends() {
		log.Info("backend", zap.String("name", b.Name), zap.String("version", b.Version), zap.String("path", b.Path),
			zap.Bool("available", b.Available), zap.String("reason", b.Reason))
	}
	log.Info("runtime ready", zap.Duration("took", time.Since(start)))
	defer func() {
		t := time.Now()
		rt.Close()
		log.Info("runtime closed", zap.Duration("took", time.Since(t)))
	}()

	start = time.Now()
	repo, err := engines.OpenRepository(rt, cfg.repository, engines.RepositoryOptions{
		Pool:    engines.PoolOptions{Instances: cfg.instances, QueueLen: cfg.queueLen, Seed: cfg.seed},
		Backend: cfg.backend,
		Logger:  log,
	})
	if err != nil {
		log.Error("model repository", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: %v\n", err)
		return 1
	}
	ready, total := 0, 0
	for _, v := range repo.All() {
		total++
		if ok, _ := v.Ready(); ok {
			ready++
		}
	}
	log.Info("repository loaded", zap.Int("versions", total), zap.Int("ready", ready),
		zap.Int("unavailable", total-ready), zap.Duration("took", time.Since(start)))
	if total == 0 {
		log.Warn("the repository holds no model version", zap.String("repository", cfg.repository))
	}
	defer func() {
		t := time.Now()
		repo.Close()
		log.Info("repository closed", zap.Duration("took", time.Since(t)))
	}()

	srv := server.New(server.NewRegistry(repo), log, server.Options{
		Version: versionString(), MaxRequestBodySize: cfg.maxBodySize,
	})
	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		log.Error("listen", zap.String("addr", cfg.addr), zap.Error(err))
		fmt.Fprintf(stderr, "policyd: listen %s: %v\n", cfg.addr, err)
		return 1
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", zap.String("addr", ln.Addr().String()))

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	code := 0
	select {
	case s := <-sigs:
		log.Info("stopping", zap.String("signal", s.String()))
	case <-stop:
		log.Info("stopping")
	case err := <-served:
		log.Error("server failed", zap.Error(err))
		code = 1
	}

	t := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), cfg.shutdownTimeout)
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("HTTP shutdown incomplete", zap.Error(err))
	}
	cancel()
	log.Info("HTTP server stopped", zap.Duration("took", time.Since(t)))
	return code
}
