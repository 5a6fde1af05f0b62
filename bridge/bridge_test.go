//go:build cgo

package bridge

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
)

// reference is a file of testdata/reference: inputs and ONNX Runtime's outputs.
type reference struct {
	Model   string `json:"model"`
	ID      string `json:"id"`
	Batch   int    `json:"batch"`
	Inputs  []refTensor
	Outputs []refTensor
}

type refTensor struct {
	Name          string  `json:"name"`
	Datatype      string  `json:"datatype"`
	Shape         []int64 `json:"shape"`
	Deterministic *bool   `json:"deterministic"`
	Data          refData `json:"data"`
}

// refData is a reference tensor's flat data: JSON numbers, or true/false for BOOL tensors
// (read as 1 and 0).
type refData []float64

func (d *refData) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	*d = make(refData, len(raw))
	for i, r := range raw {
		switch string(r) {
		case "true":
			(*d)[i] = 1
		case "false":
			(*d)[i] = 0
		default:
			if err := json.Unmarshal(r, &(*d)[i]); err != nil {
				return fmt.Errorf("data[%d]: %w", i, err)
			}
		}
	}
	return nil
}

func loadRefs(t *testing.T) []reference {
	t.Helper()
	files, err := filepath.Glob("../testdata/reference/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no reference files: %v", err)
	}
	var refs []reference
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var r reference
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		refs = append(refs, r)
	}
	return refs
}

