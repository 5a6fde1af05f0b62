package engines

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/policyd/policyd/bridge"
)

// Defaults of a SequenceSpec's zero fields.
const (
	DefaultSequenceIdleTimeout = time.Minute
	DefaultMaxSequences        = 1024
)

// StatePair names a state of a recurrent model: Input is fed, at each step of a sequence, from
// Output of the step before (zeros at the sequence's start).
type StatePair struct {
	Input, Output string
}

// SequenceSpec configures the stateful sequences of a model (Triton's sequence extension):
// requests carrying a sequence_id get the state inputs from the server, which keeps the state
// outputs of each sequence between its steps, and the control inputs, which the server fills
// from the step's sequence_id, sequence_start and sequence_end.
type SequenceSpec struct {
	// States are the state pairs; Controls the control inputs. At least one of either.
	States   []StatePair
	Controls []Control
	// IdleTimeout drops a sequence that saw no request for this long (0: DefaultSequenceIdleTimeout).
	IdleTimeout time.Duration
	// MaxSequences bounds the live sequences of a version; a start beyond it is refused with
	// ErrSequenceLimit (0: DefaultMaxSequences).
	MaxSequences int
}

// Equal reports whether s and o keep the same state the same way: the same state pairs in the
// same order, and the same effective idle timeout and limit (a zero field equals its
// default). Nil equals only nil.
func (s *SequenceSpec) Equal(o *SequenceSpec) bool {
	if s == nil || o == nil {
		return s == o
	}
	return slices.Equal(s.States, o.States) && slices.Equal(s.Controls, o.Controls) && s.idle() == o.idle() && s.max() == o.max()
}

func (s *SequenceSpec) idle() time.Duration {
	if s.IdleTimeout > 0 {
		return s.IdleTimeout
	}
	return DefaultSequenceIdleTimeout
}

func (s *SequenceSpec) max() int {
	if s.MaxSequences > 0 {
		return s.MaxSequences
	}
	return DefaultMaxSequences
}

// Check reports to add the problems of s that need no signature, each prefixed with path.
func (s *SequenceSpec) Check(path string, add func(string, ...any)) {
	if s == nil {
		return
	}
	if len(s.States) == 0 && len(s.Controls) == 0 {
		add("%s.sequence.states: empty; a sequence needs at least one state pair or control input", path)
	}
	s.checkControls(path, add)
	for i, p := range s.States {
		if p.Input == "" || p.Output == "" {
			add("%s.sequence.states[%d]: input and output must both be set", path, i)
		}
		for j := range i {
			if s.States[j].Input == p.Input {
				add("%s.sequence.states[%d]: input %q listed twice", path, i, p.Input)
			}
		}
	}
	if s.IdleTimeout < 0 {
		add("%s.sequence.idle_timeout: must not be negative, got %s", path, s.IdleTimeout)
	}
	if s.MaxSequences < 0 {
		add("%s.sequence.max_sequences: must not be negative, got %d", path, s.MaxSequences)
	}
}

// ErrUnknownSequence: a request continues a sequence the server does not know (never started,
// ended, or dropped after its idle timeout). ErrSequenceLimit: a start beyond MaxSequences.
// ErrSequenceInput: a step's inputs do not fit a sequence (a state input given, a batch size
// other than 1).
var (
	ErrUnknownSequence = errors.New("unknown sequence")
	ErrSequenceLimit   = errors.New("too many sequences")
	ErrSequenceInput   = errors.New("bad input for a sequence")
)

// SequenceID identifies a sequence: a non-zero number or a non-empty string (two different
// kinds of ID, as in Triton: 7 and "7" are distinct sequences).
type SequenceID struct {
	Num uint64
	Str string
}

func (id SequenceID) String() string {
	if id.Str != "" {
		return fmt.Sprintf("%q", id.Str)
	}
	return fmt.Sprint(id.Num)
}

// SequenceError names the sequence a request was refused for; it matches ErrUnknownSequence,
// ErrSequenceLimit or ErrSequenceInput.
type SequenceError struct {
	ID     SequenceID
	Err    error
	Limit  int
	Detail string // the message, when set (ErrSequenceInput)
}

