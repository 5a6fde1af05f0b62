// Package metrics holds the server's Prometheus families (docs/observability.md, the metric
// table): requests, inferences and executions, the request and phase latency histograms,
// batch sizes, queue depth and requests in flight, model loads and states, readiness and
// engine memory; (NewReload) configuration reloads and artifact verification failures; and
// (NewShadow) shadow evaluation: divergence and agreement per output, requests by result.
// Everything is registered on the registry New is given, never the global one.
//
// The hot path pays one Observe per histogram and stage: the label children of a model version
// are resolved once, when it is loaded (repository.VersionObserver), and handed to its runner as
// engines.Observers; ObserveRequest finds them with one map lookup on the model and version
// strings it is given (no string is built) and allocates nothing. The gauges (queue depth, in
// flight, model state, readiness, engine memory) are read from the repository when /metrics is
// scraped.
package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// DurationBuckets are the buckets of the request and phase histograms, in seconds: 10 µs to
// 2.5 s. The latency SLO rules read the 0.01 bucket.
var DurationBuckets = []float64{0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
	0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// BatchSizeBuckets are the buckets of policyd_batch_size, in rows.
var BatchSizeBuckets = []float64{1, 2, 4, 8, 16, 32, 64, 128, 256}

// LoadBuckets are the buckets of policyd_model_load_duration_seconds, in seconds.
var LoadBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}

// versionLabels are the labels naming a model version and where it runs (L in the docs).
var versionLabels = []string{"model", "version", "backend", "device"}

// States of policyd_model_state's state label.
var states = []string{"loading", "ready", "unavailable", "failed", "unloading"}

// Repository is what the metrics read of the model repository; *repository.Repository
// implements it.
type Repository interface {
	// All lists the versions served (ready or failed).
	All() []*repository.Version
	// Index lists every version known, also those unloaded through the repository API.
	Index() []repository.IndexEntry
	// Get finds a served version (version "": the default one).
	Get(model, version string) (*repository.Version, error)
	// Ready reports whether every version served is ready.
	Ready() bool
	// SetObserver makes the metrics follow the loads and unloads.
	SetObserver(repository.VersionObserver)
}

// Server is the server's metrics. Create it with New; it is safe for concurrent use.
type Server struct {
	repo Repository

	requests   *prometheus.CounterVec
	inferences *prometheus.CounterVec
	executions *prometheus.CounterVec
	requestDur *prometheus.HistogramVec
	queueDur   *prometheus.HistogramVec
	inputDur   *prometheus.HistogramVec
	inferDur   *prometheus.HistogramVec
	outputDur  *prometheus.HistogramVec
	batchSize  *prometheus.HistogramVec
	loadDur    *prometheus.HistogramVec
	golden     *prometheus.CounterVec  // policyd_golden_checks_total, deleted with the load durations
	fallbacks  *prometheus.CounterVec  // model, version, kind, reason
	vecs       []*prometheus.MetricVec // every vec with model and version labels, for deletion
	queueDepth *prometheus.Desc
	inflight   *prometheus.Desc
	modelState *prometheus.Desc
	engineMem  *prometheus.Desc
	pinnedMem  *prometheus.Desc
	unknown    *entry // the labels of requests for a model that is not served

	mu        sync.Mutex                            // guards entries, transient and retiring
	entries   map[versionKey]*entry                 // the versions loaded; published in lookup
	lookup    atomic.Pointer[map[versionKey]*entry] // read by ObserveRequest without a lock
	transient map[versionKey]string                 // versions being loaded ("loading")
	retiring  map[versionKey]int                    // versions being unloaded, by count
}

type versionKey struct{ model, version string }

// entry is the label children of one model version (or of a model that is not served):
// resolved once, used by every request.
type entry struct {
	labels   [4]string // model, version, backend, device
	loaded   map[*repository.Version]bool
	duration prometheus.Observer
	requests [nProtocols][nSlots]atomic.Pointer[prometheus.Counter]
}

