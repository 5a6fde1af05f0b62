package server

import (
	"crypto/subtle"
	"encoding/json"
	"net/http"
	"strings"

	"github.com/valyala/fasthttp"
)

// Admin holds the operator endpoints cmd/policyd wires in. Nil fields disable their route.
//
//	POST /v2/admin/reload    re-reads the configuration and applies it (as SIGHUP does);
//	                         needs "Authorization: Bearer <token>" with the configured token
//	GET  /v2/health/details  a JSON document of what an operator needs: model versions with
//	                         state and reason, backends, configuration and last reload
//	GET  /metrics            Prometheus text format
type Admin struct {
	// Reload applies the configuration anew and returns its outcome, which is written as JSON.
	Reload func() (any, error)
	// Token returns the bearer token admin calls need; "" disables the admin API (403).
	Token func() string
	// Details returns the document of GET /v2/health/details, written as JSON.
	Details func() any
	// Metrics serves GET /metrics.
	Metrics fasthttp.RequestHandler
}

// authorized checks the bearer token in constant time; it answers the request when not.
func (s *Server) authorized(ctx *fasthttp.RequestCtx) bool {
	want := ""
	if s.opts.Admin.Token != nil {
		want = s.opts.Admin.Token()
	}
	if want == "" {
		s.fail(ctx, &statusError{http.StatusForbidden, "admin API disabled: set admin.token_file in the configuration"})
		return false
	}
	got := string(ctx.Request.Header.Peek("Authorization"))
	const prefix = "Bearer "
	if !strings.HasPrefix(got, prefix) || subtle.ConstantTimeCompare([]byte(got[len(prefix):]), []byte(want)) != 1 {
		ctx.Response.Header.Set("WWW-Authenticate", `Bearer realm="policyd"`)
		s.fail(ctx, &statusError{http.StatusUnauthorized, "missing or wrong bearer token"})
		return false
	}
	return true
}

func (s *Server) adminReload(ctx *fasthttp.RequestCtx) {
	if !s.authorized(ctx) {
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
