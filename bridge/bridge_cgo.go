//go:build cgo

package bridge

/*
#cgo CFLAGS: -I${SRCDIR}/../csrc/include
#cgo LDFLAGS: -L${SRCDIR}/../lib -lpolicyd -Wl,-rpath,${SRCDIR}/../lib -Wl,-rpath,$ORIGIN/../lib
#include <stdlib.h>
#include "policyd.h"

extern void pdGoLog(void* user, pd_log_level level, char* msg);
static void pd_go_log_trampoline(void* user, pd_log_level level, const char* msg) {
	pdGoLog(user, level, (char*)msg);
}
static void pd_install_go_logger(int on) {
	pd_set_log_callback(on ? pd_go_log_trampoline : NULL, NULL);
}
*/
import "C"

import (
	"fmt"
	"maps"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

func init() {
	var major, minor C.uint32_t
	C.pd_api_version(&major, &minor)
	if major != C.PD_API_VERSION_MAJOR {
		// A library of another major version would misread every struct we pass it.
		libMismatch = fmt.Errorf("bridge: libpolicyd ABI %d.%d, this binary needs %d.x",
			major, minor, C.PD_API_VERSION_MAJOR)
	}
}

var libMismatch error

// Available reports whether the native library is linked and of a compatible ABI version.
func Available() error { return libMismatch }

// APIVersion returns the ABI version of the linked library.
func APIVersion() (major, minor uint32) {
	var ma, mi C.uint32_t
	C.pd_api_version(&ma, &mi)
	return uint32(ma), uint32(mi)
}

// LibraryVersion returns the version string of the linked library.
func LibraryVersion() string { return C.GoString(C.pd_version_string()) }

var (
	logMu   sync.RWMutex
	logHook func(LogLevel, string)
)

// SetLogger routes every native log line to fn (nil restores the library's default stderr
// sink for warnings and errors). fn may be called from any thread, concurrently.
func SetLogger(fn func(LogLevel, string)) {
	logMu.Lock()
	logHook = fn
	logMu.Unlock()
	on := C.int(0)
	if fn != nil {
		on = 1
	}
	C.pd_install_go_logger(on)
}

//export pdGoLog
func pdGoLog(_ unsafe.Pointer, level C.pd_log_level, msg *C.char) {
	logMu.RLock()
	fn := logHook
	logMu.RUnlock()
	if fn != nil {
		fn(LogLevel(level), C.GoString(msg))
	}
}

func leak(what string) {
	logMu.RLock()
	fn := logHook
	logMu.RUnlock()
	if fn != nil {
		fn(LogWarn, "bridge: "+what+" was garbage-collected without Close (leaked native memory)")
	}
}

// toError converts and frees a pd_error; nil stays nil.
func toError(e *C.pd_error) error {
	if e == nil {
		return nil
	}
	err := &Error{Code: Code(C.pd_error_get_code(e)), Msg: C.GoString(C.pd_error_get_message(e))}
	C.pd_error_free(e)
	return err
}

// Runtime is the backend registry of the native library. Safe for concurrent use.
type Runtime struct {
	mu      sync.RWMutex
	ptr     *C.pd_runtime
	cleanup runtime.Cleanup
}

// NewRuntime loads the backend plugins. backendDir overrides where they are looked for ("" =
// beside libpolicyd.so). A plugin that fails to load is listed by Backends with the reason.
func NewRuntime(backendDir string) (*Runtime, error) {
	if libMismatch != nil {
		return nil, libMismatch
	}
	var opts *C.pd_runtime_options
	if err := toError(C.pd_runtime_options_create(&opts)); err != nil {
		return nil, err
	}
	defer C.pd_runtime_options_destroy(opts)
	if backendDir != "" {
		cs := C.CString(backendDir)
		err := toError(C.pd_runtime_options_set_backend_dir(opts, cs))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			return nil, err
		}
	}
	r := &Runtime{}
	if err := toError(C.pd_runtime_create(opts, &r.ptr)); err != nil {
		return nil, err
	}
	r.cleanup = runtime.AddCleanup(r, func(string) { leak("Runtime") }, "")
	return r, nil
}

