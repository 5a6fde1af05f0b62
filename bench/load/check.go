package load

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
)

// HeaderLength is the binary tensor data extension's framing header.
const HeaderLength = "Inference-Header-Content-Length"

// ParseOutputs reads the outputs of a KServe v2 inference response. headerLen is the value of
// its Inference-Header-Content-Length header ("" when absent: all JSON); with it, the outputs
// whose parameters carry "binary_data_size" take their little-endian FP32 bytes from the body
// after the JSON, in order.
func ParseOutputs(body []byte, headerLen string) ([]Tensor, error) {
	js, bin := body, []byte(nil)
	if headerLen != "" {
		n, err := strconv.Atoi(headerLen)
		if err != nil || n < 0 || n > len(body) {
			return nil, fmt.Errorf("%s %q does not fit a body of %d bytes", HeaderLength, headerLen, len(body))
		}
		js, bin = body[:n], body[n:]
	}
	var resp struct {
		Outputs []struct {
			Tensor
			Parameters struct {
				Size *int `json:"binary_data_size"`
			} `json:"parameters"`
		} `json:"outputs"`
		Error string `json:"error"`
	}
	if err := json.Unmarshal(js, &resp); err != nil {
		return nil, fmt.Errorf("response is not KServe v2 JSON: %v (%.200s)", err, js)
	}
	if resp.Error != "" {
		return nil, fmt.Errorf("response error: %s", resp.Error)
	}
	if len(resp.Outputs) == 0 {
		return nil, fmt.Errorf("no outputs in response: %.200s", js)
	}
	out := make([]Tensor, 0, len(resp.Outputs))
	off := 0
	for _, o := range resp.Outputs {
		t := o.Tensor
		if o.Parameters.Size != nil {
			size := *o.Parameters.Size
			if t.Datatype != "FP32" || size%4 != 0 || size < 0 || off+size > len(bin) {
				return nil, fmt.Errorf("output %q: binary_data_size %d (%s) does not fit the %d binary bytes left",
					t.Name, size, t.Datatype, len(bin)-off)
			}
			t.Data = make([]float64, size/4)
			for i := range t.Data {
				t.Data[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(bin[off+4*i:])))
			}
			off += size
		}
		out = append(out, t)
	}
	if off != len(bin) {
		return nil, fmt.Errorf("%d binary bytes after the JSON, outputs take %d", len(bin), off)
	}
	return out, nil
}

// Reference is what the first response of a case must hold: the outputs of
// ../shared/peers/models/ref/ (torch) or testdata/reference/ (ONNX Runtime).
type Reference struct {
	Outputs   []Tensor
	ShapeOnly bool    // check only names and shapes (the constant-output floor)
	Atol      float64 // default 1e-4
	Rtol      float64 // default 1e-3
}

// ParseReference reads a KServe v2 response JSON ({"outputs": [...]}) as a Reference with the
// peers' tolerances.
func ParseReference(b []byte) (Reference, error) {
	outs, err := ParseOutputs(b, "")
	if err != nil {
		return Reference{}, err
	}
	return Reference{Outputs: outs, Atol: 1e-4, Rtol: 1e-3}, nil
}

// Check compares got with the reference: every reference output present with the same shape
// and, unless ShapeOnly, every value within atol + rtol·|want| (NaN never is). Extra outputs
// are allowed.
func (r Reference) Check(got []Tensor) error {
	atol, rtol := r.Atol, r.Rtol
	if atol == 0 && rtol == 0 {
		atol, rtol = 1e-4, 1e-3
	}
	for _, w := range r.Outputs {
		i := slices.IndexFunc(got, func(t Tensor) bool { return t.Name == w.Name })
		if i < 0 {
			return fmt.Errorf("output %q missing", w.Name)
		}
		g := got[i]
		if !slices.Equal(g.Shape, w.Shape) {
			return fmt.Errorf("output %q shape %v, want %v", w.Name, g.Shape, w.Shape)
		}
		if len(g.Data) != len(w.Data) {
			return fmt.Errorf("output %q has %d values, want %d", w.Name, len(g.Data), len(w.Data))
		}
		if r.ShapeOnly {
			continue
		}
		for j := range w.Data {
			if d := math.Abs(g.Data[j] - w.Data[j]); !(d <= atol+rtol*math.Abs(w.Data[j])) {
				return fmt.Errorf("output %q[%d] = %g, want %g (|diff| %.3g > %g + %g·|want|)", w.Name, j, g.Data[j], w.Data[j], d, atol, rtol)
			}
		}
	}
	return nil
}

// checkResponse is Check over an HTTP answer: status 200, then the outputs.
func (r Reference) checkResponse(status int, headerLen string, body []byte) error {
	if status != 200 {
		return fmt.Errorf("status %d: %.300s", status, bytes.TrimSpace(body))
	}
	got, err := ParseOutputs(body, headerLen)
	if err != nil {
		return err
	}
	return r.Check(got)
}
