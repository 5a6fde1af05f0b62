//go:build cgo

package server

import (
	"encoding/base64"
	"fmt"
	"math"
	"os"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
)

// CUDA shared memory on the CPU emulation of CUDA (build/fakecuda: the cuda plugin with one
// emulated device): the test plays the client (bridge.FakeCUDAExport: cudaMalloc +
// cudaIpcGetMemHandle), the server opens the handle through the fake cuda backend and serves
// the peers' mlp-med on the native cpu backend with its input read from and its output written
// to the client's device memory. The outputs are checked against ONNX Runtime's reference and
// against the inline binary answer.

func fakeCUDARuntime(t testing.TB) *bridge.Runtime {
	t.Helper()
	if _, err := os.Stat("../build/fakecuda/libpolicyd_backend_cuda.so"); err != nil {
		t.Skip("no build/fakecuda (make native PD_BUILD_TESTS=ON)")
	}
	rt, err := bridge.NewRuntime("../build/fakecuda")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func cudaRegisterBody(handle []byte, device, size int) []byte {
	return []byte(fmt.Sprintf(`{"raw_handle":{"b64":%q},"device_id":%d,"byte_size":%d}`,
		base64.StdEncoding.EncodeToString(handle), device, size))
}

func TestCudaShmRealModel(t *testing.T) {
	repo := shmModels(t)
	rt := fakeCUDARuntime(t)
	opts := shmOpts()
	opts.SharedMemory.CUDA = rt
	opts.SharedMemory.MaxBytes = 64 << 20
	ts := startServer(t, NewRegistry(repo), opts)
	open0 := bridge.FakeCUDAOpenMappings()

	// GET /v2 advertises the extension.
	if r := ts.do(t, "GET", "/v2", nil); !strings.Contains(string(r.body), `"system_shared_memory","cuda_shared_memory"`) {
		t.Errorf("GET /v2 = %s, want cuda_shared_memory listed", r.body)
	}

	ref := readShmReference(t, "peers-mlp-med_b8")
	in, want := ref.Inputs[0], ref.Outputs[0]
	inBytes := f32bytes(in.Data...)
	outSize := 4 * len(want.Data)
	const inOff = 64
	outOff := inOff + len(inBytes) + 12
	size := outOff + outSize + 32
	x, err := bridge.NewFakeCUDAExport(size)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Free()
	if err := x.Write(inOff, inBytes); err != nil {
		t.Fatal(err)
	}
	mustOK(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/dev0/register", cudaRegisterBody(x.Handle, 0, size)), "register")
	if got := bridge.FakeCUDAOpenMappings(); got != open0+1 {
		t.Errorf("%d mappings open after register, want %d", got, open0+1)
	}
	r := ts.do(t, "GET", "/v2/cudasharedmemory/status", nil)
	if wantSt := fmt.Sprintf(`[{"name":"dev0","device_id":0,"byte_size":%d}]`, size); string(r.body) != wantSt {
		t.Errorf("status = %s, want %s", r.body, wantSt)
	}
	// The system extension's status does not list it; its name is taken for both kinds.
	if r := ts.do(t, "GET", "/v2/systemsharedmemory/status", nil); string(r.body) != "[]" {
		t.Errorf("system status = %s, want []", r.body)
	}
	wantError(t, ts.register(t, "dev0", "/nope", 0, 8), 400, `region "dev0" is already registered`)

	// inline binary answer
	js := fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":%s,"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`,
		formatShape(in.Shape), len(inBytes))
	body, hdr := binaryBody(js, inBytes)
	inline := splitResponse(t, ts.doBinary(t, "/v2/models/mlp-med/infer", body, hdr))[0].bin

	req := fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":%s,
		"parameters":{"shared_memory_region":"dev0","shared_memory_offset":%d,"shared_memory_byte_size":%d}}],
		"outputs":[{"name":"action","parameters":{"shared_memory_region":"dev0","shared_memory_offset":%d,"shared_memory_byte_size":%%d}}]}`,
		formatShape(in.Shape), inOff, len(inBytes), outOff)
	r = ts.do(t, "POST", "/v2/models/mlp-med/infer", []byte(fmt.Sprintf(req, outSize)))
	mustOK(t, r, "infer with CUDA shared memory")
	wantBody := fmt.Sprintf(`{"model_name":"mlp-med","model_version":"1.0.0","outputs":[{"name":"action","datatype":"FP32","shape":%s,"parameters":{"shared_memory_region":"dev0","shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`,
		formatShape(want.Shape), outOff, outSize)
	if string(r.body) != wantBody {
		t.Errorf("body %s\nwant %s", r.body, wantBody)
	}
	got, err := x.Read(outOff, outSize)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(inline) {
		t.Error("output in CUDA shared memory differs from the inline binary answer")
	}
	for i, f := range bytesF32(got) {
		if d := math.Abs(float64(f) - want.Data[i]); d > 1e-4+1e-3*math.Abs(want.Data[i]) {
			t.Errorf("action[%d] = %v, ONNX Runtime %v", i, f, want.Data[i])
			break
		}
	}

	// Bounds: an output window too small, a window past the region's end.
	wantError(t, ts.do(t, "POST", "/v2/models/mlp-med/infer", []byte(fmt.Sprintf(req, outSize-4))), 400, `output "action": needs 256 bytes`)
	wantError(t, ts.do(t, "POST", "/v2/models/mlp-med/infer", []byte(fmt.Sprintf(req, size))), 400, `runs past the end of shared memory region "dev0"`)

	// gRPC: a server of its own, the region registered by CudaSharedMemoryRegister, the same
	// request as ModelInfer with the parameters typed; the output lands in device memory.
	g := startGRPC(t, NewRegistry(repo), opts)
	ctx := grpcCtx(t)
	if _, err := g.client.CudaSharedMemoryRegister(ctx, &inference.CudaSharedMemoryRegisterRequest{Name: "dev0", RawHandle: x.Handle, DeviceId: 0, ByteSize: uint64(size)}); err != nil {
		t.Fatal(err)
	}
	if err := x.Write(outOff, make([]byte, outSize)); err != nil {
		t.Fatal(err)
	}
	shmP := func(off, n int) map[string]*inference.InferParameter {
		return map[string]*inference.InferParameter{
			"shared_memory_region":    {ParameterChoice: &inference.InferParameter_StringParam{StringParam: "dev0"}},
			"shared_memory_offset":    {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(off)}},
			"shared_memory_byte_size": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(n)}},
		}
	}
	resp, err := g.client.ModelInfer(ctx, &inference.ModelInferRequest{ModelName: "mlp-med",
		Inputs:  []*inference.ModelInferRequest_InferInputTensor{{Name: "obs", Datatype: "FP32", Shape: in.Shape, Parameters: shmP(inOff, len(inBytes))}},
		Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "action", Parameters: shmP(outOff, outSize)}}})
	if err != nil {
		t.Fatal(err)
	}
	if o := resp.Outputs[0]; o.Contents != nil || len(resp.RawOutputContents) != 0 || fmt.Sprint(o.Shape) != fmt.Sprint(want.Shape) {
		t.Errorf("gRPC output entry %v, raw %d", o, len(resp.RawOutputContents))
	}
	if got, err := x.Read(outOff, outSize); err != nil || string(got) != string(inline) {
		t.Errorf("gRPC: output in CUDA shared memory differs from the inline binary answer (%v)", err)
	}
	if _, err := g.client.CudaSharedMemoryUnregister(ctx, &inference.CudaSharedMemoryUnregisterRequest{Name: "dev0"}); err != nil {
		t.Fatal(err)
	}

	// Unregister closes the mapping.
	mustOK(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/dev0/unregister", nil), "unregister")
	if got := bridge.FakeCUDAOpenMappings(); got != open0 {
		t.Errorf("%d mappings open after unregister, want %d", got, open0)
	}
	wantError(t, ts.do(t, "GET", "/v2/cudasharedmemory/region/dev0/status", nil), 404, `"dev0" is not registered`)
}

