package server

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
)

// shmObject is a POSIX shared memory object the test creates in /dev/shm, as a client's
// shm_open + ftruncate + mmap would, removed when the test ends.
type shmObject struct {
	key  string // "/name"
	data []byte // the client's own mapping
}

var shmSeq atomic.Int64

func newShmObject(t testing.TB, size int) *shmObject {
	t.Helper()
	name := fmt.Sprintf("policyd-test-%d-%d", os.Getpid(), shmSeq.Add(1))
	path := "/dev/shm/" + name
	fd, err := unix.Open(path, unix.O_CREAT|unix.O_EXCL|unix.O_RDWR|unix.O_CLOEXEC, 0o600)
	if err != nil {
		t.Skip("no POSIX shared memory:", err)
	}
	defer unix.Close(fd)
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(fd, 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Munmap(m); os.Remove(path) })
	return &shmObject{key: "/" + name, data: m}
}

// shmOpts turns the extension on, its calls open without a token (loopback development).
func shmOpts() Options {
	return Options{SharedMemory: SharedMemoryOptions{Enabled: true, MaxRegions: 4, MaxBytes: 1 << 20},
		Admin: Admin{AllowUnauthenticated: func() bool { return true }}}
}

func (ts *testServer) register(t *testing.T, name, key string, offset, size int) response {
	t.Helper()
	return ts.do(t, "POST", "/v2/systemsharedmemory/region/"+name+"/register",
		[]byte(fmt.Sprintf(`{"key":%q,"offset":%d,"byte_size":%d}`, key, offset, size)))
}

func mustOK(t *testing.T, r response, what string) {
	t.Helper()
	if r.status != 200 {
		t.Fatalf("%s = %d %s", what, r.status, r.body)
	}
}

func wantError(t *testing.T, r response, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status %d, want %d (%s); body %s", r.status, status, want, r.body)
		return
	}
	if msg := errorMessage(t, r); !strings.Contains(msg, want) {
		t.Errorf("error %q, want it to contain %q", msg, want)
	}
}

// Inputs read from a region, outputs written into one, over HTTP: the outputs equal the
// inline answer, the response carries no data for them and echoes the region.
func TestShmHTTPRoundTrip(t *testing.T) {
	ts := startServer(t, testRegistry(), shmOpts())
	obj := newShmObject(t, 4096)
	mustOK(t, ts.register(t, "in", obj.key, 0, 1024), "register in")
	mustOK(t, ts.register(t, "out", obj.key, 2048, 2048), "register out")

	obs := []float32{1, -2, 3.5, -0.25, 0, 7, -8, 9}
	copy(obj.data[16:], f32bytes(obs...))
	inline := ts.do(t, "POST", "/v2/models/policy/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[2,4],"data":[1,-2,3.5,-0.25,0,7,-8,9]}],"outputs":[{"name":"action"},{"name":"index"}]}`))
	var want struct {
		Outputs []struct {
			Data []float64 `json:"data"`
		} `json:"outputs"`
	}
	if inline.status != 200 || json.Unmarshal(inline.body, &want) != nil {
		t.Fatalf("inline = %d %s", inline.status, inline.body)
	}
	r := ts.do(t, "POST", "/v2/models/policy/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[2,4],
		"parameters":{"shared_memory_region":"in","shared_memory_offset":16,"shared_memory_byte_size":32}}],
		"outputs":[{"name":"action","parameters":{"shared_memory_region":"out","shared_memory_offset":64,"shared_memory_byte_size":32}},{"name":"index"}]}`))
	mustOK(t, r, "shm infer")
	wantBody := `{"model_name":"policy","model_version":"2","outputs":[{"name":"action","datatype":"FP32","shape":[2,4],"parameters":{"shared_memory_region":"out","shared_memory_offset":64,"shared_memory_byte_size":32}},{"name":"index","datatype":"INT64","shape":[2,1],"data":[9007199254740993,9007199254740994]}]}`
	if string(r.body) != wantBody {
		t.Errorf("body\n%s\nwant\n%s", r.body, wantBody)
	}
	got := bytesF32(obj.data[2048+64 : 2048+64+32])
	for i, f := range got {
		if float64(f) != want.Outputs[0].Data[i] {
			t.Errorf("action[%d] = %v in shared memory, inline %v", i, f, want.Outputs[0].Data[i])
		}
	}

	// status: all, one, unknown
	st := ts.do(t, "GET", "/v2/systemsharedmemory/status", nil)
	wantSt := fmt.Sprintf(`[{"name":"in","key":%q,"offset":0,"byte_size":1024},{"name":"out","key":%q,"offset":2048,"byte_size":2048}]`, obj.key, obj.key)
	if st.status != 200 || string(st.body) != wantSt {
		t.Errorf("status = %d %s, want %s", st.status, st.body, wantSt)
	}
	st = ts.do(t, "GET", "/v2/systemsharedmemory/region/out/status", nil)
	if st.status != 200 || !strings.HasPrefix(string(st.body), `[{"name":"out"`) {
		t.Errorf("region status = %d %s", st.status, st.body)
	}
	wantError(t, ts.do(t, "GET", "/v2/systemsharedmemory/region/nope/status", nil), 404, `shared memory region "nope" is not registered`)

	// unregister one, then all
	mustOK(t, ts.do(t, "POST", "/v2/systemsharedmemory/region/in/unregister", nil), "unregister in")
	wantError(t, ts.do(t, "POST", "/v2/models/policy/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[2,4],
		"parameters":{"shared_memory_region":"in","shared_memory_byte_size":32}}]}`)), 400, `input "obs": shared memory region "in" is not registered`)
	mustOK(t, ts.do(t, "POST", "/v2/systemsharedmemory/unregister", nil), "unregister all")
	if st := ts.do(t, "GET", "/v2/systemsharedmemory/status", nil); string(st.body) != `[]` {
		t.Errorf("status after unregister all = %s", st.body)
	}
}

