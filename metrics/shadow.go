package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
)

// DiffBuckets are the buckets of policyd_shadow_abs_diff and policyd_shadow_rel_diff: 0 (the
// same answer) and 1e-6 to 10.
var DiffBuckets = []float64{0, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10}

// ShadowResults are the values of policyd_shadow_requests_total's result label: compared (the
// shadow answered and was compared), dropped (the shadow queue, or the shadow version's own
// queue, was full), error (the shadow failed: not found, not ready, a different signature,
// an engine error), skipped (a step of a sequence the shadow does not follow from its start).
var ShadowResults = []string{"compared", "dropped", "error", "skipped"}

// ShadowDropReasons are the values of policyd_shadow_dropped_total's reason label: queue_full
// (the shadow queue was full), budget (the shadow's CPU budget was spent: dropped before
// anything was copied), overloaded (the shadow version's own queue refused it). Every drop is
// also counted in policyd_shadow_requests_total{result="dropped"}.
var ShadowDropReasons = []string{"queue_full", "budget", "overloaded"}

// shadowLabels name a shadow: the model, the version that answered (primary) and the version
// run beside it (shadow).
var shadowLabels = []string{"model", "primary", "shadow"}

// Shadow is the families of shadow evaluation (docs/rollout.md, Shadow evaluation). Create it
// with NewShadow; it is safe for concurrent use. Its children are resolved once per shadow and
// output (ShadowRequests, ShadowOutput), so recording a comparison allocates nothing.
type Shadow struct {
	requests  *prometheus.CounterVec
	dropped   *prometheus.CounterVec
	absDiff   *prometheus.HistogramVec
	relDiff   *prometheus.HistogramVec
	meanAbs   *prometheus.GaugeVec
	agreement *prometheus.GaugeVec
}

// ShadowOutputMetrics are the children of one output of one shadow.
type ShadowOutputMetrics struct {
	// AbsDiff and RelDiff observe, per compared request, the largest absolute and relative
	// difference of the output's elements (floating outputs).
	AbsDiff, RelDiff prometheus.Observer
	// MeanAbs is the mean absolute difference over every element compared since the shadow
	// started or was reset (floating outputs).
	MeanAbs prometheus.Gauge
	// Agreement is the share of elements equal on both sides since the shadow started or was
	// reset (integer and boolean outputs: discrete actions).
	Agreement prometheus.Gauge
}

// NewShadow registers the shadow families on reg. It fails only when reg already holds one of
// them (and then registers none).
func NewShadow(reg prometheus.Registerer) (*Shadow, error) {
	out := append(append([]string(nil), shadowLabels...), "output")
	m := &Shadow{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "policyd_shadow_requests_total",
			Help: "Sampled requests offered to a shadow version, by result: compared, dropped (shadow queue full; the primary is never affected), error (the shadow failed), skipped (a step of a sequence the shadow did not see start).",
		}, append(append([]string(nil), shadowLabels...), "result")),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "policyd_shadow_dropped_total",
			Help: "Sampled requests not run on the shadow, by reason: queue_full (the shadow queue was full), budget (the shadow's CPU budget was spent; dropped before any copy), overloaded (the shadow version's own queue refused it). Their sum is policyd_shadow_requests_total{result=\"dropped\"}.",
		}, append(append([]string(nil), shadowLabels...), "reason")),
		absDiff: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "policyd_shadow_abs_diff",
			Help:    "Per compared request, the largest absolute difference between the primary's and the shadow's values of a floating output.",
			Buckets: DiffBuckets,
		}, out),
		relDiff: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "policyd_shadow_rel_diff",
			Help:    "Per compared request, the largest relative difference |a-b|/max(|a|,|b|) of a floating output (0 where both are 0).",
			Buckets: DiffBuckets,
		}, out),
		meanAbs: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "policyd_shadow_mean_abs_diff",
			Help: "Mean absolute difference of a floating output over every element compared since the shadow started or was reset.",
		}, out),
		agreement: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "policyd_shadow_agreement_ratio",
			Help: "Share of the elements of an integer or boolean output (a discrete action) equal on both sides, since the shadow started or was reset.",
		}, out),
	}
	cs := []prometheus.Collector{m.requests, m.dropped, m.absDiff, m.relDiff, m.meanAbs, m.agreement}
	if err := registerAll(reg, cs...); err != nil {
		return nil, err
	}
	return m, nil
}

// ShadowRequests returns the counters of a shadow, one per ShadowResults entry, in that order.
func (m *Shadow) ShadowRequests(model, primary, shadow string) [4]prometheus.Counter {
	var cs [4]prometheus.Counter
	for i, r := range ShadowResults {
		cs[i] = m.requests.WithLabelValues(model, primary, shadow, r)
	}
	return cs
}

// ShadowDropped returns the drop counters of a shadow, one per ShadowDropReasons entry, in
// that order.
func (m *Shadow) ShadowDropped(model, primary, shadow string) [3]prometheus.Counter {
	var cs [3]prometheus.Counter
	for i, r := range ShadowDropReasons {
		cs[i] = m.dropped.WithLabelValues(model, primary, shadow, r)
	}
	return cs
}

// ShadowOutput returns the children of one output of a shadow. discrete picks the families
// that apply: agreement for integer outputs, the differences for floating ones.
func (m *Shadow) ShadowOutput(model, primary, shadow, output string, discrete bool) ShadowOutputMetrics {
	if discrete {
		return ShadowOutputMetrics{Agreement: m.agreement.WithLabelValues(model, primary, shadow, output)}
	}
	return ShadowOutputMetrics{
		AbsDiff: m.absDiff.WithLabelValues(model, primary, shadow, output),
		RelDiff: m.relDiff.WithLabelValues(model, primary, shadow, output),
		MeanAbs: m.meanAbs.WithLabelValues(model, primary, shadow, output),
	}
}
