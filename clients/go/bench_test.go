//go:build cgo

package policyd

import (
	"context"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHTTPBackends compares the HTTP libraries (net/http, fasthttp) and gRPC through
// this client against a real policyd serving the peers' mlp-med (obs FP32 [-1,64] → action
// [-1,8]), one call at a time, at batch 1 and 32. Besides ns/op it reports the client
// process's own CPU time per call (getrusage: user + system), the cost the client library
// adds on the caller's machine. docs/clients.md has the numbers and the choice.
//
//	POLICYD_BIN=$PWD/bin/policyd go test -run '^$' -bench HTTPBackends -benchtime 3s -count 3 ./clients/go
func BenchmarkHTTPBackends(b *testing.B) {
	repo := b.TempDir()
	linkModel(b, repo, "mlp-med", "../shared/peers/models/mlp-med.onnx")
	d := startDaemon(b, repo, "")
	for _, batch := range []int64{1, 32} {
		obs := []Tensor{NewTensor("obs", []int64{batch, 64}, make([]float32, batch*64))}
		for _, be := range []struct {
			name string
			new  func() (*Client, error)
		}{
			{"net-http", func() (*Client, error) { return New(d.url) }},
			{"fasthttp", func() (*Client, error) { return New(d.url, withFastHTTP()) }},
			{"grpc", func() (*Client, error) { return NewGRPC(d.grpcAddr) }},
		} {
			b.Run(be.name+"/b"+itoa(batch), func(b *testing.B) {
				c, err := be.new()
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				ctx := context.Background()
				for i := 0; i < 100; i++ { // warm the connection and the server
					if _, err := c.Infer(ctx, "mlp-med", obs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportAllocs()
				cpu0 := cpuTime()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					if _, err := c.Infer(ctx, "mlp-med", obs); err != nil {
						b.Fatal(err)
					}
				}
				b.StopTimer()
				b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "client-cpu-ns/op")
			})
		}
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func itoa(n int64) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}
