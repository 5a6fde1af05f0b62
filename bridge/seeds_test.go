//go:build cgo

package bridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"sync"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

// Models with a stochastic head: RandomNormalLike (3DBall), one Multinomial (Basic, with an
// action mask), three Multinomials (Striker).
var stochastic = []struct {
	path, output string
}{
	{"../../shared/models/mlagents/3DBall.onnx", "continuous_actions"},
	{"../../shared/models/mlagents/Basic.onnx", "discrete_actions"},
	{"../../shared/models/mlagents/Striker.onnx", "discrete_actions"},
}

// rowOf is one row (batch 1) of every input of e, its float values picked by row; masks are
// all ones.
func rowOf(e *Engine, row int) [][]byte {
	ins := make([][]byte, len(e.Inputs()))
	for i, info := range e.Inputs() {
		n := int(NumElements(info.Shape[1:]))
		b := make([]byte, 4*n)
		for k := 0; k < n; k++ {
			v := float32(1)
			if !strings.Contains(info.Name, "mask") {
				v = float32((row*7+k*3+i)%13)/6 - 1
			}
			binary.LittleEndian.PutUint32(b[4*k:], math.Float32bits(v))
		}
		ins[i] = b
	}
	return ins
}

// batchOf stacks rows (each from rowOf) into one batch of inputs.
func batchOf(e *Engine, rows [][][]byte) []Tensor {
	in := make([]Tensor, len(e.Inputs()))
	for i, info := range e.Inputs() {
		shape := append([]int64{int64(len(rows))}, info.Shape[1:]...)
		var data []byte
		for _, r := range rows {
			data = append(data, r[i]...)
		}
		in[i] = Tensor{DType: info.DType, Shape: shape, Data: data}
	}
	return in
}

// sampleRows runs rows with seeds (nil: the context stream) and returns each row's bytes of
// output idx.
func sampleRows(t *testing.T, c *Context, e *Engine, idx int, rows [][][]byte, seeds []uint64) [][]byte {
	t.Helper()
	if err := c.SetRowSeeds(seeds); err != nil {
		t.Fatal(err)
	}
	out := make([]Tensor, len(e.Outputs()))
	if err := c.Run(batchOf(e, rows), out); err != nil {
		t.Fatal(err)
	}
	o := out[idx]
	if o.Shape[0] != int64(len(rows)) {
		t.Fatalf("output %s has shape %v for %d rows", e.Outputs()[idx].Name, o.Shape, len(rows))
	}
	per := len(o.Data) / len(rows)
	res := make([][]byte, len(rows))
	for r := range rows {
		res[r] = append([]byte(nil), o.Data[r*per:(r+1)*per]...)
	}
	return res
}

// sameSample compares one row's samples: integers (sampled classes) exactly, floats to 1e-5.
// A float sample is the policy's mean plus noise, and the mean of a row may differ in its last
// bits between batch sizes where the CPU's GEMM kernels block differently; the noise of
// another seed differs by far more.
func sameSample(dt DType, a, b []byte) bool {
	if dt != Float32 {
		return string(a) == string(b)
	}
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i += 4 {
		x := math.Float32frombits(binary.LittleEndian.Uint32(a[i:]))
		y := math.Float32frombits(binary.LittleEndian.Uint32(b[i:]))
		if math.Abs(float64(x)-float64(y)) > 1e-5 || x != x || y != y {
			return false
		}
	}
	return true
}

func outputIndex(t *testing.T, e *Engine, name string) int {
	t.Helper()
	idx := IOIndex(e.Outputs(), name)
	if idx < 0 {
		t.Fatalf("no output %q", name)
	}
	return idx
}

// Row i of a batch with seeds s_0..s_{k-1} samples what input i samples alone with seed s_i,
// for several batch sizes and row orders.
func TestRowSeedsBatchedRowEqualsRowAlone(t *testing.T) {
	rt := newRuntime(t)
	seeds := []uint64{3, 1 << 40, 0, 77, math.MaxUint64, 12345}
	for _, m := range stochastic {
		t.Run(m.output+"/"+m.path[strings.LastIndex(m.path, "/")+1:], func(t *testing.T) {
			e := loadEngine(t, rt, m.path)
			idx := outputIndex(t, e, m.output)
			c, err := e.NewContext()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			alone := make([][]byte, len(seeds))
			for i := range seeds {
				alone[i] = sampleRows(t, c, e, idx, [][][]byte{rowOf(e, i)}, seeds[i:i+1])[0]
			}
			for _, order := range [][]int{{0, 1}, {1, 0}, {2, 0, 1}, {5, 4, 3, 2, 1, 0}, {3, 0, 5, 1, 4, 2}} {
				rows := make([][][]byte, len(order))
				s := make([]uint64, len(order))
				for j, i := range order {
					rows[j], s[j] = rowOf(e, i), seeds[i]
				}
				got := sampleRows(t, c, e, idx, rows, s)
				for j, i := range order {
					if !sameSample(e.Outputs()[idx].DType, got[j], alone[i]) {
						t.Errorf("order %v: row %d (input %d, seed %d) = %v, alone %v", order, j, i, seeds[i], got[j], alone[i])
					}
				}
			}
		})
	}
}

