package repository

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strconv"

	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/bridge"
)

// Golden checks (docs/rollout.md, Golden checks on the serving backend): before a version
// becomes ready, every engine it would serve with (one per GPU) runs the golden cases its
// artifact carries (artifacts.GoldenFile) and its outputs are compared with the expected ones.
// A version whose outputs leave the tolerance, or flip a discrete action, on a backend is not
// served by that backend: the next one is tried when fallback is allowed, else the version is
// UNAVAILABLE with the numbers in its reason.

// GoldenExec runs golden cases: a *bridge.Context, or a test's fake.
type GoldenExec interface {
	Run(inputs, outputs []bridge.Tensor) error
	Close() error
}

// openGolden opens what runs the golden cases on engine e, with its input and output
// signature. Tests substitute it (Repository.goldenOpen).
func openGolden(e *bridge.Engine) (GoldenExec, []bridge.IOInfo, []bridge.IOInfo, error) {
	c, err := e.NewContext()
	if err != nil {
		return nil, nil, nil, err
	}
	return c, e.Inputs(), e.Outputs(), nil
}

// GoldenError is a version's refusal by its golden cases on one engine: Result holds every
// number.
type GoldenError struct {
	Result artifacts.GoldenResult
}

func (e *GoldenError) Error() string { return e.Result.Summary() }

// CheckGolden runs every case of g on engine e (a context made for the purpose and closed
// after) and compares each expected output. It returns the result, and an error when a case
// could not run at all (wrong inputs for this engine, an engine failure); a result that does
// not pass is not an error here (see GoldenError). The calling goroutine is locked to its OS
// thread meanwhile, so a CPU context with an OpenMP team stays on one thread.
func CheckGolden(e *bridge.Engine, g *artifacts.Golden, backend, device string) (artifacts.GoldenResult, error) {
	return checkGolden(openGolden, e, g, backend, device)
}

func checkGolden(open func(*bridge.Engine) (GoldenExec, []bridge.IOInfo, []bridge.IOInfo, error), e *bridge.Engine, g *artifacts.Golden, backend, device string) (artifacts.GoldenResult, error) {
	res := artifacts.GoldenResult{Backend: backend, Device: device, Pass: true}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c, ins, outs, err := open(e)
	if err != nil {
		return res, fmt.Errorf("golden check: %w", err)
	}
	defer c.Close()
	outputs := make([]bridge.Tensor, len(outs))
	for _, gc := range g.Cases {
		inputs := make([]bridge.Tensor, len(ins))
		for i, in := range ins {
			k := -1
			for j := range gc.Inputs {
				if gc.Inputs[j].Name == in.Name {
					k = j
				}
			}
			if k < 0 {
				return res, fmt.Errorf("golden case %q: no input %q", gc.Name, in.Name)
			}
			t := &gc.Inputs[k]
			if t.Datatype != in.DType.String() {
				return res, fmt.Errorf("golden case %q: input %q is %s, the engine takes %s", gc.Name, in.Name, t.Datatype, in.DType)
			}
			b, err := t.Bytes()
			if err != nil {
				return res, fmt.Errorf("golden case %q: input %v", gc.Name, err)
			}
			inputs[i] = bridge.Tensor{DType: in.DType, Shape: t.Shape, Data: b}
		}
		if err := c.Run(inputs, outputs); err != nil {
			return res, fmt.Errorf("golden case %q: run: %w", gc.Name, err)
		}
		for k := range gc.Outputs {
			want := &gc.Outputs[k]
			i := bridge.IOIndex(outs, want.Name)
			if i < 0 {
				return res, fmt.Errorf("golden case %q: the engine has no output %q", gc.Name, want.Name)
			}
			check := g.CompareOutput(gc.Name, want, outputs[i].DType.String(), outputs[i].Shape, outputs[i].Data)
			res.Checks = append(res.Checks, check)
			res.Pass = res.Pass && check.Pass
		}
	}
	return res, nil
}

