package load

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// SHMRequest is what every request of a shared-memory run sends: Triton's system shared memory
// extension (docs/api.md "Shared memory") over HTTP. The inputs live in a POSIX shared memory
// object (/dev/shm) that this process writes, the outputs are written by the server into the
// same object, and the request body is a few hundred bytes of JSON naming the places.
//
// Each closed-loop worker has its own object and region (inputs first, then the outputs, each
// at a 64-byte aligned offset), so that concurrent requests never write the same bytes.
type SHMRequest struct {
	URL string // http://127.0.0.1:PORT/v2/models/NAME/infer (loopback only); the register routes are on the same host
	// Inputs are the tensors written into the region (FP32); Outputs name the outputs and give
	// their shapes, which size their windows (FP32): the reference's outputs.
	Inputs  []Tensor
	Outputs []Tensor
	// Token is the admin token, sent as "Authorization: Bearer" to register and unregister
	// (operator calls, docs/security.md); "" sends none.
	Token string
	// Rewrite copies the inputs' bytes into the region before every request, as a simulator
	// on the same host writes each step's observation; false writes them once.
	Rewrite bool
	// Prefix names the objects (/dev/shm/PREFIX-W) and regions (PREFIX-W); "" is
	// "pdbench-PID".
	Prefix string
	// GRPCAddr, when set, sends the requests as unary gRPC ModelInfer calls to this HOST:PORT
	// (loopback only), the tensors' parameters naming the regions; the regions are still
	// registered over HTTP (URL's host), and the model is URL's.
	GRPCAddr string
}

// shmSlot is one worker's object: mapped here, registered on the server as one region.
type shmSlot struct {
	name    string // region name and object name (without the leading /)
	mem     []byte
	in      []byte // the inputs' bytes, contiguous, as written at offset 0
	inOff   []int
	outOff  []int
	outSize []int
	body    []byte // the JSON request naming this slot's windows
}

const shmAlign = 64

func alignUp(n int) int { return (n + shmAlign - 1) / shmAlign * shmAlign }

// fp32Bytes is the little-endian float32 encoding of t's data.
func fp32Bytes(t Tensor) ([]byte, error) {
	n, err := t.elements()
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, 4*n)
	for _, v := range t.Data {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(float32(v)))
	}
	return b, nil
}

// shmLayout places the inputs then the outputs in one object: the offsets, the output window
// sizes and the object's size.
func shmLayout(in [][]byte, outs []Tensor) (inOff, outOff, outSize []int, total int, err error) {
	off := 0
	for _, b := range in {
		inOff = append(inOff, off)
		off = alignUp(off + len(b))
	}
	for _, t := range outs {
		n := 1
		for _, d := range t.Shape {
			if d < 0 {
				return nil, nil, nil, 0, fmt.Errorf("output %q: shape %v is not concrete", t.Name, t.Shape)
			}
			n *= int(d)
		}
		outOff = append(outOff, off)
		outSize = append(outSize, 4*n)
		off = alignUp(off + 4*n)
	}
	return inOff, outOff, outSize, max(off, shmAlign), nil
}

// SHMBody is the JSON request of one region: every input and output of req in region at
// the offsets given, with shared_memory_region, shared_memory_byte_size and
// shared_memory_offset in its parameters.
func SHMBody(region string, inputs, outputs []Tensor, inOff, outOff, outSize []int) ([]byte, error) {
	type params struct {
		Region string `json:"shared_memory_region"`
		Size   int    `json:"shared_memory_byte_size"`
		Offset int    `json:"shared_memory_offset"`
	}
	type in struct {
		Name       string  `json:"name"`
		Shape      []int64 `json:"shape"`
		Datatype   string  `json:"datatype"`
		Parameters params  `json:"parameters"`
	}
	type out struct {
		Name       string `json:"name"`
		Parameters params `json:"parameters"`
	}
	var req struct {
		Inputs  []in  `json:"inputs"`
		Outputs []out `json:"outputs"`
	}
	for i, t := range inputs {
		n, err := t.elements()
		if err != nil {
			return nil, err
		}
		req.Inputs = append(req.Inputs, in{t.Name, t.Shape, "FP32", params{region, 4 * n, inOff[i]}})
	}
	for i, t := range outputs {
		req.Outputs = append(req.Outputs, out{t.Name, params{region, outSize[i], outOff[i]}})
	}
	return json.Marshal(req)
}

// shmGen is a shared-memory run: the HTTP generator with a worker per slot.
type shmGen struct {
	gen
	req   SHMRequest
	base  string // http://HOST:PORT
	slots []*shmSlot
	mu    sync.Mutex
	next  int
}

