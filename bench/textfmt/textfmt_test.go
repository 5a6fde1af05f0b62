package textfmt

import (
	"math"
	"testing"
)

func TestNum(t *testing.T) {
	for _, c := range []struct {
		v    float64
		d    int
		want string
	}{
		{0, 0, "0"}, {999, 0, "999"}, {1000, 0, "1,000"}, {1234567.891, 1, "1,234,567.9"},
		{-1234.5, 2, "-1,234.50"}, {-0.4, 0, "-0"}, {math.NaN(), 1, "–"}, {100000, 0, "100,000"},
	} {
		if got := Num(c.v, c.d); got != c.want {
			t.Errorf("Num(%v, %d) = %q, want %q", c.v, c.d, got, c.want)
		}
	}
}
