package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"sort"
	"sync/atomic"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// fakeModel is a Model whose Do computes its outputs in Go. After fn returns, Do scribbles
// over the output buffers, as the next native run would, to catch use after the callback.
type fakeModel struct {
	name, version string
	inputs        []bridge.IOInfo
	outputs       []bridge.IOInfo
	batchable     bool
	reason        string // not ready when set
	run           func(in []bridge.Tensor) []bridge.Tensor
	err           error                     // returned by Do instead of running when set
	hook          func(ctx context.Context) // called at the start of Do when set
	keepOutputs   bool                      // do not scribble over the outputs after fn
	held          atomic.Int64              // Acquire calls not yet released
	stats         engines.Stats
	seqs          *engines.Sequences                                                                  // Sequences() when set
	doFn          func(ctx context.Context, in []bridge.Tensor, fn func([]bridge.Tensor) error) error // replaces Do when set
	lastOpts      atomic.Pointer[engines.RunOptions]                                                  // the options of the last Do
	recordOpts    bool                                                                                // record lastOpts (it allocates)
	serving       *repository.Serving                                                                 // Serving() when set
}

// Serving reports m.serving, as *repository.Version reports how it serves.
func (m *fakeModel) Serving() (repository.Serving, bool) {
	if m.serving == nil {
		return repository.Serving{}, false
	}
	return *m.serving, true
}

func (m *fakeModel) Stats() *engines.Stats { return &m.stats }

func (m *fakeModel) Sequences() *engines.Sequences { return m.seqs }

func (m *fakeModel) Name() string             { return m.name }
func (m *fakeModel) Version() string          { return m.version }
func (m *fakeModel) Inputs() []bridge.IOInfo  { return m.inputs }
func (m *fakeModel) Outputs() []bridge.IOInfo { return m.outputs }
func (m *fakeModel) Batchable() bool          { return m.batchable }
func (m *fakeModel) Ready() (bool, string)    { return m.reason == "", m.reason }
func (m *fakeModel) Release() {
	if m.held.Add(-1) < 0 {
		panic(fmt.Sprintf("%s released more often than acquired", m))
	}
}
func (m *fakeModel) Do(ctx context.Context, in []bridge.Tensor, opts engines.RunOptions, fn func([]bridge.Tensor) error) error {
	if opts.Sequence.Store != nil { // as a Runner does: the engines drive the step
		return engines.DoSequenceStep(ctx, m, in, opts, fn)
	}
	if m.recordOpts {
		o := opts
		m.lastOpts.Store(&o)
	}
	if m.doFn != nil {
		return m.doFn(ctx, in, fn)
	}
	if m.hook != nil {
		m.hook(ctx)
	}
	if m.err != nil {
		return m.err
	}
	if m.reason != "" {
		return &repository.UnavailableError{Model: m.name, Version: m.version, Reason: m.reason}
	}
	outs := m.run(in)
	err := fn(outs)
	if m.keepOutputs {
		return err
	}
	for _, o := range outs {
		for i := range o.Data {
			o.Data[i] = 0xff
		}
	}
	return err
}

// fakeRegistry holds fake models; version "" picks the highest ready version (versions are
// compared as integers).
type fakeRegistry struct {
	models map[string][]*fakeModel
}

func newFakeRegistry(ms ...*fakeModel) *fakeRegistry {
	r := &fakeRegistry{models: map[string][]*fakeModel{}}
	for _, m := range ms {
		r.models[m.name] = append(r.models[m.name], m)
	}
	return r
}

