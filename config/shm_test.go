package config

import (
	"strings"
	"testing"
)

// shared_memory: off by default, its bounds validated with their key paths.
func TestSharedMemoryConfig(t *testing.T) {
	d := Defaults().SharedMemory
	if d.Enabled || d.MaxRegions != 64 || d.MaxBytes != 1*GiB {
		t.Errorf("defaults %+v, want off, 64 regions, 1GiB", d)
	}
	for _, tt := range []struct {
		sm   SharedMemory
		want string
	}{
		{SharedMemory{Enabled: true, MaxRegions: 0, MaxBytes: 1}, "shared_memory.max_regions"},
		{SharedMemory{Enabled: true, MaxRegions: 70000, MaxBytes: 1}, "shared_memory.max_regions"},
		{SharedMemory{Enabled: true, MaxRegions: 1, MaxBytes: 0}, "shared_memory.max_bytes"},
	} {
		c := Defaults()
		c.Repository.Path = t.TempDir()
		c.SharedMemory = tt.sm
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: Validate() = %v, want a problem at %s", tt.sm, err, tt.want)
		}
	}
	c := Defaults()
	c.Repository.Path = t.TempDir()
	c.SharedMemory = SharedMemory{Enabled: true, MaxRegions: 1, MaxBytes: 4096}
	if err := c.Validate(); err != nil {
		t.Errorf("valid shared_memory: %v", err)
	}
}
