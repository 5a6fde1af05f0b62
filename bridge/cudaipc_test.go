//go:build cgo

package bridge

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"strings"
	"testing"
)

// CUDA shared memory through the bridge on the CPU emulation of CUDA (build/fakecuda):
// FakeCUDAExport plays the client; OpenCudaIPC maps its allocation; RunDevice reads the input
// there and writes the output there, equal to Run's output of the same input (which
// refcheck_fakecuda checks against ONNX Runtime); Read/Write copy through the mapping.
func TestCudaIPCRunDevice(t *testing.T) {
	if _, err := os.Stat("../build/fakecuda/libpolicyd_backend_cuda.so"); err != nil {
		t.Skip("no build/fakecuda")
	}
	model, err := os.ReadFile("../../shared/peers/models/mlp-small.onnx")
	if err != nil {
		t.Skipf("peers' models not found: %v", err)
	}
	rt, err := NewRuntime("../build/fakecuda")
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	open0 := FakeCUDAOpenMappings()
	e, err := rt.NewEngine(model, EngineOptions{Backend: "cuda"})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	x, err := NewFakeCUDAExport(1024)
	if err != nil {
		t.Fatal(err)
	}
	defer x.Free()
	m, err := rt.OpenCudaIPC(0, x.Handle)
	if err != nil {
		t.Fatal(err)
	}
	if FakeCUDAOpenMappings() != open0+1 || m.Base() == 0 {
		t.Errorf("open mappings %d (want %d), base %#x", FakeCUDAOpenMappings(), open0+1, m.Base())
	}
	const batch = 3
	obs := make([]byte, batch*8*4)
	for i := 0; i < batch*8; i++ {
		binary.LittleEndian.PutUint32(obs[4*i:], math.Float32bits(float32(i)*0.1-1))
	}
	if err := x.Write(32, obs); err != nil {
		t.Fatal(err)
	}
	in := []DeviceTensor{{DType: Float32, Shape: []int64{batch, 8}, Addr: m.Base() + 32, ByteSize: uint64(len(obs))}}
	out := []DeviceTensor{{Addr: m.Base() + 512, ByteSize: 512}}
	if err := c.RunDevice(in, out); err != nil {
		t.Fatal(err)
	}
	if out[0].DType != Float32 || len(out[0].Shape) != 2 || out[0].Shape[0] != batch || out[0].Shape[1] != 2 || out[0].ByteSize != batch*2*4 {
		t.Fatalf("output %+v", out[0])
	}
	got, err := x.Read(512, batch*2*4)
	if err != nil {
		t.Fatal(err)
	}
	host := []Tensor{{}}
	if err := c.Run([]Tensor{{DType: Float32, Shape: []int64{batch, 8}, Data: obs}}, host); err != nil {
		t.Fatal(err)
	}
	if string(got) != string(host[0].Data) {
		t.Error("RunDevice's output differs from Run's")
	}
	viaMap := make([]byte, len(got))
	if err := m.Read(512, viaMap); err != nil || string(viaMap) != string(got) {
		t.Errorf("CudaIPC.Read = %v, %v", viaMap, err)
	}

	// Room too small: refused naming the output.
	out[0].ByteSize = 8
	if err := c.RunDevice(in, out); !errors.Is(err, &Error{Code: CodeInvalidArg}) || !strings.Contains(err.Error(), "output 'action'") {
		t.Errorf("small room: %v", err)
	}
	if _, err := rt.OpenCudaIPC(0, x.Handle[:10]); !errors.Is(err, &Error{Code: CodeInvalidArg}) {
		t.Errorf("short handle: %v", err)
	}
	m.Close()
	m.Close()
	if err := m.Read(0, viaMap); !errors.Is(err, ErrClosed) {
		t.Errorf("Read after Close = %v", err)
	}
	if FakeCUDAOpenMappings() != open0 {
		t.Errorf("open mappings %d after Close, want %d", FakeCUDAOpenMappings(), open0)
	}
}
