package repository

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/engines"
)

// TrafficSpec is the traffic policy of one model: how the requests that name no version are
// split between its versions (ModelSpec.Traffic; Repository.SetTraffic at run time).
//
// The version of a request is chosen by weighted rendezvous hashing (highest random weight) of
// its stickiness key over the versions with a weight above 0 that serve ready: each version v
// scores w_v / -ln(u(key, v)), u a uniform number in (0, 1) hashed from the key and the
// version's name, and the highest score wins. That is an exponential race: a key goes to v with
// probability w_v / Σw, and since a version's score depends only on the key, the version and its
// own weight, raising one version's weight (10 → 20 %) raises only its own scores: a key moves
// only to the version whose weight rose, exactly the 10 % of keys that must, and no key moves
// between two versions whose weights did not change. A version that is not ready drops out of the
// race, and its keys spread over the others in proportion to their weights (the others' keys
// stay). On top of that the repository remembers the version of every live key (see
// StickyIdleTimeout), so that an episode keeps its version also across a weight change.
type TrafficSpec struct {
	// Weights maps an exact version of the model ("1.4.0") to its weight (≥ 0, at least one
	// above 0). Shares are weight / sum over the ready versions listed.
	Weights map[string]int
	// Shadow, when set, names a version that also runs a sample of the live requests, after
	// the primary (the server's shadow evaluation reads it through Repository.ShadowOf).
	Shadow *ShadowSpec
	// Gates, when set, promote or roll back a candidate version automatically (see Gates).
	Gates *GatesSpec
	// StickyIdleTimeout: a stickiness key without a request for this long is forgotten, and its
	// next request follows the weights anew; 0: DefaultStickyIdleTimeout.
	StickyIdleTimeout time.Duration
	// MaxStickyKeys bounds the keys remembered; 0: DefaultMaxStickyKeys. A new key beyond it is
	// routed by the hashing alone (still sticky while the weights do not change), and counted.
	MaxStickyKeys int
}

// ShadowSpec names the shadow version of a traffic policy and how much of the live traffic it
// sees.
type ShadowSpec struct {
	// Version is the exact version run in the shadow.
	Version string
	// Rate is the share of the live requests sampled, 0..1.
	Rate float64
}

// Defaults of a TrafficSpec.
const (
	DefaultStickyIdleTimeout = 10 * time.Minute
	DefaultMaxStickyKeys     = 65536
)

// Route says how a request's version was chosen; it labels policyd_traffic_requests_total.
type Route uint8

// Routes of a request.
const (
	// RouteNone: the model has no traffic policy (Acquire's own choice).
	RouteNone Route = iota
	// RouteNamed: the request named its version, bypassing the split.
	RouteNamed
	// RouteSplit: chosen by the weights (a new key, or a request without one).
	RouteSplit
	// RouteSticky: the version remembered for the request's stickiness key.
	RouteSticky
	// RouteDefault: no version with a weight serves ready; the default version serves.
	RouteDefault
	numRoutes
)

// String is the route's label: "", "named", "split", "sticky" or "default".
func (r Route) String() string {
	return [...]string{"", "named", "split", "sticky", "default"}[r]
}

// check appends the problems of s, with their field paths under path, for a model.
func (s *TrafficSpec) check(path string, add func(string, ...any)) {
	if s == nil {
		return
	}
	positive := 0
	for _, v := range slices.Sorted(maps.Keys(s.Weights)) {
		w := s.Weights[v]
		if exact, err := artifacts.ParseSelector(v); err != nil || exact == "" {
			add("%s.weights: %q is not an exact version (1.2.3)", path, v)
		}
		if w < 0 {
			add("%s.weights[%s]: must not be negative, got %d", path, v, w)
		}
		if w > 0 {
			positive++
		}
	}
	if len(s.Weights) > 0 && positive == 0 {
		add("%s.weights: at least one weight must be above 0", path)
	}
	if s.StickyIdleTimeout < 0 {
		add("%s.sticky_idle_timeout: must not be negative, got %s", path, s.StickyIdleTimeout)
	}
	if s.MaxStickyKeys < 0 {
		add("%s.max_sticky_keys: must not be negative, got %d", path, s.MaxStickyKeys)
	}
	if sh := s.Shadow; sh != nil {
		if exact, err := artifacts.ParseSelector(sh.Version); err != nil || exact == "" {
			add("%s.shadow.version: %q is not an exact version (1.2.3)", path, sh.Version)
		}
		if !(sh.Rate >= 0 && sh.Rate <= 1) {
			add("%s.shadow.rate: must be 0..1, got %g", path, sh.Rate)
		}
	}
	s.Gates.check(path+".gates", s.Weights, add)
}

