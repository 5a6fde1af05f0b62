package policyd

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sync"
)

// Policy is one model served by policyd, seen as a policy: observations in, actions out.
// It reads the model's metadata once (on the first Act) to name a lone input and to add
// or remove the batch dimension. Safe for concurrent use.
type Policy struct {
	c       *Client
	model   string
	version string
	output  string

	mu     sync.Mutex
	meta   *ModelMetadata
	states map[string]bool // state inputs and outputs of a sequence model, once an Episode asked
}

// PolicyOption configures a Policy.
type PolicyOption func(*Policy)

// PolicyVersion pins the model version (default: the model's default version).
func PolicyVersion(v string) PolicyOption { return func(p *Policy) { p.version = v } }

// PolicyOutput names the output Act returns (needed when the model has several outputs).
func PolicyOutput(name string) PolicyOption { return func(p *Policy) { p.output = name } }

// NewPolicy returns the policy served as model by c. It does not contact the server.
func NewPolicy(c *Client, model string, opts ...PolicyOption) *Policy {
	p := &Policy{c: c, model: model}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Metadata returns the model's metadata, fetched once.
func (p *Policy) Metadata(ctx context.Context) (*ModelMetadata, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.meta != nil {
		return p.meta, nil
	}
	m, err := p.c.Metadata(ctx, p.model, p.version)
	if err != nil {
		return nil, err
	}
	p.meta = m
	return m, nil
}

// Act runs the policy on obs: one observation (its shape without the batch dimension) or
// a batch (the model's full shape), for a model with one input (obs's Name may be empty).
// It returns the model's output (the one named by PolicyOutput when it has several), without
// the batch dimension when obs was one observation.
func (p *Policy) Act(ctx context.Context, obs Tensor, opts ...ActOption) (Tensor, error) {
	return p.act(ctx, nil, obs, opts, false)
}

// ActAll runs the policy on several named inputs (one observation each, or a batch each)
// and returns every output (or those of WithOutputs) by name, without the batch dimension
// when the inputs were one observation.
func (p *Policy) ActAll(ctx context.Context, obs []Tensor, opts ...ActOption) (map[string]Tensor, error) {
	return p.actAll(ctx, obs, opts, false)
}

func (p *Policy) actAll(ctx context.Context, obs []Tensor, opts []ActOption, seq bool) (map[string]Tensor, error) {
	res, single, err := p.run(ctx, obs, opts, seq)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Tensor, len(res.Outputs))
	for _, o := range res.Outputs {
		out[o.Name] = p.unbatch(o, single)
	}
	return out, nil
}

func (p *Policy) act(ctx context.Context, extra []ActOption, obs Tensor, opts []ActOption, seq bool) (Tensor, error) {
	m, err := p.view(ctx, seq)
	if err != nil {
		return Tensor{}, err
	}
	if len(m.Inputs) != 1 {
		return Tensor{}, fmt.Errorf("policyd: policy %s has %d inputs: use ActAll with one tensor per input", p.model, len(m.Inputs))
	}
	out := p.output
	if out == "" {
		if len(m.Outputs) != 1 {
			return Tensor{}, fmt.Errorf("policyd: policy %s has %d outputs: name the action with PolicyOutput, or use ActAll", p.model, len(m.Outputs))
		}
		out = m.Outputs[0].Name
	}
	opts = append(append([]ActOption{WithOutputs(out)}, extra...), opts...)
	res, single, err := p.run(ctx, []Tensor{obs}, opts, seq)
	if err != nil {
		return Tensor{}, err
	}
	o, ok := res.Output(out)
	if !ok {
		return Tensor{}, &ServerError{Status: 200, Message: fmt.Sprintf("the answer lacks output %q", out)}
	}
	return p.unbatch(o, single), nil
}

// run names and batches the inputs and calls Infer; single says the inputs were one
// observation each.
func (p *Policy) run(ctx context.Context, obs []Tensor, opts []ActOption, seq bool) (*InferResult, bool, error) {
	m, err := p.view(ctx, seq)
	if err != nil {
		return nil, false, err
	}
	ins := make([]Tensor, len(obs))
	single := false
	for i, t := range obs {
		var meta *TensorMetadata
		switch {
		case t.Name == "" && len(m.Inputs) == 1 && len(obs) == 1:
			meta = &m.Inputs[0]
			t.Name = meta.Name
		default:
			for j := range m.Inputs {
				if m.Inputs[j].Name == t.Name {
					meta = &m.Inputs[j]
				}
			}
		}
		if meta == nil {
			return nil, false, fmt.Errorf("policyd: policy %s has no input %q (inputs: %v)", p.model, t.Name, inputNames(m))
		}
		switch {
		case len(t.Shape) == len(meta.Shape)-1 && len(meta.Shape) > 0 && (meta.Shape[0] == -1 || meta.Shape[0] == 1):
			t.Shape = append([]int64{1}, t.Shape...)
			if i > 0 && !single {
				return nil, false, fmt.Errorf("policyd: policy %s: input %q is one observation but an earlier input is a batch", p.model, t.Name)
			}
			single = true
		case len(t.Shape) == len(meta.Shape):
			if single {
				return nil, false, fmt.Errorf("policyd: policy %s: input %q is a batch but an earlier input is one observation", p.model, t.Name)
			}
		default:
			return nil, false, fmt.Errorf("policyd: policy %s: input %q has shape %v; the model takes %v (one observation: without the first dimension)", p.model, t.Name, t.Shape, meta.Shape)
		}
		ins[i] = t
	}
	if p.version != "" {
		opts = append([]ActOption{WithVersion(p.version)}, opts...)
	}
	res, err := p.c.Infer(ctx, p.model, ins, opts...)
	return res, single, err
}

