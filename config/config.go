// Package config holds policyd's one typed configuration: the struct and its defaults, the
// layers it is loaded from (defaults < file < profile overlay < .env < environment < flags,
// merged with koanf), validation that reports every problem at once with its key path, the
// merged view with each value's source, the difference between two configs, a JSON Schema and
// the reference documentation, all generated from the struct.
//
// A key exists only once the feature that reads it does. A new key is a field with four tags:
//
//	koanf:"snake_case_key"   the key (its env name follows: POLICYD_<SECTION>__<KEY>)
//	desc:"..."               one or two sentences for docs/configuration.md and the schema
//	reload:"live|restart"    whether a running server applies a change without a restart
//
// and, where they apply: enum:"a,b,c", min:"N", max:"N" (numbers, durations, sizes; list length
// for lists), unique:"true" (lists), required:"true", exists:"dir|file" (paths that must
// exist; each element of a list), pattern:"regexp" (strings, when set), path:"true" (relative
// to the file that sets it; each element of a list), key:"true" (the field naming an
// element of a list), secret:"true" (printed as <redacted>). Its default goes in Defaults.
// Then refresh the reference: go test ./config -update. A field of type BackendParams is a
// map of backend parameters, its keys and values checked against BackendParameters.
//
// The package is pure Go and imports nothing of policyd's.
package config

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// Config is policyd's configuration. The zero value is not useful: start from Defaults or Load.
// A *Config is not modified after Load returns it; share it read-only between goroutines.
type Config struct {
	Server     Server     `koanf:"server" desc:"The HTTP and gRPC listeners."`
	Limits     Limits     `koanf:"limits" desc:"Bounds on what one request and one model may hold."`
	Log        Log        `koanf:"log" desc:"Logging."`
	Repository Repository `koanf:"repository" desc:"Where the models and the backend plugins are."`
	Engine     Engine     `koanf:"engine" desc:"Defaults of the engine instances that run the models."`
	Batching   Batching   `koanf:"batching" desc:"The dynamic batcher (see docs/engine.md, Dynamic batching): whether batchable models are batched, and the defaults of models[].batching."`
	Models     []Model    `koanf:"models" reload:"live" unique:"true" desc:"The models to serve, each by name; empty serves every model found in the repository, each with the defaults below."`
	Admin      Admin      `koanf:"admin" desc:"The admin API."`
	Tracing    Tracing    `koanf:"tracing" desc:"OpenTelemetry tracing (docs/observability.md, Traces): spans of the HTTP requests, their queueing and the batch executions, exported over OTLP/HTTP. Off by default, and free when off."`
	Artifacts  Artifacts  `koanf:"artifacts" desc:"How model artifacts are verified before they serve."`
	Metrics    Metrics    `koanf:"metrics" desc:"The Prometheus metrics at GET /metrics (docs/observability.md)."`

	SharedMemory SharedMemory `koanf:"shared_memory" desc:"Triton's system shared memory extension (docs/api.md, Shared memory): clients register POSIX shared memory objects of /dev/shm as named regions and pass tensors through them instead of the request body. Registering maps host memory into the server: off by default, and register/unregister are operator calls (docs/security.md)."`
}

// SharedMemory configures the system shared memory extension.
type SharedMemory struct {
	Enabled    bool `koanf:"enabled" reload:"restart" desc:"Serve the system shared memory extension: the /v2/systemsharedmemory routes, the SystemSharedMemory* gRPC calls and the shared_memory_* tensor parameters; with a usable cuda device also the CUDA shared memory extension (/v2/cudasharedmemory, CudaSharedMemory*), whose regions count against the same limits. false: they answer 400 saying the extension is off (Triton's --allow-client-shm, whose default is also false)."`
	MaxRegions int  `koanf:"max_regions" reload:"restart" min:"1" max:"65536" desc:"Most regions registered at once; a register beyond it gets 400."`
	MaxBytes   Size `koanf:"max_bytes" reload:"restart" min:"1" desc:"Most bytes of all registered regions together (their byte_size, the address space they map); a register beyond it gets 400. A size: 1GiB, 256MiB or a number of bytes."`
}

