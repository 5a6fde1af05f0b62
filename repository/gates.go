package repository

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
)

// GatesSpec are the automatic rules of a traffic policy about one candidate version: promote it
// in steps while the evidence is good, roll it back at once when it is bad. Gates evaluates them
// periodically.
type GatesSpec struct {
	// Candidate is the exact version the gates promote or roll back; it must be one of the
	// policy's weights. The primary is the other version with the highest weight.
	Candidate string
	// Interval between two evaluations; 0: DefaultGateInterval. Rollback reads the candidate's
	// requests of the last interval.
	Interval time.Duration
	// Promote, when set, moves weight to the candidate in steps.
	Promote *PromoteGate
	// Rollback, when set, sets the candidate's weight to 0 at once when a bound is passed.
	Rollback *RollbackGate
}

// PromoteGate moves weight to the candidate: at each step the candidate's share becomes the
// next of Steps (percent of the total weight; the other versions share the rest in proportion
// to their weights), when the shadow has compared at least MinSamples requests since the last
// step with no shadow error, divergence within the bounds, the candidate answered no request
// with an error since the last step, and Dwell has passed since the last change.
type PromoteGate struct {
	// MinSamples is the number of shadow comparisons (ShadowReport.Samples) a step needs.
	MinSamples int64
	// MaxMeanAbs bounds the mean absolute difference of the shadow's floating outputs.
	MaxMeanAbs float64
	// MinAgreement (0..1) is the least agreement of discrete outputs; 0: not checked.
	MinAgreement float64
	// Steps are the candidate's shares in percent, rising, the last ≤ 100 (e.g. 10, 25, 50, 100).
	Steps []int
	// Dwell is the least time between two changes.
	Dwell time.Duration
}

// RollbackGate sets the candidate's weight to 0 (the primary gets its share) at once when, over
// the last interval, the candidate's error rate or p99 latency, or the shadow's divergence, is
// above its bound. A bound of 0 is not checked. Keys remembered on the candidate are forgotten:
// their next request goes to the primary (a stickiness miss).
type RollbackGate struct {
	// MaxErrorRate (0..1) of the candidate's answers over the interval.
	MaxErrorRate float64
	// MaxP99 of the candidate's answers over the interval.
	MaxP99 time.Duration
	// MaxMeanAbs bounds the shadow's mean absolute difference.
	MaxMeanAbs float64
	// MinRequests the candidate must have answered in the interval before its error rate and
	// p99 count; 0: DefaultGateMinRequests.
	MinRequests int64
}

// Defaults of the gates.
const (
	DefaultGateInterval    = 10 * time.Second
	DefaultGateMinRequests = 20
	gateHistoryLen         = 32
)

func (g *GatesSpec) clone() *GatesSpec {
	c := *g
	if g.Promote != nil {
		p := *g.Promote
		p.Steps = slices.Clone(p.Steps)
		c.Promote = &p
	}
	if g.Rollback != nil {
		r := *g.Rollback
		c.Rollback = &r
	}
	return &c
}

func (g *GatesSpec) check(path string, weights map[string]int, add func(string, ...any)) {
	if g == nil {
		return
	}
	if exact, err := artifacts.ParseSelector(g.Candidate); err != nil || exact == "" {
		add("%s.candidate: %q is not an exact version (1.2.3)", path, g.Candidate)
	} else if !slices.ContainsFunc(slices.Collect(maps.Keys(weights)), func(v string) bool { return canonicalOr(v) == canonicalOr(g.Candidate) }) {
		add("%s.candidate: %q is not one of the weights' versions", path, g.Candidate)
	} else if len(weights) < 2 {
		add("%s: the weights must name the candidate and at least one other version", path)
	}
	if g.Interval < 0 {
		add("%s.interval: must not be negative, got %s", path, g.Interval)
	}
	if g.Promote == nil && g.Rollback == nil {
		add("%s: set promote, rollback or both", path)
	}
	if p := g.Promote; p != nil {
		if p.MinSamples <= 0 {
			add("%s.promote.min_samples: must be positive, got %d", path, p.MinSamples)
		}
		if p.MaxMeanAbs < 0 {
			add("%s.promote.max_mean_abs: must not be negative, got %g", path, p.MaxMeanAbs)
		}
		if p.MinAgreement < 0 || p.MinAgreement > 1 {
			add("%s.promote.min_agreement: must be 0..1, got %g", path, p.MinAgreement)
		}
		if len(p.Steps) == 0 {
			add("%s.promote.steps: empty; list the candidate's shares in percent, e.g. [10, 50, 100]", path)
		}
		for i, s := range p.Steps {
			if s <= 0 || s > 100 || i > 0 && s <= p.Steps[i-1] {
				add("%s.promote.steps[%d]: must rise within 1..100, got %d", path, i, s)
			}
		}
		if p.Dwell < 0 {
			add("%s.promote.dwell: must not be negative, got %s", path, p.Dwell)
		}
	}
	if rb := g.Rollback; rb != nil {
		if rb.MaxErrorRate < 0 || rb.MaxErrorRate > 1 {
			add("%s.rollback.max_error_rate: must be 0..1, got %g", path, rb.MaxErrorRate)
		}
		if rb.MaxP99 < 0 {
			add("%s.rollback.max_p99: must not be negative, got %s", path, rb.MaxP99)
		}
		if rb.MaxMeanAbs < 0 {
			add("%s.rollback.max_mean_abs: must not be negative, got %g", path, rb.MaxMeanAbs)
		}
		if rb.MinRequests < 0 {
			add("%s.rollback.min_requests: must not be negative, got %d", path, rb.MinRequests)
		}
		if rb.MaxErrorRate == 0 && rb.MaxP99 == 0 && rb.MaxMeanAbs == 0 {
			add("%s.rollback: set max_error_rate, max_p99 or max_mean_abs", path)
		}
	}
}

