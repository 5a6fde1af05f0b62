package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unsafe"

	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/repository"
)

// Traffic policies on the inference path (docs/rollout.md). For a model with a traffic policy
// and a request that names no version, the inference path takes the request's stickiness key
// from its codec before it acquires a version — the "sequence_id" parameter, else an
// "episode_id" parameter, else the X-Episode-ID header (gRPC: the x-episode-id metadata) —
// and the repository chooses the version by it (repository.AcquireRoute). A model without a
// policy pays one map lookup. Every HTTP answer carries the version that served it in the
// X-Model-Version header (and model_version in the body); a gRPC answer routed by a policy
// carries it in the x-model-version response metadata (and model_version in the message).

// HeaderModelVersion is the response header naming the version that served a request.
const HeaderModelVersion = "X-Model-Version"

// HeaderEpisodeID is the request header naming the episode (the stickiness key) when the
// request has no sequence_id or episode_id parameter.
const HeaderEpisodeID = "X-Episode-ID"

// trafficRouter is a Registry that routes by traffic policy (the one NewRegistry returns).
type trafficRouter interface {
	HasTraffic(model string) bool
	AcquireRoute(model, version, key string) (Model, repository.Route, error)
	RecordRouted(model, version string, ok bool, d time.Duration)
	EndKey(model, key string)
}

func (rr repositoryRegistry) HasTraffic(model string) bool { return rr.r.HasTraffic(model) }

func (rr repositoryRegistry) AcquireRoute(model, version, key string) (Model, repository.Route, error) {
	v, route, err := rr.r.AcquireRoute(model, version, key)
	if err != nil {
		return nil, route, err
	}
	return v, route, nil
}

func (rr repositoryRegistry) RecordRouted(model, version string, ok bool, d time.Duration) {
	rr.r.RecordRouted(model, version, ok, d)
}

func (rr repositoryRegistry) EndKey(model, key string) { rr.r.EndKey(model, key) }

// keyer is a codec that can name its request's stickiness key before it is decoded.
type keyer interface {
	// routeKey returns the request's stickiness key ("" for none); end reports a
	// sequence_end. It reads only what it needs and leaves the errors to decodeRequest.
	routeKey() (key string, end bool)
}

// acquireRouted holds the version of model the request gets: by the model's traffic policy
// when it has one (route not RouteNone; key is the stickiness key used), else as acquire does.
func (s *Server) acquireRouted(model, version string, c codec) (m Model, route repository.Route, key string, end bool, err error) {
	rt, ok := s.reg.(trafficRouter)
	if !ok || !rt.HasTraffic(model) {
		m, err = s.acquire(model, version)
		return m, repository.RouteNone, "", false, err
	}
	if k, ok := c.(keyer); ok && version == "" {
		key, end = k.routeKey()
	}
	m, route, err = rt.AcquireRoute(model, version, key)
	if err != nil {
		return nil, route, "", false, s.lookupError(err)
	}
	return m, route, key, end, nil
}

// routed records the outcome of a request routed by a traffic policy that ran (ran: its
// decoding passed) and forgets its key at a sequence_end.
func (s *Server) routed(m Model, key string, end, ran, ok bool, d time.Duration) {
	rt := s.reg.(trafficRouter)
	if ran {
		rt.RecordRouted(m.Name(), m.Version(), ok, d)
	}
	if end && key != "" {
		rt.EndKey(m.Name(), key)
	}
}

// routeKey is the keyer of the HTTP KServe v2 codec: parameters sequence_id or episode_id of
// the JSON part, else the X-Episode-ID header its transport gave it. The key is a view of the
// request (or of r.key), valid during the handler: the repository copies what it keeps.
func (r *inferRequest) routeKey() (string, bool) {
	js, _, err := splitBody(r.hdr, r.body)
	if err == nil {
		var vals [1]jsonValue
		if root, err := scanJSON(js, paramsKey[:], vals[:]); err == nil && root.kind() == jsonObject && vals[0].kind() == jsonObject {
			end := vals[0].get("sequence_end").kind() == jsonTrue
			for _, name := range paramsKeyNames {
				if k := r.jsonKey(vals[0].get(name)); k != "" {
					return k, end
				}
			}
		}
	}
	if len(r.episode) > 0 && len(r.episode) <= maxIDLen {
		return unsafe.String(unsafe.SliceData(r.episode), len(r.episode)), false
	}
	return "", false
}