// Validate returns every problem of s at once, each with its field path, for a model; nil when
// it has none.
func (s *TrafficSpec) Validate() error {
	var problems []string
	s.check("traffic", func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) })
	if len(problems) > 0 {
		return fmt.Errorf("invalid traffic policy: %s", strings.Join(problems, "; "))
	}
	return nil
}

// canonical returns a deep copy of s with its versions written as folder names ("v1.2.3" →
// "1.2.3"). s must be valid.
func (s *TrafficSpec) canonical() *TrafficSpec {
	c := *s
	c.Weights = make(map[string]int, len(s.Weights))
	for v, w := range s.Weights {
		c.Weights[canonicalOr(v)] = w
	}
	if s.Shadow != nil {
		sh := *s.Shadow
		sh.Version = canonicalOr(sh.Version)
		c.Shadow = &sh
	}
	if s.Gates != nil {
		c.Gates = s.Gates.clone()
		c.Gates.Candidate = canonicalOr(c.Gates.Candidate)
	}
	return &c
}

func canonicalOr(v string) string {
	if c := canonical(v); c != "" {
		return c
	}
	return v
}

// weighted is one version in the race: its weight and the seed its name hashes to.
type weighted struct {
	version string
	weight  float64
	seed    uint64
}

// trafficPolicy is the live traffic policy of one model. Its spec is replaced atomically; its
// sticky table and counters live as long as the model has a policy, across spec changes and
// reloads.
type trafficPolicy struct {
	model  string
	spec   atomic.Pointer[TrafficSpec] // canonical, never modified once stored
	race   atomic.Pointer[[]weighted]  // the versions with weight > 0, derived from spec
	source atomic.Pointer[string]      // "config", "admin" or "gate": who set spec

	config *TrafficSpec // the spec of the last Apply's desired state (under Repository.trafficMu)

	sticky   stickyTable
	misses   atomic.Uint64 // keys remembered whose version no longer served ready: rerouted
	full     atomic.Uint64 // new keys not remembered because the table was full
	versions sync.Map      // version → *versionTraffic

	gate gateState // under gateMu
}

func newTrafficPolicy(model string) *trafficPolicy {
	p := &trafficPolicy{model: model}
	p.sticky.m = map[string]*stickyEntry{}
	return p
}

// set makes spec (canonical) the live spec, set by source.
func (p *trafficPolicy) set(spec *TrafficSpec, source string) {
	race := make([]weighted, 0, len(spec.Weights))
	for _, v := range slices.Sorted(maps.Keys(spec.Weights)) {
		if w := spec.Weights[v]; w > 0 {
			race = append(race, weighted{version: v, weight: float64(w), seed: hashString(v)})
		}
	}
	p.race.Store(&race)
	p.spec.Store(spec)
	p.source.Store(&source)
	p.sticky.configure(spec)
}

// versionTraffic counts what one version of a model with a policy served.
type versionTraffic struct {
	routes   [numRoutes]atomic.Uint64
	requests atomic.Uint64 // answered (RecordRouted)
	errors   atomic.Uint64
	latency  latencyHistogram
}

func (p *trafficPolicy) counters(version string) *versionTraffic {
	if c, ok := p.versions.Load(version); ok {
		return c.(*versionTraffic)
	}
	c, _ := p.versions.LoadOrStore(version, &versionTraffic{})
	return c.(*versionTraffic)
}

