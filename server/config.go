package server

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// Triton's model configuration extension: GET /v2/models/{m}[/versions/{v}]/config answers the
// version's configuration as Triton's ModelConfig message (model_config.proto, package
// inference) in the protobuf JSON mapping Triton's HTTP endpoint prints: the proto's own
// field names (snake_case), enums by name, every primitive field of a message present even
// when zero, 64-bit integers as JSON numbers (Triton rewrites the mapping's strings back to
// numbers), unset sub-messages left out. The types below carry exactly the fields policyd
// fills, each under its proto name, so the gRPC front end can return the same document as a
// protobuf ModelConfig field for field. docs/api.md says where every value comes from.

// ModelConfig is Triton's inference.ModelConfig.
type ModelConfig struct {
	Name             string                 `json:"name"`
	Platform         string                 `json:"platform"`
	Backend          string                 `json:"backend"`
	MaxBatchSize     int32                  `json:"max_batch_size"`
	Input            []ModelInput           `json:"input"`
	Output           []ModelOutput          `json:"output"`
	DynamicBatching  *ModelDynamicBatching  `json:"dynamic_batching,omitempty"`
	SequenceBatching *ModelSequenceBatching `json:"sequence_batching,omitempty"`
	InstanceGroup    []ModelInstanceGroup   `json:"instance_group"`
}

// ModelInput is Triton's inference.ModelInput.
type ModelInput struct {
	Name             string              `json:"name"`
	DataType         string              `json:"data_type"` // DataType enum name: "TYPE_FP32", ...
	Format           string              `json:"format"`    // Format enum name: always "FORMAT_NONE"
	Dims             []int64             `json:"dims"`
	Reshape          *ModelTensorReshape `json:"reshape,omitempty"`
	IsShapeTensor    bool                `json:"is_shape_tensor"`
	AllowRaggedBatch bool                `json:"allow_ragged_batch"`
	Optional         bool                `json:"optional"`
}

// ModelOutput is Triton's inference.ModelOutput.
type ModelOutput struct {
	Name          string              `json:"name"`
	DataType      string              `json:"data_type"`
	Dims          []int64             `json:"dims"`
	Reshape       *ModelTensorReshape `json:"reshape,omitempty"`
	LabelFilename string              `json:"label_filename"`
	IsShapeTensor bool                `json:"is_shape_tensor"`
}

// ModelTensorReshape is Triton's inference.ModelTensorReshape.
type ModelTensorReshape struct {
	Shape []int64 `json:"shape"`
}

// ModelDynamicBatching is Triton's inference.ModelDynamicBatching.
type ModelDynamicBatching struct {
	PreferredBatchSize        []int32          `json:"preferred_batch_size"`
	MaxQueueDelayMicroseconds uint64           `json:"max_queue_delay_microseconds"`
	PreserveOrdering          bool             `json:"preserve_ordering"`
	PriorityLevels            uint64           `json:"priority_levels"`
	DefaultPriorityLevel      uint64           `json:"default_priority_level"`
	DefaultQueuePolicy        ModelQueuePolicy `json:"default_queue_policy"`
}

// ModelQueuePolicy is Triton's inference.ModelQueuePolicy.
type ModelQueuePolicy struct {
	TimeoutAction              string `json:"timeout_action"` // TimeoutAction enum name: always "REJECT"
	DefaultTimeoutMicroseconds uint64 `json:"default_timeout_microseconds"`
	AllowTimeoutOverride       bool   `json:"allow_timeout_override"`
	MaxQueueSize               uint32 `json:"max_queue_size"`
}

// ModelSequenceBatching is Triton's inference.ModelSequenceBatching. Its strategy oneof is
// "oldest" when a batcher forms batches of the steps of different sequences, else unset
// (Triton's default, "direct"). control_input lists the configured control inputs
// (models[].sequence.controls).
type ModelSequenceBatching struct {
	Oldest                      *SequenceStrategyOldest `json:"oldest,omitempty"`
	MaxSequenceIdleMicroseconds uint64                  `json:"max_sequence_idle_microseconds"`
	ControlInput                []SequenceControlInput  `json:"control_input"`
	State                       []ModelSequenceState    `json:"state"`
	IterativeSequence           bool                    `json:"iterative_sequence"`
}

