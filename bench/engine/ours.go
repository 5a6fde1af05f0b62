package engine

import (
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"github.com/policyd/policyd/bridge"
)

// Params bound one timed mode of either peer.
type Params struct {
	Seconds  float64 // timed loop length per worker
	Warmup   float64 // warm-up seconds per worker (at least 5 calls), before the timed loop
	MaxIters int     // the timed loop stops after this many calls even before Seconds
	MinIters int     // ... and runs at least this many
	Workers  int     // contexts (mode par); st always uses one
}

// LoadEngine compiles spec's ONNX file from dir for the CPU backend, one thread per Run.
func LoadEngine(rt *bridge.Runtime, dir string, spec ModelSpec) (*bridge.Engine, error) {
	onnx, err := os.ReadFile(filepath.Join(dir, spec.File))
	if err != nil {
		return nil, err
	}
	return rt.NewEngine(onnx, bridge.EngineOptions{Threads: 1, Name: spec.Name})
}

// feeds are the inputs of one model at one batch in Engine.Inputs order; every worker gets its
// own copy of the bytes.
type feeds struct {
	names  []string
	shapes [][]int64
	data   [][]byte
}

func (f feeds) tensors() []bridge.Tensor {
	ts := make([]bridge.Tensor, len(f.data))
	for i := range f.data {
		ts[i] = bridge.Tensor{DType: bridge.Float32, Shape: slices.Clone(f.shapes[i]), Data: slices.Clone(f.data[i])}
	}
	return ts
}

// makeFeeds lays out the seeded inputs of spec (models.json order, shared with ort_bench.js)
// in the engine's input order. Each engine input's -1 dimensions are the batch: dimension 0
// where IOInfo.BatchDim is 0, and also the middle dimension of an LSTM state [1,-1,H] (whose
// BatchDim is -1 because its dimension 0 is not the batch). The result is checked against the
// shape models.json implies.
func makeFeeds(eng *bridge.Engine, spec ModelSpec, batch int) (feeds, error) {
	shapes, data := SeededInputs(spec, batch)
	byName := map[string]int{}
	for i, in := range spec.Inputs {
		byName[in.Name] = i
	}
	var f feeds
	for _, in := range eng.Inputs() {
		k, ok := byName[in.Name]
		if !ok {
			return f, fmt.Errorf("engine input %q is not in models.json", in.Name)
		}
		if in.DType != bridge.Float32 {
			return f, fmt.Errorf("input %q: %s, only FP32 is benchmarked", in.Name, in.DType)
		}
		shape := ConcreteShape(in.Shape, batch)
		if in.BatchDim == 0 && len(in.Shape) > 0 && in.Shape[0] != -1 {
			return f, fmt.Errorf("input %q: batch dimension 0 is fixed to %d", in.Name, in.Shape[0])
		}
		if !slices.Equal(shape, shapes[k]) {
			return f, fmt.Errorf("input %q: engine shape %v at batch %d is %v, models.json says %v",
				in.Name, in.Shape, batch, shape, shapes[k])
		}
		f.names = append(f.names, in.Name)
		f.shapes = append(f.shapes, shape)
		f.data = append(f.data, data[k])
	}
	if len(f.data) != len(spec.Inputs) {
		return f, fmt.Errorf("engine has %d inputs, models.json %d", len(f.data), len(spec.Inputs))
	}
	return f, nil
}

// checkOutputs verifies the outputs of one Run: the engine's declared count, shapes with the
// batch in place of -1, and only finite FP32 values.
func checkOutputs(eng *bridge.Engine, outs []bridge.Tensor, batch int) error {
	for i, info := range eng.Outputs() {
		o := outs[i]
		if want := ConcreteShape(info.Shape, batch); !slices.Equal(o.Shape, want) {
			return fmt.Errorf("output %q: shape %v, want %v", info.Name, o.Shape, want)
		}
		if o.DType != bridge.Float32 {
			continue
		}
		n := int(bridge.NumElements(o.Shape))
		if len(o.Data) != 4*n || n == 0 {
			return fmt.Errorf("output %q: %d bytes for shape %v", info.Name, len(o.Data), o.Shape)
		}
		for j := 0; j < n; j++ {
			v := math.Float32frombits(binary.LittleEndian.Uint32(o.Data[4*j:]))
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return fmt.Errorf("output %q: element %d is %v", info.Name, j, v)
			}
		}
	}
	return nil
}