// Server configures the HTTP and gRPC listeners.
type Server struct {
	Addr            string        `koanf:"addr" reload:"restart" desc:"Address the HTTP API listens on, HOST:PORT; an empty host listens on every interface."`
	GRPCAddr        string        `koanf:"grpc_addr" reload:"restart" desc:"Address the KServe v2 gRPC API (inference.GRPCInferenceService, grpc.health.v1, reflection) listens on, HOST:PORT; an empty host listens on every interface; \"\" or \"off\" turns gRPC off. Its message limit is limits.max_request_size."`
	ReadTimeout     time.Duration `koanf:"read_timeout" reload:"restart" min:"1ms" desc:"Longest time to read a whole request, body included."`
	WriteTimeout    time.Duration `koanf:"write_timeout" reload:"restart" min:"1ms" desc:"Longest time to write a response."`
	IdleTimeout     time.Duration `koanf:"idle_timeout" reload:"restart" min:"1ms" desc:"How long a keep-alive connection waits for its next request."`
	ShutdownTimeout time.Duration `koanf:"shutdown_timeout" reload:"restart" min:"1ms" desc:"How long shutdown waits for the requests in flight before closing the engines."`
	CompressMin     Size          `koanf:"compress_min_bytes" reload:"restart" min:"0" desc:"Smallest HTTP response body compressed (gzip or deflate, with Vary: Accept-Encoding) for a client whose Accept-Encoding accepts it; smaller bodies never are. 0 turns response compression off; otherwise at least 128 bytes and at most 64MiB. Compressed requests (Content-Encoding: gzip or deflate) are read either way, their decompressed size bounded by limits.max_request_size; gRPC answers gzip calls in gzip. A size: 1KiB, 4KiB or a number of bytes."`
	ShadowCPUShare  float64       `koanf:"shadow_cpu_share" reload:"restart" min:"0.001" max:"1" desc:"Share of the machine (of GOMAXPROCS CPU-seconds per second) the shadow evaluation of every model's traffic policy may use in all: a token bucket refilled by wall time and charged with each shadow run's time; a sampled request that finds it spent is not shadowed (counted dropped, reason budget) and the primary pays nothing for it (docs/rollout.md, Shadow evaluation). 1: no budget."`
	ShadowQueueLen  int           `koanf:"shadow_queue_len" reload:"restart" min:"1" max:"65536" desc:"Sampled requests waiting for the shadow evaluation (every model's traffic policy shares it); a request that finds it full is not shadowed (counted dropped, reason queue_full) and the primary never waits (docs/rollout.md, Shadow evaluation)."`
}

// Limits bounds what one request and one model may hold.
type Limits struct {
	MaxRequestSize Size          `koanf:"max_request_size" reload:"live" min:"1" max:"256MiB" desc:"Largest request body; a larger one gets 413. A size: 64MiB, 512KiB or a number of bytes; at most 256MiB."`
	QueueLen       int           `koanf:"queue_len" reload:"live" min:"1" desc:"Requests that may wait per engine instance of a model version before more get 503 with Retry-After."`
	QueueTimeout   time.Duration `koanf:"queue_timeout" reload:"restart" min:"0s" desc:"Longest a request may wait in its model's queue before it is answered 503 (timed out) without running; 0 waits as long as the client does."`
	MaxModelMemory Size          `koanf:"max_model_memory" reload:"live" min:"1MiB" desc:"Most host memory one model's engine may take: its weights and folded constants, checked while it is imported before each is allocated, then those plus one context's activations at batch 1. A model over it is UNAVAILABLE with the reason; a change applies to the models loaded from then on. A size: 4GiB, 512MiB or a number of bytes."`
}