func (e *SequenceError) Error() string {
	if e.Detail != "" {
		return e.Detail
	}
	if e.Err == ErrSequenceLimit {
		return fmt.Sprintf("sequence %s: cannot start: %d sequences live, the limit (max_sequences) is %d", e.ID, e.Limit, e.Limit)
	}
	return fmt.Sprintf("sequence %s: unknown sequence (never started, ended, or dropped after the idle timeout); start it with sequence_start", e.ID)
}

func (e *SequenceError) Unwrap() error { return e.Err }

// stateSlot is one resolved state pair.
type stateSlot struct {
	in, out int // indices into the model's inputs and outputs
	dtype   bridge.DType
	shape   []int64 // of the state input for one row
	bytes   int
}

// Sequences keeps the state of the live sequences of one model version. It is safe for
// concurrent use; Close stops its janitor and frees every state.
type Sequences struct {
	slots    []stateSlot
	controls []controlSlot
	isIn     []bool          // per model input: whether the server supplies it (a state or control input)
	isCtl    []bool          // per model input: whether it is a control input
	inputs   []bridge.IOInfo // the model's inputs (names and batch dimensions for checkStep)
	idle     time.Duration
	limit    int
	keepLast atomic.Bool // keep each sequence's last outputs (KeepLast)

	mu     sync.Mutex
	live   map[SequenceID]*Sequence
	closed bool
	stop   chan struct{}
	done   chan struct{}
	now    func() time.Time
}

// Sequence is one live sequence. Between Sequences.Begin and Sequences.Finish the caller
// holds it alone: the steps of a sequence run one at a time, in the order they arrive.
type Sequence struct {
	id    SequenceID
	mu    sync.Mutex // held from Begin to Finish
	state [][]byte   // per slot
	ctl   [][]byte   // per control: the value of the current step

	// A step run through RunOptions.Sequence (DoSequenceStep), set by its holder: the caller's
	// callback, and storeThen bound once when the sequence is made (no closure per step).
	seqs  *Sequences
	fn    func([]bridge.Tensor) error
	store func([]bridge.Tensor) error

	// The outputs of the last step that ran, when the store keeps them (KeepLast); held
	// like state (between Begin and Finish).
	lastOut []bridge.Tensor

	last  time.Time // end of the last step (guarded by Sequences.mu)
	users int       // Begin calls not yet finished (guarded by Sequences.mu)
	dead  bool      // dropped from the map (guarded by Sequences.mu)
}

