// Package bridge is the cgo binding over csrc/include/policyd.h, the C ABI of the policyd engine
// library. It is the only package that imports "C"; its exported API has no C types.
//
// Ownership and threading rules, which hold here and nowhere else:
//
//   - Runtime and Engine are safe for concurrent use. A Context is used by one goroutine at a
//     time. Only a CPU context with more than one thread keeps per-thread native state (its
//     OpenMP team): run it on a goroutine locked to its OS thread (runtime.LockOSThread). A
//     one-thread CPU context or a GPU context (which makes its device current on every run)
//     may run on whichever goroutine holds it.
//   - Every value has an idempotent Close that releases its native memory; methods on a closed
//     value return ErrClosed. A cleanup attached with runtime.AddCleanup only reports a leak
//     (through the log hook); it is never the release path.
//   - Go memory reaches C only for the duration of a call (inputs of Context.Run, pinned with a
//     runtime.Pinner). Outputs of Context.Run are views of C-owned memory, valid until the next
//     Run or Close of that Context: copy what must outlive it.
//   - Close an Engine only after all its Contexts, and a Runtime only after all its Engines.
//
// Built without cgo (CGO_ENABLED=0), the package compiles and every constructor returns
// ErrUnavailable, so the packages above it build and test without the native library.
package bridge

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// DType is a tensor element type; values equal ONNX TensorProto.DataType.
type DType int32

// Element types the engine knows.
const (
	Undefined DType = 0
	Float32   DType = 1
	Uint8     DType = 2
	Int8      DType = 3
	Uint16    DType = 4
	Int16     DType = 5
	Int32     DType = 6
	Int64     DType = 7
	String    DType = 8
	Bool      DType = 9
	Float16   DType = 10
	Float64   DType = 11
	Uint32    DType = 12
	Uint64    DType = 13
	BFloat16  DType = 16
)

var dtypeNames = map[DType]string{
	Float32: "FP32", Uint8: "UINT8", Int8: "INT8", Uint16: "UINT16", Int16: "INT16",
	Int32: "INT32", Int64: "INT64", String: "BYTES", Bool: "BOOL", Float16: "FP16",
	Float64: "FP64", Uint32: "UINT32", Uint64: "UINT64", BFloat16: "BF16",
}

// String returns the KServe v2 datatype name ("FP32", "INT64", ...).
func (d DType) String() string {
	if s, ok := dtypeNames[d]; ok {
		return s
	}
	return fmt.Sprintf("DType(%d)", int32(d))
}

// Size is the size of one element in bytes (0 for String and Undefined).
func (d DType) Size() int {
	switch d {
	case Float32, Int32, Uint32:
		return 4
	case Uint8, Int8, Bool:
		return 1
	case Uint16, Int16, Float16, BFloat16:
		return 2
	case Int64, Float64, Uint64:
		return 8
	}
	return 0
}

// MaxRank is the largest rank the ABI carries.
const MaxRank = 8

// Tensor is a dense row-major tensor. Data holds exactly NumElements(Shape)*DType.Size() bytes.
type Tensor struct {
	DType DType
	Shape []int64
	Data  []byte
}

// NumElements is the product of the dimensions (1 for a scalar), or -1 when a dimension is
// negative or the product overflows (see Elements).
func NumElements(shape []int64) int64 {
	n, ok := Elements(shape)
	if !ok {
		return -1
	}
	return n
}

// IOInfo describes one model input or output. A dimension of -1 is not fixed by the model.
// BatchDim is 0 when dimension 0 is the shared dynamic batch dimension, -1 otherwise.
type IOInfo struct {
	Name     string
	DType    DType
	Shape    []int64
	BatchDim int
}

// IOIndex returns the index of the tensor called name in infos, -1 when there is none. name
// may be a []byte (as a JSON decoder hands it out) without a copy.
func IOIndex[S ~string | ~[]byte](infos []IOInfo, name S) int {
	for i := range infos {
		if infos[i].Name == string(name) {
			return i
		}
	}
	return -1
}

// IONames lists the tensors' names for messages: "obs", "mask".
func IONames(infos []IOInfo) string {
	var sb strings.Builder
	for i, in := range infos {
		if i > 0 {
			sb.WriteString(", ")
		}
		sb.WriteString(strconv.Quote(in.Name))
	}
	return sb.String()
}

// BackendInfo says whether a backend plugin loaded, and why not.
type BackendInfo struct {
	Name      string
	Version   string
	Path      string
	Available bool
	Reason    string
}

// Code classifies an Error; values equal pd_error_code.
type Code int32

// Error codes.
const (
	CodeInvalidArg  Code = 1
	CodeNotFound    Code = 2
	CodeUnavailable Code = 3
	CodeUnsupported Code = 4
	CodeInternal    Code = 5
)

