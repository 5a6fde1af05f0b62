// Package server is policyd's HTTP and gRPC API: the KServe v2 / Open Inference Protocol over
// fasthttp, with JSON requests read in place (jsonscan.go: no tree of the body is built) straight
// into the engine's input buffers and responses encoded straight from the engine's output memory;
// and over gRPC (grpc.go: inference.GRPCInferenceService with Triton's extensions, grpc.health.v1,
// reflection; ServeGRPC), through the same inference path.
//
// Routes:
//
//	GET  /v2                                          server metadata
//	GET  /v2/health/live                              200 while the process serves
//	GET  /v2/health/ready                             200 when every model version found is ready, else 400
//	GET  /v2/models/{m}[/versions/{v}]                model metadata
//	GET  /v2/models/{m}[/versions/{v}]/ready          200, else 400 (404: unknown model or version)
//	GET  /v2/models/{m}[/versions/{v}]/config         model configuration (Triton's extension; config.go)
//	POST /v2/models/{m}[/versions/{v}]/infer          inference
//	GET  /v2/models[/{m}[/versions/{v}]]/stats        statistics (Triton's statistics extension)
//	GET  /v2/systemsharedmemory[/region/{r}]/status   Triton's system shared memory extension (shm.go;
//	POST /v2/systemsharedmemory/region/{r}/register   shared_memory.enabled), register and unregister
//	POST /v2/systemsharedmemory[/region/{r}]/unregister  guarded as the operator routes
//
// A readiness answer of false is 400 with an empty body, as the v2 protocol says (a 4xx
// status means false), with the reason in the X-Not-Ready-Reason header; while the server is
// starting (SetStarting) both readiness routes answer it with the reason "starting".
//
// {v} is a version as its folder names it ("1.2.3") or written with a "v" ("v1.2.3"); without
// it, the model's default version serves (see repository.Repository.Get). The operator routes
// (reload, default pin, Triton's repository index/load/unload) are listed on Admin.
//
// Inference responses carry data flat and row-major. FP32 values are written as the shortest
// text that reads back to the same float32, FP64 likewise at 64 bits, integers as JSON integers
// (INT64 exactly, also beyond 2^53), BOOL as true/false. NaN and ±Inf, which JSON cannot
// express, are written as null.
//
// Triton's binary tensor data extension (binary.go; GET /v2 lists "binary_tensor_data") carries
// tensors as raw bytes after the JSON: with the header "Inference-Header-Content-Length: N" the
// first N bytes of the body are the JSON request, and the inputs whose "parameters" hold
// "binary_data_size": S (and no "data") take their S bytes, one after the other in the order
// of "inputs", from the rest: little-endian, row-major, BOOL one byte (0 or 1). FP16 and BF16
// inputs are accepted only this way; BYTES never. The sizes must match the shapes and add up
// to exactly the bytes after the JSON, else 400. An aligned binary input goes to the engine as
// a view of the request body (no copy). The request parameter "binary_data_output": true asks
// for every output in binary, an output's "binary_data": true or false for that one (it wins
// over the request's); the response then has the same framing: Content-Type
// application/octet-stream, Inference-Header-Content-Length giving the JSON length, binary
// outputs listed with "parameters":{"binary_data_size":S} and their bytes after the JSON in
// output order. docs/api.md has the details and a curl example.
//
// Triton's sequence extension (sequence.go): for a model configured with state pairs, the
// request parameters "sequence_id", "sequence_start" and "sequence_end" make the server supply
// the state inputs from the sequence's stored state and store the state outputs after the run.
// The handler only parses them into engines.RunOptions.Sequence; the engines drive the step.
//
// Every inference route goes one inference path (infer.go): a front end is a transport and a
// codec, and the model lookup, the signature checks and the error→status mapping are shared.
//
// Shadow evaluation (shadow.go; Options.Shadow): after the primary has answered, a sampled
// request is also run on the model's shadow version at its lowest priority, through a bounded
// queue whose overflow is dropped and counted, and the two answers are compared per output
// (ShadowReport, ShadowStatuses, metrics.Shadow; docs/rollout.md, Shadow evaluation).
//
// Compressed bodies (compress.go): a request body with Content-Encoding gzip or deflate is
// decompressed, bounded by the body limit, before its route reads it; a response body of at
// least Options.CompressMinBytes is compressed when Accept-Encoding accepts gzip or deflate.
//
// Errors are {"error": "..."} with 400 for a bad request, 404 for an unknown model, version or
// route, 413 for a body over the limit (decompressed, for a compressed one), 415 for a
// Content-Encoding other than gzip, deflate and identity, 503 for a version that is not ready or an overloaded
// queue (with Retry-After), 500 for our own faults.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/fasthttp/router"
	"github.com/valyala/fasthttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/metrics"
	"github.com/policyd/policyd/repository"
)