// Log configures logging.
type Log struct {
	Level  string `koanf:"level" reload:"live" enum:"debug,info,warn,error" desc:"Least severe level logged."`
	Format string `koanf:"format" reload:"restart" enum:"json,console" desc:"Log line format: json (one object a line) or console (human-readable)."`
	Access bool   `koanf:"access" reload:"restart" desc:"One info line per HTTP request (method, path, status, latency, sizes, request_id; model, version, protocol and batch size for an inference); see docs/observability.md, Logs. log.level warn or above silences them too, live."`
}

// Repository says where the models and the backend plugins are.
type Repository struct {
	Path       string `koanf:"path" reload:"live" required:"true" exists:"dir" path:"true" desc:"Model repository folder, laid out <path>/<model>/<X.Y.Z>/ with manifest.json, model.onnx and an optional manifest.sig (see docs/artifacts.md); every version is verified before it serves, at start and on every reload. A relative path in a config file is relative to that file's folder."`
	BackendDir string `koanf:"backend_dir" reload:"restart" exists:"dir" path:"true" desc:"Folder of the backend plugins (libpolicyd_backend_<name>.so); empty: beside libpolicyd."`
}

// Engine holds the defaults of the engine instances that run the models.
type Engine struct {
	Seed              uint64        `koanf:"seed" reload:"live" desc:"Base seed of random operators; instance i of a version uses seed+i. A change applies to the versions (re)loaded after it."`
	Threads           int           `koanf:"threads" reload:"live" min:"1" max:"1024" desc:"Threads of each engine instance, unless a model sets its own."`
	CPUThreads        int           `koanf:"cpu_threads" reload:"restart" min:"0" max:"65536" desc:"CPU threads the engines may use in all, 0 = every core; a model's default instance count is max(1, cpu_threads / threads)."`
	Backends          []string      `koanf:"backends" reload:"live" enum:"cpu,cuda,tensorrt" min:"1" unique:"true" desc:"Backends in order of preference of every model that sets no models[].backends; the first that loads the model serves it. A backend this machine does not have (plugin not installed, no driver or GPU) is skipped quietly (its state is logged once at start); one that has it but cannot load the model (an op it lacks, a missing engine cache, a listed GPU it lacks) is skipped with a warning giving the reason. A model whose fallback is false tries only the first (see docs/gpu.md, Backend order and the fallback switch)."`
	BackendParameters BackendParams `koanf:"backend_parameters" reload:"live" desc:"Build parameters of the backends, <backend>.<name>: value (tensorrt.precision: fp16), for every model; models[].backend_parameters overrides them key by key. Only the backend a model's engine is built on reads its own. The known keys and values are in docs/configuration.md, Backend parameters. A change reloads the versions whose parameters change."`
	BuildEngines      bool          `koanf:"build_engines" reload:"live" desc:"Build a GPU engine from model.onnx when the artifact has no engine cache matching the GPU's architecture and the backend's version (policyctl engines build, make engines, store them). false: such a version is UNAVAILABLE with \"rebuild engines\". A stale or mismatched cache is never used either way. Servers never write caches into the repository."`
}

// Batching configures the dynamic batcher and holds the defaults of models[].batching.
type Batching struct {
	Enabled              bool          `koanf:"enabled" reload:"live" desc:"Batch concurrent requests of a batchable model (one whose inputs share a dynamic batch dimension 0) into one engine run; other models always run one request at a time. A change rebuilds the versions it affects."`
	MaxBatchSize         int           `koanf:"max_batch_size" reload:"live" min:"1" max:"65536" desc:"Most rows (the sum of the requests' batch sizes) in one batch; a larger request runs alone."`
	MaxQueueDelay        time.Duration `koanf:"max_queue_delay" reload:"live" desc:"How long a batch that could still grow waits for more requests while another batch of the version runs; a request on an idle version runs at once. 0 never waits: a batch takes what is queued."`
	PreferredBatchSizes  []int         `koanf:"preferred_batch_sizes" reload:"live" unique:"true" desc:"Batch sizes dispatched at once, without waiting the rest of max_queue_delay, when nothing more is queued."`
	PriorityLevels       int           `koanf:"priority_levels" reload:"live" min:"0" max:"16" desc:"Priority levels of every version's queue (Triton's): a request's \"priority\" parameter picks one, 1 the highest; batches (and runs of unbatched models) take the highest level queued first. 0 or 1: one level. limits.queue_len bounds each level."`
	DefaultPriorityLevel int           `koanf:"default_priority_level" reload:"live" min:"0" max:"16" desc:"The level of requests without a priority (or priority 0), 1..priority_levels; 0 = the lowest level."`
}