// Backends lists every backend the runtime knows of, loaded or not.
func (r *Runtime) Backends() []BackendInfo {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return nil
	}
	n := int(C.pd_runtime_backend_count(r.ptr))
	out := make([]BackendInfo, 0, n)
	for i := 0; i < n; i++ {
		var bi C.pd_backend_info
		if toError(C.pd_runtime_backend_info(r.ptr, C.int32_t(i), &bi)) != nil {
			continue
		}
		out = append(out, BackendInfo{
			Name: C.GoString(bi.name), Version: C.GoString(bi.version), Path: C.GoString(bi.path),
			Available: bi.available != 0, Reason: C.GoString(bi.reason),
		})
	}
	return out
}

// Devices lists the devices of the named backend ("cuda"), found when the runtime loaded it:
// none for cpu or a backend that did not load. An unknown name is a CodeNotFound error.
func (r *Runtime) Devices(backend string) ([]Device, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return nil, ErrClosed
	}
	cs := C.CString(backend)
	defer C.free(unsafe.Pointer(cs))
	var n C.int32_t
	if err := toError(C.pd_runtime_device_count(r.ptr, cs, &n)); err != nil {
		return nil, err
	}
	out := make([]Device, 0, int(n))
	for i := 0; i < int(n); i++ {
		var d C.pd_device_info
		if err := toError(C.pd_runtime_device_info(r.ptr, cs, C.int32_t(i), &d)); err != nil {
			return nil, err
		}
		out = append(out, Device{
			Ordinal: int(d.ordinal), Name: C.GoString(d.name), UUID: C.GoString(d.uuid),
			Target: C.GoString(d.target), CCMajor: int(d.cc_major), CCMinor: int(d.cc_minor),
			TotalMemory: uint64(d.total_memory),
		})
	}
	return out, nil
}

// Close releases the runtime. Idempotent.
func (r *Runtime) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ptr != nil {
		r.cleanup.Stop()
		C.pd_runtime_destroy(r.ptr)
		r.ptr = nil
	}
	return nil
}

// Engine is one model compiled for one backend. Safe for concurrent use; immutable.
type Engine struct {
	mu        sync.RWMutex
	ptr       *C.pd_engine
	backend   string
	inputs    []IOInfo
	outputs   []IOInfo
	batchable bool
	cleanup   runtime.Cleanup
}

