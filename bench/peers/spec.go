// Package peers reads the peer benchmark harness of ../shared/peers: its models.json, request
// bodies and reference outputs, whether it is set up on this machine (setup.sh), and the raw
// results of its run_all.sh. It never writes into the harness: RunAll runs a copy of it.
package peers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// ModelSpec is one entry of the peers' models.json: the ONNX file and its I/O signature, -1
// marking the batch dimension.
type ModelSpec struct {
	Name    string   `json:"-"`
	File    string   `json:"file"`
	Inputs  []IOSpec `json:"inputs"`
	Outputs []IOSpec `json:"outputs"`
	Params  int64    `json:"params"`
	// CheckAtol is the largest |policyd − ORT| on an output that `policyctl bench engine`'s
	// output check accepts for this model (0: its default); the int8 models of make
	// bench-quant set a looser one.
	CheckAtol float64 `json:"check_atol,omitempty"`
}

// IOSpec is one input or output of a ModelSpec.
type IOSpec struct {
	Name     string  `json:"name"`
	Shape    []int64 `json:"shape"`
	DataType string  `json:"datatype"`
}

// BatchAxis is the index of the -1 in shape, -1 when there is none.
func (s IOSpec) BatchAxis() int { return slices.Index(s.Shape, -1) }

// LoadSpecs reads DIR/models.json and returns its models in file order.
func LoadSpecs(dir string) ([]ModelSpec, error) {
	path := filepath.Join(dir, "models.json")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	specs, err := ParseSpecs(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return specs, nil
}

// FindSpec returns the spec named name.
func FindSpec(specs []ModelSpec, name string) (ModelSpec, bool) {
	i := slices.IndexFunc(specs, func(s ModelSpec) bool { return s.Name == name })
	if i < 0 {
		return ModelSpec{}, false
	}
	return specs[i], true
}

// ParseSpecs decodes {"models": {name: spec, ...}} keeping the order of the names, which a Go
// map would lose.
func ParseSpecs(b []byte) ([]ModelSpec, error) {
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
