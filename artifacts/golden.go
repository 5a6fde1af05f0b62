package artifacts

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
)

// GoldenFile is the file of a version folder that holds its golden cases (docs/artifacts.md,
// Golden cases): listed in the manifest, so hashed and signed like model.onnx.
const GoldenFile = "golden.json"

// GoldenSchema is the schema of golden.json this package reads and writes.
const GoldenSchema = 1

// Default tolerances of a floating output: an element passes when
// |got - expected| <= atol + rtol * |expected| (numpy.allclose's rule).
const (
	DefaultGoldenAtol = 1e-4
	DefaultGoldenRtol = 1e-3
)

// maxGoldenElements bounds the elements of one golden tensor (a golden file is a handful of
// observations, not a data set).
const maxGoldenElements = 1 << 24

// Golden is golden.json: named cases of input tensors and the outputs expected for them, with
// the tolerances and the discrete outputs. Read strictly (unknown fields are an error).
type Golden struct {
	Schema int `json:"schema"`
	// Generator says what made the expected outputs ("onnxruntime-node 1.30.0"); free text.
	Generator string `json:"generator,omitempty"`
	// Tolerance is the default of every floating output (DefaultGoldenAtol/Rtol when unset).
	Tolerance *Tolerance `json:"tolerance,omitempty"`
	// Outputs tune the check of single outputs, by name.
	Outputs map[string]GoldenOutput `json:"outputs,omitempty"`
	Cases   []GoldenCase            `json:"cases"`
}

// Tolerance bounds the error of a floating output; a nil field takes the default.
type Tolerance struct {
	Atol *float64 `json:"atol,omitempty"`
	Rtol *float64 `json:"rtol,omitempty"`
}

// GoldenOutput tunes how one output is checked.
type GoldenOutput struct {
	Tolerance // atol and rtol of this output, over the file's
	// Argmax: the output is a floating score over its last axis from which an action is
	// picked; besides the tolerance, each row's argmax must equal the expected one, so a flipped
	// choice is caught even when the values are within the tolerance.
	Argmax bool `json:"argmax,omitempty"`
	// Discrete: compare exactly, every element an action (integer and BOOL outputs always are).
	Discrete bool `json:"discrete,omitempty"`
}

// GoldenCase is one named observation: every input of the model, and the expected value of
// the outputs to check (an output left out, e.g. a sampled one, is not checked).
type GoldenCase struct {
	Name    string         `json:"name"`
	Inputs  []GoldenTensor `json:"inputs"`
	Outputs []GoldenTensor `json:"outputs"`
}

// GoldenTensor is a tensor as KServe v2 JSON writes it: datatype, shape, flat row-major data.
type GoldenTensor struct {
	Name     string       `json:"name"`
	Datatype string       `json:"datatype"`
	Shape    []int64      `json:"shape"`
	Data     GoldenValues `json:"data"`
}

// GoldenValues are the elements of a tensor. JSON numbers (true and false read as 1 and 0 for
// BOOL); integers are exact up to 2^53.
type GoldenValues []float64

// UnmarshalJSON reads a flat array of numbers or booleans.
func (g *GoldenValues) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("data: want a flat array of numbers")
	}
	out := make([]float64, len(raw))
	for i, r := range raw {
		switch s := string(bytes.TrimSpace(r)); s {
		case "true":
			out[i] = 1
		case "false":
			out[i] = 0
		default:
			if err := json.Unmarshal(r, &out[i]); err != nil {
				return fmt.Errorf("data[%d]: %s is not a number", i, s)
			}
		}
	}
	*g = out
	return nil
}

// goldenDatatypes are the datatypes golden tensors may have, with their element size.
var goldenDatatypes = map[string]int{
	"FP32": 4, "FP64": 8, "FP16": 2, "BF16": 2, "INT8": 1, "INT16": 2, "INT32": 4, "INT64": 8,
	"UINT8": 1, "UINT16": 2, "UINT32": 4, "UINT64": 8, "BOOL": 1,
}

// IsFloatDatatype reports whether datatype is a floating type (FP16, BF16, FP32, FP64).
func IsFloatDatatype(datatype string) bool {
	switch datatype {
	case "FP16", "BF16", "FP32", "FP64":
		return true
	}
	return false
}

