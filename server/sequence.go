package server

import (
	"strconv"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// sequencer is a Model that keeps the state of stateful sequences (*repository.Version with
// a sequence spec). Sequences returns nil when the model keeps none.
type sequencer interface{ Sequences() *engines.Sequences }

func sequencesOf(m Model) *engines.Sequences {
	if sq, ok := m.(sequencer); ok {
		return sq.Sequences()
	}
	return nil
}

// decodeSequence reads the request parameters of Triton's sequence extension: "sequence_id"
// (a non-zero integer or a non-empty string of at most maxIDLen bytes), "sequence_start" and
// "sequence_end" (booleans), into the run options (r.run.Sequence, with the model's sequence
// store): the engines then supply the state inputs from the sequence's state and keep the
// state outputs (engines.DoSequenceStep). A model without sequences ignores them, as it
// ignores every parameter it does not know (a stateful model then says which state input is
// missing).
func (r *inferRequest) decodeSequence(params jsonValue, m Model) error {
	seqs := sequencesOf(m)
	if seqs == nil {
		return nil
	}
	idV, startV, endV := params.get("sequence_id"), params.get("sequence_start"), params.get("sequence_end")
	if idV == nil {
		if startV != nil || endV != nil {
			return badRequest(`"parameters": "sequence_start" and "sequence_end" need a "sequence_id"`)
		}
		return nil
	}
	var id engines.SequenceID
	switch idV.kind() {
	case jsonNumber:
		tok, err := numberToken(idV)
		if err == nil && isInteger(tok) {
			id.Num, err = strconv.ParseUint(tokenString(tok), 10, 64)
		}
		if err != nil || !isInteger(tok) || id.Num == 0 {
			return badRequest(`"parameters": "sequence_id" must be a non-zero unsigned 64-bit integer or a non-empty string, got %s`, clipBytes(idV, 32))
		}
	case jsonString:
		b, ok := unquoteMax(r.str[:0], idV, maxIDLen)
		r.str = b
		if !ok {
			return badRequest(`"parameters": "sequence_id" is longer than %d bytes: %q`, maxIDLen, clipBytes(idV.raw(), 32))
		}
		if len(b) == 0 {
			return badRequest(`"parameters": "sequence_id" must not be empty`)
		}
		id.Str = string(b)
	default:
		return badRequest(`"parameters": "sequence_id" must be an integer or a string, got %s`, idV.kind())
	}
	for _, p := range []struct {
		name string
		v    jsonValue
		dst  *bool
	}{{"sequence_start", startV, &r.run.Sequence.Start}, {"sequence_end", endV, &r.run.Sequence.End}} {
		if p.v == nil {
			continue
		}
		b, ok := jsonBool(p.v)
		if !ok {
			return badRequest(`"parameters": %q must be true or false, got %s`, p.name, p.v.kind())
		}
		*p.dst = b
	}
	r.run.Sequence.Store, r.run.Sequence.ID = seqs, id
	return nil
}

// isState reports whether model input k is a state input of the request's sequence, which
// the request does not send.
func (r *inferRequest) isState(k int) bool {
	return r.run.Sequence.Store != nil && r.run.Sequence.Store.IsState(k)
}

// checkSupplied refuses model input k (called name) when the server supplies it: a state or
// control input of the request's sequence.
func (r *inferRequest) checkSupplied(k int, name string) error {
	switch {
	case !r.isState(k):
		return nil
	case r.run.Sequence.Store.IsControl(k):
		return badRequest("%s", engines.ControlGivenMessage(name))
	}
	return badRequest("input %q is a state of sequence %s: the server supplies it; leave it out", name, r.run.Sequence.ID)
}

// checkControls refuses a request to a model with sequence control inputs that is no step
// of a sequence (no "sequence_id"): the server fills the controls only for a sequence's
// steps, and a client never sends them.
func (r *inferRequest) checkControls(m Model, ins []bridge.IOInfo) error {
	seqs := sequencesOf(m)
	if r.run.Sequence.Store != nil || seqs == nil || !seqs.HasControls() {
		return nil
	}
	for k := range ins {
		if r.given[k] && seqs.IsControl(k) {
			return badRequest("%s", engines.ControlGivenMessage(ins[k].Name))
		}
	}
	return badRequest(`missing parameter "sequence_id": the model's sequence control inputs %s are filled by the server from sequence_id, sequence_start and sequence_end, so every request is a step of a sequence (the first with "sequence_start": true)`, seqs.ControlNames())
}

// checkSequenceBatch refuses a request of a sequence whose batch is not 1: a sequence's state
// is one row.
func (r *inferRequest) checkSequenceBatch(ins []bridge.IOInfo) error {
	for k := range ins {
		if r.isState(k) || ins[k].BatchDim != 0 || len(r.tensors[k].Shape) == 0 {
			continue
		}
		if n := r.tensors[k].Shape[0]; n != 1 {
			return badRequest("input %q: batch size %d: a request of sequence %s must have batch size 1", ins[k].Name, n, r.run.Sequence.ID)
		}
	}
	return nil
}