func TestCudaShmRefusals(t *testing.T) {
	rt := fakeCUDARuntime(t)
	opts := shmOpts()
	opts.SharedMemory.CUDA = rt
	ts := startServer(t, testRegistry(), opts)
	x, err := bridge.NewFakeCUDAExport(256)
	if err != nil {
		t.Fatal(err)
	}
	forged := make([]byte, bridge.CudaIPCHandleSize)
	for i := range forged {
		forged[i] = 0x5a
	}
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/f/register", cudaRegisterBody(forged, 0, 256)), 400, "cudaErrorInvalidResourceHandle")
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/f/register", cudaRegisterBody(x.Handle[:63], 0, 256)), 400, "64 bytes, got 63")
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/f/register", cudaRegisterBody(x.Handle, 3, 256)), 400, "device 3 out of range")
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/f/register", []byte(`{"raw_handle":{"b64":"!!"},"device_id":0,"byte_size":8}`)), 400, "not base64")
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/f/register", []byte(`{"device_id":0,"byte_size":8}`)), 400, `"raw_handle" (with "b64")`)
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/f/register", cudaRegisterBody(x.Handle, 0, 2<<20)), 400, "shared_memory.max_bytes")
	// A freed allocation's handle no longer opens.
	if err := x.Free(); err != nil {
		t.Fatal(err)
	}
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/f/register", cudaRegisterBody(x.Handle, 0, 256)), 400, "cannot open the CUDA IPC handle")
	if r := ts.do(t, "GET", "/v2/cudasharedmemory/status", nil); string(r.body) != "[]" {
		t.Errorf("status after refusals = %s", r.body)
	}
}

