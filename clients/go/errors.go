package policyd

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels for errors.Is: every error this package returns for a failed call matches
// exactly one of them (ErrOverloaded matches in addition to ErrUnavailable).
var (
	ErrInvalidArgument = errors.New("policyd: invalid argument")
	ErrNotFound        = errors.New("policyd: not found")
	ErrUnavailable     = errors.New("policyd: unavailable")
	ErrOverloaded      = errors.New("policyd: overloaded")
	ErrTimeout         = errors.New("policyd: timeout")
	ErrConnect         = errors.New("policyd: connection failed")
	ErrServer          = errors.New("policyd: server error")
)

// InvalidArgumentError is a request the server refused as bad (HTTP 400, 413, 415; gRPC
// InvalidArgument, ResourceExhausted): wrong input name, datatype, shape, parameter. Message
// is the server's own message. Never retried.
type InvalidArgumentError struct {
	Status    int    // HTTP status (400 for gRPC InvalidArgument)
	Message   string // the server's message
	RequestID string // the server's correlation ID, when it sent one
}

func (e *InvalidArgumentError) Error() string {
	return fmt.Sprintf("policyd: invalid argument (%d): %s", e.Status, e.Message)
}
func (e *InvalidArgumentError) Is(target error) bool { return target == ErrInvalidArgument }

// NotFoundError is an unknown model, version or route (HTTP 404, gRPC NotFound).
type NotFoundError struct {
	Message   string
	RequestID string
}

func (e *NotFoundError) Error() string        { return "policyd: not found: " + e.Message }
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// UnavailableError is a 503 (gRPC Unavailable, or DeadlineExceeded from the server's
// queue): a version not ready, a full queue, a queue timeout, the sequence limit, a server
// stopping. RetryAfter is the server's Retry-After (0 when it sent none); only such answers
// are retried, since the server says the request did not run. Overloaded is true for a full
// queue or a request that timed out in the queue (errors.Is(err, ErrOverloaded)).
type UnavailableError struct {
	Message    string
	RetryAfter time.Duration
	Overloaded bool
	RequestID  string
}

func (e *UnavailableError) Error() string {
	s := "policyd: unavailable: " + e.Message
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}
func (e *UnavailableError) Is(target error) bool {
	return target == ErrUnavailable || target == ErrOverloaded && e.Overloaded
}

// TimeoutError is the caller's own deadline (the context's, or the client's request
// timeout) passing before an answer came. The request may have run. It unwraps to the
// context error, so errors.Is(err, context.DeadlineExceeded) holds too.
type TimeoutError struct {
	Op  string
	Err error
}

func (e *TimeoutError) Error() string        { return "policyd: " + e.Op + ": timeout: " + e.Err.Error() }
func (e *TimeoutError) Is(target error) bool { return target == ErrTimeout }
func (e *TimeoutError) Unwrap() error        { return e.Err }

// ConnectError is a transport failure. MayHaveRun is false when the request never left
// (the connection could not be made; those are retried) and true when the connection failed
// after the request was sent (never retried: the server may have run it).
type ConnectError struct {
	Addr       string
	MayHaveRun bool
	Err        error
}

func (e *ConnectError) Error() string {
	if e.MayHaveRun {
		return fmt.Sprintf("policyd: connection to %s failed after the request was sent (it may have run): %v", e.Addr, e.Err)
	}
	return fmt.Sprintf("policyd: cannot connect to %s: %v", e.Addr, e.Err)
}
func (e *ConnectError) Is(target error) bool { return target == ErrConnect }
func (e *ConnectError) Unwrap() error        { return e.Err }

// ServerError is a 500 (gRPC Internal) or any answer this client does not understand.
type ServerError struct {
	Status    int
	Message   string
	RequestID string
}

func (e *ServerError) Error() string {
	return fmt.Sprintf("policyd: server error (%d): %s", e.Status, e.Message)
}
func (e *ServerError) Is(target error) bool { return target == ErrServer }

// retryable says whether err is one of the failures where the request certainly did not
// run and the server or the network may do better later; inSequence restricts that to the
// server's own 503 with Retry-After (a sequence step must not be replayed on a new
// connection guess).
func retryable(err error, inSequence bool) (bool, time.Duration) {
	var u *UnavailableError
	if errors.As(err, &u) {
		return u.RetryAfter > 0, u.RetryAfter
	}
	var c *ConnectError
	if !inSequence && errors.As(err, &c) {
		return !c.MayHaveRun, 0
	}
	return false, 0
}

// overloadedMessage says whether a 503's message is a full queue or a queue timeout.
func overloadedMessage(msg string) bool {
	return containsAny(msg, "queue full", "timed out", "still queued")
}
