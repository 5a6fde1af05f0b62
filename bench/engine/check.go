package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"time"

	"github.com/policyd/policyd/bridge"
)

// DefaultCheckAtol is the output check's tolerance for a model whose models.json entry sets no
// check_atol: f32 engines that differ only in summation order stay far inside it.
const DefaultCheckAtol = 1e-4

// checkRtol is added to the tolerance per unit of |ORT's value| (float rounding grows with it).
const checkRtol = 1e-3

// Check is policyd's outputs compared with ORT's on the same seeded inputs at one batch: the
// largest |policyd − ORT| over every output element, and whether each element is within
// Atol + 1e-3·|ORT|.
type Check struct {
	MaxAbsDiff float64 `json:"max_abs_diff"`
	Worst      string  `json:"worst,omitempty"` // output[index] of the largest difference
	Atol       float64 `json:"atol"`
	OK         bool    `json:"ok"`
	Err        string  `json:"error,omitempty"` // the check could not be made (then OK is false)
}

// Status is "ok", "MISMATCH" or "error: …".
func (c *Check) Status() string {
	switch {
	case c == nil:
		return "–"
	case c.Err != "":
		return "error: " + c.Err
	case c.OK:
		return "ok"
	default:
		return "MISMATCH"
	}
}

// output is one named output: its shape and values.
type output struct {
	Shape []int64   `json:"shape"`
	Data  []float64 `json:"data"`
}

// OursOutputs runs eng once (a fresh context on a locked thread) on spec's seeded inputs at
// batch and returns its FP32 outputs by name.
func OursOutputs(eng *bridge.Engine, spec ModelSpec, batch int) (map[string]output, error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f, err := makeFeeds(eng, spec, batch)
	if err != nil {
		return nil, err
	}
	ctx, err := eng.NewContext()
	if err != nil {
		return nil, err
	}
	defer ctx.Close()
	out := make([]bridge.Tensor, len(eng.Outputs()))
	for i := range out {
		out[i].Shape = make([]int64, 0, bridge.MaxRank)
	}
	if err := ctx.Run(f.tensors(), out); err != nil {
		return nil, err
	}
	res := map[string]output{}
	for i, info := range eng.Outputs() {
		if out[i].DType != bridge.Float32 {
			continue
		}
		n := len(out[i].Data) / 4
		o := output{Shape: slices.Clone(out[i].Shape), Data: make([]float64, n)}
		for j := 0; j < n; j++ {
			o.Data[j] = float64(math.Float32frombits(binary.LittleEndian.Uint32(out[i].Data[4*j:])))
		}
		res[info.Name] = o
	}
	return res, nil
}

// Outputs runs CheckScript (ort_outputs.js) for one model and batch and returns ORT's outputs.
func (o ORTRunner) Outputs(ctx context.Context, model string, batch int) (map[string]output, error) {
	if o.CheckScript == "" {
		return nil, fmt.Errorf("no ORT output script (ort_outputs.js)")
	}
	ctx, cancel := context.WithTimeout(ctx, 120*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.Node, o.CheckScript, "--models-dir", o.ModelsDir, "--model", model,
		"--batch", strconv.Itoa(batch))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s %s: %w: %s", o.Node, filepath.Base(o.CheckScript), err, tail(stderr.String(), 800))
	}
	var r struct {
		Model   string            `json:"model"`
		Batch   int               `json:"batch"`
		Outputs map[string]output `json:"outputs"`
	}
	if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &r); err != nil {
		return nil, fmt.Errorf("%s: bad JSON: %w (stderr: %s)", filepath.Base(o.CheckScript), err, tail(stderr.String(), 400))
	}
	if r.Model != model || r.Batch != batch || len(r.Outputs) == 0 {
		return nil, fmt.Errorf("%s answered for %s b%d with %d outputs, asked %s b%d",
			filepath.Base(o.CheckScript), r.Model, r.Batch, len(r.Outputs), model, batch)
	}
	return r.Outputs, nil
}

// compareOutputs compares ours with ORT's (every output of ORT's must be in ours with its
// shape) under atol + checkRtol·|ORT|.
func compareOutputs(ours, ort map[string]output, atol float64) Check {
	c := Check{Atol: atol, OK: true}
	names := make([]string, 0, len(ort))
	for n := range ort {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, name := range names {
		r := ort[name]
		o, ok := ours[name]
		if !ok {
			return Check{Atol: atol, Err: fmt.Sprintf("policyd has no output %q", name)}
		}
		if !slices.Equal(o.Shape, r.Shape) || len(o.Data) != len(r.Data) {
			return Check{Atol: atol, Err: fmt.Sprintf("output %q: policyd shape %v, ORT %v", name, o.Shape, r.Shape)}
		}
		for i := range r.Data {
			d := math.Abs(o.Data[i] - r.Data[i])
			if math.IsNaN(d) {
				d = math.Inf(1)
			}
			if d > c.MaxAbsDiff || (c.Worst == "" && i == 0) {
				c.MaxAbsDiff, c.Worst = d, fmt.Sprintf("%s[%d]: policyd %.6g, ORT %.6g", name, i, o.Data[i], r.Data[i])
			}
			if !(d <= atol+checkRtol*math.Abs(r.Data[i])) {
				c.OK = false
			}
		}
	}
	return c
}

// checkCase compares policyd's outputs with ORT's for one model and batch.
func (cfg *Config) checkCase(ctx context.Context, eng *bridge.Engine, spec ModelSpec, batch int) *Check {
	atol := spec.CheckAtol
	if atol <= 0 {
		atol = DefaultCheckAtol
	}
	ours, err := OursOutputs(eng, spec, batch)
	if err != nil {
		return &Check{Atol: atol, Err: "policyd: " + err.Error()}
	}
	theirs, err := cfg.ORT.Outputs(ctx, spec.Name, batch)
	if err != nil {
		return &Check{Atol: atol, Err: "ORT: " + err.Error()}
	}
	c := compareOutputs(ours, theirs, atol)
	return &c
}