// Every bound violated once: a 400 naming what is wrong.
func TestShmBounds(t *testing.T) {
	ts := startServer(t, testRegistry(), shmOpts())
	obj := newShmObject(t, 8192)
	mustOK(t, ts.register(t, "r", obj.key, 4096, 64), "register")
	infer := func(in, out string) response {
		body := `{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],` + in + `}]`
		if out != "" {
			body += `,"outputs":[{"name":"action","parameters":{` + out + `}}]`
		}
		return ts.do(t, "POST", "/v2/models/policy/infer", []byte(body+"}"))
	}
	for _, tt := range []struct{ in, out, want string }{
		{`"parameters":{"shared_memory_region":"r","shared_memory_offset":56,"shared_memory_byte_size":16}`, "",
			`input "obs": "shared_memory_offset" 56 + "shared_memory_byte_size" 16 runs past the end of shared memory region "r" (64 bytes)`},
		{`"parameters":{"shared_memory_region":"r","shared_memory_offset":18446744073709551615,"shared_memory_byte_size":16}`, "",
			`"shared_memory_offset" 18446744073709551615 + "shared_memory_byte_size" 16 runs past the end`},
		{`"parameters":{"shared_memory_region":"r","shared_memory_byte_size":12}`, "",
			`input "obs": "shared_memory_byte_size" is 12, but shape [1,4] of FP32 takes 16 bytes`},
		{`"parameters":{"shared_memory_region":"r"}`, "", `input "obs": "shared_memory_region" and "shared_memory_byte_size" go together`},
		{`"parameters":{"shared_memory_byte_size":16}`, "", `"shared_memory_region" and "shared_memory_byte_size" go together`},
		{`"parameters":{"shared_memory_region":"r","shared_memory_byte_size":-16}`, "", `"shared_memory_byte_size" must be a non-negative integer`},
		{`"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16},"data":[1,2,3,4]`, "", `"shared_memory_region" given with "data"`},
		{`"parameters":{"shared_memory_region":7,"shared_memory_byte_size":16}`, "", `"shared_memory_region" must be a string, got number`},
		{`"parameters":{"shared_memory_region":"zz","shared_memory_byte_size":16}`, "", `input "obs": shared memory region "zz" is not registered`},
		{`"data":[1,2,3,4]`, `"shared_memory_region":"r","shared_memory_offset":60,"shared_memory_byte_size":16`,
			`output "action": "shared_memory_offset" 60 + "shared_memory_byte_size" 16 runs past the end of shared memory region "r" (64 bytes)`},
		{`"data":[1,2,3,4]`, `"shared_memory_region":"r","shared_memory_byte_size":15`,
			`output "action": needs 16 bytes (shape [1,4] of FP32), but "shared_memory_byte_size" gives 15 in region "r"`},
	} {
		wantError(t, infer(tt.in, tt.out), 400, tt.want)
	}

	// registration bounds
	fifo := fmt.Sprintf("policyd-test-fifo-%d", os.Getpid())
	if err := unix.Mkfifo("/dev/shm/"+fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/dev/shm/" + fifo) })
	for _, tt := range []struct {
		name, body, want string
	}{
		{"a", fmt.Sprintf(`{"key":%q,"offset":8192,"byte_size":1}`, obj.key), `"offset" 8192 + "byte_size" 1 runs past the end of shared memory object`},
		{"a", fmt.Sprintf(`{"key":%q,"offset":18446744073709551615,"byte_size":2}`, obj.key), `runs past the end of shared memory object`},
		{"a", fmt.Sprintf(`{"key":%q,"offset":0,"byte_size":0}`, obj.key), `"byte_size" must be positive`},
		{"a", fmt.Sprintf(`{"key":%q,"offset":-1,"byte_size":4}`, obj.key), `"offset" must be a non-negative integer`},
		{"a", `{"key":"/../etc/passwd","byte_size":4}`, `is not a POSIX shared memory name`},
		{"a", `{"key":"/policyd-test-missing","byte_size":4}`, `cannot open shared memory object "/policyd-test-missing" read-write`},
		{"a", `{"byte_size":4}`, `"key" and "byte_size" are required`},
		{"a", `{"key":"/` + fifo + `","byte_size":4}`, `is not a shared memory object`},
		{"r", fmt.Sprintf(`{"key":%q,"byte_size":4}`, obj.key), `region "r" is already registered`},
	} {
		wantError(t, ts.do(t, "POST", "/v2/systemsharedmemory/region/"+tt.name+"/register", []byte(tt.body)), 400, tt.want)
	}
}

// The number and the bytes of regions are bounded.
func TestShmLimits(t *testing.T) {
	ts := startServer(t, testRegistry(), shmOpts()) // 4 regions, 1 MiB
	obj := newShmObject(t, 2<<20)
	wantError(t, ts.register(t, "big", obj.key, 0, 1<<20+1), 400, `"byte_size" 1048577 with the 0 bytes registered is more than shared_memory.max_bytes (1048576)`)
	for i := range 4 {
		mustOK(t, ts.register(t, fmt.Sprint("r", i), obj.key, 0, 1000), "register")
	}
	wantError(t, ts.register(t, "r4", obj.key, 0, 1000), 400, `4 regions are registered, the most shared_memory.max_regions allows`)
	mustOK(t, ts.do(t, "POST", "/v2/systemsharedmemory/region/r0/unregister", nil), "unregister")
	wantError(t, ts.register(t, "r4", obj.key, 0, 1<<20-2999), 400, `with the 3000 bytes registered is more than shared_memory.max_bytes`)
	mustOK(t, ts.register(t, "r4", obj.key, 0, 1<<20-3000), "register up to the byte bound")
}

// With the extension off every route, call and parameter says so (400), and an output naming
// a region is no longer answered inline.
func TestShmOff(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	const off = "the shared-memory extension is not enabled on this server (shared_memory.enabled: false)"
	wantError(t, ts.register(t, "r", "/x", 0, 4), 400, off)
	wantError(t, ts.do(t, "GET", "/v2/systemsharedmemory/status", nil), 400, off)
	wantError(t, ts.do(t, "POST", "/v2/systemsharedmemory/unregister", nil), 400, off)
	wantError(t, ts.do(t, "POST", "/v2/models/policy/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],
		"outputs":[{"name":"action","parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`)), 400,
		`output "action": parameter "shared_memory_region": `+off)
	wantError(t, ts.do(t, "POST", "/v2/models/policy/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],
		"parameters":{"shared_memory_byte_size":16}}]}`)), 400, `input "obs": parameter "shared_memory_byte_size": `+off)
	if r := ts.do(t, "GET", "/v2", nil); !strings.Contains(string(r.body), `"system_shared_memory"`) {
		t.Errorf("GET /v2 = %s, want system_shared_memory listed", r.body)
	}

	g := startGRPC(t, testRegistry(), Options{})
	ctx := grpcCtx(t)
	_, err := g.client.SystemSharedMemoryRegister(ctx, &inference.SystemSharedMemoryRegisterRequest{Name: "r", Key: "/x", ByteSize: 4})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), off) {
		t.Errorf("gRPC register with the extension off = %v", err)
	}
	req := obsRequest("", 1, 2, 3, 4)
	req.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "action", Parameters: map[string]*inference.InferParameter{
		"shared_memory_region": {ParameterChoice: &inference.InferParameter_StringParam{StringParam: "r"}}}}}
	if _, err := g.client.ModelInfer(ctx, req); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), off) {
		t.Errorf("gRPC output in shared memory with the extension off = %v", err)
	}
}

// Register and unregister are operator calls: with a token configured they need it, without
// one they are refused unless admin.allow_unauthenticated; status needs the token when one is
// configured.
func TestShmAuth(t *testing.T) {
	obj := newShmObject(t, 4096)
	opts := Options{SharedMemory: SharedMemoryOptions{Enabled: true}}
	ts := startServer(t, testRegistry(), opts)
	wantError(t, ts.register(t, "r", obj.key, 0, 64), 403, "shared-memory register needs a token")
	wantError(t, ts.do(t, "POST", "/v2/systemsharedmemory/unregister", nil), 403, "shared-memory unregister needs a token")
	mustOK(t, ts.do(t, "GET", "/v2/systemsharedmemory/status", nil), "status without a token configured")

	opts.Admin.Token = func() string { return "s3cret" }
	ts = startServer(t, testRegistry(), opts)
	body := []byte(fmt.Sprintf(`{"key":%q,"byte_size":64}`, obj.key))
	wantError(t, ts.doAuth(t, "POST", "/v2/systemsharedmemory/region/r/register", "Bearer nope", body), 401, "")
	mustOK(t, ts.doAuth(t, "POST", "/v2/systemsharedmemory/region/r/register", "Bearer s3cret", body), "register with the token")
	wantError(t, ts.do(t, "GET", "/v2/systemsharedmemory/status", nil), 401, "")
	mustOK(t, ts.doAuth(t, "GET", "/v2/systemsharedmemory/status", "Bearer s3cret", nil), "status with the token")

	g := startGRPC(t, testRegistry(), opts)
	ctx := grpcCtx(t)
	req := &inference.SystemSharedMemoryRegisterRequest{Name: "r", Key: obj.key, ByteSize: 64}
	if _, err := g.client.SystemSharedMemoryRegister(ctx, req); status.Code(err) != codes.Unauthenticated {
		t.Errorf("gRPC register without the token = %v", err)
	}
	actx := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	if _, err := g.client.SystemSharedMemoryRegister(actx, req); err != nil {
		t.Errorf("gRPC register with the token: %v", err)
	}
}

// The same over gRPC: inputs from a region (beside a raw input of another... the model has
// one input), outputs into one, raw and typed responses; status, unregister, and the bounds.
func TestShmGRPC(t *testing.T) {
	g := startGRPC(t, testRegistry(), shmOpts())
	ctx := grpcCtx(t)
	obj := newShmObject(t, 4096)
	if _, err := g.client.SystemSharedMemoryRegister(ctx, &inference.SystemSharedMemoryRegisterRequest{Name: "io", Key: obj.key, Offset: 100, ByteSize: 1000}); err != nil {
		t.Fatal(err)
	}
	st, err := g.client.SystemSharedMemoryStatus(ctx, &inference.SystemSharedMemoryStatusRequest{})
	if err != nil || len(st.Regions) != 1 || st.Regions["io"].GetOffset() != 100 || st.Regions["io"].GetByteSize() != 1000 || st.Regions["io"].GetKey() != obj.key {
		t.Fatalf("status = %v, %v", st, err)
	}
	if _, err := g.client.SystemSharedMemoryStatus(ctx, &inference.SystemSharedMemoryStatusRequest{Name: "nope"}); status.Code(err) != codes.NotFound {
		t.Errorf("status of an unknown region = %v", err)
	}
	copy(obj.data[100+8:], f32bytes(1, -2, 3, -4))
	sp := func(k string) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_StringParam{StringParam: k}}
	}
	ip := func(n int64) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: n}}
	}
	for _, raw := range []bool{false, true} {
		clear(obj.data[100+200 : 100+216])
		req := &inference.ModelInferRequest{ModelName: "policy", Inputs: []*inference.ModelInferRequest_InferInputTensor{{
			Name: "obs", Datatype: "FP32", Shape: []int64{1, 4},
			Parameters: map[string]*inference.InferParameter{"shared_memory_region": sp("io"), "shared_memory_offset": ip(8), "shared_memory_byte_size": ip(16)}}},
			Outputs: []*inference.ModelInferRequest_InferRequestedOutputTensor{
				{Name: "action", Parameters: map[string]*inference.InferParameter{"shared_memory_region": sp("io"), "shared_memory_offset": ip(200), "shared_memory_byte_size": ip(16)}},
				{Name: "positive"}}}
		if raw {
			req.Parameters = map[string]*inference.InferParameter{"binary_data_output": {ParameterChoice: &inference.InferParameter_BoolParam{BoolParam: true}}}
		}
		resp, err := g.client.ModelInfer(ctx, req)
		if err != nil {
			t.Fatalf("raw %v: %v", raw, err)
		}
		if got := bytesF32(obj.data[300:316]); fmt.Sprint(got) != "[2 -4 6 -8]" {
			t.Errorf("raw %v: action in shared memory = %v", raw, got)
		}
		a := resp.Outputs[0]
		if a.Contents != nil || a.Parameters["shared_memory_region"].GetStringParam() != "io" ||
			a.Parameters["shared_memory_offset"].GetInt64Param() != 200 || a.Parameters["shared_memory_byte_size"].GetInt64Param() != 16 {
			t.Errorf("raw %v: action entry = %v", raw, a)
		}
		if raw {
			if len(resp.RawOutputContents) != 2 || len(resp.RawOutputContents[0]) != 0 || fmt.Sprint(resp.RawOutputContents[1]) != "[1 0 1 0]" {
				t.Errorf("raw outputs = %v", resp.RawOutputContents)
			}
		} else if fmt.Sprint(resp.Outputs[1].Contents.GetBoolContents()) != "[true false true false]" {
			t.Errorf("positive = %v", resp.Outputs[1].Contents)
		}
	}
	// bounds over gRPC
	bad := &inference.ModelInferRequest{ModelName: "policy", Inputs: []*inference.ModelInferRequest_InferInputTensor{{
		Name: "obs", Datatype: "FP32", Shape: []int64{1, 4},
		Parameters: map[string]*inference.InferParameter{"shared_memory_region": sp("io"), "shared_memory_offset": ip(990), "shared_memory_byte_size": ip(16)}}}}
	if _, err := g.client.ModelInfer(ctx, bad); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), `input "obs": "shared_memory_offset" 990 + "shared_memory_byte_size" 16 runs past the end of shared memory region "io" (1000 bytes)`) {
		t.Errorf("out of bounds over gRPC = %v", err)
	}
	bad.Inputs[0].Parameters["shared_memory_offset"] = ip(-1)
	if _, err := g.client.ModelInfer(ctx, bad); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"shared_memory_offset" must be an unsigned integer`) {
		t.Errorf("negative offset over gRPC = %v", err)
	}
	if _, err := g.client.SystemSharedMemoryRegister(ctx, &inference.SystemSharedMemoryRegisterRequest{Name: "x", Key: obj.key, Offset: 4000, ByteSize: 200}); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), `"offset" 4000 + "byte_size" 200 runs past the end`) {
		t.Errorf("register past the object over gRPC = %v", err)
	}
	if _, err := g.client.SystemSharedMemoryUnregister(ctx, &inference.SystemSharedMemoryUnregisterRequest{}); err != nil {
		t.Fatal(err)
	}
	if st, _ := g.client.SystemSharedMemoryStatus(ctx, &inference.SystemSharedMemoryStatusRequest{}); len(st.GetRegions()) != 0 {
		t.Errorf("regions after unregister all: %v", st.GetRegions())
	}
}