func (r *fakeRegistry) Models() []string {
	var names []string
	for n := range r.models {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func (r *fakeRegistry) Versions(model string) []Model {
	var out []Model
	for _, m := range r.models[model] {
		out = append(out, m)
	}
	return out
}

func (r *fakeRegistry) Acquire(name, version string) (Model, error) {
	m, err := r.find(name, version)
	if err != nil {
		return nil, err
	}
	m.held.Add(1)
	return m, nil
}

// held counts the models acquired and not released.
func (r *fakeRegistry) held() int64 {
	var n int64
	for _, vs := range r.models {
		for _, m := range vs {
			n += m.held.Load()
		}
	}
	return n
}

func (r *fakeRegistry) find(name, version string) (*fakeModel, error) {
	vs, ok := r.models[name]
	if !ok {
		return nil, &repository.NotFoundError{Model: name}
	}
	if version == "" {
		for i := len(vs) - 1; i >= 0; i-- {
			if vs[i].reason == "" {
				return vs[i], nil
			}
		}
		return vs[len(vs)-1], nil
	}
	for _, m := range vs {
		if m.version == version {
			return m, nil
		}
	}
	return nil, &repository.NotFoundError{Model: name, Version: version}
}

// bigIndex is larger than 2^53: it survives only if INT64 outputs are written as integers.
const bigIndex = 9007199254740993

// policyModel: obs FP32[-1,4] → action FP32[-1,4] = 2*obs, index INT64[-1,1] = bigIndex+row,
// positive BOOL[-1,4] = obs>0, special FP32[-1,3] = NaN, +Inf, -Inf.
func policyModel(version string) *fakeModel {
	return &fakeModel{
		name: "policy", version: version, batchable: true,
		inputs: []bridge.IOInfo{{Name: "obs", DType: bridge.Float32, Shape: []int64{-1, 4}, BatchDim: 0}},
		outputs: []bridge.IOInfo{
			{Name: "action", DType: bridge.Float32, Shape: []int64{-1, 4}},
			{Name: "index", DType: bridge.Int64, Shape: []int64{-1, 1}},
			{Name: "positive", DType: bridge.Bool, Shape: []int64{-1, 4}},
			{Name: "special", DType: bridge.Float32, Shape: []int64{-1, 3}},
		},
		run: func(in []bridge.Tensor) []bridge.Tensor {
			obs := in[0]
			batch := obs.Shape[0]
			action := make([]byte, len(obs.Data))
			positive := make([]byte, len(obs.Data)/4)
			for i := range positive {
				f := math.Float32frombits(binary.LittleEndian.Uint32(obs.Data[4*i:]))
				binary.LittleEndian.PutUint32(action[4*i:], math.Float32bits(2*f))
				if f > 0 {
					positive[i] = 1
				}
			}
			index := make([]byte, 8*batch)
			special := make([]byte, 12*batch)
			for r := int64(0); r < batch; r++ {
				binary.LittleEndian.PutUint64(index[8*r:], uint64(bigIndex+r))
				binary.LittleEndian.PutUint32(special[12*r:], math.Float32bits(float32(math.NaN())))
				binary.LittleEndian.PutUint32(special[12*r+4:], math.Float32bits(float32(math.Inf(1))))
				binary.LittleEndian.PutUint32(special[12*r+8:], math.Float32bits(float32(math.Inf(-1))))
			}
			return []bridge.Tensor{
				{DType: bridge.Float32, Shape: []int64{batch, 4}, Data: action},
				{DType: bridge.Int64, Shape: []int64{batch, 1}, Data: index},
				{DType: bridge.Bool, Shape: []int64{batch, 4}, Data: positive},
				{DType: bridge.Float32, Shape: []int64{batch, 3}, Data: special},
			}
		},
	}
}

// multiModel has inputs of many datatypes and echoes them:
// a FP32[-1,2], b INT32[-1,3], c BOOL[-1,1], d UINT8[2] (no batch), e INT64[-1], f FP64[-1,1],
// g INT8[-1,1], h UINT64[-1,1], i INT16[-1,1], j UINT16[-1,1], k UINT32[-1,1]
// → the same tensors under the names <name>_out.
func multiModel() *fakeModel {
	ins := []bridge.IOInfo{
		{Name: "a", DType: bridge.Float32, Shape: []int64{-1, 2}},
		{Name: "b", DType: bridge.Int32, Shape: []int64{-1, 3}},
		{Name: "c", DType: bridge.Bool, Shape: []int64{-1, 1}},
		{Name: "d", DType: bridge.Uint8, Shape: []int64{2}, BatchDim: -1},
		{Name: "e", DType: bridge.Int64, Shape: []int64{-1}},
		{Name: "f", DType: bridge.Float64, Shape: []int64{-1, 1}},
		{Name: "g", DType: bridge.Int8, Shape: []int64{-1, 1}},
		{Name: "h", DType: bridge.Uint64, Shape: []int64{-1, 1}},
		{Name: "i", DType: bridge.Int16, Shape: []int64{-1, 1}},
		{Name: "j", DType: bridge.Uint16, Shape: []int64{-1, 1}},
		{Name: "k", DType: bridge.Uint32, Shape: []int64{-1, 1}},
	}
	outs := make([]bridge.IOInfo, len(ins))
	for i, in := range ins {
		outs[i] = in
		outs[i].Name = in.Name + "_out"
	}
	return &fakeModel{
		name: "multi", version: "1", batchable: true, inputs: ins, outputs: outs,
		run: func(in []bridge.Tensor) []bridge.Tensor {
			out := make([]bridge.Tensor, len(in))
			for i, t := range in {
				out[i] = bridge.Tensor{DType: t.DType, Shape: append([]int64(nil), t.Shape...), Data: append([]byte(nil), t.Data...)}
			}
			return out
		},
	}
}

// fixedModel: x INT8[1,3] (not batchable) → y INT8[1,3] echo.
func fixedModel() *fakeModel {
	return &fakeModel{
		name: "fixed", version: "1",
		inputs:  []bridge.IOInfo{{Name: "x", DType: bridge.Int8, Shape: []int64{1, 3}, BatchDim: -1}},
		outputs: []bridge.IOInfo{{Name: "y", DType: bridge.Int8, Shape: []int64{1, 3}, BatchDim: -1}},
		run: func(in []bridge.Tensor) []bridge.Tensor {
			return []bridge.Tensor{{DType: bridge.Int8, Shape: []int64{1, 3}, Data: append([]byte(nil), in[0].Data...)}}
		},
	}
}

func brokenModel() *fakeModel {
	return &fakeModel{name: "broken", version: "1", reason: `graph output "y" is not produced by any node`}
}

// testRegistry: policy 1 and 2 (ready) and 3 (not ready), multi, fixed, broken.
func testRegistry() *fakeRegistry {
	p3 := policyModel("3")
	p3.reason = "version 3 failed to load"
	return newFakeRegistry(policyModel("1"), policyModel("2"), p3, multiModel(), fixedModel(), brokenModel())
}

func (m *fakeModel) String() string { return fmt.Sprintf("%s@%s", m.name, m.version) }
