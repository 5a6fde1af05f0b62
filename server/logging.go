package server

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/policyd/policyd/bridge"
)

// rateLimited returns log behind zap's sampler: per message and level, the first `first`
// lines of each second are written, then one in `thereafter`. It is for the warnings and
// errors a flood of requests would repeat; the access log is never sampled.
func rateLimited(log *zap.Logger, first, thereafter int) *zap.Logger {
	return log.WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return zapcore.NewSamplerWithOptions(c, time.Second, first, thereafter)
	}))
}

// NativeLog returns the one callback that routes the native library's log lines into log
// (bridge.SetLogger(NativeLog(log))): debug, info, warn and error map to zap's levels, and
// warnings and errors are rate-limited like the server's (first 10 a second per message, then
// one in 100) since a native warning can repeat per run.
func NativeLog(log *zap.Logger) func(bridge.LogLevel, string) {
	hot := rateLimited(log, 10, 100)
	return func(l bridge.LogLevel, msg string) {
		switch l {
		case bridge.LogDebug:
			log.Debug(msg)
		case bridge.LogInfo:
			log.Info(msg)
		case bridge.LogWarn:
			hot.Warn(msg)
		default:
			hot.Error(msg)
		}
	}
}
