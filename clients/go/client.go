package policyd

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc"
)

// Client talks to one policyd server, over HTTP or gRPC. It is safe for concurrent use by
// many goroutines (its connections are pooled and kept alive); Close releases them.
type Client struct {
	t   transport
	cfg clientConfig
}

// transport is a protocol: HTTP (binary or JSON bodies) or gRPC. Each call makes one
// attempt; the Client retries.
type transport interface {
	health(ctx context.Context, what, model, version string) (bool, error)
	metadata(ctx context.Context, model, version string) (*ModelMetadata, error)
	config(ctx context.Context, model, version string) (map[string]any, error)
	infer(ctx context.Context, r *inferRequest) (*InferResult, error)
	close() error
}

type clientConfig struct {
	retries     int
	backoffBase time.Duration
	backoffMax  time.Duration
	timeout     time.Duration
	httpClient  *http.Client
	idleConn    time.Duration
	grpcOpts    []grpc.DialOption
	fast        bool // the fasthttp transport (benchmarks only)
}

// Option configures a Client.
type Option func(*clientConfig)

// WithRetries sets how many times a call is retried after a failure that certainly did not
// run it (default 3; 0 turns retries off).
func WithRetries(n int) Option { return func(c *clientConfig) { c.retries = max(n, 0) } }

// WithBackoff sets the retry backoff: the n-th retry waits a random time in [d/2, d] with
// d = min(base·2^n, max) (defaults 50ms and 1s), and never less than the server's Retry-After.
func WithBackoff(base, maxDelay time.Duration) Option {
	return func(c *clientConfig) { c.backoffBase, c.backoffMax = base, maxDelay }
}

// WithRequestTimeout bounds each call, retries included, when its context has no earlier
// deadline (default 30s; 0: only the context bounds it).
func WithRequestTimeout(d time.Duration) Option { return func(c *clientConfig) { c.timeout = d } }

// WithIdleConnTimeout closes a keep-alive connection idle this long (default 30s). Keep it
// below the server's server.idle_timeout (2 min by default) and any proxy's: a request sent
// on a connection the server is closing at that moment fails after it was written, and is
// not retried (docs/clients.md, "Keep-alive connections").
func WithIdleConnTimeout(d time.Duration) Option { return func(c *clientConfig) { c.idleConn = d } }

// WithHTTPClient makes the HTTP transport use hc (its Transport, TLS, proxies) instead of
// the client's own keep-alive transport.
func WithHTTPClient(hc *http.Client) Option { return func(c *clientConfig) { c.httpClient = hc } }

// WithGRPCDialOptions adds dial options for the gRPC transport (the default is plain text).
func WithGRPCDialOptions(opts ...grpc.DialOption) Option {
	return func(c *clientConfig) { c.grpcOpts = append(c.grpcOpts, opts...) }
}

// withFastHTTP switches the HTTP transport to fasthttp where the tests linked it in; kept for
// the benchmark that chose net/http (docs/clients.md).
func withFastHTTP() Option { return func(c *clientConfig) { c.fast = true } }

