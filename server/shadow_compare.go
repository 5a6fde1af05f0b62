package server

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/metrics"
)

// The comparison of a shadow's answers with the primary's (shadow.go runs them), and the
// numbers it keeps per (model, primary, shadow): ShadowReport for the gates, ShadowStatuses
// for health details, metrics.Shadow for Prometheus.

// ShadowReport is what the shadow of one (model, primary, shadow) has measured since it
// started or was last reset (Server.ResetShadow), over every output both versions have.
type ShadowReport struct {
	// Samples are the requests compared; Errors those the shadow failed (not found, not
	// ready, a different signature, an engine error); Dropped those not run because the
	// shadow queue (or the shadow version's own queue) was full; Skipped the steps of
	// sequences the shadow did not see start (sampled mid-way, or after a dropped step).
	Samples, Errors, Dropped, Skipped int64
	// DroppedBudget is the part of Dropped the shadow's CPU budget dropped (shadow_budget.go).
	DroppedBudget int64
	// MeanAbs is the mean absolute difference over every element of every floating output
	// compared; MaxAbs and MaxRel the largest absolute and relative (|a-b|/max(|a|,|b|))
	// difference seen. Elements finite on one side only are counted in NonFinite instead.
	MeanAbs, MaxAbs, MaxRel float64
	NonFinite               int64
	// Agreement is the share of the elements of the integer and boolean outputs (discrete
	// actions) equal on both sides; 1 when there are none yet.
	Agreement float64
	// Since is when the numbers started (the shadow's first sample, or the last reset).
	Since time.Time
}

// ShadowOutputReport is the part of a ShadowReport one output accounts for.
type ShadowOutputReport struct {
	Output    string  `json:"output"`
	Discrete  bool    `json:"discrete"`
	Elements  int64   `json:"elements"`
	MeanAbs   float64 `json:"mean_abs_diff"`
	MaxAbs    float64 `json:"max_abs_diff"`
	MaxRel    float64 `json:"max_rel_diff"`
	NonFinite int64   `json:"non_finite,omitempty"`
	Agreement float64 `json:"agreement"`
}

// ShadowStatus is one shadow as health details show it.
type ShadowStatus struct {
	Model   string `json:"model"`
	Primary string `json:"primary"`
	Shadow  string `json:"shadow"`
	Samples int64  `json:"samples"`
	Errors  int64  `json:"errors"`
	Dropped int64  `json:"dropped"`
	// DroppedBudget is the part of Dropped that the CPU budget dropped (docs/rollout.md).
	DroppedBudget int64                `json:"dropped_budget"`
	Skipped       int64                `json:"skipped"`
	MeanAbs       float64              `json:"mean_abs_diff"`
	MaxAbs        float64              `json:"max_abs_diff"`
	MaxRel        float64              `json:"max_rel_diff"`
	NonFinite     int64                `json:"non_finite"`
	Agreement     float64              `json:"agreement"`
	Since         time.Time            `json:"since"`
	LastError     string               `json:"last_error,omitempty"`
	Outputs       []ShadowOutputReport `json:"outputs"`
}

// outputDiff is what one request's comparison measured of one output.
type outputDiff struct {
	name      string
	discrete  bool
	n         int64   // elements compared (finite on both sides, for a floating output)
	sumAbs    float64 // floating
	maxAbs    float64
	maxRel    float64
	nonFinite int64
	agree     int64 // discrete
}

// compareOutputs is the shadow run's callback: it compares the shadow's outputs with the
// primary's, by name, into j.diffs.
func (j *shadowJob) compareOutputs(outputs []bridge.Tensor) error {
	for i := range min(len(j.shadowOuts), len(outputs)) {
		name := j.shadowOuts[i].Name
		p := -1
		for k, n := range j.names {
			if n == name {
				p = k
				break
			}
		}
		if p < 0 {
			continue // an output the primary does not have
		}
		a, b := j.outs[p], outputs[i]
		if a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || len(a.Data) != len(b.Data) {
			j.cmpErr = fmt.Errorf("output %q: the primary answered %s %v, the shadow %s %v", name, a.DType, a.Shape, b.DType, b.Shape)
			return nil
		}
		d, err := diffTensors(name, a, b)
		if err != nil {
			j.cmpErr = err
			return nil
		}
		j.diffs = append(j.diffs, d)
	}
	return nil
}