// stickyTable remembers the version of every live stickiness key. Safe for concurrent use.
type stickyTable struct {
	mu        sync.Mutex
	m         map[string]*stickyEntry // entries are updated in place: a map store would keep the caller's key, a view
	idle      int64                   // ns
	max       int
	lastSweep int64 // ns
}

type stickyEntry struct {
	version string
	seen    int64 // ns (time.Now().UnixNano()) of the key's last request
}

func (s *stickyTable) configure(spec *TrafficSpec) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.idle = int64(cmpOr(spec.StickyIdleTimeout, DefaultStickyIdleTimeout))
	s.max = cmpOr(spec.MaxStickyKeys, DefaultMaxStickyKeys)
}

func cmpOr[T comparable](v, def T) T {
	var zero T
	if v == zero {
		return def
	}
	return v
}

// sweep drops the idle keys; the caller holds s.mu.
func (s *stickyTable) sweep(now int64) {
	s.lastSweep = now
	for k, e := range s.m {
		if now-e.seen > s.idle {
			delete(s.m, k)
		}
	}
}

// forget drops every key remembered for version.
func (s *stickyTable) forget(version string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, e := range s.m {
		if e.version == version {
			delete(s.m, k)
			n++
		}
	}
	return n
}

// len drops the idle keys when a quarter of the idle timeout has passed since the last sweep,
// and returns the number of keys remembered: the live ones (Traffic calls it, at every scrape
// of the metrics and every status, so the request path never pays for a sweep of a table that
// is not full).
func (s *stickyTable) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now := time.Now().UnixNano(); now-s.lastSweep > s.idle/4 {
		s.sweep(now)
	}
	return len(s.m)
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix is splitmix64's finalizer: a bijection that spreads every input bit over the output.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// choose runs the weighted rendezvous race of key (its hash) over the ready versions of race
// in t; nil when none is ready.
func choose(t *table, model string, race []weighted, key uint64) *Version {
	var best *Version
	bestScore := -1.0
	for i := range race {
		w := &race[i]
		v := t.find(model, w.version)
		if v == nil || v.State() != StateReady {
			continue
		}
		// u in (0, 1) from the top 53 bits; -ln(u) > 0, an exponential variable of rate 1.
		u := (float64(mix(key^w.seed)>>11) + 0.5) / (1 << 53)
		score := w.weight / -math.Log(u)
		if score > bestScore {
			best, bestScore = v, score
		}
	}
	return best
}

// policy returns the traffic policy of model; nil when it has none.
func (r *Repository) policy(model string) *trafficPolicy {
	m := r.traffic.Load()
	if m == nil {
		return nil
	}
	return (*m)[model]
}

// HasTraffic reports whether model has a traffic policy (AcquireRoute then routes by it).
func (r *Repository) HasTraffic(model string) bool { return r.policy(model) != nil }

// AcquireRoute is Acquire for a model that may have a traffic policy: a request naming a
// version (version not "") gets that version (RouteNamed, bypassing the split); without a
// policy it is Acquire (RouteNone). With one, key is the request's stickiness key (a
// sequence or episode ID; "" for none): a key remembered gets its version while that serves
// ready (RouteSticky); a new key, or a request without one, gets the version the weighted
// rendezvous race chooses among the ready versions with a weight (RouteSplit), and a new key
// remembers it. A remembered key whose version no longer serves ready is rerouted and counted
// as a stickiness miss. When no version with a weight serves ready, the default version serves
// (RouteDefault). The version is held as by Acquire. key may be a view of the request's bytes,
// valid only during the call: what the repository keeps, it copies.
func (r *Repository) AcquireRoute(model, version, key string) (*Version, Route, error) {
	p := r.policy(model)
	if p == nil {
		v, err := r.Acquire(model, version)
		return v, RouteNone, err
	}
	if version != "" {
		v, err := r.Acquire(model, version)
		if err == nil {
			p.counters(v.version).routes[RouteNamed].Add(1)
		}
		return v, RouteNamed, err
	}
	race := *p.race.Load()
	for {
		if r.closed.Load() {
			return nil, RouteNone, engines.ErrClosed
		}
		t := r.cur.Load()
		v, route := r.route(p, t, race, key)
		if v == nil {
			v, err := r.Acquire(model, "")
			if err == nil {
				p.counters(v.version).routes[RouteDefault].Add(1)
			}
			return v, RouteDefault, err
		}
		if v.tryHold() {
			p.counters(v.version).routes[route].Add(1)
			return v, route, nil
		}
		// v left the table: the next round sees the new one (see Acquire)
	}
}