// ParseGolden parses golden.json bytes and checks them on their own: schema, case names,
// datatypes, shapes against the number of elements, integer values of integer tensors,
// tolerances. CheckIO checks them against a model's signature.
func ParseGolden(b []byte) (*Golden, error) {
	var g Golden
	if err := decodeStrict(b, &g); err != nil {
		return nil, fmt.Errorf("golden file: %v", err)
	}
	if err := g.check(); err != nil {
		return nil, fmt.Errorf("golden file: %v", err)
	}
	return &g, nil
}

// Encode returns golden.json bytes of g (2-space indent, trailing newline).
func (g *Golden) Encode() ([]byte, error) {
	b, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// check refuses a negative, NaN or infinite atol or rtol, naming what holds it.
func (tol Tolerance) check(what string) error {
	for _, t := range []struct {
		name string
		v    *float64
	}{{"atol", tol.Atol}, {"rtol", tol.Rtol}} {
		if t.v != nil && (math.IsNaN(*t.v) || math.IsInf(*t.v, 0) || *t.v < 0) {
			return fmt.Errorf("%s: %s %v must be a finite number >= 0", what, t.name, *t.v)
		}
	}
	return nil
}

func (g *Golden) check() error {
	if g.Schema != GoldenSchema {
		return fmt.Errorf("schema %d is not supported (want %d)", g.Schema, GoldenSchema)
	}
	if len(g.Cases) == 0 {
		return fmt.Errorf("no cases")
	}
	if g.Tolerance != nil {
		if err := g.Tolerance.check("tolerance"); err != nil {
			return err
		}
	}
	for name, o := range g.Outputs {
		if err := o.Tolerance.check(fmt.Sprintf("outputs[%q]", name)); err != nil {
			return err
		}
		if o.Argmax && o.Discrete {
			return fmt.Errorf("outputs[%q]: argmax and discrete exclude each other", name)
		}
	}
	seen := map[string]bool{}
	for i, c := range g.Cases {
		if c.Name == "" {
			return fmt.Errorf("case %d has no name", i)
		}
		if seen[c.Name] {
			return fmt.Errorf("case %q appears twice", c.Name)
		}
		seen[c.Name] = true
		if len(c.Inputs) == 0 {
			return fmt.Errorf("case %q has no inputs", c.Name)
		}
		if len(c.Outputs) == 0 {
			return fmt.Errorf("case %q has no expected outputs", c.Name)
		}
		for _, group := range []struct {
			kind string
			ts   []GoldenTensor
		}{{"input", c.Inputs}, {"output", c.Outputs}} {
			names := map[string]bool{}
			for _, t := range group.ts {
				if names[t.Name] {
					return fmt.Errorf("case %q: %s %q appears twice", c.Name, group.kind, t.Name)
				}
				names[t.Name] = true
				if err := t.check(); err != nil {
					return fmt.Errorf("case %q: %s %v", c.Name, group.kind, err)
				}
			}
		}
	}
	return nil
}

func (t *GoldenTensor) check() error {
	if t.Name == "" {
		return fmt.Errorf("without a name")
	}
	if _, ok := goldenDatatypes[t.Datatype]; !ok {
		return fmt.Errorf("%q: datatype %q is not one of FP32, FP64, FP16, BF16, INT8..INT64, UINT8..UINT64, BOOL", t.Name, t.Datatype)
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("%q: shape %v has a negative dimension", t.Name, t.Shape)
		}
		if d > 0 && n > maxGoldenElements/d {
			return fmt.Errorf("%q: shape %v has more than %d elements", t.Name, t.Shape, maxGoldenElements)
		}
		n *= d
	}
	if int64(len(t.Data)) != n {
		return fmt.Errorf("%q: shape %v holds %d elements, data has %d", t.Name, t.Shape, n, len(t.Data))
	}
	float := IsFloatDatatype(t.Datatype)
	for i, x := range t.Data {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("%q: data[%d] is not finite", t.Name, i)
		}
		if !float && x != math.Trunc(x) {
			return fmt.Errorf("%q: data[%d] = %v is not an integer (datatype %s)", t.Name, i, x, t.Datatype)
		}
	}
	return nil
}

