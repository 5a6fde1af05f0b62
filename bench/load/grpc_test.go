package load

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/server"
)

// affine is a server.Model computing action = 2·obs + 1 over FP32 [N, 4]; with failEvery > 0,
// every failEvery-th call after the first fails.
type affine struct {
	calls     atomic.Int64
	failEvery int64
	want      []byte // when set, an input other than these bytes fails the call
}

func (m *affine) Name() string    { return "affine" }
func (m *affine) Version() string { return "1" }
func (m *affine) Inputs() []bridge.IOInfo {
	return []bridge.IOInfo{{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 4}}}
}
func (m *affine) Outputs() []bridge.IOInfo {
	return []bridge.IOInfo{{Name: "action", DType: bridge.Float32, Shape: []int64{-1, 4}}}
}
func (m *affine) Batchable() bool       { return true }
func (m *affine) Ready() (bool, string) { return true, "" }
func (m *affine) Release()              {}
func (m *affine) Do(_ context.Context, in []bridge.Tensor, _ engines.RunOptions, fn func([]bridge.Tensor) error) error {
	n := m.calls.Add(1)
	if m.failEvery > 0 && n > 1 && n%m.failEvery == 0 {
		return errors.New("injected failure")
	}
	if m.want != nil && !bytes.Equal(in[0].Data, m.want) {
		return errors.New("unexpected input bytes")
	}
	out := make([]byte, len(in[0].Data))
	for i := 0; i+4 <= len(out); i += 4 {
		v := math.Float32frombits(binary.LittleEndian.Uint32(in[0].Data[i:]))
		binary.LittleEndian.PutUint32(out[i:], math.Float32bits(2*v+1))
	}
	return fn([]bridge.Tensor{{DType: bridge.Float32, Shape: in[0].Shape, Data: out}})
}

type oneModel struct{ m *affine }

func (r oneModel) Models() []string { return []string{"affine"} }
func (r oneModel) Versions(name string) []server.Model {
	if name != "affine" {
		return nil
	}
	return []server.Model{r.m}
}
func (r oneModel) Acquire(name, version string) (server.Model, error) {
	if name != "affine" || (version != "" && version != "1") {
		return nil, errors.New("not found")
	}
	return r.m, nil
}

// startPolicydGRPC serves m on policyd's real gRPC front end (server.ServeGRPC) on a loopback
// port and returns its address.
func startPolicydGRPC(t *testing.T, m *affine) string {
	t.Helper()
	s := server.New(oneModel{m}, nil, server.Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeGRPC(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return ln.Addr().String()
}

var affineIn = []Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{2, 4}, Data: []float64{0, 1, 2, 3, -1, -0.5, 0.25, 100}}}

// affineRef is 2·obs + 1 computed here, independently of the server.
func affineRef() *Reference {
	out := Tensor{Name: "action", Datatype: "FP32", Shape: []int64{2, 4}}
	for _, v := range affineIn[0].Data {
		out.Data = append(out.Data, 2*v+1)
	}
	return &Reference{Outputs: []Tensor{out}, Atol: 1e-6, Rtol: 1e-6}
}

