package load

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Tensor is one FP32 tensor of a KServe v2 request or response: the peer models take and give
// FP32 only. Data holds the float32 values widened to float64, row-major.
type Tensor struct {
	Name     string    `json:"name"`
	Datatype string    `json:"datatype"`
	Shape    []int64   `json:"shape"`
	Data     []float64 `json:"data"`
}

// elements is the product of the shape, or an error naming the tensor when the data does not
// have that many values.
func (t Tensor) elements() (int, error) {
	n := 1
	for _, d := range t.Shape {
		if d < 0 {
			return 0, fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		n *= int(d)
	}
	if n != len(t.Data) {
		return 0, fmt.Errorf("tensor %q: shape %v holds %d values, data has %d", t.Name, t.Shape, n, len(t.Data))
	}
	return n, nil
}

// ParseInputs reads the inputs of a KServe v2 JSON inference request ({"inputs": [...]}), the
// format of ../shared/peers/models/bodies/*.json. Only flat FP32 data is accepted.
func ParseInputs(body []byte) ([]Tensor, error) {
	var req struct {
		Inputs []Tensor `json:"inputs"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, fmt.Errorf("not a KServe v2 JSON request: %w", err)
	}
	if len(req.Inputs) == 0 {
		return nil, errors.New(`no "inputs"`)
	}
	for _, t := range req.Inputs {
		if t.Datatype != "FP32" {
			return nil, fmt.Errorf("input %q: datatype %q, only FP32 is supported", t.Name, t.Datatype)
		}
		if _, err := t.elements(); err != nil {
			return nil, err
		}
	}
	return req.Inputs, nil
}

// JSONBody encodes inputs as a KServe v2 JSON request. Every value is the shortest literal that
// reads back as the same float64 (strconv's 'g', -1), which is what Python's json.dumps writes
// for a float32 array's tolist(): the peers' bodies carry the same 16–17 significant digits.
func JSONBody(inputs []Tensor) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"inputs":[`)
	for i, t := range inputs {
		if _, err := t.elements(); err != nil {
			return nil, err
		}
		if i > 0 {
			b.WriteByte(',')
		}
		head, _ := json.Marshal(struct {
			Name     string  `json:"name"`
			Shape    []int64 `json:"shape"`
			Datatype string  `json:"datatype"`
		}{t.Name, t.Shape, "FP32"})
		b.Write(head[:len(head)-1])
		b.WriteString(`,"data":[`)
		buf := make([]byte, 0, 32)
		for j, v := range t.Data {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("input %q: element %d is %v, which JSON cannot carry", t.Name, j, v)
			}
			if j > 0 {
				b.WriteString(", ")
			}
			buf = strconv.AppendFloat(buf[:0], v, 'g', -1, 64)
			b.Write(buf)
		}
		b.WriteString("]}")
	}
	b.WriteString("]}")
	return b.Bytes(), nil
}

// BinaryBody encodes inputs with the binary tensor data extension (docs/api.md): a JSON header
// naming each input with "binary_data_size" and asking for every output in binary
// ("binary_data_output": true), then the inputs' little-endian float32 bytes in order.
// headerLen is the value of the Inference-Header-Content-Length header.
func BinaryBody(inputs []Tensor) (body []byte, headerLen int, err error) {
	type param struct {
		Size int `json:"binary_data_size"`
	}
	type in struct {
		Name       string  `json:"name"`
		Shape      []int64 `json:"shape"`
		Datatype   string  `json:"datatype"`
		Parameters param   `json:"parameters"`
	}
	head := struct {
		Inputs     []in            `json:"inputs"`
		Parameters map[string]bool `json:"parameters"`
	}{Parameters: map[string]bool{"binary_data_output": true}}
	var data []byte
	for _, t := range inputs {
		n, err := t.elements()
		if err != nil {
			return nil, 0, err
		}
		head.Inputs = append(head.Inputs, in{t.Name, t.Shape, "FP32", param{4 * n}})
		for _, v := range t.Data {
			data = binary.LittleEndian.AppendUint32(data, math.Float32bits(float32(v)))
		}
	}
	h, err := json.Marshal(head)
	if err != nil {
		return nil, 0, err
	}
	return append(h, data...), len(h), nil
}

// TileBatch returns t with its batch dimension (axis) grown to batch rows by repeating its
// rows: row r of the result is row r mod n of t. The peer models treat rows independently, so
// tiling a request and its reference output together keeps them a valid pair.
func TileBatch(t Tensor, axis, batch int) (Tensor, error) {
	if axis < 0 || axis >= len(t.Shape) {
		return t, fmt.Errorf("tensor %q: batch axis %d outside shape %v", t.Name, axis, t.Shape)
	}
	if _, err := t.elements(); err != nil {
		return t, err
	}
	n := int(t.Shape[axis])
	if n == 0 || batch < 1 {
		return t, fmt.Errorf("tensor %q: cannot tile %d rows to %d", t.Name, n, batch)
	}
	outer, inner := 1, 1
	for _, d := range t.Shape[:axis] {
		outer *= int(d)
	}
	for _, d := range t.Shape[axis+1:] {
		inner *= int(d)
	}
	out := Tensor{Name: t.Name, Datatype: t.Datatype, Shape: append([]int64(nil), t.Shape...)}
	out.Shape[axis] = int64(batch)
	out.Data = make([]float64, 0, outer*batch*inner)
	for o := 0; o < outer; o++ {
		block := t.Data[o*n*inner : (o+1)*n*inner]
		for r := 0; r < batch; r++ {
			src := r % n
			out.Data = append(out.Data, block[src*inner:(src+1)*inner]...)
		}
	}
	return out, nil
}