// route picks the version of a request of p's model in t.
func (r *Repository) route(p *trafficPolicy, t *table, race []weighted, key string) (*Version, Route) {
	if key == "" {
		return choose(t, p.model, race, rand.Uint64()), RouteSplit
	}
	s := &p.sticky
	now := time.Now().UnixNano()
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[key]; ok {
		if now-e.seen <= s.idle {
			if v := t.find(p.model, e.version); v != nil && v.State() == StateReady {
				e.seen = now
				return v, RouteSticky
			}
			p.misses.Add(1)
		}
		delete(s.m, key)
	}
	v := choose(t, p.model, race, mix(hashString(key)))
	if v == nil {
		return nil, RouteDefault
	}
	if len(s.m) >= s.max && now-s.lastSweep > s.idle/16 {
		s.sweep(now)
	}
	if len(s.m) < s.max {
		s.m[strings.Clone(key)] = &stickyEntry{version: v.version, seen: now} // key may be a view of the request
	} else {
		p.full.Add(1)
	}
	return v, RouteSplit
}

// EndKey forgets the stickiness key of model (a sequence that ended): its next request, a new
// episode, follows the weights anew.
func (r *Repository) EndKey(model, key string) {
	if p := r.policy(model); p != nil && key != "" {
		p.sticky.mu.Lock()
		delete(p.sticky.m, key)
		p.sticky.mu.Unlock()
	}
}

// RecordRouted records the outcome of a request that a version of a model with a traffic
// policy answered: the gates read the error rate and the p99 latency from these. It does
// nothing for a model without a policy.
func (r *Repository) RecordRouted(model, version string, ok bool, d time.Duration) {
	p := r.policy(model)
	if p == nil {
		return
	}
	c := p.counters(version)
	c.requests.Add(1)
	if !ok {
		c.errors.Add(1)
	}
	c.latency.record(d)
}

// ShadowOf returns the shadow version of model's traffic policy and its sampling rate; ok is
// false when it has none.
func (r *Repository) ShadowOf(model string) (version string, rate float64, ok bool) {
	p := r.policy(model)
	if p == nil {
		return "", 0, false
	}
	sh := p.spec.Load().Shadow
	if sh == nil {
		return "", 0, false
	}
	return sh.Version, sh.Rate, true
}

// SetTraffic sets the traffic policy of model at run time (nil removes it), by source
// ("admin" for the admin API). It lasts until an Apply whose desired state changes the
// model's traffic policy (ModelSpec.Traffic): an Apply that leaves it as it was keeps the one
// set here, as a pin of SetDefault holds across Apply. The model must be served and every
// version its weights, shadow and gates name a version of it (a *NotFoundError otherwise); an
// invalid spec is an error naming its fields. A key remembered keeps its version.
func (r *Repository) SetTraffic(model string, spec *TrafficSpec, source string) error {
	if r.closed.Load() {
		return engines.ErrClosed
	}
	t := r.cur.Load()
	if _, ok := t.models[model]; !ok {
		return &NotFoundError{Model: model}
	}
	if spec != nil {
		if err := spec.Validate(); err != nil {
			return err
		}
		spec = spec.canonical()
		named := slices.Collect(maps.Keys(spec.Weights))
		if spec.Shadow != nil {
			named = append(named, spec.Shadow.Version)
		}
		if spec.Gates != nil {
			named = append(named, spec.Gates.Candidate)
		}
		for _, v := range named {
			if t.find(model, v) == nil {
				return &NotFoundError{Model: model, Version: v, Why: "the traffic policy names a version that is not served"}
			}
		}
	}
	r.trafficMu.Lock()
	defer r.trafficMu.Unlock()
	r.setPolicyLocked(model, spec, source, false)
	return nil
}

