// Command policyd serves the ONNX policies of a model repository over HTTP and gRPC (KServe v2 /
// Open Inference Protocol; gRPC on server.grpc_addr, default 127.0.0.1:8001).
//
// Usage:
//
//	policyd --repository DIR [--addr 127.0.0.1:8000] [--grpc-addr 127.0.0.1:8001] [--backend-dir DIR] ...
//	policyd --config FILE [--profile NAME] [--KEY VALUE ...]
//
// Every configuration key is also a flag (--models.0.instances, --engine.cpu-threads; the list:
// docs/configuration.md); the short flags above are aliases of theirs. The repository is laid
// out DIR/<model>/<MAJOR.MINOR.PATCH>/{manifest.json, model.onnx, ...}, versions being semantic
// versions (1.2.3; v1.2.3 names the same one). Without models in the configuration every
// version found is loaded; one that fails (or fails artifact verification) is reported (log,
// /v2/health/ready, its ready endpoint, health details) while the others serve.
//
// The configuration is reloaded on a change of its files or the admin token file, on SIGHUP and
// on POST /v2/admin/reload (package reload). policyd stops on SIGINT or SIGTERM: it stops
// accepting connections, answers the requests in flight (up to server.shutdown_timeout), closes
// the engines, and exits 0. A reload in progress does not hold shutdown back: its load is
// abandoned with the process.
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
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/gpu"
	"github.com/policyd/policyd/metrics"
	"github.com/policyd/policyd/reload"
	"github.com/policyd/policyd/repository"
	"github.com/policyd/policyd/server"
	"github.com/policyd/policyd/tracing"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, nil))
}

// flags is what the command line says beyond the configuration keys.
type flags struct {
	load        config.LoadOptions
	printConfig bool
	checkConfig bool
	version     bool
}

// shortFlags are the flags of the first policyd releases, kept as aliases of their keys.
var shortFlags = []struct{ name, key, usage string }{
	{"repository", "repository.path", "model repository `DIR`, laid out DIR/<model>/<version>/model.onnx"},
	{"addr", "server.addr", "listen address `HOST:PORT` (default 127.0.0.1:8000)"},
	{"grpc-addr", "server.grpc_addr", "gRPC listen address `HOST:PORT` (default 127.0.0.1:8001; off: no gRPC)"},
	{"backend-dir", "repository.backend_dir", "folder of the backend plugins (default: beside libpolicyd)"},
	{"log-level", "log.level", "log level: debug, info, warn or error"},
	{"seed", "engine.seed", "base seed of random operators; instance i of a version uses seed+i"},
	{"threads", "engine.threads", "threads of each engine instance"},
	{"queue-len", "limits.queue_len", "requests waiting per engine instance before 503"},
	{"max-request-size", "limits.max_request_size", "largest request body (64MiB, 512KiB, bytes); larger gets 413"},
	{"shutdown-timeout", "server.shutdown_timeout", "how long shutdown waits for requests in flight"},
}

func parseFlags(args []string, stderr io.Writer) (flags, error) {
	var f flags
	fs := flag.NewFlagSet("policyd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: policyd [--config FILE [--profile NAME]] [flags]\n\n"+
			"Configuration layers, lowest first: defaults < --config file < profile overlay\n"+
			"(<file>.<profile>.<ext>) < .env < POLICYD_* environment < flags. Every key: docs/configuration.md.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&f.load.File, "config", "", "configuration `FILE` (YAML or JSON); watched and reloaded on change and on SIGHUP")
	fs.StringVar(&f.load.Profile, "profile", "", "profile `NAME`: overlays <file>.<NAME>.<ext> (default $POLICYD_PROFILE)")
	fs.BoolVar(&f.printConfig, "print-config", false, "print the merged configuration with each value's source, secrets redacted, and exit")
	fs.BoolVar(&f.checkConfig, "check-config", false, "validate the configuration, print every problem, and exit (non-zero when invalid)")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	short := map[string]*string{}
	for _, sf := range shortFlags {
		short[sf.name] = fs.String(sf.name, "", sf.usage+" (= --"+config.FlagName(sf.key)+")")
	}
	keyed := config.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return f, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "policyd: unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return f, &usageError{[]string{"unexpected arguments: " + strings.Join(fs.Args(), " ")}}
	}
	f.load.Flags = keyed()
	f.load.FlagNames = map[string]string{}
	set := map[string]bool{}
	fs.Visit(func(fl *flag.Flag) { set[fl.Name] = true })
	for _, sf := range shortFlags {
		if set[sf.name] {
			f.load.Flags[sf.key] = *short[sf.name]
			f.load.FlagNames[sf.key] = sf.name
		}
	}
	return f, nil
}

