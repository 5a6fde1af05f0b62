package policyd

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Datatypes policyd serves (KServe v2 names).
const (
	BOOL   = "BOOL"
	INT8   = "INT8"
	INT16  = "INT16"
	INT32  = "INT32"
	INT64  = "INT64"
	UINT8  = "UINT8"
	UINT16 = "UINT16"
	UINT32 = "UINT32"
	UINT64 = "UINT64"
	FP16   = "FP16"
	BF16   = "BF16"
	FP32   = "FP32"
	FP64   = "FP64"
)

// ElementSize is the size in bytes of one element of datatype dt, 0 for an unknown one.
func ElementSize(dt string) int {
	switch dt {
	case BOOL, INT8, UINT8:
		return 1
	case INT16, UINT16, FP16, BF16:
		return 2
	case INT32, UINT32, FP32:
		return 4
	case INT64, UINT64, FP64:
		return 8
	}
	return 0
}

// Tensor is one named input or output: its KServe datatype, its shape and its elements as
// raw little-endian bytes, row-major (BOOL one byte, 0 or 1). Build one with [NewTensor],
// [Obs], [NewFP16] or [NewBF16]; read one with [Values] or the typed accessors. A Tensor is
// a value; it is safe for concurrent reads, and the client never modifies one it is given.
type Tensor struct {
	Name     string
	Datatype string
	Shape    []int64
	Data     []byte
}

// Elem is a Go element type with a KServe datatype of its own. FP16 and BF16 have none:
// they travel as raw uint16 bits ([NewFP16], [NewBF16], [Tensor.Bits16]).
type Elem interface {
	bool | int8 | int16 | int32 | int64 | uint8 | uint16 | uint32 | uint64 | float32 | float64
}

// DatatypeOf is the datatype of T (uint16 is UINT16).
func DatatypeOf[T Elem]() string {
	var z T
	switch any(z).(type) {
	case bool:
		return BOOL
	case int8:
		return INT8
	case int16:
		return INT16
	case int32:
		return INT32
	case int64:
		return INT64
	case uint8:
		return UINT8
	case uint16:
		return UINT16
	case uint32:
		return UINT32
	case uint64:
		return UINT64
	case float32:
		return FP32
	default:
		return FP64
	}
}

// NewTensor makes the tensor name of the given shape from data (row-major). A nil shape
// means one dimension of len(data). The data is copied.
func NewTensor[T Elem](name string, shape []int64, data []T) Tensor {
	if shape == nil {
		shape = []int64{int64(len(data))}
	}
	return Tensor{Name: name, Datatype: DatatypeOf[T](), Shape: append([]int64(nil), shape...), Data: encode(data)}
}

// Obs is an unnamed tensor for [Policy.Act]: one observation (shape without the batch
// dimension) or a batch. Without a shape it is the vector data.
func Obs[T Elem](data []T, shape ...int64) Tensor {
	if len(shape) == 0 {
		shape = nil
	}
	return NewTensor("", shape, data)
}

// NewFP16 makes an FP16 tensor from IEEE half-precision bit patterns (see [Float32ToFP16]).
func NewFP16(name string, shape []int64, bits []uint16) Tensor {
	t := NewTensor(name, shape, bits)
	t.Datatype = FP16
	return t
}

// NewBF16 makes a BF16 tensor from bfloat16 bit patterns (see [Float32ToBF16]).
func NewBF16(name string, shape []int64, bits []uint16) Tensor {
	t := NewTensor(name, shape, bits)
	t.Datatype = BF16
	return t
}

// NumElements is the product of the shape.
func (t Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// check reports a tensor whose bytes do not match its datatype and shape.
func (t Tensor) check() error {
	size := ElementSize(t.Datatype)
	if size == 0 {
		return fmt.Errorf("tensor %q: unsupported datatype %q", t.Name, t.Datatype)
	}
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
	}
	if want := t.NumElements() * int64(size); int64(len(t.Data)) != want {
		return fmt.Errorf("tensor %q: %d bytes of data, but shape %v of %s takes %d", t.Name, len(t.Data), t.Shape, t.Datatype, want)
	}
	return nil
}