// New registers the metric families on reg and makes them follow repo (repo.SetObserver):
// call it before the repository loads anything. It fails only when reg already holds one of
// the families.
func New(reg prometheus.Registerer, repo Repository) (*Server, error) {
	s := &Server{
		repo:      repo,
		entries:   map[versionKey]*entry{},
		transient: map[versionKey]string{},
		retiring:  map[versionKey]int{},
	}
	counter := func(name, help string, extra ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, append(append([]string(nil), versionLabels...), extra...))
	}
	hist := func(name, help string, buckets []float64, labels []string) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, labels)
	}
	s.requests = counter("policyd_requests_total",
		"Requests answered, by model version, protocol (v2, v2-binary, predict, grpc, grpc-stream), HTTP status code (for gRPC the status the same answer has over HTTP) and outcome (success, client_error, not_found, overloaded, timeout, unavailable, internal_error).",
		"protocol", "code", "outcome")
	s.inferences = counter("policyd_inferences_total", "Rows served (a request of batch 8 counts 8).")
	s.executions = counter("policyd_executions_total", "Engine runs (batches); inferences / executions is the mean batch size.")
	s.requestDur = hist("policyd_request_duration_seconds", "A request from the moment it was read to the response written.", DurationBuckets, versionLabels)
	s.queueDur = hist("policyd_queue_duration_seconds", "Waiting in the version's queue for the batcher and a free engine context.", DurationBuckets, versionLabels)
	s.inputDur = hist("policyd_compute_input_duration_seconds", "Preparing inputs: gathering a batch's inputs into one buffer (0 for a request run alone).", DurationBuckets, versionLabels)
	s.inferDur = hist("policyd_compute_infer_duration_seconds", "The engine run of the batch the request was in.", DurationBuckets, versionLabels)
	s.outputDur = hist("policyd_compute_output_duration_seconds", "Splitting the batch's outputs and encoding the responses of its requests.", DurationBuckets, versionLabels)
	s.batchSize = hist("policyd_batch_size", "Rows per engine execution.", BatchSizeBuckets, versionLabels)
	s.loadDur = hist("policyd_model_load_duration_seconds", "Time to load a version: read the verified model, build the engine and its contexts, warm them up.", LoadBuckets, []string{"model", "version", "backend"})
	s.golden = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "policyd_golden_checks_total",
		Help: "Golden checks run when a version loads, one per engine (GPU) and backend tried, by result: pass, fail (an output left its tolerance or a discrete action flipped) or error (the cases could not run)."},
		[]string{"model", "version", "backend", "result"})
	s.queueDepth = prometheus.NewDesc("policyd_queue_depth", "Requests waiting in the version's queue now.", versionLabels, nil)
	s.inflight = prometheus.NewDesc("policyd_inflight_requests", "Requests accepted and not yet answered.", versionLabels, nil)
	s.modelState = prometheus.NewDesc("policyd_model_state", "1 for the version's current state, 0 for the others (loading, ready, unavailable, failed, unloading).", []string{"model", "version", "state"}, nil)
	s.engineMem = prometheus.NewDesc("policyd_engine_memory_bytes", "Memory an engine holds: arena (activations of every context) and weights (the engine's, once, and the contexts' own copies).", append(append([]string(nil), versionLabels...), "kind"), nil)
	s.pinnedMem = prometheus.NewDesc("policyd_pinned_memory_bytes", "Page-locked host memory for host/device copies (0: no backend in use pins memory today).", []string{"device"}, nil)
	s.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "policyd_fallback_total",
		Help: "Requests with a deadline the model did not answer in time, by how they were answered (kind: last_action, constant, version, or none: a 504 or a late answer) and why (reason: passed, infeasible: not run; late: run, answered after the deadline)."},
		[]string{"model", "version", "kind", "reason"})
	ready := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "policyd_ready",
		Help: "1 when GET /v2/health/ready answers 200 (every configured model version loaded and warmed up), else 0.",
	}, func() float64 {
		if repo.Ready() {
			return 1
		}
		return 0
	})
	cs := []prometheus.Collector{s.requests, s.inferences, s.executions, s.requestDur, s.queueDur, s.inputDur,
		s.inferDur, s.outputDur, s.batchSize, s.loadDur, s.golden, s.fallbacks, ready, (*scrape)(s)}
	if err := registerAll(reg, cs...); err != nil {
		return nil, err
	}
	s.vecs = []*prometheus.MetricVec{s.requests.MetricVec, s.inferences.MetricVec, s.executions.MetricVec,
		s.requestDur.MetricVec, s.queueDur.MetricVec, s.inputDur.MetricVec, s.inferDur.MetricVec,
		s.outputDur.MetricVec, s.batchSize.MetricVec, s.loadDur.MetricVec}
	s.unknown = s.newEntry([4]string{})
	s.publish()
	repo.SetObserver(s)
	return s, nil
}

