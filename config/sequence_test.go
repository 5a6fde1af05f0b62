package config

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestValidateSequence(t *testing.T) {
	dir := t.TempDir()
	for _, m := range []string{"rnn", "half"} {
		if err := os.Mkdir(filepath.Join(dir, m), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	c := Defaults()
	c.Repository.Path = dir
	ok := DefaultModel()
	ok.Name = "rnn"
	ok.Sequence = ModelSequence{States: []string{"recurrent_in:recurrent_out", "h_in:h_out"}, IdleTimeout: time.Minute}
	c.Models = []Model{ok}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid sequence refused: %v", err)
	}
	if pairs, good := ok.Sequence.StatePairs(); !good || len(pairs) != 2 || pairs[1] != [2]string{"h_in", "h_out"} {
		t.Errorf("StatePairs = %v, %v", pairs, good)
	}
	bad := DefaultModel()
	bad.Name = "half"
	bad.Sequence = ModelSequence{States: []string{"recurrent_in", "a:"}}
	empty := DefaultModel()
	empty.Name = "rnn"
	empty.Version = "1.0.0"
	empty.Sequence = ModelSequence{MaxSequences: 10}
	c.Models = []Model{bad, empty}
	err := c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("Validate = %v", err)
	}
	want := map[string]bool{"models[0].sequence.states[0]": true, "models[0].sequence.states[1]": true, "models[1].sequence.states": true}
	for _, p := range ve.Problems {
		delete(want, p.Key)
	}
	if len(want) > 0 {
		t.Errorf("problems %v lack %v", ve.Problems, want)
	}
}
