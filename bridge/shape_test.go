package bridge

import (
	"math"
	"testing"
)

func TestElements(t *testing.T) {
	for _, c := range []struct {
		shape []int64
		n     int64
		ok    bool
	}{
		{nil, 1, true},
		{[]int64{2, 3, 4}, 24, true},
		{[]int64{3, 6148914691236517206}, 0, false}, // 2 mod 2^64
		{[]int64{4, 1 << 62}, 0, false},             // 0 mod 2^64
		{[]int64{1 << 31, 1 << 31, 2}, 0, false},    // 2^63
		{[]int64{math.MaxInt64}, math.MaxInt64, true},
		{[]int64{math.MaxInt64, 1}, math.MaxInt64, true},
		{[]int64{1 << 62, 4, 0}, 0, true}, // a zero dimension: no elements, whatever the others
		{[]int64{2, -1}, 0, false},
		{[]int64{0, -1}, 0, false},
	} {
		n, ok := Elements(c.shape)
		if ok != c.ok || ok && n != c.n {
			t.Errorf("Elements(%v) = %d %v, want %d %v", c.shape, n, ok, c.n, c.ok)
		}
		if want := map[bool]int64{true: c.n, false: -1}[c.ok]; NumElements(c.shape) != want {
			t.Errorf("NumElements(%v) = %d, want %d", c.shape, NumElements(c.shape), want)
		}
	}
	if n, ok := ByteSize(Float64, []int64{2, 3}); !ok || n != 48 {
		t.Errorf("ByteSize FP64 [2,3] = %d %v", n, ok)
	}
	if _, ok := ByteSize(Float64, []int64{1 << 61}); ok {
		t.Error("ByteSize FP64 [2^61] fits")
	}
	if _, ok := ByteSize(String, []int64{1}); ok {
		t.Error("ByteSize of BYTES")
	}
}
