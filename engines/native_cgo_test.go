//go:build cgo

package engines

// Tests against the native library (lib/libpolicyd.so) load the models of
// ../shared/peers/models: mlp-small.onnx (obs FP32[-1,8] → action FP32[-1,2]) and mlp-med.onnx
// (obs FP32[-1,64] → action FP32[-1,8]).

import (
	"encoding/binary"
	"math"

	"github.com/policyd/policyd/bridge"
)

const (
	mlpSmall = "../../shared/peers/models/mlp-small.onnx"
	mlpMed   = "../../shared/peers/models/mlp-med.onnx"
)

// obs is an FP32[batch,width] input whose values depend on seed.
func obs(batch, width int, seed float32) bridge.Tensor {
	b := make([]byte, 4*width*batch)
	for i := 0; i < width*batch; i++ {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(seed+float32(i%17)/32))
	}
	return bridge.Tensor{DType: bridge.Float32, Shape: []int64{int64(batch), int64(width)}, Data: b}
}