// ShadowReport is what the shadow evaluation measured comparing a candidate with its primary,
// cumulative since the shadow started: the gates read it through GatesOptions.Shadow.
type ShadowReport struct {
	// Samples is the number of requests compared; Errors the shadow runs that failed.
	Samples, Errors int64
	// MeanAbs and MaxAbs are the mean and largest absolute differences of floating outputs;
	// MaxRel the largest relative one.
	MeanAbs, MaxAbs, MaxRel float64
	// Agreement is the share (0..1) of discrete outputs that agree; 1 when there are none.
	Agreement float64
}

// GatesOptions configure Gates.
type GatesOptions struct {
	// Shadow reports the shadow's comparison of candidate with primary for model; nil: no
	// shadow (promotion then never steps, and max_mean_abs is not checked).
	Shadow func(model, primary, candidate string) ShadowReport
	// OnAction is called after every automatic change, e.g. to count it in
	// policyd_traffic_gate_actions_total.
	OnAction func(a GateAction)
}

// GateAction is one automatic change of a traffic policy.
type GateAction struct {
	Time      time.Time      `json:"time"`
	Model     string         `json:"model"`
	Candidate string         `json:"candidate"`
	Primary   string         `json:"primary"`
	Action    string         `json:"action"` // "promote" or "rollback"
	Reason    string         `json:"reason"`
	Weights   map[string]int `json:"weights"` // the weights after the change
}

// GateStatus is the state of a policy's gates.
type GateStatus struct {
	Candidate string `json:"candidate"`
	// State: "evaluating", "promoted" (the last step reached) or "rolled_back" (the gates act
	// no more until the policy is set anew).
	State string `json:"state"`
	// Step is the index of the last promotion step taken (-1: none).
	Step       int          `json:"step"`
	LastChange time.Time    `json:"last_change,omitzero"`
	LastCheck  time.Time    `json:"last_check,omitzero"`
	LastReason string       `json:"last_reason,omitempty"`
	History    []GateAction `json:"history"`
	// Actions counts the automatic changes by action, since the process started.
	Actions map[string]uint64 `json:"actions"`
}

// gateState is what the gates of one policy remember between evaluations (under mu).
type gateState struct {
	mu         sync.Mutex
	state      string
	step       int
	lastChange time.Time
	lastCheck  time.Time
	lastReason string
	base       ShadowReport // the shadow's report at the last change
	lat        [latencyBuckets]uint64
	reqs, errs uint64 // the candidate's counters at the last check
	history    []GateAction
	actions    map[string]uint64
}

// resetGate starts the gates of a new spec afresh; history and action counts stay.
func (p *trafficPolicy) resetGate() {
	g := &p.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	g.state, g.step, g.lastChange, g.lastCheck, g.lastReason = "evaluating", -1, time.Time{}, time.Time{}, ""
	g.base = ShadowReport{}
	g.reqs, g.errs = 0, 0
	g.lat = [latencyBuckets]uint64{}
}

func (p *trafficPolicy) gateStatus() GateStatus {
	g := &p.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	st := GateStatus{State: g.state, Step: g.step, LastChange: g.lastChange, LastCheck: g.lastCheck,
		LastReason: g.lastReason, History: slices.Clone(g.history), Actions: maps.Clone(g.actions)}
	if spec := p.spec.Load(); spec.Gates != nil {
		st.Candidate = spec.Gates.Candidate
	}
	if st.History == nil {
		st.History = []GateAction{}
	}
	if st.Actions == nil {
		st.Actions = map[string]uint64{}
	}
	return st
}

