package repository

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/policyd/policyd/bridge"
)

// Kinds of ActionFallback: what answers a request whose deadline cannot be met (package
// server, fallback.go; docs/api.md, Deadlines).
const (
	FallbackLastAction = "last_action"
	FallbackConstant   = "constant"
	FallbackVersion    = "version"
)

// ActionFallback is a model's declared answer to a request that is not run for its deadline
// (config models[].deadline_fallback).
type ActionFallback struct {
	// Kind is FallbackLastAction, FallbackConstant or FallbackVersion.
	Kind string
	// Constant holds, per output name, the values of one row (the batch dimension aside),
	// row-major. Needed by FallbackConstant; FallbackLastAction uses it when there is no
	// last action.
	Constant map[string][]float64
	// Version is "model" or "model@version" (FallbackVersion).
	Version string
}

// Check reports to add the problems of f that need no signature, prefixed with path.
func (f *ActionFallback) Check(path string, add func(string, ...any)) {
	if f == nil {
		return
	}
	switch f.Kind {
	case FallbackLastAction:
	case FallbackConstant:
		if len(f.Constant) == 0 {
			add("%s.deadline_fallback.constant: kind constant needs the constant action", path)
		}
	case FallbackVersion:
		if name, _, _ := strings.Cut(f.Version, "@"); name == "" {
			add("%s.deadline_fallback.version: kind version needs model or model@version, got %q", path, f.Version)
		}
	default:
		add("%s.deadline_fallback.kind: must be last_action, constant or version, got %q", path, f.Kind)
	}
}

func (f *ActionFallback) equal(o *ActionFallback) bool {
	if f == nil || o == nil {
		return f == o
	}
	if f.Kind != o.Kind || f.Version != o.Version || len(f.Constant) != len(o.Constant) {
		return false
	}
	for k, v := range f.Constant {
		if w, ok := o.Constant[k]; !ok || !slices.Equal(v, w) {
			return false
		}
	}
	return true
}

// Fallback is a version's ActionFallback resolved against its signature at load.
type Fallback struct {
	Kind string
	// Model and Version name the fallback version (FallbackVersion; Version "": the default).
	Model, Version string
	// Rows holds, per output in the model's order, one row of the constant action (shape [1,
	// …] for an output with a batch dimension, the output's shape otherwise); nil without a
	// constant.
	Rows []bridge.Tensor
	// batchDim per output: 0 when the output has a batch dimension at 0, else -1.
	batched []bool
}

// NewFallback resolves f against a model's outputs (nil for nil): every output needs a constant with
// one row's elements, each value representable in the output's datatype; and no constant
// names an output the model lacks.
func NewFallback(f *ActionFallback, outputs []bridge.IOInfo) (*Fallback, error) {
	if f == nil {
		return nil, nil
	}
	r := &Fallback{Kind: f.Kind}
	if f.Kind == FallbackVersion {
		r.Model, r.Version, _ = strings.Cut(f.Version, "@")
	}
	if len(f.Constant) == 0 {
		return r, nil
	}
	var problems []string
	for _, name := range slices.Sorted(mapKeys(f.Constant)) {
		if bridge.IOIndex(outputs, name) < 0 {
			problems = append(problems, fmt.Sprintf("constant: %q is not an output of the model (outputs: %s)", name, bridge.IONames(outputs)))
		}
	}
	r.Rows = make([]bridge.Tensor, len(outputs))
	r.batched = make([]bool, len(outputs))
	for k, o := range outputs {
		vals, ok := f.Constant[o.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("constant: output %q has no values: every output needs one row", o.Name))
			continue
		}
		shape := slices.Clone(o.Shape)
		batched := o.BatchDim == 0 && len(shape) > 0
		if batched {
			shape[0] = 1
		}
		dyn := slices.IndexFunc(shape, func(d int64) bool { return d < 0 })
		if dyn >= 0 {
			problems = append(problems, fmt.Sprintf("constant: output %q: shape %v has a dynamic dimension besides the batch: a constant cannot fit it", o.Name, o.Shape))
			continue
		}
		n, _ := bridge.Elements(shape)
		if int64(len(vals)) != n {
			problems = append(problems, fmt.Sprintf("constant: output %q: %d values, one row of shape %v of %s holds %d", o.Name, len(vals), o.Shape, o.DType, n))
			continue
		}
		data, err := encodeConstant(o.DType, vals)
		if err != nil {
			problems = append(problems, fmt.Sprintf("constant: output %q: %v", o.Name, err))
			continue
		}
		r.Rows[k] = bridge.Tensor{DType: o.DType, Shape: shape, Data: data}
		r.batched[k] = batched
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("deadline_fallback: %s", strings.Join(problems, "; "))
	}
	return r, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// encodeConstant writes vals as little-endian elements of dt, refusing a value dt cannot hold.