// CheckIO checks the golden cases against a model's signature: every case gives each input
// of the model once, by name, with its datatype, rank and fixed dimensions, and names only
// outputs the model has, with their datatype; options name only outputs the model has.
func (g *Golden) CheckIO(io IO) error {
	byName := func(ts []Tensor, name string) *Tensor {
		for i := range ts {
			if ts[i].Name == name {
				return &ts[i]
			}
		}
		return nil
	}
	for name := range g.Outputs {
		if byName(io.Outputs, name) == nil {
			return fmt.Errorf("golden file: outputs[%q]: the model has no such output (it has %s)", name, tensorNames(io.Outputs))
		}
	}
	for _, c := range g.Cases {
		for _, t := range c.Inputs {
			if byName(io.Inputs, t.Name) == nil {
				return fmt.Errorf("golden case %q: the model has no input %q (it has %s)", c.Name, t.Name, tensorNames(io.Inputs))
			}
		}
		for _, in := range io.Inputs {
			i := slices.IndexFunc(c.Inputs, func(t GoldenTensor) bool { return t.Name == in.Name })
			if i < 0 {
				return fmt.Errorf("golden case %q: input %q of the model is missing", c.Name, in.Name)
			}
			if err := matchSignature(c.Inputs[i], in); err != nil {
				return fmt.Errorf("golden case %q: input %v", c.Name, err)
			}
		}
		for _, t := range c.Outputs {
			out := byName(io.Outputs, t.Name)
			if out == nil {
				return fmt.Errorf("golden case %q: the model has no output %q (it has %s)", c.Name, t.Name, tensorNames(io.Outputs))
			}
			if t.Datatype != out.Datatype {
				return fmt.Errorf("golden case %q: output %q: datatype %s, the model's is %s", c.Name, t.Name, t.Datatype, out.Datatype)
			}
		}
	}
	return nil
}

func matchSignature(t GoldenTensor, s Tensor) error {
	if t.Datatype != s.Datatype {
		return fmt.Errorf("%q: datatype %s, the model takes %s", t.Name, t.Datatype, s.Datatype)
	}
	if len(s.Shape) > 0 && len(t.Shape) != len(s.Shape) {
		return fmt.Errorf("%q: shape %v, the model takes rank %d (%v)", t.Name, t.Shape, len(s.Shape), s.Shape)
	}
	for d, want := range s.Shape {
		if want >= 0 && t.Shape[d] != want {
			return fmt.Errorf("%q: shape %v, the model takes %v", t.Name, t.Shape, s.Shape)
		}
	}
	return nil
}

func tensorNames(ts []Tensor) string {
	names := make([]string, len(ts))
	for i, t := range ts {
		names[i] = fmt.Sprintf("%q", t.Name)
	}
	return strings.Join(names, ", ")
}

// tolerance returns the atol and rtol of output name.
func (g *Golden) tolerance(name string) (atol, rtol float64) {
	atol, rtol = DefaultGoldenAtol, DefaultGoldenRtol
	if g.Tolerance != nil {
		g.Tolerance.over(&atol, &rtol)
	}
	if o, ok := g.Outputs[name]; ok {
		o.Tolerance.over(&atol, &rtol)
	}
	return atol, rtol
}

// over sets atol and rtol to those tol sets.
func (tol Tolerance) over(atol, rtol *float64) {
	if tol.Atol != nil {
		*atol = *tol.Atol
	}
	if tol.Rtol != nil {
		*rtol = *tol.Rtol
	}
}

// Bytes encodes the tensor's data as little-endian elements of its datatype (what an engine
// takes).
func (t *GoldenTensor) Bytes() ([]byte, error) {
	size, ok := goldenDatatypes[t.Datatype]
	if !ok {
		return nil, fmt.Errorf("%q: datatype %q unsupported", t.Name, t.Datatype)
	}
	b := make([]byte, size*len(t.Data))
	le := binary.LittleEndian
	for i, x := range t.Data {
		p := b[i*size:]
		switch t.Datatype {
		case "FP32":
			le.PutUint32(p, math.Float32bits(float32(x)))
		case "FP64":
			le.PutUint64(p, math.Float64bits(x))
		case "FP16":
			le.PutUint16(p, float32ToHalf(float32(x)))
		case "BF16":
			le.PutUint16(p, uint16(math.Float32bits(float32(x))>>16)) // truncating, as ONNX's cast of an exact value
		case "INT8", "UINT8":
			p[0] = byte(int64(x))
		case "BOOL":
			if x != 0 {
				p[0] = 1
			}
		case "INT16", "UINT16":
			le.PutUint16(p, uint16(int64(x)))
		case "INT32", "UINT32":
			le.PutUint32(p, uint32(int64(x)))
		case "INT64":
			le.PutUint64(p, uint64(int64(x)))
		case "UINT64":
			le.PutUint64(p, uint64(x))
		}
	}
	return b, nil
}

