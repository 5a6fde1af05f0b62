package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unsafe"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
)

// Triton's system shared memory extension (docs/api.md, Shared memory). A client creates a
// POSIX shared memory object (shm_open: a file of /dev/shm), registers a window of it as a
// named region, and names the region in the parameters of an input or a requested output:
//
//	"shared_memory_region": the region's name (required)
//	"shared_memory_byte_size": the tensor's bytes (required)
//	"shared_memory_offset": where in the region the tensor starts (optional, 0)
//
// An input is then read from the region (zero copy: the engine reads the mapping, which is
// not Go memory, so it goes to C as it is) instead of "data"/binary data/contents, and an
// output is written into it, its response entry carrying no data but the region in its
// parameters. Every bound is checked without overflow: the region inside the object (fstat)
// at register, the tensor inside the region and its byte size equal to what its shape and
// datatype take (an input) or at least that (an output) on every request. A request holds
// the regions it names until it ends: a region unregistered meanwhile is unmapped when its
// last request releases it. The number and total bytes of regions are bounded
// (SharedMemoryOptions).
//
// Routes (HTTP) and calls (gRPC), with the admin rule of docs/security.md:
//
//	GET  /v2/systemsharedmemory[/region/{name}]/status       SystemSharedMemoryStatus      token when one is configured
//	POST /v2/systemsharedmemory/region/{name}/register       SystemSharedMemoryRegister    authorize (as repository load)
//	POST /v2/systemsharedmemory[/region/{name}]/unregister   SystemSharedMemoryUnregister  authorize
//
// Registering maps host memory that the server's user can open read-write into the server,
// which reads it into models and writes outputs into it: the calls that do it are operator
// calls, as repository load is.

// SharedMemoryOptions configure the system shared memory extension (config shared_memory).
type SharedMemoryOptions struct {
	// Enabled serves the extension; off, its routes, calls and parameters answer 400.
	Enabled bool
	// MaxRegions bounds the regions registered at once (default 64).
	MaxRegions int
	// MaxBytes bounds the byte_size of all regions together (default 1 GiB).
	MaxBytes int64
	// Dir is where the objects are (default /dev/shm, where glibc's shm_open puts them).
	Dir string
	// CUDA opens CUDA IPC handles for the CUDA shared memory extension (cudashm.go): the
	// server's runtime (*bridge.Runtime), nil when the server has none. The extension is
	// usable when it has a cuda backend with a device.
	CUDA CUDARuntime
}

// errShmOff answers anything naming shared memory while the extension is off.
var errShmOff = badRequest("the shared-memory extension is not enabled on this server (shared_memory.enabled: false)")

// shmRegistry holds the registered regions. Safe for concurrent use.
type shmRegistry struct {
	opts    SharedMemoryOptions
	mu      sync.Mutex
	regions map[string]*shmRegion
	total   uint64 // byte_size of the regions registered
}

// shmRegion is a registered region: its window of the object, mapped. refs counts the
// requests holding it (under the registry's mutex); once unregistered (gone) the last one to
// release it unmaps it.
type shmRegion struct {
	name, key    string
	offset, size uint64
	mapping      []byte // the whole mapping, from the page below offset
	data         []byte // the region: size bytes of mapping
	refs         int
	gone         bool
	// A CUDA region (cudashm.go): the mapping of the client's device allocation and its
	// device; mapping and data are nil and every access copies through cuda.
	cuda   *bridge.CudaIPC
	device int
}

func newShmRegistry(o SharedMemoryOptions) *shmRegistry {
	if o.MaxRegions <= 0 {
		o.MaxRegions = 64
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	if o.Dir == "" {
		o.Dir = "/dev/shm"
	}
	return &shmRegistry{opts: o, regions: map[string]*shmRegion{}}
}

// within reports whether [off, off+size) lies inside [0, total), without overflow.
func within(off, size, total uint64) bool { return off <= total && size <= total-off }

// shmKeyPath is the file of a POSIX shared memory key ("/name" or "name": one path element).
func (g *shmRegistry) shmKeyPath(key string) (string, error) {
	name := strings.TrimPrefix(key, "/")
	if name == "" || len(name) > 255 || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") {
		return "", badRequest(`"key" %q is not a POSIX shared memory name: "/name", one path element of at most 255 bytes`, clip(key, 64))
	}
	return g.opts.Dir + "/" + name, nil
}

