package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Reload is the families of configuration reloads and artifact verification
// (docs/observability.md): reloads by outcome, whether the last one succeeded and when it
// ran, the changes held back until a restart, and the versions refused by verification.
// Create it with NewReload; it is safe for concurrent use.
type Reload struct {
	reloads        *prometheus.CounterVec
	lastOK         prometheus.Gauge
	lastTime       prometheus.Gauge
	pending        prometheus.Gauge
	verifyFailures *prometheus.CounterVec
}

// ReloadOutcomes are the outcomes of a configuration reload, the values of policyd_config_reloads_total's outcome.
var ReloadOutcomes = []string{"applied", "unchanged", "rejected", "failed"}

// NewReload registers the reload families on reg. It fails only when reg already holds one of
// them (and then registers none).
func NewReload(reg prometheus.Registerer) (*Reload, error) {
	m := &Reload{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "policyd_config_reloads_total",
			Help: "Configuration reloads by outcome: applied, unchanged, rejected (invalid config; the old one keeps running), failed (valid config the server could not apply).",
		}, []string{"outcome"}),
		lastOK: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "policyd_config_last_reload_successful",
			Help: "1 when the last configuration reload was applied (or changed nothing), 0 when it was rejected or failed.",
		}),
		lastTime: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "policyd_config_last_reload_timestamp_seconds",
			Help: "Unix time of the last configuration reload attempt.",
		}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "policyd_config_restart_pending_changes",
			Help: "Configuration changes loaded but held back until a restart (e.g. server.addr).",
		}),
		verifyFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "policyd_artifact_verification_failures_total",
			Help: "Artifact verifications that failed (checked at start and at every reload): the version is refused, or, with artifacts.on_tamper: keep, one already serving serves on.",
		}, []string{"model", "version"}),
	}
	for _, o := range ReloadOutcomes {
		m.reloads.WithLabelValues(o)
	}
	m.lastOK.Set(1)
	cs := []prometheus.Collector{m.verifyFailures, m.reloads, m.lastOK, m.lastTime, m.pending}
	if err := registerAll(reg, cs...); err != nil {
		return nil, err
	}
	return m, nil
}

// ObserveReload records a reload attempt started at at, with its outcome (one of
// ReloadOutcomes) and the changes pending a restart once it is over.
func (m *Reload) ObserveReload(outcome string, at time.Time, restartPending int) {
	m.reloads.WithLabelValues(outcome).Inc()
	m.lastTime.Set(float64(at.Unix()))
	if outcome == "applied" || outcome == "unchanged" {
		m.lastOK.Set(1)
	} else {
		m.lastOK.Set(0)
	}
	m.pending.Set(float64(restartPending))
}

// VerifyFailed counts a version refused by artifact verification.
func (m *Reload) VerifyFailed(model, version string) {
	m.verifyFailures.WithLabelValues(model, version).Inc()
}
