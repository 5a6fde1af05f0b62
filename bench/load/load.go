// Package load is policyd's HTTP load generator: KServe v2 inference requests (JSON or the
// binary tensor data extension) against one URL, closed loop or open loop, latencies in
// HdrHistograms. `policyctl bench load` is its command line; package suite drives it.
//
// Closed loop (the peers' loadgen semantics, ../shared/peers/loadgen): C workers each keep one
// request in flight on their own keep-alive connection; a request's latency is from its send to
// its answer. A slow server gets fewer requests, so its tail is bounded by C.
//
// Open loop: requests are due at a fixed arrival rate (constant spacing or Poisson), whatever
// the server does; each one's latency is measured from its intended send time, so time spent
// waiting for a free connection behind a slow answer counts (no coordinated omission). Queued
// plus in-flight requests are bounded by MaxOutstanding: a request due when the bound is
// reached is not sent and counts as dropped; one sent more than LateAfter after its due time
// counts as late.
//
// Before timing, one request is sent and its answer checked against a Reference; a failed check
// ends the run with an error that wraps ErrCheck, without load.
package load

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bench/machine"
)

// ErrCheck is wrapped by the error of a run whose first answer failed its check.
var ErrCheck = errors.New("reference check failed")

// Request is what every request of a run sends.
type Request struct {
	URL  string // http://127.0.0.1:PORT/v2/models/NAME/infer (loopback only)
	Body []byte
	// HeaderLength > 0 sends Inference-Header-Content-Length: HeaderLength (binary tensor data)
	// and Content-Type application/octet-stream; 0 sends application/json.
	HeaderLength int
}

// Options says how to load the target.
type Options struct {
	Mode        string        // "closed" or "open"
	Connections int           // closed: workers, one request in flight each; open: connections (most in flight)
	Rate        float64       // open: requests per second
	Arrival     string        // open: "constant" (default) or "poisson"
	Seed        uint64        // open, poisson: seed of the arrival times
	Outstanding int           // open: most requests queued or in flight; 0 = 4 × Connections
	LateAfter   time.Duration // open: a request sent this much after its due time is late; 0 = 1 ms
	Duration    time.Duration // measured time
	Warmup      time.Duration // load before it, not recorded
	Timeout     time.Duration // per request; 0 = 10 s
	MaxRequests int64         // closed: stop after this many measured requests; 0 = 5,000,000
	ServerPIDs  []int         // report their CPU seconds over the measured time
	Check       *Reference    // nil: the first answer must only be 200

	// Dial replaces the TCP dialer (tests use an in-memory listener).
	Dial func(addr string) (net.Conn, error)
	// Spin is how long before a due time the open-loop dispatcher stops sleeping and spins,
	// trading CPU (which a 2-core machine shared with the server lacks) for the ~15-30 µs of
	// nanosleep's wake-up latency; 0 never spins.
	Spin time.Duration
}