// ModelBatching overrides the batching defaults for one model.
type ModelBatching struct {
	MaxBatchSize         int           `koanf:"max_batch_size" reload:"live" min:"0" max:"65536" desc:"Most rows in one batch of this model, 0 = batching.max_batch_size."`
	MaxQueueDelay        time.Duration `koanf:"max_queue_delay" reload:"live" desc:"Queue delay of this model, 0 = batching.max_queue_delay."`
	PreferredBatchSizes  []int         `koanf:"preferred_batch_sizes" reload:"live" unique:"true" desc:"Preferred batch sizes of this model; empty = batching.preferred_batch_sizes."`
	PriorityLevels       int           `koanf:"priority_levels" reload:"live" min:"0" max:"16" desc:"Priority levels of this model, 0 = batching.priority_levels."`
	DefaultPriorityLevel int           `koanf:"default_priority_level" reload:"live" min:"0" max:"16" desc:"Default priority level of this model, 0 = batching.default_priority_level."`
}

// Model names a model of the repository to serve and how.
type Model struct {
	Name              string        `koanf:"name" reload:"live" required:"true" key:"true" desc:"The model's folder name in the repository."`
	Version           string        `koanf:"version" reload:"live" desc:"Versions to serve: empty serves every version found; an exact version (1.2.3, v1.2.3, 1.3.0-rc.1) serves that one; a semver constraint (^1.2, ~1.2.3, >=1.0 <2, 1.x) serves every version it matches, pre-releases only when it names one. Requests without a version get the highest ready one unless the default is pinned (POST /v2/admin/models/{m}/default)."`
	Digest            string        `koanf:"digest" reload:"live" pattern:"^sha256:[0-9a-f]{64}$" desc:"Pins the artifact of an exact version: the sha256 of its manifest.json as policyctl artifacts list prints it; a version whose digest differs is refused. Only with an exact version."`
	Backends          []string      `koanf:"backends" reload:"live" enum:"cpu,cuda,tensorrt" unique:"true" desc:"Backends in order of preference; the first that loads on this machine serves. Empty = engine.backends."`
	Fallback          bool          `koanf:"fallback" reload:"live" desc:"Let the next backend of backends serve when one cannot load the model (unavailable on this machine, an op it lacks); false: only the first backend may serve it, and when it cannot the version is UNAVAILABLE with the reason."`
	Devices           []string      `koanf:"devices" reload:"live" unique:"true" pattern:"^(all|0|[1-9][0-9]{0,3})$" desc:"GPUs a GPU backend (cuda, tensorrt) runs the model on: device indexes as the backend numbers them (\"0\", \"1\") or \"all\". Each GPU gets its own engine and instances contexts, all behind the version's one queue and batcher. A listed GPU the backend does not have leaves the version UNAVAILABLE. Ignored by cpu. Empty = all."`
	Instances         int           `koanf:"instances" reload:"live" min:"0" max:"1024" desc:"Engine instances of each version (per GPU on a GPU backend), 0 = max(1, engine.cpu_threads / threads)."`
	Threads           int           `koanf:"threads" reload:"live" min:"0" max:"1024" desc:"Threads of each engine instance, 0 = engine.threads."`
	BackendParameters BackendParams `koanf:"backend_parameters" reload:"live" desc:"Build parameters of the backends for this model, <backend>.<name>: value; each key set here overrides engine.backend_parameters, the others keep it. A change reloads the model's versions."`
	Batching          ModelBatching `koanf:"batching" desc:"The model's dynamic batcher settings (used when batching.enabled and the model is batchable)."`
	Sequence          ModelSequence `koanf:"sequence" desc:"Stateful sequences of a recurrent model (see docs/api.md, Stateful sequences): requests with a sequence_id send only the other inputs, the server feeds each state input from the state output of the sequence's previous step. Off while states and controls are empty."`
	DeadlineFallback  ModelFallback `koanf:"deadline_fallback" desc:"What answers a request whose deadline (deadline_us, the gRPC deadline, X-Deadline-Us) has passed or cannot be met from the version's measured service time (see docs/api.md, Deadlines). Without one such a request is answered 504 with the reason. A change reloads the model's versions."`
	Traffic           ModelTraffic  `koanf:"traffic" desc:"The traffic policy between the model's versions: a weighted split sticky per episode, a shadow version, promotion and rollback gates (docs/rollout.md). Off while weights is empty."`
}

