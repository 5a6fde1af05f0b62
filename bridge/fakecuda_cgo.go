//go:build cgo

package bridge

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdint.h>
#include <stdlib.h>

typedef int (*pd_fx_export)(size_t, void**, void*);
typedef int (*pd_fx_copy)(void*, const void*, size_t, int);
typedef int (*pd_fx_free)(void*);
typedef long (*pd_fx_open)(void);

// The emulation the fake cuda plugin loaded (never loads it: RTLD_NOLOAD).
static void* pd_fx_lib(void) { return dlopen("libpd_fakecuda.so", RTLD_NOW | RTLD_NOLOAD); }
static int pd_fx_do_export(void* lib, size_t n, uintptr_t* dev, void* handle) {
	pd_fx_export f = (pd_fx_export)dlsym(lib, "pd_fake_cuda_export");
	void* p = NULL;
	if (!f) return -1;
	int e = f(n, &p, handle);
	*dev = (uintptr_t)p;
	return e;
}
static int pd_fx_do_copy(void* lib, uintptr_t dev, void* host, size_t n, int to_device) {
	pd_fx_copy f = (pd_fx_copy)dlsym(lib, "pd_fake_cuda_copy");
	if (!f) return -1;
	return to_device ? f((void*)dev, host, n, 1) : f(host, (const void*)dev, n, 0);
}
static int pd_fx_do_free(void* lib, uintptr_t dev) {
	pd_fx_free f = (pd_fx_free)dlsym(lib, "pd_fake_cuda_free");
	return f ? f((void*)dev) : -1;
}
static long pd_fx_do_open(void* lib) {
	pd_fx_open f = (pd_fx_open)dlsym(lib, "pd_fake_cuda_ipc_open");
	return f ? f() : -1;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"unsafe"
)

// FakeCUDAExport is for tests only: on a runtime whose cuda backend is the CPU emulation of
// CUDA (build/fakecuda, loaded by NewRuntime first), it plays a CUDA shared memory client: n
// bytes of emulated device memory and their IPC handle (CudaIPCHandleSize bytes), as
// cudaMalloc + cudaIpcGetMemHandle give a real client.
type FakeCUDAExport struct {
	lib    unsafe.Pointer
	addr   uintptr
	Handle []byte
}

// NewFakeCUDAExport allocates n bytes of emulated device memory. It fails when the emulation is
// not loaded in this process.
func NewFakeCUDAExport(n int) (*FakeCUDAExport, error) {
	lib := C.pd_fx_lib()
	if lib == nil {
		return nil, errors.New("the CUDA emulation (libpd_fakecuda.so) is not loaded: make a runtime over build/fakecuda first")
	}
	h := C.malloc(CudaIPCHandleSize)
	defer C.free(h)
	var dev C.uintptr_t
	if e := C.pd_fx_do_export(lib, C.size_t(n), &dev, h); e != 0 {
		return nil, fmt.Errorf("fake cudaMalloc/cudaIpcGetMemHandle: error %d", int(e))
	}
	return &FakeCUDAExport{lib: lib, addr: uintptr(dev), Handle: C.GoBytes(h, CudaIPCHandleSize)}, nil
}

// Write copies b to offset off of the allocation (cudaMemcpy host to device).
func (x *FakeCUDAExport) Write(off int, b []byte) error {
	if len(b) == 0 {
		return nil
	}
	p := C.CBytes(b)
	defer C.free(p)
	if e := C.pd_fx_do_copy(x.lib, C.uintptr_t(x.addr+uintptr(off)), p, C.size_t(len(b)), 1); e != 0 {
		return fmt.Errorf("fake cudaMemcpy to device: error %d", int(e))
	}
	return nil
}

// Read copies n bytes at offset off of the allocation out (cudaMemcpy device to host).
func (x *FakeCUDAExport) Read(off, n int) ([]byte, error) {
	p := C.malloc(C.size_t(max(n, 1)))
	defer C.free(p)
	if e := C.pd_fx_do_copy(x.lib, C.uintptr_t(x.addr+uintptr(off)), p, C.size_t(n), 0); e != 0 {
		return nil, fmt.Errorf("fake cudaMemcpy to host: error %d", int(e))
	}
	return C.GoBytes(p, C.int(n)), nil
}

// Free releases the allocation (cudaFree): its handle no longer opens.
func (x *FakeCUDAExport) Free() error {
	if e := C.pd_fx_do_free(x.lib, C.uintptr_t(x.addr)); e != 0 {
		return fmt.Errorf("fake cudaFree: error %d", int(e))
	}
	return nil
}

// FakeCUDAOpenMappings is the number of IPC mappings open in the emulation (-1 when it is not
// loaded), for tests that check nothing is left open.
func FakeCUDAOpenMappings() int {
	lib := C.pd_fx_lib()
	if lib == nil {
		return -1
	}
	return int(C.pd_fx_do_open(lib))
}
