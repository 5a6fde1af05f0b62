//go:build cgo

package server

import (
	"encoding/binary"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/policyd/policyd/bridge"
)

// reshapeToOneRow is an ONNX model (opset 13) y = Reshape(x, [1, 8]) whose input x is
// [N, 8]: it declares a dynamic batch dimension but cannot run at batch 2, which the native
// library reports with a warning when it loads the model.
func reshapeToOneRow() []byte {
	msg := func(field protowire.Number, b []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, field, protowire.BytesType), b)
	}
	str := func(field protowire.Number, s string) []byte { return msg(field, []byte(s)) }
	varint := func(field protowire.Number, v uint64) []byte {
		return protowire.AppendVarint(protowire.AppendTag(nil, field, protowire.VarintType), v)
	}
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	// ValueInfoProto{name, type: TypeProto{tensor_type{elem_type FLOAT, shape{dim...}}}}
	value := func(name string, dims ...[]byte) []byte {
		var shape []byte
		for _, d := range dims {
			shape = append(shape, msg(1, d)...)
		}
		return cat(str(1, name), msg(2, msg(1, cat(varint(1, 1), msg(2, shape)))))
	}
	dimParam := func(p string) []byte { return str(2, p) }
	dimValue := func(v uint64) []byte { return varint(1, v) }
	raw := make([]byte, 16)
	binary.LittleEndian.PutUint64(raw, 1)
	binary.LittleEndian.PutUint64(raw[8:], 8)
	shapeInit := cat(varint(1, 2), varint(2, 7 /* INT64 */), str(8, "shape"), msg(9, raw))
	node := cat(str(1, "x"), str(1, "shape"), str(2, "y"), str(3, "reshape"), str(4, "Reshape"))
	graph := cat(msg(1, node), str(2, "reshape_to_one_row"), msg(5, shapeInit),
		msg(11, value("x", dimParam("N"), dimValue(8))), msg(12, value("y", dimValue(1), dimValue(8))))
	return cat(varint(1, 8), str(2, "policyd test"), msg(7, graph), msg(8, cat(str(1, ""), varint(2, 13))))
}

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
	e, err := rt.NewEngine(reshapeToOneRow(), bridge.EngineOptions{Name: "reshape@1.0.0"})
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