// RunSHM loads req.URL with shared-memory requests as o says (closed loop only: one object and
// region per connection) and returns what it measured, in the units of Run. It creates and
// registers the regions, checks the first answer (status 200, the response naming the output
// windows, and the outputs read back from the region against o.Check), and at the end
// unregisters the regions and unlinks the objects, also when the run fails.
func RunSHM(ctx context.Context, req SHMRequest, o Options) (res Result, err error) {
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	if o.Mode != "closed" {
		return Result{}, fmt.Errorf("mode %q: shared-memory runs are closed loop only", o.Mode)
	}
	u, err := url.Parse(req.URL)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return Result{}, fmt.Errorf("url %q: want http://HOST:PORT/...", req.URL)
	}
	if h := u.Hostname(); o.Dial == nil && !(strings.HasPrefix(h, "127.") || h == "localhost" || h == "::1") {
		// Shared memory is for a client on the server's host.
		return Result{}, fmt.Errorf("url %q: refusing a non-loopback target", req.URL)
	}
	if len(req.Inputs) == 0 || len(req.Outputs) == 0 {
		return Result{}, errors.New("shared memory: need the inputs and the outputs' shapes (a reference)")
	}
	if req.Prefix == "" {
		req.Prefix = fmt.Sprintf("pdbench-%d", os.Getpid())
	}
	hc := &fasthttp.HostClient{Addr: u.Host, MaxConns: o.Connections + 1, ReadBufferSize: 16 << 10, WriteBufferSize: 16 << 10,
		MaxIdleConnDuration: time.Minute, Dial: o.Dial}
	defer hc.CloseIdleConnections()
	g := &shmGen{req: req, base: "http://" + u.Host}
	g.gen = gen{req: Request{URL: req.URL}, o: o, hc: hc}
	g.gen.newWorker = g.worker
	defer func() {
		if cerr := g.cleanup(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	var in [][]byte
	for _, t := range req.Inputs {
		b, err := fp32Bytes(t)
		if err != nil {
			return Result{}, err
		}
		in = append(in, b)
	}
	inOff, outOff, outSize, total, err := shmLayout(in, req.Outputs)
	if err != nil {
		return Result{}, err
	}
	for i := 0; i < o.Connections; i++ {
		s, err := g.newSlot(fmt.Sprintf("%s-%d", req.Prefix, i), in, inOff, outOff, outSize, total)
		if s != nil {
			g.slots = append(g.slots, s)
		}
		if err != nil {
			return Result{}, err
		}
	}
	if req.GRPCAddr != "" {
		return g.runGRPC(ctx)
	}
	if err := g.check(); err != nil {
		return Result{}, err
	}
	res = Result{URL: req.URL, Protocol: "shm", BodyBytes: len(g.slots[0].body), Mode: o.Mode,
		Concurrency: o.Connections, GOMAXPROCS: runtime.GOMAXPROCS(0)}
	g.closed(ctx, &res)
	if res.Requests == 0 && ctx.Err() == nil {
		return res, fmt.Errorf("no request succeeded in %v (%d errors; last: %s)", o.Duration, res.Errors, res.LastError)
	}
	return res, ctx.Err()
}

// newSlot creates /dev/shm/NAME of total bytes, maps it, writes the inputs and registers it.
// The slot is returned (to be cleaned up) as soon as the object exists.
func (g *shmGen) newSlot(name string, in [][]byte, inOff, outOff, outSize []int, total int) (*shmSlot, error) {
	path := "/dev/shm/" + name
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("shared memory object: %w", err)
	}
	defer f.Close()
	s := &shmSlot{name: name, inOff: inOff, outOff: outOff, outSize: outSize}
	if err := f.Truncate(int64(total)); err != nil {
		return s, fmt.Errorf("shared memory object %s: %w", path, err)
	}
	if s.mem, err = unix.Mmap(int(f.Fd()), 0, total, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
		return s, fmt.Errorf("mmap %s: %w", path, err)
	}
	for i, b := range in {
		copy(s.mem[inOff[i]:], b)
	}
	s.in = s.mem[:inOff[len(inOff)-1]+len(in[len(in)-1])]
	s.in = append([]byte(nil), s.in...) // the pristine input bytes, rewritten before each request with Rewrite
	if s.body, err = SHMBody(name, g.req.Inputs, g.req.Outputs, inOff, outOff, outSize); err != nil {
		return s, err
	}
	reg, _ := json.Marshal(map[string]any{"key": "/" + name, "offset": 0, "byte_size": total})
	if err := g.admin("register", name, reg); err != nil {
		s.body = nil
		return s, err
	}
	return s, nil
}

// admin POSTs one shared-memory operator call (register or unregister of region) and wants 200.
func (g *shmGen) admin(op, region string, body []byte) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(g.base + "/v2/systemsharedmemory/region/" + region + "/" + op)
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	if g.req.Token != "" {
		req.Header.Set("Authorization", "Bearer "+g.req.Token)
	}
	req.SetBodyRaw(body)
	if err := g.hc.DoTimeout(req, resp, g.o.Timeout); err != nil {
		return fmt.Errorf("shared memory %s %s: %w", op, region, err)
	}
	if resp.StatusCode() != 200 {
		return fmt.Errorf("shared memory %s %s: status %d: %.300s", op, region, resp.StatusCode(), strings.TrimSpace(string(resp.Body())))
	}
	return nil
}