// gRPC's three calls, with the same table as HTTP.
func TestCudaShmGRPC(t *testing.T) {
	rt := fakeCUDARuntime(t)
	opts := shmOpts()
	opts.SharedMemory.CUDA = rt
	g := startGRPC(t, testRegistry(), opts)
	ctx := grpcCtx(t)
	open0 := bridge.FakeCUDAOpenMappings()
	x, err := bridge.NewFakeCUDAExport(512)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Free()
	md, err := g.client.ServerMetadata(ctx, &inference.ServerMetadataRequest{})
	if err != nil || !strings.Contains(fmt.Sprint(md.Extensions), "cuda_shared_memory") {
		t.Errorf("ServerMetadata = %v, %v; want cuda_shared_memory", md, err)
	}
	if _, err := g.client.CudaSharedMemoryRegister(ctx, &inference.CudaSharedMemoryRegisterRequest{Name: "g", RawHandle: x.Handle, DeviceId: 0, ByteSize: 512}); err != nil {
		t.Fatal(err)
	}
	st, err := g.client.CudaSharedMemoryStatus(ctx, &inference.CudaSharedMemoryStatusRequest{})
	if err != nil || len(st.Regions) != 1 || st.Regions["g"].GetByteSize() != 512 {
		t.Errorf("status = %v, %v", st, err)
	}
	_, err = g.client.CudaSharedMemoryRegister(ctx, &inference.CudaSharedMemoryRegisterRequest{Name: "h", RawHandle: []byte("short"), ByteSize: 8})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "64 bytes, got 5") {
		t.Errorf("short handle: %v, want InvalidArgument", err)
	}
	if _, err := g.client.CudaSharedMemoryStatus(ctx, &inference.CudaSharedMemoryStatusRequest{Name: "h"}); status.Code(err) != codes.NotFound {
		t.Errorf("status of unknown: %v, want NotFound", err)
	}
	if _, err := g.client.CudaSharedMemoryUnregister(ctx, &inference.CudaSharedMemoryUnregisterRequest{}); err != nil {
		t.Fatal(err)
	}
	if got := bridge.FakeCUDAOpenMappings(); got != open0 {
		t.Errorf("%d mappings open after unregister, want %d", got, open0)
	}
}