// NewSequences resolves spec against a model's signature: every pair's input and output must
// exist, share the datatype and hold as many elements per row (the batch dimension aside; a
// state input may have no other dynamic dimension); every control input must exist with the
// control's datatype and one element per row. It starts a janitor that drops idle sequences;
// Close stops it.
func NewSequences(spec SequenceSpec, inputs, outputs []bridge.IOInfo) (*Sequences, error) {
	if len(spec.States) == 0 && len(spec.Controls) == 0 {
		return nil, errors.New("sequence: no state pairs and no control inputs")
	}
	s := &Sequences{
		isIn: make([]bool, len(inputs)), isCtl: make([]bool, len(inputs)), inputs: inputs, idle: spec.idle(), limit: spec.max(),
		live: map[SequenceID]*Sequence{}, stop: make(chan struct{}), done: make(chan struct{}), now: time.Now,
	}
	var problems []string
	for _, p := range spec.States {
		in, out := bridge.IOIndex(inputs, p.Input), bridge.IOIndex(outputs, p.Output)
		if in < 0 {
			problems = append(problems, fmt.Sprintf("state input %q is not an input of the model (inputs: %s)", p.Input, bridge.IONames(inputs)))
		}
		if out < 0 {
			problems = append(problems, fmt.Sprintf("state output %q is not an output of the model (outputs: %s)", p.Output, bridge.IONames(outputs)))
		}
		if in < 0 || out < 0 {
			continue
		}
		ii, oi := inputs[in], outputs[out]
		if ii.DType != oi.DType {
			problems = append(problems, fmt.Sprintf("state %q→%q: datatypes differ (%s, %s)", p.Input, p.Output, ii.DType, oi.DType))
			continue
		}
		shape, dyn := make([]int64, len(ii.Shape)), 0
		for i, d := range ii.Shape {
			shape[i] = d
			if d < 0 {
				shape[i] = 1
				dyn++
			}
		}
		if dyn > 1 {
			problems = append(problems, fmt.Sprintf("state input %q: shape %v has more than one dynamic dimension", p.Input, ii.Shape))
			continue
		}
		outShape := make([]int64, len(oi.Shape))
		for i, d := range oi.Shape {
			outShape[i] = max(d, 1)
		}
		nIn, okIn := bridge.Elements(shape)
		nOut, okOut := bridge.Elements(outShape)
		stateBytes, okBytes := bridge.ByteSize(ii.DType, shape)
		if !okIn || !okOut || ii.DType.Size() > 0 && (!okBytes || stateBytes > math.MaxInt32) {
			problems = append(problems, fmt.Sprintf("state %q→%q: shapes %v and %v are too large to keep", p.Input, p.Output, ii.Shape, oi.Shape))
			continue
		}
		if nIn != nOut {
			problems = append(problems, fmt.Sprintf("state %q→%q: shapes %v and %v differ (batch dimension aside)", p.Input, p.Output, ii.Shape, oi.Shape))
			continue
		}
		if ii.DType.Size() <= 0 {
			problems = append(problems, fmt.Sprintf("state input %q: datatype %s cannot be kept as state", p.Input, ii.DType))
			continue
		}
		s.isIn[in] = true
		s.slots = append(s.slots, stateSlot{in: in, out: out, dtype: ii.DType, shape: shape, bytes: int(stateBytes)})
	}
	problems = s.resolveControls(spec, inputs, problems)
	if len(problems) > 0 {
		return nil, fmt.Errorf("sequence: %s", strings.Join(problems, "; "))
	}
	go s.janitor()
	return s, nil
}

// IsState reports whether model input i is a state input or a control input (IsControl),
// which a request of a sequence does not send: the server supplies it.
func (s *Sequences) IsState(i int) bool { return i < len(s.isIn) && s.isIn[i] }

// Len is the number of live sequences.
func (s *Sequences) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.live)
}

// Begin takes sequence id for one step, waiting for its previous step to finish. start begins
// the sequence (or restarts it) with zero state; without start an unknown sequence is a
// *SequenceError matching ErrUnknownSequence, and a start beyond the limit one matching
// ErrSequenceLimit. The caller must call Finish exactly once for a Sequence returned.
func (s *Sequences) Begin(id SequenceID, start bool) (*Sequence, error) {
	for {
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			return nil, ErrClosed
		}
		q := s.live[id]
		if q != nil && q.users == 0 && s.now().Sub(q.last) >= s.idle {
			s.dropLocked(q) // idle too long: gone, even if the janitor has not run yet
			q = nil
		}
		if q == nil {
			if !start {
				s.mu.Unlock()
				return nil, &SequenceError{ID: id, Err: ErrUnknownSequence}
			}
			if len(s.live) >= s.limit {
				s.mu.Unlock()
				return nil, &SequenceError{ID: id, Err: ErrSequenceLimit, Limit: s.limit}
			}
			q = &Sequence{id: id, state: make([][]byte, len(s.slots)), ctl: s.newControlBuffers(), seqs: s}
			q.store = q.storeThen
			for i, sl := range s.slots {
				q.state[i] = make([]byte, sl.bytes)
			}
			s.live[id] = q
		}
		q.users++
		s.mu.Unlock()

		q.mu.Lock()
		s.mu.Lock()
		dead := q.dead
		if dead {
			q.users--
		}
		s.mu.Unlock()
		if dead { // ended (or the version closed) while we waited
			q.mu.Unlock()
			if !start {
				return nil, &SequenceError{ID: id, Err: ErrUnknownSequence}
			}
			continue
		}
		if start {
			for _, b := range q.state {
				clear(b)
			}
			q.lastOut = nil // a restarted sequence has no last action yet
		}
		return q, nil
	}
}

