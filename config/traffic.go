package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/policyd/policyd/artifacts"
)

// ModelTraffic is the traffic policy between the versions of one model (docs/rollout.md). Off
// while weights is empty.
type ModelTraffic struct {
	Weights           []string      `koanf:"weights" reload:"live" unique:"true" pattern:"^[^=\\s]+=[0-9]+$" desc:"Weights of the versions that requests naming no version are split between, each \"VERSION=WEIGHT\" (1.4.0=90, 1.5.0=10): exact versions, weights ≥ 0, at least one above 0; a version gets weight / (sum over the ready versions listed) of the new episodes. The version is chosen by hashing the request's sequence_id, episode_id parameter or X-Episode-ID header (weighted rendezvous), and remembered while the episode lives: no episode changes version, also when the weights change. A request naming a version bypasses the split. Empty: no split (the default version serves). A change applies at reload and replaces weights set at run time (PUT /v2/admin/models/{m}/traffic, policyctl traffic set); a reload that leaves this section as it was keeps them."`
	StickyIdleTimeout time.Duration `koanf:"sticky_idle_timeout" reload:"live" min:"0s" desc:"An episode key without a request for this long is forgotten (its next request follows the weights anew); 0 = 10m."`
	MaxStickyKeys     int           `koanf:"max_sticky_keys" reload:"live" min:"0" max:"16777216" desc:"Most episode keys remembered; a new key beyond it is routed by the hashing alone (sticky while the weights do not change) and counted in policyd_traffic_sticky_table_full_total. 0 = 65536."`
	Shadow            TrafficShadow `koanf:"shadow" desc:"A shadow version that also runs a sample of the live requests, after the primary, and whose answers are compared with the primary's (docs/rollout.md, Shadow evaluation). Off while version is empty."`
	Gates             TrafficGates  `koanf:"gates" desc:"Rules that promote a candidate version in steps or roll it back at once (docs/rollout.md, Gates). Off while candidate is empty."`
}

// TrafficShadow names the shadow version of a traffic policy.
type TrafficShadow struct {
	Version string  `koanf:"version" reload:"live" desc:"The exact version run in the shadow; empty: no shadow."`
	Rate    float64 `koanf:"rate" reload:"live" min:"0" max:"1" desc:"Share of the live requests also run on the shadow, 0..1."`
}

// TrafficGates are the promotion and rollback rules of a traffic policy.
type TrafficGates struct {
	Candidate string        `koanf:"candidate" reload:"live" desc:"The exact version the gates promote or roll back; one of weights. The primary is the other version with the highest weight. Empty: no gates."`
	Interval  time.Duration `koanf:"interval" reload:"live" min:"0s" desc:"Time between two evaluations of the gates; rollback reads the candidate's requests of the last interval. 0 = 10s."`
	Promote   GatePromote   `koanf:"promote" desc:"Promotion in steps; off while steps is empty."`
	Rollback  GateRollback  `koanf:"rollback" desc:"Rollback: the candidate's weight goes to 0 at once when a bound is passed; off while every bound is 0."`
}

// GatePromote moves weight to the candidate in steps.
type GatePromote struct {
	Steps        []int         `koanf:"steps" reload:"live" unique:"true" desc:"The candidate's shares in percent, rising, e.g. [10, 50, 100]; at each step the other versions share the rest in proportion to their weights."`
	MinSamples   int           `koanf:"min_samples" reload:"live" min:"0" desc:"Shadow comparisons a step needs since the previous one (the shadow must run the candidate)."`
	MaxMeanAbs   float64       `koanf:"max_mean_abs" reload:"live" min:"0" desc:"Largest mean absolute difference of the shadow's floating outputs that allows a step."`
	MinAgreement float64       `koanf:"min_agreement" reload:"live" min:"0" max:"1" desc:"Least agreement (0..1) of discrete outputs that allows a step; 0: not checked."`
	Dwell        time.Duration `koanf:"dwell" reload:"live" min:"0s" desc:"Least time between two steps."`
}