// A region unregistered while requests read and write it stays mapped until they end: the
// requests in flight complete with the right outputs and the mapping goes once they have.
// Run with -race.
func TestShmUnregisterInFlight(t *testing.T) {
	m := policyModel("1")
	started, proceed := make(chan struct{}), make(chan struct{})
	var first atomic.Bool
	m.hook = func(context.Context) {
		if first.CompareAndSwap(false, true) {
			close(started)
			<-proceed
		}
	}
	ts := startServer(t, newFakeRegistry(m), shmOpts())
	obj := newShmObject(t, 4096)
	copy(obj.data, f32bytes(1, 2, 3, 4))
	mustOK(t, ts.register(t, "r", obj.key, 0, 4096), "register")
	body := []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}],
		"outputs":[{"name":"action","parameters":{"shared_memory_region":"r","shared_memory_offset":1024,"shared_memory_byte_size":16}}]}`)
	var wg sync.WaitGroup
	var inflight response
	wg.Go(func() { inflight = ts.do(t, "POST", "/v2/models/policy/infer", body) })
	<-started
	ts.srv.shm.mu.Lock()
	rg := ts.srv.shm.regions["r"]
	ts.srv.shm.mu.Unlock()
	mustOK(t, ts.do(t, "POST", "/v2/systemsharedmemory/region/r/unregister", nil), "unregister in flight")
	ts.srv.shm.mu.Lock()
	mapped := rg.mapping != nil
	ts.srv.shm.mu.Unlock()
	if !mapped {
		t.Fatal("the region was unmapped while a request held it")
	}
	close(proceed)
	wg.Wait()
	mustOK(t, inflight, "the request in flight")
	if got := bytesF32(obj.data[1024:1040]); fmt.Sprint(got) != "[2 4 6 8]" {
		t.Errorf("output written = %v", got)
	}
	ts.srv.shm.mu.Lock()
	defer ts.srv.shm.mu.Unlock()
	if rg.mapping != nil || rg.refs != 0 {
		t.Errorf("after the request: mapping %v, refs %d; want unmapped, 0", rg.mapping != nil, rg.refs)
	}
}

// Many requests race unregister and register of the same name (-race): every answer is a
// success with the right output or a 400 saying the region is not registered; nothing crashes.
func TestShmUnregisterRace(t *testing.T) {
	ts := startServer(t, testRegistry(), shmOpts())
	obj := newShmObject(t, 4096)
	copy(obj.data, f32bytes(1, 2, 3, 4))
	mustOK(t, ts.register(t, "r", obj.key, 0, 512), "register")
	body := []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"parameters":{"shared_memory_region":"r","shared_memory_byte_size":16}}]}`)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, missing atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				r := ts.do(t, "POST", "/v2/models/policy/infer", body)
				switch {
				case r.status == 200 && strings.Contains(string(r.body), `"data":[2,4,6,8]`):
					ok.Add(1)
				case r.status == 400 && strings.Contains(string(r.body), `shared memory region \"r\" is not registered`):
					missing.Add(1)
				default:
					t.Errorf("answer %d %s", r.status, r.body)
					return
				}
			}
		})
	}
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		ts.do(t, "POST", "/v2/systemsharedmemory/region/r/unregister", nil)
		ts.register(t, "r", obj.key, 0, 512)
	}
	close(stop)
	wg.Wait()
	if ok.Load() == 0 {
		t.Errorf("no request succeeded (%d missing)", missing.Load())
	}
	t.Logf("%d answered, %d found the region unregistered", ok.Load(), missing.Load())
}

