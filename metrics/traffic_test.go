package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/policyd/policyd/repository"
)

type fakeTraffic map[string]repository.TrafficStatus

func (f fakeTraffic) TrafficModels() []string { return []string{"m"} }
func (f fakeTraffic) Traffic(model string) (repository.TrafficStatus, bool) {
	st, ok := f[model]
	return st, ok
}

func TestTrafficFamilies(t *testing.T) {
	reg := prometheus.NewRegistry()
	src := trafficFixture()
	tm, err := NewTraffic(reg, src)
	if err != nil {
		t.Fatal(err)
	}
	tm.GateAction(repository.GateAction{Model: "m", Candidate: "1.1.0", Action: "rollback"})
	want := `
# HELP policyd_traffic_gate_actions_total Automatic changes of a traffic policy by its gates: promote (a step of weight to the candidate) or rollback (the candidate's weight set to 0).
# TYPE policyd_traffic_gate_actions_total counter
policyd_traffic_gate_actions_total{action="rollback",candidate="1.1.0",model="m"} 1
# HELP policyd_traffic_requests_total Requests of a model with a traffic policy by the version that served them and how it was chosen: split (by the weights: a new episode or a request without one), sticky (the version remembered for the episode), named (the request named its version), default (no weighted version ready).
# TYPE policyd_traffic_requests_total counter
policyd_traffic_requests_total{model="m",route="named",version="2.0.0"} 4
policyd_traffic_requests_total{model="m",route="split",version="1.0.0"} 5
policyd_traffic_requests_total{model="m",route="split",version="1.1.0"} 1
policyd_traffic_requests_total{model="m",route="sticky",version="1.0.0"} 7
# HELP policyd_traffic_sticky_misses_total Episodes whose remembered version no longer served ready (unloaded, failed, rolled back): rerouted to another version.
# TYPE policyd_traffic_sticky_misses_total counter
policyd_traffic_sticky_misses_total{model="m"} 2
# HELP policyd_traffic_weight The live weight of a version in its model's traffic policy.
# TYPE policyd_traffic_weight gauge
policyd_traffic_weight{model="m",version="1.0.0"} 90
policyd_traffic_weight{model="m",version="1.1.0"} 10
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "policyd_traffic_gate_actions_total",
		"policyd_traffic_requests_total", "policyd_traffic_sticky_misses_total", "policyd_traffic_weight"); err != nil {
		t.Error(err)
	}
	if _, err := NewTraffic(reg, src); err == nil {
		t.Error("registered twice")
	}
}

// trafficFixture is a model's traffic status with every family's series.
func trafficFixture() fakeTraffic {
	return fakeTraffic{"m": {Model: "m", Spec: &repository.TrafficSpec{Weights: map[string]int{"1.0.0": 90, "1.1.0": 10}},
		StickyKeys: 3, StickyMisses: 2, Versions: []repository.TrafficVersion{
			{Version: "1.0.0", Weight: 90, Routes: map[string]uint64{"split": 5, "sticky": 7}},
			{Version: "1.1.0", Weight: 10, Routes: map[string]uint64{"split": 1}},
			{Version: "2.0.0", Routes: map[string]uint64{"named": 4}},
		}}}
}