// Values returns t's elements as []T; T must match t's datatype (uint16 also reads FP16
// and BF16 as their bits).
func Values[T Elem](t Tensor) ([]T, error) {
	dt := DatatypeOf[T]()
	if dt != t.Datatype && !(dt == UINT16 && (t.Datatype == FP16 || t.Datatype == BF16)) {
		return nil, fmt.Errorf("tensor %q is %s, not %s", t.Name, t.Datatype, dt)
	}
	size := ElementSize(dt)
	if len(t.Data)%size != 0 {
		return nil, fmt.Errorf("tensor %q: %d bytes is not a whole number of %s", t.Name, len(t.Data), dt)
	}
	return decode[T](t.Data), nil
}

// Float32s returns an FP32 tensor's elements; FP16 and BF16 are widened to float32.
func (t Tensor) Float32s() ([]float32, error) {
	switch t.Datatype {
	case FP16, BF16:
		bits, err := Values[uint16](t)
		if err != nil {
			return nil, err
		}
		out := make([]float32, len(bits))
		for i, b := range bits {
			if t.Datatype == FP16 {
				out[i] = FP16ToFloat32(b)
			} else {
				out[i] = BF16ToFloat32(b)
			}
		}
		return out, nil
	}
	return Values[float32](t)
}

// Float64s returns an FP64 tensor's elements.
func (t Tensor) Float64s() ([]float64, error) { return Values[float64](t) }

// Int64s returns an INT64 tensor's elements.
func (t Tensor) Int64s() ([]int64, error) { return Values[int64](t) }

// Int32s returns an INT32 tensor's elements.
func (t Tensor) Int32s() ([]int32, error) { return Values[int32](t) }

// Bools returns a BOOL tensor's elements.
func (t Tensor) Bools() ([]bool, error) { return Values[bool](t) }

// Bits16 returns an FP16, BF16 or UINT16 tensor's elements as raw 16-bit patterns.
func (t Tensor) Bits16() ([]uint16, error) { return Values[uint16](t) }

// AsFloat64 returns any numeric tensor's elements widened to float64 (BOOL as 0/1).
func (t Tensor) AsFloat64() ([]float64, error) {
	size := ElementSize(t.Datatype)
	if size == 0 {
		return nil, fmt.Errorf("tensor %q: unsupported datatype %q", t.Name, t.Datatype)
	}
	n := len(t.Data) / size
	out := make([]float64, n)
	d := t.Data
	for i := 0; i < n; i++ {
		b := d[i*size:]
		switch t.Datatype {
		case BOOL, UINT8:
			out[i] = float64(b[0])
		case INT8:
			out[i] = float64(int8(b[0]))
		case INT16:
			out[i] = float64(int16(binary.LittleEndian.Uint16(b)))
		case UINT16:
			out[i] = float64(binary.LittleEndian.Uint16(b))
		case FP16:
			out[i] = float64(FP16ToFloat32(binary.LittleEndian.Uint16(b)))
		case BF16:
			out[i] = float64(BF16ToFloat32(binary.LittleEndian.Uint16(b)))
		case INT32:
			out[i] = float64(int32(binary.LittleEndian.Uint32(b)))
		case UINT32:
			out[i] = float64(binary.LittleEndian.Uint32(b))
		case FP32:
			out[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(b)))
		case INT64:
			out[i] = float64(int64(binary.LittleEndian.Uint64(b)))
		case UINT64:
			out[i] = float64(binary.LittleEndian.Uint64(b))
		case FP64:
			out[i] = math.Float64frombits(binary.LittleEndian.Uint64(b))
		}
	}
	return out, nil
}

