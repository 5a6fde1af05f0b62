//go:build cgo

package bridge

/*
#include <stdint.h>
#include <stdlib.h>
#include "policyd.h"

// Device addresses are not Go memory: they cross as integers and become pointers only in C.
static void pd_go_set_dev(pd_tensor* t, uintptr_t p) { t->data = (void*)p; }
static uintptr_t pd_go_ipc_base(const pd_cuda_ipc* m) { return (uintptr_t)pd_cuda_ipc_pointer(m); }
*/
import "C"

import (
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// CudaIPCHandleSize is the size of a CUDA IPC memory handle (cudaIpcMemHandle_t) in bytes.
const CudaIPCHandleSize = C.PD_CUDA_IPC_HANDLE_SIZE

// CudaIPC is another process's CUDA allocation mapped into this one (cudaIpcOpenMemHandle):
// Triton's CUDA shared memory. Base is its device address; the size is the exporter's to tell.
// Safe for concurrent use; Close releases the mapping once every RunDevice reading or writing
// it has returned (the caller's reference counting ensures that).
type CudaIPC struct {
	mu      sync.RWMutex // read-held by Read and Write, held by Close
	ptr     *C.pd_cuda_ipc
	base    uintptr
	device  int
	cleanup runtime.Cleanup
}

// OpenCudaIPC opens handle (CudaIPCHandleSize bytes from the exporter's cudaIpcGetMemHandle) on
// the cuda backend's device. CodeUnavailable when the cuda backend did not load (with its
// reason), CodeInvalidArg for a device out of range or a handle the driver refuses.
func (r *Runtime) OpenCudaIPC(device int, handle []byte) (*CudaIPC, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.ptr == nil {
		return nil, ErrClosed
	}
	if len(handle) != CudaIPCHandleSize {
		return nil, &Error{Code: CodeInvalidArg, Msg: fmt.Sprintf("a CUDA IPC memory handle is %d bytes, got %d", CudaIPCHandleSize, len(handle))}
	}
	h := C.CBytes(handle)
	defer C.free(h)
	m := &CudaIPC{device: device}
	if err := toError(C.pd_cuda_ipc_open(r.ptr, C.int32_t(device), h, C.size_t(len(handle)), &m.ptr)); err != nil {
		return nil, err
	}
	m.base = uintptr(C.pd_go_ipc_base(m.ptr))
	m.cleanup = runtime.AddCleanup(m, func(string) { leak("CudaIPC") }, "")
	return m, nil
}

// Base is the mapping's device address (0 after Close).
func (m *CudaIPC) Base() uintptr {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.base
}

// Device is the CUDA device the mapping was opened on.
func (m *CudaIPC) Device() int { return m.device }

// Close unmaps the allocation (cudaIpcCloseMemHandle). Idempotent.
func (m *CudaIPC) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.ptr == nil {
		return nil
	}
	m.cleanup.Stop()
	C.pd_cuda_ipc_destroy(m.ptr)
	m.ptr, m.base = nil, 0
	return nil
}

// DeviceTensor is a tensor in device memory: Addr is a device address (a CudaIPC's Base plus an
// offset), ByteSize its size (outputs: the room there; RunDevice sets the result's size).
type DeviceTensor struct {
	DType    DType
	Shape    []int64
	Addr     uintptr
	ByteSize uint64
}

// RunDevice runs the model once with its inputs read from and its outputs written to device
// memory (pd_context_run_device): inputs are checked like Run's; each output's Addr and
// ByteSize give the room, and the result's DType, Shape and ByteSize are set in place. A result
// larger than its room is a CodeInvalidArg error naming the output, before any output is
// written; a backend without device memory (cpu) answers CodeUnsupported. Same goroutine rules
// as Run; one cgo call.
func (c *Context) RunDevice(inputs []DeviceTensor, outputs []DeviceTensor) error {
	if err := c.checkRun(len(inputs), len(outputs)); err != nil {
		return err
	}
	in := unsafe.Slice(c.cIn, max(c.nIn, 1))
	for i := range inputs {
		t := &inputs[i]
		ct := &in[i]
		if err := c.setInput(ct, i, t.DType, t.Shape, t.ByteSize); err != nil {
			return err
		}
		C.pd_go_set_dev(ct, C.uintptr_t(t.Addr))
	}
	out := unsafe.Slice(c.cOut, max(c.nOut, 1))
	for i := range outputs {
		out[i] = C.pd_tensor{}
		out[i].byte_size = C.uint64_t(outputs[i].ByteSize)
		C.pd_go_set_dev(&out[i], C.uintptr_t(outputs[i].Addr))
	}
	err := toError(C.pd_context_run_device(c.ptr, c.cIn, C.int32_t(c.nIn), c.cOut, C.int32_t(c.nOut)))
	for i := range in[:c.nIn] {
		in[i].data = nil
	}
	for i := range out[:c.nOut] {
		out[i].data = nil
	}
	if err != nil {
		return err
	}
	for i := range outputs {
		ct, o := &out[i], &outputs[i]
		o.DType, o.Shape = DType(ct.dtype), resultShape(ct, o.Shape)
		o.ByteSize = uint64(ct.byte_size)
	}
	return nil
}

// Read copies len(dst) bytes at offset off of the mapping into dst (cudaMemcpy device to
// host). The caller checks that the window lies in the exporter's allocation.
func (m *CudaIPC) Read(off uint64, dst []byte) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return ErrClosed
	}
	if len(dst) == 0 {
		return nil
	}
	return toError(C.pd_cuda_ipc_read(m.ptr, C.uint64_t(off), unsafe.Pointer(&dst[0]), C.size_t(len(dst))))
}

// Write copies src to offset off of the mapping (cudaMemcpy host to device). The caller checks
// that the window lies in the exporter's allocation.
func (m *CudaIPC) Write(off uint64, src []byte) error {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.ptr == nil {
		return ErrClosed
	}
	if len(src) == 0 {
		return nil
	}
	return toError(C.pd_cuda_ipc_write(m.ptr, C.uint64_t(off), unsafe.Pointer(&src[0]), C.size_t(len(src))))
}
