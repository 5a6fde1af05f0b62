package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestValidateTraffic(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "m"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := Defaults()
	c.Repository.Path = dir
	ok := DefaultModel()
	ok.Name = "m"
	ok.Traffic.Weights = []string{"1.4.0=90", "v1.5.0=10"}
	ok.Traffic.Shadow = TrafficShadow{Version: "1.5.0", Rate: 0.5}
	ok.Traffic.Gates = TrafficGates{Candidate: "1.5.0", Promote: GatePromote{Steps: []int{10, 50, 100}, MinSamples: 100}, Rollback: GateRollback{MaxErrorRate: 0.01}}
	c.Models = []Model{ok}
	if err := c.Validate(); err != nil {
		t.Fatalf("valid traffic refused: %v", err)
	}
	if w, err := ok.Traffic.WeightMap(); err != nil || !reflect.DeepEqual(w, map[string]int{"1.4.0": 90, "1.5.0": 10}) {
		t.Errorf("WeightMap = %v, %v", w, err)
	}
	for _, tt := range []struct {
		traffic ModelTraffic
		key     string
		msg     string
	}{
		{ModelTraffic{Weights: []string{"1.4.0"}}, "models[0].traffic.weights[0]", "must match"},
		{ModelTraffic{Weights: []string{"^1=5"}}, "models[0].traffic.weights", "not an exact version"},
		{ModelTraffic{Weights: []string{"1.4.0=0", "1.5.0=0"}}, "models[0].traffic.weights", "at least one weight must be above 0"},
		{ModelTraffic{Weights: []string{"1.4.0=1", "v1.4.0=2"}}, "models[0].traffic.weights", "listed twice"},
		{ModelTraffic{Weights: []string{"1.4.0=1"}, Shadow: TrafficShadow{Version: "1.x", Rate: 2}}, "models[0].traffic.shadow.rate", "must be"},
		{ModelTraffic{Weights: []string{"1.4.0=1", "1.5.0=1"}, Gates: TrafficGates{Candidate: "1.6.0", Rollback: GateRollback{MaxErrorRate: 0.1}}}, "models[0].traffic.gates.candidate", "one of weights"},
		{ModelTraffic{Weights: []string{"1.4.0=1", "1.5.0=1"}, Gates: TrafficGates{Candidate: "1.5.0", Promote: GatePromote{Steps: []int{50, 10}, MinSamples: 1}}}, "models[0].traffic.gates.promote.steps[1]", "must rise"},
		{ModelTraffic{Weights: []string{"1.4.0=1", "1.5.0=1"}, Gates: TrafficGates{Candidate: "1.5.0"}}, "models[0].traffic.gates", "neither promote.steps nor a rollback bound"},
	} {
		m := DefaultModel()
		m.Name = "m"
		m.Traffic = tt.traffic
		if m.Traffic.Weights == nil {
			m.Traffic.Weights = []string{}
		}
		c.Models = []Model{m}
		var ve *ValidationError
		if err := c.Validate(); !errors.As(err, &ve) {
			t.Errorf("%+v: Validate = %v", tt.traffic, err)
			continue
		}
		found := false
		for _, p := range ve.Problems {
			found = found || p.Key == tt.key && strings.Contains(p.Msg, tt.msg)
		}
		if !found {
			t.Errorf("%+v: problems %v lack %s: %s", tt.traffic, ve.Problems, tt.key, tt.msg)
		}
	}
}
