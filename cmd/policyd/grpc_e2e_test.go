//go:build cgo

package main

// End-to-end tests of the gRPC front end: the real policyd binary, clients nobody here wrote
// the wire format of (the Go client generated from the official proto files, grpc's health
// client, grpcurl over reflection), outputs checked against ONNX Runtime's references
// (testdata/reference).

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/policyd/policyd/api/inference"
)

// refInput is one input of a reference file.
type refInput struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float32 `json:"data"`
}

func f32le(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}

func le32f(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// refRequest is ref's request over gRPC, its FP32 inputs typed or raw.
func refRequest(t *testing.T, ref reference, raw bool) *inference.ModelInferRequest {
	t.Helper()
	req := &inference.ModelInferRequest{ModelName: ref.ID, ModelVersion: "1.0.0", Id: ref.file}
	for _, rawIn := range ref.Inputs {
		var in refInput
		if err := json.Unmarshal(rawIn, &in); err != nil || in.Datatype != "FP32" {
			t.Fatalf("%s: input %s: %v (only FP32 references here)", ref.file, rawIn[:min(len(rawIn), 80)], err)
		}
		tensor := &inference.ModelInferRequest_InferInputTensor{Name: in.Name, Datatype: in.Datatype, Shape: in.Shape}
		if raw {
			req.RawInputContents = append(req.RawInputContents, f32le(in.Data))
		} else {
			tensor.Contents = &inference.InferTensorContents{Fp32Contents: in.Data}
		}
		req.Inputs = append(req.Inputs, tensor)
	}
	return req
}

// checkGRPCOutputs compares a response's FP32 outputs with ref's, as checkReference does.
func checkGRPCOutputs(t *testing.T, ref reference, resp *inference.ModelInferResponse, raw bool) {
	t.Helper()
	if resp.ModelName != ref.ID || resp.ModelVersion != "1.0.0" || resp.Id != ref.file || len(resp.Outputs) != len(ref.Outputs) {
		t.Fatalf("%s: response %s %s %q with %d outputs", ref.file, resp.ModelName, resp.ModelVersion, resp.Id, len(resp.Outputs))
	}
	if raw != (len(resp.RawOutputContents) > 0) {
		t.Errorf("%s: raw inputs %v, but %d raw outputs", ref.file, raw, len(resp.RawOutputContents))
	}
	for _, want := range ref.Outputs {
		idx := -1
		for i, o := range resp.Outputs {
			if o.Name == want.Name {
				idx = i
			}
		}
		if idx < 0 {
			t.Errorf("%s: output %q missing", ref.file, want.Name)
			continue
		}
		o := resp.Outputs[idx]
		if o.Datatype != want.Datatype || fmt.Sprint(o.Shape) != fmt.Sprint(want.Shape) {
			t.Errorf("%s: output %q %s %v, want %s %v", ref.file, want.Name, o.Datatype, o.Shape, want.Datatype, want.Shape)
			continue
		}
		got := o.GetContents().GetFp32Contents()
		if raw {
			got = le32f(resp.RawOutputContents[idx])
		}
		wv, err := numbers(want.Data, want.Datatype)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(wv) {
			t.Errorf("%s: output %q has %d values, want %d", ref.file, want.Name, len(got), len(wv))
			continue
		}
		if !want.Deterministic {
			continue
		}
		for i, w := range wv {
			if g := float64(got[i]); math.Abs(g-w) > 1e-4+1e-3*math.Abs(w) {
				t.Errorf("%s: output %q[%d] = %v, want %v (ONNX Runtime)", ref.file, want.Name, i, g, w)
				break
			}
		}
	}
}

func grpcClient(t *testing.T, addr string) (*grpc.ClientConn, inference.GRPCInferenceServiceClient) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, inference.NewGRPCInferenceServiceClient(conn)
}