// usageError is a command line the flag package accepted but policyd does not.
type usageError struct{ problems []string }

func (e *usageError) Error() string { return strings.Join(e.problems, "; ") }

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func levelOf(s string) zapcore.Level {
	var l zapcore.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return zapcore.InfoLevel
	}
	return l
}

// newLogger builds the process logger: JSON (or console) lines on w at a level that can
// change while running. Lines are buffered (256 KiB, written at least every 100 ms and by
// Sync): an access line per request would otherwise cost a write system call per request,
// 3–15 µs of a batch-1 request's latency and a tenth of the throughput at 16 connections on
// the 2-core VM (docs/observability.md, Logs). The caller must Sync before exiting.
func newLogger(c *config.Config, w io.Writer) (*zap.Logger, zap.AtomicLevel) {
	level := zap.NewAtomicLevelAt(levelOf(c.Log.Level))
	ec := zap.NewProductionEncoderConfig()
	ec.TimeKey = "ts"
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	enc := zapcore.NewJSONEncoder(ec)
	if c.Log.Format == "console" {
		enc = zapcore.NewConsoleEncoder(ec)
	}
	ws := &zapcore.BufferedWriteSyncer{WS: zapcore.AddSync(w), Size: 256 << 10, FlushInterval: 100 * time.Millisecond}
	return zap.New(zapcore.NewCore(enc, ws, level)), level
}

