package server

import (
	"encoding/binary"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"

	"github.com/policyd/policyd/bridge"
)

// encodeOutputs is the callback the request passes to Model.Do: it runs on the engine's worker
// while the outputs (views of native memory) are valid, and encodes the whole response into
// r.out, so no tensor is copied on the way.
func (r *inferRequest) encodeOutputs(outs []bridge.Tensor) error {
	r.dl.markLate()
	b, err := appendResponse(r.out[:0], r.model, r, outs)
	r.out = b
	return err
}

// appendResponse appends the JSON inference response:
//
//	{"model_name":..,"model_version":..,"id":..,"outputs":[{"name","datatype","shape","data"}]}
//
// "id" only when the request had one; the outputs the request asked for, in its order, or all
// of them in the model's order. Data are flat, row-major. Floats are written as the shortest
// text that reads back to the same value (FP32 at 32-bit precision); NaN and ±Inf, which JSON
// cannot express, are written as null.
//
// Outputs the request wants in binary (see inferRequest.outputBinary) have
// "parameters":{"binary_data_size":S} instead of "data", and their bytes follow the JSON in
// the same order; appendResponse then sets r.binOut and r.jsonLen.
func appendResponse(b []byte, m Model, r *inferRequest, outs []bridge.Tensor) ([]byte, error) {
	infos := m.Outputs()
	if len(outs) != len(infos) {
		return b, fmt.Errorf("engine returned %d outputs, the signature has %d", len(outs), len(infos))
	}
	start := len(b)
	r.binOut = false
	b = append(b, `{"model_name":`...)
	b = appendString(b, m.Name())
	b = append(b, `,"model_version":`...)
	b = appendString(b, m.Version())
	if r.hasID {
		b = append(b, `,"id":`...)
		b = appendString(b, r.id)
	}
	b = append(b, `,"outputs":[`...)
	n := len(r.outputs)
	if n == 0 {
		n = len(outs)
	}
	var err error
	binOut := false
	for i := 0; i < n; i++ {
		k := i
		if len(r.outputs) > 0 {
			k = r.outputs[i]
		}
		if i > 0 {
			b = append(b, ',')
		}
		if o := r.outShm(i); o != nil {
			b, err = appendShmTensor(b, infos[k].Name, &outs[k], o)
		} else if r.outputBinary(i) {
			binOut = true
			b, err = appendBinaryTensor(b, infos[k].Name, &outs[k])
		} else {
			b, err = appendTensor(b, infos[k].Name, &outs[k])
		}
		if err != nil {
			return b, err
		}
	}
	b = append(b, ']')
	b = appendDeadlineParams(b, &r.dl) // "parameters": a fallback's or a late answer's mark
	b = append(b, '}')
	if !binOut {
		return b, nil
	}
	r.binOut, r.jsonLen = true, len(b)-start
	for i := 0; i < n; i++ {
		if r.outputBinary(i) {
			k := i
			if len(r.outputs) > 0 {
				k = r.outputs[i]
			}
			b = append(b, outs[k].Data...)
		}
	}
	return b, nil
}

// checkOutput checks that an output's data match its shape and datatype.
func checkOutput(name string, t *bridge.Tensor) error {
	size := t.DType.Size()
	n := bridge.NumElements(t.Shape)
	if size == 0 {
		return fmt.Errorf("output %q: datatype %s cannot be written", name, t.DType)
	}
	if n < 0 || int64(len(t.Data)) != n*int64(size) {
		return fmt.Errorf("output %q: %d bytes for shape %s of %s", name, len(t.Data), formatShape(t.Shape), t.DType)
	}
	return nil
}

// appendTensorHead appends {"name":..,"datatype":..,"shape":[.. (the shape left open).
func appendTensorHead(b []byte, name string, t *bridge.Tensor) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, name)
	b = append(b, `,"datatype":"`...)
	b = append(b, t.DType.String()...)
	b = append(b, `","shape":[`...)
	for i, d := range t.Shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	return b
}

// appendTensor appends {"name":..,"datatype":..,"shape":[..],"data":[..]}.
func appendTensor(b []byte, name string, t *bridge.Tensor) ([]byte, error) {
	if err := checkOutput(name, t); err != nil {
		return b, err
	}
	n := bridge.NumElements(t.Shape)
	b = appendTensorHead(b, name, t)
	b = append(b, `],"data":[`...)
	for i := int64(0); i < n; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendElement(b, t, i)
	}
	return append(b, "]}"...), nil
}

// appendElement appends element i of t as JSON: floats in their shortest round-trip form
// (NaN and ±Inf as null), integers exactly, BOOL as true/false. t's datatype has been checked
// by checkOutput.
func appendElement(b []byte, t *bridge.Tensor, i int64) []byte {
	d := t.Data
	switch t.DType {
	case bridge.Float32:
		return appendFloat(b, float64(math.Float32frombits(binary.LittleEndian.Uint32(d[4*i:]))), 32)
	case bridge.Float64:
		return appendFloat(b, math.Float64frombits(binary.LittleEndian.Uint64(d[8*i:])), 64)
	case bridge.Float16:
		return appendFloat(b, float64(halfToFloat32(binary.LittleEndian.Uint16(d[2*i:]))), 32)
	case bridge.BFloat16:
		return appendFloat(b, float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(d[2*i:]))<<16)), 32)
	case bridge.Int64:
		return strconv.AppendInt(b, int64(binary.LittleEndian.Uint64(d[8*i:])), 10)
	case bridge.Int32:
		return strconv.AppendInt(b, int64(int32(binary.LittleEndian.Uint32(d[4*i:]))), 10)
	case bridge.Int16:
		return strconv.AppendInt(b, int64(int16(binary.LittleEndian.Uint16(d[2*i:]))), 10)
	case bridge.Int8:
		return strconv.AppendInt(b, int64(int8(d[i])), 10)
	case bridge.Uint64:
		return strconv.AppendUint(b, binary.LittleEndian.Uint64(d[8*i:]), 10)
	case bridge.Uint32:
		return strconv.AppendUint(b, uint64(binary.LittleEndian.Uint32(d[4*i:])), 10)
	case bridge.Uint16:
		return strconv.AppendUint(b, uint64(binary.LittleEndian.Uint16(d[2*i:])), 10)
	case bridge.Uint8:
		return strconv.AppendUint(b, uint64(d[i]), 10)
	case bridge.Bool:
		if d[i] != 0 {
			return append(b, "true"...)
		}
		return append(b, "false"...)
	}
	panic(fmt.Sprintf("appendElement: datatype %s not checked by encodeOutputs", t.DType))
}

// appendFloat writes f in the shortest form that reads back to the same value at bitSize
// precision; NaN and ±Inf become null.
func appendFloat(b []byte, f float64, bitSize int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(b, "null"...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, bitSize)
}

// halfToFloat32 widens an IEEE 754 binary16 value.
func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal: normalise
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Control characters are escaped, and invalid UTF-8 is
// replaced by U+FFFD so that the output is always valid JSON.
func appendString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		var rb [utf8.UTFMax]byte
		r, size := utf8.DecodeRune(rb[:copy(rb[:], s[i:])])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