func TestGRPCUnaryAndStreamAgainstPolicyd(t *testing.T) {
	for _, stream := range []bool{false, true} {
		req := GRPCRequest{Model: "affine", Inputs: affineIn, Stream: stream}
		t.Run(req.Protocol(), func(t *testing.T) {
			m := &affine{}
			req.Addr = startPolicydGRPC(t, m)
			res, err := RunGRPC(context.Background(), req, Options{Mode: "closed", Connections: 3, Duration: 300 * time.Millisecond,
				Warmup: 50 * time.Millisecond, Check: affineRef()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != req.Protocol() || res.Concurrency != 3 || res.Mode != "closed" {
				t.Errorf("result labels: protocol %q concurrency %d mode %q", res.Protocol, res.Concurrency, res.Mode)
			}
			if res.Requests < 30 || res.Errors != 0 {
				t.Fatalf("%d requests, %d errors (last %q): want many, none failed", res.Requests, res.Errors, res.LastError)
			}
			// The server ran every measured request, plus the check and the warm-up.
			if calls := m.calls.Load(); calls < res.Requests+1 {
				t.Errorf("server ran %d requests, the generator counted %d answered", calls, res.Requests)
			}
			if res.P50 <= 0 || res.P99 < res.P50 || res.Max < res.P99 || res.RPS <= 0 {
				t.Errorf("percentiles p50 %d p99 %d max %d, rps %v", res.P50, res.P99, res.Max, res.RPS)
			}
			if res.BodyBytes < 32 { // 8 FP32 values plus the message's framing
				t.Errorf("body bytes %d", res.BodyBytes)
			}
		})
	}
}

func TestGRPCCheckFailsTheRun(t *testing.T) {
	for _, stream := range []bool{false, true} {
		m := &affine{}
		addr := startPolicydGRPC(t, m)
		ref := affineRef()
		ref.Outputs[0].Data[7] += 1 // 201 + 1: not what 2·100 + 1 is
		_, err := RunGRPC(context.Background(), GRPCRequest{Addr: addr, Model: "affine", Inputs: affineIn, Stream: stream},
			Options{Mode: "closed", Connections: 1, Duration: time.Second, Check: ref})
		if !errors.Is(err, ErrCheck) || !strings.Contains(err.Error(), `"action"[7]`) {
			t.Errorf("stream %v: err %v, want a reference check failure naming action[7]", stream, err)
		}
		if n := m.calls.Load(); n != 1 {
			t.Errorf("stream %v: %d requests after a failed check, want only the check", stream, n)
		}
		// An unknown model fails the check too, with the server's message.
		_, err = RunGRPC(context.Background(), GRPCRequest{Addr: addr, Model: "nope", Inputs: affineIn, Stream: stream},
			Options{Mode: "closed", Connections: 1, Duration: time.Second})
		if !errors.Is(err, ErrCheck) {
			t.Errorf("stream %v, unknown model: err %v, want ErrCheck", stream, err)
		}
	}
}

// Failed requests are counted, not measured; on a stream an error answers that request and the
// stream goes on (the server keeps it open), so later requests still succeed.
func TestGRPCErrorsAreCounted(t *testing.T) {
	for _, stream := range []bool{false, true} {
		m := &affine{failEvery: 4}
		addr := startPolicydGRPC(t, m)
		res, err := RunGRPC(context.Background(), GRPCRequest{Addr: addr, Model: "affine", Inputs: affineIn, Stream: stream},
			Options{Mode: "closed", Connections: 2, Duration: 300 * time.Millisecond, Check: affineRef()})
		if err != nil {
			t.Fatal(err)
		}
		total := res.Requests + res.Errors
		if res.Errors == 0 || res.Requests == 0 || math.Abs(float64(res.Errors)/float64(total)-0.25) > 0.05 {
			t.Errorf("stream %v: %d answered, %d errors: want about a quarter failed", stream, res.Requests, res.Errors)
		}
		if !strings.Contains(res.LastError, "injected failure") {
			t.Errorf("stream %v: last error %q, want the server's message", stream, res.LastError)
		}
	}
}

func TestGRPCOptions(t *testing.T) {
	req := GRPCRequest{Addr: "10.1.2.3:8001", Model: "m", Inputs: affineIn}
	if _, err := RunGRPC(context.Background(), req, Options{Mode: "closed", Connections: 1, Duration: time.Second}); err == nil ||
		!strings.Contains(err.Error(), "non-loopback") {
		t.Errorf("non-loopback target: err %v", err)
	}
	req.Addr = "127.0.0.1:1"
	if _, err := RunGRPC(context.Background(), req, Options{Mode: "open", Rate: 10, Connections: 1, Duration: time.Second}); err == nil ||
		!strings.Contains(err.Error(), "closed loop only") {
		t.Errorf("open loop: err %v", err)
	}
}

func TestGRPCRequestAndOutputs(t *testing.T) {
	msg, err := GRPCInferRequest("m", "2", affineIn)
	if err != nil {
		t.Fatal(err)
	}
	if msg.ModelName != "m" || msg.ModelVersion != "2" || len(msg.Inputs) != 1 || len(msg.RawInputContents) != 1 ||
		msg.Inputs[0].Datatype != "FP32" || len(msg.RawInputContents[0]) != 32 || msg.Inputs[0].Contents != nil {
		t.Fatalf("request %v", msg)
	}
	if v := math.Float32frombits(binary.LittleEndian.Uint32(msg.RawInputContents[0][28:])); v != 100 {
		t.Errorf("raw input[7] = %v, want 100 (little-endian FP32)", v)
	}
	// Raw outputs and typed outputs read the same.
	raw := &inference.ModelInferResponse{Outputs: []*inference.ModelInferResponse_InferOutputTensor{{Name: "a", Datatype: "FP32", Shape: []int64{1, 2}}},
		RawOutputContents: [][]byte{binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, math.Float32bits(1.5)), math.Float32bits(-2))}}
	typed := &inference.ModelInferResponse{Outputs: []*inference.ModelInferResponse_InferOutputTensor{{Name: "a", Datatype: "FP32", Shape: []int64{1, 2},
		Contents: &inference.InferTensorContents{Fp32Contents: []float32{1.5, -2}}}}}
	for _, r := range []*inference.ModelInferResponse{raw, typed} {
		got, err := GRPCOutputs(r)
		if err != nil || len(got) != 1 || got[0].Name != "a" || len(got[0].Data) != 2 || got[0].Data[0] != 1.5 || got[0].Data[1] != -2 {
			t.Errorf("outputs %v, %v", got, err)
		}
	}
	for name, bad := range map[string]*inference.ModelInferResponse{
		"no outputs": {},
		"short raw":  {Outputs: raw.Outputs, RawOutputContents: [][]byte{{1, 2, 3, 4}}},
		"odd bytes":  {Outputs: raw.Outputs, RawOutputContents: [][]byte{{1, 2, 3}}},
		"two raws":   {Outputs: raw.Outputs, RawOutputContents: [][]byte{nil, nil}},
		"INT64":      {Outputs: []*inference.ModelInferResponse_InferOutputTensor{{Name: "a", Datatype: "INT64", Shape: []int64{1}}}},
	} {
		if _, err := GRPCOutputs(bad); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
