package server

import (
	"math"
	"strconv"
	"time"
)

// maxRequestTimeout bounds the "timeout" request parameter (one hour, in microseconds).
const maxRequestTimeout = uint64(time.Hour / time.Microsecond)

// decodeScheduling reads the request parameters that schedule the request, as Triton's
// KServe extensions name them: "priority" (0 = the model's default level, 1 the highest; see
// engines.RunOptions) and "timeout" (microseconds the request may wait in its model's queue
// before it is answered as timed out without running; at most one hour, 0 = no bound of its
// own; the server's limits.queue_timeout still applies: the shorter bound wins), and policyd's
// "seed" (an unsigned 64-bit integer that makes the request's samples of random operators
// reproducible, also when it is batched with others; see engines.RunOptions).
func (r *inferRequest) decodeScheduling(params jsonValue) error {
	if v := params.get("priority"); v != nil {
		n, err := r.uintParam("priority", v, 1<<31-1)
		if err != nil {
			return err
		}
		r.run.Priority = int(n)
	}
	if v := params.get("timeout"); v != nil {
		n, err := r.uintParam("timeout", v, maxRequestTimeout)
		if err != nil {
			return err
		}
		r.timeout = time.Duration(n) * time.Microsecond
	}
	if v := params.get("seed"); v != nil {
		n, err := r.uintParam("seed", v, math.MaxUint64)
		if err != nil {
			return err
		}
		r.run.Seed, r.run.Seeded = n, true
	}
	return nil
}

// uintParam reads an unsigned integer request parameter no larger than max.
func (r *inferRequest) uintParam(name string, v jsonValue, max uint64) (uint64, error) {
	tok, err := numberToken(v)
	if err != nil {
		return 0, badRequest(`"parameters": %q must be an unsigned integer, got %s`, name, v.kind())
	}
	n, err := strconv.ParseUint(tokenString(tok), 10, 64)
	if err != nil || !isInteger(tok) {
		return 0, badRequest(`"parameters": %q must be an unsigned integer, got %s`, name, clipBytes(tok, 32))
	}
	if n > max {
		return 0, badRequest(`"parameters": %q is %d, more than its maximum %d`, name, n, max)
	}
	return n, nil
}