// DefaultMaxRequestBodySize is the default limit of a request body: 64 MiB.
const DefaultMaxRequestBodySize = 64 << 20

// Options configure a Server. Zero values pick the defaults.
type Options struct {
	// Version is the server version GET /v2 reports (default "dev").
	Version string
	// MaxRequestBodySize is the largest request body accepted; a larger one gets 413
	// (default DefaultMaxRequestBodySize).
	MaxRequestBodySize int
	// ReadTimeout bounds reading one request (default 30s).
	ReadTimeout time.Duration
	// WriteTimeout bounds writing one response (default 30s).
	WriteTimeout time.Duration
	// IdleTimeout bounds waiting for the next request on a kept-alive connection (default 120s).
	IdleTimeout time.Duration
	// Concurrency bounds the connections served at once (default fasthttp's, 256 Ki).
	Concurrency int
	// QueueTimeout bounds how long an inference request may wait in its model's queue; one
	// still queued then is answered 503 with Retry-After, naming the timeout, and never runs
	// (0: no limit; a request then waits for its turn however long the queue).
	QueueTimeout time.Duration
	// SharedMemory configures Triton's system shared memory extension (shm.go).
	SharedMemory SharedMemoryOptions
	// Admin wires the operator endpoints (reload, health details, metrics); zero disables them.
	Admin Admin

	// AccessLog writes one info line per request (observe.go): method, path, status, latency,
	// sizes, request_id, and for an inference the model, version, protocol and batch size.
	AccessLog bool
	// Tracer, when set, traces the requests (but health checks and /metrics): an HTTP server
	// span per request, child of its W3C traceparent, under which the engines record the queue
	// and execution spans (docs/observability.md, Traces). Nil: tracing off, at no cost.
	Tracer trace.TracerProvider
	// OnRequest, when set, is called once at the end of every inference request (KServe v2
	// infer, JSON or binary, and TensorFlow Serving's predict; not metadata, ready or health)
	// on the request's goroutine, with a pooled RequestInfo valid only during the call. It
	// must not block.
	OnRequest func(*RequestInfo)
	// HotLogFirst and HotLogThereafter rate-limit the warnings and errors that a flood of
	// requests could repeat (failed requests, handler panics, fasthttp's messages): per message
	// and level, the first HotLogFirst each second are written, then one in HotLogThereafter
	// (defaults 10 and 100).
	HotLogFirst, HotLogThereafter int
	// CompressMinBytes is the smallest response body compressed for a client whose
	// Accept-Encoding accepts gzip or deflate (compress.go); 0: DefaultCompressMinBytes;
	// negative: responses are never compressed. Compressed requests are read whatever it is.
	CompressMinBytes int

	// Shadow, when set, names the shadow of a model (shadow.go; docs/rollout.md, Shadow
	// evaluation): the version a sampled share rate (0..1) of the model's answered requests
	// is also run on, after the primary answered, for comparison; ok false: none. It is
	// called once per inference request and must be cheap and not allocate.
	Shadow func(model string) (shadowVersion string, rate float64, ok bool)
	// ShadowQueueLen bounds the sampled requests waiting for a shadow worker; a request that
	// finds the queue full is not shadowed and is counted dropped (default
	// DefaultShadowQueueLen).
	ShadowQueueLen int
	// ShadowWorkers is the number of goroutines running shadow requests, 1 to 4 (default 1).
	ShadowWorkers int
	// ShadowCPUShare is the share of the machine (of GOMAXPROCS CPU-seconds per second) the
	// shadow runs may take in all (shadow_budget.go): 0 means DefaultShadowCPUShare, 1 or
	// more no budget. A sampled request beyond it is dropped before it is copied, counted.
	ShadowCPUShare float64
	// ShadowMetrics, when set, receives the shadow families (policyd_shadow_*).
	ShadowMetrics *metrics.Shadow
}