// GateRollback rolls the candidate back.
type GateRollback struct {
	MaxErrorRate float64       `koanf:"max_error_rate" reload:"live" min:"0" max:"1" desc:"Error rate (0..1) of the candidate's answers over the last interval above which it is rolled back; 0: not checked."`
	MaxP99       time.Duration `koanf:"max_p99" reload:"live" min:"0s" desc:"p99 latency of the candidate's answers over the last interval above which it is rolled back; 0: not checked."`
	MaxMeanAbs   float64       `koanf:"max_mean_abs" reload:"live" min:"0" desc:"Shadow mean absolute difference above which it is rolled back; 0: not checked."`
	MinRequests  int           `koanf:"min_requests" reload:"live" min:"0" desc:"Requests the candidate must have answered in the interval before its error rate and p99 count; 0 = 20."`
}

// WeightMap parses Weights ("VERSION=WEIGHT") into version → weight; nil when empty.
func (t ModelTraffic) WeightMap() (map[string]int, error) {
	if len(t.Weights) == 0 {
		return nil, nil
	}
	out := make(map[string]int, len(t.Weights))
	for _, s := range t.Weights {
		v, w, ok := strings.Cut(s, "=")
		n, err := strconv.Atoi(w)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("%q is not VERSION=WEIGHT with a weight ≥ 0", s)
		}
		if exact, err := artifacts.ParseSelector(v); err != nil || exact == "" {
			return nil, fmt.Errorf("%q: %q is not an exact version like 1.2.3", s, v)
		}
		c, _ := artifacts.RequestedVersion(v)
		if _, dup := out[c.String()]; dup {
			return nil, fmt.Errorf("version %s listed twice", c)
		}
		out[c.String()] = n
	}
	return out, nil
}

// validateTraffic checks what the tags of models[].traffic cannot say.
func validateTraffic(ch *checker, p string, t ModelTraffic) {
	w, err := t.WeightMap()
	if err != nil {
		ch.fail(p+".weights", "%v", err)
		return
	}
	positive := false
	for _, n := range w {
		positive = positive || n > 0
	}
	if len(w) > 0 && !positive {
		ch.fail(p+".weights", "at least one weight must be above 0")
	}
	exact := func(key, v string) (string, bool) {
		if c, err := artifacts.ParseSelector(v); err != nil || c == "" {
			ch.fail(key, "must be an exact version like 1.2.3, got %q", v)
			return "", false
		}
		c, _ := artifacts.RequestedVersion(v)
		return c.String(), true
	}
	if t.Shadow.Version != "" {
		exact(p+".shadow.version", t.Shadow.Version)
	}
	g := t.Gates
	if g.Candidate == "" {
		return
	}
	if c, ok := exact(p+".gates.candidate", g.Candidate); ok {
		if _, in := w[c]; !in || len(w) < 2 {
			ch.fail(p+".gates.candidate", "must be one of weights' versions, with at least one other version listed; got %q", g.Candidate)
		}
	}
	for i, s := range g.Promote.Steps {
		if s <= 0 || s > 100 || i > 0 && s <= g.Promote.Steps[i-1] {
			ch.fail(fmt.Sprintf("%s.gates.promote.steps[%d]", p, i), "must rise within 1..100, got %d", s)
		}
	}
	if len(g.Promote.Steps) > 0 && g.Promote.MinSamples <= 0 {
		ch.fail(p+".gates.promote.min_samples", "must be positive when steps are set")
	}
	rb := g.Rollback
	if len(g.Promote.Steps) == 0 && rb.MaxErrorRate == 0 && rb.MaxP99 == 0 && rb.MaxMeanAbs == 0 {
		ch.fail(p+".gates", "candidate is set but neither promote.steps nor a rollback bound is")
	}
}