// Gates evaluates the gates of every traffic policy of a Repository: Run calls Evaluate on a
// ticker; tests call Evaluate with their own clock. Safe for concurrent use.
type Gates struct {
	r *Repository
	o GatesOptions
}

// NewGates returns the gates of r.
func NewGates(r *Repository, o GatesOptions) *Gates { return &Gates{r: r, o: o} }

// Run evaluates the gates every tick until ctx ends.
func (g *Gates) Run(ctx context.Context, tick time.Duration) {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			g.Evaluate(now)
		}
	}
}

// Evaluate evaluates, at now, the gates of every policy whose interval has passed since its
// last evaluation, and returns the changes it made.
func (g *Gates) Evaluate(now time.Time) []GateAction {
	var out []GateAction
	for _, model := range g.r.TrafficModels() {
		p := g.r.policy(model)
		if p == nil {
			continue
		}
		if a, ok := g.evaluate(p, now); ok {
			out = append(out, a)
		}
	}
	return out
}

// evaluate runs the gates of p once; ok when it changed the weights.
func (g *Gates) evaluate(p *trafficPolicy, now time.Time) (GateAction, bool) {
	// trafficMu first (as SetTraffic and Apply take it, then gate.mu in resetGate): no change
	// of the policy by an operator or a reload interleaves with the gates' own.
	g.r.trafficMu.Lock()
	defer g.r.trafficMu.Unlock()
	if g.r.policy(p.model) != p {
		return GateAction{}, false // removed since Evaluate listed it
	}
	spec := p.spec.Load()
	gs := spec.Gates
	if gs == nil {
		return GateAction{}, false
	}
	st := &p.gate
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.state != "evaluating" {
		return GateAction{}, false
	}
	interval := cmpOr(gs.Interval, DefaultGateInterval)
	if !st.lastCheck.IsZero() && now.Sub(st.lastCheck) < interval {
		return GateAction{}, false
	}
	first := st.lastCheck.IsZero() // the window of the candidate's requests starts now
	st.lastCheck = now
	if st.lastChange.IsZero() {
		st.lastChange = now
	}
	cand := gs.Candidate
	primary := primaryOf(spec.Weights, cand)
	c := p.counters(cand)
	reqs, errs, lat := c.requests.Load(), c.errors.Load(), c.latency.snapshot()
	dReqs, dErrs := reqs-st.reqs, errs-st.errs
	var window [latencyBuckets]uint64
	for i := range lat {
		window[i] = lat[i] - st.lat[i]
	}
	st.reqs, st.errs, st.lat = reqs, errs, lat
	if first {
		dReqs, dErrs = 0, 0
	}
	var rep ShadowReport
	if g.o.Shadow != nil {
		rep = g.o.Shadow(p.model, primary, cand)
	}

	if rb := gs.Rollback; rb != nil {
		reason := ""
		minReqs := uint64(cmpOr(rb.MinRequests, DefaultGateMinRequests))
		if dReqs >= minReqs && dReqs > 0 {
			rate := float64(dErrs) / float64(dReqs)
			p99 := quantile(&window, 0.99)
			switch {
			case rb.MaxErrorRate > 0 && rate > rb.MaxErrorRate:
				reason = fmt.Sprintf("error rate %.3f over the last %s (%d of %d requests) is above max_error_rate %g", rate, interval, dErrs, dReqs, rb.MaxErrorRate)
			case rb.MaxP99 > 0 && p99 > rb.MaxP99:
				reason = fmt.Sprintf("p99 latency %s over the last %s (%d requests) is above max_p99 %s", p99.Round(time.Microsecond), interval, dReqs, rb.MaxP99)
			}
		}
		if reason == "" && rb.MaxMeanAbs > 0 && rep.Samples > 0 && rep.MeanAbs > rb.MaxMeanAbs {
			reason = fmt.Sprintf("shadow mean absolute difference %.3g over %d samples is above max_mean_abs %g", rep.MeanAbs, rep.Samples, rb.MaxMeanAbs)
		}
		if reason != "" {
			w := maps.Clone(spec.Weights)
			w[cand] = 0
			if primary != "" && w[primary] == 0 {
				w[primary] = 1
			}
			st.state = "rolled_back"
			forgotten := p.sticky.forget(cand)
			reason += fmt.Sprintf("; %d live keys of %s move to %s", forgotten, cand, primary)
			return g.change(p, spec, w, "rollback", reason, primary, now, rep), true
		}
	}
	if pr := gs.Promote; pr != nil && g.o.Shadow != nil {
		next := st.step + 1
		if next >= len(pr.Steps) {
			st.state = "promoted"
			return GateAction{}, false
		}
		samples := rep.Samples - st.base.Samples
		var why string
		switch {
		case samples < pr.MinSamples:
			why = fmt.Sprintf("waiting for shadow samples: %d of %d", samples, pr.MinSamples)
		case rep.Errors > st.base.Errors:
			why = fmt.Sprintf("shadow errors: %d since the last step", rep.Errors-st.base.Errors)
		case dErrs > 0:
			why = fmt.Sprintf("the candidate answered %d errors in the last interval", dErrs)
		case rep.MeanAbs > pr.MaxMeanAbs:
			why = fmt.Sprintf("shadow mean absolute difference %.3g is above max_mean_abs %g", rep.MeanAbs, pr.MaxMeanAbs)
		case pr.MinAgreement > 0 && rep.Agreement < pr.MinAgreement:
			why = fmt.Sprintf("shadow agreement %.4f is below min_agreement %g", rep.Agreement, pr.MinAgreement)
		case now.Sub(st.lastChange) < pr.Dwell && st.step >= 0:
			why = fmt.Sprintf("dwelling: %s of %s since the last step", now.Sub(st.lastChange).Round(time.Second), pr.Dwell)
		}
		if why != "" {
			st.lastReason = why
			return GateAction{}, false
		}
		share := pr.Steps[next]
		w := stepWeights(spec.Weights, cand, share)
		st.step = next
		if next == len(pr.Steps)-1 {
			st.state = "promoted"
		}
		reason := fmt.Sprintf("step %d of %d: %s gets %d%%: %d shadow samples since the last step, mean abs %.3g ≤ %g, agreement %.4f, 0 errors",
			next+1, len(pr.Steps), cand, share, samples, rep.MeanAbs, pr.MaxMeanAbs, rep.Agreement)
		return g.change(p, spec, w, "promote", reason, primary, now, rep), true
	}
	return GateAction{}, false
}

