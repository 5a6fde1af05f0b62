package policyd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// httpTransport speaks the v2 HTTP API: binary tensor bodies by default, JSON on request.
type httpTransport struct {
	base    string // scheme://host:port
	addr    string // host:port, for errors
	backend httpBackend
}

// newFastBackend makes the fasthttp backend; only the package's tests set it
// (fasthttp_test.go), so that the package does not depend on fasthttp.
var newFastBackend func(idleConn time.Duration) httpBackend

// httpBackend is an HTTP client library: net/http, or fasthttp in the benchmarks.
type httpBackend interface {
	do(ctx context.Context, method, url string, inferHeaderLen int, body []byte) (httpAnswer, error)
	close()
}

// httpAnswer is what the transport reads of a response.
type httpAnswer struct {
	status         int
	inferHeaderLen string
	retryAfter     string
	requestID      string
	notReady       string
	body           []byte
}

func newHTTP(base string, cfg clientConfig) (*httpTransport, error) {
	u, err := url.Parse(base)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("policyd: url %q: %v", base, err)
	}
	t := &httpTransport{base: base, addr: u.Host}
	switch {
	case cfg.fast && newFastBackend != nil:
		t.backend = newFastBackend(cfg.idleConn)
	default:
		hc := cfg.httpClient
		if hc == nil {
			hc = &http.Client{Transport: &http.Transport{
				Proxy:               http.ProxyFromEnvironment,
				DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConns:        256,
				MaxIdleConnsPerHost: 256,
				IdleConnTimeout:     cfg.idleConn,
				// Tensors do not compress: do not ask the server to spend CPU on gzip.
				DisableCompression: true,
				ForceAttemptHTTP2:  false,
			}}
		}
		t.backend = &netBackend{hc: hc}
	}
	return t, nil
}

func (t *httpTransport) close() error { t.backend.close(); return nil }

func modelPath(model, version string) string {
	p := "/v2/models/" + url.PathEscape(model)
	if version != "" {
		p += "/versions/" + url.PathEscape(version)
	}
	return p
}

// call makes one request and maps a failure to this package's errors. idempotent requests
// (GET) report a connection failure as never run.
func (t *httpTransport) call(ctx context.Context, op, method, path string, ihcl int, body []byte) (httpAnswer, error) {
	a, err := t.backend.do(ctx, method, t.base+path, ihcl, body)
	if err != nil {
		if e := ctxError(op, ctx, err); e != nil {
			return a, e
		}
		var ce *ConnectError
		if errors.As(err, &ce) {
			ce.Addr = t.addr
			if method == http.MethodGet {
				ce.MayHaveRun = false
			}
			return a, ce
		}
		return a, &ConnectError{Addr: t.addr, MayHaveRun: method != http.MethodGet, Err: err}
	}
	return a, nil
}