// setPolicyLocked stores spec (canonical; nil removes the policy) for model; fromConfig also
// records it as the config's. The caller holds trafficMu.
func (r *Repository) setPolicyLocked(model string, spec *TrafficSpec, source string, fromConfig bool) {
	cur := r.traffic.Load()
	var old map[string]*trafficPolicy
	if cur != nil {
		old = *cur
	}
	p := old[model]
	if spec == nil {
		if p == nil {
			return
		}
		next := maps.Clone(old)
		delete(next, model)
		r.traffic.Store(&next)
		r.log.Info("traffic policy removed", zap.String("model", model), zap.String("by", source))
		return
	}
	if p == nil {
		p = newTrafficPolicy(model)
		p.set(spec, source)
		next := maps.Clone(old)
		if next == nil {
			next = map[string]*trafficPolicy{}
		}
		next[model] = p
		r.traffic.Store(&next)
	} else {
		p.set(spec, source)
	}
	if fromConfig {
		p.config = spec
	}
	p.resetGate()
	r.log.Info("traffic policy set", zap.String("model", model), zap.String("by", source),
		zap.String("weights", formatWeights(spec.Weights)))
}

// applyTraffic makes the traffic policies of d live after an Apply: a model whose traffic
// section changed since the previous Apply (or is new) gets the config's policy, replacing
// one set at run time; one whose section did not change keeps its live policy.
func (r *Repository) applyTraffic(d Desired) {
	r.trafficMu.Lock()
	defer r.trafficMu.Unlock()
	want := map[string]*TrafficSpec{}
	for _, m := range d.Models {
		if m.Traffic != nil && len(m.Traffic.Weights) > 0 {
			want[m.Name] = m.Traffic.canonical()
		}
	}
	cur := r.traffic.Load()
	if cur != nil {
		for model, p := range *cur {
			if _, ok := want[model]; !ok && p.config != nil {
				r.setPolicyLocked(model, nil, "config", true)
			}
		}
	}
	for model, spec := range want {
		if p := r.policy(model); p != nil && p.config != nil && reflect.DeepEqual(p.config, spec) {
			continue // unchanged in the config: a run-time change holds
		}
		r.setPolicyLocked(model, spec, "config", true)
	}
}

// formatWeights writes weights as "1.4.0=90 1.5.0=10", versions sorted.
func formatWeights(w map[string]int) string {
	parts := make([]string, 0, len(w))
	for _, v := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s=%d", v, w[v]))
	}
	return strings.Join(parts, " ")
}

// TrafficStatus is the live traffic policy of a model and what it did.
type TrafficStatus struct {
	Model string `json:"model"`
	// Spec is the live policy.
	Spec *TrafficSpec `json:"-"`
	// Source says who set it: "config", "admin" or "gate".
	Source   string           `json:"source"`
	Versions []TrafficVersion `json:"versions"`
	// StickyKeys is the number of keys remembered now.
	StickyKeys int `json:"sticky_keys"`
	// StickyMisses counts keys whose remembered version no longer served ready: rerouted.
	StickyMisses uint64 `json:"sticky_misses"`
	// StickyFull counts new keys not remembered because the table was full.
	StickyFull uint64 `json:"sticky_table_full"`
	// Shadow is the shadow version and rate, when one is set.
	Shadow *ShadowSpec `json:"shadow,omitempty"`
	// Gates is the gates' state, when the policy has gates.
	Gates *GateStatus `json:"gates,omitempty"`
}

