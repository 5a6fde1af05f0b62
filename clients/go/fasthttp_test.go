package policyd

import (
	"context"
	"errors"
	"net"
	"strconv"
	"time"

	"github.com/valyala/fasthttp"
)

// fastBackend is fasthttp, kept in the tests only so that BenchmarkHTTPBackends and
// TestIdleKeepAlive can compare it with net/http (docs/clients.md, "Why net/http"); the
// package itself does not depend on fasthttp. It
// cannot tell a keep-alive connection the server closed before reading the request from one
// closed after running it (both are ErrConnectionClosed for a POST), and it has no context
// cancellation, only deadlines.
type fastBackend struct{ c *fasthttp.Client }

func init() { newFastBackend = func(idle time.Duration) httpBackend { return newFast(idle) } }

func newFast(idle time.Duration) *fastBackend {
	return &fastBackend{c: &fasthttp.Client{MaxConnsPerHost: 256, MaxIdleConnDuration: idle, NoDefaultUserAgentHeader: true}}
}

func (f *fastBackend) close() { f.c.CloseIdleConnections() }

func (f *fastBackend) do(ctx context.Context, method, u string, ihcl int, body []byte) (httpAnswer, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(u)
	req.Header.SetMethod(method)
	if ihcl >= 0 {
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(ihcl))
		req.Header.SetContentType("application/octet-stream")
	}
	if body != nil {
		req.SetBodyRaw(body)
	}
	var err error
	if dl, ok := ctx.Deadline(); ok {
		err = f.c.DoDeadline(req, resp, dl)
	} else {
		err = f.c.Do(req, resp)
	}
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" || errors.Is(err, fasthttp.ErrDialTimeout) {
			return httpAnswer{}, &ConnectError{Err: err}
		}
		if errors.Is(err, fasthttp.ErrTimeout) && ctx.Err() == nil {
			<-ctx.Done() // the deadline is ours: let ctxError report it
		}
		return httpAnswer{}, err
	}
	return httpAnswer{
		status:         resp.StatusCode(),
		inferHeaderLen: string(resp.Header.Peek("Inference-Header-Content-Length")),
		retryAfter:     string(resp.Header.Peek("Retry-After")),
		requestID:      string(resp.Header.Peek("X-Request-ID")),
		notReady:       string(resp.Header.Peek("X-Not-Ready-Reason")),
		body:           append([]byte(nil), resp.Body()...),
	}, nil
}
