package repository

import (
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/engines"
)

// A sequence spec whose names the model lacks leaves the version UNAVAILABLE with the reason;
// dropping the spec is a change that rebuilds it.
func TestApplySequenceMismatchIsUnavailable(t *testing.T) {
	dir := writeRepo(t, map[string]string{"a/1.0.0/model.onnx": "ok"})
	r, _ := fakeRepository(t, &applyLoader{})
	spec := &engines.SequenceSpec{States: []engines.StatePair{{Input: "recurrent_in", Output: "recurrent_out"}}, IdleTimeout: time.Second}
	rep := mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Sequence: spec}}})
	checkReport(t, rep, nil, nil, nil, []string{"a@1.0.0"}, 0)
	if !strings.Contains(rep.Failed[0].Reason, `sequence: state input "recurrent_in" is not an input of the model`) {
		t.Errorf("reason = %q", rep.Failed[0].Reason)
	}
	v, _ := r.Get("a", "1")
	if got := v.spec().Sequence; got == nil || got.States[0] != spec.States[0] || got.IdleTimeout != time.Second || got.MaxSequences != engines.DefaultMaxSequences {
		t.Errorf("Spec().Sequence = %+v", got)
	}
	rep = mustApply(t, r, Desired{Dir: dir, Models: []ModelSpec{{Name: "a"}}})
	if len(rep.Failed) != 0 {
		t.Fatalf("without the sequence: %+v", rep.Failed)
	}
	v, _ = r.Get("a", "1")
	if ok, why := v.Ready(); !ok || v.Sequences() != nil {
		t.Errorf("ready %v %q, sequences %v", ok, why, v.Sequences())
	}
	// The spec's own problems are reported by Apply.
	_, err := r.Apply(Desired{Dir: dir, Models: []ModelSpec{{Name: "a", Sequence: &engines.SequenceSpec{}}}})
	if err == nil || !strings.Contains(err.Error(), "models[0].sequence.states: empty") {
		t.Errorf("empty states: %v", err)
	}
}
