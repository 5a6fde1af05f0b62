package engines

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/policyd/policyd/bridge"
)

// ControlKind is what a sequence control input tells the model, as Triton's
// sequence_batching.control_input kinds do.
type ControlKind int

// The control kinds (Triton's CONTROL_SEQUENCE_START, _END, _READY and _CORRID).
const (
	ControlStart  ControlKind = iota + 1 // true on the first step of a sequence (sequence_start)
	ControlEnd                           // true on its last step (sequence_end)
	ControlReady                         // true for a row that holds a request: always, as every row does
	ControlCorrID                        // the sequence's numeric ID (sequence_id)
)

// String is the kind as the config names it.
func (k ControlKind) String() string {
	switch k {
	case ControlStart:
		return "start"
	case ControlEnd:
		return "end"
	case ControlReady:
		return "ready"
	case ControlCorrID:
		return "corrid"
	}
	return fmt.Sprintf("ControlKind(%d)", int(k))
}

// ParseControlKind reads a kind by its config name (start, end, ready, corrid).
func ParseControlKind(s string) (ControlKind, bool) {
	for k := ControlStart; k <= ControlCorrID; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// Control is one sequence control input: a model input the server fills, for every step of a
// sequence, from the step's sequence_id, sequence_start and sequence_end (Triton's
// sequence_batching.control_input). Its tensor holds one element per row (Triton's dims [1]).
type Control struct {
	Input string
	Kind  ControlKind
	// DType is the input's datatype: FP32, INT32 or BOOL for start, end and ready; INT32,
	// INT64, UINT32 or UINT64 for corrid.
	DType bridge.DType
	// False and True are the values of start, end and ready (Triton's int32_false_true,
	// fp32_false_true, bool_false_true); for BOOL they are 0 or 1. Unused for corrid.
	False, True float64
}

// ControlDTypes lists the datatypes a control of kind k may have.
func ControlDTypes(k ControlKind) []bridge.DType {
	if k == ControlCorrID {
		return []bridge.DType{bridge.Int32, bridge.Int64, bridge.Uint32, bridge.Uint64}
	}
	return []bridge.DType{bridge.Float32, bridge.Int32, bridge.Bool}
}

// checkControls reports the problems of the controls of s that need no signature.
func (s *SequenceSpec) checkControls(path string, add func(string, ...any)) {
	for i, c := range s.Controls {
		p := fmt.Sprintf("%s.sequence.controls[%d]", path, i)
		if c.Input == "" {
			add("%s.input: must be set", p)
		}
		if c.Kind < ControlStart || c.Kind > ControlCorrID {
			add("%s.kind: must be start, end, ready or corrid", p)
			continue
		}
		if !dtypeIn(c.DType, ControlDTypes(c.Kind)) {
			add("%s.datatype: a %s control is one of %s, got %s", p, c.Kind, dtypeNames(ControlDTypes(c.Kind)), c.DType)
		}
		if c.Kind != ControlCorrID {
			if c.False == c.True {
				add("%s: false_value and true_value are both %v; they must differ", p, c.False)
			}
			if c.DType == bridge.Bool && (c.False != 0 && c.False != 1 || c.True != 0 && c.True != 1) {
				add("%s: a BOOL control's false_value and true_value are 0 or 1, got %v and %v", p, c.False, c.True)
			}
			if c.DType == bridge.Int32 && (!isInt32(c.False) || !isInt32(c.True)) {
				add("%s: an INT32 control's false_value and true_value are 32-bit integers, got %v and %v", p, c.False, c.True)
			}
		}
		for j := range i {
			o := s.Controls[j]
			if o.Input == c.Input && c.Input != "" {
				add("%s.input: %q listed twice (also controls[%d])", p, c.Input, j)
			}
			if o.Kind == c.Kind {
				add("%s.kind: %s listed twice (also controls[%d]); a model has one control of each kind", p, c.Kind, j)
			}
		}
		for _, st := range s.States {
			if st.Input == c.Input {
				add("%s.input: %q is also a state input", p, c.Input)
			}
		}
	}
}

func isInt32(f float64) bool { return f == math.Trunc(f) && f >= math.MinInt32 && f <= math.MaxInt32 }

func dtypeIn(d bridge.DType, ds []bridge.DType) bool {
	for _, x := range ds {
		if x == d {
			return true
		}
	}
	return false
}

func dtypeNames(ds []bridge.DType) string {
	names := make([]string, len(ds))
	for i, d := range ds {
		names[i] = d.String()
	}
	return strings.Join(names, ", ")
}

// controlSlot is one resolved control.
type controlSlot struct {
	Control
	in    int     // index into the model's inputs
	shape []int64 // of the input for one row: [1] or [1, 1] with a batch dimension
}

// resolveControls resolves spec's controls against the model's inputs into s, appending a
// problem for a control input the model lacks or whose datatype or shape does not fit.
func (s *Sequences) resolveControls(spec SequenceSpec, inputs []bridge.IOInfo, problems []string) []string {
	for _, c := range spec.Controls {
		k := bridge.IOIndex(inputs, c.Input)
		if k < 0 {
			problems = append(problems, fmt.Sprintf("control input %q (%s) is not an input of the model (inputs: %s)", c.Input, c.Kind, bridge.IONames(inputs)))
			continue
		}
		ii := inputs[k]
		if ii.DType != c.DType {
			problems = append(problems, fmt.Sprintf("control input %q (%s): the model's datatype is %s, the config says %s", c.Input, c.Kind, ii.DType, c.DType))
			continue
		}
		rank := 1
		if ii.BatchDim == 0 {
			rank = 2
		}
		shape := make([]int64, len(ii.Shape))
		ok := len(ii.Shape) == rank
		for i, d := range ii.Shape {
			shape[i] = 1
			if d != 1 && d >= 0 {
				ok = false
			}
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("control input %q (%s): shape %v; a control holds one element per row: [1], or [batch, 1] for a batching model", c.Input, c.Kind, ii.Shape))
			continue
		}
		if s.isIn[k] {
			problems = append(problems, fmt.Sprintf("control input %q is also a state input", c.Input))
			continue
		}
		s.isIn[k], s.isCtl[k] = true, true
		s.controls = append(s.controls, controlSlot{Control: c, in: k, shape: shape})
	}
	return problems
}