type workerResult struct {
	lat     []float64 // µs per Run
	seconds float64
	err     error
}

// worker owns one Context on a goroutine locked to its OS thread (the engine caches per-thread
// state). It checks the first output, warms up, reports on ready, waits for start (closed) or
// abort, runs the timed loop and sends its result on done.
func worker(eng *bridge.Engine, f feeds, batch int, p Params, ready chan<- error, start, abort <-chan struct{}, done chan<- workerResult) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	ctx, err := eng.NewContext()
	if err != nil {
		ready <- err
		return
	}
	defer ctx.Close()
	in := f.tensors()
	out := make([]bridge.Tensor, len(eng.Outputs()))
	for i := range out {
		out[i].Shape = make([]int64, 0, bridge.MaxRank)
	}
	if err := ctx.Run(in, out); err != nil {
		ready <- err
		return
	}
	if err := checkOutputs(eng, out, batch); err != nil {
		ready <- err
		return
	}
	wEnd := time.Now().Add(time.Duration(p.Warmup * float64(time.Second)))
	for i := 0; i < 1_000_000 && (i < 5 || time.Now().Before(wEnd)); i++ {
		if err := ctx.Run(in, out); err != nil {
			ready <- err
			return
		}
	}
	lat := make([]float64, max(p.MaxIters, 1)) // before the loop: Run itself allocates nothing
	ready <- nil
	select {
	case <-start:
	case <-abort:
		return
	}
	t0 := time.Now()
	deadline := t0.Add(time.Duration(p.Seconds * float64(time.Second)))
	n := 0
	for n < len(lat) {
		s := time.Now()
		err := ctx.Run(in, out)
		e := time.Now()
		if err != nil {
			done <- workerResult{err: err}
			return
		}
		lat[n] = float64(e.Sub(s).Nanoseconds()) / 1e3
		n++
		if n >= p.MinIters && !e.Before(deadline) {
			break
		}
	}
	secs := time.Since(t0).Seconds()
	// The last outputs must still be sane after the timed loop.
	if err := checkOutputs(eng, out, batch); err != nil {
		done <- workerResult{err: fmt.Errorf("after %d runs: %w", n, err)}
		return
	}
	done <- workerResult{lat: lat[:n], seconds: secs}
}

// BenchOurs runs one mode of policyd's engine: "st" = one context; "par" = p.Workers contexts,
// each on its own locked goroutine, started together. All contexts are created, checked and
// warmed before any timing starts.
func BenchOurs(eng *bridge.Engine, spec ModelSpec, batch int, mode string, p Params) (Result, error) {
	workers := 1
	switch mode {
	case "st":
	case "par":
		workers = max(p.Workers, 1)
	default:
		return Result{}, fmt.Errorf("unknown mode %q (want st or par)", mode)
	}
	f, err := makeFeeds(eng, spec, batch)
	if err != nil {
		return Result{}, err
	}
	ready := make(chan error, workers)
	done := make(chan workerResult, workers)
	start, abort := make(chan struct{}), make(chan struct{})
	for i := 0; i < workers; i++ {
		go worker(eng, f, batch, p, ready, start, abort, done)
	}
	var firstErr error
	for i := 0; i < workers; i++ {
		if err := <-ready; err != nil && firstErr == nil {
			firstErr = err
		}
	}
	if firstErr != nil {
		close(abort) // workers that got ready exit; failed ones already did
		return Result{}, firstErr
	}
	cpu0 := sampleCPU()
	close(start)
	lats := make([][]float64, 0, workers)
	seconds := 0.0
	for i := 0; i < workers; i++ {
		r := <-done
		if r.err != nil && firstErr == nil {
			firstErr = r.err
		}
		lats = append(lats, r.lat)
		seconds = max(seconds, r.seconds)
	}
	cpu1 := sampleCPU()
	if firstErr != nil {
		return Result{}, firstErr
	}
	r := summarize(mode, workers, batch, lats, seconds)
	account(&r, cpu0, cpu1)
	return r, nil
}