func (s *Server) newEntry(labels [4]string) *entry {
	return &entry{
		labels:   labels,
		loaded:   map[*repository.Version]bool{},
		duration: s.requestDur.WithLabelValues(labels[:]...),
	}
}

// publish makes ObserveRequest see the entries as they are now (the caller holds mu, or is New).
func (s *Server) publish() {
	m := make(map[versionKey]*entry, len(s.entries))
	for k, e := range s.entries {
		m[k] = e
	}
	s.lookup.Store(&m)
}

// Loading implements repository.VersionObserver.
func (s *Server) Loading(model, version string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.transient[versionKey{model, version}] = "loading"
}

// Loaded implements repository.VersionObserver: it records the load time and, for a version that
// is ready, resolves its label children and returns them as its runner's observers.
func (s *Server) Loaded(v *repository.Version) *engines.Observers {
	k := versionKey{v.Name(), v.Version()}
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.transient, k)
	if v.Dir() != "" { // a version the repository lacks was not loaded at all
		s.loadDur.WithLabelValues(v.Name(), v.Version(), v.Backend()).Observe(v.LoadDuration().Seconds())
	}
	for _, g := range v.GoldenChecks() {
		s.golden.WithLabelValues(v.Name(), v.Version(), g.Result.Backend, g.Outcome()).Inc()
	}
	if ok, _ := v.Ready(); !ok {
		return nil
	}
	labels := [4]string{v.Name(), v.Version(), v.Backend(), v.Device()}
	e := s.entries[k]
	if e == nil || e.labels != labels {
		if e != nil { // reloaded on another backend or device: the old series go
			s.deleteSeries(e.labels[:], false)
		}
		s.deleteSeries([]string{k.model, k.version, "", ""}, false) // requests counted while it had failed
		old := e
		e = s.newEntry(labels)
		if old != nil {
			e.loaded = old.loaded
		}
		s.entries[k] = e
		s.publish()
	}
	e.loaded[v] = true
	l := labels[:]
	return &engines.Observers{
		Queue:         s.queueDur.WithLabelValues(l...),
		ComputeInput:  s.inputDur.WithLabelValues(l...),
		ComputeInfer:  s.inferDur.WithLabelValues(l...),
		ComputeOutput: s.outputDur.WithLabelValues(l...),
		BatchSize:     s.batchSize.WithLabelValues(l...),
		Inferences:    s.inferences.WithLabelValues(l...),
		Executions:    s.executions.WithLabelValues(l...),
	}
}

// Unloading implements repository.VersionObserver.
func (s *Server) Unloading(v *repository.Version) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retiring[versionKey{v.Name(), v.Version()}]++
}