// statusError maps a non-200 answer to the error of its class, with the server's message.
func statusError(a httpAnswer) error {
	msg := strings.TrimSpace(string(a.body))
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(a.body, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	if msg == "" {
		msg = a.notReady
	}
	if msg == "" {
		msg = http.StatusText(a.status)
	}
	switch {
	case a.status == 404:
		return &NotFoundError{Message: msg, RequestID: a.requestID}
	case a.status == 503:
		u := &UnavailableError{Message: msg, RequestID: a.requestID}
		if s, err := strconv.Atoi(strings.TrimSpace(a.retryAfter)); err == nil && s >= 0 {
			u.RetryAfter = time.Duration(max(s, 0)) * time.Second
			if s == 0 {
				u.RetryAfter = time.Millisecond
			}
		}
		u.Overloaded = overloadedMessage(msg)
		return u
	case a.status >= 400 && a.status < 500:
		return &InvalidArgumentError{Status: a.status, Message: msg, RequestID: a.requestID}
	}
	return &ServerError{Status: a.status, Message: msg, RequestID: a.requestID}
}

func (t *httpTransport) health(ctx context.Context, what, model, version string) (bool, error) {
	path := "/v2/health/" + what
	if what == "model" {
		path = modelPath(model, version) + "/ready"
	}
	a, err := t.call(ctx, what, http.MethodGet, path, -1, nil)
	if err != nil {
		return false, err
	}
	switch a.status {
	case 200:
		return true, nil
	case 400:
		return false, nil // v2: "not ready" is a 4xx with an empty body
	}
	return false, statusError(a)
}

func (t *httpTransport) getJSON(ctx context.Context, op, path string, v any) error {
	a, err := t.call(ctx, op, http.MethodGet, path, -1, nil)
	if err != nil {
		return err
	}
	if a.status != 200 {
		return statusError(a)
	}
	if err := json.Unmarshal(a.body, v); err != nil {
		return &ServerError{Status: a.status, Message: fmt.Sprintf("%s: unreadable answer: %v", op, err)}
	}
	return nil
}

func (t *httpTransport) metadata(ctx context.Context, model, version string) (*ModelMetadata, error) {
	var m ModelMetadata
	if err := t.getJSON(ctx, "metadata", modelPath(model, version), &m); err != nil {
		return nil, err
	}
	return &m, nil
}

func (t *httpTransport) config(ctx context.Context, model, version string) (map[string]any, error) {
	var m map[string]any
	if err := t.getJSON(ctx, "config", modelPath(model, version)+"/config", &m); err != nil {
		return nil, err
	}
	return m, nil
}

func (t *httpTransport) infer(ctx context.Context, r *inferRequest) (*InferResult, error) {
	body, ihcl, err := encodeInfer(r)
	if err != nil {
		return nil, err
	}
	a, err := t.call(ctx, "infer", http.MethodPost, modelPath(r.model, r.version)+"/infer", ihcl, body)
	if err != nil {
		return nil, err
	}
	if a.status != 200 {
		return nil, statusError(a)
	}
	res, err := decodeInfer(a)
	if err != nil {
		return nil, &ServerError{Status: a.status, Message: "infer: unreadable answer: " + err.Error(), RequestID: a.requestID}
	}
	return res, nil
}

// encodeInfer writes the request body; ihcl is the Inference-Header-Content-Length, -1 for
// a JSON body.
func encodeInfer(r *inferRequest) ([]byte, int, error) {
	n := 256
	for _, in := range r.inputs {
		n += 64 + len(in.Data)
	}
	b := make([]byte, 0, n)
	b = append(b, '{')
	if r.id != "" {
		b = append(b, `"id":`...)
		b = appendString(b, r.id)
		b = append(b, ',')
	}
	if len(r.params) > 0 || !r.json {
		b = append(b, `"parameters":{`...)
		for i, p := range r.params {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, p.key)
			b = append(b, ':')
			switch v := p.value.(type) {
			case bool:
				b = strconv.AppendBool(b, v)
			case string:
				b = appendString(b, v)
			case int64:
				b = strconv.AppendInt(b, v, 10)
			case uint64:
				b = strconv.AppendUint(b, v, 10)
			}
		}
		if !r.json {
			if len(r.params) > 0 {
				b = append(b, ',')
			}
			b = append(b, `"binary_data_output":true`...)
		}
		b = append(b, "},"...)
	}
	b = append(b, `"inputs":[`...)
	for i, in := range r.inputs {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, in.Name)
		b = append(b, `,"datatype":`...)
		b = appendString(b, in.Datatype)
		b = append(b, `,"shape":[`...)
		for j, d := range in.Shape {
			if j > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, d, 10)
		}
		b = append(b, ']')
		if r.json {
			var err error
			b = append(b, `,"data":`...)
			if b, err = appendJSONData(b, in); err != nil {
				return nil, 0, err
			}
			b = append(b, '}')
		} else {
			b = append(b, `,"parameters":{"binary_data_size":`...)
			b = strconv.AppendInt(b, int64(len(in.Data)), 10)
			b = append(b, "}}"...)
		}
	}
	b = append(b, ']')
	if len(r.outputs) > 0 {
		b = append(b, `,"outputs":[`...)
		for i, o := range r.outputs {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"name":`...)
			b = appendString(b, o)
			b = append(b, '}')
		}
		b = append(b, ']')
	}
	b = append(b, '}')
	if r.json {
		return b, -1, nil
	}
	ihcl := len(b)
	for _, in := range r.inputs {
		b = append(b, in.Data...)
	}
	return b, ihcl, nil
}

func appendString(b []byte, s string) []byte {
	simple := true
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= 0x7f {
			simple = false
			break
		}
	}
	if simple {
		b = append(b, '"')
		b = append(b, s...)
		return append(b, '"')
	}
	q, _ := json.Marshal(s)
	return append(b, q...)
}

// appendJSONData writes a tensor's elements as a flat JSON array.
func appendJSONData(b []byte, t Tensor) ([]byte, error) {
	if t.Datatype == FP16 || t.Datatype == BF16 {
		return nil, fmt.Errorf("policyd: input %q: %s cannot be sent as JSON (the server takes it in binary only): drop WithJSON", t.Name, t.Datatype)
	}
	vals, err := t.AsFloat64()
	if err != nil {
		return nil, err
	}
	b = append(b, '[')
	switch t.Datatype {
	case INT64:
		v, _ := t.Int64s()
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendInt(b, x, 10)
		}
	case UINT64:
		v, _ := Values[uint64](t)
		for i, x := range v {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, x, 10)
		}
	default:
		bits := 64
		if t.Datatype == FP32 {
			bits = 32
		}
		for i, x := range vals {
			if i > 0 {
				b = append(b, ',')
			}
			switch {
			case t.Datatype == BOOL:
				b = strconv.AppendBool(b, x != 0)
			case t.Datatype != FP32 && t.Datatype != FP64: // integers up to 32 bits: exact in float64
				b = strconv.AppendInt(b, int64(x), 10)
			case math.IsNaN(x) || math.IsInf(x, 0):
				return nil, fmt.Errorf("policyd: input %q: element %d is %v, which JSON cannot carry: drop WithJSON", t.Name, i, x)
			default:
				b = strconv.AppendFloat(b, x, 'g', -1, bits)
			}
		}
	}
	return append(b, ']'), nil
}

type outputJSON struct {
	Name       string          `json:"name"`
	Datatype   string          `json:"datatype"`
	Shape      []int64         `json:"shape"`
	Data       json.RawMessage `json:"data"`
	Parameters struct {
		BinaryDataSize *int64 `json:"binary_data_size"`
	} `json:"parameters"`
}

type inferResponseJSON struct {
	ModelName    string       `json:"model_name"`
	ModelVersion string       `json:"model_version"`
	ID           string       `json:"id"`
	Outputs      []outputJSON `json:"outputs"`
}

func decodeInfer(a httpAnswer) (*InferResult, error) {
	head, rest := a.body, []byte(nil)
	if a.inferHeaderLen != "" {
		n, err := strconv.Atoi(a.inferHeaderLen)
		if err != nil || n < 0 || n > len(a.body) {
			return nil, fmt.Errorf("Inference-Header-Content-Length %q for a body of %d bytes", a.inferHeaderLen, len(a.body))
		}
		head, rest = a.body[:n], a.body[n:]
	}
	var resp inferResponseJSON
	if err := json.Unmarshal(head, &resp); err != nil {
		return nil, err
	}
	res := &InferResult{ModelName: resp.ModelName, ModelVersion: resp.ModelVersion, ID: resp.ID, Outputs: make([]Tensor, len(resp.Outputs))}
	for i, o := range resp.Outputs {
		t := Tensor{Name: o.Name, Datatype: o.Datatype, Shape: o.Shape}
		if s := o.Parameters.BinaryDataSize; s != nil {
			if *s < 0 || *s > int64(len(rest)) {
				return nil, fmt.Errorf("output %q: binary_data_size %d past the end of the body", o.Name, *s)
			}
			t.Data, rest = rest[:*s:*s], rest[*s:]
		} else {
			var err error
			if t.Data, err = jsonToRaw(o.Datatype, o.Data); err != nil {
				return nil, fmt.Errorf("output %q: %v", o.Name, err)
			}
		}
		if err := t.check(); err != nil {
			return nil, err
		}
		res.Outputs[i] = t
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after the binary outputs", len(rest))
	}
	return res, nil
}

// jsonToRaw reads a (possibly nested) JSON array of datatype dt into little-endian bytes;
// null is NaN.
func jsonToRaw(dt string, raw json.RawMessage) ([]byte, error) {
	var v any
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	size := ElementSize(dt)
	if size == 0 {
		return nil, fmt.Errorf("unsupported datatype %q", dt)
	}
	var out []byte
	var walk func(v any) error
	walk = func(v any) error {
		switch x := v.(type) {
		case []any:
			for _, e := range x {
				if err := walk(e); err != nil {
					return err
				}
			}
			return nil
		case bool:
			if dt != BOOL {
				return fmt.Errorf("a boolean in %s data", dt)
			}
			if x {
				out = append(out, 1)
			} else {
				out = append(out, 0)
			}
			return nil
		case nil:
			return appendNumber(&out, dt, "NaN")
		case json.Number:
			return appendNumber(&out, dt, string(x))
		}
		return fmt.Errorf("unexpected %T in data", v)
	}
	if err := walk(v); err != nil {
		return nil, err
	}
	return out, nil
}

func appendNumber(out *[]byte, dt, s string) error {
	var tmp [8]byte
	switch dt {
	case INT8, INT16, INT32, INT64:
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return err
		}
		le64(tmp[:], uint64(n))
	case UINT8, UINT16, UINT32, UINT64, BOOL:
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return err
		}
		le64(tmp[:], n)
	case FP32:
		f, err := strconv.ParseFloat(s, 32)
		if err != nil && s != "NaN" {
			return err
		}
		le64(tmp[:], uint64(math.Float32bits(float32(f))))
	case FP64:
		f, err := strconv.ParseFloat(s, 64)
		if err != nil && s != "NaN" {
			return err
		}
		le64(tmp[:], math.Float64bits(f))
	default:
		return fmt.Errorf("%s cannot be read from JSON", dt)
	}
	*out = append(*out, tmp[:ElementSize(dt)]...)
	return nil
}

func le64(b []byte, v uint64) {
	for i := 0; i < 8; i++ {
		b[i] = byte(v >> (8 * i))
	}
}

// netBackend is net/http. A keep-alive connection the server has closed is noticed by the
// transport's read loop and dropped from the pool; a request that found it closed before a
// byte was written is re-sent by net/http itself on a new connection (its rule for
// non-idempotent requests with a replayable body); one that failed after it was written is
// returned as an error, never replayed.
type netBackend struct{ hc *http.Client }

func (n *netBackend) close() { n.hc.CloseIdleConnections() }

func (n *netBackend) do(ctx context.Context, method, u string, ihcl int, body []byte) (httpAnswer, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return httpAnswer{}, err
	}
	if ihcl >= 0 {
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(ihcl))
		req.Header.Set("Content-Type", "application/octet-stream")
	} else if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := n.hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return httpAnswer{}, &ConnectError{Err: err}
		}
		return httpAnswer{}, err
	}
	defer resp.Body.Close()
	a := httpAnswer{
		status:         resp.StatusCode,
		inferHeaderLen: resp.Header.Get("Inference-Header-Content-Length"),
		retryAfter:     resp.Header.Get("Retry-After"),
		requestID:      resp.Header.Get("X-Request-ID"),
		notReady:       resp.Header.Get("X-Not-Ready-Reason"),
	}
	size := 512
	if resp.ContentLength > 0 && resp.ContentLength < 1<<30 {
		size = int(resp.ContentLength) + 1
	}
	buf := bytes.NewBuffer(make([]byte, 0, size))
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return a, &ConnectError{MayHaveRun: true, Err: fmt.Errorf("reading the answer: %w", err)}
	}
	a.body = buf.Bytes()
	return a, nil
}