// ModelFallback is the declared fallback action of a model (models[].deadline_fallback).
type ModelFallback struct {
	Kind     string             `koanf:"kind" reload:"live" enum:"none,last_action,constant,version" desc:"none: 504; last_action: the outputs of the sequence's last step that ran (kept per sequence, dropped with it; a request that is no step of a sequence, or the first step, takes the constant when one is set, else 504); constant: the constant below; version: run the version below at once at the highest priority."`
	Constant []FallbackConstant `koanf:"constant" reload:"live" desc:"A constant safe action: the values of one row of each output of the model, repeated for the request's batch size. Checked against each output's datatype and shape when a version loads; a mismatch leaves it UNAVAILABLE with the reason. Required by kind constant; used by last_action when there is no last action."`
	Version  string             `koanf:"version" reload:"live" pattern:"^[^@]+(@[^@]+)?$" desc:"The fallback version of kind version: model or model@version of the repository (the model's default version without @). It runs with the same inputs and deadline at priority 1; when it cannot meet the deadline either, the request is answered 504 naming both."`
}

// FallbackConstant is one output's constant of models[].deadline_fallback.constant.
type FallbackConstant struct {
	Output string    `koanf:"output" reload:"live" required:"true" key:"true" desc:"The model output."`
	Values []float64 `koanf:"values" reload:"live" desc:"Its values for one row (the batch dimension aside), row-major; integers for integer datatypes, 0 or 1 for BOOL."`
}

// ModelSequence configures the stateful sequences of one model.
type ModelSequence struct {
	States       []string          `koanf:"states" reload:"live" unique:"true" desc:"State pairs, each \"input:output\" (recurrent_in:recurrent_out): the input is fed from the output of the previous step of the same sequence, zeros at sequence_start. Checked against the model's signature when a version loads; a name, datatype or shape mismatch leaves it UNAVAILABLE with the reason."`
	IdleTimeout  time.Duration     `koanf:"idle_timeout" reload:"live" min:"0s" desc:"A sequence without a request for this long is dropped; 0 = 1m."`
	MaxSequences int               `koanf:"max_sequences" reload:"live" min:"0" max:"1048576" desc:"Most live sequences per model version; a sequence_start beyond it gets 503 with Retry-After. 0 = 1024."`
	Controls     []SequenceControl `koanf:"controls" reload:"live" desc:"Sequence control inputs of a Triton-style stateful model (Triton's sequence_batching.control_input): model inputs the server fills for every request of a sequence from its sequence_id, sequence_start and sequence_end, batched or not; a request then needs a sequence_id and must not send them. Checked against the model's signature when a version loads (the input, its datatype, one element per row); a mismatch leaves it UNAVAILABLE with the reason. See docs/api.md, Sequence control inputs."`
}

