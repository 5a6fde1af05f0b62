package load

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/server"
)

// startPolicydSHM serves m on policyd's real HTTP front end with the shared-memory extension on
// and the operator routes guarded by token; it returns the infer URL.
func startPolicydSHM(t *testing.T, m *affine, token string) string {
	u, _ := startPolicydSHMBoth(t, m, token)
	return u
}

// startPolicydSHMBoth is startPolicydSHM with the gRPC front end too: the infer URL and the
// gRPC address.
func startPolicydSHMBoth(t *testing.T, m *affine, token string) (string, string) {
	t.Helper()
	s := server.New(oneModel{m}, nil, server.Options{
		SharedMemory: server.SharedMemoryOptions{Enabled: true, MaxRegions: 8, MaxBytes: 1 << 20},
		Admin:        server.Admin{Token: func() string { return token }},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve(ln) //nolint:errcheck // ends with Shutdown
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go s.ServeGRPC(gln) //nolint:errcheck // ends with Shutdown
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String() + "/v2/models/affine/infer", gln.Addr().String()
}

// leftovers lists the /dev/shm objects of prefix.
func leftovers(t *testing.T, prefix string) []string {
	t.Helper()
	m, err := filepath.Glob("/dev/shm/" + prefix + "-*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestSHMAgainstPolicyd(t *testing.T) {
	if _, err := os.Stat("/dev/shm"); err != nil {
		t.Skip("no /dev/shm")
	}
	for _, tc := range []struct {
		name          string
		rewrite, grpc bool
	}{{"once", false, false}, {"rewrite", true, false}, {"grpc", true, true}} {
		name, rewrite := tc.name, tc.rewrite
		t.Run(name, func(t *testing.T) {
			// The model fails any input other than affineIn's bytes: every request must read
			// the inputs this generator wrote into the region.
			want, _ := fp32Bytes(affineIn[0])
			m := &affine{want: want}
			prefix := "pdbench-test-" + name
			u, gaddr := startPolicydSHMBoth(t, m, "s3cret")
			req := SHMRequest{URL: u, Inputs: affineIn, Outputs: affineRef().Outputs,
				Token: "s3cret", Rewrite: rewrite, Prefix: prefix}
			wantProto := "shm"
			if tc.grpc {
				req.GRPCAddr, wantProto = gaddr, "grpc-shm"
			}
			res, err := RunSHM(context.Background(), req, Options{Mode: "closed", Connections: 3, Duration: 300 * time.Millisecond,
				Warmup: 50 * time.Millisecond, Check: affineRef()})
			if err != nil {
				t.Fatal(err)
			}
			if res.Protocol != wantProto || res.Concurrency != 3 {
				t.Errorf("result labels: protocol %q concurrency %d", res.Protocol, res.Concurrency)
			}
			if res.Requests < 30 || res.Errors != 0 {
				t.Fatalf("%d requests, %d errors (last %q): want many, none failed", res.Requests, res.Errors, res.LastError)
			}
			if calls := m.calls.Load(); calls < res.Requests+1 {
				t.Errorf("server ran %d requests, the generator counted %d answered", calls, res.Requests)
			}
			// The request carries no tensor data: a small JSON body.
			if res.BodyBytes > 400 || res.BodyBytes == 0 {
				t.Errorf("body %d bytes: want a small JSON naming the regions", res.BodyBytes)
			}
			if l := leftovers(t, prefix); len(l) != 0 {
				t.Errorf("objects left in /dev/shm: %v", l)
			}
		})
	}
}

func TestSHMCheckFailsOnWrongReference(t *testing.T) {
	for _, grpc := range []bool{false, true} {
		m := &affine{}
		url, gaddr := startPolicydSHMBoth(t, m, "tok")
		ref := affineRef()
		ref.Outputs[0].Data[5] += 0.5 // one value off
		req := SHMRequest{URL: url, Inputs: affineIn, Outputs: ref.Outputs, Token: "tok", Prefix: "pdbench-test-wrong"}
		if grpc {
			req.GRPCAddr = gaddr
		}
		_, err := RunSHM(context.Background(), req, Options{Mode: "closed", Connections: 2, Duration: 100 * time.Millisecond, Check: ref})
		if !errors.Is(err, ErrCheck) || !strings.Contains(err.Error(), `output "action"[5]`) {
			t.Fatalf("grpc %v: err = %v, want a failed check naming action[5]", grpc, err)
		}
		if m.calls.Load() != 1 {
			t.Errorf("grpc %v: server ran %d requests: want only the checked one, no load", grpc, m.calls.Load())
		}
		if l := leftovers(t, "pdbench-test-wrong"); len(l) != 0 {
			t.Errorf("grpc %v: objects left in /dev/shm after a failed check: %v", grpc, l)
		}
	}
}

func TestSHMNeedsTokenAndExtension(t *testing.T) {
	m := &affine{}
	url := startPolicydSHM(t, m, "s3cret")
	_, err := RunSHM(context.Background(), SHMRequest{URL: url, Inputs: affineIn, Outputs: affineRef().Outputs, Token: "wrong", Prefix: "pdbench-test-token"},
		Options{Mode: "closed", Connections: 1, Duration: 100 * time.Millisecond, Check: affineRef()})
	if err == nil || !strings.Contains(err.Error(), "register") || !strings.Contains(err.Error(), "401") {
		t.Fatalf("err = %v, want the register refused with 401", err)
	}
	if l := leftovers(t, "pdbench-test-token"); len(l) != 0 {
		t.Errorf("objects left in /dev/shm: %v", l)
	}
}
