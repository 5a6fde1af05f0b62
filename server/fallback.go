package server

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc/metadata"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// Deadline-bounded actions (docs/api.md, Deadlines). A request may carry a deadline: the
// "deadline_us" parameter and the X-Deadline-Us header (microseconds from the request's
// arrival at the server, 1 µs to one hour) and the gRPC call's deadline (grpc-timeout); when
// several are given the earliest wins. The engines order the queue by it and run the request
// only when the version's expected service time still fits (engines/deadline.go); a request
// they do not run is answered here at once with the model's declared fallback action, marked
// as such, or 504 with the reason. A request that ran and was encoded after its deadline is
// marked late.

// Headers of deadlines.
const (
	// DeadlineHeader carries a request's deadline in microseconds from its arrival.
	DeadlineHeader = "X-Deadline-Us"
	// FallbackHeader marks an answer given by a fallback: last_action, constant or version.
	FallbackHeader = "X-Policyd-Fallback"
	// LateHeader marks an answer encoded after its deadline, with how late in microseconds.
	LateHeader = "X-Policyd-Late-Us"
)

// maxDeadlineUs bounds deadline_us and X-Deadline-Us: one hour.
const maxDeadlineUs = uint64(time.Hour / time.Microsecond)

// deadline is a request's deadline as its codec read it, and how its answer turned out.
type deadline struct {
	paramUs, headerUs uint64    // "deadline_us", X-Deadline-Us; 0: not given
	call              time.Time // the gRPC call's deadline; zero: none
	at                time.Time // the effective deadline (inference); zero: none

	fallback string        // the fallback kind that answered; "": the model did
	fbFrom   string        // the version that answered a fallback of kind version ("m@v")
	late     time.Duration // > 0: the answer was encoded this long after the deadline
}

func (d *deadline) reset() { *d = deadline{} }

// resolve sets d.at from what was given, relative to arrival; false when nothing was.
func (d *deadline) resolve(arrival time.Time) bool {
	d.at = d.call
	for _, us := range [2]uint64{d.paramUs, d.headerUs} {
		if us == 0 {
			continue
		}
		if t := arrival.Add(time.Duration(us) * time.Microsecond); d.at.IsZero() || t.Before(d.at) {
			d.at = t
		}
	}
	return !d.at.IsZero()
}

// budget is the deadline's distance from arrival, for messages.
func (d *deadline) budget(arrival time.Time) time.Duration { return d.at.Sub(arrival) }

// markLate records, when the request has a deadline, whether its answer is late now; the
// encoders call it just before encoding, the model's answers and the fallbacks' alike.
func (d *deadline) markLate() {
	if d.at.IsZero() {
		return
	}
	if late := time.Since(d.at); late > 0 {
		d.late = late
	}
}

// parseDeadlineHeader reads X-Deadline-Us: 1 to maxDeadlineUs microseconds.
func parseDeadlineHeader(v []byte) (uint64, error) {
	n, err := strconv.ParseUint(string(v), 10, 64)
	if err != nil || n == 0 || n > maxDeadlineUs {
		return 0, badRequest("header %s must be a whole number of microseconds from 1 to %d, got %q", DeadlineHeader, maxDeadlineUs, clipBytes(v, 32))
	}
	return n, nil
}

// fallbacker is a Model that declares a deadline fallback (*repository.Version).
type fallbacker interface{ ActionFallback() *repository.Fallback }

var _ fallbacker = (*repository.Version)(nil)

func fallbackOf(m Model) *repository.Fallback {
	if f, ok := m.(fallbacker); ok {
		return f.ActionFallback()
	}
	return nil
}

// deadlineMissed is the 504 of a request not run for its deadline without a fallback to
// answer it.
func deadlineMissed(m Model, budget time.Duration, de *engines.DeadlineError, why string) error {
	msg := fmt.Sprintf("model %q version %q: deadline of %dµs ", m.Name(), m.Version(), budget.Microseconds())
	if de.Passed() {
		msg += "passed"
	} else {
		msg += "cannot be met"
	}
	msg += ": " + de.Detail()
	if why != "" {
		msg += "; " + why
	}
	return &statusError{status: 504, msg: msg}
}