// SequenceControlInput is Triton's inference.ModelSequenceBatching.ControlInput.
type SequenceControlInput struct {
	Name    string            `json:"name"`
	Control []SequenceControl `json:"control"`
}

// SequenceControl is Triton's inference.ModelSequenceBatching.Control.
type SequenceControl struct {
	Kind           string    `json:"kind"` // Kind enum name: "CONTROL_SEQUENCE_START", ...
	Int32FalseTrue []int32   `json:"int32_false_true"`
	Fp32FalseTrue  []float32 `json:"fp32_false_true"`
	BoolFalseTrue  []bool    `json:"bool_false_true"`
	DataType       string    `json:"data_type"`
}

// SequenceStrategyOldest is Triton's inference.ModelSequenceBatching.StrategyOldest.
type SequenceStrategyOldest struct {
	MaxCandidateSequences     int32   `json:"max_candidate_sequences"`
	PreferredBatchSize        []int32 `json:"preferred_batch_size"`
	MaxQueueDelayMicroseconds uint64  `json:"max_queue_delay_microseconds"`
	PreserveOrdering          bool    `json:"preserve_ordering"`
}

// ModelSequenceState is Triton's inference.ModelSequenceBatching.State.
type ModelSequenceState struct {
	InputName                   string                      `json:"input_name"`
	OutputName                  string                      `json:"output_name"`
	DataType                    string                      `json:"data_type"`
	Dims                        []int64                     `json:"dims"`
	InitialState                []ModelSequenceInitialState `json:"initial_state"`
	UseSameBufferForInputOutput bool                        `json:"use_same_buffer_for_input_output"`
	UseGrowableMemory           bool                        `json:"use_growable_memory"`
}

// ModelSequenceInitialState is Triton's inference.ModelSequenceBatching.InitialState with
// its state_data oneof set to zero_data (policyd starts every state at zeros).
type ModelSequenceInitialState struct {
	DataType string  `json:"data_type"`
	Dims     []int64 `json:"dims"`
	ZeroData bool    `json:"zero_data"`
	Name     string  `json:"name"`
}

// ModelInstanceGroup is Triton's inference.ModelInstanceGroup.
type ModelInstanceGroup struct {
	Name       string   `json:"name"`
	Kind       string   `json:"kind"` // Kind enum name: "KIND_CPU" or "KIND_GPU"
	Count      int32    `json:"count"`
	Gpus       []int32  `json:"gpus"`
	Profile    []string `json:"profile"`
	Passive    bool     `json:"passive"`
	HostPolicy string   `json:"host_policy"`
}

// Platform and Backend of every policyd model: the model is ONNX, which Triton names
// "onnxruntime_onnx" (the platform clients such as perf_analyzer and Model Analyzer read to
// know the model format), and it runs on policyd's own engines, not Triton's onnxruntime
// backend, which "backend" says.
const (
	configPlatform = "onnxruntime_onnx"
	configBackend  = "policyd"
)

// tritonDataType maps a tensor type to the name of Triton's DataType enum.
func tritonDataType(d bridge.DType) string {
	switch d {
	case bridge.Bool:
		return "TYPE_BOOL"
	case bridge.Uint8:
		return "TYPE_UINT8"
	case bridge.Uint16:
		return "TYPE_UINT16"
	case bridge.Uint32:
		return "TYPE_UINT32"
	case bridge.Uint64:
		return "TYPE_UINT64"
	case bridge.Int8:
		return "TYPE_INT8"
	case bridge.Int16:
		return "TYPE_INT16"
	case bridge.Int32:
		return "TYPE_INT32"
	case bridge.Int64:
		return "TYPE_INT64"
	case bridge.Float16:
		return "TYPE_FP16"
	case bridge.Float32:
		return "TYPE_FP32"
	case bridge.Float64:
		return "TYPE_FP64"
	case bridge.String:
		return "TYPE_STRING"
	case bridge.BFloat16:
		return "TYPE_BF16"
	}
	return "TYPE_INVALID"
}

// servingReporter is a Model that says how it serves (*repository.Version).
type servingReporter interface {
	Serving() (repository.Serving, bool)
}