// within agrees with exact arithmetic, and a request's window of a region is inside it, for
// any offsets and sizes: the bounds check cannot overflow.
func FuzzSharedMemoryBounds(f *testing.F) {
	f.Add(uint64(0), uint64(16), uint64(64), uint64(4096), uint64(8192))
	f.Add(uint64(math.MaxUint64), uint64(2), uint64(64), uint64(4096), uint64(8192))
	f.Add(uint64(60), uint64(16), uint64(64), uint64(1), uint64(math.MaxUint64))
	f.Fuzz(func(t *testing.T, off, size, regSize, regOff, objSize uint64) {
		exact := func(o, s, total uint64) bool {
			sum := new(big.Int).Add(new(big.Int).SetUint64(o), new(big.Int).SetUint64(s))
			return sum.Cmp(new(big.Int).SetUint64(total)) <= 0
		}
		if within(regOff, regSize, objSize) != exact(regOff, regSize, objSize) {
			t.Fatalf("within(%d, %d, %d) disagrees with exact arithmetic", regOff, regSize, objSize)
		}
		if within(off, size, regSize) != exact(off, size, regSize) {
			t.Fatalf("within(%d, %d, %d) disagrees with exact arithmetic", off, size, regSize)
		}
		// The request path: a region of regSize%4096+1 bytes, a window off/size of it.
		n := regSize%4096 + 1
		data := make([]byte, n)
		u := shmUse{reg: &shmRegistry{opts: SharedMemoryOptions{Enabled: true}, regions: map[string]*shmRegion{
			"r": {name: "r", size: n, data: data, mapping: data}}}}
		_, view, err := u.view("input", "x", shmRef{region: "r", offset: off, size: size})
		if (err == nil) != exact(off, size, n) {
			t.Fatalf("view(%d, %d) of %d bytes: err %v", off, size, n, err)
		}
		if err == nil && uint64(len(view)) != size {
			t.Fatalf("view(%d, %d) has %d bytes", off, size, len(view))
		}
		u.releaseAll()
		if rg := u.reg.regions["r"]; rg.refs != 0 {
			t.Fatalf("refs %d after release", rg.refs)
		}
	})
}