// answerDeadline answers a request the engines did not run for its deadline (de): with the
// model's fallback through the codec's encoder (marked in d), or a 504.
func (s *Server) answerDeadline(x *exchange, m Model, c codec, d *deadline, arrival time.Time, inputs []bridge.Tensor, opts engines.RunOptions, rows int, de *engines.DeadlineError) error {
	fb := fallbackOf(m)
	budget := d.budget(arrival)
	x.setFallback("none", de.Reason())
	if fb == nil {
		return deadlineMissed(m, budget, de, "")
	}
	var outs []bridge.Tensor
	kind := fb.Kind
	switch fb.Kind {
	case repository.FallbackLastAction:
		outs = de.Last
		if outs == nil {
			outs, kind = fb.Constant(rows), repository.FallbackConstant
		}
		if outs == nil {
			why := "the fallback is the last action, and the request is no step of a sequence that ran before"
			if opts.Sequence.Store != nil {
				why = fmt.Sprintf("the fallback is the last action, and sequence %s has none yet", opts.Sequence.ID)
			}
			return deadlineMissed(m, budget, de, why)
		}
	case repository.FallbackConstant:
		outs = fb.Constant(rows)
	case repository.FallbackVersion:
		return s.fallbackVersion(x, m, c, d, budget, inputs, opts, fb, de)
	default:
		return deadlineMissed(m, budget, de, "")
	}
	d.fallback = kind
	x.setFallback(kind, de.Reason())
	return c.encoder()(outs)
}

// fallbackVersion runs the fallback version fb names with the request's inputs and
// deadline, at priority 1 (the highest level), outside any sequence. Its outputs must match
// the model's by name and datatype. When it cannot meet the deadline either, the answer is a
// 504 naming both.
func (s *Server) fallbackVersion(x *exchange, m Model, c codec, d *deadline, budget time.Duration, inputs []bridge.Tensor, opts engines.RunOptions, fb *repository.Fallback, de *engines.DeadlineError) error {
	name := fb.Model
	if fb.Version != "" {
		name += "@" + fb.Version
	}
	fm, err := s.acquire(fb.Model, fb.Version)
	if err != nil {
		return deadlineMissed(m, budget, de, fmt.Sprintf("fallback version %s: %v", name, err))
	}
	defer fm.Release()
	if err := sameOutputs(m.Outputs(), fm.Outputs()); err != nil {
		return deadlineMissed(m, budget, de, fmt.Sprintf("fallback version %s: %v", name, err))
	}
	if err := sameInputs(inputs, fm.Inputs()); err != nil {
		return deadlineMissed(m, budget, de, fmt.Sprintf("fallback version %s: %v", name, err))
	}
	d.fallback, d.fbFrom = repository.FallbackVersion, fm.Name()+"@"+fm.Version()
	run := engines.RunOptions{Priority: 1, Deadline: d.at, Seed: opts.Seed, Seeded: opts.Seeded, Trace: opts.Trace}
	err = fm.Do(s.runCtx, inputs, run, c.encoder())
	var fde *engines.DeadlineError
	if errors.As(err, &fde) {
		d.fallback, d.fbFrom = "", ""
		return deadlineMissed(m, budget, de, fmt.Sprintf("fallback version %s: %v", name, fde))
	}
	if err != nil {
		d.fallback, d.fbFrom = "", ""
		return err
	}
	x.setFallback(repository.FallbackVersion, de.Reason())
	return nil
}

// sameOutputs checks that a fallback version's outputs are the model's: the same names,
// datatypes and ranks in the same order, and the same dimensions beyond the first where both
// fix them.
func sameOutputs(want, got []bridge.IOInfo) error {
	if len(want) != len(got) {
		return fmt.Errorf("its outputs %s are not the model's %s", bridge.IONames(got), bridge.IONames(want))
	}
	for k := range want {
		if want[k].Name != got[k].Name || want[k].DType != got[k].DType {
			return fmt.Errorf("its output %d is %q %s, the model's is %q %s", k, got[k].Name, got[k].DType, want[k].Name, want[k].DType)
		}
		ws, gs := want[k].Shape, got[k].Shape
		same := len(ws) == len(gs)
		for i := 1; same && i < len(ws); i++ {
			same = ws[i] < 0 || gs[i] < 0 || ws[i] == gs[i]
		}
		if !same {
			return fmt.Errorf("its output %q has shape %v, the model's %v", got[k].Name, gs, ws)
		}
	}
	return nil
}

// sameInputs checks that the request's inputs (decoded for the model) fit a fallback
// version's inputs by count and datatype; its run checks the shapes.
func sameInputs(inputs []bridge.Tensor, infos []bridge.IOInfo) error {
	if len(inputs) != len(infos) {
		return fmt.Errorf("it takes %d inputs, the request has %d", len(infos), len(inputs))
	}
	for k := range infos {
		if inputs[k].Data == nil && inputs[k].Shape == nil {
			return fmt.Errorf("its input %q is a state the request does not carry (a fallback version must be stateless)", infos[k].Name)
		}
		if inputs[k].DType != infos[k].DType {
			return fmt.Errorf("its input %q is %s, the request's is %s", infos[k].Name, infos[k].DType, inputs[k].DType)
		}
	}
	return nil
}

