package metrics

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/policyd/policyd/repository"
)

// Traffic is the families of the traffic policies (docs/rollout.md, docs/observability.md):
// requests per model, version and route, stickiness-key misses, the live weights and the gates'
// automatic changes. The request counts are read from the repository's own counters at scrape
// time, so the request path pays nothing for them. Create it with NewTraffic; it is safe for
// concurrent use.
type Traffic struct {
	repo        TrafficSource
	gateActions *prometheus.CounterVec
}

// TrafficSource is what Traffic reads; *repository.Repository implements it.
type TrafficSource interface {
	TrafficModels() []string
	Traffic(model string) (repository.TrafficStatus, bool)
}

var (
	trafficRequestsDesc = prometheus.NewDesc("policyd_traffic_requests_total",
		"Requests of a model with a traffic policy by the version that served them and how it was chosen: split (by the weights: a new episode or a request without one), sticky (the version remembered for the episode), named (the request named its version), default (no weighted version ready).",
		[]string{"model", "version", "route"}, nil)
	trafficMissesDesc = prometheus.NewDesc("policyd_traffic_sticky_misses_total",
		"Episodes whose remembered version no longer served ready (unloaded, failed, rolled back): rerouted to another version.",
		[]string{"model"}, nil)
	trafficFullDesc = prometheus.NewDesc("policyd_traffic_sticky_table_full_total",
		"New episodes not remembered because the table held max_sticky_keys live ones: routed by the hashing alone.",
		[]string{"model"}, nil)
	trafficKeysDesc = prometheus.NewDesc("policyd_traffic_sticky_keys",
		"Live episode keys remembered.", []string{"model"}, nil)
	trafficWeightDesc = prometheus.NewDesc("policyd_traffic_weight",
		"The live weight of a version in its model's traffic policy.", []string{"model", "version"}, nil)
)

// NewTraffic registers the traffic families on reg, reading repo. It fails only when reg
// already holds one of them (and then registers none).
func NewTraffic(reg prometheus.Registerer, repo TrafficSource) (*Traffic, error) {
	t := &Traffic{repo: repo, gateActions: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "policyd_traffic_gate_actions_total",
		Help: "Automatic changes of a traffic policy by its gates: promote (a step of weight to the candidate) or rollback (the candidate's weight set to 0).",
	}, []string{"model", "candidate", "action"})}
	if err := registerAll(reg, t.gateActions, t); err != nil {
		return nil, err
	}
	return t, nil
}

// GateAction counts one automatic change (wire it to repository.GatesOptions.OnAction).
func (t *Traffic) GateAction(a repository.GateAction) {
	t.gateActions.WithLabelValues(a.Model, a.Candidate, a.Action).Inc()
}

// Describe implements prometheus.Collector.
func (t *Traffic) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{trafficRequestsDesc, trafficMissesDesc, trafficFullDesc, trafficKeysDesc, trafficWeightDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (t *Traffic) Collect(ch chan<- prometheus.Metric) {
	for _, m := range t.repo.TrafficModels() {
		st, ok := t.repo.Traffic(m)
		if !ok {
			continue
		}
		ch <- prometheus.MustNewConstMetric(trafficMissesDesc, prometheus.CounterValue, float64(st.StickyMisses), m)
		ch <- prometheus.MustNewConstMetric(trafficFullDesc, prometheus.CounterValue, float64(st.StickyFull), m)
		ch <- prometheus.MustNewConstMetric(trafficKeysDesc, prometheus.GaugeValue, float64(st.StickyKeys), m)
		for _, v := range st.Versions {
			if _, listed := st.Spec.Weights[v.Version]; listed {
				ch <- prometheus.MustNewConstMetric(trafficWeightDesc, prometheus.GaugeValue, float64(v.Weight), m, v.Version)
			}
			for route, n := range v.Routes {
				ch <- prometheus.MustNewConstMetric(trafficRequestsDesc, prometheus.CounterValue, float64(n), m, v.Version, route)
			}
		}
	}
}