// NewEngine imports, checks, optimizes and compiles an ONNX model. onnx is only read during
// the call.
func (r *Runtime) NewEngine(onnx []byte, o EngineOptions) (*Engine, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return nil, ErrClosed
	}
	if len(onnx) == 0 {
		return nil, &Error{Code: CodeInvalidArg, Msg: "empty model"}
	}
	var opts *C.pd_engine_options
	if err := toError(C.pd_engine_options_create(&opts)); err != nil {
		return nil, err
	}
	defer C.pd_engine_options_destroy(opts)
	if o.Backend != "" {
		cs := C.CString(o.Backend)
		err := toError(C.pd_engine_options_set_backend(opts, cs))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			return nil, err
		}
	}
	if o.Threads > 0 {
		if err := toError(C.pd_engine_options_set_threads(opts, C.int32_t(o.Threads))); err != nil {
			return nil, err
		}
	}
	if o.Name != "" {
		cs := C.CString(o.Name)
		err := toError(C.pd_engine_options_set_name(opts, cs))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			return nil, err
		}
	}
	if o.Device != 0 {
		if err := toError(C.pd_engine_options_set_device(opts, C.int32_t(o.Device))); err != nil {
			return nil, err
		}
	}
	if o.Profile {
		if err := toError(C.pd_engine_options_set_profiling(opts, 1)); err != nil {
			return nil, err
		}
	}
	if o.ModelDigest != "" {
		cs := C.CString(o.ModelDigest)
		err := toError(C.pd_engine_options_set_model_digest(opts, cs))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			return nil, err
		}
	}
	if len(o.Cache) > 0 {
		// Copied by the library during the call.
		if err := toError(C.pd_engine_options_set_cache(opts, unsafe.Pointer(&o.Cache[0]), C.size_t(len(o.Cache)))); err != nil {
			return nil, err
		}
	}
	if o.MinBatch != 0 || o.OptBatch != 0 || o.MaxBatch != 0 {
		err := toError(C.pd_engine_options_set_batch_profile(opts, C.int64_t(o.MinBatch), C.int64_t(o.OptBatch), C.int64_t(o.MaxBatch)))
		if err != nil {
			return nil, err
		}
	}
	for _, k := range slices.Sorted(maps.Keys(o.Params)) {
		ck, cv := C.CString(k), C.CString(o.Params[k])
		err := toError(C.pd_engine_options_set_param(opts, ck, cv))
		C.free(unsafe.Pointer(ck))
		C.free(unsafe.Pointer(cv))
		if err != nil {
			return nil, err
		}
	}
	if len(o.TimingCache) > 0 {
		// Copied by the library during the call.
		if err := toError(C.pd_engine_options_set_timing_cache(opts, unsafe.Pointer(&o.TimingCache[0]), C.size_t(len(o.TimingCache)))); err != nil {
			return nil, err
		}
	}
	if o.MaxMemory > 0 {
		if err := toError(C.pd_engine_options_set_max_memory(opts, C.uint64_t(o.MaxMemory))); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(o.External)) {
		// One call per file; the library copies the bytes during the call.
		data := o.External[name]
		var p unsafe.Pointer
		if len(data) > 0 {
			p = unsafe.Pointer(&data[0])
		}
		cs := C.CString(name)
		err := toError(C.pd_engine_options_add_external(opts, cs, p, C.size_t(len(data))))
		C.free(unsafe.Pointer(cs))
		if err != nil {
			return nil, err
		}
	}
	e := &Engine{}
	// The model bytes are Go memory read only during the call: allowed by the cgo rules.
	if err := toError(C.pd_engine_create(r.ptr, unsafe.Pointer(&onnx[0]), C.size_t(len(onnx)), opts, &e.ptr)); err != nil {
		return nil, err
	}
	e.backend = C.GoString(C.pd_engine_backend(e.ptr))
	e.batchable = C.pd_engine_batchable(e.ptr) != 0
	for i := 0; i < int(C.pd_engine_input_count(e.ptr)); i++ {
		var info C.pd_io_info
		if err := toError(C.pd_engine_input_info(e.ptr, C.int32_t(i), &info)); err != nil {
			C.pd_engine_destroy(e.ptr)
			return nil, err
		}
		e.inputs = append(e.inputs, ioInfo(&info))
	}
	for i := 0; i < int(C.pd_engine_output_count(e.ptr)); i++ {
		var info C.pd_io_info
		if err := toError(C.pd_engine_output_info(e.ptr, C.int32_t(i), &info)); err != nil {
			C.pd_engine_destroy(e.ptr)
			return nil, err
		}
		e.outputs = append(e.outputs, ioInfo(&info))
	}
	e.cleanup = runtime.AddCleanup(e, func(string) { leak("Engine") }, "")
	return e, nil
}

func ioInfo(info *C.pd_io_info) IOInfo {
	shape := make([]int64, int(info.rank))
	for i := range shape {
		shape[i] = int64(info.dims[i])
	}
	return IOInfo{Name: C.GoString(info.name), DType: DType(info.dtype), Shape: shape, BatchDim: int(info.batch_dim)}
}

// Backend is the backend the engine runs on.
func (e *Engine) Backend() string { return e.backend }

// Inputs is the model's input signature, in the order Context.Run takes them.
func (e *Engine) Inputs() []IOInfo { return e.inputs }

// Outputs is the model's output signature, in the order Context.Run returns them.
func (e *Engine) Outputs() []IOInfo { return e.outputs }

// Batchable reports whether the model takes any batch size on a shared dynamic dimension 0.
func (e *Engine) Batchable() bool { return e.batchable }

// Serialize returns the engine as an engine cache for EngineOptions.Cache: the backend's
// built state (cuda: the kernels compiled for the device's architecture) bound to the model,
// backend version, device target and build options. Backends without caches (cpu) return a
// CodeUnsupported error.
func (e *Engine) Serialize() ([]byte, error) {
	return e.libraryBytes(func(p *C.pd_engine, data *unsafe.Pointer, size *C.size_t) *C.pd_error {
		return C.pd_engine_serialize(p, data, size)
	})
}

// TimingCache returns the timing cache the build left, for EngineOptions.TimingCache of later
// builds on the same GPU architecture (tensorrt: the measured kernel timings). It is empty
// when the backend keeps none (cpu, cuda) or the engine was made from an engine cache.
func (e *Engine) TimingCache() ([]byte, error) {
	return e.libraryBytes(func(p *C.pd_engine, data *unsafe.Pointer, size *C.size_t) *C.pd_error {
		return C.pd_engine_timing_cache(p, data, size)
	})
}

