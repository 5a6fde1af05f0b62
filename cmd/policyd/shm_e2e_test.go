//go:build cgo

package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/metadata"

	"github.com/policyd/policyd/api/inference"
)

// TestSharedMemoryEndToEnd: the real server with shared_memory.enabled and an admin token
// registers a POSIX shared memory object the test created (HTTP with the token; without it
// 401), runs mlp-med at batch 8 with the observation read from the region and the action
// written into it, equal to ONNX Runtime's reference, does the same over gRPC, lists
// system_shared_memory in GET /v2, and unregisters.
func TestSharedMemoryEndToEnd(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot, "testdata/reference/peers-mlp-med_b8.json"))
	if err != nil {
		t.Skip("no reference:", err)
	}
	var ref struct {
		Inputs []struct {
			Shape []int64   `json:"shape"`
			Data  []float32 `json:"data"`
		} `json:"inputs"`
		Outputs []struct {
			Shape []int64   `json:"shape"`
			Data  []float64 `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(raw, &ref); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	repo := filepath.Join(dir, "models")
	linkModel(t, repo, "mlp-med", "../shared/peers/models/mlp-med.onnx")
	token := filepath.Join(dir, "token")
	if err := os.WriteFile(token, []byte("e2e-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "policyd.yaml")
	if err := os.WriteFile(cfg, []byte("repository: {path: models}\nadmin: {token_file: token}\nshared_memory: {enabled: true, max_regions: 2, max_bytes: 1MiB}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, "", "--config", cfg)

	// the object, as a client's shm_open + ftruncate + mmap
	name := fmt.Sprintf("policyd-e2e-%d", os.Getpid())
	fd, err := unix.Open("/dev/shm/"+name, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR, 0o600)
	if err != nil {
		t.Skip("no POSIX shared memory:", err)
	}
	t.Cleanup(func() { os.Remove("/dev/shm/" + name) })
	const size = 16384
	if err := unix.Ftruncate(fd, size); err != nil {
		t.Fatal(err)
	}
	mem, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(mem)
	in, want := ref.Inputs[0].Data, ref.Outputs[0].Data
	for i, f := range in {
		binary.LittleEndian.PutUint32(mem[4*i:], math.Float32bits(f))
	}
	inSize, outOff, outSize := 4*len(in), 8192, 4*len(want)

	do := func(method, path, auth, body string) (int, string) {
		req, _ := http.NewRequest(method, d.url+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := do("GET", "/v2", "", ""); st != 200 || !strings.Contains(body, `"system_shared_memory"`) {
		t.Errorf("GET /v2 = %d %s", st, body)
	}
	reg := fmt.Sprintf(`{"key":"/%s","offset":0,"byte_size":%d}`, name, size)
	if st, body := do("POST", "/v2/systemsharedmemory/region/sim/register", "", reg); st != 401 {
		t.Errorf("register without the token = %d %s, want 401", st, body)
	}
	if st, body := do("POST", "/v2/systemsharedmemory/region/sim/register", "e2e-token", reg); st != 200 {
		t.Fatalf("register = %d %s", st, body)
	}
	check := func(how string) {
		t.Helper()
		for i, w := range want {
			got := math.Float32frombits(binary.LittleEndian.Uint32(mem[outOff+4*i:]))
			if d := math.Abs(float64(got) - w); d > 1e-4+1e-3*math.Abs(w) {
				t.Fatalf("%s: action[%d] = %v, ONNX Runtime %v", how, i, got, w)
			}
		}
		clear(mem[outOff : outOff+outSize])
	}
	st, body := do("POST", "/v2/models/mlp-med/infer", "", fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[8,64],
		"parameters":{"shared_memory_region":"sim","shared_memory_byte_size":%d}}],
		"outputs":[{"name":"action","parameters":{"shared_memory_region":"sim","shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`, inSize, outOff, outSize))
	if st != 200 || strings.Contains(body, `"data"`) || !strings.Contains(body, `"shared_memory_region":"sim"`) {
		t.Fatalf("HTTP infer = %d %s", st, body)
	}
	check("HTTP")

	_, c := grpcClient(t, d.grpcAddr)
	ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer e2e-token")
	if sr, err := c.SystemSharedMemoryStatus(ctx, &inference.SystemSharedMemoryStatusRequest{}); err != nil || sr.Regions["sim"].GetByteSize() != size {
		t.Fatalf("gRPC status = %v, %v", sr, err)
	}
	p := func(off, n int) map[string]*inference.InferParameter {
		return map[string]*inference.InferParameter{
			"shared_memory_region":    {ParameterChoice: &inference.InferParameter_StringParam{StringParam: "sim"}},
			"shared_memory_offset":    {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(off)}},
			"shared_memory_byte_size": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(n)}}}
	}
	resp, err := c.ModelInfer(t.Context(), &inference.ModelInferRequest{ModelName: "mlp-med",
		Inputs:  []*inference.ModelInferRequest_InferInputTensor{{Name: "obs", Datatype: "FP32", Shape: []int64{8, 64}, Parameters: p(0, inSize)}},
		Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "action", Parameters: p(outOff, outSize)}}})
	if err != nil || resp.Outputs[0].Contents != nil || !slices.Equal(resp.Outputs[0].Shape, ref.Outputs[0].Shape) {
		t.Fatalf("gRPC infer = %v, %v", resp, err)
	}
	check("gRPC")

	if st, body := do("POST", "/v2/systemsharedmemory/unregister", "e2e-token", ""); st != 200 {
		t.Errorf("unregister = %d %s", st, body)
	}
	if st, body := do("GET", "/v2/systemsharedmemory/status", "e2e-token", ""); st != 200 || body != "[]" {
		t.Errorf("status after unregister = %d %s", st, body)
	}
}
