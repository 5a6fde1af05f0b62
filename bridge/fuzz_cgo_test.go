//go:build cgo

package bridge

import (
	"encoding/binary"
	"errors"
	"os"
	"testing"
)

// The C ABI fuzz target: fuzzed ranks, dimensions, byte sizes, data lengths and NULL data
// reach pd_context_run through Context.Run and, past the checks Run makes itself, straight
// through runRaw with raw pd_tensor values. Every input must give a result or an error, never
// a crash; an input the library must refuse (a shape whose size overflows, a byte size that
// disagrees with it, NULL data) must give CodeInvalidArg; a result's every output must have
// exactly the bytes its shape needs. Its seeds run with every go test; longer, and against
// the ASan/UBSan build of the library: make fuzz-native FUZZTIME=10m.

// A minimal protobuf writer for the ONNX models the target crafts (field numbers of onnx.proto).
type pb []byte

func (b pb) varint(field int, v uint64) pb {
	b = binary.AppendUvarint(b, uint64(field)<<3)
	return binary.AppendUvarint(b, v)
}
func (b pb) bytes(field int, v []byte) pb {
	b = binary.AppendUvarint(b, uint64(field)<<3|2)
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}
func (b pb) str(field int, s string) pb { return b.bytes(field, []byte(s)) }

// valueInfo: a tensor of elem type and dims ("B" a symbol, "4" a fixed size).
func valueInfo(name string, elem uint64, dims ...any) []byte {
	var shape pb
	for _, d := range dims {
		switch d := d.(type) {
		case int:
			shape = shape.bytes(1, pb(nil).varint(1, uint64(d)))
		case string:
			shape = shape.bytes(1, pb(nil).str(2, d))
		}
	}
	tensor := pb(nil).varint(1, elem).bytes(2, shape)
	return pb(nil).str(1, name).bytes(2, pb(nil).bytes(1, tensor))
}

func node(op string, in []string, out string) []byte {
	var n pb
	for _, i := range in {
		n = n.str(1, i)
	}
	return n.str(2, out).str(3, op+"_node").str(4, op)
}

const (
	onnxFloat = 1
	onnxInt64 = 7
)

func onnxModel(nodes [][]byte, inputs, outputs [][]byte) []byte {
	var g pb
	for _, n := range nodes {
		g = g.bytes(1, n)
	}
	g = g.str(2, "g")
	for _, i := range inputs {
		g = g.bytes(11, i)
	}
	for _, o := range outputs {
		g = g.bytes(12, o)
	}
	return pb(nil).varint(1, 8).bytes(7, g).bytes(8, pb(nil).str(1, "").varint(2, 17))
}

// The models: Softmax over [B, M] (a free dimension after the batch), Reshape and Tile whose
// shapes come from a shape-tensor input, and two real MLPs.
func fuzzModels(f *testing.F) [][]byte {
	models := [][]byte{
		onnxModel([][]byte{node("Softmax", []string{"x"}, "y")},
			[][]byte{valueInfo("x", onnxFloat, "B", "M")}, [][]byte{valueInfo("y", onnxFloat, "B", "M")}),
		onnxModel([][]byte{node("Reshape", []string{"x", "shape"}, "y")},
			[][]byte{valueInfo("x", onnxFloat, "n"), valueInfo("shape", onnxInt64, 2)}, [][]byte{valueInfo("y", onnxFloat, "a", "b")}),
		onnxModel([][]byte{node("Tile", []string{"x", "repeats"}, "y")},
			[][]byte{valueInfo("x", onnxFloat, "B", 3), valueInfo("repeats", onnxInt64, 2)}, [][]byte{valueInfo("y", onnxFloat, "a", "b")}),
	}
	for _, p := range []string{"../../shared/peers/models/mlp-small.onnx", "../examples/repository/3DBall/1.0.0/model.onnx"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		models = append(models, b)
	}
	return models
}

const fuzzMaxBytes = 1 << 20 // the largest input a fuzzed run may really pass