// New connects to the server at url: "http://host:port" (HTTP, the default scheme when url
// has none) or "grpc://host:port" (gRPC). It does not contact the server.
func New(url string, opts ...Option) (*Client, error) {
	cfg := clientConfig{retries: 3, backoffBase: 50 * time.Millisecond, backoffMax: time.Second, timeout: 30 * time.Second, idleConn: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	var (
		t   transport
		err error
	)
	switch {
	case strings.HasPrefix(url, "grpc://"):
		t, err = newGRPC(strings.TrimPrefix(url, "grpc://"), cfg)
	case strings.HasPrefix(url, "https://"), strings.HasPrefix(url, "http://"):
		t, err = newHTTP(strings.TrimRight(url, "/"), cfg)
	case strings.Contains(url, "://"):
		return nil, fmt.Errorf("policyd: url %q: the scheme must be http, https or grpc", url)
	default:
		t, err = newHTTP("http://"+strings.TrimRight(url, "/"), cfg)
	}
	if err != nil {
		return nil, err
	}
	return &Client{t: t, cfg: cfg}, nil
}

// NewGRPC connects to the gRPC API at addr ("host:port").
func NewGRPC(addr string, opts ...Option) (*Client, error) {
	return New("grpc://"+strings.TrimPrefix(addr, "grpc://"), opts...)
}

// Close releases the client's connections. Calls after Close fail.
func (c *Client) Close() error { return c.t.close() }

// Live says whether the server process serves (GET /v2/health/live).
func (c *Client) Live(ctx context.Context) (bool, error) {
	return withRetry(c, ctx, false, func(ctx context.Context) (bool, error) { return c.t.health(ctx, "live", "", "") })
}

// Ready says whether every configured model version is loaded (GET /v2/health/ready).
func (c *Client) Ready(ctx context.Context) (bool, error) {
	return withRetry(c, ctx, false, func(ctx context.Context) (bool, error) { return c.t.health(ctx, "ready", "", "") })
}

// ModelReady says whether a model version (version "" = the default one) is ready; an
// unknown model or version is a *NotFoundError.
func (c *Client) ModelReady(ctx context.Context, model, version string) (bool, error) {
	return withRetry(c, ctx, false, func(ctx context.Context) (bool, error) { return c.t.health(ctx, "model", model, version) })
}

// TensorMetadata is one input or output of a model; -1 marks a free dimension.
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata is a model version's metadata (GET /v2/models/{m}[/versions/{v}]).
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions"`
	Version  string           `json:"version"` // the version described ("" over gRPC)
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// Metadata returns a model version's metadata (version "" = the default one).
func (c *Client) Metadata(ctx context.Context, model, version string) (*ModelMetadata, error) {
	return withRetry(c, ctx, false, func(ctx context.Context) (*ModelMetadata, error) { return c.t.metadata(ctx, model, version) })
}

// Config returns a model version's Triton model configuration as decoded JSON (over gRPC,
// the ModelConfig message in the proto's JSON form).
func (c *Client) Config(ctx context.Context, model, version string) (map[string]any, error) {
	return withRetry(c, ctx, false, func(ctx context.Context) (map[string]any, error) { return c.t.config(ctx, model, version) })
}

// InferResult is the answer to Infer: the outputs in the order the server sent them.
type InferResult struct {
	ModelName    string
	ModelVersion string
	ID           string
	Outputs      []Tensor
}

// Output returns the output called name.
func (r *InferResult) Output(name string) (Tensor, bool) {
	for _, o := range r.Outputs {
		if o.Name == name {
			return o, true
		}
	}
	return Tensor{}, false
}

// inferRequest is one Infer call, as the transports encode it.
type inferRequest struct {
	model, version string
	id             string
	inputs         []Tensor
	outputs        []string
	json           bool
	params         []param
	inSequence     bool
}

// param is one request parameter: a bool, uint64, int64 or string value.
type param struct {
	key   string
	value any
}

// InferOption sets something of one inference request.
type InferOption func(*inferRequest)

// ActOption is an option of Policy.Act and Episode.Act: the same as Infer's.
type ActOption = InferOption

// WithVersion names the model version (default: the model's default version).
func WithVersion(v string) InferOption { return func(r *inferRequest) { r.version = v } }

// WithOutputs asks for these outputs only, in this order (default: every output).
func WithOutputs(names ...string) InferOption {
	return func(r *inferRequest) { r.outputs = append([]string(nil), names...) }
}

// WithJSON sends and receives the tensors as JSON instead of binary (HTTP only; FP16 and
// BF16 cannot travel as JSON).
func WithJSON() InferOption { return func(r *inferRequest) { r.json = true } }

// WithRequestID sets the request's "id", echoed in the answer.
func WithRequestID(id string) InferOption { return func(r *inferRequest) { r.id = id } }

// WithSeed makes the samples of the policy's stochastic heads reproducible ("seed").
func WithSeed(seed uint64) InferOption { return setParam("seed", seed) }

// WithPriority sets the request's queue level ("priority"; 1 is the highest, 0 the model's
// default).
func WithPriority(level uint) InferOption { return setParam("priority", uint64(level)) }

// WithTimeout bounds the request's wait in the server's queue ("timeout", in µs): still
// queued then, it is answered 503 and never runs. It does not bound the call (use the
// context for that).
func WithTimeout(d time.Duration) InferOption {
	return setParam("timeout", uint64(max(d.Microseconds(), 1)))
}

// WithSequence makes the request a step of the server-side sequence id (docs/api.md
// "Stateful sequences"). Episode does this for you.
func WithSequence(id string, start, end bool) InferOption {
	return func(r *inferRequest) {
		setParam("sequence_id", id)(r)
		setParam("sequence_start", start)(r)
		setParam("sequence_end", end)(r)
		r.inSequence = true
	}
}

// WithParameter sets any other request parameter (bool, string, int64 or uint64 value).
func WithParameter(key string, value any) InferOption { return setParam(key, value) }

func setParam(key string, value any) InferOption {
	return func(r *inferRequest) {
		switch v := value.(type) {
		case int:
			value = int64(v)
		case uint:
			value = uint64(v)
		case int32:
			value = int64(v)
		case uint32:
			value = uint64(v)
		}
		for i := range r.params {
			if r.params[i].key == key {
				r.params[i].value = value
				return
			}
		}
		r.params = append(r.params, param{key, value})
	}
}

// Infer runs model on inputs. Every input needs its Name; the outputs come back with their
// datatype and shape. Only failures where the request certainly did not run are retried.
func (c *Client) Infer(ctx context.Context, model string, inputs []Tensor, opts ...InferOption) (*InferResult, error) {
	r := &inferRequest{model: model, inputs: inputs}
	for _, o := range opts {
		o(r)
	}
	for _, in := range inputs {
		if in.Name == "" {
			return nil, fmt.Errorf("policyd: infer %s: an input has no name", model)
		}
		if err := in.check(); err != nil {
			return nil, fmt.Errorf("policyd: infer %s: %w", model, err)
		}
	}
	for _, p := range r.params {
		switch p.value.(type) {
		case bool, string, int64, uint64:
		default:
			return nil, fmt.Errorf("policyd: infer %s: parameter %q: unsupported type %T", model, p.key, p.value)
		}
	}
	return withRetry(c, ctx, r.inSequence, func(ctx context.Context) (*InferResult, error) { return c.t.infer(ctx, r) })
}

// withRetry runs call, and again after a backoff while its failure is retryable, at most
// retries more times and never past the context's deadline.
func withRetry[T any](c *Client, ctx context.Context, inSequence bool, call func(context.Context) (T, error)) (T, error) {
	if c.cfg.timeout > 0 {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, c.cfg.timeout)
			defer cancel()
		}
	}
	for attempt := 0; ; attempt++ {
		v, err := call(ctx)
		if err == nil {
			return v, nil
		}
		ok, after := retryable(err, inSequence)
		if !ok || attempt >= c.cfg.retries {
			return v, err
		}
		d := max(c.backoff(attempt), after) // the server's Retry-After is a lower bound, as in the Python client
		if dl, has := ctx.Deadline(); has && time.Until(dl) < d {
			return v, err // no time left for another try: the server's answer is the truer one
		}
		t := time.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return v, err
		case <-t.C:
		}
	}
}

func (c *Client) backoff(attempt int) time.Duration {
	d := c.cfg.backoffBase << min(attempt, 20)
	if d > c.cfg.backoffMax || d <= 0 {
		d = c.cfg.backoffMax
	}
	return d/2 + time.Duration(rand.Int64N(int64(d/2)+1))
}

// ctxError turns a context's end into a TimeoutError (deadline) or returns its error.
func ctxError(op string, ctx context.Context, err error) error {
	if ctx.Err() == nil {
		return nil
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &TimeoutError{Op: op, Err: ctx.Err()}
	}
	return fmt.Errorf("policyd: %s: %w", op, ctx.Err())
}