// Validate checks o and fills its defaults.
func (o *Options) Validate() error {
	var errs []string
	switch o.Mode {
	case "closed":
	case "open":
		if !(o.Rate > 0) {
			errs = append(errs, fmt.Sprintf("rate %v: an open-loop run needs a rate > 0 requests/s", o.Rate))
		}
		switch o.Arrival {
		case "":
			o.Arrival = "constant"
		case "constant", "poisson":
		default:
			errs = append(errs, fmt.Sprintf("arrival %q: want constant or poisson", o.Arrival))
		}
		if o.Outstanding == 0 {
			o.Outstanding = 4 * o.Connections
		}
		if o.Outstanding < o.Connections {
			errs = append(errs, fmt.Sprintf("outstanding %d: must be at least the connections (%d)", o.Outstanding, o.Connections))
		}
		if o.LateAfter == 0 {
			o.LateAfter = time.Millisecond
		}
	default:
		errs = append(errs, fmt.Sprintf("mode %q: want closed or open", o.Mode))
	}
	if o.Connections < 1 || o.Connections > 4096 {
		errs = append(errs, fmt.Sprintf("connections %d: want 1 to 4096", o.Connections))
	}
	if o.Duration <= 0 {
		errs = append(errs, fmt.Sprintf("duration %v: must be > 0", o.Duration))
	}
	if o.Warmup < 0 {
		errs = append(errs, fmt.Sprintf("warmup %v: must be >= 0", o.Warmup))
	}
	if o.Timeout == 0 {
		o.Timeout = 10 * time.Second
	}
	if o.MaxRequests == 0 {
		o.MaxRequests = 5_000_000
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// Result is one run. The JSON names of the closed-loop fields are those of the peers'
// loadgen, so its lines and ours read the same.
type Result struct {
	Label       string  `json:"label,omitempty"`
	URL         string  `json:"url"`
	Protocol    string  `json:"protocol"` // json, binary (HTTP); grpc, grpc-stream
	BodyBytes   int     `json:"body_bytes"`
	Mode        string  `json:"mode"`
	Concurrency int     `json:"concurrency"`
	DurationS   float64 `json:"duration_s"`
	Requests    int64   `json:"requests"` // answered 200 in the measured time
	Errors      int64   `json:"errors"`
	RPS         float64 `json:"rps"`
	Percentiles
	ClientCPU       float64  `json:"client_cpu_s"`
	ServerCPU       *float64 `json:"server_cpu_s,omitempty"`
	ServerCPUPerReq *float64 `json:"server_cpu_us_per_req,omitempty"`
	GOMAXPROCS      int      `json:"gomaxprocs"`
	// OtherCores is the average number of cores that processes other than this one and the
	// server used during the measured time (from /proc/stat); set only with ServerPIDs. Near
	// 0.1 or above, the numbers are disturbed.
	OtherCores *float64 `json:"other_cores,omitempty"`
	LastError  string   `json:"last_error,omitempty"`

	// Open loop only.
	TargetRPS   float64      `json:"target_rps,omitempty"`
	Arrival     string       `json:"arrival,omitempty"`
	Outstanding int          `json:"outstanding,omitempty"`
	Dropped     int64        `json:"dropped,omitempty"` // due while Outstanding were queued or in flight: not sent
	Late        int64        `json:"late,omitempty"`    // sent more than LateAfter after their due time
	Service     *Percentiles `json:"service,omitempty"` // latency from the actual send (what a closed loop would see)
	SendLag     *Percentiles `json:"send_lag,omitempty"`
}

// Overloaded reports whether an open-loop run could not keep its schedule: some requests were
// dropped, or more than 1 % were late.
func (r Result) Overloaded() bool {
	return r.Dropped > 0 || (r.Requests > 0 && float64(r.Late) > 0.01*float64(r.Requests+r.Errors))
}

// Run loads req.URL as o says and returns what it measured. It returns early, with what it
// has, when ctx ends.
func Run(ctx context.Context, req Request, o Options) (Result, error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return Result{}, fmt.Errorf("url %q: want http://HOST:PORT/...", req.URL)
	}
	if o.Dial == nil {
		if h := u.Hostname(); !(strings.HasPrefix(h, "127.") || h == "localhost" || h == "::1") {
			return Result{}, fmt.Errorf("url %q: refusing a non-loopback target", req.URL)
		}
	}
	hc := &fasthttp.HostClient{
		Addr:                u.Host,
		MaxConns:            o.Connections,
		ReadBufferSize:      64 << 10,
		WriteBufferSize:     64 << 10,
		MaxResponseBodySize: 256 << 20,
		MaxIdleConnDuration: time.Minute,
		Dial:                o.Dial,
	}
	defer hc.CloseIdleConnections()
	g := &gen{req: req, o: o, hc: hc}
	if err := g.check(); err != nil {
		return Result{}, err
	}
	res := Result{URL: req.URL, Protocol: "json", BodyBytes: len(req.Body), Mode: o.Mode,
		Concurrency: o.Connections, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	if req.HeaderLength > 0 {
		res.Protocol = "binary"
	}
	if o.Mode == "closed" {
		g.closed(ctx, &res)
	} else {
		g.open(ctx, &res)
	}
	if res.Requests == 0 && ctx.Err() == nil {
		return res, fmt.Errorf("no request succeeded in %v (%d errors; last: %s)", o.Duration, res.Errors, res.LastError)
	}
	return res, ctx.Err()
}

type gen struct {
	req Request
	o   Options
	hc  *fasthttp.HostClient

	errs    atomic.Int64
	mu      sync.Mutex
	lastErr string

	// newWorker makes one closed-loop worker: do sends one request and reports whether it
	// succeeded (counting a failure when count is set); done releases what it holds. Nil: the
	// HTTP worker (httpWorker).
	newWorker func() (do func(count bool) bool, done func())
	// abort, when set, ends the requests still in flight: the closed loop calls it when its
	// workers have not finished Timeout after the end (a gRPC stream has no per-call deadline).
	abort func()
}

// httpWorker is a closed-loop worker on the fasthttp client.
func (g *gen) httpWorker() (func(bool) bool, func()) {
	req, resp := g.newRequest(), fasthttp.AcquireResponse()
	return func(count bool) bool { return g.do(req, resp, count) },
		func() { fasthttp.ReleaseRequest(req); fasthttp.ReleaseResponse(resp) }
}

// failed counts one error and keeps its message as the last.
func (g *gen) failed(msg string) {
	g.errs.Add(1)
	g.mu.Lock()
	g.lastErr = msg
	g.mu.Unlock()
}

func (g *gen) newRequest() *fasthttp.Request {
	r := fasthttp.AcquireRequest()
	r.SetRequestURI(g.req.URL)
	r.Header.SetMethod("POST")
	if g.req.HeaderLength > 0 {
		r.Header.SetContentType("application/octet-stream")
		r.Header.Set(HeaderLength, strconv.Itoa(g.req.HeaderLength))
	} else {
		r.Header.SetContentType("application/json")
	}
	r.SetBodyRaw(g.req.Body)
	return r
}

// check sends one request and checks its answer.
func (g *gen) check() error {
	req, resp := g.newRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	if err := g.hc.DoTimeout(req, resp, g.o.Timeout); err != nil {
		return fmt.Errorf("%w: first request: %v", ErrCheck, err)
	}
	ref := g.o.Check
	if ref == nil {
		ref = &Reference{ShapeOnly: true}
	}
	if err := ref.checkResponse(resp.StatusCode(), string(resp.Header.Peek(HeaderLength)), resp.Body()); err != nil {
		return fmt.Errorf("%w: %v", ErrCheck, err)
	}
	return nil
}

// do sends one request; it reports whether the answer was a 200, counting the error otherwise.
func (g *gen) do(req *fasthttp.Request, resp *fasthttp.Response, count bool) bool {
	err := g.hc.DoTimeout(req, resp, g.o.Timeout)
	if err == nil && resp.StatusCode() == 200 {
		return true
	}
	if count {
		g.errs.Add(1)
		g.mu.Lock()
		if err != nil {
			g.lastErr = err.Error()
		} else {
			g.lastErr = fmt.Sprintf("status %d: %.120s", resp.StatusCode(), resp.Body())
		}
		g.mu.Unlock()
	}
	if err != nil { // back off a little on transport errors (server gone)
		time.Sleep(time.Millisecond)
	}
	return false
}

// window measures the CPU of this process and of the server over the measured time.
type window struct {
	start        time.Time
	cli0, srv0   float64
	busy0, busy  float64
	busyOK       bool
	srvOK        bool
	elapsed      float64
	cli, srv     float64
	srvAvailable bool
}

func (g *gen) openWindow() *window {
	w := &window{start: time.Now(), cli0: selfCPU()}
	w.srv0, w.srvOK = procsCPU(g.o.ServerPIDs)
	w.busy0, w.busyOK = machine.BusyCPU()
	return w
}

func (g *gen) closeWindow(w *window) {
	w.elapsed = time.Since(w.start).Seconds()
	w.cli = selfCPU() - w.cli0
	if srv1, ok := procsCPU(g.o.ServerPIDs); ok && w.srvOK {
		w.srv, w.srvAvailable = srv1-w.srv0, true
	}
	busy1, ok := machine.BusyCPU()
	w.busy, w.busyOK = busy1-w.busy0, ok && w.busyOK
}

func (g *gen) finish(res *Result, w *window, h *hdrhistogram.Histogram, seconds float64) {
	res.Percentiles = summarize(h)
	res.Requests = h.TotalCount()
	res.Errors = g.errs.Load()
	res.LastError = g.lastErr
	res.DurationS = round(seconds, 3)
	if seconds > 0 {
		res.RPS = round(float64(res.Requests)/seconds, 1)
	}
	res.ClientCPU = round(w.cli, 3)
	if w.srvAvailable {
		s := round(w.srv, 2)
		res.ServerCPU = &s
		if res.Requests > 0 {
			per := round(w.srv*1e6/float64(res.Requests), 1)
			res.ServerCPUPerReq = &per
		}
		if w.busyOK && w.elapsed > 0 {
			other := round(max(0, (w.busy-w.cli-w.srv)/w.elapsed), 2)
			res.OtherCores = &other
		}
	}
}

// closed is the peers' loadgen loop: workers send back to back; latencies recorded while the
// window is open.
func (g *gen) closed(ctx context.Context, res *Result) {
	var (
		stop, rec atomic.Bool
		measured  atomic.Int64
		wg        sync.WaitGroup
	)
	newWorker := g.newWorker
	if newWorker == nil {
		newWorker = g.httpWorker
	}
	hists := make([]*hdrhistogram.Histogram, g.o.Connections)
	for i := range hists {
		hists[i] = newHist()
		wg.Add(1)
		go func(h *hdrhistogram.Histogram) {
			defer wg.Done()
			do, done := newWorker()
			defer done()
			for !stop.Load() {
				t0 := time.Now()
				counting := rec.Load()
				ok := do(counting)
				lat := time.Since(t0)
				if !ok || !counting || !rec.Load() {
					continue
				}
				record(h, lat.Microseconds())
				if measured.Add(1) >= g.o.MaxRequests {
					stop.Store(true)
				}
			}
		}(hists[i])
	}
	sleepCtx(ctx, g.o.Warmup)
	w := g.openWindow()
	rec.Store(true)
	deadline := time.NewTimer(g.o.Duration)
	tick := time.NewTicker(10 * time.Millisecond)
	for waiting := true; waiting; {
		select {
		case <-deadline.C:
			waiting = false
		case <-ctx.Done():
			waiting = false
		case <-tick.C:
			waiting = !stop.Load()
		}
	}
	tick.Stop()
	rec.Store(false)
	g.closeWindow(w)
	stop.Store(true)
	if g.abort != nil {
		t := time.AfterFunc(g.o.Timeout, g.abort)
		defer t.Stop()
	}
	wg.Wait()
	g.finish(res, w, merge(hists), w.elapsed)
}

// due is one scheduled request: its intended send time and whether it falls in the window.
type due struct {
	at       time.Time
	measured bool
}

// schedule yields the due times of an open-loop run: constant spacing 1/rate, or exponential
// gaps of mean 1/rate (a Poisson process) from a seeded generator.
type schedule struct {
	next    time.Time
	period  float64 // seconds
	poisson bool
	rng     *rand.Rand
}

func newSchedule(start time.Time, rate float64, arrival string, seed uint64) *schedule {
	s := &schedule{next: start, period: 1 / rate, poisson: arrival == "poisson"}
	if s.poisson {
		s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		s.advance()
	}
	return s
}

func (s *schedule) advance() {
	gap := s.period
	if s.poisson {
		gap = s.rng.ExpFloat64() * s.period
	}
	s.next = s.next.Add(time.Duration(gap * 1e9))
}

// open runs the arrival schedule: a dispatcher on a locked OS thread hands each due request to
// the connection workers through a queue bounded by Outstanding.
func (g *gen) open(ctx context.Context, res *Result) {
	res.TargetRPS, res.Arrival, res.Outstanding = g.o.Rate, g.o.Arrival, g.o.Outstanding
	var (
		outstanding atomic.Int64
		dropped     int64
		late        atomic.Int64
		lastDone    atomic.Int64 // UnixNano of the last answer to a measured request
		wg          sync.WaitGroup
		winStart    time.Time
	)
	queue := make(chan due, g.o.Outstanding)
	lat := make([]*hdrhistogram.Histogram, g.o.Connections)
	svc := make([]*hdrhistogram.Histogram, g.o.Connections)
	lag := make([]*hdrhistogram.Histogram, g.o.Connections)
	for i := range lat {
		lat[i], svc[i], lag[i] = newHist(), newHist(), newHist()
		wg.Add(1)
		go func(lat, svc, lag *hdrhistogram.Histogram) {
			defer wg.Done()
			req, resp := g.newRequest(), fasthttp.AcquireResponse()
			defer fasthttp.ReleaseRequest(req)
			defer fasthttp.ReleaseResponse(resp)
			for d := range queue {
				sent := time.Now()
				ok := g.do(req, resp, d.measured)
				done := time.Now()
				outstanding.Add(-1)
				if !d.measured {
					continue
				}
				if sent.Sub(d.at) > g.o.LateAfter {
					late.Add(1)
				}
				if ok {
					for t := done.UnixNano(); ; {
						if old := lastDone.Load(); old >= t || lastDone.CompareAndSwap(old, t) {
							break
						}
					}
					record(lat, done.Sub(d.at).Microseconds())
					record(svc, done.Sub(sent).Microseconds())
					record(lag, sent.Sub(d.at).Microseconds())
				}
			}
		}(lat[i], svc[i], lag[i])
	}

	// The dispatcher runs on this goroutine, locked to its thread for the precise sleeps.
	done := make(chan struct{})
	var w *window
	go func() {
		defer close(done)
		defer preciseThread()()
		start := time.Now().Add(time.Millisecond)
		winStart = start.Add(g.o.Warmup)
		winEnd := winStart.Add(g.o.Duration)
		sch := newSchedule(start, g.o.Rate, g.o.Arrival, g.o.Seed)
		for sch.next.Before(winEnd) && ctx.Err() == nil {
			at := sch.next
			sch.advance()
			if w == nil && !at.Before(winStart) {
				sleepUntil(winStart, g.o.Spin)
				w = g.openWindow()
			}
			sleepUntil(at, g.o.Spin)
			measured := !at.Before(winStart)
			if outstanding.Load() >= int64(g.o.Outstanding) {
				if measured {
					dropped++
				}
				continue
			}
			outstanding.Add(1)
			queue <- due{at: at, measured: measured}
		}
		if w == nil {
			w = g.openWindow()
		}
		sleepUntil(winEnd, g.o.Spin)
	}()
	<-done
	close(queue)
	wg.Wait() // the requests due in the window are answered (or time out) before the books close
	g.closeWindow(w)
	res.Dropped = dropped
	res.Late = late.Load()
	// Throughput is answers over the time they took: a server slower than the rate answers the
	// window's requests after it ends, and that time counts.
	seconds := g.o.Duration.Seconds()
	if last := lastDone.Load(); last > 0 {
		seconds = max(seconds, time.Unix(0, last).Sub(winStart).Seconds())
	}
	g.finish(res, w, merge(lat), seconds)
	s, l := summarize(merge(svc)), summarize(merge(lag))
	res.Service, res.SendLag = &s, &l
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