var (
	paramsKey      = [1]string{"parameters"}
	paramsKeyNames = [2]string{"sequence_id", "episode_id"}
)

// jsonKey is the key a JSON string or number names: the string's text, the number's token; a
// view of the body, or of r.key for a string with escapes.
func (r *inferRequest) jsonKey(v jsonValue) string {
	switch v.kind() {
	case jsonString:
		raw := v.raw()
		if !hasEscape(raw) {
			if len(raw) == 0 || len(raw) > maxIDLen {
				return ""
			}
			return unsafe.String(unsafe.SliceData(raw), len(raw))
		}
		b, ok := unquoteMax(r.key[:0], v, maxIDLen)
		r.key = b
		if ok && len(b) > 0 {
			return unsafe.String(unsafe.SliceData(b), len(b))
		}
	case jsonNumber:
		if len(v) <= maxIDLen {
			return unsafe.String(unsafe.SliceData(v), len(v))
		}
	}
	return ""
}

// routeKey is the keyer of TensorFlow Serving's predict: the X-Episode-ID header (predict has
// no request parameters).
func (r *predictRequest) routeKey() (string, bool) {
	if len(r.episode) > 0 && len(r.episode) <= maxIDLen {
		return unsafe.String(unsafe.SliceData(r.episode), len(r.episode)), false
	}
	return "", false
}

// routeKey is the keyer of the gRPC codec: parameters sequence_id or episode_id, else the
// x-episode-id metadata of the call.
func (g *grpcRequest) routeKey() (string, bool) {
	params := g.req.GetParameters()
	end := params["sequence_end"].GetBoolParam()
	for _, name := range paramsKeyNames {
		switch p := params[name].GetParameterChoice().(type) {
		case *inference.InferParameter_StringParam:
			if p.StringParam != "" && len(p.StringParam) <= maxIDLen {
				return p.StringParam, end
			}
		case *inference.InferParameter_Int64Param:
			return strconv.FormatInt(p.Int64Param, 10), end
		case *inference.InferParameter_Uint64Param:
			return strconv.FormatUint(p.Uint64Param, 10), end
		}
	}
	if g.ctx != nil {
		if v := metadata.ValueFromIncomingContext(g.ctx, "x-episode-id"); len(v) > 0 && v[0] != "" && len(v[0]) <= maxIDLen {
			return v[0], false
		}
	}
	return "", false
}

// setVersionMetadata sends the version that served a routed gRPC call in its response
// metadata (x-model-version).
func setVersionMetadata(ctx context.Context, version string) {
	_ = grpc.SetHeader(ctx, metadata.Pairs("x-model-version", version))
}

// TrafficReader reads the live traffic policies; *repository.Repository implements it.
type TrafficReader interface {
	Traffic(model string) (repository.TrafficStatus, bool)
}

// TrafficControl is the traffic policy control the admin routes use; *repository.Repository
// implements it. Errors matching repository.ErrNotFound answer 404.
type TrafficControl interface {
	TrafficReader
	SetTraffic(model string, spec *repository.TrafficSpec, source string) error
}

// trafficJSON is the wire form of a traffic policy (GET and PUT /v2/admin/models/{m}/traffic).
type trafficJSON struct {
	Weights           map[string]int `json:"weights"`
	Shadow            *shadowJSON    `json:"shadow,omitempty"`
	Gates             *gatesJSON     `json:"gates,omitempty"`
	StickyIdleTimeout string         `json:"sticky_idle_timeout,omitempty"`
	MaxStickyKeys     int            `json:"max_sticky_keys,omitempty"`
}

type shadowJSON struct {
	Version string  `json:"version"`
	Rate    float64 `json:"rate"`
}

type gatesJSON struct {
	Candidate string        `json:"candidate"`
	Interval  string        `json:"interval,omitempty"`
	Promote   *promoteJSON  `json:"promote,omitempty"`
	Rollback  *rollbackJSON `json:"rollback,omitempty"`
}

