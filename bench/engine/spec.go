package engine

import (
	"encoding/binary"
	"math"

	"github.com/policyd/policyd/bench/peers"
)

// ModelSpec is one entry of the peers' models.json (package peers).
type ModelSpec = peers.ModelSpec

// IOSpec is one input or output of a ModelSpec.
type IOSpec = peers.IOSpec

// LoadSpecs reads DIR/models.json and returns its models in file order.
func LoadSpecs(dir string) ([]ModelSpec, error) { return peers.LoadSpecs(dir) }

func parseSpecs(b []byte) ([]ModelSpec, error) { return peers.ParseSpecs(b) }

// ConcreteShape replaces every -1 (the batch dimension) with batch.
func ConcreteShape(shape []int64, batch int) []int64 { return peers.ConcreteShape(shape, batch) }

// filler is ort_bench.js's deterministic xorshift32 generator: the sum of four uniforms,
// centered and scaled. Using it (seed 12345+batch, inputs in models.json order) gives both
// peers bit-identical inputs.
type filler struct{ s uint32 }

func newFiller(seed uint32) *filler {
	if seed == 0 {
		seed = 1
	}
	return &filler{s: seed}
}

func (f *filler) next() float32 {
	acc := 0.0
	for k := 0; k < 4; k++ {
		f.s ^= f.s << 13
		f.s ^= f.s >> 17
		f.s ^= f.s << 5
		acc += float64(f.s) / 4294967296
	}
	return float32((acc - 2) * 1.7)
}

// SeededInputs builds the little-endian float32 data of every input of spec at batch, in
// models.json order, exactly as ort_bench.js does when it has no reference body.
func SeededInputs(spec ModelSpec, batch int) (shapes [][]int64, data [][]byte) {
	rnd := newFiller(uint32(12345 + batch))
	for _, in := range spec.Inputs {
		shape := ConcreteShape(in.Shape, batch)
		n := 1
		for _, d := range shape {
			n *= int(d)
		}
		buf := make([]byte, 4*n)
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(rnd.next()))
		}
		shapes = append(shapes, shape)
		data = append(data, buf)
	}
	return shapes, data
}