// NewModelConfig builds the model configuration document of a loaded version m. queueTimeout
// is the server's queue timeout (Options.QueueTimeout: the default queue policy's timeout).
//
// max_batch_size is the version's max batch size when its inputs all batch on dimension 0 and
// its outputs on dimension 0 or not at all (engines.Batchable: the batcher could serve it),
// with the batch dimension left out of every dims; otherwise 0, with dims as the model takes
// them: -1 for a free dimension, and 1 for the batch of a model whose graph fixes it
// (engines.BatchOne). dynamic_batching and sequence_batching are Triton's oneof
// scheduling_choice, so one at most is there: sequence_batching when the version keeps
// sequences (with the "oldest" strategy, the batcher's sizes and delay, when a batcher forms
// batches of their steps), else dynamic_batching when a batcher forms batches. A model that
// does not say how it serves (a test's fake) gets one CPU instance and the default max batch
// size.
func NewModelConfig(m Model, queueTimeout time.Duration) ModelConfig {
	ins, outs := m.Inputs(), m.Outputs()
	sv := repository.Serving{Backend: "cpu", Instances: 1, MaxBatchSize: engines.DefaultMaxBatchSize}
	if r, ok := m.(servingReporter); ok {
		if got, ok := r.Serving(); ok {
			sv = got
		}
	}
	batching := engines.Batchable(m.Batchable(), ins, outs) && sv.MaxBatchSize > 0
	c := ModelConfig{
		Name: m.Name(), Platform: configPlatform, Backend: configBackend,
		Input: make([]ModelInput, len(ins)), Output: make([]ModelOutput, len(outs)),
	}
	if batching {
		c.MaxBatchSize = int32(min(int64(sv.MaxBatchSize), math.MaxInt32))
	}
	for i, in := range ins {
		dims, reshape := configDims(in.Shape, batching && in.BatchDim == 0)
		c.Input[i] = ModelInput{Name: in.Name, DataType: tritonDataType(in.DType), Format: "FORMAT_NONE", Dims: dims, Reshape: reshape}
	}
	for i, out := range outs {
		dims, reshape := configDims(out.Shape, batching && out.BatchDim == 0)
		c.Output[i] = ModelOutput{Name: out.Name, DataType: tritonDataType(out.DType), Dims: dims, Reshape: reshape}
	}
	var preferred []int32
	for _, n := range sv.PreferredBatchSizes {
		if n > 0 && n <= sv.MaxBatchSize {
			preferred = append(preferred, int32(n))
		}
	}
	delay := uint64(max(sv.MaxQueueDelay, 0) / time.Microsecond)
	if batching && sv.Batched && sv.Sequence == nil {
		d := &ModelDynamicBatching{
			PreferredBatchSize:        append([]int32{}, preferred...),
			MaxQueueDelayMicroseconds: delay,
			DefaultQueuePolicy: ModelQueuePolicy{
				TimeoutAction:              "REJECT",
				DefaultTimeoutMicroseconds: uint64(max(queueTimeout, 0) / time.Microsecond),
				AllowTimeoutOverride:       true, // a request's "timeout" parameter shortens it
				MaxQueueSize:               uint32(min(int64(max(sv.QueueLen, 0)), math.MaxUint32)),
			},
		}
		if sv.PriorityLevels > 0 {
			d.PriorityLevels = uint64(sv.PriorityLevels)
			d.DefaultPriorityLevel = uint64(sv.PriorityLevels) // policyd's 0: the lowest level
			if sv.DefaultPriorityLevel > 0 {
				d.DefaultPriorityLevel = uint64(sv.DefaultPriorityLevel)
			}
		}
		c.DynamicBatching = d
	}
	if spec := sv.Sequence; spec != nil {
		idle := spec.IdleTimeout
		if idle <= 0 {
			idle = engines.DefaultSequenceIdleTimeout
		}
		sb := &ModelSequenceBatching{
			MaxSequenceIdleMicroseconds: uint64(idle / time.Microsecond),
			ControlInput:                controlInputs(spec.Controls),
			State:                       make([]ModelSequenceState, 0, len(spec.States)),
		}
		for _, p := range spec.States {
			k := bridge.IOIndex(ins, p.Input)
			if k < 0 {
				continue // refused at load: a loaded version's pairs name its inputs
			}
			in := ins[k]
			dims, _ := configDims(in.Shape, batching && in.BatchDim == 0)
			sb.State = append(sb.State, ModelSequenceState{
				InputName: p.Input, OutputName: p.Output, DataType: tritonDataType(in.DType), Dims: dims,
				InitialState: []ModelSequenceInitialState{{DataType: tritonDataType(in.DType), Dims: dims, ZeroData: true, Name: "zeros"}},
			})
		}
		if batching && sv.Batched {
			sb.Oldest = &SequenceStrategyOldest{
				MaxCandidateSequences:     int32(min(int64(max(spec.MaxSequences, 0)), math.MaxInt32)),
				PreferredBatchSize:        append([]int32{}, preferred...),
				MaxQueueDelayMicroseconds: delay,
			}
			if sb.Oldest.MaxCandidateSequences == 0 {
				sb.Oldest.MaxCandidateSequences = engines.DefaultMaxSequences
			}
		}
		c.SequenceBatching = sb
	}
	g := ModelInstanceGroup{Name: m.Name() + "_0", Kind: "KIND_CPU", Count: int32(max(sv.Instances, 1)), Gpus: []int32{}, Profile: []string{}}
	if sv.Backend != "" && sv.Backend != "cpu" {
		g.Kind = "KIND_GPU"
		if len(sv.Devices) == 0 {
			g.Gpus = append(g.Gpus, 0) // a GPU backend whose devices the loader does not list runs on GPU 0
		}
		for _, d := range sv.Devices {
			g.Gpus = append(g.Gpus, int32(d))
		}
	}
	c.InstanceGroup = []ModelInstanceGroup{g}
	return c
}

