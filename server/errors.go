package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// requestError is a fault of the request: 400.
type requestError struct{ msg string }

func (e *requestError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &requestError{msg: fmt.Sprintf(format, args...)}
}

// statusError carries its own HTTP status (404 for an unknown route, 413, ...).
type statusError struct {
	status int
	msg    string
}

func (e *statusError) Error() string { return e.msg }

// timeoutError: a request waited in its model's queue longer than Options.QueueTimeout or its
// own "timeout" parameter and was dropped without running. 503 with Retry-After: the server
// is overloaded, not broken.
type timeoutError struct {
	model, version string
	after          time.Duration
	own            bool // the request's "timeout" parameter, not the server's queue timeout
}

func (e *timeoutError) Error() string {
	which := "the queue timeout"
	if e.own {
		which = "the request's timeout"
	}
	return fmt.Sprintf("model %q version %q: request timed out: still queued after %s of %s",
		e.model, e.version, which, e.after)
}

// errorStatus maps an error to its HTTP status, and says whether the client should retry
// (Retry-After). It is the one place where errors of the layers below become HTTP statuses.
func errorStatus(err error) (status int, retry bool) {
	var (
		te *timeoutError
		re *requestError
		se *statusError
		ue *repository.UnavailableError
		be *bridge.Error
		pe *engines.PriorityError
	)
	switch {
	case errors.Is(err, engines.ErrSequenceLimit):
		return fasthttp.StatusServiceUnavailable, true
	case errors.Is(err, engines.ErrUnknownSequence), errors.Is(err, engines.ErrSequenceInput):
		return fasthttp.StatusBadRequest, false
	case errors.As(err, &te):
		return fasthttp.StatusServiceUnavailable, true
	case errors.As(err, &re), errors.As(err, &pe):
		return fasthttp.StatusBadRequest, false
	case errors.As(err, &se):
		return se.status, false
	case errors.Is(err, repository.ErrNotFound):
		return fasthttp.StatusNotFound, false
	case errors.Is(err, engines.ErrOverloaded):
		return fasthttp.StatusServiceUnavailable, true
	case errors.Is(err, engines.ErrClosed), errors.Is(err, bridge.ErrClosed),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fasthttp.StatusServiceUnavailable, false
	case errors.As(err, &ue):
		return fasthttp.StatusServiceUnavailable, false
	case errors.As(err, &be):
		switch be.Code {
		case bridge.CodeInvalidArg, bridge.CodeUnsupported:
			return fasthttp.StatusBadRequest, false
		case bridge.CodeNotFound:
			return fasthttp.StatusNotFound, false
		case bridge.CodeUnavailable:
			return fasthttp.StatusServiceUnavailable, false
		}
		return fasthttp.StatusInternalServerError, false
	}
	return fasthttp.StatusInternalServerError, false
}

// retryAfterSeconds is the Retry-After of an overloaded answer: the queue of a policy model
// drains in milliseconds, so the smallest value HTTP allows.
const retryAfterSeconds = "1"