// shmBenchCases are the models of the shared-memory benchmarks: obs FP32 of shape → action
// FP32 of outN values.
var shmBenchCases = []struct {
	model string
	shape []int64
	outN  int
}{{"mlp-med", []int64{1, 64}, 8}, {"cnn-atari", []int64{32, 4, 84, 84}, 32 * 18}}

// benchShm runs s's HTTP handler for each of shmBenchCases with binary tensors inline
// (binary_data_output) and with the input and the output in a shared memory region.
func benchShm(b *testing.B, s *Server) {
	h := s.Handler()
	for _, c := range shmBenchCases {
		n := 1
		for _, d := range c.shape {
			n *= int(d)
		}
		in := make([]float32, n)
		for i := range in {
			in[i] = float32(i%97)/97 - 0.5
		}
		inBytes := f32bytes(in...)
		obj := newShmObject(b, len(inBytes)+4*c.outN)
		copy(obj.data, inBytes)
		name := c.model
		if err := s.shm.register(name, obj.key, 0, uint64(len(obj.data))); err != nil {
			b.Fatal(err)
		}
		js := fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":%s,"parameters":{"binary_data_size":%d}}],"parameters":{"binary_data_output":true}}`,
			formatShape(c.shape), len(inBytes))
		binBody, hdr := binaryBody(js, inBytes)
		shmBody := []byte(fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":%s,"parameters":{"shared_memory_region":%q,"shared_memory_byte_size":%d}}],
			"outputs":[{"name":"action","parameters":{"shared_memory_region":%q,"shared_memory_offset":%d,"shared_memory_byte_size":%d}}]}`,
			formatShape(c.shape), name, len(inBytes), name, len(inBytes), 4*c.outN))
		for _, v := range []struct {
			name string
			body []byte
			hdr  string
		}{{"binary", binBody, hdr}, {"shm", shmBody, ""}} {
			b.Run(fmt.Sprintf("%s_b%d/%s", c.model, c.shape[0], v.name), func(b *testing.B) {
				b.ReportAllocs()
				benchInfer(b, h, "/v2/models/"+c.model+"/infer", v.body, inferHeaderLength, v.hdr)
			})
		}
	}
}

// BenchmarkShmHandlerNoEngine is benchShm with models of the same signatures that answer at
// once (a fixed output, the input's first value read): the handler's own cost, transport and
// codec, with binary tensors inline against shared memory.
func BenchmarkShmHandlerNoEngine(b *testing.B) {
	var ms []*fakeModel
	for _, c := range shmBenchCases {
		shape := append([]int64{-1}, c.shape[1:]...)
		out := make([]byte, 4*c.outN)
		outs := []bridge.Tensor{{DType: bridge.Float32, Shape: []int64{c.shape[0], int64(c.outN) / c.shape[0]}, Data: out}}
		ms = append(ms, &fakeModel{name: c.model, version: "1", batchable: true, keepOutputs: true,
			inputs:  []bridge.IOInfo{{Name: "obs", DType: bridge.Float32, Shape: shape}},
			outputs: []bridge.IOInfo{{Name: "action", DType: bridge.Float32, Shape: []int64{-1, int64(c.outN) / c.shape[0]}}},
			run:     func(in []bridge.Tensor) []bridge.Tensor { out[0] = in[0].Data[0]; return outs }})
	}
	opts := shmOpts()
	opts.SharedMemory.MaxBytes = 64 << 20
	benchShm(b, New(newFakeRegistry(ms...), nil, opts))
}

// A parameter key written with JSON escapes is the same key: an output naming a region that
// way is not answered inline.
func TestShmEscapedKey(t *testing.T) {
	ts := startServer(t, testRegistry(), Options{})
	wantError(t, ts.do(t, "POST", "/v2/models/policy/infer", []byte(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}],
		"outputs":[{"name":"action","parameters":{"shared\u005fmemory_region":"r","shared_memory_byte_size":16}}]}`)), 400,
		`output "action": parameter "shared_memory_region": the shared-memory extension is not enabled`)
}