// DecodeValues reads little-endian elements of datatype from b as float64.
func DecodeValues(datatype string, b []byte) ([]float64, error) {
	size, ok := goldenDatatypes[datatype]
	if !ok {
		return nil, fmt.Errorf("datatype %q unsupported", datatype)
	}
	if len(b)%size != 0 {
		return nil, fmt.Errorf("%d bytes are not whole %s elements", len(b), datatype)
	}
	out := make([]float64, len(b)/size)
	le := binary.LittleEndian
	for i := range out {
		p := b[i*size:]
		switch datatype {
		case "FP32":
			out[i] = float64(math.Float32frombits(le.Uint32(p)))
		case "FP64":
			out[i] = math.Float64frombits(le.Uint64(p))
		case "FP16":
			out[i] = float64(halfToFloat32(le.Uint16(p)))
		case "BF16":
			out[i] = float64(math.Float32frombits(uint32(le.Uint16(p)) << 16))
		case "INT8":
			out[i] = float64(int8(p[0]))
		case "UINT8", "BOOL":
			out[i] = float64(p[0])
		case "INT16":
			out[i] = float64(int16(le.Uint16(p)))
		case "UINT16":
			out[i] = float64(le.Uint16(p))
		case "INT32":
			out[i] = float64(int32(le.Uint32(p)))
		case "UINT32":
			out[i] = float64(le.Uint32(p))
		case "INT64":
			out[i] = float64(int64(le.Uint64(p)))
		case "UINT64":
			out[i] = float64(le.Uint64(p))
		}
	}
	return out, nil
}

func halfToFloat32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		return float32(math.Copysign(float64(frac)*math.Pow(2, -24), float64(int32(sign)>>31|1)))
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | frac<<13)
}

func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	x := math.Abs(float64(f))
	switch {
	case math.IsNaN(float64(f)):
		return sign | 0x7e00
	case x >= 65520:
		return sign | 0x7c00
	case x < math.Pow(2, -25):
		return sign
	case x < math.Pow(2, -14): // subnormal
		return sign | uint16(math.RoundToEven(x*math.Pow(2, 24)))
	}
	exp := int(b>>23&0xff) - 127
	mant := float64(b&0x7fffff) / (1 << 23)
	m := math.RoundToEven(mant * 1024)
	if m == 1024 {
		m, exp = 0, exp+1
	}
	return sign | uint16(exp+15)<<10 | uint16(m)
}

// OutputCheck is the check of one output of one golden case.
type OutputCheck struct {
	Case   string  `json:"case"`
	Output string  `json:"output"`
	MaxAbs float64 `json:"max_abs_error"`
	MaxRel float64 `json:"max_rel_error"` // over the elements whose expected value is not 0
	Atol   float64 `json:"atol"`
	Rtol   float64 `json:"rtol"`
	// Index is the flat index of the worst element (the one furthest past its tolerance, or
	// with the largest error when all pass); -1 for none.
	Index    int     `json:"index"`
	Expected float64 `json:"expected"`
	Got      float64 `json:"got"`
	Discrete bool    `json:"discrete,omitempty"` // compared exactly
	// Flipped is the first discrete action that differs: the flat index of an element of a
	// discrete output, or the row of an argmax output; -1 when none.
	Flipped     int  `json:"flipped"`
	FlippedFrom int  `json:"flipped_from,omitempty"` // the expected action (argmax class or value)
	FlippedTo   int  `json:"flipped_to,omitempty"`   // the action computed
	Pass        bool `json:"pass"`
	// Problem is set when the output could not be compared (missing, wrong shape or datatype).
	Problem string `json:"problem,omitempty"`
}