func run(args []string, stdout, stderr io.Writer, stop <-chan struct{}) int {
	f, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if f.version {
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

	// Configuration: every problem at once, and nothing starts on an invalid one.
	cfg, src, err := config.Load(f.load)
	if f.printConfig && cfg != nil {
		fmt.Fprint(stdout, config.Print(cfg, src))
	}
	if err != nil {
		fmt.Fprintf(stderr, "policyd: invalid configuration:\n%v\n", err)
		return 2
	}
	if f.checkConfig {
		fmt.Fprintln(stdout, "configuration ok")
		return 0
	}
	if f.printConfig {
		return 0
	}

	log, level := newLogger(cfg, stderr)
	defer log.Sync()
	if err := bridge.Available(); err != nil {
		log.Error("native library unavailable", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: %v\n", err)
		return 1
	}
	bridge.SetLogger(server.NativeLog(log.Named("native")))
	defer bridge.SetLogger(nil)
	major, minor := bridge.APIVersion()
	log.Info("starting", zap.String("version", versionString()), zap.String("library", bridge.LibraryVersion()),
		zap.String("abi", fmt.Sprintf("%d.%d", major, minor)), zap.String("config", f.load.File),
		zap.String("profile", f.load.Profile), zap.String("repository", cfg.Repository.Path),
		zap.String("addr", cfg.Server.Addr))

	start := time.Now()
	rt, err := bridge.NewRuntime(cfg.Repository.BackendDir)
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
	abandoned := false // a reload was still loading at shutdown: the repository and runtime stay open
	defer func() {
		if abandoned {
			return
		}
		t := time.Now()
		rt.Close()
		log.Info("runtime closed", zap.Duration("took", time.Since(t)))
	}()

	start = time.Now()
	repo := repository.NewRepository(rt, log)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The server's families follow the repository from its first load on; the request path
	// (server.Options.OnRequest) adds one observation per answered inference request.
	mets, err := metrics.New(reg, repo)
	if err != nil {
		log.Error("metrics", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: metrics: %v\n", err)
		return 1
	}
	gpus, err := gpu.New(log.Named("gpu"), cfg.Metrics.GPUInterval, reg)
	if err != nil {
		log.Error("GPU metrics", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: GPU metrics: %v\n", err)
		return 1
	}
	gpus.Start()
	defer gpus.Close()
	reloadMets, err := metrics.NewReload(reg)
	if err != nil {
		log.Error("metrics", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: metrics: %v\n", err)
		return 1
	}
	shadowMets, err := metrics.NewShadow(reg)
	if err != nil {
		log.Error("metrics", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: metrics: %v\n", err)
		return 1
	}
	// Traffic policies (docs/rollout.md): their families, and the gates evaluated every second
	// (each policy at its own gates.interval) until the process stops.
	trafficMets, err := metrics.NewTraffic(reg, repo)
	if err != nil {
		log.Error("metrics", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: metrics: %v\n", err)
		return 1
	}
	var srvp atomic.Pointer[server.Server] // set once the server exists, for the reloads' body limit
	// The gates read the shadow's numbers from the server (once it exists).
	gates := repository.NewGates(repo, repository.GatesOptions{OnAction: trafficMets.GateAction,
		Shadow: func(model, primary, candidate string) repository.ShadowReport {
			s := srvp.Load()
			if s == nil {
				return repository.ShadowReport{Agreement: 1}
			}
			r := s.ShadowReport(model, primary, candidate)
			return repository.ShadowReport{Samples: r.Samples, Errors: r.Errors, MeanAbs: r.MeanAbs,
				MaxAbs: r.MaxAbs, MaxRel: r.MaxRel, Agreement: r.Agreement}
		}})
	gatesCtx, stopGates := context.WithCancel(context.Background())
	defer stopGates()
	go gates.Run(gatesCtx, time.Second)
	rl := reload.New(reload.Options{Load: f.load, Log: log, Level: level, Repo: repo, Metrics: reloadMets,
		OnApply: func(c *config.Config) {
			if s := srvp.Load(); s != nil {
				s.SetMaxRequestBodySize(int(c.Limits.MaxRequestSize))
			}
		}}, cfg, src)
	defer rl.Close()
	if _, err := reload.TrustedKeys(cfg); err != nil {
		log.Error("trusted keys", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: %v\n", err)
		return 2
	}
	hd := &health{load: f.load, rl: rl, repo: repo, rt: rt, gpus: gpus, started: time.Now()}
	// Tracing (off by default): spans exported over OTLP/HTTP, flushed after the HTTP server stops.
	tp, err := tracing.New(tracing.Config{Enabled: cfg.Tracing.Enabled, Endpoint: cfg.Tracing.Endpoint,
		SamplingRatio: cfg.Tracing.SamplingRatio, ServiceName: cfg.Tracing.ServiceName, ServiceVersion: versionString(),
		OnError: func(err error) { log.Warn("tracing: export failed", zap.Error(err)) }})
	if err != nil {
		log.Error("tracing", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: %v\n", err)
		return 2
	}
	if tp != nil {
		log.Info("tracing", zap.String("endpoint", cfg.Tracing.Endpoint), zap.Float64("sampling_ratio", cfg.Tracing.SamplingRatio))
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := tp.Shutdown(ctx); err != nil {
				log.Warn("tracing: spans not exported at shutdown", zap.Error(err))
			}
		}()
	}

	srv := server.New(server.NewRegistry(repo), log, server.Options{
		AccessLog: cfg.Log.Access,
		Tracer:    tp.TracerProvider(),
		OnRequest: func(ri *server.RequestInfo) {
			mets.ObserveRequest(ri.Model, ri.Version, ri.Protocol, ri.Status,
				metrics.OutcomeOf(ri.Status, ri.RetryAfter, ri.TimedOut), ri.Latency)
			if ri.Fallback != "" {
				mets.ObserveFallback(ri.Model, ri.Version, ri.Fallback, ri.FallbackReason)
			}
		},
		Version:            versionString(),
		MaxRequestBodySize: int(cfg.Limits.MaxRequestSize),
		ReadTimeout:        cfg.Server.ReadTimeout,
		WriteTimeout:       cfg.Server.WriteTimeout,
		IdleTimeout:        cfg.Server.IdleTimeout,
		QueueTimeout:       cfg.Limits.QueueTimeout,
		CompressMinBytes:   compressMin(cfg.Server.CompressMin),
		// Shadow evaluation: Shadow names a model's shadow version and rate; the traffic
		// policy (models[].traffic.shadow) provides it.
		Shadow:         repo.ShadowOf,
		ShadowMetrics:  shadowMets,
		ShadowCPUShare: cfg.Server.ShadowCPUShare,
		ShadowQueueLen: cfg.Server.ShadowQueueLen,
		SharedMemory: server.SharedMemoryOptions{Enabled: cfg.SharedMemory.Enabled,
			MaxRegions: cfg.SharedMemory.MaxRegions, MaxBytes: int64(cfg.SharedMemory.MaxBytes), CUDA: rt},
		Admin: server.Admin{
			Reload:               func() (any, error) { return rl.Reload("admin API") },
			Token:                rl.Token,
			AllowUnauthenticated: rl.AllowUnauthenticated,
			Details:              hd.details,
			Metrics:              fasthttpadaptor.NewFastHTTPHandler(promhttp.HandlerFor(reg, promhttp.HandlerOpts{})),
			Repository:           repo,
			Traffic:              repo,
		},
	})
	srvp.Store(srv)
	hd.shadows = srv.ShadowStatuses
	ln, err := net.Listen("tcp", cfg.Server.Addr)
	if err != nil {
		log.Error("listen", zap.String("addr", cfg.Server.Addr), zap.Error(err))
		fmt.Fprintf(stderr, "policyd: listen %s: %v\n", cfg.Server.Addr, err)
		return 1
	}
	var gln net.Listener
	if config.GRPCEnabled(cfg.Server.GRPCAddr) {
		if gln, err = net.Listen("tcp", cfg.Server.GRPCAddr); err != nil {
			ln.Close()
			log.Error("listen gRPC", zap.String("addr", cfg.Server.GRPCAddr), zap.Error(err))
			fmt.Fprintf(stderr, "policyd: listen gRPC %s (server.grpc_addr; \"off\" turns gRPC off): %v\n", cfg.Server.GRPCAddr, err)
			return 1
		}
	}
	served := make(chan error, 2)
	srv.SetStarting(true)
	go func() { served <- srv.Serve(ln) }()
	log.Info("serving", zap.String("addr", ln.Addr().String()))
	if gln != nil {
		go func() { served <- srv.ServeGRPC(gln) }()
		log.Info("serving gRPC", zap.String("addr", gln.Addr().String()))
	}
	switch tcp, _ := ln.Addr().(*net.TCPAddr); {
	case rl.Token() != "":
	case rl.AllowUnauthenticated() && (tcp == nil || !tcp.IP.IsLoopback()):
		log.Warn("admin.allow_unauthenticated on a non-loopback address: anyone who reaches it can reload, unload every model and read the health details; set admin.token_file",
			zap.String("addr", ln.Addr().String()))
	case !rl.AllowUnauthenticated() && cfg.Admin.TokenFile == "":
		log.Info("no admin.token_file: /v2/admin/*, repository load/unload and health details answer 403")
	}

	// The first load runs while the server listens: live answers 200, ready answers false
	// ("starting") until every version is loaded and warmed up (docs/operators.md).
	rep, err := rl.Load()
	if err != nil {
		log.Error("model repository", zap.Error(err))
		fmt.Fprintf(stderr, "policyd: %v\n", err)
		ctx, cancel := context.WithTimeout(context.Background(), cfg.Server.ShutdownTimeout)
		_ = srv.Shutdown(ctx)
		cancel()
		return 1
	}
	srv.SetStarting(false)
	log.Info("repository loaded", zap.Int("versions", len(rep.Loaded)+len(rep.Failed)), zap.Int("ready", len(rep.Loaded)),
		zap.Int("unavailable", len(rep.Failed)), zap.Duration("took", time.Since(start)))
	if len(rep.Loaded)+len(rep.Failed) == 0 {
		log.Warn("the repository holds no model version", zap.String("repository", cfg.Repository.Path))
	}
	defer func() {
		if abandoned {
			return
		}
		t := time.Now()
		repo.Close()
		log.Info("repository closed", zap.Duration("took", time.Since(t)))
	}()
	rl.Watch()

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	code := 0
wait:
	for {
		select {
		case s := <-sigs:
			if s == syscall.SIGHUP {
				rl.Trigger("SIGHUP") // on the reloader's goroutine: SIGTERM stays heard
				continue
			}
			log.Info("stopping", zap.String("signal", s.String()))
			break wait
		case <-stop:
			log.Info("stopping")
			break wait
		case err := <-served:
			log.Error("server failed", zap.Error(err))
			code = 1
			break wait
		}
	}

	// Shutdown waits for no reload: Close releases an admin reload's caller, so the HTTP drain
	// does not wait for it either.
	t := time.Now()
	rl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), rl.Config().Server.ShutdownTimeout)
	if err := srv.Shutdown(ctx); err != nil {
		log.Warn("HTTP/gRPC shutdown incomplete", zap.Error(err))
	}
	cancel()
	log.Info("HTTP and gRPC servers stopped", zap.Duration("took", time.Since(t)))
	if rl.Busy() {
		// The repository is loading for a reload (an engine build, maybe): closing it would wait
		// for the load, and closing the runtime under it is not safe. The process exits instead.
		abandoned = true
		log.Warn("stopping with a configuration reload in progress: its load is abandoned")
	}
	return code
}

// compressMin is server.compress_min_bytes as server.Options wants it: 0 (off) is negative.
func compressMin(n config.Size) int {
	if n == 0 {
		return -1
	}
	return int(n)
}