func encodeConstant(dt bridge.DType, vals []float64) ([]byte, error) {
	size := dt.Size()
	if size <= 0 {
		return nil, fmt.Errorf("datatype %s cannot hold a constant", dt)
	}
	b := make([]byte, size*len(vals))
	le := binary.LittleEndian
	for i, v := range vals {
		integral := v == math.Trunc(v) && !math.IsInf(v, 0)
		bad := func(what string) error {
			return fmt.Errorf("value [%d] = %v is not %s (datatype %s)", i, v, what, dt)
		}
		inRange := func(lo, hi float64) bool { return integral && v >= lo && v <= hi }
		p := b[i*size:]
		switch dt {
		case bridge.Float32:
			if math.Abs(v) > math.MaxFloat32 && !math.IsInf(v, 0) {
				return nil, bad("in FP32's range")
			}
			le.PutUint32(p, math.Float32bits(float32(v)))
		case bridge.Float64:
			le.PutUint64(p, math.Float64bits(v))
		case bridge.Bool:
			if v != 0 && v != 1 {
				return nil, bad("0 or 1")
			}
			p[0] = byte(v)
		case bridge.Int8:
			if !inRange(math.MinInt8, math.MaxInt8) {
				return nil, bad("an INT8")
			}
			p[0] = byte(int8(v))
		case bridge.Uint8:
			if !inRange(0, math.MaxUint8) {
				return nil, bad("a UINT8")
			}
			p[0] = byte(v)
		case bridge.Int16:
			if !inRange(math.MinInt16, math.MaxInt16) {
				return nil, bad("an INT16")
			}
			le.PutUint16(p, uint16(int16(v)))
		case bridge.Uint16:
			if !inRange(0, math.MaxUint16) {
				return nil, bad("a UINT16")
			}
			le.PutUint16(p, uint16(v))
		case bridge.Int32:
			if !inRange(math.MinInt32, math.MaxInt32) {
				return nil, bad("an INT32")
			}
			le.PutUint32(p, uint32(int32(v)))
		case bridge.Uint32:
			if !inRange(0, math.MaxUint32) {
				return nil, bad("a UINT32")
			}
			le.PutUint32(p, uint32(v))
		case bridge.Int64:
			if !inRange(-(1 << 53), 1<<53) {
				return nil, bad("an INT64 exactly representable")
			}
			le.PutUint64(p, uint64(int64(v)))
		case bridge.Uint64:
			if !inRange(0, 1<<53) {
				return nil, bad("a UINT64 exactly representable")
			}
			le.PutUint64(p, uint64(v))
		default:
			return nil, fmt.Errorf("datatype %s cannot hold a constant", dt)
		}
	}
	return b, nil
}

// Constant returns the constant action for a request of rows rows: per output, its row
// repeated rows times along the batch dimension (whole for an output without one). Nil
// without a constant. The tensors are new; the caller may keep them.
func (f *Fallback) Constant(rows int) []bridge.Tensor {
	if f == nil || f.Rows == nil {
		return nil
	}
	out := make([]bridge.Tensor, len(f.Rows))
	for k, row := range f.Rows {
		n := 1
		if f.batched[k] {
			n = max(rows, 1)
		}
		shape := slices.Clone(row.Shape)
		if f.batched[k] {
			shape[0] = int64(n)
		}
		data := make([]byte, 0, n*len(row.Data))
		for range n {
			data = append(data, row.Data...)
		}
		out[k] = bridge.Tensor{DType: row.DType, Shape: shape, Data: data}
	}
	return out
}

// ActionFallback is the version's declared fallback action, resolved at load; nil when the
// model declares none (or the version did not load).
func (v *Version) ActionFallback() *Fallback { return v.fallback }