// Inputs sets the state inputs of tensors (one per model input) to the sequence's state, as
// a batch of one. The tensors refer to the sequence's memory, valid until Finish.
func (s *Sequences) Inputs(q *Sequence, tensors []bridge.Tensor) {
	for i, sl := range s.slots {
		tensors[sl.in] = bridge.Tensor{DType: sl.dtype, Shape: sl.shape, Data: q.state[i]}
	}
}

// Store copies the state outputs of a step (one tensor per model output) into the sequence;
// call it from the Do callback while the outputs are valid.
func (s *Sequences) Store(q *Sequence, outputs []bridge.Tensor) error {
	for _, sl := range s.slots {
		o := outputs[sl.out]
		if len(o.Data) != sl.bytes || o.DType != sl.dtype {
			return fmt.Errorf("sequence %s: state output %d holds %d bytes of %s, want %d of %s",
				q.id, sl.out, len(o.Data), o.DType, sl.bytes, sl.dtype)
		}
	}
	for i, sl := range s.slots {
		copy(q.state[i], outputs[sl.out].Data)
	}
	return nil
}

// SequenceStep makes a run one step of a stateful sequence (RunOptions.Sequence): the
// request parameters sequence_id, sequence_start and sequence_end of Triton's sequence
// extension, and the store of the version that keeps the sequences.
type SequenceStep struct {
	// Store is the version's sequence store (ModelVersion.Sequences). Nil: the run is no step of
	// a sequence, and ID, Start and End are ignored.
	Store *Sequences
	// ID names the sequence; Start begins (or restarts) it with zero state, End drops it after
	// this step. See Sequences.Begin and Finish.
	ID         SequenceID
	Start, End bool
}

// Doer runs one request: the Do of a Runner (Pool, Batcher) or of a ModelVersion.
type Doer interface {
	Do(ctx context.Context, inputs []bridge.Tensor, opts RunOptions, fn func(outputs []bridge.Tensor) error) error
}

// DoSequenceStep runs a request on r, as one step of the sequence opts.Sequence names when
// it has a Store (else it is r.Do). The step's inputs must leave the state inputs empty
// (bridge.Tensor{}) and have batch size 1, else it fails with a *SequenceError matching
// ErrSequenceInput; it then waits for the sequence's previous step (Sequences.Begin), sets
// the state inputs to the sequence's state, runs on r without the step (fn sees the outputs
// after the state outputs are stored), clears the state inputs again and finishes the step,
// dropping the sequence on End. Pool.Do and Batcher.Do call it for a run with a step, so
// every caller of a Runner gets sequences through RunOptions alone. It allocates nothing
// for a live sequence.
func DoSequenceStep(ctx context.Context, r Doer, inputs []bridge.Tensor, opts RunOptions, fn func(outputs []bridge.Tensor) error) error {
	step := opts.Sequence
	s := step.Store
	opts.Sequence = SequenceStep{}
	if s == nil {
		return r.Do(ctx, inputs, opts, fn)
	}
	if err := s.checkStep(step.ID, inputs); err != nil {
		return err
	}
	q, err := s.Begin(step.ID, step.Start) // waits for the sequence's previous step
	if err != nil {
		return err
	}
	s.Inputs(q, inputs)
	s.setControls(q, step, inputs)
	q.fn = fn
	err = r.Do(ctx, inputs, opts, q.store)
	q.fn = nil
	if err != nil && s.keepLast.Load() {
		q.attachLast(err) // the step did not run: the state stays the last step's
	}
	for _, sl := range s.slots {
		inputs[sl.in] = bridge.Tensor{} // views of the state, which is the sequence's again
	}
	for _, c := range s.controls {
		inputs[c.in] = bridge.Tensor{}
	}
	s.Finish(q, step.End)
	return err
}

