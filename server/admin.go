package server

import (
	"bytes"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/repository"
)

// Admin holds the operator endpoints cmd/policyd wires in. Nil fields disable their route.
//
//	POST /v2/admin/reload    re-reads the configuration and applies it (as SIGHUP does)
//	GET  /v2/health/details  a JSON document of what an operator needs: model versions with
//	                         state and reason, backends, configuration and last reload
//	GET  /metrics            Prometheus text format
//	POST /v2/admin/models/{m}/default        pins the default version of m: body
//	                         {"version":"1.2.3"}, or {"version":""} to unpin; answers
//	                         {"model","default","pinned","switch_seconds"}
//	POST /v2/repository/index                Triton's repository index: [{"name","version",
//	                         "state","reason"}], state READY, UNAVAILABLE or UNLOADED
//	POST /v2/repository/models/{m}/load      loads m (or one version: body
//	POST /v2/repository/models/{m}/unload    {"parameters":{"version":"1.2.3"}} or ?version=)
//	GET  /v2/admin/models/{m}/traffic        the live traffic policy and its counters
//	PUT  /v2/admin/models/{m}/traffic        sets it: {"weights":{"1.4.0":90,"1.5.0":10}, …}
//
// Who may call them, safe by default (Triton's default refuses load/unload too):
//
//   - With a token configured (Token returns it), every route above but /metrics needs
//     "Authorization: Bearer <token>": 401 with WWW-Authenticate without it or with another.
//   - With none, the /v2/admin routes, repository load/unload and health details (which show
//     config paths and every digest) answer 403 naming the settings, unless
//     AllowUnauthenticated says yes (loopback development): then they are open. The
//     repository index, read-only and telling no more than model metadata and readiness do,
//     stays open.
//   - /metrics, /v2/health/live and /v2/health/ready are always open.
type Admin struct {
	// Reload applies the configuration anew and returns its outcome, which is written as JSON.
	Reload func() (any, error)
	// Token returns the bearer token the guarded routes need; "" when none is configured. It is
	// called on every guarded request, so a rotated token takes effect at once.
	Token func() string
	// AllowUnauthenticated, when it returns true while no token is configured, opens the
	// guarded routes to anyone (admin.allow_unauthenticated). Nil: false.
	AllowUnauthenticated func() bool
	// Details returns the document of GET /v2/health/details, written as JSON. It is called on
	// every request and must not wait for a configuration reload in progress.
	Details func() HealthDetails
	// Metrics serves GET /metrics.
	Metrics fasthttp.RequestHandler
	// Repository serves the default pin and the repository routes. *repository.Repository
	// implements it.
	Repository Repository
	// Traffic serves GET and PUT /v2/admin/models/{m}/traffic (traffic.go), guarded as the
	// other admin routes. *repository.Repository implements it.
	Traffic TrafficControl
}

// Repository is the model control the admin and repository routes use. Implementations must
// be safe for concurrent use. Errors matching repository.ErrNotFound answer 404, an
// *repository.UnavailableError 503.
type Repository interface {
	// Index lists every model version known, with its state and reason.
	Index() []repository.IndexEntry
	// Load serves a version of model again (version "": every version); nil once it is ready.
	Load(model, version string) error
	// Unload stops serving a version of model (version "": every version), draining it.
	Unload(model, version string) error
	// SetDefault pins the default version of model ("" unpins) and returns the switch time.
	SetDefault(model, version string) (took time.Duration, err error)
	// DefaultVersion is the version requests without one get, and whether it is pinned.
	DefaultVersion(model string) (version string, pinned bool)
}

// authorized lets a guarded call through: with a token configured, when it carries it
// (compared in constant time; 401 otherwise); with none, when AllowUnauthenticated says so
// (403 naming the settings otherwise). what names the call in the 403. It answers the request
// when it refuses it.
func (s *Server) authorized(ctx *fasthttp.RequestCtx, what string) bool {
	return s.answerAuth(ctx, s.authorize(what, ctx.Request.Header.Peek("Authorization")))
}

// guarded checks the bearer token when one is configured, and lets the request through when
// none is (the read-only repository index); it answers the request when it refuses it.
func (s *Server) guarded(ctx *fasthttp.RequestCtx) bool {
	return s.answerAuth(ctx, s.checkToken(ctx.Request.Header.Peek("Authorization")))
}