// Without a cuda backend: not advertised, and register says why.
func TestCudaShmUnavailable(t *testing.T) {
	rt, _ := nativeRuntime(t, "../../shared/peers/models/mlp-small.onnx") // the cpu runtime: no cuda device here
	for _, c := range []struct {
		name string
		cuda CUDARuntime
		want string
	}{{"no runtime", nil, "this server has no native runtime"}, {"cpu runtime", rt, "CUDA shared memory is unavailable"}} {
		t.Run(c.name, func(t *testing.T) {
			if c.cuda != nil && func() bool {
				d, _ := rt.Devices("cuda")
				return len(d) > 0
			}() {
				t.Skip("this machine has a CUDA device")
			}
			opts := shmOpts()
			opts.SharedMemory.CUDA = c.cuda
			ts := startServer(t, testRegistry(), opts)
			if r := ts.do(t, "GET", "/v2", nil); strings.Contains(string(r.body), "cuda_shared_memory") {
				t.Errorf("GET /v2 = %s lists cuda_shared_memory", r.body)
			}
			wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/r/register", cudaRegisterBody(make([]byte, 64), 0, 8)), 400, c.want)
		})
	}
	opts := shmOpts()
	opts.SharedMemory.Enabled = false
	ts := startServer(t, testRegistry(), opts)
	wantError(t, ts.do(t, "POST", "/v2/cudasharedmemory/region/r/register", cudaRegisterBody(make([]byte, 64), 0, 8)), 400, "not enabled")
}

// Unregister while a request holds a CUDA region: the answer is at once, the mapping stays open
// until the request releases the region, then it is closed (the system extension's reference
// counts, shared).
func TestCudaShmUnregisterWhileHeld(t *testing.T) {
	rt := fakeCUDARuntime(t)
	opts := shmOpts()
	opts.SharedMemory.CUDA = rt
	s := New(testRegistry(), nil, opts)
	open0 := bridge.FakeCUDAOpenMappings()
	x, err := bridge.NewFakeCUDAExport(128)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Free()
	if err := s.shm.registerCUDA("held", x.Handle, 0, 128); err != nil {
		t.Fatal(err)
	}
	u := shmUse{reg: s.shm}
	rg, data, err := u.view("input", "obs", shmRef{region: "held", offset: 64, size: 64})
	if err != nil || rg.cuda == nil || data != nil {
		t.Fatalf("view = %v, %d bytes, %v", rg, len(data), err)
	}
	if err := s.shm.unregisterKind("held", true); err != nil {
		t.Fatal(err)
	}
	if got := bridge.FakeCUDAOpenMappings(); got != open0+1 {
		t.Errorf("%d mappings open while held after unregister, want %d", got, open0+1)
	}
	buf := make([]byte, 64)
	if err := cudaRead(rg, 64, buf); err != nil {
		t.Errorf("reading a held, unregistered region: %v", err)
	}
	u.releaseAll()
	if got := bridge.FakeCUDAOpenMappings(); got != open0 {
		t.Errorf("%d mappings open after the last release, want %d", got, open0)
	}
	// A system unregister of every region leaves CUDA regions alone, and the other way round.
	if err := s.shm.registerCUDA("c", x.Handle, 0, 128); err != nil {
		t.Fatal(err)
	}
	if err := s.shm.unregister(""); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.shm.statusCUDA(""); len(st) != 1 {
		t.Errorf("CUDA regions after a system unregister-all: %v", st)
	}
	s.shm.close()
	if got := bridge.FakeCUDAOpenMappings(); got != open0 {
		t.Errorf("%d mappings open after close, want %d", got, open0)
	}
}