func newRuntime(t *testing.T) *Runtime {
	t.Helper()
	rt, err := NewRuntime("")
	if err != nil {
		t.Fatalf("NewRuntime: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func loadEngine(t *testing.T, rt *Runtime, path string) *Engine {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e, err := rt.NewEngine(b, EngineOptions{Name: filepath.Base(path)})
	if err != nil {
		t.Fatalf("NewEngine(%s): %v", path, err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func encode(t *testing.T, r refTensor) Tensor {
	t.Helper()
	dt, ok := parseDType(r.Datatype)
	if !ok {
		t.Fatalf("datatype %q", r.Datatype)
	}
	buf := make([]byte, len(r.Data)*dt.Size())
	for i, v := range r.Data {
		switch dt {
		case Float32:
			binary.LittleEndian.PutUint32(buf[i*4:], math.Float32bits(float32(v)))
		case Float64:
			binary.LittleEndian.PutUint64(buf[i*8:], math.Float64bits(v))
		case Int64:
			binary.LittleEndian.PutUint64(buf[i*8:], uint64(int64(v)))
		case Int32:
			binary.LittleEndian.PutUint32(buf[i*4:], uint32(int32(v)))
		case Bool:
			if v != 0 {
				buf[i] = 1
			}
		default:
			t.Fatalf("test encoder lacks %v", dt)
		}
	}
	return Tensor{DType: dt, Shape: r.Shape, Data: buf}
}

func value(o Tensor, i int) float64 {
	switch o.DType {
	case Float32:
		return float64(math.Float32frombits(binary.LittleEndian.Uint32(o.Data[i*4:])))
	case Float64:
		return math.Float64frombits(binary.LittleEndian.Uint64(o.Data[i*8:]))
	case Int64:
		return float64(int64(binary.LittleEndian.Uint64(o.Data[i*8:])))
	case Int32:
		return float64(int32(binary.LittleEndian.Uint32(o.Data[i*4:])))
	case Bool:
		return float64(o.Data[i])
	}
	return math.NaN()
}

// TestMatchesONNXRuntime runs every reference input of every shared model through the engine
// and compares with ONNX Runtime's outputs: 1e-4 absolute + 1e-3 relative for deterministic
// outputs; dtype and shape for sampled ones.
func TestMatchesONNXRuntime(t *testing.T) {
	rt := newRuntime(t)
	engines := map[string]*Engine{}
	defer func() {
		for _, e := range engines {
			e.Close()
		}
	}()
	for _, r := range loadRefs(t) {
		t.Run(fmt.Sprintf("%s_b%d", r.ID, r.Batch), func(t *testing.T) {
			e, ok := engines[r.Model]
			if !ok {
				var err error
				if e, err = loadEngineCtx(rt, filepath.Join("..", r.Model)); err != nil {
					t.Fatalf("load %s: %v", r.Model, err)
				}
				engines[r.Model] = e
			}
			ctx, err := e.NewContext()
			if err != nil {
				t.Fatal(err)
			}
			defer ctx.Close()
			if len(r.Inputs) != len(e.Inputs()) {
				t.Fatalf("reference has %d inputs, engine %d", len(r.Inputs), len(e.Inputs()))
			}
			in := make([]Tensor, len(e.Inputs()))
			for i, info := range e.Inputs() {
				found := false
				for _, ri := range r.Inputs {
					if ri.Name == info.Name {
						in[i] = encode(t, ri)
						found = true
					}
				}
				if !found {
					t.Fatalf("reference lacks input %q", info.Name)
				}
			}
			out := make([]Tensor, len(e.Outputs()))
			if err := ctx.Run(in, out); err != nil {
				t.Fatalf("Run: %v", err)
			}
			for _, want := range r.Outputs {
				idx := -1
				for i, info := range e.Outputs() {
					if info.Name == want.Name {
						idx = i
					}
				}
				if idx < 0 {
					t.Fatalf("engine lacks output %q", want.Name)
				}
				got := out[idx]
				if got.DType.String() != want.Datatype {
					t.Errorf("%s: dtype %v, want %s", want.Name, got.DType, want.Datatype)
					continue
				}
				if !slices.Equal(got.Shape, want.Shape) {
					t.Errorf("%s: shape %v, want %v", want.Name, got.Shape, want.Shape)
					continue
				}
				if want.Deterministic != nil && !*want.Deterministic {
					continue
				}
				for i, w := range want.Data {
					g := value(got, i)
					if math.Abs(g-w) > 1e-4+1e-3*math.Abs(w) || math.IsNaN(g) {
						t.Errorf("%s[%d] = %v, want %v", want.Name, i, g, w)
						break
					}
				}
			}
		})
	}
}

func loadEngineCtx(rt *Runtime, path string) (*Engine, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return rt.NewEngine(b, EngineOptions{Name: filepath.Base(path)})
}

func mlpSmall(t *testing.T) (*Runtime, *Engine) {
	t.Helper()
	rt := newRuntime(t)
	return rt, loadEngine(t, rt, "../../shared/peers/models/mlp-small.onnx")
}

func TestSignature(t *testing.T) {
	_, e := mlpSmall(t)
	if e.Backend() != "cpu" || !e.Batchable() {
		t.Fatalf("backend %q batchable %v", e.Backend(), e.Batchable())
	}
	in, out := e.Inputs(), e.Outputs()
	if len(in) != 1 || in[0].Name != "obs" || in[0].DType != Float32 || !slices.Equal(in[0].Shape, []int64{-1, 8}) || in[0].BatchDim != 0 {
		t.Fatalf("inputs %+v", in)
	}
	if len(out) != 1 || out[0].Name != "action" || !slices.Equal(out[0].Shape, []int64{-1, 2}) || out[0].BatchDim != 0 {
		t.Fatalf("outputs %+v", out)
	}
}

func TestBackendsReportWhyNot(t *testing.T) {
	rt := newRuntime(t)
	var cpu bool
	for _, b := range rt.Backends() {
		if b.Name == "cpu" {
			cpu = b.Available
		} else if !b.Available && b.Reason == "" {
			t.Errorf("backend %s unavailable without a reason", b.Name)
		}
	}
	if !cpu {
		t.Fatalf("cpu backend unavailable: %+v", rt.Backends())
	}
}

func TestBadInputIsTypedError(t *testing.T) {
	_, e := mlpSmall(t)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out := make([]Tensor, 1)
	err = c.Run([]Tensor{{DType: Float32, Shape: []int64{1, 9}, Data: make([]byte, 36)}}, out)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeInvalidArg || !strings.Contains(pe.Msg, "obs") {
		t.Fatalf("got %v", err)
	}
	if !errors.Is(err, &Error{Code: CodeInvalidArg}) {
		t.Fatalf("errors.Is by code failed for %v", err)
	}
	if err := c.Run(nil, out); err == nil {
		t.Fatal("Run with no inputs succeeded")
	}
}

func TestInvalidModel(t *testing.T) {
	rt := newRuntime(t)
	b, err := os.ReadFile("../../shared/models/mlagents/deterDiscrete1obs3action_INVALID.onnx")
	if err != nil {
		t.Fatal(err)
	}
	_, err = rt.NewEngine(b, EngineOptions{})
	if err == nil || !strings.Contains(err.Error(), "memory_size") {
		t.Fatalf("got %v", err)
	}
	if _, err := rt.NewEngine(nil, EngineOptions{}); err == nil {
		t.Fatal("empty model accepted")
	}
}

func TestCloseIsIdempotentAndClosedValuesFail(t *testing.T) {
	rt, e := mlpSmall(t)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Run([]Tensor{{}}, make([]Tensor, 1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v", err)
	}
	if err := c.SetSeed(1); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetSeed after Close: %v", err)
	}
	if err := c.SetRowSeeds([]uint64{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetRowSeeds after Close: %v", err)
	}
	if _, err := c.Memory(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Memory after Close: %v", err)
	}
	e.Close()
	e.Close()
	if _, err := e.NewContext(); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewContext after Close: %v", err)
	}
	rt.Close()
	rt.Close()
	if _, err := rt.NewEngine([]byte{1}, EngineOptions{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewEngine after Close: %v", err)
	}
}

func obsBatch(n int) Tensor {
	buf := make([]byte, n*8*4)
	for i := 0; i < n*8; i++ {
		binary.LittleEndian.PutUint32(buf[i*4:], math.Float32bits(float32(i%7)*0.1-0.3))
	}
	return Tensor{DType: Float32, Shape: []int64{int64(n), 8}, Data: buf}
}

// Contexts of one engine run concurrently, each on its own locked thread, and agree.
func TestConcurrentContexts(t *testing.T) {
	_, e := mlpSmall(t)
	in := []Tensor{obsBatch(4)}
	ref, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	want := make([]Tensor, 1)
	if err := ref.Run(in, want); err != nil {
		t.Fatal(err)
	}
	wantBytes := append([]byte(nil), want[0].Data...)
	ref.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			c, err := e.NewContext()
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			out := make([]Tensor, 1)
			for i := 0; i < 200; i++ {
				if err := c.Run(in, out); err != nil {
					errs <- err
					return
				}
				if string(out[0].Data) != string(wantBytes) {
					errs <- fmt.Errorf("run %d differs", i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// In steady state a run allocates nothing on the Go side.
func TestRunDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	_, e := mlpSmall(t)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	in := []Tensor{obsBatch(1)}
	out := make([]Tensor, 1)
	if err := c.Run(in, out); err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(100, func() { _ = c.Run(in, out) }); n != 0 {
		t.Fatalf("Run allocates %v times per call", n)
	}
}

func TestSeedMakesSamplingReproducible(t *testing.T) {
	rt := newRuntime(t)
	e := loadEngine(t, rt, "../../shared/models/mlagents/3DBall.onnx")
	idx := -1
	for i, o := range e.Outputs() {
		if o.Name == "continuous_actions" {
			idx = i
		}
	}
	if idx < 0 {
		t.Fatal("no continuous_actions output")
	}
	sample := func(seed uint64) []byte {
		c, err := e.NewContext()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.SetSeed(seed); err != nil {
			t.Fatal(err)
		}
		out := make([]Tensor, len(e.Outputs()))
		if err := c.Run([]Tensor{obsBatch(2)}, out); err != nil {
			t.Fatal(err)
		}
		return append([]byte(nil), out[idx].Data...)
	}
	a, b, c := sample(7), sample(7), sample(8)
	if string(a) != string(b) {
		t.Error("same seed, different samples")
	}
	if string(a) == string(c) {
		t.Error("different seeds, same samples")
	}
}

func BenchmarkRunMLPSmallBatch1(b *testing.B) {
	rt, err := NewRuntime("")
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	m, _ := os.ReadFile("../../shared/peers/models/mlp-small.onnx")
	e, err := rt.NewEngine(m, EngineOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	c, _ := e.NewContext()
	defer c.Close()
	in := []Tensor{obsBatch(1)}
	out := make([]Tensor, 1)
	runtime.LockOSThread()
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Run(in, out); err != nil {
			b.Fatal(err)
		}
	}
}

// parseDType maps a KServe v2 datatype name to a DType.
func parseDType(name string) (DType, bool) {
	for d, s := range dtypeNames {
		if s == name {
			return d, true
		}
	}
	return Undefined, false
}
