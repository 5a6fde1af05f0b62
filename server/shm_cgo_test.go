//go:build cgo

package server

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/repository"
)

// shmRef is a reference file of testdata/reference (ONNX Runtime's outputs).
type shmReference struct {
	Inputs []struct {
		Name  string    `json:"name"`
		Shape []int64   `json:"shape"`
		Data  []float32 `json:"data"`
	} `json:"inputs"`
	Outputs []struct {
		Name  string    `json:"name"`
		Shape []int64   `json:"shape"`
		Data  []float64 `json:"data"`
	} `json:"outputs"`
}

// shmModels serves the peers' mlp-med (obs FP32[-1,64] → action FP32[-1,8]) and cnn-atari
// (obs FP32[-1,4,84,84] → action FP32[-1,18]) on the native cpu backend.
func shmModels(t testing.TB) *repository.Repository {
	t.Helper()
	rt, _ := nativeRuntime(t, "../../shared/peers/models/mlp-med.onnx")
	dir := t.TempDir()
	for _, m := range []struct {
		name    string
		in, out []int64
	}{{"mlp-med", []int64{-1, 64}, []int64{-1, 8}}, {"cnn-atari", []int64{-1, 4, 84, 84}, []int64{-1, 18}}} {
		if _, err := artifacts.Add(dir, artifacts.AddRequest{Name: m.name, Version: "1.0.0", Tool: "server test",
			Model: filepath.Join("../../shared/peers/models", m.name+".onnx"),
			IO: artifacts.IO{Inputs: []artifacts.Tensor{{Name: "obs", Datatype: "FP32", Shape: m.in}},
				Outputs: []artifacts.Tensor{{Name: "action", Datatype: "FP32", Shape: m.out}}}}); err != nil {
			t.Skip("model missing:", err)
		}
	}
	repo := repository.NewRepository(rt, nil)
	t.Cleanup(func() { repo.Close() })
	if _, err := repo.Apply(repository.Desired{Dir: dir, QueueLen: 1024}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"mlp-med", "cnn-atari"} {
		v, err := repo.Acquire(name, "")
		if err != nil {
			t.Fatal(err)
		}
		if ok, why := v.Ready(); !ok {
			t.Fatalf("%s not ready: %s", name, why)
		}
		v.Release()
	}
	return repo
}