// IsControl reports whether model input i is a sequence control input.
func (s *Sequences) IsControl(i int) bool { return i < len(s.isCtl) && s.isCtl[i] }

// HasControls reports whether the model has sequence control inputs: then every request
// needs a sequence_id.
func (s *Sequences) HasControls() bool { return len(s.controls) > 0 }

// ControlNames lists the control inputs with their kinds, for messages: "START (start), …".
func (s *Sequences) ControlNames() string {
	parts := make([]string, len(s.controls))
	for i, c := range s.controls {
		parts[i] = fmt.Sprintf("%q (%s)", c.Input, c.Kind)
	}
	return strings.Join(parts, ", ")
}

// checkControlID refuses a sequence ID the CORRID control cannot hold: a string ID, or a
// number out of the control's datatype's range.
func (s *Sequences) checkControlID(id SequenceID) error {
	for _, c := range s.controls {
		if c.Kind != ControlCorrID {
			continue
		}
		var max uint64
		switch c.DType {
		case bridge.Int32:
			max = math.MaxInt32
		case bridge.Uint32:
			max = math.MaxUint32
		case bridge.Int64:
			max = math.MaxInt64
		default:
			max = math.MaxUint64
		}
		if id.Str != "" || id.Num > max {
			return &SequenceError{ID: id, Err: ErrSequenceInput, Detail: fmt.Sprintf(
				"sequence %s: the model's CORRID control input %q is %s: sequence_id must be an integer from 1 to %d", id, c.Input, c.DType, max)}
		}
	}
	return nil
}

// setControls writes the control values of one step of sequence q into its buffers and sets
// the control inputs of tensors to them, as a batch of one.
func (s *Sequences) setControls(q *Sequence, step SequenceStep, tensors []bridge.Tensor) {
	for i, c := range s.controls {
		b := q.ctl[i]
		switch c.Kind {
		case ControlCorrID:
			switch c.DType {
			case bridge.Int32, bridge.Uint32:
				binary.LittleEndian.PutUint32(b, uint32(step.ID.Num))
			default:
				binary.LittleEndian.PutUint64(b, step.ID.Num)
			}
		default:
			on := c.Kind == ControlReady || c.Kind == ControlStart && step.Start || c.Kind == ControlEnd && step.End
			v := c.False
			if on {
				v = c.True
			}
			switch c.DType {
			case bridge.Float32:
				binary.LittleEndian.PutUint32(b, math.Float32bits(float32(v)))
			case bridge.Int32:
				binary.LittleEndian.PutUint32(b, uint32(int32(v)))
			case bridge.Bool:
				b[0] = 0
				if v != 0 {
					b[0] = 1
				}
			}
		}
		tensors[c.in] = bridge.Tensor{DType: c.DType, Shape: c.shape, Data: b}
	}
}

// newControlBuffers makes the buffers of the control values of one sequence.
func (s *Sequences) newControlBuffers() [][]byte {
	if len(s.controls) == 0 {
		return nil
	}
	out := make([][]byte, len(s.controls))
	for i, c := range s.controls {
		out[i] = make([]byte, c.DType.Size())
	}
	return out
}

// ControlGivenMessage is the message for a request that sends control input name itself.
func ControlGivenMessage(name string) string {
	return fmt.Sprintf("input %q is a sequence control input: the server fills it from the parameters sequence_id, sequence_start and sequence_end; leave it out", name)
}

// ParseControlDType reads a control's datatype by its KServe name (FP32, INT32, BOOL, INT64,
// UINT32, UINT64).
func ParseControlDType(s string) (bridge.DType, bool) {
	for _, d := range []bridge.DType{bridge.Float32, bridge.Int32, bridge.Bool, bridge.Int64, bridge.Uint32, bridge.Uint64} {
		if d.String() == s {
			return d, true
		}
	}
	return bridge.Undefined, false
}