// MaxRequestBodyCeiling is the most SetMaxRequestBodySize can allow (limits.max_request_size
// allows no more): a bound on the transport, not a size it reads. The live limit is applied
// when a request's headers arrive (bodyLimit), so no body beyond it is ever read.
const MaxRequestBodyCeiling = 256 << 20

func (o *Options) defaults() {
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.MaxRequestBodySize <= 0 {
		o.MaxRequestBodySize = DefaultMaxRequestBodySize
	}
	if o.ReadTimeout <= 0 {
		o.ReadTimeout = 30 * time.Second
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 30 * time.Second
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = 120 * time.Second
	}
	if o.HotLogFirst <= 0 {
		o.HotLogFirst = 10
	}
	if o.HotLogThereafter <= 0 {
		o.HotLogThereafter = 100
	}
	if o.CompressMinBytes == 0 {
		o.CompressMinBytes = DefaultCompressMinBytes
	}
}

// Server serves the HTTP API for a Registry. Its methods are safe for concurrent use.
type Server struct {
	exts   []string // the extensions server metadata lists (extensions, plus cuda_shared_memory when usable)
	reg    Registry
	log    *zap.Logger
	hot    *zap.Logger // log, rate-limited: for what a flood of requests repeats
	opts   Options
	srv    *fasthttp.Server
	tracer trace.Tracer // nil: tracing off

	// runCtx is passed to Model.Do: it ends only when a graceful shutdown runs out of time,
	// so requests queued at shutdown are still answered.
	runCtx     context.Context
	cancelRuns context.CancelFunc

	maxBody     atomic.Int64 // the live body limit (SetMaxRequestBodySize)
	compressMin int          // the smallest response body compressed; <= 0: none (compress.go)
	starting    atomic.Bool  // the first load of the model repository is running (SetStarting)

	reqs sync.Pool // *inferRequest
	meta []byte    // body of GET /v2

	shm *shmRegistry // the system shared memory regions (shm.go)

	grpc     *grpc.Server  // the gRPC front end (grpc.go), served by ServeGRPC
	grpcReqs sync.Pool     // *grpcRequest
	stop     chan struct{} // closed by Shutdown: streams end
	stopOnce sync.Once

	shadows *shadows // shadow evaluation (shadow.go); nil without Options.Shadow
}

// New returns a Server for reg. log may be nil (no logs).
func New(reg Registry, log *zap.Logger, opts Options) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	opts.defaults()
	s := &Server{reg: reg, log: log, opts: opts, compressMin: opts.CompressMinBytes}
	s.hot = rateLimited(log, opts.HotLogFirst, opts.HotLogThereafter)
	if opts.Tracer != nil {
		s.tracer = opts.Tracer.Tracer("github.com/policyd/policyd/server")
	}
	s.maxBody.Store(int64(opts.MaxRequestBodySize))
	s.runCtx, s.cancelRuns = context.WithCancel(context.Background())
	s.shm = newShmRegistry(opts.SharedMemory)
	s.reqs.New = func() any { r := newInferRequest(); r.shm.reg = s.shm; return r }
	s.grpcReqs.New = func() any { g := newGRPCRequest(); g.r.shm.reg = s.shm; return g }
	s.stop = make(chan struct{})
	s.shadows = newShadows(s, &opts)

	meta := append([]byte(`{"name":"policyd","version":`), appendString(nil, opts.Version)...)
	meta = append(meta, `,"extensions":[`...)
	exts := extensions
	if s.shm.cudaUsable() == "" {
		exts = append(slices.Clip(exts), "cuda_shared_memory")
	}
	s.exts = exts
	for i, e := range exts {
		if i > 0 {
			meta = append(meta, ',')
		}
		meta = appendString(meta, e)
	}
	s.meta = append(meta, "]}"...)

	s.srv = &fasthttp.Server{
		Handler:                       s.Handler(),
		ErrorHandler:                  s.transportError,
		Name:                          "policyd",
		MaxRequestBodySize:            opts.MaxRequestBodySize, // bodyLimit gives the live one
		HeaderReceived:                s.bodyLimit,
		ExpectHandler:                 s.expect,
		ReadTimeout:                   opts.ReadTimeout,
		WriteTimeout:                  opts.WriteTimeout,
		IdleTimeout:                   opts.IdleTimeout,
		Concurrency:                   opts.Concurrency,
		DisablePreParseMultipartForm:  true,
		NoDefaultContentType:          true,
		Logger:                        fasthttpLogger{s.hot},
		CloseOnShutdown:               true,
		SecureErrorLogMessage:         true,
		DisableHeaderNamesNormalizing: false,
	}
	s.grpc = s.newGRPC()
	return s
}