// SequenceControl names one sequence control input of a model.
type SequenceControl struct {
	Input      string  `koanf:"input" reload:"live" required:"true" key:"true" desc:"The model input the server fills."`
	Kind       string  `koanf:"kind" reload:"live" required:"true" enum:"start,end,ready,corrid" desc:"What it holds: start (true_value on a request with sequence_start, else false_value; Triton's CONTROL_SEQUENCE_START), end (the same for sequence_end), ready (true_value: every row holds a request), corrid (the numeric sequence_id; a string sequence_id is refused)."`
	DataType   string  `koanf:"datatype" reload:"live" required:"true" enum:"FP32,INT32,BOOL,INT64,UINT32,UINT64" desc:"The input's datatype: FP32, INT32 or BOOL for start, end and ready; INT32, INT64, UINT32 or UINT64 for corrid (a sequence_id beyond its range is refused)."`
	FalseValue float64 `koanf:"false_value" reload:"live" desc:"The value of start, end and ready when false (Triton's int32_false_true[0], fp32_false_true[0], bool_false_true[0]; 0 or 1 for BOOL). Unused for corrid."`
	TrueValue  float64 `koanf:"true_value" reload:"live" desc:"Their value when true; must differ from false_value. Unused for corrid."`
}

// DefaultSequenceControl returns the defaults of an element of models[].sequence.controls:
// false 0, true 1.
func DefaultSequenceControl() SequenceControl { return SequenceControl{TrueValue: 1} }

// StatePairs splits States into (input, output) pairs; ok is false for an element that is not
// "input:output" with both names set.
func (s ModelSequence) StatePairs() (pairs [][2]string, ok bool) {
	ok = true
	for _, st := range s.States {
		in, out, found := strings.Cut(st, ":")
		in, out = strings.TrimSpace(in), strings.TrimSpace(out)
		if !found || in == "" || out == "" {
			ok = false
			continue
		}
		pairs = append(pairs, [2]string{in, out})
	}
	return pairs, ok
}

// Admin configures who may call the operator routes: /v2/admin/*, repository load/unload and
// GET /v2/health/details.
type Admin struct {
	TokenFile            string `koanf:"token_file" reload:"live" exists:"file" path:"true" desc:"File holding the bearer token (its first line, trimmed) that /v2/admin/*, the repository API and GET /v2/health/details need. Re-read on every reload trigger (SIGHUP, admin reload, a config change) and watched: writing a new token to it (or updating the Kubernetes Secret it comes from) takes effect at once, and the old token is refused; a file bind-mounted alone into a container raises no event inside it, so there send SIGHUP (docs/security.md). Empty: those routes answer 403 unless admin.allow_unauthenticated is set. The config holds only the path; the token is never printed."`
	AllowUnauthenticated bool   `koanf:"allow_unauthenticated" reload:"live" desc:"With no admin.token_file, open /v2/admin/*, repository load/unload and GET /v2/health/details to anyone who reaches the port: for loopback development only. Ignored when a token file is set (the token is then required)."`
}

// Artifacts configures how model artifacts are verified.
type Artifacts struct {
	TrustedKeys []string `koanf:"trusted_keys" reload:"live" unique:"true" exists:"file" path:"true" desc:"Ed25519 public keys (PEM files written by policyctl artifacts keygen) that sign the artifacts; when any is set, every version must carry a manifest.sig that one of them verifies, and unsigned or wrongly signed versions are refused. Empty: signatures are not required."`
	OnTamper    string   `koanf:"on_tamper" reload:"live" enum:"retire,keep" desc:"What happens to a version that serves when its files fail verification later (every reload re-verifies every version): retire stops serving it (UNAVAILABLE with the reason; the others keep serving); keep serves on from the engine loaded from the verified files, as Triton does, with a warning in the log, the verification failures metric, health details and the version's reason. A version not loaded yet is refused either way (docs/artifacts.md, When files change after load)."`
}

// Metrics configures the Prometheus metrics.
type Metrics struct {
	GPUInterval time.Duration `koanf:"gpu_interval" reload:"restart" min:"100ms" max:"1h" desc:"How often every NVIDIA GPU is sampled through NVML for the policyd_gpu_* metrics; a scrape reads the last sample and never waits for NVML."`
}