// configDims is a signature shape as Triton's dims: without dimension 0 when it is the batch
// dimension of a model with max_batch_size > 0; never nil (dims is always printed). A tensor
// that is nothing but its batch ([N]) is written as Triton writes it, dims [1] with a reshape
// to [] (Triton refuses empty dims).
func configDims(shape []int64, dropBatch bool) ([]int64, *ModelTensorReshape) {
	if dropBatch && len(shape) > 0 {
		shape = shape[1:]
		if len(shape) == 0 {
			return []int64{1}, &ModelTensorReshape{Shape: []int64{}}
		}
	}
	return append(make([]int64, 0, len(shape)), shape...), nil
}

// modelConfig answers the version's model configuration document (NewModelConfig): 404 for an
// unknown model or version, 503 with the reason for a version that is not ready (there is no
// loaded model to describe), as the metadata route does.
func (s *Server) modelConfig(ctx *fasthttp.RequestCtx) {
	m, ok := s.lookup(ctx)
	if !ok {
		return
	}
	defer m.Release()
	if s.notReady(ctx, m) {
		return
	}
	b, err := json.Marshal(NewModelConfig(m, s.opts.QueueTimeout))
	if err != nil {
		s.fail(ctx, fmt.Errorf("model configuration of %s@%s: %w", m.Name(), m.Version(), err))
		return
	}
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// controlInputs writes the sequence control inputs as Triton's control_input: one entry per
// input with its one control.
func controlInputs(cs []engines.Control) []SequenceControlInput {
	out := make([]SequenceControlInput, 0, len(cs))
	for _, c := range cs {
		sc := SequenceControl{Kind: "CONTROL_SEQUENCE_" + strings.ToUpper(c.Kind.String()),
			Int32FalseTrue: []int32{}, Fp32FalseTrue: []float32{}, BoolFalseTrue: []bool{}, DataType: "TYPE_INVALID"}
		switch {
		case c.Kind == engines.ControlCorrID:
			sc.DataType = tritonDataType(c.DType)
		case c.DType == bridge.Int32:
			sc.Int32FalseTrue = []int32{int32(c.False), int32(c.True)}
		case c.DType == bridge.Float32:
			sc.Fp32FalseTrue = []float32{float32(c.False), float32(c.True)}
		case c.DType == bridge.Bool:
			sc.BoolFalseTrue = []bool{c.False != 0, c.True != 0}
		}
		out = append(out, SequenceControlInput{Name: c.Input, Control: []SequenceControl{sc}})
	}
	return out
}
