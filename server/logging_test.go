package server

import (
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/policyd/policyd/bridge"
)

// NativeLog maps the native levels to zap's and rate-limits warnings and errors per message,
// never debug and info lines.
func TestNativeLogLevelsAndRateLimit(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	fn := NativeLog(zap.New(core).Named("native"))
	fn(bridge.LogDebug, "d")
	fn(bridge.LogInfo, "i")
	fn(bridge.LogWarn, "w")
	fn(bridge.LogError, "e")
	want := []struct {
		msg   string
		level zapcore.Level
	}{{"d", zapcore.DebugLevel}, {"i", zapcore.InfoLevel}, {"w", zapcore.WarnLevel}, {"e", zapcore.ErrorLevel}}
	got := logs.TakeAll()
	if len(got) != len(want) {
		t.Fatalf("%d lines, want %d: %v", len(got), len(want), got)
	}
	for i, w := range want {
		if got[i].Message != w.msg || got[i].Level != w.level || got[i].LoggerName != "native" {
			t.Errorf("line %d: %q at %v from %q, want %q at %v from native", i, got[i].Message, got[i].Level, got[i].LoggerName, w.msg, w.level)
		}
	}

	for range 500 {
		fn(bridge.LogWarn, "hot warning")
		fn(bridge.LogInfo, "info line")
	}
	fn(bridge.LogWarn, "another warning")
	warned := logs.FilterMessage("hot warning").Len()
	// 10 a second, then 1 in 100: 10 to 15 within one second, up to twice that across two.
	if warned < 10 || warned > 30 {
		t.Errorf("%d of 500 repeated warnings written, want about 10 (rate-limited)", warned)
	}
	if n := logs.FilterMessage("info line").Len(); n != 500 {
		t.Errorf("%d of 500 info lines written; info is not rate-limited", n)
	}
	if logs.FilterMessage("another warning").Len() != 1 {
		t.Errorf("a different warning was dropped: the limit is per message")
	}
}