func FuzzContextRunShapes(f *testing.F) {
	models := fuzzModels(f)
	rt, err := NewRuntime("")
	if err != nil {
		f.Fatal(err)
	}
	defer rt.Close()
	type loaded struct {
		e *Engine
		c *Context
	}
	ls := make([]loaded, len(models))
	for i, m := range models {
		e, err := rt.NewEngine(m, EngineOptions{Name: "fuzz"})
		if err != nil {
			f.Fatalf("model %d: %v", i, err)
		}
		c, err := e.NewContext()
		if err != nil {
			f.Fatal(err)
		}
		ls[i] = loaded{e, c}
	}
	defer func() {
		for _, l := range ls {
			l.c.Close()
			l.e.Close()
		}
	}()

	// model, raw (through runRaw), rank, four dims (repeated for ranks above 4), byte size,
	// data length, NULL data, two values for a shape-tensor input.
	const big = 6148914691236517206
	f.Add(uint8(0), false, int8(2), int64(3), int64(big), int64(0), int64(0), uint64(8), uint16(8), false, int64(0), int64(0))
	f.Add(uint8(0), true, int8(2), int64(3), int64(big), int64(0), int64(0), uint64(8), uint16(8), false, int64(0), int64(0))
	f.Add(uint8(0), true, int8(2), int64(4), int64(1)<<62, int64(0), int64(0), uint64(0), uint16(0), true, int64(0), int64(0))
	f.Add(uint8(0), false, int8(2), int64(2), int64(3), int64(0), int64(0), uint64(24), uint16(24), false, int64(0), int64(0))
	f.Add(uint8(0), true, int8(9), int64(1), int64(1), int64(1), int64(1), uint64(4), uint16(4), false, int64(0), int64(0))
	f.Add(uint8(0), true, int8(-1), int64(1), int64(1), int64(1), int64(1), uint64(4), uint16(4), false, int64(0), int64(0))
	f.Add(uint8(0), true, int8(2), int64(1), int64(4), int64(0), int64(0), uint64(16), uint16(16), true, int64(0), int64(0))
	f.Add(uint8(0), true, int8(2), int64(1), int64(-4), int64(0), int64(0), uint64(16), uint16(16), false, int64(0), int64(0))
	f.Add(uint8(0), true, int8(2), int64(0), int64(1)<<62, int64(0), int64(0), uint64(0), uint16(0), false, int64(0), int64(0))
	f.Add(uint8(1), false, int8(1), int64(6), int64(0), int64(0), int64(0), uint64(24), uint16(24), false, int64(2), int64(3))
	f.Add(uint8(1), false, int8(1), int64(6), int64(0), int64(0), int64(0), uint64(24), uint16(24), false, int64(-1), int64(big))
	f.Add(uint8(1), false, int8(1), int64(6), int64(0), int64(0), int64(0), uint64(24), uint16(24), false, int64(0), int64(-1))
	f.Add(uint8(2), false, int8(2), int64(1), int64(3), int64(0), int64(0), uint64(12), uint16(12), false, int64(1)<<62, int64(4))
	f.Add(uint8(2), false, int8(2), int64(2), int64(3), int64(0), int64(0), uint64(24), uint16(24), false, int64(2), int64(2))
	f.Add(uint8(3), false, int8(2), int64(4), int64(-1), int64(0), int64(0), uint64(0), uint16(0), false, int64(0), int64(0))
	f.Add(uint8(4), true, int8(2), int64(1)<<40, int64(8), int64(0), int64(0), uint64(0), uint16(0), false, int64(0), int64(0))

	f.Fuzz(func(t *testing.T, which uint8, raw bool, rank int8, d0, d1, d2, d3 int64, byteSize uint64,
		dataLen uint16, nullData bool, v0, v1 int64) {
		l := ls[int(which)%len(ls)]
		ins := l.e.Inputs()
		first := ins[0]
		// The fuzzed tensor is input 0; the other inputs are well formed (shape tensors take
		// v0, v1; the rest the signature with free dimensions 1, the batch taken from input 0).
		ds := [4]int64{d0, d1, d2, d3}
		dims := make([]int64, max(int(rank), 0))
		for k := range dims {
			dims[k] = ds[k%4]
		}
		rankOK := rank >= 0 && int(rank) <= MaxRank
		want, sizeOK := ByteSize(first.DType, dims)
		consistent := rankOK && sizeOK && uint64(want) == byteSize && !(nullData && want > 0)
		if consistent && want > fuzzMaxBytes {
			t.Skip("a consistent input this large would really be read")
		}
		batch := int64(1)
		if first.BatchDim >= 0 && first.BatchDim < len(dims) && dims[first.BatchDim] >= 1 && dims[first.BatchDim] <= 64 {
			batch = dims[first.BatchDim]
		}
		others := make([]Tensor, len(ins))
		for i := 1; i < len(ins); i++ {
			info := ins[i]
			shape := make([]int64, len(info.Shape))
			for k, d := range info.Shape {
				switch {
				case k == info.BatchDim:
					shape[k] = batch
				case d < 0:
					shape[k] = 1
				default:
					shape[k] = d
				}
			}
			n, _ := ByteSize(info.DType, shape)
			if n > fuzzMaxBytes {
				t.Skip("signature too large")
			}
			data := make([]byte, n)
			if info.DType == Int64 && len(shape) == 1 && shape[0] == 2 {
				// A shape tensor: a product that fits but is large would be a real allocation.
				if p, ok := Elements([]int64{abs(v0), abs(v1), max(want, 1)}); ok && p > 1<<26 {
					t.Skip("a valid shape this large would really be allocated")
				}
				binary.LittleEndian.PutUint64(data[0:], uint64(v0))
				binary.LittleEndian.PutUint64(data[8:], uint64(v1))
			}
			others[i] = Tensor{DType: info.DType, Shape: shape, Data: data}
		}
		outs := make([]Tensor, len(l.e.Outputs()))
		var runErr error
		if raw {
			in := make([]rawTensor, len(ins))
			in[0] = rawTensor{DType: first.DType, Rank: int32(rank), ByteSize: byteSize, NullData: nullData}
			copy(in[0].Dims[:], dims)
			if consistent {
				in[0].Data = make([]byte, want)
			} else {
				in[0].Data = make([]byte, dataLen)
			}
			for i := 1; i < len(ins); i++ {
				o := others[i]
				in[i] = rawTensor{DType: o.DType, Rank: int32(len(o.Shape)), ByteSize: uint64(len(o.Data)), Data: o.Data}
				copy(in[i].Dims[:], o.Shape)
			}
			runErr = l.c.runRaw(in, outs)
		} else {
			n := int(dataLen)
			if len(dims) <= MaxRank && sizeOK && want <= fuzzMaxBytes {
				n = int(want) // the public API sends the data it has: make it agree unless told not to
				if dataLen%7 == 0 {
					n = int(dataLen)
				}
			}
			in := append([]Tensor{{DType: first.DType, Shape: dims, Data: make([]byte, n)}}, others[1:]...)
			consistent = len(dims) <= MaxRank && sizeOK && int64(n) == want
			runErr = l.c.Run(in, outs)
		}
		if !consistent {
			var e *Error
			if runErr == nil || !errors.As(runErr, &e) || e.Code != CodeInvalidArg {
				t.Fatalf("an inconsistent input (rank %d, dims %v, byte size %d, data %d, null %v) got %v, want CodeInvalidArg",
					rank, dims, byteSize, dataLen, nullData, runErr)
			}
			return
		}
		if runErr != nil {
			return
		}
		for i, o := range outs {
			n, ok := ByteSize(o.DType, o.Shape)
			if !ok || n != int64(len(o.Data)) {
				t.Fatalf("output %d: shape %v (%v) has %d bytes of data, its shape needs %d", i, o.Shape, o.DType, len(o.Data), n)
			}
		}
	})
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}