// unbatch drops dimension 0 of an output that has the batch dimension (its metadata shape
// starts with -1 and it came back with 1 row), for a single observation.
func (p *Policy) unbatch(o Tensor, single bool) Tensor {
	if !single || len(o.Shape) == 0 || o.Shape[0] != 1 {
		return o
	}
	p.mu.Lock()
	m := p.meta
	p.mu.Unlock()
	for _, om := range m.Outputs {
		if om.Name == o.Name && len(om.Shape) == len(o.Shape) && len(om.Shape) > 0 && om.Shape[0] == -1 {
			o.Shape = o.Shape[1:]
		}
	}
	return o
}

// view is the model's metadata as the caller sees it: in a sequence (seq), without the
// state inputs and outputs the server carries.
func (p *Policy) view(ctx context.Context, seq bool) (*ModelMetadata, error) {
	m, err := p.Metadata(ctx)
	if err != nil || !seq {
		return m, err
	}
	p.mu.Lock()
	states := p.states
	p.mu.Unlock()
	v := *m
	v.Inputs, v.Outputs = nil, nil
	for _, t := range m.Inputs {
		if !states[t.Name] {
			v.Inputs = append(v.Inputs, t)
		}
	}
	for _, t := range m.Outputs {
		if !states[t.Name] {
			v.Outputs = append(v.Outputs, t)
		}
	}
	return &v, nil
}

// loadStates reads the state pairs and control inputs of the model's sequence_batching
// configuration, once: the server fills them, the caller leaves them out.
func (p *Policy) loadStates(ctx context.Context) error {
	p.mu.Lock()
	done := p.states != nil
	p.mu.Unlock()
	if done {
		return nil
	}
	cfg, err := p.c.Config(ctx, p.model, p.version)
	if err != nil {
		return err
	}
	states := map[string]bool{}
	if sb, ok := cfg["sequence_batching"].(map[string]any); ok {
		// State pairs, and the control inputs the server fills (START, END, READY, CORRID).
		for _, field := range []string{"state", "control_input"} {
			list, _ := sb[field].([]any)
			for _, s := range list {
				if m, ok := s.(map[string]any); ok {
					for _, k := range []string{"input_name", "output_name", "name"} {
						if name, ok := m[k].(string); ok && name != "" {
							states[name] = true
						}
					}
				}
			}
		}
	}
	p.mu.Lock()
	p.states = states
	p.mu.Unlock()
	return nil
}

func inputNames(m *ModelMetadata) []string {
	var s []string
	for _, in := range m.Inputs {
		s = append(s, in.Name)
	}
	return s
}

// Episode is one server-side sequence of a recurrent policy (docs/api.md, "Stateful
// sequences"): the server carries the state between steps, the caller sends observations
// only. The first Act starts the sequence; Close ends it. An Episode is for one goroutine
// at a time (its steps are ordered); Close is safe to defer and to call twice.
type Episode struct {
	p       *Policy
	id      string
	mu      sync.Mutex
	started bool
	ended   bool
	last    []Tensor // the last step's inputs, for the closing step
	opts    []ActOption
}

// EpisodeOption configures an Episode.
type EpisodeOption func(*Episode)

// EpisodeID sets the sequence ID (default: 16 random bytes in hex).
func EpisodeID(id string) EpisodeOption { return func(e *Episode) { e.id = id } }

// Episode opens an episode on the policy. It reads the model's configuration once (its
// sequence_batching states, which the server carries and the caller leaves out); nothing
// else is sent before the first Act.
func (p *Policy) Episode(ctx context.Context, opts ...EpisodeOption) (*Episode, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := p.loadStates(ctx); err != nil {
		return nil, err
	}
	e := &Episode{p: p}
	for _, o := range opts {
		o(e)
	}
	if e.id == "" {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		e.id = hex.EncodeToString(b[:])
	}
	return e, nil
}

// ID is the episode's sequence ID.
func (e *Episode) ID() string { return e.id }

// Act is one step of the episode (one observation; see Policy.Act). The first step starts
// the sequence. A step is retried only when the server answered 503 with Retry-After (it
// did not run, so the state did not move).
func (e *Episode) Act(ctx context.Context, obs Tensor, opts ...ActOption) (Tensor, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return Tensor{}, fmt.Errorf("policyd: episode %s is closed", e.id)
	}
	out, err := e.p.act(ctx, []ActOption{WithSequence(e.id, !e.started, false)}, obs, opts, true)
	if err == nil {
		e.started = true
		e.last = []Tensor{obs}
		e.opts = opts
	}
	return out, err
}

// ActAll is one step with several named inputs (see Policy.ActAll).
func (e *Episode) ActAll(ctx context.Context, obs []Tensor, opts ...ActOption) (map[string]Tensor, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return nil, fmt.Errorf("policyd: episode %s is closed", e.id)
	}
	out, err := e.p.actAll(ctx, obs, append([]ActOption{WithSequence(e.id, !e.started, false)}, opts...), true)
	if err == nil {
		e.started = true
		e.last = obs
		e.opts = opts
	}
	return out, err
}

// Close ends the sequence on the server so its state is dropped now rather than after the
// idle timeout. The protocol ends a sequence only with a step, so Close re-sends the last
// observation with sequence_end and discards the answer (one extra model run; nothing is
// sent when no step succeeded). Safe to call twice and to defer.
func (e *Episode) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.ended {
		return nil
	}
	e.ended = true
	if !e.started {
		return nil
	}
	opts := append(append([]ActOption{}, e.opts...), WithSequence(e.id, false, true))
	_, _, err := e.p.run(context.Background(), e.last, opts, true)
	return err
}