// register maps size bytes at offset of the object key as region name.
func (g *shmRegistry) register(name, key string, offset, size uint64) error {
	if !g.opts.Enabled {
		return errShmOff
	}
	if name == "" || len(name) > maxIDLen {
		return badRequest("region name must be 1 to %d bytes, got %d", maxIDLen, len(name))
	}
	if size == 0 {
		return badRequest(`region %q: "byte_size" must be positive`, name)
	}
	path, err := g.shmKeyPath(key)
	if err != nil {
		return err
	}
	if err := g.admit(name, size); err != nil {
		return err
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0) // NONBLOCK: a FIFO planted there never blocks the call
	if err != nil {
		return badRequest("region %q: cannot open shared memory object %q read-write: %v", name, key, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("region %q: fstat %q: %w", name, key, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return badRequest("region %q: %q is not a shared memory object", name, key)
	}
	if !within(offset, size, uint64(st.Size)) {
		return badRequest(`region %q: "offset" %d + "byte_size" %d runs past the end of shared memory object %q (%d bytes)`,
			name, offset, size, key, st.Size)
	}
	page := uint64(os.Getpagesize())
	start := offset &^ (page - 1)
	length := offset - start + size // <= st.Size: fits an int
	m, err := unix.Mmap(fd, int64(start), int(length), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return badRequest("region %q: cannot map %d bytes of %q at offset %d: %v", name, size, key, offset, err)
	}
	rg := &shmRegion{name: name, key: key, offset: offset, size: size, mapping: m,
		data: m[offset-start : offset-start+size : offset-start+size]}
	g.mu.Lock()
	if err := g.admitLocked(name, size); err != nil { // a register of the same name or over the bounds meanwhile
		g.mu.Unlock()
		unix.Munmap(m)
		return err
	}
	g.regions[name] = rg
	g.total += size
	g.mu.Unlock()
	return nil
}

func (g *shmRegistry) admit(name string, size uint64) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.admitLocked(name, size)
}

func (g *shmRegistry) admitLocked(name string, size uint64) error {
	if _, ok := g.regions[name]; ok {
		return badRequest("region %q is already registered: unregister it first", name)
	}
	if len(g.regions) >= g.opts.MaxRegions {
		return badRequest("region %q: %d regions are registered, the most shared_memory.max_regions allows", name, len(g.regions))
	}
	if max := uint64(g.opts.MaxBytes); size > max || g.total > max-size {
		return badRequest(`region %q: "byte_size" %d with the %d bytes registered is more than shared_memory.max_bytes (%d)`,
			name, size, g.total, max)
	}
	return nil
}

// unregister removes system region name ("" every system region). Unknown names are not an
// error (as Triton). A region held by a request stays mapped until the request releases it.
func (g *shmRegistry) unregister(name string) error { return g.unregisterKind(name, false) }

// unregisterKind removes region name ("" every region) of one kind: CUDA (cuda) or system.
func (g *shmRegistry) unregisterKind(name string, cuda bool) error {
	if !g.opts.Enabled {
		return errShmOff
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for n, rg := range g.regions {
		if name != "" && n != name || (rg.cuda != nil) != cuda {
			continue
		}
		delete(g.regions, n)
		g.total -= rg.size
		rg.gone = true
		if rg.refs == 0 {
			rg.unmap()
		}
	}
	return nil
}

// close unmaps every region once the server has answered its last request (Shutdown).
func (g *shmRegistry) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	for n, rg := range g.regions {
		delete(g.regions, n)
		g.total -= rg.size
		rg.gone = true
		if rg.refs == 0 {
			rg.unmap()
		}
	}
}

func (rg *shmRegion) unmap() {
	if rg.cuda != nil {
		rg.cuda.Close()
		rg.cuda = nil
	}
	if rg.mapping != nil {
		unix.Munmap(rg.mapping)
		rg.mapping, rg.data = nil, nil
	}
}

// status lists region name ("" every region), by name; an unknown name is 404.
func (g *shmRegistry) status(name string) ([]shmRegionStatus, error) {
	if !g.opts.Enabled {
		return nil, errShmOff
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []shmRegionStatus
	for n, rg := range g.regions {
		if rg.cuda == nil && (name == "" || n == name) {
			out = append(out, shmRegionStatus{Name: rg.name, Key: rg.key, Offset: rg.offset, ByteSize: rg.size})
		}
	}
	if name != "" && len(out) == 0 {
		return nil, &statusError{http.StatusNotFound, fmt.Sprintf("shared memory region %q is not registered", name)}
	}
	slices.SortFunc(out, func(a, b shmRegionStatus) int { return strings.Compare(a.Name, b.Name) })
	return out, nil
}

// shmRegionStatus is an element of the HTTP status answer.
type shmRegionStatus struct {
	Name     string `json:"name"`
	Key      string `json:"key"`
	Offset   uint64 `json:"offset"`
	ByteSize uint64 `json:"byte_size"`
}

// acquire holds region name for a request.
func (g *shmRegistry) acquire(name string) (*shmRegion, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rg, ok := g.regions[name]
	if ok {
		rg.refs++
	}
	return rg, ok
}

// release drops a request's hold of rg; the last hold of an unregistered region unmaps it.
func (g *shmRegistry) release(rg *shmRegion) {
	g.mu.Lock()
	defer g.mu.Unlock()
	rg.refs--
	if rg.refs == 0 && rg.gone {
		rg.unmap()
	}
}

// ---- a request's use of shared memory ----

// shmRef is what a tensor's parameters name: a region and a window of it.
type shmRef struct {
	region       string
	offset, size uint64
}

// shmOut is where an output goes: a window of a held region (rg nil: inline).
type shmOut struct {
	rg           *shmRegion
	offset, size uint64
}

// shmUse is the shared memory of one request: the regions it holds (released by release)
// and, per entry of inferRequest.outputs, where that output goes.
type shmUse struct {
	reg  *shmRegistry // the server's; nil: the extension is off
	held []*shmRegion
	outs []shmOut
}

func (u *shmUse) reset() {
	u.releaseAll()
	u.outs = u.outs[:0]
}

func (u *shmUse) releaseAll() {
	for i, rg := range u.held {
		u.reg.release(rg)
		u.held[i] = nil
	}
	u.held = u.held[:0]
	for i := range u.outs {
		u.outs[i] = shmOut{}
	}
}

// view holds ref's region and returns its window for the tensor kind ("input", "output") name.
func (u *shmUse) view(kind, name string, ref shmRef) (*shmRegion, []byte, error) {
	if u.reg == nil || !u.reg.opts.Enabled {
		return nil, nil, badRequest("%s %q: %s", kind, name, errShmOff.Error())
	}
	rg, ok := u.reg.acquire(ref.region)
	if !ok {
		return nil, nil, badRequest("%s %q: shared memory region %q is not registered", kind, name, ref.region)
	}
	u.held = append(u.held, rg)
	if !within(ref.offset, ref.size, rg.size) {
		return nil, nil, badRequest(`%s %q: "shared_memory_offset" %d + "shared_memory_byte_size" %d runs past the end of shared memory region %q (%d bytes)`,
			kind, name, ref.offset, ref.size, ref.region, rg.size)
	}
	if rg.cuda != nil { // device memory: no view; copied by cudaRead/cudaWrite
		return rg, nil, nil
	}
	return rg, rg.data[ref.offset : ref.offset+ref.size : ref.offset+ref.size], nil
}

// shmInput takes input k of the given shape from the region ref names: a view of the mapping
// (the engine reads it in place) when aligned for the datatype, else a copy.
func (r *inferRequest) shmInput(k int, info *bridge.IOInfo, shape []int64, ref shmRef) error {
	if info.DType.Size() == 0 {
		return badRequest("input %q: datatype %s cannot be passed in shared memory", info.Name, info.DType)
	}
	want, _ := bridge.ByteSize(info.DType, shape)
	if ref.size != uint64(want) {
		return badRequest(`input %q: "shared_memory_byte_size" is %d, but shape %s of %s takes %d bytes`,
			info.Name, ref.size, formatShape(shape), info.DType, want)
	}
	rg, data, err := r.shm.view("input", info.Name, ref)
	if err != nil {
		return err
	}
	if rg.cuda != nil || info.DType == bridge.Bool || len(data) > 0 && uintptr(unsafe.Pointer(&data[0]))%uintptr(info.DType.Size()) != 0 {
		n := int(ref.size) // == len(data) for a system region; a CUDA region gives no view
		buf := r.bufs[k]
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if rg.cuda != nil {
			err = cudaRead(rg, ref.offset, buf)
		} else {
			err = shmCopy(rg, buf, data)
		}
		if err != nil {
			return err
		}
		r.bufs[k] = buf
		data = buf
		if info.DType == bridge.Bool { // checked on the copy: the client may write the region meanwhile
			for i, c := range data {
				if c > 1 {
					return badRequest("input %q: element %d: a BOOL byte must be 0 or 1, got %d", info.Name, i, c)
				}
			}
		}
	}
	r.tensors[k] = bridge.Tensor{DType: info.DType, Shape: shape, Data: data}
	r.given[k] = true
	return nil
}

// shmOutput records that the output just appended to r.outputs goes to ref's region (ok
// false: inline). Its size is checked against the output once it is known (writeShm).
func (r *inferRequest) shmOutput(name string, ref shmRef, ok bool) error {
	for len(r.shm.outs) < len(r.outputs)-1 {
		r.shm.outs = append(r.shm.outs, shmOut{})
	}
	if !ok {
		r.shm.outs = append(r.shm.outs, shmOut{})
		return nil
	}
	rg, _, err := r.shm.view("output", name, ref)
	if err != nil {
		return err
	}
	r.shm.outs = append(r.shm.outs, shmOut{rg: rg, offset: ref.offset, size: ref.size})
	return nil
}

// outShm is where the i-th output of the response goes; nil: inline.
func (r *inferRequest) outShm(i int) *shmOut {
	if i < len(r.shm.outs) && r.shm.outs[i].rg != nil {
		return &r.shm.outs[i]
	}
	return nil
}

// writeShm writes output t into o: 400 naming the output when the window is too small.
func writeShm(name string, t *bridge.Tensor, o *shmOut) error {
	if err := checkOutput(name, t); err != nil {
		return err
	}
	if need := uint64(len(t.Data)); need > o.size {
		return badRequest(`output %q: needs %d bytes (shape %s of %s), but "shared_memory_byte_size" gives %d in region %q`,
			name, need, formatShape(t.Shape), t.DType, o.size, o.rg.name)
	}
	if o.rg.cuda != nil {
		return cudaWrite(o.rg, o.offset, t.Data)
	}
	return shmCopy(o.rg, o.rg.data[o.offset:o.offset+uint64(len(t.Data))], t.Data)
}

// shmCopy copies between a mapping and memory. An object the client truncated under its
// mapping faults (SIGBUS): that is the client's error, answered, not a crash of the server.
func shmCopy(rg *shmRegion, dst, src []byte) (err error) {
	old := debug.SetPanicOnFault(true)
	defer func() {
		debug.SetPanicOnFault(old)
		if v := recover(); v != nil {
			err = badRequest("shared memory region %q: object %q faulted (truncated under its mapping?): %v", rg.name, rg.key, v)
		}
	}()
	copy(dst, src)
	return nil
}

// appendShmTensor appends the response entry of an output written to shared memory:
// {"name","datatype","shape","parameters":{"shared_memory_region","shared_memory_offset","shared_memory_byte_size"}}
// with the bytes written, and no data.
func appendShmTensor(b []byte, name string, t *bridge.Tensor, o *shmOut) ([]byte, error) {
	if err := writeShm(name, t, o); err != nil {
		return b, err
	}
	b = appendTensorHead(b, name, t)
	b = append(b, `],"parameters":{"shared_memory_region":`...)
	b = appendString(b, o.rg.name)
	b = append(b, `,"shared_memory_offset":`...)
	b = strconv.AppendUint(b, o.offset, 10)
	b = append(b, `,"shared_memory_byte_size":`...)
	b = strconv.AppendInt(b, int64(len(t.Data)), 10)
	return append(b, "}}"...), nil
}

// shmParams names the tensor parameters of the extension.
var shmParams = [...]string{"shared_memory_region", "shared_memory_offset", "shared_memory_byte_size"}

// shmRefJSON reads the shared memory parameters of a tensor's JSON "parameters" (ok false:
// none given). kind ("input", "output") and name name the tensor for errors.
func (r *inferRequest) shmRefJSON(params jsonValue, kind, name string) (ref shmRef, ok bool, err error) {
	var vals [3]jsonValue // one pass over the members (the first of a repeated key counts, as get)
	for it := params.iter(); ; {
		k, v, more := it.member()
		if !more {
			break
		}
		if raw := k.raw(); !hasEscape(raw) && (len(raw) < len("shared_memory_") || string(raw[:len("shared_memory_")]) != "shared_memory_") {
			continue // not one of ours: skip the three comparisons
		}
		for i, p := range shmParams {
			if vals[i] == nil && k.is(p) {
				vals[i], ok = v, true
			}
		}
	}
	if !ok {
		return ref, false, nil
	}
	if r.shm.reg == nil || !r.shm.reg.opts.Enabled {
		return ref, false, badRequest("%s: parameter %q: %s", shmWhat(kind, name), shmFirst(vals[:]), errShmOff.Error())
	}
	if vals[0] == nil || vals[2] == nil {
		return ref, false, badRequest(`%s: "shared_memory_region" and "shared_memory_byte_size" go together; "shared_memory_offset" is optional`, shmWhat(kind, name))
	}
	if vals[0].kind() != jsonString {
		return ref, false, badRequest(`%s: "shared_memory_region" must be a string, got %s`, shmWhat(kind, name), vals[0].kind())
	}
	if raw := vals[0].raw(); !hasEscape(raw) && len(raw) <= maxIDLen {
		ref.region = tokenString(raw) // a view of the body: used only while the request is decoded
	} else {
		region, fine := unquoteMax(nil, vals[0], maxIDLen)
		if !fine {
			return ref, false, badRequest(`%s: "shared_memory_region" is longer than %d bytes`, shmWhat(kind, name), maxIDLen)
		}
		ref.region = string(region)
	}
	for i, dst := range [...]*uint64{nil, &ref.offset, &ref.size} {
		if dst == nil || vals[i] == nil {
			continue
		}
		tok, err := numberToken(vals[i])
		if err != nil || !isInteger(tok) || tok[0] == '-' {
			return ref, false, badRequest("%s: %q must be a non-negative integer", shmWhat(kind, name), shmParams[i])
		}
		if *dst, err = strconv.ParseUint(tokenString(tok), 10, 64); err != nil {
			return ref, false, badRequest("%s: %q %s is out of range", shmWhat(kind, name), shmParams[i], clipBytes(tok, 32))
		}
	}
	return ref, true, nil
}

// shmWhat names a tensor in an error (formatted only then: a request allocates nothing for it).
func shmWhat(kind, name string) string { return kind + " " + strconv.Quote(name) }

func shmFirst(vals []jsonValue) string {
	for i, v := range vals {
		if v != nil {
			return shmParams[i]
		}
	}
	return ""
}

// shmRefGRPC reads the shared memory parameters of a gRPC tensor (ok false: none given).
func (u *shmUse) shmRefGRPC(params map[string]*inference.InferParameter, kind, name string) (ref shmRef, ok bool, err error) {
	var ps [3]*inference.InferParameter
	first := ""
	for i, p := range shmParams {
		if v, has := params[p]; has {
			ps[i], ok = v, true
			if first == "" {
				first = p
			}
		}
	}
	if !ok {
		return ref, false, nil
	}
	if u.reg == nil || !u.reg.opts.Enabled {
		return ref, false, badRequest("%s: parameter %q: %s", shmWhat(kind, name), first, errShmOff.Error())
	}
	if ps[0] == nil || ps[2] == nil {
		return ref, false, badRequest(`%s: "shared_memory_region" and "shared_memory_byte_size" go together; "shared_memory_offset" is optional`, shmWhat(kind, name))
	}
	s, isStr := ps[0].GetParameterChoice().(*inference.InferParameter_StringParam)
	if !isStr {
		return ref, false, badRequest(`%s: parameter "shared_memory_region" must be a string_param, got %s`, shmWhat(kind, name), paramKind(ps[0]))
	}
	ref.region = s.StringParam
	for i, dst := range [...]*uint64{nil, &ref.offset, &ref.size} {
		if dst == nil || ps[i] == nil {
			continue
		}
		n, err := uintParam(shmParams[i], ps[i])
		if err != nil {
			return ref, false, fmt.Errorf("%s: %w", shmWhat(kind, name), err)
		}
		*dst = n
	}
	return ref, true, nil
}

// hasShmParam reports whether gRPC tensor parameters name shared memory.
func hasShmParam(params map[string]*inference.InferParameter) bool {
	for _, p := range shmParams {
		if _, ok := params[p]; ok {
			return true
		}
	}
	return false
}

// shmOutParams are the parameters of a gRPC output written to shared memory.
func shmOutParams(o *shmOut, n int) map[string]*inference.InferParameter {
	return map[string]*inference.InferParameter{
		"shared_memory_region":    {ParameterChoice: &inference.InferParameter_StringParam{StringParam: o.rg.name}},
		"shared_memory_offset":    {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(o.offset)}},
		"shared_memory_byte_size": {ParameterChoice: &inference.InferParameter_Int64Param{Int64Param: int64(n)}},
	}
}

// ---- routes and calls ----

// shmRoutes adds the HTTP routes of the extension.
func (s *Server) shmRoutes(get, post func(string, fasthttp.RequestHandler)) {
	get("/v2/systemsharedmemory/status", s.shmStatus)
	get("/v2/systemsharedmemory/region/{region}/status", s.shmStatus)
	post("/v2/systemsharedmemory/region/{region}/register", s.shmRegister)
	post("/v2/systemsharedmemory/unregister", s.shmUnregister(false))
	post("/v2/systemsharedmemory/region/{region}/unregister", s.shmUnregister(false))
}

func (s *Server) shmStatus(ctx *fasthttp.RequestCtx) { shmStatusOf(s, ctx, s.shm.status) }

// shmStatusOf answers GET .../status of the system or the CUDA extension: the regions that
// status lists (name "": all; the token when the extension is on), [] when none.
func shmStatusOf[T any](s *Server, ctx *fasthttp.RequestCtx, status func(name string) ([]T, error)) {
	if s.shm.opts.Enabled && !s.guarded(ctx) {
		return
	}
	name, _ := ctx.UserValue("region").(string)
	st, err := status(name)
	if err != nil {
		s.fail(ctx, err)
		return
	}
	if st == nil {
		st = []T{}
	}
	b, _ := json.Marshal(st)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// shmChangeAllowed gates an HTTP call that changes the shared-memory regions (register,
// unregister; system or CUDA): the extension must be on and the caller authorized as for the
// admin routes. On false the answer is written.
func (s *Server) shmChangeAllowed(ctx *fasthttp.RequestCtx, what string) bool {
	if !s.shm.opts.Enabled {
		s.fail(ctx, errShmOff)
		return false
	}
	return s.authorized(ctx, what)
}

// shmChangeAuthz is shmChangeAllowed for a gRPC call.
func (s *Server) shmChangeAuthz(ctx context.Context, what string) error {
	if !s.shm.opts.Enabled {
		return errShmOff
	}
	return s.authorize(what, authzOf(ctx))
}

func (s *Server) shmRegister(ctx *fasthttp.RequestCtx) {
	if !s.shmChangeAllowed(ctx, "shared-memory register") {
		return
	}
	name, _ := ctx.UserValue("region").(string)
	var body struct {
		Key      *string `json:"key"`
		Offset   uint64  `json:"offset"`
		ByteSize *uint64 `json:"byte_size"`
	}
	if err := json.Unmarshal(ctx.PostBody(), &body); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			s.fail(ctx, badRequest("register %q: %q must be %s", name, te.Field, map[bool]string{true: "a string", false: "a non-negative integer"}[te.Field == "key"]))
			return
		}
		s.fail(ctx, badRequest(`register %q: the body must be {"key": "/name", "offset": N, "byte_size": N}: %v`, name, err))
		return
	}
	if body.Key == nil || body.ByteSize == nil {
		s.fail(ctx, badRequest(`register %q: "key" and "byte_size" are required`, name))
		return
	}
	if err := s.shm.register(name, *body.Key, body.Offset, *body.ByteSize); err != nil {
		s.fail(ctx, err)
		return
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
}

// shmUnregister answers POST .../unregister of the system (cuda false) or the CUDA extension:
// the region named in the path, or every region of that kind.
func (s *Server) shmUnregister(cuda bool) fasthttp.RequestHandler {
	return func(ctx *fasthttp.RequestCtx) {
		if !s.shmChangeAllowed(ctx, "shared-memory unregister") {
			return
		}
		name, _ := ctx.UserValue("region").(string)
		if err := s.shm.unregisterKind(name, cuda); err != nil {
			s.fail(ctx, err)
			return
		}
		ctx.SetStatusCode(fasthttp.StatusOK)
	}
}

// SystemSharedMemoryStatus lists the regions (name "": all), as GET .../status.
func (g *grpcService) SystemSharedMemoryStatus(ctx context.Context, req *inference.SystemSharedMemoryStatusRequest) (*inference.SystemSharedMemoryStatusResponse, error) {
	s := g.s
	if s.shm.opts.Enabled {
		if err := s.checkToken(authzOf(ctx)); err != nil {
			return nil, err
		}
	}
	st, err := s.shm.status(req.Name)
	if err != nil {
		return nil, err
	}
	resp := &inference.SystemSharedMemoryStatusResponse{Regions: map[string]*inference.SystemSharedMemoryStatusResponse_RegionStatus{}}
	for _, r := range st {
		resp.Regions[r.Name] = &inference.SystemSharedMemoryStatusResponse_RegionStatus{Name: r.Name, Key: r.Key, Offset: r.Offset, ByteSize: r.ByteSize}
	}
	return resp, nil
}

// SystemSharedMemoryRegister registers a region, as POST .../register.
func (g *grpcService) SystemSharedMemoryRegister(ctx context.Context, req *inference.SystemSharedMemoryRegisterRequest) (*inference.SystemSharedMemoryRegisterResponse, error) {
	s := g.s
	if err := s.shmChangeAuthz(ctx, "shared-memory register"); err != nil {
		return nil, err
	}
	if err := s.shm.register(req.Name, req.Key, req.Offset, req.ByteSize); err != nil {
		return nil, err
	}
	return &inference.SystemSharedMemoryRegisterResponse{}, nil
}

// SystemSharedMemoryUnregister unregisters a region (name "": all), as POST .../unregister.
func (g *grpcService) SystemSharedMemoryUnregister(ctx context.Context, req *inference.SystemSharedMemoryUnregisterRequest) (*inference.SystemSharedMemoryUnregisterResponse, error) {
	s := g.s
	if err := s.shmChangeAuthz(ctx, "shared-memory unregister"); err != nil {
		return nil, err
	}
	if err := s.shm.unregister(req.Name); err != nil {
		return nil, err
	}
	return &inference.SystemSharedMemoryUnregisterResponse{}, nil
}
