//go:build cgo

package server

import (
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkShadowOverhead is what shadow evaluation costs the primary: mlp-med (the peers'
// model, cpu backend) at batch 1, 16 connections over loopback TCP with JSON requests, the
// primary 1.0.0 shadowed by a second export (1.1.0, other weights) at 100 % ("on") or not at
// all ("off"). The two sub-benchmarks alternate when run with -count N:
//
//	go test -run '^$' -bench BenchmarkShadowOverhead -count 5 -benchtime 4000x ./server/
//
// It reports the primary's p50 and p99 latency (µs), its throughput (req/s), and for "on" the
// shadow's compared and dropped shares (budget-dropped: those the CPU budget dropped, at the
// default server.shadow_cpu_share). docs/rollout.md, What the primary pays, has numbers.
func BenchmarkShadowOverhead(b *testing.B) {
	rt, onnx := nativeRuntime(b, mlpMedModel)
	repo := shadowRepo(b, rt, "mlp", nil, onnx, perturbONNX(b, onnx, 0.02))
	for _, on := range []bool{false, true} {
		name := "off"
		if on {
			name = "on"
		}
		b.Run(name, func(b *testing.B) {
			opts := Options{}
			if on {
				opts.Shadow = shadowOf("1.1.0", 1, nil)
				// SHADOW_CPU_SHARE: server.shadow_cpu_share for this run (default: the server's).
				if v := os.Getenv("SHADOW_CPU_SHARE"); v != "" {
					f, err := strconv.ParseFloat(v, 64)
					if err != nil {
						b.Fatalf("SHADOW_CPU_SHARE: %v", err)
					}
					opts.ShadowCPUShare = f
				}
			}
			s := New(NewRegistry(repo), nil, opts)
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			go s.Serve(ln)
			defer s.Shutdown(b.Context())
			const conns = 16
			client := &fasthttp.HostClient{Addr: ln.Addr().String(), MaxConns: conns}
			obs := make([]float32, 64)
			for i := range obs {
				obs[i] = float32(i%13)/13 - 0.5
			}
			body := []byte(fmt.Sprintf(`{"inputs":[{"name":"obs","datatype":"FP32","shape":[1,64],"data":%s}]}`, jsonFloats(obs)))
			do := func(lat *[]time.Duration) {
				req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
				defer fasthttp.ReleaseRequest(req)
				defer fasthttp.ReleaseResponse(resp)
				req.SetRequestURI("http://policyd/v2/models/mlp/versions/1.0.0/infer")
				req.Header.SetMethod("POST")
				req.SetBody(body)
				t0 := time.Now()
				if err := client.Do(req, resp); err != nil || resp.StatusCode() != 200 {
					b.Errorf("%v %d %s", err, resp.StatusCode(), resp.Body())
				}
				if lat != nil {
					*lat = append(*lat, time.Since(t0))
				}
			}
			for range 200 { // warm the connections and both versions
				do(nil)
			}
			n := b.N
			lats := make([][]time.Duration, conns)
			var wg sync.WaitGroup
			b.ResetTimer()
			start := time.Now()
			for c := range conns {
				wg.Add(1)
				go func() {
					defer wg.Done()
					lats[c] = make([]time.Duration, 0, n/conns+1)
					for i := c; i < n; i += conns {
						do(&lats[c])
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			all := slices.Concat(lats...)
			slices.Sort(all)
			b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-µs")
			b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-µs")
			b.ReportMetric(float64(len(all))/el.Seconds(), "req/s")
			if on {
				r := s.ShadowReport("mlp", "1.0.0", "1.1.0")
				tot := float64(r.Samples + r.Dropped + r.Errors + r.Skipped)
				if tot > 0 {
					b.ReportMetric(float64(r.Samples)/tot, "compared/op")
					b.ReportMetric(float64(r.Dropped)/tot, "dropped/op")
					b.ReportMetric(float64(r.DroppedBudget)/tot, "budget-dropped/op")
					if bu := s.shadows.budget; bu != nil {
						bu.mu.Lock()
						b.ReportMetric(bu.est/1e3, "shadow-run-µs")
						bu.mu.Unlock()
					}
				}
			}
		})
	}
}

func jsonFloats(v []float32) string {
	b := []byte{'['}
	for i, f := range v {
		if i > 0 {
			b = append(b, ',')
		}
		b = fmt.Appendf(b, "%g", f)
	}
	return string(append(b, ']'))
}