type promoteJSON struct {
	MinSamples   int64   `json:"min_samples"`
	MaxMeanAbs   float64 `json:"max_mean_abs"`
	MinAgreement float64 `json:"min_agreement,omitempty"`
	Steps        []int   `json:"steps"`
	Dwell        string  `json:"dwell,omitempty"`
}

type rollbackJSON struct {
	MaxErrorRate float64 `json:"max_error_rate,omitempty"`
	MaxP99       string  `json:"max_p99,omitempty"`
	MaxMeanAbs   float64 `json:"max_mean_abs,omitempty"`
	MinRequests  int64   `json:"min_requests,omitempty"`
}

func durString(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return d.String()
}

func toTrafficJSON(s *repository.TrafficSpec) trafficJSON {
	out := trafficJSON{Weights: maps.Clone(s.Weights), StickyIdleTimeout: durString(s.StickyIdleTimeout), MaxStickyKeys: s.MaxStickyKeys}
	if sh := s.Shadow; sh != nil {
		out.Shadow = &shadowJSON{sh.Version, sh.Rate}
	}
	if g := s.Gates; g != nil {
		out.Gates = &gatesJSON{Candidate: g.Candidate, Interval: durString(g.Interval)}
		if p := g.Promote; p != nil {
			out.Gates.Promote = &promoteJSON{p.MinSamples, p.MaxMeanAbs, p.MinAgreement, slices.Clone(p.Steps), durString(p.Dwell)}
		}
		if r := g.Rollback; r != nil {
			out.Gates.Rollback = &rollbackJSON{r.MaxErrorRate, durString(r.MaxP99), r.MaxMeanAbs, r.MinRequests}
		}
	}
	return out
}