// libraryBytes copies out bytes the library allocated for a call (freed with
// pd_engine_serialized_free); nil when it returned none.
func (e *Engine) libraryBytes(get func(*C.pd_engine, *unsafe.Pointer, *C.size_t) *C.pd_error) ([]byte, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.ptr == nil {
		return nil, ErrClosed
	}
	var data unsafe.Pointer
	var size C.size_t
	if err := toError(get(e.ptr, &data, &size)); err != nil {
		return nil, err
	}
	if size == 0 {
		return nil, nil
	}
	defer C.pd_engine_serialized_free(data)
	return C.GoBytes(data, C.int(size)), nil
}

// Close releases the engine. Close every Context first. Idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ptr != nil {
		e.cleanup.Stop()
		C.pd_engine_destroy(e.ptr)
		e.ptr = nil
	}
	return nil
}

// Context is the execution state of an Engine for one worker. Not safe for concurrent use:
// one goroutine (ideally locked to its OS thread) owns it. Memory alone may be called from any
// goroutine at any time.
type Context struct {
	engine  *Engine
	ptr     *C.pd_context
	nIn     int
	nOut    int
	cIn     *C.pd_tensor // C-owned arrays reused by every Run
	cOut    *C.pd_tensor
	pinner  runtime.Pinner
	closed  atomic.Bool
	closeMu sync.RWMutex // held by Close, and by Memory, which other goroutines may call
	cleanup runtime.Cleanup
}

// NewContext creates an execution context. The engine must outlive it.
func (e *Engine) NewContext() (*Context, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.ptr == nil {
		return nil, ErrClosed
	}
	c := &Context{engine: e, nIn: len(e.inputs), nOut: len(e.outputs)}
	if err := toError(C.pd_context_create(e.ptr, &c.ptr)); err != nil {
		return nil, err
	}
	sz := C.size_t(unsafe.Sizeof(C.pd_tensor{}))
	c.cIn = (*C.pd_tensor)(C.calloc(C.size_t(max(c.nIn, 1)), sz))
	c.cOut = (*C.pd_tensor)(C.calloc(C.size_t(max(c.nOut, 1)), sz))
	c.cleanup = runtime.AddCleanup(c, func(string) { leak("Context") }, "")
	return c, nil
}

// SetSeed seeds the random operators (Multinomial, RandomNormalLike, ...) of this context.
func (c *Context) SetSeed(seed uint64) error {
	if c.closed.Load() {
		return ErrClosed
	}
	return toError(C.pd_context_set_seed(c.ptr, C.uint64_t(seed)))
}

// SetRowSeeds gives row r of the batch of every following Run its own random stream derived
// from seeds[r], until the next call: a row's samples then depend only on its seed and its own
// inputs, not on the other rows of the batch or its position (see pd_context_set_row_seeds for
// the exact stream). Dimension 0 of each random operator's output must equal len(seeds), else
// Run fails with CodeInvalidArg naming the operator; with one seed the whole output draws from
// it, so a one-row request run alone gives what it gives as a row of a batch. An empty seeds
// returns to the context stream of SetSeed. The seeds are copied; no allocation on either side
// unless len(seeds) exceeds every earlier length.
func (c *Context) SetRowSeeds(seeds []uint64) error {
	if c.closed.Load() {
		return ErrClosed
	}
	var p *C.uint64_t
	if len(seeds) > 0 {
		// Go memory holding no pointers, read only during the call: allowed by the cgo rules.
		p = (*C.uint64_t)(unsafe.Pointer(&seeds[0]))
	}
	return toError(C.pd_context_set_row_seeds(c.ptr, p, C.size_t(len(seeds))))
}

// Memory reports the memory of the context (arenas per shape bucket, its own weight copies)
// and of its engine (weights, shared by all its contexts). Safe to call from any goroutine,
// also while another one runs the context.
func (c *Context) Memory() (MemoryInfo, error) {
	c.closeMu.RLock()
	defer c.closeMu.RUnlock()
	if c.closed.Load() {
		return MemoryInfo{}, ErrClosed
	}
	var mi C.pd_memory_info
	if err := toError(C.pd_context_memory(c.ptr, &mi)); err != nil {
		return MemoryInfo{}, err
	}
	return MemoryInfo{
		ArenaBytes:         uint64(mi.arena_bytes),
		WeightBytes:        uint64(mi.weight_bytes),
		ContextWeightBytes: uint64(mi.context_weight_bytes),
		Buckets:            int(mi.buckets),
	}, nil
}

