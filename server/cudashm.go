package server

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
)

// Triton's CUDA shared memory extension (docs/api.md, "CUDA shared memory"). A client on the
// same host allocates device memory, takes its CUDA IPC handle (cudaIpcGetMemHandle) and
// registers it as a named region: {"raw_handle": {"b64": "<the handle's 64 bytes>"},
// "device_id": N, "byte_size": N}. The server opens the handle on that device through the
// cuda backend (bridge.Runtime.OpenCudaIPC: cudaIpcOpenMemHandle) and keeps the mapping until
// the region is unregistered and no request holds it.
//
// CUDA regions live in the one region table of the system extension (shm.go): one name space
// (a name is registered once, whatever its kind, as Triton), the same limits
// (shared_memory.max_regions, max_bytes), the same bounds checks of a tensor's
// shared_memory_offset/byte_size against the region, the same reference counts (unregister while
// a request uses a region is safe) and the same tensor parameters. What differs is the access:
// an input is copied device->host into the request's buffer (cudaMemcpy through the mapping)
// and an output host->device once computed; the engine itself still runs on host tensors. A
// run that reads and writes the mapping directly (bridge.Context.RunDevice, pd_context_run_device)
// exists below the server but is not yet wired into the batching path.
//
// Routes (HTTP) and calls (gRPC), with the admin rule of the system extension:
//
//	GET  /v2/cudasharedmemory/status, /v2/cudasharedmemory/region/{r}/status     CudaSharedMemoryStatus
//	POST /v2/cudasharedmemory/region/{r}/register                                CudaSharedMemoryRegister
//	POST /v2/cudasharedmemory/unregister, /v2/cudasharedmemory/region/{r}/unregister  CudaSharedMemoryUnregister

// CUDARuntime opens CUDA IPC handles: *bridge.Runtime.
type CUDARuntime interface {
	OpenCudaIPC(device int, handle []byte) (*bridge.CudaIPC, error)
	Devices(backend string) ([]bridge.Device, error)
	Backends() []bridge.BackendInfo
}

// cudaUsable reports "" when CUDA regions can be registered, else why not.
func (g *shmRegistry) cudaUsable() string {
	if !g.opts.Enabled {
		return errShmOff.Error()
	}
	if g.opts.CUDA == nil {
		return "CUDA shared memory is unavailable: this server has no native runtime"
	}
	for _, b := range g.opts.CUDA.Backends() {
		if b.Name != "cuda" {
			continue
		}
		if !b.Available {
			return "CUDA shared memory is unavailable: the cuda backend did not load: " + b.Reason
		}
		if d, err := g.opts.CUDA.Devices("cuda"); err != nil || len(d) == 0 {
			return "CUDA shared memory is unavailable: the cuda backend sees no device"
		}
		return ""
	}
	return "CUDA shared memory is unavailable: this server has no cuda backend"
}

// registerCUDA opens handle on device as region name of size bytes.
func (g *shmRegistry) registerCUDA(name string, handle []byte, device int64, size uint64) error {
	if why := g.cudaUsable(); why != "" {
		return badRequest("register %q: %s", name, why)
	}
	if name == "" || len(name) > maxIDLen {
		return badRequest("region name must be 1 to %d bytes, got %d", maxIDLen, len(name))
	}
	if size == 0 {
		return badRequest(`region %q: "byte_size" must be positive`, name)
	}
	if len(handle) != bridge.CudaIPCHandleSize {
		return badRequest(`region %q: "raw_handle" must be a CUDA IPC memory handle of %d bytes, got %d`, name, bridge.CudaIPCHandleSize, len(handle))
	}
	if device < 0 || device > 1<<20 {
		return badRequest(`region %q: "device_id" %d is not a CUDA device`, name, device)
	}
	if err := g.admit(name, size); err != nil {
		return err
	}
	m, err := g.opts.CUDA.OpenCudaIPC(int(device), handle)
	if err != nil {
		var be *bridge.Error
		if errors.As(err, &be) && be.Code != bridge.CodeInternal {
			return badRequest("region %q: cannot open the CUDA IPC handle on device %d: %s", name, device, be.Msg)
		}
		return fmt.Errorf("region %q: cannot open the CUDA IPC handle on device %d: %w", name, device, err)
	}
	rg := &shmRegion{name: name, size: size, cuda: m, device: int(device)}
	g.mu.Lock()
	if err := g.admitLocked(name, size); err != nil {
		g.mu.Unlock()
		m.Close()
		return err
	}
	g.regions[name] = rg
	g.total += size
	g.mu.Unlock()
	return nil
}

// cudaRegionStatus is an element of the HTTP status answer.
type cudaRegionStatus struct {
	Name     string `json:"name"`
	DeviceID uint64 `json:"device_id"`
	ByteSize uint64 `json:"byte_size"`
}