// appendDeadlineParams appends the response parameters of d to a JSON response object
// being written (after its last member): "fallback" (and "fallback_version") for an answer of
// a fallback, "late" and "late_us" for an answer encoded after its deadline; nothing else.
func appendDeadlineParams(b []byte, d *deadline) []byte {
	if d.fallback == "" && d.late <= 0 {
		return b
	}
	b = append(b, `,"parameters":{`...)
	if d.fallback != "" {
		b = append(b, `"fallback":"`...)
		b = append(b, d.fallback...)
		b = append(b, '"')
		if d.fbFrom != "" {
			b = append(b, `,"fallback_version":`...)
			b = appendString(b, d.fbFrom)
		}
		if d.late > 0 {
			b = append(b, ',')
		}
	}
	if d.late > 0 {
		b = append(b, `"late":true,"late_us":`...)
		b = strconv.AppendInt(b, max(d.late.Microseconds(), 1), 10)
	}
	return append(b, '}')
}

// readDeadlineHeader reads X-Deadline-Us of an HTTP request into d.
func readDeadlineHeader(ctx *fasthttp.RequestCtx, d *deadline) error {
	v := ctx.Request.Header.Peek(DeadlineHeader)
	if len(v) == 0 {
		return nil
	}
	n, err := parseDeadlineHeader(v)
	d.headerUs = n
	return err
}

// writeDeadlineHeaders marks an HTTP answer given by a fallback (X-Policyd-Fallback) or late
// (X-Policyd-Late-Us).
func writeDeadlineHeaders(ctx *fasthttp.RequestCtx, d *deadline) {
	if d.fallback != "" {
		ctx.Response.Header.Set(FallbackHeader, d.fallback)
	}
	if d.late > 0 {
		ctx.Response.Header.Set(LateHeader, strconv.FormatInt(max(d.late.Microseconds(), 1), 10))
	}
}

// deadlineParamsGRPC are the response parameters of d over gRPC: "fallback" (string_param)
// and "fallback_version"; "late" (bool_param) and "late_us" (int64_param).
func deadlineParamsGRPC(d *deadline) map[string]*inference.InferParameter {
	str := func(s string) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_StringParam{StringParam: s}}
	}
	p := map[string]*inference.InferParameter{}
	if d.fallback != "" {
		p["fallback"] = str(d.fallback)
		if d.fbFrom != "" {
			p["fallback_version"] = str(d.fbFrom)
		}
	}
	if d.late > 0 {
		p["late"] = &inference.InferParameter{ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: true}}
		p["late_us"] = &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: max(d.late.Microseconds(), 1)}}
	}
	return p
}

// deadlineMetadata is the header metadata of a unary gRPC answer given by a fallback
// (x-policyd-fallback) and of one encoded late (x-policyd-late-us); nil otherwise.
func deadlineMetadata(d *deadline) metadata.MD {
	var md metadata.MD
	if d.fallback != "" {
		md = metadata.Pairs(strings.ToLower(FallbackHeader), d.fallback)
	}
	if d.late > 0 {
		if md == nil {
			md = metadata.MD{}
		}
		md.Set(strings.ToLower(LateHeader), strconv.FormatInt(max(d.late.Microseconds(), 1), 10))
	}
	return md
}

// markLate is the codec's markLate (infer.go): the late parameters spliced into the JSON
// part of the encoded response (before its last '}', inside "parameters" when a fallback
// wrote them).
func (r *inferRequest) markLate() {
	end := len(r.out)
	if r.binOut {
		end = r.jsonLen
	}
	if end < 2 || r.out[end-1] != '}' {
		return
	}
	var ins []byte
	at := end - 1
	if r.dl.fallback != "" && r.out[end-2] == '}' { // inside the "parameters" object
		at = end - 2
		ins = append(ins, `,"late":true,"late_us":`...)
	} else {
		ins = append(ins, `,"parameters":{"late":true,"late_us":`...)
	}
	ins = strconv.AppendInt(ins, max(r.dl.late.Microseconds(), 1), 10)
	if at == end-1 {
		ins = append(ins, '}')
	}
	r.out = slices.Insert(r.out, at, ins...)
	if r.binOut {
		r.jsonLen += len(ins)
	}
}

// markLate is the codec's markLate (infer.go): the late response parameters.
func (g *grpcRequest) markLate() {
	if g.resp != nil {
		g.resp.Parameters = deadlineParamsGRPC(&g.r.dl)
	}
}

// markLate is the codec's markLate (infer.go): a predict response has no parameters; the
// header X-Policyd-Late-Us alone marks it.
func (r *predictRequest) markLate() {}