// FuzzSharedMemoryRequest decodes requests whose shared memory parameters are fuzzed (any
// JSON value for each, the shape too) against a 4 KiB region: every request is either refused
// with a 400 or takes an input window that lies in the region and has the bytes its shape
// takes; the region is released whatever happens.
func FuzzSharedMemoryRequest(f *testing.F) {
	f.Add(`"r"`, `0`, `16`, `[1,4]`, `"r"`, `64`, `16`)
	f.Add(`"r"`, `4080`, `16`, `[1,4]`, `"r"`, `4090`, `8`)
	f.Add(`"r"`, `18446744073709551615`, `18446744073709551615`, `[1,4]`, `"x"`, `-1`, `1e3`)
	f.Add(`"r"`, `1`, `16`, `[1,4]`, `7`, `null`, `"16"`)
	f.Fuzz(func(t *testing.T, region, off, size, shape, outRegion, outOff, outSize string) {
		data := make([]byte, 4096)
		reg := &shmRegistry{opts: SharedMemoryOptions{Enabled: true}, regions: map[string]*shmRegion{
			"r": {name: "r", size: uint64(len(data)), data: data, mapping: data}}}
		r := newInferRequest()
		r.shm.reg = reg
		body := `{"inputs":[{"name":"obs","datatype":"FP32","shape":` + shape + `,"parameters":{"shared_memory_region":` + region +
			`,"shared_memory_offset":` + off + `,"shared_memory_byte_size":` + size + `}}],"outputs":[{"name":"action","parameters":{"shared_memory_region":` +
			outRegion + `,"shared_memory_offset":` + outOff + `,"shared_memory_byte_size":` + outSize + `}}]}`
		err := r.decode(nil, []byte(body), policyModel("1"))
		if err != nil {
			if st, _ := errorStatus(err); st != 400 {
				t.Fatalf("%s: status %d for %v", body, st, err)
			}
		} else {
			in := r.tensors[0]
			want, _ := bridge.ByteSize(bridge.Float32, in.Shape)
			if int64(len(in.Data)) != want {
				t.Fatalf("%s: input of %d bytes for shape %v", body, len(in.Data), in.Shape)
			}
			if len(in.Data) > 0 {
				p := uintptr(unsafe.Pointer(&in.Data[0]))
				base := uintptr(unsafe.Pointer(&data[0]))
				inRegion := p >= base && p+uintptr(len(in.Data)) <= base+uintptr(len(data))
				copied := len(r.bufs[0]) > 0 && &r.bufs[0][0] == &in.Data[0] && p%4 == 0 // a misaligned window, copied
				if !inRegion && !copied {
					t.Fatalf("%s: input window outside the region", body)
				}
			}
			if o := r.outShm(0); o == nil || !within(o.offset, o.size, 4096) {
				t.Fatalf("%s: output window %+v", body, o)
			}
		}
		r.release()
		if rg := reg.regions["r"]; rg.refs != 0 {
			t.Fatalf("%s: refs %d after release", body, rg.refs)
		}
	})
}