func readShmReference(t *testing.T, file string) shmReference {
	t.Helper()
	raw, err := os.ReadFile("../testdata/reference/" + file + ".json")
	if err != nil {
		t.Skip("no reference:", err)
	}
	var ref shmReference
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// Real models through shared memory, HTTP and gRPC: the outputs written into the region are
// bit for bit the inline binary answer's, and agree with ONNX Runtime's reference outputs.
func TestShmRealModels(t *testing.T) {
	repo := shmModels(t)
	opts := shmOpts()
	opts.SharedMemory.MaxBytes = 64 << 20
	ts := startServer(t, NewRegistry(repo), opts)
	g := startGRPC(t, NewRegistry(repo), opts)
	ctx := grpcCtx(t)
	for _, c := range []struct{ model, file string }{
		{"mlp-med", "peers-mlp-med_b1"}, {"mlp-med", "peers-mlp-med_b8"},
		{"cnn-atari", "peers-cnn-atari_b1"}, {"cnn-atari", "peers-cnn-atari_b8"},
	} {
		t.Run(c.file, func(t *testing.T) {
			ref := readShmReference(t, c.file)
			in, want := ref.Inputs[0], ref.Outputs[0]
			inBytes := f32bytes(in.Data...)
			outSize := 4 * len(want.Data)
			obj := newShmObject(t, 4096+len(inBytes)+outSize+64)
			const inOff = 4096 + 12 // not page-aligned, 4-byte aligned: zero copy
			copy(obj.data[inOff:], inBytes)
			outOff := inOff + len(inBytes) + 4
			name := "r-" + c.file
			mustOK(t, ts.register(t, name, obj.key, 0, len(obj.data)), "register")

			// inline binary answer
			js := fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":%s,"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`,
				formatShape(in.Shape), len(inBytes))
			body, hdr := binaryBody(js, inBytes)
			inline := splitResponse(t, ts.doBinary(t, "/v2/models/"+c.model+"/infer", body, hdr))[0].bin

			check := func(how string, got []byte) {
				t.Helper()
				if string(got) != string(inline) {
					t.Errorf("%s: output in shared memory differs from the inline binary answer", how)
				}
				for i, f := range bytesF32(got) {
					if d := math.Abs(float64(f) - want.Data[i]); d > 1e-4+1e-3*math.Abs(want.Data[i]) {
						t.Errorf("%s: action[%d] = %v, ONNX Runtime %v", how, i, f, want.Data[i])
						break
					}
				}
			}

			// HTTP: input and output in the region
			clear(obj.data[outOff : outOff+outSize])
			r := ts.do(t, "POST", "/v2/models/"+c.model+"/infer", []byte(fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":%s,
				"parameters":{"shared_memory_region":%q,"shared_memory_offset":%d,"shared_memory_byte_size":%d}}],
				"outputs":[{"name":"action","parameters":{"shared_memory_region":%q,"shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`,
				formatShape(in.Shape), name, inOff, len(inBytes), name, outOff, outSize)))
			mustOK(t, r, "HTTP shm infer")
			wantBody := fmt.Sprintf(`{"model_name":%q,"model_version":"1.0.0","outputs":[{"name":"action","datatype":"FP32","shape":%s,"parameters":{"shared_memory_region":%q,"shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`,
				c.model, formatShape(want.Shape), name, outOff, outSize)
			if string(r.body) != wantBody {
				t.Errorf("HTTP body %s\nwant %s", r.body, wantBody)
			}
			check("HTTP", obj.data[outOff:outOff+outSize])

			// gRPC: the same region, the response has no data for the output
			clear(obj.data[outOff : outOff+outSize])
			shmP := func(off, size int) map[string]*inference.InferParameter {
				return map[string]*inference.InferParameter{
					"shared_memory_region":    {ParameterChoice: &inference.InferParameter_StringParam{StringParam: name}},
					"shared_memory_offset":    {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(off)}},
					"shared_memory_byte_size": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(size)}},
				}
			}
			if _, err := g.client.SystemSharedMemoryRegister(ctx, &inference.SystemSharedMemoryRegisterRequest{Name: name, Key: obj.key, ByteSize: uint64(len(obj.data))}); err != nil {
				t.Fatal(err)
			}
			resp, err := g.client.ModelInfer(ctx, &inference.ModelInferRequest{ModelName: c.model,
				Inputs:  []*inference.ModelInferRequest_InferInputTensor{{Name: "obs", Datatype: "FP32", Shape: in.Shape, Parameters: shmP(inOff, len(inBytes))}},
				Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "action", Parameters: shmP(outOff, outSize)}}})
			if err != nil {
				t.Fatal(err)
			}
			if o := resp.Outputs[0]; o.Contents != nil || len(resp.RawOutputContents) != 0 || fmt.Sprint(o.Shape) != fmt.Sprint(want.Shape) {
				t.Errorf("gRPC output entry %v, raw %d", o, len(resp.RawOutputContents))
			}
			check("gRPC", obj.data[outOff:outOff+outSize])
		})
	}
}

// BenchmarkShmHandler is the HTTP handler (routing, lookup, decode, run on the native cpu
// engine, encode) with the input and output in shared memory against binary tensors inline,
// for mlp-med batch 1 and cnn-atari batch 32 (3.6 MB of input). BenchmarkShmHandlerNoEngine
// is the same with the engine replaced by a model that answers at once: the time outside it.
func BenchmarkShmHandler(b *testing.B) {
	repo := shmModels(b)
	opts := shmOpts()
	opts.SharedMemory.MaxBytes = 64 << 20
	benchShm(b, New(NewRegistry(repo), nil, opts))
}