// spec converts the wire form; its errors name the field.
func (t trafficJSON) spec() (*repository.TrafficSpec, error) {
	dur := func(field, s string) (time.Duration, error) {
		if s == "" {
			return 0, nil
		}
		d, err := time.ParseDuration(s)
		if err != nil {
			return 0, badRequest("%s: %q is not a duration like 30s", field, s)
		}
		return d, nil
	}
	var err error
	s := &repository.TrafficSpec{Weights: t.Weights, MaxStickyKeys: t.MaxStickyKeys}
	if s.StickyIdleTimeout, err = dur("sticky_idle_timeout", t.StickyIdleTimeout); err != nil {
		return nil, err
	}
	if sh := t.Shadow; sh != nil {
		s.Shadow = &repository.ShadowSpec{Version: sh.Version, Rate: sh.Rate}
	}
	if g := t.Gates; g != nil {
		s.Gates = &repository.GatesSpec{Candidate: g.Candidate}
		if s.Gates.Interval, err = dur("gates.interval", g.Interval); err != nil {
			return nil, err
		}
		if p := g.Promote; p != nil {
			s.Gates.Promote = &repository.PromoteGate{MinSamples: p.MinSamples, MaxMeanAbs: p.MaxMeanAbs, MinAgreement: p.MinAgreement, Steps: p.Steps}
			if s.Gates.Promote.Dwell, err = dur("gates.promote.dwell", p.Dwell); err != nil {
				return nil, err
			}
		}
		if r := g.Rollback; r != nil {
			s.Gates.Rollback = &repository.RollbackGate{MaxErrorRate: r.MaxErrorRate, MaxMeanAbs: r.MaxMeanAbs, MinRequests: r.MinRequests}
			if s.Gates.Rollback.MaxP99, err = dur("gates.rollback.max_p99", r.MaxP99); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// TrafficDocument is the answer of GET /v2/admin/models/{m}/traffic: the live policy and what
// it did.
type TrafficDocument struct {
	Model string `json:"model"`
	// Policy is false when the model has no traffic policy (the default version serves).
	Policy bool `json:"policy"`
	trafficJSON
	Source          string                      `json:"source,omitempty"`
	Versions        []repository.TrafficVersion `json:"versions"`
	StickyKeys      int                         `json:"sticky_keys"`
	StickyMisses    uint64                      `json:"sticky_misses"`
	StickyTableFull uint64                      `json:"sticky_table_full"`
	GateStatus      *repository.GateStatus      `json:"gate_status,omitempty"`
	// Shadows are what the shadow evaluation of the model measured, per primary and shadow
	// version (as in health details); empty before its first sample.
	Shadows []ShadowStatus `json:"shadows,omitempty"`
}

// TrafficDocumentOf is the document of model's traffic policy in c.
func TrafficDocumentOf(c TrafficReader, model string) TrafficDocument {
	st, ok := c.Traffic(model)
	if !ok {
		return TrafficDocument{Model: model, Versions: []repository.TrafficVersion{}}
	}
	return TrafficDocument{Model: model, Policy: true, trafficJSON: toTrafficJSON(st.Spec), Source: st.Source,
		Versions: st.Versions, StickyKeys: st.StickyKeys, StickyMisses: st.StickyMisses,
		StickyTableFull: st.StickyFull, GateStatus: st.Gates}
}

// adminTrafficGet answers the live traffic policy of a model.
func (s *Server) adminTrafficGet(ctx *fasthttp.RequestCtx) {
	if !s.authorized(ctx, "reading the traffic policy") {
		return
	}
	model, _ := ctx.UserValue("model").(string)
	if !slices.Contains(s.reg.Models(), model) {
		s.fail(ctx, &repository.NotFoundError{Model: model})
		return
	}
	writeJSON(ctx, http.StatusOK, s.trafficDocument(model))
}

// trafficDocument is the admin document of model's traffic policy with its shadows' numbers.
func (s *Server) trafficDocument(model string) TrafficDocument {
	doc := TrafficDocumentOf(s.opts.Admin.Traffic, model)
	for _, st := range s.ShadowStatuses() {
		if st.Model == model {
			doc.Shadows = append(doc.Shadows, st)
		}
	}
	return doc
}

// adminTrafficPut sets the traffic policy of a model: body {"weights":{"1.4.0":90,"1.5.0":10}}
// with optional "shadow" and "gates"; a member left out keeps the live policy's value, one
// set to null removes it; {"weights":{}} removes the policy.
func (s *Server) adminTrafficPut(ctx *fasthttp.RequestCtx) {
	if !s.authorized(ctx, "setting the traffic policy") {
		return
	}
	model, _ := ctx.UserValue("model").(string)
	var raw map[string]json.RawMessage
	if err := decodeBody(ctx, &raw); err != nil {
		s.fail(ctx, err)
		return
	}
	if _, ok := raw["weights"]; !ok {
		s.fail(ctx, badRequest(`body must name the weights: {"weights":{"1.4.0":90,"1.5.0":10}} ({"weights":{}} removes the policy)`))
		return
	}
	var t trafficJSON
	if st, ok := s.opts.Admin.Traffic.Traffic(model); ok {
		t = toTrafficJSON(st.Spec)
	}
	for k, v := range raw {
		var err error
		switch k {
		case "weights":
			t.Weights = nil
			err = json.Unmarshal(v, &t.Weights)
		case "shadow":
			t.Shadow = nil
			err = json.Unmarshal(v, &t.Shadow)
		case "gates":
			t.Gates = nil
			err = json.Unmarshal(v, &t.Gates)
		case "sticky_idle_timeout":
			err = json.Unmarshal(v, &t.StickyIdleTimeout)
		case "max_sticky_keys":
			err = json.Unmarshal(v, &t.MaxStickyKeys)
		default:
			err = fmt.Errorf("unknown member (known: weights, shadow, gates, sticky_idle_timeout, max_sticky_keys)")
		}
		if err != nil {
			s.fail(ctx, badRequest("%s: %v", k, err))
			return
		}
	}
	var spec *repository.TrafficSpec
	if len(t.Weights) > 0 {
		var err error
		if spec, err = t.spec(); err != nil {
			s.fail(ctx, err)
			return
		}
	}
	if err := s.opts.Admin.Traffic.SetTraffic(model, spec, "admin"); err != nil {
		if !errors.Is(err, repository.ErrNotFound) {
			err = badRequest("%v", err)
		}
		s.fail(ctx, err)
		return
	}
	writeJSON(ctx, http.StatusOK, s.trafficDocument(model))
}
