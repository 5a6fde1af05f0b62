package reload

import (
	"reflect"
	"testing"
	"time"

	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/repository"
)

// TestDesiredMapsTraffic: models[].traffic reaches the repository's traffic policy, versions
// canonical, the sections left empty off.
func TestDesiredMapsTraffic(t *testing.T) {
	c := config.Defaults()
	c.Repository.Path = "repo"
	m := config.DefaultModel()
	a, b := m, m
	a.Name = "a"
	a.Traffic.Weights = []string{"v1.4.0=90", "1.5.0=10"}
	a.Traffic.Shadow = config.TrafficShadow{Version: "1.5.0", Rate: 0.25}
	a.Traffic.Gates = config.TrafficGates{Candidate: "1.5.0", Interval: time.Second,
		Rollback: config.GateRollback{MaxP99: 5 * time.Millisecond}}
	b.Name = "b"
	c.Models = []config.Model{a, b}
	d := Desired(c, nil, nil)
	want := &repository.TrafficSpec{Weights: map[string]int{"1.4.0": 90, "1.5.0": 10},
		Shadow: &repository.ShadowSpec{Version: "1.5.0", Rate: 0.25},
		Gates:  &repository.GatesSpec{Candidate: "1.5.0", Interval: time.Second, Rollback: &repository.RollbackGate{MaxP99: 5 * time.Millisecond}}}
	if got := d.Models[0].Traffic; !reflect.DeepEqual(got, want) {
		t.Errorf("a's traffic = %+v, want %+v", got, want)
	}
	if d.Models[1].Traffic != nil {
		t.Errorf("b has no weights, but a traffic policy %+v", d.Models[1].Traffic)
	}
}
