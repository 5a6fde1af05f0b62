package server

import (
	"strconv"
	"unsafe"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bridge"
)

// The binary tensor data extension (Triton's, which its clients use; see the package doc and
// docs/api.md). A request with the header
//
//	Inference-Header-Content-Length: N
//
// carries the JSON inference request in the first N bytes of its body and, after it, the
// binary tensors of the inputs whose "parameters" hold "binary_data_size", one after the other
// in the order of "inputs": little-endian, row-major, BOOL one byte (0 or 1). A response with
// binary outputs has the same framing and Content-Type application/octet-stream.

// inferHeaderLength is the header that frames a body with binary tensor data.
const inferHeaderLength = "Inference-Header-Content-Length"

// splitBody splits a request body at the length hdr gives (the value of the
// Inference-Header-Content-Length header; nil when the header is absent, and then the whole
// body is JSON). The parts are views of body.
func splitBody(hdr, body []byte) (js, bin []byte, err error) {
	if hdr == nil {
		return body, nil, nil
	}
	n, ok := 0, len(hdr) > 0
	neg := ok && hdr[0] == '-'
	digits := hdr
	if neg {
		digits = hdr[1:]
		ok = len(digits) > 0
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			ok = false
			break
		}
		if n <= len(body) { // beyond it the value no longer matters: stop before it overflows
			n = 10*n + int(c-'0')
		}
	}
	switch {
	case !ok:
		return nil, nil, badRequest("header %s: %q is not a number", inferHeaderLength, clip(string(hdr), 32))
	case neg:
		return nil, nil, badRequest("header %s: %s is negative", inferHeaderLength, clip(string(hdr), 32))
	case n > len(body):
		return nil, nil, badRequest("header %s: %s is larger than the body (%d bytes)", inferHeaderLength, clip(string(hdr), 32), len(body))
	}
	return body[:n], body[n:], nil
}

// binarySize reads the "binary_data_size" parameter of an input: a non-negative integer.
func (r *inferRequest) binarySize(v jsonValue, info *bridge.IOInfo) (int64, error) {
	tok, err := numberToken(v)
	if err != nil || !isInteger(tok) {
		return 0, badRequest(`input %q: "binary_data_size" must be a non-negative integer`, info.Name)
	}
	if tok[0] == '-' {
		return 0, badRequest(`input %q: "binary_data_size" %s is negative`, info.Name, clipBytes(tok, 32))
	}
	n, err := strconv.ParseInt(tokenString(tok), 10, 64)
	if err != nil {
		return 0, badRequest(`input %q: "binary_data_size" %s is out of range`, info.Name, clipBytes(tok, 32))
	}
	return n, nil
}

// decodeBinaryInput takes the next size bytes of r.bin as input k of the given shape and
// element count (checked against the signature by the caller). The tensor is a view of the
// body when its first byte is aligned for the datatype (the engine may read it as the C type);
// otherwise it is copied into the input's reused buffer.
func (r *inferRequest) decodeBinaryInput(k int, info *bridge.IOInfo, shape []int64, count, size int64) error {
	if want, _ := bridge.ByteSize(info.DType, shape); size != want {
		return badRequest(`input %q: "binary_data_size" is %d, but shape %s of %s takes %d bytes`,
			info.Name, size, formatShape(shape), info.DType, want)
	}
	if left := int64(len(r.bin) - r.binOff); size > left {
		return badRequest(`input %q: "binary_data_size" %d runs past the end of the body: %d bytes of binary data left (%d after the JSON)`,
			info.Name, size, left, len(r.bin))
	}
	data := r.bin[r.binOff : r.binOff+int(size) : r.binOff+int(size)]
	r.binOff += int(size)
	return r.rawTensor(k, info, shape, data)
}

// rawTensor makes data (the tensor's bytes, already of the right size) input k: BOOL bytes
// must be 0 or 1; a view when its first byte is aligned for the datatype, else a copy into
// the input's reused buffer. Binary HTTP bodies and gRPC raw_input_contents both end here.
func (r *inferRequest) rawTensor(k int, info *bridge.IOInfo, shape []int64, data []byte) error {
	if info.DType == bridge.Bool {
		for i, c := range data {
			if c > 1 {
				return badRequest("input %q: element %d: a BOOL byte must be 0 or 1, got %d", info.Name, i, c)
			}
		}
	}
	if len(data) > 0 && uintptr(unsafe.Pointer(&data[0]))%uintptr(info.DType.Size()) != 0 {
		buf := r.bufs[k]
		if cap(buf) < len(data) {
			buf = make([]byte, len(data))
		}
		buf = buf[:len(data)]
		copy(buf, data)
		r.bufs[k] = buf
		data = buf
	}
	r.tensors[k] = bridge.Tensor{DType: info.DType, Shape: shape, Data: data}
	r.given[k] = true
	return nil
}

// binaryLeftover is the error of a body whose binary part is longer than its binary inputs.
func (r *inferRequest) binaryLeftover() error {
	if r.binOff == 0 {
		return badRequest(`%d bytes of binary data follow the JSON (header %s), but no input has "binary_data_size"`,
			len(r.bin), inferHeaderLength)
	}
	return badRequest(`%d bytes of binary data follow the JSON, but the inputs' "binary_data_size" add up to %d`,
		len(r.bin), r.binOff)
}

// jsonBool reads a JSON boolean.
func jsonBool(v jsonValue) (value, ok bool) {
	switch v.kind() {
	case jsonTrue:
		return true, true
	case jsonFalse:
		return false, true
	}
	return false, false
}

// outputBinary reports whether the i-th output of the response goes in binary: its own
// "binary_data" when the request listed it with one, else "binary_data_output".
func (r *inferRequest) outputBinary(i int) bool {
	if r.outShm(i) != nil {
		return false // written to shared memory
	}
	if i < len(r.outBin) && r.outBin[i] >= 0 {
		return r.outBin[i] == 1
	}
	return r.binAll
}

// appendBinaryTensor appends the JSON part of a binary output:
// {"name":..,"datatype":..,"shape":[..],"parameters":{"binary_data_size":S}}.
func appendBinaryTensor(b []byte, name string, t *bridge.Tensor) ([]byte, error) {
	if err := checkOutput(name, t); err != nil {
		return b, err
	}
	b = appendTensorHead(b, name, t)
	b = append(b, `],"parameters":{"binary_data_size":`...)
	b = strconv.AppendInt(b, int64(len(t.Data)), 10)
	return append(b, "}}"...), nil
}

// writeResponse answers the encoded response: JSON, or a JSON part and binary outputs.
func (r *inferRequest) writeResponse(ctx *fasthttp.RequestCtx) {
	if r.binOut {
		ctx.SetContentType("application/octet-stream")
		r.num = strconv.AppendInt(r.num[:0], int64(r.jsonLen), 10)
		ctx.Response.Header.SetBytesV(inferHeaderLength, r.num)
	} else {
		ctx.SetContentType("application/json")
	}
	ctx.SetBody(r.out)
}
