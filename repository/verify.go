package repository

import (
	"errors"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
)

// verifyReason is the reason a version gets for a failed artifacts.Verify: every problem.
func verifyReason(err error) string {
	problems := artifacts.Problems(err)
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.Error()
	}
	var ve *artifacts.VerifyError
	if errors.As(err, &ve) && len(problems) == 1 {
		return "artifact verification failed: " + ve.Error()
	}
	return "artifact verification failed: " + strings.Join(msgs, "; ")
}

// keepTampered keeps the ready version v serving although its artifact failed verification
// (Desired.KeepTampered): the reason becomes v's warning, is logged at warn level and is
// reported to hook.
func (r *Repository) keepTampered(v *Version, err error, hook func(model, version, reason string)) {
	reason := verifyReason(err) + "; still serving the engine loaded from the verified files (artifacts.on_tamper: keep)"
	v.warn(reason)
	r.log.Warn("model version kept serving: its artifact failed verification after it loaded", zap.String("model", v.name),
		zap.String("version", v.version), zap.String("folder", v.dir), zap.String("digest", v.digest), zap.String("reason", reason))
	if hook != nil {
		hook(v.name, v.version, reason)
	}
}

// refuse makes the UNAVAILABLE version of a target whose artifact failed verification: it
// logs the reason at error level and reports it to hook.
func (r *Repository) refuse(t target, err error, start time.Time, hook func(model, version, reason string)) *Version {
	reason := verifyReason(err)
	v := &Version{
		name: t.model, version: t.version, semver: t.semver, dir: t.dir, set: t.set,
		state: StateUnavailable, reason: reason, drained: make(chan struct{}), loadTime: time.Since(start), obs: r.obs,
	}
	r.log.Error("model version refused: artifact verification failed", zap.String("model", t.model),
		zap.String("version", t.version), zap.String("folder", t.dir), zap.String("reason", reason))
	if hook != nil {
		hook(t.model, t.version, reason)
	}
	return v
}