// statusCUDA lists CUDA region name ("" every one), by name; an unknown name is 404.
func (g *shmRegistry) statusCUDA(name string) ([]cudaRegionStatus, error) {
	if !g.opts.Enabled {
		return nil, errShmOff
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []cudaRegionStatus
	for n, rg := range g.regions {
		if rg.cuda != nil && (name == "" || n == name) {
			out = append(out, cudaRegionStatus{Name: rg.name, DeviceID: uint64(rg.device), ByteSize: rg.size})
		}
	}
	if name != "" && len(out) == 0 {
		return nil, &statusError{http.StatusNotFound, fmt.Sprintf("CUDA shared memory region %q is not registered", name)}
	}
	slices.SortFunc(out, func(a, b cudaRegionStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// cudaRead copies the window at off of a held CUDA region into dst (bounds checked by view).
func cudaRead(rg *shmRegion, off uint64, dst []byte) error {
	if err := rg.cuda.Read(off, dst); err != nil {
		return badRequest("CUDA shared memory region %q: reading %d bytes at offset %d: %v", rg.name, len(dst), off, err)
	}
	return nil
}

// cudaWrite copies src to the window at off of a held CUDA region (bounds checked by writeShm).
func cudaWrite(rg *shmRegion, off uint64, src []byte) error {
	if err := rg.cuda.Write(off, src); err != nil {
		return badRequest("CUDA shared memory region %q: writing %d bytes at offset %d: %v", rg.name, len(src), off, err)
	}
	return nil
}

// ---- routes and calls ----

func (s *Server) cudaShmRoutes(get, post func(string, fasthttp.RequestHandler)) {
	get("/v2/cudasharedmemory/status", s.cudaShmStatus)
	get("/v2/cudasharedmemory/region/{region}/status", s.cudaShmStatus)
	post("/v2/cudasharedmemory/region/{region}/register", s.cudaShmRegister)
	post("/v2/cudasharedmemory/unregister", s.shmUnregister(true))
	post("/v2/cudasharedmemory/region/{region}/unregister", s.shmUnregister(true))
}

func (s *Server) cudaShmStatus(ctx *fasthttp.RequestCtx) { shmStatusOf(s, ctx, s.shm.statusCUDA) }

func (s *Server) cudaShmRegister(ctx *fasthttp.RequestCtx) {
	if !s.shmChangeAllowed(ctx, "shared-memory register") {
		return
	}
	name, _ := ctx.UserValue("region").(string)
	var body struct {
		RawHandle *struct {
			B64 *string `json:"b64"`
		} `json:"raw_handle"`
		DeviceID *int64  `json:"device_id"`
		ByteSize *uint64 `json:"byte_size"`
	}
	const shape = `{"raw_handle": {"b64": "<base64 of the cudaIpcMemHandle_t>"}, "device_id": N, "byte_size": N}`
	if err := json.Unmarshal(ctx.PostBody(), &body); err != nil {
		s.fail(ctx, badRequest("register %q: the body must be %s: %v", name, shape, err))
		return
	}
	if body.RawHandle == nil || body.RawHandle.B64 == nil || body.DeviceID == nil || body.ByteSize == nil {
		s.fail(ctx, badRequest(`register %q: "raw_handle" (with "b64"), "device_id" and "byte_size" are required: %s`, name, shape))
		return
	}
	handle, err := base64.StdEncoding.DecodeString(*body.RawHandle.B64)
	if err != nil {
		s.fail(ctx, badRequest(`register %q: "raw_handle.b64" is not base64: %v`, name, err))
		return
	}
	if err := s.shm.registerCUDA(name, handle, *body.DeviceID, *body.ByteSize); err != nil {
		s.fail(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// CudaSharedMemoryStatus lists the CUDA regions (name "": all), as GET .../status.
func (g *grpcService) CudaSharedMemoryStatus(ctx context.Context, req *inference.CudaSharedMemoryStatusRequest) (*inference.CudaSharedMemoryStatusResponse, error) {
	s := g.s
	if s.shm.opts.Enabled {
		if err := s.checkToken(authzOf(ctx)); err != nil {
			return nil, err
		}
	}
	st, err := s.shm.statusCUDA(req.Name)
	if err != nil {
		return nil, err
	}
	resp := &inference.CudaSharedMemoryStatusResponse{Regions: map[string]*inference.CudaSharedMemoryStatusResponse_RegionStatus{}}
	for _, r := range st {
		resp.Regions[r.Name] = &inference.CudaSharedMemoryStatusResponse_RegionStatus{Name: r.Name, DeviceId: r.DeviceID, ByteSize: r.ByteSize}
	}
	return resp, nil
}

// CudaSharedMemoryRegister registers a CUDA region, as POST .../register.
func (g *grpcService) CudaSharedMemoryRegister(ctx context.Context, req *inference.CudaSharedMemoryRegisterRequest) (*inference.CudaSharedMemoryRegisterResponse, error) {
	s := g.s
	if err := s.shmChangeAuthz(ctx, "shared-memory register"); err != nil {
		return nil, err
	}
	if err := s.shm.registerCUDA(req.Name, req.RawHandle, req.DeviceId, req.ByteSize); err != nil {
		return nil, err
	}
	return &inference.CudaSharedMemoryRegisterResponse{}, nil
}

// CudaSharedMemoryUnregister unregisters a CUDA region (name "": all), as POST .../unregister.
func (g *grpcService) CudaSharedMemoryUnregister(ctx context.Context, req *inference.CudaSharedMemoryUnregisterRequest) (*inference.CudaSharedMemoryUnregisterResponse, error) {
	s := g.s
	if err := s.shmChangeAuthz(ctx, "shared-memory unregister"); err != nil {
		return nil, err
	}
	if err := s.shm.unregisterKind(req.Name, true); err != nil {
		return nil, err
	}
	return &inference.CudaSharedMemoryUnregisterResponse{}, nil
}
