//go:build cgo

package bridge

/*
#include <stdlib.h>
#include <string.h>
#include "policyd.h"
*/
import "C"

import "unsafe"

// rawTensor is a pd_tensor exactly as a C caller could fill it, without the checks Context.Run
// makes first (rank at most MaxRank, byte size from the data's length): for tests that must
// reach the C ABI's own checks (the fuzz target FuzzContextRunShapes). Dims beyond Rank, a
// negative or too large Rank, and a ByteSize that disagrees with the shape all reach
// pd_context_run as they are.
type rawTensor struct {
	DType    DType
	Rank     int32
	Dims     [MaxRank]int64
	ByteSize uint64
	// Data is copied into C memory for the call; NullData passes NULL instead. The library
	// may read ByteSize bytes, so a caller gives at least that many unless the shape and
	// ByteSize are ones the library must refuse.
	Data     []byte
	NullData bool
}

// runRaw calls pd_context_run with these tensors and fills outputs (len(outputs) slots are
// passed, which the library checks) as Run does, for tests. Not for serving: Run is the API.
func (c *Context) runRaw(inputs []rawTensor, outputs []Tensor) error {
	if c.closed.Load() {
		return ErrClosed
	}
	n := len(inputs)
	cin := (*C.pd_tensor)(C.calloc(C.size_t(max(n, 1)), C.size_t(unsafe.Sizeof(C.pd_tensor{}))))
	defer C.free(unsafe.Pointer(cin))
	in := unsafe.Slice(cin, max(n, 1))
	var bufs []unsafe.Pointer
	defer func() {
		for _, b := range bufs {
			C.free(b)
		}
	}()
	for i, t := range inputs {
		ct := &in[i]
		ct.dtype = C.int32_t(t.DType)
		ct.rank = C.int32_t(t.Rank)
		for k, d := range t.Dims {
			ct.dims[k] = C.int64_t(d)
		}
		ct.byte_size = C.uint64_t(t.ByteSize)
		if !t.NullData {
			b := C.malloc(C.size_t(max(len(t.Data), 1)))
			if len(t.Data) > 0 {
				C.memcpy(b, unsafe.Pointer(&t.Data[0]), C.size_t(len(t.Data)))
			}
			bufs = append(bufs, b)
			ct.data = b
		}
	}
	if len(outputs) > c.nOut {
		return &Error{Code: CodeInvalidArg, Msg: "more output slots than the context has"}
	}
	if err := toError(C.pd_context_run(c.ptr, cin, C.int32_t(n), c.cOut, C.int32_t(len(outputs)))); err != nil {
		return err
	}
	out := unsafe.Slice(c.cOut, max(c.nOut, 1))
	for i := range outputs {
		ct, o := &out[i], &outputs[i]
		o.DType = DType(ct.dtype)
		o.Shape = make([]int64, int(ct.rank))
		for k := range o.Shape {
			o.Shape[k] = int64(ct.dims[k])
		}
		o.Data = nil
		if ct.byte_size > 0 {
			o.Data = unsafe.Slice((*byte)(ct.data), int(ct.byte_size))
		}
	}
	return nil
}