// String says the check in one line with its numbers:
//
//	case "upright" output "action": max abs error 0.31 beyond tolerance (atol 0.0001, rtol 0.001) at index 1 (expected 0.12, got 0.43); max rel error 2.6
//	case "upright" output "action": max abs error 1.2e-07, max rel error 7e-07, within tolerance (atol 0.0001, rtol 0.001)
//	case "upright" output "discrete_actions": discrete action flipped at index 0 (expected 2, got 1)
func (c OutputCheck) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "case %q output %q: ", c.Case, c.Output)
	switch {
	case c.Problem != "":
		b.WriteString(c.Problem)
	case c.Discrete && c.Flipped >= 0:
		fmt.Fprintf(&b, "discrete action flipped at index %d (expected %d, got %d); max abs error %.6g", c.Flipped, c.FlippedFrom, c.FlippedTo, c.MaxAbs)
	case c.Discrete:
		b.WriteString("discrete, all equal")
	case c.Index >= 0 && !withinTol(c.Got, c.Expected, c.Atol, c.Rtol):
		fmt.Fprintf(&b, "max abs error %.6g beyond tolerance (atol %g, rtol %g) at index %d (expected %.9g, got %.9g); max rel error %.6g",
			c.MaxAbs, c.Atol, c.Rtol, c.Index, c.Expected, c.Got, c.MaxRel)
	default:
		fmt.Fprintf(&b, "max abs error %.6g, max rel error %.6g, within tolerance (atol %g, rtol %g)", c.MaxAbs, c.MaxRel, c.Atol, c.Rtol)
	}
	if !c.Discrete && c.Flipped >= 0 {
		fmt.Fprintf(&b, "; argmax flipped at row %d (expected %d, got %d)", c.Flipped, c.FlippedFrom, c.FlippedTo)
	}
	return b.String()
}

func withinTol(got, exp, atol, rtol float64) bool {
	return math.Abs(got-exp) <= atol+rtol*math.Abs(exp)
}

// CompareOutput checks output want of case c against what an engine computed: datatype, shape
// and data (little-endian elements). A discrete output (integer, BOOL, or flagged discrete)
// must be equal element by element; a floating one within its tolerance at every element and,
// flagged argmax, pick the same class in every row of its last axis.
func (g *Golden) CompareOutput(c string, want *GoldenTensor, datatype string, shape []int64, data []byte) OutputCheck {
	atol, rtol := g.tolerance(want.Name)
	opt := g.Outputs[want.Name]
	r := OutputCheck{Case: c, Output: want.Name, Atol: atol, Rtol: rtol, Index: -1, Flipped: -1}
	r.Discrete = opt.Discrete || !IsFloatDatatype(want.Datatype)
	if r.Discrete {
		r.Atol, r.Rtol = 0, 0
	}
	if datatype != want.Datatype {
		r.Problem = fmt.Sprintf("the engine returned datatype %s, expected %s", datatype, want.Datatype)
		return r
	}
	if !slices.Equal(shape, want.Shape) {
		r.Problem = fmt.Sprintf("the engine returned shape %v, expected %v", shape, want.Shape)
		return r
	}
	got, err := DecodeValues(datatype, data)
	if err != nil || len(got) != len(want.Data) {
		r.Problem = fmt.Sprintf("the engine returned %d bytes, not %d %s elements", len(data), len(want.Data), datatype)
		return r
	}
	r.Pass = true
	worst := math.Inf(-1)
	for i, e := range want.Data {
		x := got[i]
		d := math.Abs(x - e)
		if math.IsNaN(x) {
			d = math.Inf(1)
		}
		if d > r.MaxAbs || (math.IsInf(d, 1) && !math.IsInf(r.MaxAbs, 1)) {
			r.MaxAbs = d
		}
		if e != 0 {
			r.MaxRel = max(r.MaxRel, d/math.Abs(e))
		}
		excess := d - (r.Atol + r.Rtol*math.Abs(e)) // > 0: beyond tolerance
		if math.IsNaN(excess) {
			excess = math.Inf(1)
		}
		if excess > worst {
			worst, r.Index, r.Expected, r.Got = excess, i, e, x
		}
		if excess > 0 {
			r.Pass = false
			if r.Discrete && r.Flipped < 0 {
				r.Flipped, r.FlippedFrom, r.FlippedTo = i, int(e), int(x)
			}
		}
	}
	if opt.Argmax && !r.Discrete && len(want.Shape) > 0 && want.Shape[len(want.Shape)-1] > 0 {
		n := int(want.Shape[len(want.Shape)-1])
		for row := 0; row*n < len(want.Data); row++ {
			we, wg := argmax(want.Data[row*n:(row+1)*n]), argmax(got[row*n:(row+1)*n])
			if we != wg {
				r.Pass = false
				r.Flipped, r.FlippedFrom, r.FlippedTo = row, we, wg
				break
			}
		}
	}
	return r
}