func encode[T Elem](data []T) []byte {
	var z T
	switch v := any(data).(type) {
	case []bool:
		out := make([]byte, len(v))
		for i, x := range v {
			if x {
				out[i] = 1
			}
		}
		return out
	case []int8:
		out := make([]byte, len(v))
		for i, x := range v {
			out[i] = byte(x)
		}
		return out
	case []uint8:
		return append([]byte(nil), v...)
	}
	_ = z
	size := ElementSize(DatatypeOf[T]())
	out := make([]byte, len(data)*size)
	for i, x := range data {
		b := out[i*size:]
		switch x := any(x).(type) {
		case int16:
			binary.LittleEndian.PutUint16(b, uint16(x))
		case uint16:
			binary.LittleEndian.PutUint16(b, x)
		case int32:
			binary.LittleEndian.PutUint32(b, uint32(x))
		case uint32:
			binary.LittleEndian.PutUint32(b, x)
		case float32:
			binary.LittleEndian.PutUint32(b, math.Float32bits(x))
		case int64:
			binary.LittleEndian.PutUint64(b, uint64(x))
		case uint64:
			binary.LittleEndian.PutUint64(b, x)
		case float64:
			binary.LittleEndian.PutUint64(b, math.Float64bits(x))
		}
	}
	return out
}

func decode[T Elem](b []byte) []T {
	size := ElementSize(DatatypeOf[T]())
	n := len(b) / size
	out := make([]T, n)
	switch o := any(out).(type) {
	case []bool:
		for i := range o {
			o[i] = b[i] != 0
		}
	case []int8:
		for i := range o {
			o[i] = int8(b[i])
		}
	case []uint8:
		copy(o, b)
	case []int16:
		for i := range o {
			o[i] = int16(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case []uint16:
		for i := range o {
			o[i] = binary.LittleEndian.Uint16(b[2*i:])
		}
	case []int32:
		for i := range o {
			o[i] = int32(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case []uint32:
		for i := range o {
			o[i] = binary.LittleEndian.Uint32(b[4*i:])
		}
	case []float32:
		for i := range o {
			o[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case []int64:
		for i := range o {
			o[i] = int64(binary.LittleEndian.Uint64(b[8*i:]))
		}
	case []uint64:
		for i := range o {
			o[i] = binary.LittleEndian.Uint64(b[8*i:])
		}
	case []float64:
		for i := range o {
			o[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:]))
		}
	}
	return out
}

// Float32ToBF16 rounds f to bfloat16 (round to nearest even; NaN stays NaN).
func Float32ToBF16(f float32) uint16 {
	u := math.Float32bits(f)
	if f != f {
		return uint16(u>>16) | 0x40
	}
	u += 0x7fff + (u>>16)&1
	return uint16(u >> 16)
}

// BF16ToFloat32 widens a bfloat16 bit pattern (exact).
func BF16ToFloat32(b uint16) float32 { return math.Float32frombits(uint32(b) << 16) }

// Float32ToFP16 rounds f to IEEE half precision (round to nearest even; overflow to ±Inf,
// NaN stays NaN, subnormals kept).
func Float32ToFP16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	exp := int32(u>>23) & 0xff
	man := u & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN
		if man != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127 > 15:
		return sign | 0x7c00
	case exp-127 >= -14: // normal half
		e := uint32(exp-127+15) << 10
		m := man >> 13
		h := e | m
		rest := man & 0x1fff
		if rest > 0x1000 || rest == 0x1000 && m&1 == 1 {
			h++ // may carry into the exponent, up to Inf: correct
		}
		return sign | uint16(h)
	case exp-127 >= -25: // subnormal half
		man |= 0x800000
		shift := uint32(-14-(exp-127)) + 13
		m := man >> shift
		rest := man & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || rest == half && m&1 == 1 {
			m++
		}
		return sign | uint16(m)
	}
	return sign
}

// FP16ToFloat32 widens an IEEE half-precision bit pattern (exact).
func FP16ToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	man := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp == 0:
		if man == 0 {
			return math.Float32frombits(sign)
		}
		f := float32(man) / (1 << 24)
		if sign != 0 {
			f = -f
		}
		return f
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

func containsAny(s string, subs ...string) bool {
	for _, sub := range subs {
		if len(sub) <= len(s) {
			for i := 0; i+len(sub) <= len(s); i++ {
				if s[i:i+len(sub)] == sub {
					return true
				}
			}
		}
	}
	return false
}