func (c Code) String() string {
	switch c {
	case CodeInvalidArg:
		return "invalid argument"
	case CodeNotFound:
		return "not found"
	case CodeUnavailable:
		return "unavailable"
	case CodeUnsupported:
		return "unsupported"
	case CodeInternal:
		return "internal"
	}
	return fmt.Sprintf("code %d", int32(c))
}

// Error is a failure reported by the native library.
type Error struct {
	Code Code
	Msg  string
}

func (e *Error) Error() string { return e.Msg }

// Is lets errors.Is(err, &Error{Code: c}) match on the code alone.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Msg == "" && t.Code == e.Code
}

// ErrClosed is returned by methods of a value whose Close was called.
var ErrClosed = errors.New("bridge: use of closed value")

// ErrUnavailable is returned when the binary was built without the native library (no cgo).
var ErrUnavailable = &Error{Code: CodeUnavailable, Msg: "native library unavailable: policyd was built without cgo"}

// EngineOptions configure NewEngine. Zero values pick the defaults.
type EngineOptions struct {
	Backend string // "cpu" (default)
	Threads int    // threads per context run (default 1)
	Name    string // used in messages, e.g. "3DBall@1.0.0"
	// Device is the ordinal (Runtime.Devices) of the GPU to build for and run on; ignored by
	// backends without devices (cpu).
	Device int
	// Profile makes contexts measure the device time of each run (Context.DeviceTime).
	Profile bool
	// ModelDigest is the host's digest of the model ("sha256:<hex>" from the manifest), bound
	// into a serialized engine and required to match when building from Cache.
	ModelDigest string
	// Cache is an engine cache made by Engine.Serialize. It is used only when it was made for
	// this model (bytes and ModelDigest), backend, backend version, device target and build
	// options; otherwise NewEngine fails with CodeInvalidArg and a message ending in
	// "rebuild engines". Read only during the call.
	Cache []byte
	// MinBatch, OptBatch and MaxBatch are the batch sizes the engine will be run with
	// (1 <= MinBatch <= OptBatch <= MaxBatch): backends that compile for a range of shapes
	// (tensorrt: the optimization profile over the batch dimension, tuned for OptBatch) use
	// them and refuse a run outside [MinBatch, MaxBatch]; the others ignore them. All zero:
	// no profile (the library's default). Part of the engine cache binding of the backends
	// that use them.
	MinBatch, OptBatch, MaxBatch int
	// Params are backend build parameters, "<backend>.<key>" -> value ("tensorrt.precision"
	// -> "fp16"). Only those of the backend the engine is built for reach it; it refuses a
	// key or value it does not know with CodeInvalidArg naming it. A key of an unknown
	// backend is refused by every backend.
	Params map[string]string
	// TimingCache is a timing cache from an earlier build on the same GPU architecture
	// (Engine.TimingCache) the build may start from; backends without one ignore it, and one
	// the backend cannot use only makes the build slower. Read only during the call.
	TimingCache []byte
	// MaxMemory bounds the host memory the model may take, in bytes (0: no limit): its
	// constants (initializers, folded values) together, checked before each is allocated,
	// then those plus one context's activation arena at batch 1. A model over it fails with
	// CodeInvalidArg naming what does not fit.
	MaxMemory uint64
	// External holds the model's ONNX external-data files ("model.onnx.data"), keyed by
	// their names relative to the model as its tensors name them. The library reads every
	// tensor whose data_location is EXTERNAL from them (it never opens files) and refuses a
	// name that is absolute or has "..", a file not given, and an offset or length outside
	// the file, with CodeInvalidArg naming the tensor and the file. Copied during the call.
	External map[string][]byte
}

// Device is a device a backend can build for (Runtime.Devices).
type Device struct {
	Ordinal     int    // for EngineOptions.Device
	Name        string // "NVIDIA H100 80GB HBM3"
	UUID        string // "GPU-…", "" when unknown
	Target      string // what an engine cache is bound to: "sm_90"
	CCMajor     int    // compute capability
	CCMinor     int
	TotalMemory uint64 // bytes
}

// MemoryInfo is what Context.Memory reports, in bytes.
type MemoryInfo struct {
	// ArenaBytes: the context's activation arenas, one per shape bucket it holds now.
	ArenaBytes uint64
	// WeightBytes: the engine's weights and other constants. Shared by every context of the
	// engine: count it once per engine, not per context.
	WeightBytes uint64
	// ContextWeightBytes: the context's own copies of weights in a backend layout (cpu: the
	// blocked layouts oneDNN prefers), not shared with other contexts.
	ContextWeightBytes uint64
	// Buckets is the number of shape buckets the context holds now (at most 64).
	Buckets int
}

// LogLevel is the level of a native log line.
type LogLevel int32

// Native log levels.
const (
	LogDebug LogLevel = 0
	LogInfo  LogLevel = 1
	LogWarn  LogLevel = 2
	LogError LogLevel = 3
)