// DeviceTime is the device time of the last Run (the kernels, without host<->device copies),
// for an engine built with EngineOptions.Profile on a backend that measures it (cuda);
// otherwise a CodeUnsupported error. Same goroutine rules as Run.
func (c *Context) DeviceTime() (time.Duration, error) {
	if c.closed.Load() {
		return 0, ErrClosed
	}
	var ms C.double
	if err := toError(C.pd_context_device_time(c.ptr, &ms)); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * float64(time.Millisecond)), nil
}

// Run executes the model once. inputs are in Engine.Inputs order; outputs must have
// len(Engine.Outputs()) elements and is filled in place: each output's Shape reuses its backing
// array when it has capacity, and Data is a view of context-owned C memory, valid until the next
// Run or Close. One cgo call per Run; in steady state Run allocates nothing.
func (c *Context) Run(inputs []Tensor, outputs []Tensor) error {
	if err := c.checkRun(len(inputs), len(outputs)); err != nil {
		return err
	}
	in := unsafe.Slice(c.cIn, max(c.nIn, 1))
	for i := range inputs {
		t := &inputs[i]
		ct := &in[i]
		if err := c.setInput(ct, i, t.DType, t.Shape, uint64(len(t.Data))); err != nil {
			return err
		}
		if len(t.Data) > 0 {
			p := unsafe.Pointer(&t.Data[0])
			// The pointer is stored in C memory for the duration of the call: pin it.
			c.pinner.Pin(p)
			ct.data = p
		} else {
			ct.data = nil
		}
	}
	err := toError(C.pd_context_run(c.ptr, c.cIn, C.int32_t(c.nIn), c.cOut, C.int32_t(c.nOut)))
	c.pinner.Unpin()
	for i := range in[:c.nIn] {
		in[i].data = nil
	}
	if err != nil {
		return err
	}
	out := unsafe.Slice(c.cOut, max(c.nOut, 1))
	for i := range outputs {
		ct := &out[i]
		o := &outputs[i]
		o.DType, o.Shape = DType(ct.dtype), resultShape(ct, o.Shape)
		if ct.byte_size > 0 {
			o.Data = unsafe.Slice((*byte)(ct.data), int(ct.byte_size))
		} else {
			o.Data = nil
		}
	}
	return nil
}

// checkRun refuses a run of a closed context or with the wrong number of inputs or output slots.
func (c *Context) checkRun(nIn, nOut int) error {
	if c.closed.Load() {
		return ErrClosed
	}
	if nIn != c.nIn {
		return &Error{Code: CodeInvalidArg, Msg: fmt.Sprintf("model takes %d inputs, got %d", c.nIn, nIn)}
	}
	if nOut != c.nOut {
		return &Error{Code: CodeInvalidArg, Msg: fmt.Sprintf("model has %d outputs, got %d slots", c.nOut, nOut)}
	}
	return nil
}

// setInput writes input i's datatype, shape and byte size into ct (its data pointer is the
// caller's); a rank over MaxRank is refused naming the input.
func (c *Context) setInput(ct *C.pd_tensor, i int, dt DType, shape []int64, size uint64) error {
	if len(shape) > MaxRank {
		return &Error{Code: CodeInvalidArg, Msg: fmt.Sprintf("input %q: rank %d exceeds %d", c.engine.inputs[i].Name, len(shape), MaxRank)}
	}
	ct.dtype = C.int32_t(dt)
	ct.rank = C.int32_t(len(shape))
	for k, d := range shape {
		ct.dims[k] = C.int64_t(d)
	}
	ct.byte_size = C.uint64_t(size)
	return nil
}

// resultShape is ct's shape in dst's backing array when it has room (MaxRank capacity otherwise).
func resultShape(ct *C.pd_tensor, dst []int64) []int64 {
	rank := int(ct.rank)
	if cap(dst) < rank {
		dst = make([]int64, rank, MaxRank)
	}
	dst = dst[:rank]
	for k := range rank {
		dst[k] = int64(ct.dims[k])
	}
	return dst
}

// Close releases the context. Idempotent.
func (c *Context) Close() error {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closed.Swap(true) {
		return nil
	}
	c.cleanup.Stop()
	C.pd_context_destroy(c.ptr)
	C.free(unsafe.Pointer(c.cIn))
	C.free(unsafe.Pointer(c.cOut))
	c.ptr, c.cIn, c.cOut = nil, nil, nil
	return nil
}