// diffTensors compares two tensors of one dtype and shape: floating ones by their differences,
// the others element by element.
func diffTensors(name string, a, b bridge.Tensor) (outputDiff, error) {
	d := outputDiff{name: name}
	size := a.DType.Size()
	if size <= 0 || a.DType == bridge.String {
		return d, fmt.Errorf("output %q: %s outputs cannot be compared", name, a.DType)
	}
	n := len(a.Data) / size
	switch a.DType {
	case bridge.Float32, bridge.Float64, bridge.Float16, bridge.BFloat16:
		for i := range n {
			x, y := floatAt(a, i), floatAt(b, i)
			d.addFloat(x, y)
		}
	default:
		d.discrete = true
		for i := range n {
			if string(a.Data[i*size:(i+1)*size]) == string(b.Data[i*size:(i+1)*size]) {
				d.agree++
			}
		}
		d.n = int64(n)
	}
	return d, nil
}

func floatAt(t bridge.Tensor, i int) float64 {
	switch t.DType {
	case bridge.Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:])))
	case bridge.Float64:
		return math.Float64frombits(binary.LittleEndian.Uint64(t.Data[8*i:]))
	case bridge.Float16:
		return float64(halfToFloat32(binary.LittleEndian.Uint16(t.Data[2*i:])))
	default: // BFloat16
		return float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(t.Data[2*i:])) << 16))
	}
}

// addFloat adds one pair of floating values: equal ones (both NaN included) differ by 0; a
// pair finite on one side only is counted apart (NonFinite).
func (d *outputDiff) addFloat(x, y float64) {
	switch {
	case x == y || (math.IsNaN(x) && math.IsNaN(y)):
		d.n++
		return
	case math.IsNaN(x) || math.IsNaN(y) || math.IsInf(x, 0) || math.IsInf(y, 0):
		d.nonFinite++
		return
	}
	abs := math.Abs(x - y)
	rel := abs / max(math.Abs(x), math.Abs(y))
	d.n++
	d.sumAbs += abs
	d.maxAbs = max(d.maxAbs, abs)
	d.maxRel = max(d.maxRel, rel)
}

// shadowTriple is the numbers of one (model, primary, shadow).
type shadowTriple struct {
	key      shadowKey
	counters [4]prometheus.Counter // by result; nil without metrics
	drops    [3]prometheus.Counter // by metrics.ShadowDropReasons; nil without metrics

	// Counted without t.mu: a request the budget drops costs the primary atomic adds only.
	results [4]atomic.Int64
	budget  atomic.Int64 // of results[resultDropped], those the CPU budget dropped

	mu      sync.Mutex
	since   time.Time
	lastErr string
	outs    []*shadowOutput // by name, in the order first seen
}

// shadowOutput is the cumulative numbers of one output of a shadow.
type shadowOutput struct {
	name      string
	discrete  bool
	n         int64
	sumAbs    float64
	maxAbs    float64
	maxRel    float64
	nonFinite int64
	agree     int64
	m         metrics.ShadowOutputMetrics // zero without metrics
}

