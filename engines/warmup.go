package engines

import (
	"fmt"
	"slices"
	"strings"

	"github.com/policyd/policyd/bridge"
)

// maxWarmupInput bounds the bytes of one made-up warm-up input (its dimensions come from the
// model file): a signature whose fixed dimensions ask for more is not warmed up.
const maxWarmupInput = 256 << 20

// WarmupInputs builds the warm-up runs of a model with the given input signature: one input
// set of zeros per batch size (sizes below 1 and repeats are dropped, 1 is always first).
// Dimension batchDim of each input takes the batch size (inputs without a batch dimension
// keep their shape, and a model that is not batchable is warmed with batch 1 only, the
// caller passing nil sizes); any other dynamic dimension (< 0) takes 1. A signature without
// inputs, or with an input of a dtype without a fixed size (none today), gets no warm-up.
func WarmupInputs(inputs []bridge.IOInfo, batchSizes []int) [][]bridge.Tensor {
	if len(inputs) == 0 {
		return nil // a model without inputs (or a test's engine without a signature)
	}
	sizes := []int{1}
	for _, n := range batchSizes {
		if n > 1 && !slices.Contains(sizes, n) {
			sizes = append(sizes, n)
		}
	}
	var runs [][]bridge.Tensor
	for _, n := range sizes {
		run := make([]bridge.Tensor, len(inputs))
		for i, in := range inputs {
			size := in.DType.Size()
			if size == 0 {
				return nil
			}
			shape := slices.Clone(in.Shape)
			for d := range shape {
				switch {
				case d == in.BatchDim:
					shape[d] = int64(n)
				case shape[d] < 0:
					shape[d] = 1
				}
			}
			bytes, ok := bridge.ByteSize(in.DType, shape)
			if !ok || bytes > maxWarmupInput {
				return nil // a signature too large to run with made-up inputs: no warm-up
			}
			run[i] = bridge.Tensor{DType: in.DType, Shape: shape, Data: make([]byte, bytes)}
		}
		runs = append(runs, run)
	}
	return runs
}

// warm runs the pool's warm-up input sets on c, discarding the outputs.
func (p *Pool) warm(c ExecContext) error {
	if len(p.warmup) == 0 {
		return nil
	}
	outputs := make([]bridge.Tensor, p.nOut)
	for k := range outputs {
		outputs[k].Shape = make([]int64, 0, bridge.MaxRank)
	}
	for i, in := range p.warmup {
		if err := c.Run(in, outputs); err != nil {
			shapes := make([]string, len(in))
			for k, t := range in {
				shapes[k] = fmt.Sprint(t.Shape)
			}
			return fmt.Errorf("warm-up run %d of %d (zero inputs of shapes %s): %w", i+1, len(p.warmup), strings.Join(shapes, ", "), err)
		}
	}
	return nil
}