func TestRowSeedsSameSeedSameSamplesOtherSeedOther(t *testing.T) {
	rt := newRuntime(t)
	for _, m := range stochastic {
		t.Run(m.output+"/"+m.path[strings.LastIndex(m.path, "/")+1:], func(t *testing.T) {
			e := loadEngine(t, rt, m.path)
			idx := outputIndex(t, e, m.output)
			c, err := e.NewContext()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// Four copies of one observation: only the seeds tell the rows apart.
			rows := [][][]byte{rowOf(e, 1), rowOf(e, 1), rowOf(e, 1), rowOf(e, 1)}
			a := sampleRows(t, c, e, idx, rows, []uint64{10, 11, 10, 12})
			b := sampleRows(t, c, e, idx, rows, []uint64{10, 11, 10, 12})
			for r := range a {
				if string(a[r]) != string(b[r]) {
					t.Errorf("row %d: the same seed gave %v, then %v", r, a[r], b[r])
				}
			}
			if string(a[0]) != string(a[2]) {
				t.Errorf("rows 0 and 2 share seed and input but sampled %v and %v", a[0], a[2])
			}
			// Count distinct samples over many seeds: every one for continuous actions, at
			// least two of a discrete action's few values.
			distinct := map[string]bool{}
			for s := uint64(0); s < 64; s++ {
				distinct[string(sampleRows(t, c, e, idx, rows[:1], []uint64{s})[0])] = true
			}
			want := 2
			if e.Outputs()[idx].DType == Float32 {
				want = 64
			}
			if len(distinct) < want {
				t.Errorf("64 seeds gave %d distinct samples, want at least %d", len(distinct), want)
			}
		})
	}
}

func TestRowSeedsCountMustMatchBatch(t *testing.T) {
	rt := newRuntime(t)
	e := loadEngine(t, rt, stochastic[0].path)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.SetRowSeeds([]uint64{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	out := make([]Tensor, len(e.Outputs()))
	err = c.Run(batchOf(e, [][][]byte{rowOf(e, 0), rowOf(e, 1)}), out)
	var pe *Error
	if !errors.As(err, &pe) || pe.Code != CodeInvalidArg {
		t.Fatalf("3 seeds for 2 rows: %v", err)
	}
	for _, want := range []string{"RandomNormalLike", "3 row seeds", "2 rows"} {
		if !strings.Contains(pe.Msg, want) {
			t.Errorf("message %q lacks %q", pe.Msg, want)
		}
	}
	// The context still runs a batch that fits.
	if err := c.Run(batchOf(e, [][][]byte{rowOf(e, 0), rowOf(e, 1), rowOf(e, 2)}), out); err != nil {
		t.Fatal(err)
	}
}

func TestRowSeedsEmptyRestoresContextStream(t *testing.T) {
	rt := newRuntime(t)
	e := loadEngine(t, rt, stochastic[0].path)
	idx := outputIndex(t, e, stochastic[0].output)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	rows := [][][]byte{rowOf(e, 0), rowOf(e, 1)}
	if err := c.SetSeed(5); err != nil {
		t.Fatal(err)
	}
	first := sampleRows(t, c, e, idx, rows, nil)
	second := sampleRows(t, c, e, idx, rows, nil)
	if err := c.SetSeed(5); err != nil {
		t.Fatal(err)
	}
	if got := sampleRows(t, c, e, idx, rows, nil); fmt.Sprint(got) != fmt.Sprint(first) {
		t.Fatal("SetSeed did not restart the context stream")
	}
	seeded := sampleRows(t, c, e, idx, rows, []uint64{1, 2})
	if fmt.Sprint(seeded) == fmt.Sprint(second) {
		t.Fatal("row seeds gave the context stream's samples")
	}
	if got := sampleRows(t, c, e, idx, rows, []uint64{}); fmt.Sprint(got) != fmt.Sprint(second) {
		t.Fatal("after SetRowSeeds(empty) the context stream did not continue where it was")
	}
}

func TestSetRowSeedsDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	_, e := mlpSmall(t)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	seeds := []uint64{1, 2, 3, 4, 5, 6, 7, 8}
	if err := c.SetRowSeeds(seeds); err != nil {
		t.Fatal(err)
	}
	i := 0
	if n := testing.AllocsPerRun(100, func() {
		i++
		_ = c.SetRowSeeds(seeds[:i%len(seeds)])
	}); n != 0 {
		t.Fatalf("SetRowSeeds allocates %v times per call", n)
	}
}

// initializerBytes sums elements times element size of the initializers of an ONNX model
// (ModelProto.graph = 7, GraphProto.initializer = 5, TensorProto.dims = 1, .data_type = 2).
func initializerBytes(t *testing.T, model []byte) uint64 {
	t.Helper()
	fields := func(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64)) {
		for len(b) > 0 {
			num, typ, n := protowire.ConsumeTag(b)
			if n < 0 {
				t.Fatal(protowire.ParseError(n))
			}
			b = b[n:]
			var v []byte
			var x uint64
			switch typ {
			case protowire.BytesType:
				v, n = protowire.ConsumeBytes(b)
			case protowire.VarintType:
				x, n = protowire.ConsumeVarint(b)
			default:
				n = protowire.ConsumeFieldValue(num, typ, b)
			}
			if n < 0 {
				t.Fatal(protowire.ParseError(n))
			}
			b = b[n:]
			fn(num, typ, v, x)
		}
	}
	var total uint64
	fields(model, func(num protowire.Number, typ protowire.Type, graph []byte, _ uint64) {
		if num != 7 || typ != protowire.BytesType {
			return
		}
		fields(graph, func(num protowire.Number, typ protowire.Type, tensor []byte, _ uint64) {
			if num != 5 || typ != protowire.BytesType {
				return
			}
			elems, dtype := uint64(1), DType(0)
			fields(tensor, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) {
				switch {
				case num == 1 && typ == protowire.VarintType:
					elems *= x
				case num == 1 && typ == protowire.BytesType: // packed dims
					for len(v) > 0 {
						d, n := protowire.ConsumeVarint(v)
						if n < 0 {
							t.Fatal(protowire.ParseError(n))
						}
						elems *= d
						v = v[n:]
					}
				case num == 2 && typ == protowire.VarintType:
					dtype = DType(x)
				}
			})
			if dtype.Size() == 0 {
				t.Fatalf("initializer of type %v", dtype)
			}
			total += elems * uint64(dtype.Size())
		})
	})
	return total
}