// argmax is the index of the largest value (the first of equal ones; NaN is never largest).
func argmax(xs []float64) int {
	best := 0
	for i, x := range xs {
		if x > xs[best] || math.IsNaN(xs[best]) {
			best = i
		}
	}
	return best
}

// GoldenResult is the outcome of running the golden cases on one engine.
type GoldenResult struct {
	Backend string        `json:"backend"`
	Device  string        `json:"device,omitempty"`
	Checks  []OutputCheck `json:"checks"`
	Pass    bool          `json:"pass"`
}

// Failed returns the checks that failed.
func (r *GoldenResult) Failed() []OutputCheck {
	var out []OutputCheck
	for _, c := range r.Checks {
		if !c.Pass {
			out = append(out, c)
		}
	}
	return out
}

// Summary says the result in one line: the failed checks with their numbers, or how many
// passed and the largest error.
func (r *GoldenResult) Summary() string {
	where := r.Backend
	if r.Device != "" && r.Device != r.Backend {
		where += " on " + r.Device
	}
	if failed := r.Failed(); len(failed) > 0 {
		msgs := make([]string, len(failed))
		for i, c := range failed {
			msgs[i] = c.String()
		}
		return fmt.Sprintf("golden check failed on %s: %d of %d outputs: %s", where, len(failed), len(r.Checks), strings.Join(msgs, "; "))
	}
	maxAbs := 0.0
	cases := map[string]bool{}
	for _, c := range r.Checks {
		maxAbs = max(maxAbs, c.MaxAbs)
		cases[c.Case] = true
	}
	return fmt.Sprintf("golden check passed on %s: %d cases, %d outputs, max abs error %.3g", where, len(cases), len(r.Checks), maxAbs)
}

// Golden reads and parses the artifact's golden cases, checked against the manifest again
// (ReadFile) and against the model's signature in the manifest: nil, nil when the manifest
// lists no golden.json. A golden file that does not parse or does not fit the signature is an
// ErrIntegrity VerifyError naming it (it was signed that way: the artifact is broken).
func (a *Artifact) Golden() (*Golden, error) {
	if a.Manifest.File(GoldenFile) == nil {
		return nil, nil
	}
	b, err := a.ReadFile(GoldenFile)
	if err != nil {
		return nil, err
	}
	g, err := ParseGolden(b)
	if err == nil && len(a.Manifest.IO.Inputs) > 0 {
		err = g.CheckIO(a.Manifest.IO)
	}
	if err != nil {
		return nil, &VerifyError{a.Manifest.Name, a.Manifest.Version, GoldenFile, err.Error(), ErrIntegrity}
	}
	return g, nil
}

// ReferenceCase reads a reference file of ONNX Runtime's outputs (testdata/reference, written
// by tools/reference/make_refs.js: id, inputs, outputs with "deterministic") as a golden case
// named by its id: its inputs, and its deterministic outputs as the expected ones (a sampled
// output is left out: ONNX Runtime's random ops are unseeded).
func ReferenceCase(b []byte) (GoldenCase, error) {
	var ref struct {
		ID      string         `json:"id"`
		Batch   int            `json:"batch"`
		Inputs  []GoldenTensor `json:"inputs"`
		Outputs []struct {
			GoldenTensor
			Deterministic bool `json:"deterministic"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal(b, &ref); err != nil {
		return GoldenCase{}, fmt.Errorf("reference file: %v", err)
	}
	if len(ref.Inputs) == 0 {
		return GoldenCase{}, fmt.Errorf("reference file: no inputs")
	}
	name := ref.ID
	if ref.Batch > 0 {
		name = fmt.Sprintf("%s_b%d", ref.ID, ref.Batch)
	}
	c := GoldenCase{Name: name, Inputs: ref.Inputs}
	for _, o := range ref.Outputs {
		if o.Deterministic {
			c.Outputs = append(c.Outputs, o.GoldenTensor)
		}
	}
	return c, nil
}