// extensions are the protocol extensions server metadata lists (GET /v2 and gRPC's
// ServerMetadata), by Triton's names: binary tensors, the /config document, repository
// index/load/unload, priority and timeout parameters, sequence_id/start/end, statistics.
var extensions = []string{"binary_tensor_data", "model_configuration", "model_repository", "schedule_policy", "sequence", "statistics", "system_shared_memory"}

// Handler returns the request handler with every route (also usable without Serve). Every
// route goes through observe (observe.go): correlation ID, server span, access line, OnRequest.
func (s *Server) Handler() fasthttp.RequestHandler {
	r := router.New()
	route := func(method, path string, h fasthttp.RequestHandler) {
		traced := !strings.HasPrefix(path, "/v2/health/") && path != "/metrics"
		r.Handle(method, path, s.observe(path, traced, h))
	}
	get := func(path string, h fasthttp.RequestHandler) { route(fasthttp.MethodGet, path, h) }
	post := func(path string, h fasthttp.RequestHandler) { route(fasthttp.MethodPost, path, h) }
	get("/v2", s.serverMetadata)
	get("/v2/health/live", s.live)
	get("/v2/health/ready", s.ready)
	get("/v2/models/stats", s.modelStats)
	get("/v2/models/{model}", s.modelMetadata)
	get("/v2/models/{model}/stats", s.modelStats)
	get("/v2/models/{model}/versions/{version}/stats", s.modelStats)
	get("/v2/models/{model}/ready", s.modelReady)
	get("/v2/models/{model}/config", s.modelConfig)
	post("/v2/models/{model}/infer", s.infer)
	get("/v2/models/{model}/versions/{version}", s.modelMetadata)
	get("/v2/models/{model}/versions/{version}/ready", s.modelReady)
	get("/v2/models/{model}/versions/{version}/config", s.modelConfig)
	post("/v2/models/{model}/versions/{version}/infer", s.infer)
	s.predictRoutes(post)
	s.shmRoutes(get, post)
	s.cudaShmRoutes(get, post)
	if s.opts.Admin.Reload != nil {
		post("/v2/admin/reload", s.adminReload)
	}
	if s.opts.Admin.Details != nil {
		get("/v2/health/details", s.healthDetails)
	}
	if s.opts.Admin.Metrics != nil {
		get("/metrics", s.opts.Admin.Metrics)
	}
	if s.opts.Admin.Repository != nil {
		post("/v2/admin/models/{model}/default", s.adminDefault)
		post("/v2/repository/index", s.repositoryIndex)
		post("/v2/repository/models/{model}/load", s.repositoryControl(true))
		post("/v2/repository/models/{model}/unload", s.repositoryControl(false))
	}
	if s.opts.Admin.Traffic != nil {
		get("/v2/admin/models/{model}/traffic", s.adminTrafficGet)
		route(fasthttp.MethodPut, "/v2/admin/models/{model}/traffic", s.adminTrafficPut)
	}
	r.NotFound = s.observe("", true, func(ctx *fasthttp.RequestCtx) {
		s.fail(ctx, &statusError{fasthttp.StatusNotFound, fmt.Sprintf("no route %s %s", ctx.Method(), clip(string(ctx.Path()), 200))})
	})
	r.MethodNotAllowed = s.observe("", true, func(ctx *fasthttp.RequestCtx) {
		s.fail(ctx, &statusError{fasthttp.StatusMethodNotAllowed, fmt.Sprintf("method %s not allowed on %s", ctx.Method(), clip(string(ctx.Path()), 200))})
	})
	r.PanicHandler = func(ctx *fasthttp.RequestCtx, v any) {
		method, path, id := requestFields(ctx)
		s.hot.Error("handler panic", zap.Any("panic", v), method, path, id)
		s.fail(ctx, fmt.Errorf("internal error"))
	}
	badVersion := s.observe("", true, s.unsupportedVersion)
	return func(ctx *fasthttp.RequestCtx) {
		if !supportedProtocol(&ctx.Request.Header) {
			badVersion(ctx)
			return
		}
		r.Handler(ctx)
	}
}

