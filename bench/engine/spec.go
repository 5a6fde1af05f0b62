package engine

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// ModelSpec is one entry of the peers' models.json: the ONNX file and its I/O signature, -1
// marking the batch dimension.
type ModelSpec struct {
	Name    string   `json:"-"`
	File    string   `json:"file"`
	Inputs  []IOSpec `json:"inputs"`
	Outputs []IOSpec `json:"outputs"`
	Params  int64    `json:"params"`
}

// IOSpec is one input or output of a ModelSpec.
type IOSpec struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	DataType string  `json:"datatype"`
}

// LoadSpecs reads DIR/models.json and returns its models in file order.
func LoadSpecs(dir string) ([]ModelSpec, error) {
	path := filepath.Join(dir, "models.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	specs, err := parseSpecs(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return specs, nil
}

// parseSpecs decodes {"models": {name: spec, ...}} keeping the order of the names, which a Go
// map would lose.
func parseSpecs(b []byte) ([]ModelSpec, error) {
	var top struct {
		Models json.RawMessage `json:"models"`
	}
	if err := json.Unmarshal(b, &top); err != nil {
		return nil, err
	}
	if len(top.Models) == 0 {
		return nil, fmt.Errorf("no \"models\" object")
	}
	dec := json.NewDecoder(bytes.NewReader(top.Models))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("\"models\" is not an object")
	}
	var specs []ModelSpec
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, _ := t.(string)
		var s ModelSpec
		if err := dec.Decode(&s); err != nil {
			return nil, fmt.Errorf("model %q: %w", name, err)
		}
		s.Name = name
		if s.File == "" || len(s.Inputs) == 0 {
			return nil, fmt.Errorf("model %q: no file or no inputs", name)
		}
		for _, in := range s.Inputs {
			if in.DataType != "FP32" {
				return nil, fmt.Errorf("model %q input %q: datatype %s (only FP32 is benchmarked)", name, in.Name, in.DataType)
			}
		}
		specs = append(specs, s)
	}
	return specs, nil
}

// ConcreteShape replaces every -1 (the batch dimension, wherever it sits: [-1,8] for an MLP's
// obs, [1,-1,128] for an LSTM's h_in) with batch.
func ConcreteShape(shape []int64, batch int) []int64 {
	out := make([]int64, len(shape))
	for i, d := range shape {
		if d == -1 {
			d = int64(batch)
		}
		out[i] = d
	}
	return out
}

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
