package metrics

import (
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/policyd/policyd/repository"
)

// scrape is the collector of the gauges read from the repository at scrape time.
type scrape Server

// Describe implements prometheus.Collector.
func (c *scrape) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.queueDepth
	ch <- c.inflight
	ch <- c.modelState
	ch <- c.engineMem
	ch <- c.pinnedMem
}

// StateOf is the policyd_model_state state of a version the repository serves: "ready", or
// "failed" for one that failed verification or loading (or that the repository lacks).
func StateOf(v *repository.Version) string {
	if ok, _ := v.Ready(); ok {
		return "ready"
	}
	return "failed"
}

// Collect implements prometheus.Collector: per version served its state, queue depth,
// requests in flight and engine memory (bridge.Context.Memory, one cgo call per context:
// documented safe while the contexts run); the versions being loaded or unloaded, and those
// unloaded through the repository API (unavailable), with their state.
func (c *scrape) Collect(ch chan<- prometheus.Metric) {
	s := (*Server)(c)
	state := map[versionKey]string{}
	var order []versionKey
	set := func(k versionKey, st string) {
		if _, ok := state[k]; !ok {
			order = append(order, k)
		}
		state[k] = st
	}
	devices := map[string]bool{}
	for _, v := range s.repo.All() {
		set(versionKey{v.Name(), v.Version()}, StateOf(v))
		if ok, _ := v.Ready(); !ok {
			continue
		}
		l := []string{v.Name(), v.Version(), v.Backend(), v.Device()}
		devices[v.Device()] = true
		ch <- prometheus.MustNewConstMetric(s.queueDepth, prometheus.GaugeValue, float64(v.QueueDepth()), l...)
		ch <- prometheus.MustNewConstMetric(s.inflight, prometheus.GaugeValue, float64(v.InFlight()), l...)
		arena, weights, err := v.Memory()
		if err == nil {
			ch <- prometheus.MustNewConstMetric(s.engineMem, prometheus.GaugeValue, float64(arena), append(l, "arena")...)
			ch <- prometheus.MustNewConstMetric(s.engineMem, prometheus.GaugeValue, float64(weights), append(l, "weights")...)
		}
	}
	absent := func(k versionKey, st string) {
		if _, ok := state[k]; !ok { // a version served keeps its state while a new one loads
			set(k, st)
		}
	}
	s.mu.Lock()
	for k := range s.retiring {
		absent(k, "unloading")
	}
	for k, st := range s.transient {
		absent(k, st)
	}
	s.mu.Unlock()
	for _, e := range s.repo.Index() {
		if e.State == repository.StateUnloaded && e.Unloaded {
			absent(versionKey{e.Model, e.Version}, "unavailable")
		}
	}
	for _, k := range order {
		for _, st := range states {
			val := 0.0
			if st == state[k] {
				val = 1
			}
			ch <- prometheus.MustNewConstMetric(s.modelState, prometheus.GaugeValue, val, k.model, k.version, st)
		}
	}
	// No backend pins host memory yet (the cpu backend copies nothing); one series per device
	// in use keeps the family present for the dashboard.
	names := make([]string, 0, len(devices))
	for d := range devices {
		names = append(names, d)
	}
	slices.Sort(names)
	for _, d := range names {
		ch <- prometheus.MustNewConstMetric(s.pinnedMem, prometheus.GaugeValue, 0, d)
	}
}