// TrafficVersion is one version of a traffic status.
type TrafficVersion struct {
	Version string `json:"version"`
	Weight  int    `json:"weight"`
	// Ready: the version serves ready (an unready one gets no share).
	Ready bool `json:"ready"`
	// Share is the share of new keys it gets now: its weight over the ready versions'.
	Share float64 `json:"share"`
	// Routes counts the requests it served by route ("split", "sticky", "named", "default").
	Routes map[string]uint64 `json:"routes"`
	// Requests and Errors count the answers recorded for it (RecordRouted).
	Requests uint64 `json:"requests"`
	Errors   uint64 `json:"errors"`
}

// Traffic returns the live traffic policy of model and its counters; ok is false when it has
// none.
func (r *Repository) Traffic(model string) (st TrafficStatus, ok bool) {
	p := r.policy(model)
	if p == nil {
		return TrafficStatus{}, false
	}
	spec := p.spec.Load()
	t := r.cur.Load()
	st = TrafficStatus{Model: model, Spec: spec, Source: *p.source.Load(), StickyKeys: p.sticky.len(),
		StickyMisses: p.misses.Load(), StickyFull: p.full.Load(), Shadow: spec.Shadow}
	names := map[string]bool{}
	for v := range spec.Weights {
		names[v] = true
	}
	p.versions.Range(func(k, _ any) bool { names[k.(string)] = true; return true })
	total := 0
	for v, w := range spec.Weights {
		if x := t.find(model, v); x != nil && x.State() == StateReady {
			total += w
		}
	}
	sorted := slices.Collect(maps.Keys(names))
	sort.Slice(sorted, func(i, j int) bool {
		a, _ := artifacts.RequestedVersion(sorted[i])
		b, _ := artifacts.RequestedVersion(sorted[j])
		return lessVersion(a, b, sorted[i], sorted[j])
	})
	for _, v := range sorted {
		tv := TrafficVersion{Version: v, Weight: spec.Weights[v], Routes: map[string]uint64{}}
		if x := t.find(model, v); x != nil && x.State() == StateReady {
			tv.Ready = true
			if total > 0 {
				tv.Share = float64(tv.Weight) / float64(total)
			}
		}
		c := p.counters(v)
		for rt := RouteNamed; rt < numRoutes; rt++ {
			if n := c.routes[rt].Load(); n > 0 {
				tv.Routes[rt.String()] = n
			}
		}
		tv.Requests, tv.Errors = c.requests.Load(), c.errors.Load()
		st.Versions = append(st.Versions, tv)
	}
	if spec.Gates != nil {
		g := p.gateStatus()
		st.Gates = &g
	}
	return st, true
}

// TrafficModels lists the models that have a traffic policy, sorted.
func (r *Repository) TrafficModels() []string {
	m := r.traffic.Load()
	if m == nil {
		return nil
	}
	return slices.Sorted(maps.Keys(*m))
}

// latencyHistogram counts durations in buckets of a quarter octave from 1 µs (bucket i holds
// up to 2^(i/4) µs; the last one everything above ~1 h). Safe for concurrent use.
type latencyHistogram struct{ b [latencyBuckets]atomic.Uint64 }

const latencyBuckets = 4*32 + 1

func latencyBucket(d time.Duration) int {
	us := float64(d) / 1e3
	if us <= 1 {
		return 0
	}
	i := int(math.Ceil(4 * math.Log2(us)))
	return min(i, latencyBuckets-1)
}

func (h *latencyHistogram) record(d time.Duration) { h.b[latencyBucket(d)].Add(1) }

func (h *latencyHistogram) snapshot() (s [latencyBuckets]uint64) {
	for i := range h.b {
		s[i] = h.b[i].Load()
	}
	return s
}

// quantile returns the q-quantile of the counts of a window (a snapshot's difference): the
// upper bound of the bucket that holds it; 0 for an empty window.
func quantile(counts *[latencyBuckets]uint64, q float64) time.Duration {
	var total uint64
	for _, n := range counts {
		total += n
	}
	if total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(total)))
	var seen uint64
	for i, n := range counts {
		seen += n
		if seen >= rank {
			return time.Duration(math.Pow(2, float64(i)/4) * 1e3)
		}
	}
	return time.Hour
}
