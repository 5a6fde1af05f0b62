package load

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttputil"
)

func TestMergedPercentiles(t *testing.T) {
	a, b := newHist(), newHist()
	for v := int64(1); v <= 1000; v++ {
		if v%2 == 0 {
			record(a, v)
		} else {
			record(b, v)
		}
	}
	p := summarize(merge([]*hdrhistogram.Histogram{a, b}))
	near := func(name string, got, want int64) {
		t.Helper()
		if math.Abs(float64(got-want)) > 0.002*float64(want)+1 {
			t.Errorf("%s = %d, want %d (±0.2%%)", name, got, want)
		}
	}
	if p.Count != 1000 {
		t.Fatalf("count %d, want 1000", p.Count)
	}
	near("p50", p.P50, 500)
	near("p90", p.P90, 900)
	near("p95", p.P95, 950)
	near("p99", p.P99, 990)
	near("p99.9", p.P999, 999)
	near("max", p.Max, 1000)
	if math.Abs(p.Mean-500.5) > 1 {
		t.Errorf("mean %v, want 500.5", p.Mean)
	}
	if (summarize(newHist()) != Percentiles{}) {
		t.Error("an empty histogram must summarise to zeros")
	}
	h := newHist()
	record(h, 0)
	record(h, 2*histMax)
	if h.TotalCount() != 2 || h.Max() < histMax*99/100 {
		t.Errorf("out-of-range values must be clamped, not dropped: count %d max %d", h.TotalCount(), h.Max())
	}
}

func TestJSONBody(t *testing.T) {
	in := []Tensor{{Name: "obs", Datatype: "FP32", Shape: []int64{1, 3}, Data: []float64{float64(float32(0.1)), -1.5, float64(float32(1e-7))}}}
	b, err := JSONBody(in)
	if err != nil {
		t.Fatal(err)
	}
	// float32(0.1) widened prints with 17 significant digits, as Python's json.dumps does.
	if !strings.Contains(string(b), "0.10000000149011612") || !strings.Contains(string(b), "-1.5") {
		t.Errorf("literals: %s", b)
	}
	back, err := ParseInputs(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(back) != 1 || back[0].Name != "obs" || !slices.Equal(back[0].Shape, in[0].Shape) || !slices.Equal(back[0].Data, in[0].Data) {
		t.Errorf("round trip: %+v", back)
	}
	if _, err := JSONBody([]Tensor{{Name: "x", Shape: []int64{2}, Data: []float64{1}}}); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("shape/data mismatch: %v", err)
	}
	if _, err := JSONBody([]Tensor{{Name: "x", Shape: []int64{1}, Data: []float64{math.NaN()}}}); err == nil {
		t.Error("NaN must be refused")
	}
	for _, bad := range []string{`{}`, `{"inputs":[{"name":"a","datatype":"INT64","shape":[1],"data":[1]}]}`, `{"inputs":[{"name":"a","datatype":"FP32","shape":[2],"data":[1]}]}`, `[`} {
		if _, err := ParseInputs([]byte(bad)); err == nil {
			t.Errorf("ParseInputs(%s) accepted", bad)
		}
	}
}

func TestBinaryBody(t *testing.T) {
	in := []Tensor{
		{Name: "obs", Datatype: "FP32", Shape: []int64{2, 2}, Data: []float64{1, 2, 3, -4}},
		{Name: "h", Datatype: "FP32", Shape: []int64{1, 2, 1}, Data: []float64{0.5, 0.25}},
	}
	body, n, err := BinaryBody(in)
	if err != nil {
		t.Fatal(err)
	}
	var head struct {
		Inputs []struct {
			Name       string
			Shape      []int64
			Datatype   string
			Parameters map[string]int
		}
		Parameters map[string]bool
	}
	if err := json.Unmarshal(body[:n], &head); err != nil {
		t.Fatalf("header %q: %v", body[:n], err)
	}
	if !head.Parameters["binary_data_output"] || len(head.Inputs) != 2 ||
		head.Inputs[0].Parameters["binary_data_size"] != 16 || head.Inputs[1].Parameters["binary_data_size"] != 8 {
		t.Errorf("header: %s", body[:n])
	}
	bin := body[n:]
	if len(bin) != 24 {
		t.Fatalf("%d binary bytes, want 24", len(bin))
	}
	var got []float64
	for i := 0; i < len(bin); i += 4 {
		got = append(got, float64(math.Float32frombits(binary.LittleEndian.Uint32(bin[i:]))))
	}
	if !slices.Equal(got, []float64{1, 2, 3, -4, 0.5, 0.25}) {
		t.Errorf("binary data %v", got)
	}
}