func TestGrpcEndToEnd(t *testing.T) {
	refs := map[string]reference{}
	for _, r := range loadReferences(t) {
		refs[strings.TrimSuffix(r.file, ".json")] = r
	}
	pick := []string{"peers-mlp-small_b1", "peers-mlp-small_b8", "peers-mlp-med_b8", "peers-lstm_b1"}
	repo := t.TempDir()
	for _, name := range pick {
		r, ok := refs[name]
		if !ok {
			t.Skipf("no reference %s", name)
		}
		linkModel(t, repo, r.ID, r.Model)
	}
	cfg := filepath.Join(t.TempDir(), "policyd.yaml")
	if err := os.WriteFile(cfg, []byte(`models:
  - name: peers-mlp-small
  - name: peers-mlp-med
  - name: peers-lstm
    sequence:
      states: ["h_in:h_out", "c_in:c_out"]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, repo, "--config", cfg)
	conn, c := grpcClient(t, d.grpcAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	t.Run("health", func(t *testing.T) {
		h := healthpb.NewHealthClient(conn)
		for _, svc := range []string{"", "live", "peers-lstm", "inference.GRPCInferenceService"} {
			r, err := h.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
			if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
				t.Errorf("health %q: %v %v", svc, r, err)
			}
		}
		if r, err := c.ServerReady(ctx, &inference.ServerReadyRequest{}); err != nil || !r.Ready {
			t.Errorf("ServerReady: %v %v", r, err)
		}
	})

	t.Run("references", func(t *testing.T) {
		for _, name := range pick {
			for _, raw := range []bool{false, true} {
				resp, err := c.ModelInfer(ctx, refRequest(t, refs[name], raw))
				if err != nil {
					t.Errorf("%s raw=%v: %v", name, raw, err)
					continue
				}
				checkGRPCOutputs(t, refs[name], resp, raw)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		req := refRequest(t, refs["peers-mlp-small_b1"], false)
		req.ModelName = "nope"
		_, err := c.ModelInfer(ctx, req)
		if status.Code(err) != codes.NotFound {
			t.Errorf("unknown model: %v", err)
		}
		req = refRequest(t, refs["peers-mlp-small_b1"], false)
		req.Inputs[0].Shape = []int64{1, 7}
		_, err = c.ModelInfer(ctx, req)
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), `input "obs": expected shape [-1,8], got [1,7]`) {
			t.Errorf("wrong shape: %v", err)
		}
	})

	// A sequence of peers-lstm over one stream: the server carries h and c. Step 2 of the
	// sequence must equal a stateless call whose h_in, c_in are step 1's h_out, c_out (the
	// stateless path being the one checked against ONNX Runtime above), and an error in the
	// middle is answered on the stream without ending it.
	t.Run("stream sequence", func(t *testing.T) {
		ref := refs["peers-lstm_b1"]
		var obs refInput
		if err := json.Unmarshal(ref.Inputs[0], &obs); err != nil || obs.Name != "obs" {
			t.Fatalf("peers-lstm reference: first input %v %v", obs.Name, err)
		}
		obs2 := make([]float32, len(obs.Data))
		for i, v := range obs.Data {
			obs2[i] = -v / 2
		}
		seqParams := func(start, end bool) map[string]*inference.InferParameter {
			return map[string]*inference.InferParameter{
				"sequence_id":    {ParameterChoice: &inference.InferParameter_StringParam{StringParam: "episode-1"}},
				"sequence_start": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: start}},
				"sequence_end":   {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: end}},
			}
		}
		step := func(o []float32, start, end bool) *inference.ModelInferRequest {
			return &inference.ModelInferRequest{ModelName: "peers-lstm", Parameters: seqParams(start, end),
				Inputs:           []*inference.ModelInferRequest_InferInputTensor{{Name: "obs", Datatype: "FP32", Shape: []int64{1, 32}}},
				RawInputContents: [][]byte{f32le(o)}}
		}
		bad := step(obs.Data, false, false)
		bad.RawInputContents[0] = bad.RawInputContents[0][:8]
		stream, err := c.ModelStreamInfer(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var resps []*inference.ModelStreamInferResponse
		for _, r := range []*inference.ModelInferRequest{step(obs.Data, true, false), bad, step(obs2, false, true)} {
			if err := stream.Send(r); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			resps = append(resps, resp)
		}
		stream.CloseSend()
		if resps[0].ErrorMessage != "" || resps[2].ErrorMessage != "" {
			t.Fatalf("sequence steps failed: %q %q", resps[0].ErrorMessage, resps[2].ErrorMessage)
		}
		if !strings.Contains(resps[1].ErrorMessage, "raw_input_contents[0] has 8 bytes") {
			t.Errorf("error mid-stream: %q", resps[1].ErrorMessage)
		}
		out := func(r *inference.ModelInferResponse, name string) []float32 {
			for i, o := range r.Outputs {
				if o.Name == name {
					return le32f(r.RawOutputContents[i])
				}
			}
			t.Fatalf("output %q missing", name)
			return nil
		}
		// Step 1 started from zero state: a stateless call with zero h and c gives the same.
		zero := make([]float32, 128)
		stateless := func(o, h, cc []float32) *inference.ModelInferResponse {
			resp, err := c.ModelInfer(ctx, &inference.ModelInferRequest{ModelName: "peers-lstm", Inputs: []*inference.ModelInferRequest_InferInputTensor{
				{Name: "obs", Datatype: "FP32", Shape: []int64{1, 32}}, {Name: "h_in", Datatype: "FP32", Shape: []int64{1, 1, 128}},
				{Name: "c_in", Datatype: "FP32", Shape: []int64{1, 1, 128}}}, RawInputContents: [][]byte{f32le(o), f32le(h), f32le(cc)}})
			if err != nil {
				t.Fatal(err)
			}
			return resp
		}
		s1 := stateless(obs.Data, zero, zero)
		if !bytes.Equal(f32le(out(resps[0].InferResponse, "action")), f32le(out(s1, "action"))) {
			t.Errorf("step 1 action %v, stateless from zero state %v", out(resps[0].InferResponse, "action"), out(s1, "action"))
		}
		s2 := stateless(obs2, out(s1, "h_out"), out(s1, "c_out"))
		if !bytes.Equal(f32le(out(resps[2].InferResponse, "action")), f32le(out(s2, "action"))) {
			t.Errorf("step 2 action %v, stateless with step 1's state %v: the state was not carried", out(resps[2].InferResponse, "action"), out(s2, "action"))
		}
		if s0 := stateless(obs2, zero, zero); bytes.Equal(f32le(out(s0, "action")), f32le(out(s2, "action"))) {
			t.Errorf("the state makes no difference to the action: the test cannot tell")
		}
	})

	// ModelConfig is the document of GET .../config as the proto message.
	t.Run("model config", func(t *testing.T) {
		for _, m := range []string{"peers-mlp-small", "peers-lstm"} {
			resp, err := c.ModelConfig(ctx, &inference.ModelConfigRequest{Name: m})
			if err != nil {
				t.Fatalf("ModelConfig %s: %v", m, err)
			}
			r := d.do(t, "GET", "/v2/models/"+m+"/config", nil)
			want := &inference.ModelConfig{}
			if err := protojson.Unmarshal(r.body, want); err != nil {
				t.Fatalf("GET /v2/models/%s/config as inference.ModelConfig: %v\n%s", m, err, r.body)
			}
			if !proto.Equal(resp.Config, want) || resp.Config.Name != m || len(resp.Config.Input) == 0 {
				t.Errorf("ModelConfig %s:\n%v\nHTTP:\n%v", m, resp.Config, want)
			}
		}
		if cfg, _ := c.ModelConfig(ctx, &inference.ModelConfigRequest{Name: "peers-lstm"}); cfg.GetConfig().GetSequenceBatching() == nil {
			t.Errorf("peers-lstm has sequences but no sequence_batching: %v", cfg)
		}
	})

	// The gRPC requests above are in the metrics, by protocol and HTTP-equivalent code.
	t.Run("metrics", func(t *testing.T) {
		r := d.do(t, "GET", "/metrics", nil)
		for _, want := range []string{`protocol="grpc"`, `protocol="grpc-stream"`} {
			found := map[string]bool{}
			for _, line := range strings.Split(string(r.body), "\n") {
				if strings.HasPrefix(line, "policyd_requests_total{") && strings.Contains(line, want) {
					for _, code := range []string{`code="200"`, `code="400"`} {
						if strings.Contains(line, code) {
							found[code] = true
						}
					}
				}
			}
			if !found[`code="200"`] || !found[`code="400"`] {
				t.Errorf("policyd_requests_total lacks %s with codes 200 and 400: %v", want, found)
			}
		}
	})

	// grpcurl (make tools) against reflection, as a user without the proto files would.
	t.Run("grpcurl", func(t *testing.T) {
		bin, _ := filepath.Abs(filepath.Join(repoRoot, "tools", "bin", "grpcurl"))
		if _, err := os.Stat(bin); err != nil {
			t.Skipf("%s missing: run make tools", bin)
		}
		run := func(args ...string) string {
			t.Helper()
			out, err := exec.Command(bin, append([]string{"-plaintext"}, args...)...).CombinedOutput()
			if err != nil {
				t.Fatalf("grpcurl %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		list := run(d.grpcAddr, "list")
		for _, s := range []string{"inference.GRPCInferenceService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
			if !strings.Contains(list, s) {
				t.Errorf("grpcurl list lacks %s:\n%s", s, list)
			}
		}
		var md struct {
			Name     string   `json:"name"`
			Versions []string `json:"versions"`
			Platform string   `json:"platform"`
			Inputs   []struct {
				Name     string   `json:"name"`
				Datatype string   `json:"datatype"`
				Shape    []string `json:"shape"` // int64 is a JSON string in protojson
			} `json:"inputs"`
		}
		out := run("-d", `{"name":"peers-mlp-small"}`, d.grpcAddr, "inference.GRPCInferenceService/ModelMetadata")
		if err := json.Unmarshal([]byte(out), &md); err != nil {
			t.Fatalf("ModelMetadata: %v\n%s", err, out)
		}
		if md.Name != "peers-mlp-small" || md.Platform != "onnx" || len(md.Inputs) != 1 || md.Inputs[0].Name != "obs" ||
			fmt.Sprint(md.Inputs[0].Shape) != "[-1 8]" || fmt.Sprint(md.Versions) != "[1.0.0]" {
			t.Errorf("ModelMetadata: %+v", md)
		}
		// The README's inference call, typed contents in JSON, checked against ONNX Runtime.
		ref := refs["peers-mlp-small_b1"]
		var in refInput
		_ = json.Unmarshal(ref.Inputs[0], &in)
		data, _ := json.Marshal(in.Data)
		out = run("-d", `{"model_name":"peers-mlp-small","inputs":[{"name":"obs","datatype":"FP32","shape":[1,8],"contents":{"fp32_contents":`+string(data)+`}}]}`,
			d.grpcAddr, "inference.GRPCInferenceService/ModelInfer")
		var resp struct {
			Outputs []struct {
				Name     string `json:"name"`
				Contents struct {
					Fp32Contents []float64 `json:"fp32Contents"`
				} `json:"contents"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal([]byte(out), &resp); err != nil || len(resp.Outputs) != 1 {
			t.Fatalf("ModelInfer: %v\n%s", err, out)
		}
		want, _ := numbers(ref.Outputs[0].Data, "FP32")
		got := resp.Outputs[0].Contents.Fp32Contents
		if len(got) != len(want) {
			t.Fatalf("ModelInfer: %v, want %v", got, want)
		}
		for i := range want {
			if math.Abs(got[i]-want[i]) > 1e-4+1e-3*math.Abs(want[i]) {
				t.Errorf("grpcurl ModelInfer action[%d] = %v, want %v (ONNX Runtime)", i, got[i], want[i])
			}
		}
		health := run(d.grpcAddr, "grpc.health.v1.Health/Check")
		if !strings.Contains(health, `"SERVING"`) {
			t.Errorf("health via grpcurl: %s", health)
		}
	})
}
