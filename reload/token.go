package reload

import (
	"go.uber.org/zap"

	"github.com/policyd/policyd/config"
)

// Token is the bearer token the operator routes need ("" = none configured, or its file
// unreadable). It never waits for a reload.
func (r *Reloader) Token() string { return *r.token.Load() }

// AllowUnauthenticated says whether the operator routes are open without a token:
// admin.allow_unauthenticated set and no admin.token_file. It never waits for a reload.
func (r *Reloader) AllowUnauthenticated() bool { return r.allow.Load() }

// readToken reads the admin token of cfg, as every reload does (whatever its outcome), and
// reports whether it changed. A token file that cannot be read refuses every guarded call
// (fail closed: allow_unauthenticated applies only without a token file). The log names the
// file, never the token.
func (r *Reloader) readToken(cfg *config.Config, trigger string) (rotated bool) {
	path := cfg.Admin.TokenFile
	t, err := cfg.Admin.Token()
	if err != nil {
		r.log.Error("admin token unreadable: the routes that need it refuse every call until it is fixed",
			zap.String("trigger", trigger), zap.Error(err))
		t = ""
	}
	old := r.token.Swap(&t)
	r.allow.Store(cfg.Admin.AllowUnauthenticated && path == "")
	if prev := r.tokPath.Swap(&path); (prev == nil || *prev != path) && trigger != "start" {
		select {
		case r.rewatch <- struct{}{}:
		default:
		}
	}
	rotated = old != nil && *old != t && trigger != "start"
	switch {
	case !rotated:
	case t == "" && err == nil:
		r.log.Warn("admin token removed: no admin.token_file", zap.String("trigger", trigger),
			zap.Bool("allow_unauthenticated", cfg.Admin.AllowUnauthenticated))
	case t != "":
		r.log.Info("admin token rotated: the previous one is refused from now on",
			zap.String("trigger", trigger), zap.String("token_file", path))
	}
	return rotated
}

// tokenPath is admin.token_file in force, as the watch follows it.
func (r *Reloader) tokenPath() string {
	if p := r.tokPath.Load(); p != nil {
		return *p
	}
	return ""
}