// The gRPC twins of TestShmBounds: the same faults, InvalidArgument with the same messages.
func TestShmBoundsGRPC(t *testing.T) {
	g := startGRPC(t, testRegistry(), shmOpts())
	ctx := grpcCtx(t)
	obj := newShmObject(t, 8192)
	if _, err := g.client.SystemSharedMemoryRegister(ctx, &inference.SystemSharedMemoryRegisterRequest{Name: "r", Key: obj.key, Offset: 4096, ByteSize: 64}); err != nil {
		t.Fatal(err)
	}
	sp := func(s string) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_StringParam{StringParam: s}}
	}
	up := func(n uint64) *inference.InferParameter {
		return &inference.InferParameter{ParameterChoice: &inference.InferParameter_Uint64Param{Uint64Param: n}}
	}
	type P = map[string]*inference.InferParameter
	for _, tt := range []struct {
		in, out  P
		contents bool
		want     string
	}{
		{P{"shared_memory_region": sp("r"), "shared_memory_offset": up(56), "shared_memory_byte_size": up(16)}, nil, false,
			`input "obs": "shared_memory_offset" 56 + "shared_memory_byte_size" 16 runs past the end of shared memory region "r" (64 bytes)`},
		{P{"shared_memory_region": sp("r"), "shared_memory_offset": up(math.MaxUint64), "shared_memory_byte_size": up(16)}, nil, false,
			`"shared_memory_offset" 18446744073709551615 + "shared_memory_byte_size" 16 runs past the end`},
		{P{"shared_memory_region": sp("r"), "shared_memory_byte_size": up(12)}, nil, false,
			`input "obs": "shared_memory_byte_size" is 12, but shape [1,4] of FP32 takes 16 bytes`},
		{P{"shared_memory_region": sp("r")}, nil, false, `input "obs": "shared_memory_region" and "shared_memory_byte_size" go together`},
		{P{"shared_memory_region": up(1), "shared_memory_byte_size": up(16)}, nil, false, `"shared_memory_region" must be a string_param, got a uint64_param`},
		{P{"shared_memory_region": sp("r"), "shared_memory_byte_size": up(16)}, nil, true, `input "obs": "contents" given with "shared_memory_region"`},
		{P{"shared_memory_region": sp("zz"), "shared_memory_byte_size": up(16)}, nil, false, `input "obs": shared memory region "zz" is not registered`},
		{nil, P{"shared_memory_region": sp("r"), "shared_memory_offset": up(60), "shared_memory_byte_size": up(16)}, true,
			`output "action": "shared_memory_offset" 60 + "shared_memory_byte_size" 16 runs past the end of shared memory region "r" (64 bytes)`},
		{nil, P{"shared_memory_region": sp("r"), "shared_memory_byte_size": up(15)}, true,
			`output "action": needs 16 bytes (shape [1,4] of FP32), but "shared_memory_byte_size" gives 15 in region "r"`},
	} {
		req := &inference.ModelInferRequest{ModelName: "policy", Inputs: []*inference.ModelInferRequest_InferInputTensor{{
			Name: "obs", Datatype: "FP32", Shape: []int64{1, 4}, Parameters: tt.in}}}
		if tt.contents {
			req.Inputs[0].Contents = &inference.InferTensorContents{Fp32Contents: []float32{1, 2, 3, 4}}
		}
		if tt.out != nil {
			req.Outputs = []*inference.ModelInferRequest_InferRequestedOutputTensor{{Name: "action", Parameters: tt.out}}
		}
		_, err := g.client.ModelInfer(ctx, req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("got %v, want InvalidArgument %q", err, tt.want)
		}
	}
	// register faults
	for _, tt := range []struct {
		req  *inference.SystemSharedMemoryRegisterRequest
		want string
	}{
		{&inference.SystemSharedMemoryRegisterRequest{Name: "a", Key: obj.key, Offset: 8192, ByteSize: 1}, `"offset" 8192 + "byte_size" 1 runs past the end`},
		{&inference.SystemSharedMemoryRegisterRequest{Name: "a", Key: obj.key, Offset: math.MaxUint64, ByteSize: 2}, `runs past the end`},
		{&inference.SystemSharedMemoryRegisterRequest{Name: "a", Key: obj.key}, `"byte_size" must be positive`},
		{&inference.SystemSharedMemoryRegisterRequest{Name: "", Key: obj.key, ByteSize: 4}, `region name must be 1 to 256 bytes`},
		{&inference.SystemSharedMemoryRegisterRequest{Name: "a", Key: "../x", ByteSize: 4}, `is not a POSIX shared memory name`},
		{&inference.SystemSharedMemoryRegisterRequest{Name: "r", Key: obj.key, ByteSize: 4}, `region "r" is already registered`},
	} {
		_, err := g.client.SystemSharedMemoryRegister(ctx, tt.req)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tt.want) {
			t.Errorf("register %v: got %v, want InvalidArgument %q", tt.req, err, tt.want)
		}
	}
}

