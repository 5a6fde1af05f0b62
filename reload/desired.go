package reload

import (
	"crypto/ed25519"
	"fmt"
	"slices"
	"strconv"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/config"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// TrustedKeys loads the public keys of artifacts.trusted_keys.
func TrustedKeys(c *config.Config) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, p := range c.Artifacts.TrustedKeys {
		k, err := artifacts.LoadPublicKey(p)
		if err != nil {
			return nil, fmt.Errorf("artifacts.trusted_keys: %w", err)
		}
		keys = append(keys, k)
	}
	return keys, nil
}

// Desired turns the configuration into the repository's desired set. onVerifyFailure is told
// of every version refused by artifact verification.
func Desired(c *config.Config, keys []ed25519.PublicKey, onVerifyFailure func(model, version, reason string)) repository.Desired {
	d := repository.Desired{
		Dir:                 c.Repository.Path,
		QueueLen:            c.Limits.QueueLen,
		Batching:            c.Batching.Enabled,
		Seed:                c.Engine.Seed,
		RequireEngineCaches: !c.Engine.BuildEngines,
		MaxModelMemory:      uint64(c.Limits.MaxModelMemory),
		TrustedKeys:         keys,
		OnVerifyFailure:     onVerifyFailure,
		KeepTampered:        c.Artifacts.OnTamper == "keep",
		Default: repository.ModelSpec{
			Backends:  c.Engine.Backends,
			Params:    c.Engine.BackendParameters,
			Instances: c.Instances(config.DefaultModel()),
			Threads:   c.Threads(config.DefaultModel()),
			Batching: repository.BatchingSpec{
				MaxBatchSize:         c.Batching.MaxBatchSize,
				MaxQueueDelay:        c.Batching.MaxQueueDelay,
				PreferredBatchSizes:  c.Batching.PreferredBatchSizes,
				PriorityLevels:       c.Batching.PriorityLevels,
				DefaultPriorityLevel: c.Batching.DefaultPriorityLevel,
			},
		},
	}
	for _, m := range c.Models {
		fallback := m.Fallback
		d.Models = append(d.Models, repository.ModelSpec{
			Name: m.Name, Version: m.Version, Digest: m.Digest, Backends: m.Backends,
			Fallback: &fallback, Devices: gpuIndexes(m.Devices), Params: m.BackendParameters,
			Instances: c.Instances(m), Threads: c.Threads(m),
			Batching: repository.BatchingSpec{
				MaxBatchSize:         m.Batching.MaxBatchSize,
				MaxQueueDelay:        m.Batching.MaxQueueDelay,
				PreferredBatchSizes:  m.Batching.PreferredBatchSizes,
				PriorityLevels:       m.Batching.PriorityLevels,
				DefaultPriorityLevel: m.Batching.DefaultPriorityLevel,
			},
			Sequence:       sequenceSpec(m.Sequence),
			ActionFallback: actionFallback(m.DeadlineFallback),
			Traffic:        trafficSpec(m.Traffic),
		})
	}
	return d
}

// gpuIndexes maps models[].devices (validated by config: "all" alone, or indexes) to
// repository.ModelSpec.Devices: nil for every GPU.
func gpuIndexes(devices []string) []int {
	var out []int
	for _, d := range devices {
		n, err := strconv.Atoi(d)
		if err != nil { // "all"
			return nil
		}
		out = append(out, n)
	}
	return out
}

// sequenceSpec converts models[].sequence (validated) to the engines' spec; nil when it lists
// no state pairs and no control inputs.
func sequenceSpec(s config.ModelSequence) *engines.SequenceSpec {
	pairs, _ := s.StatePairs()
	if len(pairs) == 0 && len(s.Controls) == 0 {
		return nil
	}
	spec := &engines.SequenceSpec{IdleTimeout: s.IdleTimeout, MaxSequences: s.MaxSequences}
	for _, p := range pairs {
		spec.States = append(spec.States, engines.StatePair{Input: p[0], Output: p[1]})
	}
	for _, c := range s.Controls {
		kind, _ := engines.ParseControlKind(c.Kind)
		dtype, _ := engines.ParseControlDType(c.DataType)
		spec.Controls = append(spec.Controls, engines.Control{
			Input: c.Input, Kind: kind, DType: dtype, False: c.FalseValue, True: c.TrueValue})
	}
	return spec
}

// actionFallback converts models[].deadline_fallback (validated) to the repository's; nil for
// kind none.
func actionFallback(f config.ModelFallback) *repository.ActionFallback {
	if f.Kind == "" || f.Kind == "none" {
		return nil
	}
	out := &repository.ActionFallback{Kind: f.Kind, Version: f.Version}
	if len(f.Constant) > 0 {
		out.Constant = make(map[string][]float64, len(f.Constant))
		for _, c := range f.Constant {
			out.Constant[c.Output] = slices.Clone(c.Values)
		}
	}
	return out
}

// trafficSpec converts models[].traffic (validated) to the repository's policy; nil when it
// lists no weights.
func trafficSpec(t config.ModelTraffic) *repository.TrafficSpec {
	w, err := t.WeightMap()
	if err != nil || len(w) == 0 {
		return nil
	}
	spec := &repository.TrafficSpec{Weights: w, StickyIdleTimeout: t.StickyIdleTimeout, MaxStickyKeys: t.MaxStickyKeys}
	if s := t.Shadow; s.Version != "" {
		spec.Shadow = &repository.ShadowSpec{Version: s.Version, Rate: s.Rate}
	}
	if g := t.Gates; g.Candidate != "" {
		spec.Gates = &repository.GatesSpec{Candidate: g.Candidate, Interval: g.Interval}
		if p := g.Promote; len(p.Steps) > 0 {
			spec.Gates.Promote = &repository.PromoteGate{MinSamples: int64(p.MinSamples), MaxMeanAbs: p.MaxMeanAbs,
				MinAgreement: p.MinAgreement, Steps: p.Steps, Dwell: p.Dwell}
		}
		if r := g.Rollback; r.MaxErrorRate > 0 || r.MaxP99 > 0 || r.MaxMeanAbs > 0 {
			spec.Gates.Rollback = &repository.RollbackGate{MaxErrorRate: r.MaxErrorRate, MaxP99: r.MaxP99,
				MaxMeanAbs: r.MaxMeanAbs, MinRequests: int64(r.MinRequests)}
		}
	}
	return spec
}