// triple finds or makes the numbers of k: the last one found when it is k (a server shadows
// one triple per model in a rollout; the read lock's shared counter is not touched then).
func (sh *shadows) triple(k shadowKey) *shadowTriple {
	if t := sh.last.Load(); t != nil && t.key == k {
		return t
	}
	sh.mu.RLock()
	t := sh.triples[k]
	sh.mu.RUnlock()
	if t == nil {
		sh.mu.Lock()
		if t = sh.triples[k]; t == nil {
			t = &shadowTriple{key: k, since: time.Now()}
			if sh.metrics != nil {
				t.counters = sh.metrics.ShadowRequests(k.model, k.primary, k.shadow)
				t.drops = sh.metrics.ShadowDropped(k.model, k.primary, k.shadow)
			}
			sh.triples[k] = t
		}
		sh.mu.Unlock()
	}
	sh.last.Store(t) // triples are never removed: a stale one is still right for its key
	return t
}

func (t *shadowTriple) count(result int) {
	t.results[result].Add(1)
	if c := t.counters[result]; c != nil {
		c.Inc()
	}
}

// Reasons a sampled request was dropped (metrics.ShadowDropReasons' order).
const (
	dropQueueFull = iota
	dropBudget
	dropOverloaded
)

// drop counts a sampled request dropped for reason.
func (t *shadowTriple) drop(reason int) {
	if reason == dropBudget {
		t.budget.Add(1)
	}
	t.count(resultDropped)
	if c := t.drops[reason]; c != nil {
		c.Inc()
	}
}

func (t *shadowTriple) fail(err error) {
	t.mu.Lock()
	t.lastErr = clip(err.Error(), 500)
	t.mu.Unlock()
	t.count(resultError)
}

// record adds one compared request's differences.
func (t *shadowTriple) record(diffs []outputDiff, m *metrics.Shadow) {
	t.mu.Lock()
	for i := range diffs {
		d := &diffs[i]
		o := t.output(d, m)
		o.n += d.n
		o.nonFinite += d.nonFinite
		if d.discrete {
			o.agree += d.agree
			if o.m.Agreement != nil && o.n > 0 {
				o.m.Agreement.Set(float64(o.agree) / float64(o.n))
			}
			continue
		}
		o.sumAbs += d.sumAbs
		o.maxAbs = max(o.maxAbs, d.maxAbs)
		o.maxRel = max(o.maxRel, d.maxRel)
		if o.m.AbsDiff != nil {
			o.m.AbsDiff.Observe(d.maxAbs)
			o.m.RelDiff.Observe(d.maxRel)
			if o.n > 0 {
				o.m.MeanAbs.Set(o.sumAbs / float64(o.n))
			}
		}
	}
	t.results[resultCompared].Add(1)
	t.mu.Unlock()
	if c := t.counters[resultCompared]; c != nil {
		c.Inc()
	}
}

// output finds or makes the numbers of output d.name; t.mu is held.
func (t *shadowTriple) output(d *outputDiff, m *metrics.Shadow) *shadowOutput {
	for _, o := range t.outs {
		if o.name == d.name {
			return o
		}
	}
	o := &shadowOutput{name: d.name, discrete: d.discrete}
	if m != nil {
		o.m = m.ShadowOutput(t.key.model, t.key.primary, t.key.shadow, d.name, d.discrete)
	}
	t.outs = append(t.outs, o)
	return o
}

// report sums t's numbers; t.mu is held.
func (t *shadowTriple) report() (ShadowReport, []ShadowOutputReport) {
	r := ShadowReport{Samples: t.results[resultCompared].Load(), Errors: t.results[resultError].Load(),
		Dropped: t.results[resultDropped].Load(), DroppedBudget: t.budget.Load(), Skipped: t.results[resultSkipped].Load(), Since: t.since, Agreement: 1}
	outs := make([]ShadowOutputReport, 0, len(t.outs))
	var n, agreeN, agree int64
	var sum float64
	for _, o := range t.outs {
		or := ShadowOutputReport{Output: o.name, Discrete: o.discrete, Elements: o.n, NonFinite: o.nonFinite, Agreement: 1}
		r.NonFinite += o.nonFinite
		if o.discrete {
			agreeN += o.n
			agree += o.agree
			if o.n > 0 {
				or.Agreement = float64(o.agree) / float64(o.n)
			}
		} else {
			n += o.n
			sum += o.sumAbs
			if o.n > 0 {
				or.MeanAbs = o.sumAbs / float64(o.n)
			}
			or.MaxAbs, or.MaxRel = o.maxAbs, o.maxRel
			r.MaxAbs, r.MaxRel = max(r.MaxAbs, o.maxAbs), max(r.MaxRel, o.maxRel)
		}
		outs = append(outs, or)
	}
	if n > 0 {
		r.MeanAbs = sum / float64(n)
	}
	if agreeN > 0 {
		r.Agreement = float64(agree) / float64(agreeN)
	}
	return r, outs
}