// checkStep refuses the inputs of a step of sequence id that send a state or control input
// or whose batch is not 1 (a sequence's state is one row), and an ID the CORRID control
// cannot hold.
func (s *Sequences) checkStep(id SequenceID, inputs []bridge.Tensor) error {
	if err := s.checkControlID(id); err != nil {
		return err
	}
	if len(inputs) != len(s.inputs) {
		return &SequenceError{ID: id, Err: ErrSequenceInput, Detail: fmt.Sprintf(
			"sequence %s: %d inputs, the model has %d", id, len(inputs), len(s.inputs))}
	}
	for k := range inputs {
		t := &inputs[k]
		if s.isIn[k] {
			if t.Data != nil || t.Shape != nil {
				if s.isCtl[k] {
					return &SequenceError{ID: id, Err: ErrSequenceInput, Detail: ControlGivenMessage(s.inputs[k].Name)}
				}
				return &SequenceError{ID: id, Err: ErrSequenceInput, Detail: fmt.Sprintf(
					"input %q is a state of sequence %s: the server supplies it; leave it out", s.inputs[k].Name, id)}
			}
			continue
		}
		if s.inputs[k].BatchDim == 0 && len(t.Shape) > 0 && t.Shape[0] != 1 {
			return &SequenceError{ID: id, Err: ErrSequenceInput, Detail: fmt.Sprintf(
				"input %q: batch size %d: a request of sequence %s must have batch size 1", s.inputs[k].Name, t.Shape[0], id)}
		}
	}
	return nil
}

// storeThen is the callback of a step run by DoSequenceStep: it stores the state outputs
// (and the last outputs, with KeepLast), then calls the caller's callback.
func (q *Sequence) storeThen(outputs []bridge.Tensor) error {
	if err := q.seqs.Store(q, outputs); err != nil {
		return err
	}
	if q.seqs.keepLast.Load() {
		q.keepLast(outputs)
	}
	return q.fn(outputs)
}

// KeepLast makes every sequence keep the outputs of its last step that ran (a copy, bounded
// like the sequence: dropped with it), for the deadline fallback "last action": a step of a
// sequence that is not run for its deadline then gets them in DeadlineError.Last.
func (s *Sequences) KeepLast(on bool) { s.keepLast.Store(on) }

// keepLast copies outputs into q.lastOut, reusing its buffers.
func (q *Sequence) keepLast(outputs []bridge.Tensor) {
	if len(q.lastOut) != len(outputs) {
		q.lastOut = make([]bridge.Tensor, len(outputs))
	}
	for k := range outputs {
		o, l := &outputs[k], &q.lastOut[k]
		l.DType = o.DType
		l.Shape = append(l.Shape[:0], o.Shape...)
		l.Data = append(l.Data[:0], o.Data...)
	}
}

// attachLast gives a *DeadlineError err a copy of q's last outputs.
func (q *Sequence) attachLast(err error) {
	var de *DeadlineError
	if errors.As(err, &de) {
		de.Last = q.lastCopy()
	}
}

// lastCopy returns a copy of q's last outputs; nil when none ran since it started.
func (q *Sequence) lastCopy() []bridge.Tensor {
	if q.lastOut == nil {
		return nil
	}
	out := make([]bridge.Tensor, len(q.lastOut))
	for k, l := range q.lastOut {
		out[k] = bridge.Tensor{DType: l.DType, Shape: slices.Clone(l.Shape), Data: slices.Clone(l.Data)}
	}
	return out
}

// Finish ends a step begun by Begin; end drops the sequence.
func (s *Sequences) Finish(q *Sequence, end bool) {
	s.mu.Lock()
	q.users--
	q.last = s.now()
	if end && !q.dead {
		s.dropLocked(q)
	}
	s.mu.Unlock()
	q.mu.Unlock()
}

func (s *Sequences) dropLocked(q *Sequence) {
	q.dead = true
	if s.live[q.id] == q {
		delete(s.live, q.id)
	}
}

// janitor drops idle sequences every half idle timeout.
func (s *Sequences) janitor() {
	defer close(s.done)
	t := time.NewTicker(max(s.idle/2, time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.mu.Lock()
			now := s.now()
			for _, q := range s.live {
				if q.users == 0 && now.Sub(q.last) >= s.idle {
					s.dropLocked(q)
				}
			}
			s.mu.Unlock()
		}
	}
}

// Close stops the janitor and drops every sequence; a later Begin returns ErrClosed. It is
// idempotent.
func (s *Sequences) Close() {
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	for _, q := range s.live {
		q.dead = true
	}
	s.live = nil
	s.mu.Unlock()
	close(s.stop)
	<-s.done
}