// A graceful Shutdown unmaps the regions.
func TestShmShutdownUnmaps(t *testing.T) {
	ts := startServer(t, testRegistry(), shmOpts())
	obj := newShmObject(t, 4096)
	mustOK(t, ts.register(t, "r", obj.key, 0, 4096), "register")
	ts.srv.shm.mu.Lock()
	rg := ts.srv.shm.regions["r"]
	ts.srv.shm.mu.Unlock()
	if err := ts.srv.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	ts.srv.shm.mu.Lock()
	defer ts.srv.shm.mu.Unlock()
	if rg.mapping != nil || len(ts.srv.shm.regions) != 0 {
		t.Errorf("after Shutdown: mapped %v, %d regions", rg.mapping != nil, len(ts.srv.shm.regions))
	}
}

// An aligned input reaches the engine as a view of the mapping (no copy); a misaligned one
// as a copy with the same bytes.
func TestShmInputZeroCopy(t *testing.T) {
	m := policyModel("1")
	run := m.run
	var seen atomic.Pointer[byte]
	m.run = func(in []bridge.Tensor) []bridge.Tensor { seen.Store(&in[0].Data[0]); return run(in) }
	ts := startServer(t, newFakeRegistry(m), shmOpts())
	obj := newShmObject(t, 4096)
	copy(obj.data[64:], f32bytes(1, 2, 3, 4))
	copy(obj.data[129:], f32bytes(1, 2, 3, 4))
	mustOK(t, ts.register(t, "r", obj.key, 0, 4096), "register")
	ts.srv.shm.mu.Lock()
	region := ts.srv.shm.regions["r"].data
	ts.srv.shm.mu.Unlock()
	for _, tt := range []struct {
		off  int
		view bool
	}{{64, true}, {129, false}} {
		r := ts.do(t, "POST", "/v2/models/policy/infer", []byte(fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,4],
			"parameters":{"shared_memory_region":"r","shared_memory_offset":%d,"shared_memory_byte_size":16}}],"outputs":[{"name":"action"}]}`, tt.off)))
		if r.status != 200 || !strings.Contains(string(r.body), `"data":[2,4,6,8]`) {
			t.Fatalf("offset %d: %d %s", tt.off, r.status, r.body)
		}
		if got := seen.Load() == &region[tt.off]; got != tt.view {
			t.Errorf("offset %d: input is a view of the mapping: %v, want %v", tt.off, got, tt.view)
		}
	}
}