// change stores the new weights w as the gates' change of spec and records it; the caller
// holds the repository's trafficMu and p.gate.mu.
func (g *Gates) change(p *trafficPolicy, spec *TrafficSpec, w map[string]int, action, reason, primary string, now time.Time, rep ShadowReport) GateAction {
	next := *spec
	next.Weights = w
	p.set(&next, "gate")
	st := &p.gate
	st.lastChange = now
	st.lastReason = reason
	st.base = rep
	a := GateAction{Time: now, Model: p.model, Candidate: spec.Gates.Candidate, Primary: primary,
		Action: action, Reason: reason, Weights: maps.Clone(w)}
	st.history = append(st.history, a)
	if len(st.history) > gateHistoryLen {
		st.history = slices.Delete(st.history, 0, len(st.history)-gateHistoryLen)
	}
	if st.actions == nil {
		st.actions = map[string]uint64{}
	}
	st.actions[action]++
	log := g.r.log.Info
	if action == "rollback" {
		log = g.r.log.Warn
	}
	log("traffic gate "+action, zap.String("model", p.model), zap.String("candidate", a.Candidate),
		zap.String("primary", primary), zap.String("reason", reason), zap.String("weights", formatWeights(w)))
	if g.o.OnAction != nil {
		g.o.OnAction(a)
	}
	return a
}

// primaryOf is the version other than cand with the highest weight (the highest version on a
// tie); "" when there is none.
func primaryOf(weights map[string]int, cand string) string {
	best, bw := "", -1
	for _, v := range slices.Sorted(maps.Keys(weights)) {
		if v == cand {
			continue
		}
		if w := weights[v]; w > bw || w == bw && canonicalLess(best, v) {
			best, bw = v, w
		}
	}
	return best
}

func canonicalLess(a, b string) bool {
	av, _ := artifacts.RequestedVersion(a)
	bv, _ := artifacts.RequestedVersion(b)
	return lessVersion(av, bv, a, b)
}

// stepWeights gives cand share percent of the total weight 100 and the others the rest in
// proportion to their weights (evenly when they all are 0).
func stepWeights(weights map[string]int, cand string, share int) map[string]int {
	out := map[string]int{cand: share}
	others := 0
	n := 0
	for v, w := range weights {
		if v != cand {
			others += w
			n++
		}
	}
	rest := 100 - share
	given := 0
	keys := slices.Sorted(maps.Keys(weights))
	for _, v := range keys {
		if v == cand {
			continue
		}
		var w int
		if others > 0 {
			w = rest * weights[v] / others
		} else {
			w = rest / n
		}
		out[v] = w
		given += w
	}
	// the rounding remainder goes to the primary
	if p := primaryOf(weights, cand); p != "" {
		out[p] += rest - given
	}
	return out
}
