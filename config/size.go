package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Size is a number of bytes. In a config it is written with a unit, decimal (kB, MB, GB, TB:
// powers of 1000) or binary (KiB, MiB, GiB, TiB: powers of 1024), or as a plain number of
// bytes: 64MiB, 512KiB, 1GB, 1.5GiB, 1048576.
type Size int64

// Units of Size.
const (
	B   Size = 1
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
	TiB Size = 1 << 40
	KB  Size = 1e3
	MB  Size = 1e6
	GB  Size = 1e9
	TB  Size = 1e12
)

var sizeUnits = []struct {
	name string
	size Size
}{
	{"TiB", TiB}, {"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB},
	{"TB", TB}, {"GB", GB}, {"MB", MB}, {"kB", KB}, {"KB", KB}, {"B", B},
}

// ParseSize parses a size: a non-negative number, optionally fractional, then optionally a
// unit (B, kB/KB, MB, GB, TB, KiB, MiB, GiB, TiB), spaces allowed between. A fraction must
// come out as whole bytes.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	num, unit := t, B
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.name) {
			num, unit = strings.TrimSpace(strings.TrimSuffix(t, u.name)), u.size
			break
		}
	}
	if num == "" || strings.ContainsAny(num, "+-eExX_") {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n > math.MaxInt64/int64(unit) {
			return 0, fmt.Errorf("%q is too large", s)
		}
		return Size(n) * unit, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	b := f * float64(unit)
	if b >= math.MaxInt64 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	if b != math.Trunc(b) {
		return 0, fmt.Errorf("%q is not a whole number of bytes", s)
	}
	return Size(b), nil
}

// String writes s with the largest unit that divides it, binary first: 64MiB, 1GB, 1000B.
func (s Size) String() string {
	if s == 0 {
		return "0B"
	}
	for _, u := range sizeUnits {
		if u.name != "KB" && s%u.size == 0 {
			return strconv.FormatInt(int64(s/u.size), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalText writes s as String does.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a size as ParseSize does.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}
