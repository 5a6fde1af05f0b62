package bridge

import "math"

// Elements is the number of elements of a tensor of this shape (1 for a scalar, 0 when a
// dimension is 0). It checks before it multiplies: ok is false when a dimension is negative or
// the product does not fit in an int64, so a shape a client sent can never wrap to a small
// count ([3, 6148914691236517206] is not 2 elements). Every Go size computed from dimensions
// goes through it (or ByteSize).
func Elements(shape []int64) (n int64, ok bool) {
	zero := false
	for _, d := range shape {
		if d < 0 {
			return 0, false
		}
		zero = zero || d == 0
	}
	if zero {
		return 0, true // whatever the other dimensions are
	}
	n = 1
	for _, d := range shape {
		if n > math.MaxInt64/d {
			return 0, false
		}
		n *= d
	}
	return n, true
}

// ByteSize is the number of bytes of a dense tensor of dt and this shape. ok is false when
// Elements is, when dt has no fixed element size (BYTES, an unknown datatype), or when the
// size does not fit in an int64.
func ByteSize(dt DType, shape []int64) (int64, bool) {
	n, ok := Elements(shape)
	size := int64(dt.Size())
	if !ok || size == 0 || n > math.MaxInt64/size {
		return 0, false
	}
	return n * size, true
}