// GoldenCheck is the golden check of one engine a version was loaded with: its result, or
// the error that kept the cases from running.
type GoldenCheck struct {
	Result artifacts.GoldenResult
	Err    error // the cases did not run (Result.Checks is partial)
}

// Outcome is "pass", "fail" (outputs out of tolerance or a flipped action) or "error" (the
// cases did not run): the result label of policyd_golden_checks_total.
func (c GoldenCheck) Outcome() string {
	switch {
	case c.Err != nil:
		return "error"
	case c.Result.Pass:
		return "pass"
	}
	return "fail"
}

// Summary says the check in one line with its numbers.
func (c GoldenCheck) Summary() string {
	if c.Err != nil {
		where := c.Result.Backend
		if c.Result.Device != "" && c.Result.Device != where {
			where += " on " + c.Result.Device
		}
		return fmt.Sprintf("golden check could not run on %s: %v", where, c.Err)
	}
	return c.Result.Summary()
}

// GoldenChecks are the golden checks made when the version was loaded, in order: each
// engine of each backend tried (a backend that failed them and was fallen back from comes
// first). Empty for a version without golden cases.
func (v *Version) GoldenChecks() []GoldenCheck { return append([]GoldenCheck(nil), v.golden...) }

// checkGoldenEngines runs the golden cases on every engine of a version about to be served
// on backend b (devs: their GPU ordinals, nil on the CPU), records each check in v, logs it,
// and returns the first failure as an error carrying its numbers.
func (r *Repository) checkGoldenEngines(v *Version, es []*bridge.Engine, devs []int, b string, g *artifacts.Golden) error {
	open := r.goldenOpen
	if open == nil {
		open = openGolden
	}
	var errs []error
	for i, e := range es {
		backend := cmp.Or(b, e.Backend())
		device := "cpu"
		switch {
		case i < len(devs):
			device = "cuda:" + strconv.Itoa(devs[i])
		case backend != "cpu":
			device = "cuda:0"
		}
		res, err := checkGolden(open, e, g, backend, device)
		check := GoldenCheck{Result: res, Err: err}
		v.golden = append(v.golden, check)
		log := r.log.With(zap.String("model", v.name), zap.String("version", v.version),
			zap.String("backend", backend), zap.String("device", device))
		switch {
		case err != nil:
			log.Error("golden check could not run", zap.Error(err))
			errs = append(errs, errors.New(check.Summary()))
		case !res.Pass:
			failed := res.Failed()
			fields := []zap.Field{zap.Int("failed", len(failed)), zap.Int("checks", len(res.Checks))}
			if len(failed) > 0 {
				f := failed[0]
				fields = append(fields, zap.String("case", f.Case), zap.String("output", f.Output),
					zap.Float64("max_abs_error", f.MaxAbs), zap.Float64("max_rel_error", f.MaxRel),
					zap.Float64("atol", f.Atol), zap.Float64("rtol", f.Rtol), zap.Int("flipped", f.Flipped))
			}
			log.Warn("golden check failed: outputs leave the tolerance on the serving backend", append(fields, zap.String("detail", res.Summary()))...)
			errs = append(errs, &GoldenError{Result: res})
		default:
			log.Info("golden check passed", zap.String("detail", res.Summary()))
		}
		if len(errs) > 0 {
			break // the backend is refused: the other GPUs need not run them
		}
	}
	return errors.Join(errs...)
}

// Signature is the I/O signature of engine e as a manifest records it (policyctl artifacts add).
func Signature(e *bridge.Engine) artifacts.IO {
	conv := func(infos []bridge.IOInfo) []artifacts.Tensor {
		out := make([]artifacts.Tensor, 0, len(infos))
		for _, i := range infos {
			out = append(out, artifacts.Tensor{Name: i.Name, Datatype: i.DType.String(), Shape: slices.Clone(i.Shape)})
		}
		return out
	}
	return artifacts.IO{Inputs: conv(e.Inputs()), Outputs: conv(e.Outputs())}
}
