package config

import (
	"strings"
	"testing"
)

// server.grpc_addr: HOST:PORT like server.addr, or "" / "off" to turn gRPC off.
func TestGRPCAddr(t *testing.T) {
	if d := Defaults().Server.GRPCAddr; d != "127.0.0.1:8001" {
		t.Errorf("default server.grpc_addr %q, want 127.0.0.1:8001", d)
	}
	for _, tt := range []struct {
		addr, want string // want "": valid
		on         bool
	}{
		{"127.0.0.1:8001", "", true},
		{":8001", "", true},
		{"[::1]:0", "", true},
		{"", "", false},
		{"off", "", false},
		{"8001", `server.grpc_addr: must be HOST:PORT like 127.0.0.1:8001 or :8001, or "off", got "8001"`, true},
		{"localhost:http2", `server.grpc_addr: must be HOST:PORT`, true},
		{"127.0.0.1:70000", `server.grpc_addr: must be HOST:PORT`, true},
	} {
		c := Defaults()
		c.Repository.Path = "testdata/repo"
		c.Server.GRPCAddr = tt.addr
		err := c.Validate()
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.addr, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%q: %v, want %q", tt.addr, err, tt.want)
		}
		if GRPCEnabled(tt.addr) != tt.on {
			t.Errorf("GRPCEnabled(%q) = %v, want %v", tt.addr, !tt.on, tt.on)
		}
	}
}
