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
// reproducible, also when it is batched with others; see engines.RunOptions), and
// "deadline_us" (microseconds from the request's arrival by which its answer is due, 1 to one
// hour; see fallback.go).
func (r *inferRequest) decodeScheduling(params jsonValue) error {
	for _, p := range schedulingParams {
		if v := params.get(p.name); v != nil {
			n, err := r.uintParam(p.name, v, p.max)
			if err != nil {
				return err
			}
			if n < p.min {
				return badRequest(`"parameters": %q is %d, less than its minimum %d`, p.name, n, p.min)
			}
			r.setScheduling(p.name, n)
		}
	}
	return nil
}

// schedulingParams are the request parameters that schedule a request, with their largest
// values, whatever the front end.
var schedulingParams = [...]struct {
	name     string
	min, max uint64
}{{"priority", 0, 1<<31 - 1}, {"timeout", 0, maxRequestTimeout}, {"seed", 0, math.MaxUint64}, {"deadline_us", 1, maxDeadlineUs}}

// setScheduling applies scheduling parameter name (one of schedulingParams) with value n,
// already checked against its maximum.
func (r *inferRequest) setScheduling(name string, n uint64) {
	switch name {
	case "priority":
		r.run.Priority = int(n)
	case "timeout":
		r.timeout = time.Duration(n) * time.Microsecond
	case "seed":
		r.run.Seed, r.run.Seeded = n, true
	case "deadline_us":
		r.dl.paramUs = n
	}
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
