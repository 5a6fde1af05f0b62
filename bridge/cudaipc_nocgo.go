//go:build !cgo

package bridge

// CudaIPCHandleSize is the size of a CUDA IPC memory handle (cudaIpcMemHandle_t) in bytes.
const CudaIPCHandleSize = 64

// CudaIPC is unavailable without cgo.
type CudaIPC struct{}

// OpenCudaIPC returns ErrUnavailable.
func (r *Runtime) OpenCudaIPC(int, []byte) (*CudaIPC, error) { return nil, ErrUnavailable }

// Base returns 0.
func (m *CudaIPC) Base() uintptr { return 0 }

// Device returns 0.
func (m *CudaIPC) Device() int { return 0 }

// Close does nothing.
func (m *CudaIPC) Close() error { return nil }

// DeviceTensor is a tensor in device memory (see the cgo build).
type DeviceTensor struct {
	DType    DType
	Shape    []int64
	Addr     uintptr
	ByteSize uint64
}

// RunDevice returns ErrUnavailable.
func (c *Context) RunDevice([]DeviceTensor, []DeviceTensor) error { return ErrUnavailable }

// Read returns ErrUnavailable.
func (m *CudaIPC) Read(uint64, []byte) error { return ErrUnavailable }

// Write returns ErrUnavailable.
func (m *CudaIPC) Write(uint64, []byte) error { return ErrUnavailable }