func TestTileBatch(t *testing.T) {
	obs := Tensor{Name: "obs", Shape: []int64{2, 2}, Data: []float64{1, 2, 3, 4}}
	got, err := TileBatch(obs, 0, 5)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Shape, []int64{5, 2}) || !slices.Equal(got.Data, []float64{1, 2, 3, 4, 1, 2, 3, 4, 1, 2}) {
		t.Errorf("tile axis 0: %+v", got)
	}
	// An LSTM state [1, B, H]: the batch is axis 1.
	h := Tensor{Name: "h", Shape: []int64{1, 2, 2}, Data: []float64{1, 2, 3, 4}}
	got, err = TileBatch(h, 1, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.Shape, []int64{1, 3, 2}) || !slices.Equal(got.Data, []float64{1, 2, 3, 4, 1, 2}) {
		t.Errorf("tile axis 1: %+v", got)
	}
	if _, err := TileBatch(obs, 2, 4); err == nil {
		t.Error("axis outside the shape accepted")
	}
	if !slices.Equal(obs.Data, []float64{1, 2, 3, 4}) {
		t.Error("TileBatch changed its input")
	}
}

func TestReferenceCheck(t *testing.T) {
	ref, err := ParseReference([]byte(`{"model_name":"m","outputs":[{"name":"action","shape":[1,2],"datatype":"FP32","data":[1.0,-2.0]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, body, hdr, want string
	}{
		{"equal", `{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"data":[1.0,-2.0]}]}`, "", ""},
		{"within tolerance", `{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"data":[1.0009,-2.002]}]}`, "", ""},
		{"beyond tolerance", `{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"data":[1.01,-2.0]}]}`, "", `output "action"[0] = 1.01`},
		{"shape", `{"outputs":[{"name":"action","datatype":"FP32","shape":[2,1],"data":[1.0,-2.0]}]}`, "", "shape [2 1]"},
		{"missing", `{"outputs":[{"name":"other","datatype":"FP32","shape":[1,2],"data":[1.0,-2.0]}]}`, "", `output "action" missing`},
		{"error", `{"error":"boom"}`, "", "boom"},
		{"nan", `{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"data":[null,-2.0]}]}`, "", `[0] = 0`},
	}
	bin := binary.LittleEndian.AppendUint32(nil, math.Float32bits(1))
	bin = binary.LittleEndian.AppendUint32(bin, math.Float32bits(-2))
	head := `{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}`
	cases = append(cases,
		struct{ name, body, hdr, want string }{"binary", head + string(bin), strconv.Itoa(len(head)), ""},
		struct{ name, body, hdr, want string }{"binary short", head + string(bin[:4]), strconv.Itoa(len(head)), "does not fit"},
		struct{ name, body, hdr, want string }{"binary header too long", head, "9999", "does not fit"},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := ref.checkResponse(200, c.hdr, []byte(c.body))
			if c.want == "" && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	if err := ref.checkResponse(503, "", []byte(`{"error":"busy"}`)); err == nil || !strings.Contains(err.Error(), "status 503") {
		t.Errorf("status: %v", err)
	}
	shapeOnly := ref
	shapeOnly.ShapeOnly = true
	if err := shapeOnly.checkResponse(200, "", []byte(`{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"data":[7,7]}]}`)); err != nil {
		t.Errorf("shape-only check: %v", err)
	}
}

// fake serves an in-memory KServe v2 endpoint answering action=[1,-2] after delay.
func fake(t *testing.T, delay time.Duration, answer string) func(string) (net.Conn, error) {
	t.Helper()
	ln := fasthttputil.NewInmemoryListener()
	srv := &fasthttp.Server{Handler: func(ctx *fasthttp.RequestCtx) {
		if delay > 0 {
			time.Sleep(delay)
		}
		ctx.SetContentType("application/json")
		ctx.SetBodyString(answer)
	}}
	go srv.Serve(ln) //nolint:errcheck // ends with the listener
	t.Cleanup(func() { _ = ln.Close() })
	return func(string) (net.Conn, error) { return ln.Dial() }
}

const okAnswer = `{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"data":[1.0,-2.0]}]}`

func refAction(t *testing.T) *Reference {
	t.Helper()
	r, err := ParseReference([]byte(okAnswer))
	if err != nil {
		t.Fatal(err)
	}
	return &r
}

var fakeReq = Request{URL: "http://fake/v2/models/m/infer", Body: []byte(`{"inputs":[]}`)}

func TestClosedLoop(t *testing.T) {
	dial := fake(t, 0, okAnswer)
	r, err := Run(context.Background(), fakeReq, Options{Mode: "closed", Connections: 2, Duration: 200 * time.Millisecond,
		Warmup: 20 * time.Millisecond, Dial: dial, Check: refAction(t), ServerPIDs: []int{-1}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests < 50 || r.Errors != 0 || r.RPS <= 0 || r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max {
		t.Errorf("implausible closed-loop result: %+v", r)
	}
	if r.Protocol != "json" || r.Mode != "closed" || r.Concurrency != 2 || r.ServerCPU != nil {
		t.Errorf("fields: %+v", r)
	}
}

func TestCheckFailsTheRun(t *testing.T) {
	dial := fake(t, 0, `{"outputs":[{"name":"action","datatype":"FP32","shape":[1,2],"data":[1.5,-2.0]}]}`)
	_, err := Run(context.Background(), fakeReq, Options{Mode: "closed", Connections: 1, Duration: time.Second, Dial: dial, Check: refAction(t)})
	if !errors.Is(err, ErrCheck) || !strings.Contains(err.Error(), `output "action"[0] = 1.5`) {
		t.Fatalf("error %v, want a reference check failure naming the value", err)
	}
}

// A server that takes 5 ms per request on one connection serves 200 requests/s. Offered 400/s
// open loop, its queue grows for the whole run: latency from the intended send time must grow
// far beyond the 5 ms service time, where a closed loop (and a generator with coordinated
// omission) would report ~5 ms.
func TestOpenLoopShowsQueueing(t *testing.T) {
	dial := fake(t, 5*time.Millisecond, okAnswer)
	closed, err := Run(context.Background(), fakeReq, Options{Mode: "closed", Connections: 1, Duration: 300 * time.Millisecond, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	open, err := Run(context.Background(), fakeReq, Options{Mode: "open", Connections: 1, Rate: 400, Outstanding: 1000,
		Duration: 400 * time.Millisecond, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("closed p99 %d µs; open p50 %d p99 %d µs, service p50 %d µs, late %d, rps %.0f", closed.P99, open.P50, open.P99, open.Service.P50, open.Late, open.RPS)
	if open.P99 < 10*open.Service.P50 || open.P99 < 5*closed.P50 {
		t.Errorf("open-loop p99 %d µs hides the queueing (service p50 %d µs, closed p50 %d µs)", open.P99, open.Service.P50, closed.P50)
	}
	if open.Late == 0 || !open.Overloaded() || open.Dropped != 0 {
		t.Errorf("late %d dropped %d: the overload must show as late requests", open.Late, open.Dropped)
	}
	// Achieved throughput is the server's, not the offered rate.
	if open.RPS > 260 {
		t.Errorf("open-loop rps %.0f exceeds what the server can do (~200)", open.RPS)
	}
}

func TestOpenLoopDropsBeyondOutstanding(t *testing.T) {
	dial := fake(t, 5*time.Millisecond, okAnswer)
	r, err := Run(context.Background(), fakeReq, Options{Mode: "open", Connections: 1, Outstanding: 2, Rate: 1000,
		Duration: 200 * time.Millisecond, Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	if r.Dropped < 50 || !r.Overloaded() {
		t.Errorf("dropped %d of ~200 due, want most of them", r.Dropped)
	}
	if r.Requests+r.Dropped < 150 || r.Requests+r.Dropped > 230 {
		t.Errorf("answered %d + dropped %d, want the ~200 due in 0.2 s at 1000/s", r.Requests, r.Dropped)
	}
}

// The schedule decides how many requests are due, not the server or the machine's load: at
// 2000/s for 0.3 s, exactly 600 (constant) or a fixed, seeded ~600 (Poisson) are due, and each
// is answered or counted as dropped.
func TestOpenLoopKeepsRate(t *testing.T) {
	dial := fake(t, 0, okAnswer)
	for _, c := range []struct {
		arrival string
		lo, hi  int64
	}{{"constant", 599, 601}, {"poisson", 540, 660}} {
		r, err := Run(context.Background(), fakeReq, Options{Mode: "open", Connections: 4, Rate: 2000, Arrival: c.arrival, Seed: 7,
			Outstanding: 1000, Duration: 300 * time.Millisecond, Warmup: 50 * time.Millisecond, Dial: dial})
		if err != nil {
			t.Fatal(err)
		}
		if n := r.Requests + r.Dropped + r.Errors; n < c.lo || n > c.hi {
			t.Errorf("%s: %d requests due in 0.3 s at 2000/s, want %d..%d", c.arrival, n, c.lo, c.hi)
		}
		if r.Errors != 0 || r.Dropped != 0 {
			t.Errorf("%s: %d errors, %d dropped against a fast server with room for 1000 outstanding", c.arrival, r.Errors, r.Dropped)
		}
		if r.SendLag == nil || r.Service == nil || r.SendLag.Count != r.Requests {
			t.Errorf("%s: open-loop run without service/send-lag percentiles", c.arrival)
		}
	}
}

func TestPoissonSchedule(t *testing.T) {
	start := time.Unix(0, 0)
	s := newSchedule(start, 1000, "poisson", 42)
	const n = 20000
	var gaps []float64
	prev := start
	for i := 0; i < n; i++ {
		gaps = append(gaps, s.next.Sub(prev).Seconds())
		prev = s.next
		s.advance()
	}
	mean := s.next.Sub(start).Seconds() / (n + 1)
	if math.Abs(mean-0.001) > 0.00005 {
		t.Errorf("mean gap %.6f s, want 0.001", mean)
	}
	slices.Sort(gaps)
	// Exponential: median = ln 2 / rate.
	if med := gaps[n/2]; math.Abs(med-math.Ln2/1000) > 0.00005 {
		t.Errorf("median gap %.6f, want %.6f", med, math.Ln2/1000)
	}
	again := newSchedule(start, 1000, "poisson", 42)
	if again.next != newSchedule(start, 1000, "poisson", 42).next {
		t.Error("same seed, different schedule")
	}
	c := newSchedule(start, 500, "constant", 0)
	c.advance()
	c.advance()
	if c.next.Sub(start) != 4*time.Millisecond {
		t.Errorf("constant schedule at 500/s: %v after two gaps", c.next.Sub(start))
	}
}

func TestOptionsValidate(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Mode: "x", Connections: 1, Duration: time.Second}, `mode "x"`},
		{Options{Mode: "open", Connections: 1, Duration: time.Second}, "rate"},
		{Options{Mode: "open", Connections: 4, Outstanding: 2, Rate: 1, Duration: time.Second}, "outstanding 2"},
		{Options{Mode: "open", Connections: 1, Rate: 1, Arrival: "burst", Duration: time.Second}, `arrival "burst"`},
		{Options{Mode: "closed", Connections: 0, Duration: time.Second}, "connections 0"},
		{Options{Mode: "closed", Connections: 1}, "duration"},
	} {
		if err := c.o.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.o, err, c.want)
		}
	}
	if _, err := Run(context.Background(), Request{URL: "http://10.0.0.1:80/x"}, Options{Mode: "closed", Connections: 1, Duration: time.Second}); err == nil ||
		!strings.Contains(err.Error(), "non-loopback") {
		t.Errorf("non-loopback target: %v", err)
	}
}

func TestProcParsers(t *testing.T) {
	m, err := parseStatus("Name:\tpolicyd\nVmHWM:\t   81920 kB\nVmRSS:\t   40960 kB\n")
	if err != nil || m.RSS != 40960<<10 || m.PeakRSS != 81920<<10 {
		t.Errorf("parseStatus: %+v %v", m, err)
	}
	if _, err := parseStatus("Name:\tx\n"); err == nil {
		t.Error("status without VmRSS accepted")
	}
	// comm may hold spaces and parentheses; utime/stime are fields 14 and 15.
	cpu, ok := parseStatCPU("123 (a b) c) S 1 2 3 4 5 6 7 8 9 10 250 150 0 0")
	if !ok || cpu != 4 {
		t.Errorf("parseStatCPU = %v %v, want 4 s", cpu, ok)
	}
}