// answerAuth answers a refused guarded call (err not nil): 401 with WWW-Authenticate, or 403.
func (s *Server) answerAuth(ctx *fasthttp.RequestCtx, err error) bool {
	if err == nil {
		return true
	}
	if se, ok := err.(*statusError); ok && se.status == http.StatusUnauthorized {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="policyd"`)
	}
	s.fail(ctx, err)
	return false
}

// authorize is the rule of the guarded calls, whatever the front end: authz is the value of
// the request's Authorization header (HTTP) or authorization metadata (gRPC). With a token
// configured, it must be "Bearer <token>" (401 otherwise); with none, AllowUnauthenticated
// must say yes (403 naming the settings otherwise). what names the call in the 403.
func (s *Server) authorize(what string, authz []byte) error {
	if s.token() == "" {
		if a := s.opts.Admin.AllowUnauthenticated; a != nil && a() {
			return nil
		}
		return &statusError{http.StatusForbidden, what +
			" needs a token: set admin.token_file, or admin.allow_unauthenticated: true for loopback development"}
	}
	return s.checkToken(authz)
}

func (s *Server) token() string {
	if s.opts.Admin.Token == nil {
		return ""
	}
	return s.opts.Admin.Token()
}

// checkToken checks "Bearer <token>" in constant time when a token is configured (401 when it
// is missing or another), and lets everything through when none is.
func (s *Server) checkToken(authz []byte) error {
	want := s.token()
	if want == "" {
		return nil
	}
	const prefix = "Bearer "
	if !bytes.HasPrefix(authz, []byte(prefix)) || subtle.ConstantTimeCompare(authz[len(prefix):], []byte(want)) != 1 {
		return &statusError{http.StatusUnauthorized, "missing or wrong bearer token"}
	}
	return nil
}

// decodeBody decodes a JSON body into v, refusing unknown fields; an empty body leaves v as
// it is.
func decodeBody(ctx *fasthttp.RequestCtx, v any) error {
	body := bytes.TrimSpace(ctx.PostBody())
	if len(body) == 0 {
		return nil
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return badRequest("invalid JSON body: %v", err)
	}
	if d.More() {
		return badRequest("invalid JSON body: data after the JSON value")
	}
	return nil
}

// adminDefault pins (or unpins) the default version of a model.
func (s *Server) adminDefault(ctx *fasthttp.RequestCtx) {
	if !s.authorized(ctx, "pinning the default version") {
		return
	}
	model, _ := ctx.UserValue("model").(string)
	var body struct {
		Version *string `json:"version"`
	}
	if err := decodeBody(ctx, &body); err != nil {
		s.fail(ctx, err)
		return
	}
	if body.Version == nil {
		s.fail(ctx, badRequest(`body must be {"version":"1.2.3"} to pin the default version, or {"version":""} to unpin it`))
		return
	}
	took, err := s.opts.Admin.Repository.SetDefault(model, *body.Version)
	if err != nil {
		s.fail(ctx, err)
		return
	}
	def, pinned := s.opts.Admin.Repository.DefaultVersion(model)
	writeJSON(ctx, http.StatusOK, map[string]any{
		"model": model, "default": def, "pinned": pinned, "switch_seconds": took.Seconds(),
	})
}

// repositoryIndex answers Triton's index: every model version with its state and reason. A
// body {"ready":true} lists only the versions ready.
func (s *Server) repositoryIndex(ctx *fasthttp.RequestCtx) {
	if !s.guarded(ctx) {
		return
	}
	var body struct {
		Ready bool `json:"ready"`
	}
	if err := decodeBody(ctx, &body); err != nil {
		s.fail(ctx, err)
		return
	}
	type entry struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		State   string `json:"state"`
		Reason  string `json:"reason"`
	}
	out := []entry{}
	for _, e := range s.opts.Admin.Repository.Index() {
		if body.Ready && e.State != repository.StateReady {
			continue
		}
		out = append(out, entry{e.Model, e.Version, e.State.String(), e.Reason})
	}
	writeJSON(ctx, http.StatusOK, out)
}

// repositoryControl serves load (load true) and unload of Triton's repository extension. The
// version comes from {"parameters":{"version":"1.2.3"}} or the query ?version=1.2.3 (not
// both, unless equal); Triton's unload_dependents parameter is accepted and ignored (policyd
// models have no dependents); any other parameter is refused.
func (s *Server) repositoryControl(load bool) fasthttp.RequestHandler {
	what := map[bool]string{true: "repository load", false: "repository unload"}[load]
	return func(ctx *fasthttp.RequestCtx) {
		if !s.authorized(ctx, what) {
			return
		}
		model, _ := ctx.UserValue("model").(string)
		var body struct {
			Parameters map[string]json.RawMessage `json:"parameters"`
		}
		if err := decodeBody(ctx, &body); err != nil {
			s.fail(ctx, err)
			return
		}
		version := string(ctx.QueryArgs().Peek("version"))
		for k, raw := range body.Parameters {
			switch k {
			case "version":
				var v string
				if err := json.Unmarshal(raw, &v); err != nil {
					s.fail(ctx, badRequest(`parameters.version must be a string like "1.2.3", got %s`, clip(string(raw), 100)))
					return
				}
				if version != "" && version != v {
					s.fail(ctx, badRequest("version %q in the query and %q in the parameters differ", version, v))
					return
				}
				version = v
			case "unload_dependents":
				if load {
					s.fail(ctx, badRequest("parameter %q applies to unload only", k))
					return
				}
			default:
				s.fail(ctx, badRequest("parameter %q is not supported (supported: version%s)", k, map[bool]string{false: ", unload_dependents"}[load]))
				return
			}
		}
		op, do := "unload", s.opts.Admin.Repository.Unload
		if load {
			op, do = "load", s.opts.Admin.Repository.Load
		}
		if err := do(model, version); err != nil {
			s.fail(ctx, fmt.Errorf("%s: %w", op, err))
			return
		}
		writeJSON(ctx, http.StatusOK, struct{}{})
	}
}

func (s *Server) adminReload(ctx *fasthttp.RequestCtx) {
	if !s.authorized(ctx, "admin reload") {
		return
	}
	res, err := s.opts.Admin.Reload()
	if err != nil {
		writeJSON(ctx, http.StatusBadRequest, map[string]any{"error": err.Error(), "result": res})
		return
	}
	writeJSON(ctx, http.StatusOK, res)
}

func (s *Server) healthDetails(ctx *fasthttp.RequestCtx) {
	if !s.authorized(ctx, "health details") {
		return
	}
	writeJSON(ctx, http.StatusOK, s.opts.Admin.Details())
}

// writeJSON writes v with encoding/json: these are operator endpoints, off the hot path.
func writeJSON(ctx *fasthttp.RequestCtx, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		ctx.SetStatusCode(http.StatusInternalServerError)
		ctx.SetBodyString(`{"error":"cannot encode the response"}`)
		return
	}
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.SetBody(append(b, '\n'))
}
