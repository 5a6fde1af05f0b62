//go:build cgo

package server

import (
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines/enginestest"
)

// Native log lines reach zap through NativeLog, at their level: a model load logs at info,
// a model that cannot batch warns.
func TestNativeLogsReachZap(t *testing.T) {
	if err := bridge.Available(); err != nil {
		t.Skip("native library unusable:", err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	bridge.SetLogger(NativeLog(zap.New(core).Named("native")))
	defer bridge.SetLogger(nil)
	rt, _ := nativeRuntime(t, "")
	e, err := rt.NewEngine(enginestest.ReshapeToOneRow(), bridge.EngineOptions{Name: "reshape@1.0.0"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	var warned, loaded bool
	for _, l := range logs.All() {
		if l.LoggerName != "native" {
			t.Errorf("line %q from logger %q, want native", l.Message, l.LoggerName)
		}
		switch {
		case strings.HasPrefix(l.Message, "reshape@1.0.0: declares a dynamic batch dimension but cannot run at batch 2"):
			warned = l.Level == zapcore.WarnLevel
		case strings.HasPrefix(l.Message, "reshape@1.0.0: loaded on cpu"):
			loaded = l.Level == zapcore.InfoLevel
		}
	}
	if !warned || !loaded {
		t.Errorf("native lines %v: want the batch-2 warning at warn and the load at info", logs.All())
	}
	if e.Batchable() {
		t.Errorf("the model is batchable, want not (it cannot run at batch 2)")
	}
}