func TestMemory(t *testing.T) {
	rt := newRuntime(t)
	const path = "../../shared/peers/models/mlp-small.onnx"
	model, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	init := initializerBytes(t, model)
	e := loadEngine(t, rt, path)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	m0, err := c.Memory()
	if err != nil {
		t.Fatal(err)
	}
	if m0.WeightBytes < init || init == 0 {
		t.Errorf("weight bytes %d, the model's initializers hold %d", m0.WeightBytes, init)
	}
	if m0.ArenaBytes != 0 || m0.Buckets != 0 {
		t.Errorf("before any run: %+v", m0)
	}
	out := make([]Tensor, 1)
	if err := c.Run([]Tensor{obsBatch(1)}, out); err != nil {
		t.Fatal(err)
	}
	m1, _ := c.Memory()
	if err := c.Run([]Tensor{obsBatch(128)}, out); err != nil {
		t.Fatal(err)
	}
	m2, _ := c.Memory()
	if m1.ArenaBytes == 0 || m1.Buckets != 1 {
		t.Errorf("after a batch-1 run: %+v", m1)
	}
	// The batch-128 bucket holds at least 127 more rows of the output.
	if m2.Buckets != 2 || m2.ArenaBytes < m1.ArenaBytes+127*2*4 {
		t.Errorf("after a batch-128 run: %+v (batch 1: %+v)", m2, m1)
	}
	if m2.WeightBytes != m0.WeightBytes {
		t.Errorf("weight bytes changed from %d to %d", m0.WeightBytes, m2.WeightBytes)
	}
}

// Memory may be called from another goroutine while the owner runs, and fails cleanly once
// the context is closed.
func TestMemoryWhileRunning(t *testing.T) {
	_, e := mlpSmall(t)
	c, err := e.NewContext()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var pollErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := c.Memory(); err != nil {
				if !errors.Is(err, ErrClosed) {
					pollErr = err
				}
				return
			}
		}
	}()
	out := make([]Tensor, 1)
	for i := 0; i < 40; i++ {
		if err := c.Run([]Tensor{obsBatch(1 + i%8)}, out); err != nil {
			t.Fatal(err)
		}
	}
	c.Close()
	close(stop)
	wg.Wait()
	if pollErr != nil {
		t.Fatal(pollErr)
	}
	if _, err := c.Memory(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Memory after Close: %v", err)
	}
	if err := c.SetRowSeeds([]uint64{1}); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetRowSeeds after Close: %v", err)
	}
}

// Striker (three Multinomial heads) at batch 32: sampling from the context stream against one
// stream per row and op.
func BenchmarkRowSeedsStrikerBatch32(b *testing.B) {
	rt, err := NewRuntime("")
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close()
	m, err := os.ReadFile(stochastic[2].path)
	if err != nil {
		b.Fatal(err)
	}
	e, err := rt.NewEngine(m, EngineOptions{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close()
	rows := make([][][]byte, 32)
	seeds := make([]uint64, len(rows))
	for i := range rows {
		rows[i], seeds[i] = rowOf(e, i), uint64(i)
	}
	in := batchOf(e, rows)
	for _, bc := range []struct {
		name  string
		seeds []uint64
	}{{"context-stream", nil}, {"row-seeds", seeds}} {
		b.Run(bc.name, func(b *testing.B) {
			c, err := e.NewContext()
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			out := make([]Tensor, len(e.Outputs()))
			b.ReportAllocs()
			for b.Loop() {
				if err := c.SetRowSeeds(bc.seeds); err != nil {
					b.Fatal(err)
				}
				if err := c.Run(in, out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