// cleanup unregisters every registered region, unmaps and unlinks every object.
func (g *shmGen) cleanup() error {
	var errs []error
	for _, s := range g.slots {
		if s.body != nil {
			if err := g.admin("unregister", s.name, nil); err != nil {
				errs = append(errs, err)
			}
		}
		if s.mem != nil {
			_ = unix.Munmap(s.mem)
		}
		if err := os.Remove("/dev/shm/" + s.name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (g *shmGen) request(s *shmSlot) *fasthttp.Request {
	r := fasthttp.AcquireRequest()
	r.SetRequestURI(g.req.URL)
	r.Header.SetMethod("POST")
	r.Header.SetContentType("application/json")
	r.SetBodyRaw(s.body)
	return r
}

// check sends the first slot's request, then checks the answer names the output windows and
// the outputs read from the region against the reference.
func (g *shmGen) check() error {
	s := g.slots[0]
	for i, off := range s.outOff { // a stale answer must not pass

		clear(s.mem[off : off+s.outSize[i]])
	}
	req, resp := g.request(s), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	if err := g.hc.DoTimeout(req, resp, g.o.Timeout); err != nil {
		return fmt.Errorf("%w: first request: %v", ErrCheck, err)
	}
	if resp.StatusCode() != 200 {
		return fmt.Errorf("%w: status %d: %.300s", ErrCheck, resp.StatusCode(), strings.TrimSpace(string(resp.Body())))
	}
	var answer struct {
		Outputs []struct {
			Name       string          `json:"name"`
			Shape      []int64         `json:"shape"`
			Data       json.RawMessage `json:"data"`
			Parameters struct {
				Region string `json:"shared_memory_region"`
				Offset int    `json:"shared_memory_offset"`
				Size   int    `json:"shared_memory_byte_size"`
			} `json:"parameters"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(resp.Body(), &answer); err != nil {
		return fmt.Errorf("%w: response is not KServe v2 JSON: %v (%.200s)", ErrCheck, err, resp.Body())
	}
	got := make([]Tensor, 0, len(g.req.Outputs))
	for i, want := range g.req.Outputs {
		j := -1
		for k, o := range answer.Outputs {
			if o.Name == want.Name {
				j = k
			}
		}
		if j < 0 {
			return fmt.Errorf("%w: output %q missing from the response", ErrCheck, want.Name)
		}
		a := answer.Outputs[j]
		if a.Data != nil {
			return fmt.Errorf("%w: output %q answered inline, not in shared memory", ErrCheck, want.Name)
		}
		t, err := s.readOutput(i, want.Name, a.Shape, a.Parameters.Region, int64(a.Parameters.Offset))
		if err != nil {
			return err
		}
		got = append(got, t)
	}
	return g.checkRegion(got)
}

// checkRegion checks the outputs read from the region against the reference.
func (g *shmGen) checkRegion(got []Tensor) error {
	ref := g.o.Check
	if ref == nil {
		ref = &Reference{ShapeOnly: true, Outputs: g.req.Outputs}
	}
	if err := ref.Check(got); err != nil {
		return fmt.Errorf("%w: output read from shared memory: %v", ErrCheck, err)
	}
	return nil
}

// readOutput reads output i of slot s (shape from the answer) after checking the answer names
// the slot's window and the shape fits it.
func (s *shmSlot) readOutput(i int, name string, shape []int64, region string, offset int64) (Tensor, error) {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	if region != s.name || offset != int64(s.outOff[i]) || n < 0 || 4*n > s.outSize[i] {
		return Tensor{}, fmt.Errorf("%w: output %q: response names region %q offset %d with shape %v, want region %q offset %d within %d bytes",
			ErrCheck, name, region, offset, shape, s.name, s.outOff[i], s.outSize[i])
	}
	t := Tensor{Name: name, Datatype: "FP32", Shape: shape, Data: make([]float64, n)}
	for k := range t.Data {
		t.Data[k] = float64(math.Float32frombits(binary.LittleEndian.Uint32(s.mem[s.outOff[i]+4*k:])))
	}
	return t, nil
}

// worker is one closed-loop worker on its own slot: with Rewrite, the inputs are copied into
// the region before each request (the simulator's write of its observation).
func (g *shmGen) worker() (func(bool) bool, func()) {
	g.mu.Lock()
	s := g.slots[g.next%len(g.slots)]
	g.next++
	g.mu.Unlock()
	req, resp := g.request(s), fasthttp.AcquireResponse()
	rewrite := g.req.Rewrite
	return func(count bool) bool {
			if rewrite {
				copy(s.mem, s.in)
			}
			return g.do(req, resp, count)
		}, func() {
			fasthttp.ReleaseRequest(req)
			fasthttp.ReleaseResponse(resp)
		}
}
