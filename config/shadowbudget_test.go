package config

import (
	"strings"
	"testing"
)

// server.shadow_cpu_share: the shadow's CPU budget, more than 0 and at most 1; default 0.025.
func TestShadowCPUShare(t *testing.T) {
	if d := Defaults().Server.ShadowCPUShare; d != 0.025 {
		t.Errorf("default server.shadow_cpu_share %v, want 0.025", d)
	}
	for _, tt := range []struct {
		share float64
		want  string // "": valid
	}{
		{0.05, ""}, {0.001, ""}, {1, ""},
		{0, "server.shadow_cpu_share"}, {-0.1, "server.shadow_cpu_share"}, {1.5, "server.shadow_cpu_share"},
	} {
		c := Defaults()
		c.Repository.Path = "testdata/repo"
		c.Server.ShadowCPUShare = tt.share
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%v: %v", tt.share, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%v: %v, want %q", tt.share, err, tt.want)
		}
	}
}