// Unloaded implements repository.VersionObserver: once no loaded instance of the model version
// remains (a reload loads the new one before it retires the old one), its series are deleted.
func (s *Server) Unloaded(v *repository.Version) {
	k := versionKey{v.Name(), v.Version()}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.retiring[k]--; s.retiring[k] <= 0 {
		delete(s.retiring, k)
	}
	e := s.entries[k]
	if e != nil {
		delete(e.loaded, v)
		if len(e.loaded) > 0 {
			return
		}
		delete(s.entries, k)
		s.publish()
	} else if cur, err := s.repo.Get(k.model, k.version); err == nil && cur.Version() == k.version {
		return // a version that had failed, replaced by another attempt that failed too
	}
	s.deleteSeries([]string{k.model, k.version}, true)
}

// deleteSeries deletes every series whose labels start with values (model, version, and
// backend, device when given); the load durations too when loads is set.
func (s *Server) deleteSeries(values []string, loads bool) {
	l := prometheus.Labels{}
	for i, v := range values {
		l[versionLabels[i]] = v
	}
	for _, vec := range s.vecs {
		if vec != s.loadDur.MetricVec {
			vec.DeletePartialMatch(l)
		}
	}
	if loads {
		delete(l, "device")
		s.loadDur.DeletePartialMatch(l)
		delete(l, "backend")
		s.golden.DeletePartialMatch(l)
	}
	if len(values) >= 2 {
		s.fallbacks.DeletePartialMatch(prometheus.Labels{"model": values[0], "version": values[1]})
	}
}

// ObserveFallback counts one request with a deadline that the model did not answer in time
// (server.RequestInfo.Fallback and FallbackReason): policyd_fallback_total. model and
// version name the version asked (its resolved version).
func (s *Server) ObserveFallback(model, version, kind, reason string) {
	s.fallbacks.WithLabelValues(model, version, kind, reason).Inc()
}

// Outcome is the outcome label of policyd_requests_total.
type Outcome uint8

// Outcomes of a request.
const (
	// OutcomeFromCode derives the outcome from the status code alone (a 503 is then
	// "unavailable"); see OutcomeOf.
	OutcomeFromCode Outcome = iota
	OutcomeSuccess
	OutcomeClientError
	OutcomeNotFound
	OutcomeOverloaded
	OutcomeTimeout
	OutcomeUnavailable
	OutcomeInternalError
)

var outcomeNames = [...]string{"", "success", "client_error", "not_found", "overloaded", "timeout", "unavailable", "internal_error"}

// String is the label value ("" for OutcomeFromCode).
func (o Outcome) String() string {
	if int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return "Outcome(" + strconv.Itoa(int(o)) + ")"
}

// OutcomeOf derives a request's outcome from its HTTP status code, whether the response had
// a Retry-After header (the server sets it on a 503 for a full queue or a queue timeout),
// and whether the request timed out in the queue (limits.queue_timeout, or its own timeout
// parameter): 2xx and 3xx success; 404 not_found; 429 overloaded; 503 timeout when timedOut,
// else overloaded with Retry-After, else unavailable (version not loaded or closing); 504 (a
// request deadline that could not be met) timeout; other 4xx client_error; other 5xx
// internal_error.
func OutcomeOf(code int, retryAfter, timedOut bool) Outcome {
	switch {
	case code >= 200 && code < 400:
		return OutcomeSuccess
	case code == 404:
		return OutcomeNotFound
	case code == 429:
		return OutcomeOverloaded
	case code == 503 && timedOut:
		return OutcomeTimeout
	case code == 503 && retryAfter:
		return OutcomeOverloaded
	case code == 503:
		return OutcomeUnavailable
	case code == 504: // a deadline that could not be met, without a fallback (docs/api.md, Deadlines)
		return OutcomeTimeout
	case code >= 400 && code < 500:
		return OutcomeClientError
	}
	return OutcomeInternalError
}

// Protocols the fast path knows; others are counted too, through a slower lookup.
const nProtocols = 5