// Tracing configures OpenTelemetry tracing.
type Tracing struct {
	Enabled       bool    `koanf:"enabled" reload:"restart" desc:"Trace requests and export the spans to tracing.endpoint."`
	Endpoint      string  `koanf:"endpoint" reload:"restart" pattern:"^https?://[^/]+" desc:"The OTLP/HTTP receiver (an OpenTelemetry Collector, Jaeger, Tempo): http(s)://HOST:PORT[/PATH]; without a path, /v1/traces. Required when tracing.enabled."`
	SamplingRatio float64 `koanf:"sampling_ratio" reload:"restart" min:"0" max:"1" desc:"Share of new traces sampled, 0 to 1; a request with a W3C traceparent follows its caller's sampling decision."`
	ServiceName   string  `koanf:"service_name" reload:"restart" desc:"The service.name of the exported spans."`
}

// Defaults returns the configuration every layer starts from. The defaults of a models[]
// element are in DefaultModel.
func Defaults() *Config {
	return &Config{
		Server: Server{
			Addr:            "127.0.0.1:8000",
			GRPCAddr:        "127.0.0.1:8001",
			ReadTimeout:     30 * time.Second,
			WriteTimeout:    30 * time.Second,
			IdleTimeout:     2 * time.Minute,
			ShutdownTimeout: 30 * time.Second,
			CompressMin:     1 * KiB,
			ShadowCPUShare:  0.025,
			ShadowQueueLen:  64,
		},
		Limits:     Limits{MaxRequestSize: 64 * MiB, QueueLen: 64, MaxModelMemory: 4 * GiB},
		Log:        Log{Level: "info", Format: "json", Access: true},
		Repository: Repository{},
		Engine:     Engine{Seed: 0, Threads: 1, CPUThreads: 0, Backends: []string{"tensorrt", "cuda", "cpu"}, BackendParameters: BackendParams{}, BuildEngines: true},
		Batching:   Batching{Enabled: true, MaxBatchSize: 32, MaxQueueDelay: 100 * time.Microsecond, PreferredBatchSizes: []int{}},
		Models:     []Model{},
		Admin:      Admin{},
		Artifacts:  Artifacts{TrustedKeys: []string{}, OnTamper: "retire"},
		Metrics:    Metrics{GPUInterval: 10 * time.Second},
		Tracing:    Tracing{SamplingRatio: 1, ServiceName: "policyd"},

		SharedMemory: SharedMemory{Enabled: false, MaxRegions: 64, MaxBytes: 1 * GiB},
	}
}

// DefaultModel returns the defaults of an element of models: a key a layer does not set for
// models[i] takes its value from here.
func DefaultModel() Model {
	return Model{Backends: []string{}, Fallback: true, Devices: []string{}, BackendParameters: BackendParams{}, Batching: ModelBatching{PreferredBatchSizes: []int{}}, Sequence: ModelSequence{States: []string{}, Controls: []SequenceControl{}},
		DeadlineFallback: ModelFallback{Kind: "none", Constant: []FallbackConstant{}},
		Traffic:          ModelTraffic{Weights: []string{}, Gates: TrafficGates{Promote: GatePromote{Steps: []int{}}}}}
}

// Threads returns the threads of each engine instance of m: m.Threads, else engine.threads.
func (c *Config) Threads(m Model) int {
	if m.Threads > 0 {
		return m.Threads
	}
	return max(1, c.Engine.Threads)
}

// Instances returns the engine instances of each version of m: m.Instances, else
// max(1, engine.cpu_threads / threads), engine.cpu_threads 0 meaning runtime.NumCPU().
func (c *Config) Instances(m Model) int {
	if m.Instances > 0 {
		return m.Instances
	}
	cpus := c.Engine.CPUThreads
	if cpus == 0 {
		cpus = runtime.NumCPU()
	}
	return max(1, cpus/c.Threads(m))
}

// Token reads the admin token from TokenFile: its first line, trimmed. It returns "" and no
// error when TokenFile is empty (no admin API). The error never contains the token.
func (a Admin) Token() (string, error) {
	if a.TokenFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(a.TokenFile)
	if err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	if tok = strings.TrimSpace(tok); tok == "" {
		return "", fmt.Errorf("admin token: %s: the first line is empty", a.TokenFile)
	}
	return tok, nil
}
