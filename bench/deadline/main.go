// Command deadline measures deadline-bounded actions (docs/api.md, Deadlines): against a
// running policyd it first measures the capacity of a model at batch 1 (closed loop, -c
// connections), then offers -overload times that rate open-loop (constant arrivals) for -d,
// every request with X-Deadline-Us: -deadline-us, and counts the answers: the model's on time,
// those later than the deadline plus -slack as the client saw them, the fallbacks by kind,
// those marked late, the 504s and other errors. bench/deadline.sh starts the server.
//
//	go run ./bench/deadline -url http://127.0.0.1:8000/v2/models/mlp-med/infer -width 64
package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

func main() {
	url := flag.String("url", "http://127.0.0.1:8000/v2/models/mlp-med/infer", "inference `URL`")
	width := flag.Int("width", 64, "observation width of the FP32[1,W] input named -input")
	input := flag.String("input", "obs", "input `NAME`")
	binaryBody := flag.Bool("binary", false, "send the observation as a binary tensor (Inference-Header-Content-Length) instead of JSON")
	conns := flag.Int("c", 4, "connections of the capacity measurement")
	inflight := flag.Int("inflight", 1024, "most requests in flight under overload; a request due beyond it is not sent (counted)")
	capDur := flag.Duration("capacity-d", 3*time.Second, "capacity measurement `DURATION`")
	overload := flag.Float64("overload", 3, "offered load as a multiple of the measured capacity")
	dur := flag.Duration("d", 5*time.Second, "overload `DURATION`")
	deadlineUs := flag.Int("deadline-us", 2000, "X-Deadline-Us of every request under overload")
	slack := flag.Duration("slack", 200*time.Microsecond, "an answer later than the deadline plus this counts as late at the client")
	flag.Parse()

	body, headerLen := requestBody(*input, *width, *binaryBody)
	client := &fasthttp.Client{MaxConnsPerHost: 4096, ReadTimeout: 10 * time.Second, WriteTimeout: 10 * time.Second}

	// Capacity: closed loop without deadlines.
	var done atomic.Int64
	stop := time.Now().Add(*capDur)
	var wg sync.WaitGroup
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) {
				if status, _ := post(client, *url, body, headerLen, 0); status == 200 {
					done.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	capacity := float64(done.Load()) / capDur.Seconds()
	if capacity <= 0 {
		fmt.Fprintln(os.Stderr, "deadline: no request succeeded while measuring capacity")
		os.Exit(1)
	}
	rate := *overload * capacity
	fmt.Printf("capacity: %.0f req/s (closed loop, %d connections, %s); offered: %.0f req/s (%.1f×) for %s, deadline %dµs\n",
		capacity, *conns, *capDur, rate, *overload, *dur, *deadlineUs)

	// Overload: open loop, constant arrivals.
	type result struct {
		status   int
		fallback string
		lateUs   int // X-Policyd-Late-Us: how late the server encoded it; 0: on time
		took     time.Duration
	}
	n := int(rate * dur.Seconds())
	results := make([]result, n)
	interval := time.Duration(float64(time.Second) / rate)
	begin := time.Now()
	sem := make(chan struct{}, *inflight)
	var dropped atomic.Int64
	for i := range n {
		due := begin.Add(time.Duration(i) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		select {
		case sem <- struct{}{}:
		default:
			dropped.Add(1) // the client's own bound on requests in flight
			results[i].status = -1
			continue
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			start := time.Now()
			status, h := post(client, *url, body, headerLen, *deadlineUs)
			results[i] = result{status: status, fallback: h.fallback, lateUs: h.lateUs, took: time.Since(start)}
		}()
	}
	wg.Wait()
	limit := time.Duration(*deadlineUs)*time.Microsecond + *slack
	var model, fallbacks, marked, lateServer, lateClient, lateModel, lateFallback, gw, other int
	var worstServer int
	kinds := map[string]int{}
	others := map[int]int{} // by status; 0: no answer (a client error)
	var tooks []time.Duration
	for _, r := range results {
		if r.status == -1 {
			continue
		}
		tooks = append(tooks, r.took)
		switch {
		case r.status == 504:
			gw++
		case r.status != 200:
			other++
			others[r.status]++
		case r.fallback != "":
			fallbacks++
			kinds[r.fallback]++
		default:
			model++
		}
		if r.lateUs > 0 {
			marked++
			worstServer = max(worstServer, r.lateUs)
			if time.Duration(r.lateUs)*time.Microsecond > *slack {
				lateServer++
			}
		}
		if r.took > limit {
			lateClient++
			if r.status == 200 && r.fallback == "" {
				lateModel++
			} else {
				lateFallback++
			}
		}
	}
	slices.Sort(tooks)
	pct := func(p float64) time.Duration {
		if len(tooks) == 0 {
			return 0
		}
		return tooks[min(len(tooks)-1, int(p*float64(len(tooks))))]
	}
	var ks []string
	for k, v := range kinds {
		ks = append(ks, fmt.Sprintf("%s %d", k, v))
	}
	slices.Sort(ks)
	fmt.Printf("sent %d in %s (%d due not sent: %d in flight already)\n", len(tooks), time.Since(begin).Round(time.Millisecond), dropped.Load(), *inflight)
	var byStatus []string
	for k, v := range others {
		byStatus = append(byStatus, fmt.Sprintf("%d: %d", k, v))
	}
	slices.Sort(byStatus)
	fmt.Printf("model answers: %d; fallbacks: %d (%s); 504: %d; other errors: %d (%s)\n",
		model, fallbacks, strings.Join(ks, ", "), gw, other, strings.Join(byStatus, ", "))
	fmt.Printf("answers the server marked late (X-Policyd-Late-Us): %d, of which later than deadline + %s: %d (worst %dµs)\n",
		marked, *slack, lateServer, worstServer)
	fmt.Printf("answers later than deadline + %s at the client: %d (model answers %d, fallbacks and 504s %d)\n",
		*slack, lateClient, lateModel, lateFallback)
	fmt.Printf("client latency: p50 %s p99 %s p99.9 %s max %s\n", pct(0.5), pct(0.99), pct(0.999), pct(1))
}

type marks struct {
	fallback string
	lateUs   int
}

// post sends body; headerLen > 0: a binary request whose JSON header is its first headerLen
// bytes.
func post(c *fasthttp.Client, url string, body []byte, headerLen, deadlineUs int) (int, marks) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url)
	req.Header.SetMethod("POST")
	if headerLen > 0 {
		req.Header.SetContentType("application/octet-stream")
		req.Header.Set("Inference-Header-Content-Length", strconv.Itoa(headerLen))
	} else {
		req.Header.SetContentType("application/json")
	}
	if deadlineUs > 0 {
		req.Header.Set("X-Deadline-Us", fmt.Sprint(deadlineUs))
	}
	req.SetBody(body)
	if err := c.Do(req, resp); err != nil {
		return 0, marks{}
	}
	late, _ := strconv.Atoi(string(resp.Header.Peek("X-Policyd-Late-Us")))
	return resp.StatusCode(), marks{fallback: string(resp.Header.Peek("X-Policyd-Fallback")), lateUs: late}
}

// requestBody is one FP32[1,width] observation of random values: JSON, or with binary the
// binary tensor extension's body (a JSON header, then the raw little-endian floats) and the
// header's length.
func requestBody(input string, width int, binary bool) ([]byte, int) {
	if binary {
		head := fmt.Sprintf(`{"inputs":[{"name":%q,"datatype":"FP32","shape":[1,%d],"parameters":{"binary_data_size":%d}}]}`, input, width, 4*width)
		b := []byte(head)
		for range width {
			b = le.AppendUint32(b, math.Float32bits(float32(rand.Float64()-0.5)))
		}
		return b, len(head)
	}
	vals := make([]string, width)
	for i := range vals {
		vals[i] = fmt.Sprintf("%.3f", rand.Float64()-0.5)
	}
	return []byte(fmt.Sprintf(`{"inputs":[{"name":%q,"datatype":"FP32","shape":[1,%d],"data":[%s]}]}`, input, width, strings.Join(vals, ","))), 0
}

var le = binary.LittleEndian
