package server

import (
	"errors"
	"time"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// The one inference path. Every front end (KServe v2 JSON and binary tensors, TensorFlow
// Serving's :predict, KServe v2 gRPC: grpc.go, grpc_codec.go) is a transport and a codec: the transport routes the request
// and checks what only it can (the route, the body size), hands the codec the request's bytes
// and calls Server.inference; the inference path resolves the model version (the starting
// state included), holds it, has the codec decode the request into input tensors checked
// against the version's signature and the run options its parameters ask for (a sequence
// step among them: the engines drive it), runs the version, has the codec encode the
// response from the outputs on the engine's worker, records the request's statistics and
// releases the version. An error leaves it as it is; the transport answers it through the
// one error→status mapping (errorStatus).

// codec is a front end's wire format on the inference path. Its transport gives it the
// request's bytes before Server.inference and writes its encoded response after. A codec
// value serves one request at a time (they are pooled) and must not allocate per request in
// steady state.
type codec interface {
	// decode reads the request into input tensors for m, in m's input order, checking them
	// against m's signature, and the run options and queue timeout its parameters ask for.
	// Its errors name what was wrong (a *requestError is 400).
	decodeRequest(m Model) error
	// call is what decodeRequest read: the inputs, the run options (their Trace is set by the
	// inference path), the request's own queue timeout (0: none) and its batch size.
	call() (inputs []bridge.Tensor, opts engines.RunOptions, timeout time.Duration, rows int)
	// encoder is the callback passed to Model.Do, bound once per codec value: it encodes the
	// response from the outputs (views of the engine's memory, valid during the call).
	encoder() func(outputs []bridge.Tensor) error
	// deadlines is the request's deadline as the codec and its transport read it, and how its
	// answer turned out (fallback.go); the encoder marks the response from it.
	deadlines() *deadline
	// markLate adds the late mark (deadlines().late, set after the encoder ran) to the
	// encoded response.
	markLate()
}

// inference serves one request on the inference path: version name of model (""
// the default) through c, for protocol. On nil, c holds the encoded response; x, when not
// nil, has recorded the version, protocol and batch size.
func (s *Server) inference(x *exchange, protocol, model, version string, c codec) error {
	m, route, key, end, err := s.acquireRouted(model, version, c) // traffic.go
	if err != nil {
		return err
	}
	defer m.Release() // the response is encoded (on the worker, by the codec) by then
	x.setModel(m, protocol)
	ok, ran := false, false
	if st := statsOf(m); st != nil || route != repository.RouteNone {
		start := time.Now()
		defer func() {
			now := time.Now()
			st.RecordRequest(ok, now.Sub(start), now)
			if route != repository.RouteNone {
				// the gates judge a version by the requests it ran: a request refused at
				// decoding (400) is the client's fault, not the version's
				s.routed(m, key, end, ran, ok, now.Sub(start))
			}
		}()
	}
	if ready, reason := m.Ready(); !ready {
		return &repository.UnavailableError{Model: m.Name(), Version: m.Version(), Reason: reason}
	}
	if err := c.decodeRequest(m); err != nil {
		return err
	}
	inputs, opts, timeout, rows := c.call()
	x.setRows(rows)
	opts.Trace = x.runSpan()
	d := c.deadlines()
	var arrival time.Time
	if d.paramUs|d.headerUs != 0 || !d.call.IsZero() {
		arrival = x.arrival()
		if d.resolve(arrival) {
			opts.Deadline = d.at
		}
	}
	ran = true
	enc := c.encoder()
	var shadow *shadowJob
	if s.shadows != nil {
		if shadow = s.shadows.sample(m, &opts); shadow != nil {
			enc = shadow.wrap(enc) // copies the outputs once encoded
		}
	}
	err = s.run(m, inputs, opts, timeout, enc)
	if shadow != nil {
		s.shadows.offer(shadow, inputs, err) // the response is encoded: never in front of it
	}
	if err != nil {
		var de *engines.DeadlineError
		if opts.Deadline.IsZero() || !errors.As(err, &de) {
			return err
		}
		if err := s.answerDeadline(x, m, c, d, arrival, inputs, opts, rows, de); err != nil {
			return err
		}
	}
	if !d.at.IsZero() {
		// Judged again now that the answer is back on the request's goroutine, just before
		// the transport writes it: the hand-off from the worker may have made it late.
		if late := time.Since(d.at); d.late <= 0 && late > 0 {
			d.late = late
			c.markLate()
		}
		if d.late > 0 && d.fallback == "" {
			x.setFallback("none", "late")
		}
	}
	ok = true
	return nil
}

// acquire holds a version of model (version "": the default one). While the server is
// starting, a model or version not loaded yet is errStarting (503), not repository.ErrNotFound.
func (s *Server) acquire(model, version string) (Model, error) {
	m, err := s.reg.Acquire(model, version)
	if err != nil {
		return nil, s.lookupError(err)
	}
	return m, nil
}

// lookupError is err of a version's lookup as the client is answered: while the server is
// starting, a model or version not loaded yet is errStarting (503), not ErrNotFound.
func (s *Server) lookupError(err error) error {
	if s.starting.Load() && errors.Is(err, repository.ErrNotFound) {
		return errStarting
	}
	return err
}
