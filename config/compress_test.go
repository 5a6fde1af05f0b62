package config

import (
	"strings"
	"testing"
)

// server.compress_min_bytes: 0 (off) or at least 128 bytes, at most 64 MiB; default 1 KiB.
func TestCompressMinBytes(t *testing.T) {
	if d := Defaults().Server.CompressMin; d != 1*KiB {
		t.Errorf("default server.compress_min_bytes %d, want 1 KiB", d)
	}
	for _, tt := range []struct {
		n    Size
		want string // "": valid
	}{
		{0, ""}, {128, ""}, {1 * KiB, ""}, {64 * MiB, ""},
		{1, "server.compress_min_bytes: must be 0 (no response compression) or at least 128 bytes"},
		{127, "at least 128 bytes"},
		{-1, "server.compress_min_bytes"},
		{64*MiB + 1, "server.compress_min_bytes"},
	} {
		c := Defaults()
		c.Repository.Path = "testdata/repo"
		c.Server.CompressMin = tt.n
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%d: %v", tt.n, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%d: %v, want %q", tt.n, err, tt.want)
		}
	}
	// Read as a size from a file's text, as every size is.
	var s Size
	if err := s.UnmarshalText([]byte("4KiB")); err != nil || s != 4*KiB {
		t.Errorf("4KiB: %d %v", s, err)
	}
}