func protocolIndex(p string) int {
	switch p {
	case "v2":
		return 0
	case "v2-binary":
		return 1
	case "predict":
		return 2
	case "grpc":
		return 3
	case "grpc-stream":
		return 4
	}
	return -1
}

// slots are the (code, outcome) pairs whose counters an entry caches.
var slots = [...]struct {
	code    int
	outcome Outcome
}{
	{200, OutcomeSuccess}, {400, OutcomeClientError}, {404, OutcomeNotFound}, {408, OutcomeClientError},
	{413, OutcomeClientError}, {429, OutcomeOverloaded}, {500, OutcomeInternalError},
	{503, OutcomeOverloaded}, {503, OutcomeTimeout}, {503, OutcomeUnavailable},
}

const nSlots = len(slots)

func slotIndex(code int, o Outcome) int {
	for i := range slots {
		if slots[i].code == code && slots[i].outcome == o {
			return i
		}
	}
	return -1
}

// ObserveRequest records one answered request: policyd_requests_total and
// policyd_request_duration_seconds. model and version name the version that served it (pass
// Model.Version(), the resolved version, not the one the URL asked for, which may be "");
// protocol is "v2", "v2-binary", "predict", "grpc" or "grpc-stream"; code the HTTP status (of a gRPC answer: the status the same answer has over HTTP); outcome OutcomeOf(code,
// retryAfter, timedOut) (OutcomeFromCode when the caller cannot tell: a 503 then counts as
// unavailable); d the time from reading the request to writing the response.
//
// A model version that is not served (unknown, or failed to load) is counted under its
// model and version when the repository lists it, else under its model with empty version,
// backend and device when the model is served, else with every label empty: a client cannot
// create series with names of its own. For a served version and the usual codes it allocates
// nothing.
func (s *Server) ObserveRequest(model, version, protocol string, code int, outcome Outcome, d time.Duration) {
	if outcome == OutcomeFromCode {
		outcome = OutcomeOf(code, false, false)
	}
	e := (*s.lookup.Load())[versionKey{model, version}]
	if e == nil {
		s.observeUnserved(model, version, protocol, code, outcome, d)
		return
	}
	e.duration.Observe(d.Seconds())
	p, slot := protocolIndex(protocol), slotIndex(code, outcome)
	if p < 0 || slot < 0 {
		s.requests.WithLabelValues(e.labels[0], e.labels[1], e.labels[2], e.labels[3], protocol, strconv.Itoa(code), outcome.String()).Inc()
		return
	}
	c := e.requests[p][slot].Load()
	if c == nil {
		n := s.requests.WithLabelValues(e.labels[0], e.labels[1], e.labels[2], e.labels[3], protocol, strconv.Itoa(code), outcome.String())
		e.requests[p][slot].CompareAndSwap(nil, &n)
		c = e.requests[p][slot].Load()
	}
	(*c).Inc()
}

// observeUnserved is ObserveRequest for a version without an entry (the slow path).
func (s *Server) observeUnserved(model, version, protocol string, code int, outcome Outcome, d time.Duration) {
	labels := [4]string{}
	if v, err := s.repo.Get(model, version); err == nil {
		labels = [4]string{v.Name(), v.Version(), v.Backend(), v.Device()}
	} else if _, err := s.repo.Get(model, ""); err == nil {
		labels[0] = model
	}
	if labels == s.unknown.labels {
		s.unknown.duration.Observe(d.Seconds())
	} else {
		s.requestDur.WithLabelValues(labels[:]...).Observe(d.Seconds())
	}
	s.requests.WithLabelValues(labels[0], labels[1], labels[2], labels[3], protocol, strconv.Itoa(code), outcome.String()).Inc()
}

// registerAll registers cs on reg, all or none: on the first failure it unregisters those it
// registered and returns the error.
func registerAll(reg prometheus.Registerer, cs ...prometheus.Collector) error {
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, d := range cs[:i] {
				reg.Unregister(d)
			}
			return err
		}
	}
	return nil
}