// Serve serves on ln until Shutdown; it then returns nil.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(ln)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// Shutdown stops accepting connections, HTTP and gRPC, and waits for the requests in flight,
// including those queued on an engine, to be answered; gRPC streams end after the request
// they are answering. When ctx ends first, queued requests are abandoned (answered 503 or
// Unavailable) and Shutdown returns ctx's error.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopOnce.Do(func() { close(s.stop) })
	grpcDone := make(chan error, 1)
	go func() { grpcDone <- s.shutdownGRPC(ctx) }()
	err := s.srv.ShutdownWithContext(ctx)
	if err != nil {
		s.cancelRuns()
		<-grpcDone
		return fmt.Errorf("shutdown: %w", err)
	}
	if gerr := <-grpcDone; gerr != nil {
		s.cancelRuns()
		return gerr
	}
	s.cancelRuns()
	s.shadows.close(s.log)
	s.shm.close() // every request has been answered: nothing holds a region
	return nil
}

func (s *Server) serverMetadata(ctx *fasthttp.RequestCtx) {
	ctx.SetContentType("application/json")
	ctx.SetBody(s.meta)
}

func (s *Server) live(ctx *fasthttp.RequestCtx) {
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// SetStarting marks the server as starting: the process listens (live answers 200) while it
// loads its models for the first time, readiness answers false with the reason "starting", and
// a request for a model not loaded yet gets 503 rather than 404. The owner clears it once the
// first load is done.
func (s *Server) SetStarting(on bool) { s.starting.Store(on) }

// errStarting answers a request for a model the first load has not reached yet.
var errStarting = &statusError{fasthttp.StatusServiceUnavailable, "starting: the model repository is still loading; retry shortly"}

// ready answers 200 when every version of every model is ready, else 400 with an empty body,
// as the v2 protocol says (a 4xx status means false; health bodies are empty), naming the
// first versions that are not and why in the X-Not-Ready-Reason header.
func (s *Server) ready(ctx *fasthttp.RequestCtx) {
	if ok, reason := s.readiness(); !ok {
		answerNotReady(ctx, reason)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// readiness reports whether the server is ready: not starting, and every version of every
// model ready; when not, why (the first versions that are not, and their reasons). HTTP's
// readiness route and gRPC's ServerReady and health service answer it.
func (s *Server) readiness() (bool, string) {
	if s.starting.Load() {
		return false, errStarting.msg
	}
	var notReady []byte
	n := 0
	for _, name := range s.reg.Models() {
		for _, m := range s.reg.Versions(name) {
			ok, reason := m.Ready()
			if !ok {
				ok, reason = s.readyNow(m)
			}
			if !ok {
				if n < 8 {
					if n > 0 {
						notReady = append(notReady, "; "...)
					}
					label := m.Name()
					if m.Version() != "" { // "": a listed model the repository lacks
						label += "@" + m.Version()
					}
					if !strings.HasPrefix(reason, label) { // native messages often start with it
						notReady = append(append(notReady, label...), ": "...)
					}
					notReady = append(notReady, clip(reason, 300)...)
				}
				n++
			}
		}
	}
	if n == 0 {
		return true, ""
	}
	return false, fmt.Sprintf("%d model version(s) not ready: %s", n, notReady)
}

// notReadyHeader carries the reason of a health answer of false, whose body stays empty.
const notReadyHeader = "X-Not-Ready-Reason"

// answerNotReady answers a readiness check false: 400, no body, the reason in a header (on
// one line, printable ASCII, at most 1000 bytes). GET /v2/health/details tells the whole story.
func answerNotReady(ctx *fasthttp.RequestCtx, reason string) {
	ctx.SetStatusCode(fasthttp.StatusBadRequest)
	h := []byte(clip(reason, 1000))
	for i, c := range h {
		if c < 0x20 || c > 0x7e {
			h[i] = ' '
		}
	}
	ctx.Response.Header.SetBytesV(notReadyHeader, h)
}

// readyNow asks again about a version listed as not ready: a reload may have replaced it
// (the replaced one turns unavailable once drained) or removed it since the list was read,
// and a health check must not fail for that. It reports the state of the version served now.
func (s *Server) readyNow(m Model) (bool, string) {
	cur, err := s.reg.Acquire(m.Name(), m.Version())
	if err != nil {
		return true, "" // no longer served: not a version that is not ready
	}
	defer cur.Release()
	return cur.Ready()
}

// lookup acquires the model version of the route, or answers the error. The caller must
// Release a model it returns once the response is encoded.
func (s *Server) lookup(ctx *fasthttp.RequestCtx) (Model, bool) {
	name, _ := ctx.UserValue("model").(string)
	version, _ := ctx.UserValue("version").(string)
	m, err := s.acquire(name, version)
	if err != nil {
		s.fail(ctx, err)
		return nil, false
	}
	exchangeOf(ctx).setModel(m, "")
	return m, true
}

func (s *Server) notReady(ctx *fasthttp.RequestCtx, m Model) bool {
	ok, reason := m.Ready()
	if !ok {
		s.fail(ctx, &repository.UnavailableError{Model: m.Name(), Version: m.Version(), Reason: reason})
	}
	return !ok
}

// modelReady answers 200 when the version is ready, else 400 with an empty body and the
// reason in the X-Not-Ready-Reason header (see ready); an unknown model or version is 404.
func (s *Server) modelReady(ctx *fasthttp.RequestCtx) {
	if s.starting.Load() {
		name, _ := ctx.UserValue("model").(string)
		version, _ := ctx.UserValue("version").(string)
		if m, err := s.reg.Acquire(name, version); err == nil {
			m.Release() // loaded already: answer as usual below
		} else {
			answerNotReady(ctx, errStarting.msg)
			return
		}
	}
	m, ok := s.lookup(ctx)
	if !ok {
		return
	}
	defer m.Release()
	if ok, reason := m.Ready(); !ok {
		answerNotReady(ctx, (&repository.UnavailableError{Model: m.Name(), Version: m.Version(), Reason: reason}).Error())
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// modelMetadata answers {"name","versions","platform","inputs","outputs"}; -1 marks a dimension
// the model does not fix. Beyond KServe's fields (clients ignore fields they do not know) it
// adds "version" (the version described: the default one when the URL names none),
// "default_version" and "default_pinned" when the registry knows them, and "digest" (the
// artifact digest of the version described) and "digests" (version → digest of every
// version listed) when the versions have digests.
func (s *Server) modelMetadata(ctx *fasthttp.RequestCtx) {
	m, ok := s.lookup(ctx)
	if !ok {
		return
	}
	defer m.Release()
	if s.notReady(ctx, m) {
		return
	}
	b := append(make([]byte, 0, 512), `{"name":`...)
	b = appendString(b, m.Name())
	b = append(b, `,"versions":[`...)
	for i, v := range s.reg.Versions(m.Name()) {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, v.Version())
	}
	b = append(b, `],"version":`...)
	b = appendString(b, m.Version())
	if dr, ok := s.reg.(defaultVersioner); ok {
		def, pinned := dr.DefaultVersion(m.Name())
		b = append(b, `,"default_version":`...)
		b = appendString(b, def)
		b = append(b, `,"default_pinned":`...)
		b = strconv.AppendBool(b, pinned)
	}
	if d, ok := m.(digester); ok {
		b = append(b, `,"digest":`...)
		b = appendString(b, d.Digest())
		b = append(b, `,"digests":{`...)
		n := 0
		for _, v := range s.reg.Versions(m.Name()) {
			if vd, ok := v.(digester); ok && vd.Digest() != "" {
				if n > 0 {
					b = append(b, ',')
				}
				b = appendString(b, v.Version())
				b = append(b, ':')
				b = appendString(b, vd.Digest())
				n++
			}
		}
		b = append(b, '}')
	}
	b = append(b, `,"platform":"onnx","inputs":`...)
	b = appendSignature(b, m.Inputs())
	b = append(b, `,"outputs":`...)
	b = appendSignature(b, m.Outputs())
	b = append(b, '}')
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// digester is a Model that knows its artifact's digest (*repository.Version).
type digester interface{ Digest() string }

// defaultVersioner is a Registry that knows the default version of a model and whether it is
// pinned (the one NewRegistry returns).
type defaultVersioner interface {
	DefaultVersion(model string) (version string, pinned bool)
}

func appendSignature(b []byte, infos []bridge.IOInfo) []byte {
	b = append(b, '[')
	for i, in := range infos {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, in.Name)
		b = append(b, `,"datatype":`...)
		b = appendString(b, in.DType.String())
		b = append(b, `,"shape":`...)
		b = append(b, formatShape(in.Shape)...)
		b = append(b, '}')
	}
	return append(b, ']')
}

// infer is the transport of KServe v2 inference over HTTP (JSON, or with binary tensor data):
// the request goes the one inference path (infer.go) with an inferRequest as its codec.
func (s *Server) infer(ctx *fasthttp.RequestCtx) {
	x := exchangeOf(ctx)
	protocol := ProtocolV2
	if len(ctx.Request.Header.Peek(inferHeaderLength)) > 0 {
		protocol = ProtocolV2Binary
	}
	x.setProtocol(protocol)
	if limit := s.maxBody.Load(); int64(len(ctx.PostBody())) > limit {
		s.fail(ctx, s.tooLarge())
		return
	}
	name, _ := ctx.UserValue("model").(string)
	version, _ := ctx.UserValue("version").(string)
	req := s.reqs.Get().(*inferRequest)
	defer s.putRequest(req)
	req.hdr, req.body = ctx.Request.Header.Peek(inferHeaderLength), ctx.PostBody() // binary inputs may be views of the body: valid until we return
	if err := readDeadlineHeader(ctx, &req.dl); err != nil {
		s.fail(ctx, err)
		return
	}
	req.episode = ctx.Request.Header.Peek(HeaderEpisodeID)
	if err := s.inference(x, protocol, name, version, req); err != nil {
		s.fail(ctx, err)
		return
	}
	writeDeadlineHeaders(ctx, &req.dl)
	req.writeResponse(ctx)
	ctx.Response.Header.Set(HeaderModelVersion, req.model.Version())
}

// rowsOf is the batch size of a request with these inputs: their dimension 0 for a batchable
// model, else 1.
func rowsOf(m Model, inputs []bridge.Tensor) int {
	if !m.Batchable() || len(inputs) == 0 || len(inputs[0].Shape) == 0 || inputs[0].Shape[0] < 1 {
		return 1
	}
	return int(inputs[0].Shape[0])
}

// run runs m under the server's run context, bounded by the request's own timeout and by
// QueueTimeout, whichever is shorter (none when both are 0).
func (s *Server) run(m Model, inputs []bridge.Tensor, opts engines.RunOptions, timeout time.Duration, fn func([]bridge.Tensor) error) error {
	own := timeout > 0
	if q := s.opts.QueueTimeout; q > 0 && (timeout <= 0 || q < timeout) {
		timeout, own = q, false
	}
	if timeout <= 0 {
		return m.Do(s.runCtx, inputs, opts, fn)
	}
	rctx, cancel := context.WithTimeout(s.runCtx, timeout)
	err := m.Do(rctx, inputs, opts, fn)
	cancel()
	if err != nil && errors.Is(err, context.DeadlineExceeded) && s.runCtx.Err() == nil {
		return &timeoutError{model: m.Name(), version: m.Version(), after: timeout, own: own}
	}
	return err
}

func (s *Server) putRequest(r *inferRequest) {
	r.release()
	s.reqs.Put(r)
}

// fail answers {"error": err, "request_id": id} with the status errorStatus gives. Our own
// faults (5xx but 503 and 505) are logged as errors; the rest, the client's doing or a state already
// logged (a version that failed to load, an overloaded queue), at debug level; both
// rate-limited (Options.HotLogFirst).
func (s *Server) fail(ctx *fasthttp.RequestCtx, err error) {
	status, retry := errorStatus(err)
	exchangeOf(ctx).failed(errTimedOut(err), retry)
	id := requestID(ctx)
	ctx.Response.ResetBody()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	if retry {
		ctx.Response.Header.Set("Retry-After", retryAfterSeconds)
	}
	b := append(make([]byte, 0, 80+len(err.Error())+len(id)), `{"error":`...)
	b = appendString(b, err.Error())
	b = append(b, `,"request_id":`...)
	b = appendString(b, unsafe.String(unsafe.SliceData(id), len(id)))
	ctx.SetBody(append(b, '}'))
	level := zap.DebugLevel
	if status >= 500 && status != fasthttp.StatusServiceUnavailable && status != fasthttp.StatusHTTPVersionNotSupported && status != fasthttp.StatusGatewayTimeout {
		level = zap.ErrorLevel
	}
	if ce := s.hot.Check(level, "request failed"); ce != nil {
		method, path, rid := requestFields(ctx)
		ce.Write(method, path, zap.Int("status", status), zap.Error(err), rid)
	}
}

// SetMaxRequestBodySize changes the body limit of the requests whose headers arrive from now
// on, up to max(Options.MaxRequestBodySize, MaxRequestBodyCeiling); n <= 0 restores
// Options.MaxRequestBodySize.
func (s *Server) SetMaxRequestBodySize(n int) {
	if n <= 0 {
		n = s.opts.MaxRequestBodySize
	}
	s.maxBody.Store(int64(min(n, max(s.opts.MaxRequestBodySize, MaxRequestBodyCeiling))))
}

// bodyLimit is the transport's hook once a request's headers are read: the body is read under
// the live limit. A Content-Length over it is refused (413, transportError) before a byte of
// the body is read, a chunked body as soon as it passes the limit; fasthttp then closes the
// connection without reading the rest.
func (s *Server) bodyLimit(*fasthttp.RequestHeader) fasthttp.RequestConfig {
	return fasthttp.RequestConfig{MaxRequestBodySize: int(s.maxBody.Load())}
}

// expect answers "Expect: 100-continue" (curl sends it for bodies over 1 MiB): 413 at once,
// without inviting the body, when the announced length is over the live limit; else 100. The
// transport then closes the connection.
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	if n := ctx.Request.Header.ContentLength(); n > 0 && int64(n) > s.maxBody.Load() {
		s.fail(ctx, s.tooLarge())
		return fasthttp.StatusRequestEntityTooLarge
	}
	return fasthttp.StatusContinue
}

// supportedProtocol reports whether a request's HTTP version is one the server speaks:
// HTTP/1.0 or HTTP/1.1 (fasthttp itself accepts any HTTP/d.d).
func supportedProtocol(h *fasthttp.RequestHeader) bool {
	p := h.Protocol()
	return string(p) == "HTTP/1.1" || string(p) == "HTTP/1.0"
}

// unsupportedVersion answers a request in an HTTP version other than 1.0 and 1.1 (RFC 9110,
// 15.6.6), closing the connection.
func (s *Server) unsupportedVersion(ctx *fasthttp.RequestCtx) {
	ctx.SetConnectionClose()
	s.fail(ctx, &statusError{fasthttp.StatusHTTPVersionNotSupported,
		fmt.Sprintf("HTTP version %s not supported: use HTTP/1.1 or HTTP/1.0", clip(string(ctx.Request.Header.Protocol()), 20))})
}

func (s *Server) tooLarge() error {
	n := int(s.maxBody.Load())
	return &statusError{fasthttp.StatusRequestEntityTooLarge,
		fmt.Sprintf("request body too large: the limit is %d bytes (%s)", n, byteSize(n))}
}

// transportError answers a request fasthttp could not read: 505 for an HTTP version other
// than 1.0 and 1.1, 413 over the body limit, 431 for headers too large, 408 on a read timeout,
// 400 otherwise.
func (s *Server) transportError(ctx *fasthttp.RequestCtx, err error) {
	var small *fasthttp.ErrSmallBuffer
	var netErr net.Error
	switch {
	case len(ctx.Request.Header.Protocol()) > 0 && !supportedProtocol(&ctx.Request.Header):
		s.unsupportedVersion(ctx)
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		s.fail(ctx, s.tooLarge())
	case errors.As(err, &small):
		s.fail(ctx, &statusError{fasthttp.StatusRequestHeaderFieldsTooLarge, "request headers too large"})
	case errors.As(err, &netErr) && netErr.Timeout():
		s.fail(ctx, &statusError{fasthttp.StatusRequestTimeout, "timeout reading the request"})
	default:
		s.fail(ctx, &statusError{fasthttp.StatusBadRequest, "malformed HTTP request: " + clip(err.Error(), 200)})
	}
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

// fasthttpLogger routes fasthttp's own messages into zap.
type fasthttpLogger struct{ log *zap.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Warn("fasthttp: " + fmt.Sprintf(format, args...))
}