// reset starts t's numbers again (the Prometheus counters and histograms stay cumulative).
func (t *shadowTriple) reset() {
	t.mu.Lock()
	for i := range t.results {
		t.results[i].Store(0)
	}
	t.budget.Store(0)
	t.since = time.Now()
	t.lastErr = ""
	for _, o := range t.outs {
		*o = shadowOutput{name: o.name, discrete: o.discrete, m: o.m}
		if o.m.Agreement != nil {
			o.m.Agreement.Set(1)
		}
		if o.m.MeanAbs != nil {
			o.m.MeanAbs.Set(0)
		}
	}
	t.mu.Unlock()
}

// ShadowReport reports what the shadow of model's version primary by version shadow has
// measured since it started or was last reset (zero, with Agreement 1, when it has seen no
// request yet). The gates of a traffic policy read it.
func (s *Server) ShadowReport(model, primary, shadow string) ShadowReport {
	if s.shadows == nil {
		return ShadowReport{Agreement: 1}
	}
	s.shadows.mu.RLock()
	t := s.shadows.triples[shadowKey{model, primary, shadow}]
	s.shadows.mu.RUnlock()
	if t == nil {
		return ShadowReport{Agreement: 1}
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	r, _ := t.report()
	return r
}

// ResetShadow starts the numbers of a shadow again (a gate that moved weight reads the next
// window from there); an unknown shadow is left alone.
func (s *Server) ResetShadow(model, primary, shadow string) {
	if s.shadows == nil {
		return
	}
	s.shadows.mu.RLock()
	t := s.shadows.triples[shadowKey{model, primary, shadow}]
	s.shadows.mu.RUnlock()
	if t != nil {
		t.reset()
	}
}

// ShadowStatuses lists every shadow that has seen a request, sorted by model, primary and
// shadow, with its report per output: health details show them.
func (s *Server) ShadowStatuses() []ShadowStatus {
	out := []ShadowStatus{}
	if s.shadows == nil {
		return out
	}
	s.shadows.mu.RLock()
	ts := make([]*shadowTriple, 0, len(s.shadows.triples))
	for _, t := range s.shadows.triples {
		ts = append(ts, t)
	}
	s.shadows.mu.RUnlock()
	for _, t := range ts {
		t.mu.Lock()
		r, outs := t.report()
		st := ShadowStatus{Model: t.key.model, Primary: t.key.primary, Shadow: t.key.shadow,
			Samples: r.Samples, Errors: r.Errors, Dropped: r.Dropped, DroppedBudget: r.DroppedBudget, Skipped: r.Skipped,
			MeanAbs: r.MeanAbs, MaxAbs: r.MaxAbs, MaxRel: r.MaxRel, NonFinite: r.NonFinite,
			Agreement: r.Agreement, Since: r.Since.UTC(), LastError: t.lastErr, Outputs: outs}
		t.mu.Unlock()
		out = append(out, st)
	}
	sort.Slice(out, func(i, k int) bool {
		a, b := out[i], out[k]
		if a.Model != b.Model {
			return a.Model < b.Model
		}
		if a.Primary != b.Primary {
			return a.Primary < b.Primary
		}
		return a.Shadow < b.Shadow
	})
	return out
}
