package server

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"time"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// grpcRequest is the codec of KServe v2 gRPC inference (ModelInfer and each request of
// ModelStreamInfer) on the inference path (infer.go). It decodes a ModelInferRequest into the
// same decoded request the HTTP codecs fill (an inferRequest: tensors, buffers, requested
// outputs, run options), with the same checks against the signature (checkGiven, checkBatch)
// and the same parameters (schedulingParams, the sequence parameters), and encodes the
// response from the engine's outputs.
//
// Input data come either typed, in each input's contents (the repeated field of its
// datatype: bool_contents, int_contents for INT8/16/32, int64_contents, uint_contents for
// UINT8/16/32, uint64_contents, fp32_contents, fp64_contents; FP16 and BF16 have none), or raw
// in raw_input_contents, one entry per input in the order of inputs (little-endian,
// row-major), never both. Outputs go raw (raw_output_contents) when the inputs came raw, as
// Triton's clients send and read them, and typed (contents) when they came typed; the request
// parameter "binary_data_output" (bool_param) chooses explicitly. An output datatype without a
// typed field (FP16, BF16) makes the whole response raw (the protocol allows no mix).
//
// Values are pooled; one serves one request at a time.
type grpcRequest struct {
	r        *inferRequest // the decoded request, shared with the HTTP codecs' helpers
	req      *inference.ModelInferRequest
	deadline time.Time // the call's deadline; zero: none
	raw      bool      // the response goes in raw_output_contents
	resp     *inference.ModelInferResponse
	encode   func([]bridge.Tensor) error
	all      []int           // 0, 1, 2, ...: the indices of all outputs
	rawNext  int             // the next entry of raw_input_contents (inputs in shared memory take none)
	ctx      context.Context // the call's context, for its metadata (traffic.go)
}

func newGRPCRequest() *grpcRequest {
	g := &grpcRequest{r: newInferRequest()}
	g.encode = g.encodeOutputs
	return g
}

func (g *grpcRequest) release() {
	g.r.release()
	g.req, g.resp, g.deadline, g.ctx = nil, nil, time.Time{}, nil
}

// call is the codec's call (infer.go). The queue timeout is the request's "timeout"
// parameter or the call's deadline, whichever is sooner.
func (g *grpcRequest) call() ([]bridge.Tensor, engines.RunOptions, time.Duration, int) {
	r := g.r
	timeout := r.timeout
	if !g.deadline.IsZero() {
		left := max(time.Until(g.deadline), time.Microsecond)
		if timeout <= 0 || left < timeout {
			timeout = left
		}
	}
	return r.tensors, r.run, timeout, rowsOf(r.model, r.tensors)
}

func (g *grpcRequest) encoder() func([]bridge.Tensor) error { return g.encode }

// deadlines is the codec's deadlines (infer.go): the call's deadline among them.
func (g *grpcRequest) deadlines() *deadline {
	g.r.dl.call = g.deadline
	return &g.r.dl
}

// decodeRequest is the codec's decode: g.req for m.
func (g *grpcRequest) decodeRequest(m Model) error {
	r, req := g.r, g.req
	ins := m.Inputs()
	r.reset(len(ins))
	if req.Id != "" {
		if len(req.Id) > maxIDLen {
			return badRequest("id is longer than %d bytes: %q", maxIDLen, clip(req.Id, 32))
		}
		r.id, r.hasID = append(r.id[:0], req.Id...), true
	}
	rawOut, rawOutGiven, err := g.decodeParams(m)
	if err != nil {
		return err
	}
	raw := len(req.RawInputContents) > 0
	inline := len(req.Inputs) // the inputs not in shared memory
	for _, in := range req.Inputs {
		if in != nil && hasShmParam(in.Parameters) {
			inline--
		}
	}
	if raw && len(req.RawInputContents) != inline {
		return badRequest("raw_input_contents has %d entries for %d inputs not in shared memory: give one per input, in the order of inputs",
			len(req.RawInputContents), inline)
	}
	g.rawNext = 0
	for i, in := range req.Inputs {
		if err := g.decodeInput(i, in, ins, raw); err != nil {
			return err
		}
	}
	if err := r.checkGiven(m, ins); err != nil {
		return err
	}
	if err := r.checkBatch(m, ins); err != nil {
		return err
	}
	outs := m.Outputs()
	for _, o := range req.Outputs {
		k := bridge.IOIndex(outs, o.Name)
		if k < 0 {
			return badRequest("unknown output %q (model outputs: %s)", clip(o.Name, 100), bridge.IONames(outs))
		}
		for _, seen := range r.outputs {
			if seen == k {
				return badRequest("output %q requested more than once", outs[k].Name)
			}
		}
		for name := range o.Parameters {
			switch name {
			case "classification":
				return badRequest("output %q: the classification extension is not supported", outs[k].Name)
			case "binary_data":
				// Triton's HTTP per-output choice; over gRPC the request's form (or
				// binary_data_output) decides for every output, as the protocol allows no mix.
				if _, ok := o.Parameters[name].GetParameterChoice().(*inference.InferParameter_BoolParam); !ok {
					return badRequest(`output %q: parameter "binary_data" must be a bool_param, got %s`, outs[k].Name, paramKind(o.Parameters[name]))
				}
			}
		}
		r.outputs = append(r.outputs, k)
		ref, ok, err := r.shm.shmRefGRPC(o.Parameters, "output", outs[k].Name)
		if err != nil {
			return err
		}
		if err := r.shmOutput(outs[k].Name, ref, ok); err != nil {
			return err
		}
	}
	g.raw = raw
	if rawOutGiven {
		g.raw = rawOut
	}
	for _, k := range g.outputIndices(len(outs)) {
		if !typedDType(outs[k].DType) {
			g.raw = true
		}
	}
	r.model = m
	return nil
}

// outputIndices are the indices of the outputs the response carries, in its order: those
// the request asked for, or all n.
func (g *grpcRequest) outputIndices(n int) []int {
	if len(g.r.outputs) > 0 {
		return g.r.outputs
	}
	for len(g.all) < n {
		g.all = append(g.all, len(g.all))
	}
	return g.all[:n]
}

// decodeParams reads the request parameters policyd knows, with the rules of the HTTP codecs:
// the scheduling ones ("priority", "timeout", "seed": int64_param >= 0 or uint64_param), the
// sequence ones when m keeps sequences ("sequence_id": a non-zero int64_param or uint64_param,
// or a non-empty string_param; "sequence_start", "sequence_end": bool_param), and
// "binary_data_output" (bool_param). Others are ignored, as over HTTP.
func (g *grpcRequest) decodeParams(m Model) (rawOut, rawOutGiven bool, err error) {
	r, params := g.r, g.req.Parameters
	if len(params) == 0 {
		return false, false, nil
	}
	if p, ok := params["binary_data_output"]; ok {
		b, ok := p.GetParameterChoice().(*inference.InferParameter_BoolParam)
		if !ok {
			return false, false, badRequest(`parameter "binary_data_output" must be a bool_param, got %s`, paramKind(p))
		}
		rawOut, rawOutGiven = b.BoolParam, true
	}
	if err := g.decodeSequence(m); err != nil {
		return false, false, err
	}
	for _, sp := range schedulingParams {
		p, ok := params[sp.name]
		if !ok {
			continue
		}
		n, err := uintParam(sp.name, p)
		if err != nil {
			return false, false, err
		}
		if n > sp.max {
			return false, false, badRequest(`parameter %q is %d, more than its maximum %d`, sp.name, n, sp.max)
		}
		if n < sp.min {
			return false, false, badRequest(`parameter %q is %d, less than its minimum %d`, sp.name, n, sp.min)
		}
		r.setScheduling(sp.name, n)
	}
	return rawOut, rawOutGiven, nil
}

// uintParam reads an unsigned integer parameter: a uint64_param or a non-negative int64_param.
func uintParam(name string, p *inference.InferParameter) (uint64, error) {
	switch v := p.GetParameterChoice().(type) {
	case *inference.InferParameter_Uint64Param:
		return v.Uint64Param, nil
	case *inference.InferParameter_Int64Param:
		if v.Int64Param < 0 {
			return 0, badRequest("parameter %q must be an unsigned integer, got %d", name, v.Int64Param)
		}
		return uint64(v.Int64Param), nil
	}
	return 0, badRequest("parameter %q must be an unsigned integer (int64_param or uint64_param), got %s", name, paramKind(p))
}

// paramKind names the value kind of an InferParameter for messages.
func paramKind(p *inference.InferParameter) string {
	switch p.GetParameterChoice().(type) {
	case *inference.InferParameter_BoolParam:
		return "a bool_param"
	case *inference.InferParameter_Int64Param:
		return "an int64_param"
	case *inference.InferParameter_Uint64Param:
		return "a uint64_param"
	case *inference.InferParameter_StringParam:
		return "a string_param"
	case *inference.InferParameter_DoubleParam:
		return "a double_param"
	}
	return "no value"
}

// decodeSequence reads Triton's sequence parameters as decodeSequence does over HTTP.
func (g *grpcRequest) decodeSequence(m Model) error {
	seqs := sequencesOf(m)
	if seqs == nil {
		return nil
	}
	r, params := g.r, g.req.Parameters
	idP, hasID := params["sequence_id"]
	startP, hasStart := params["sequence_start"]
	endP, hasEnd := params["sequence_end"]
	if !hasID {
		if hasStart || hasEnd {
			return badRequest(`parameters "sequence_start" and "sequence_end" need a "sequence_id"`)
		}
		return nil
	}
	var id engines.SequenceID
	switch v := idP.GetParameterChoice().(type) {
	case *inference.InferParameter_Int64Param:
		if v.Int64Param <= 0 {
			return badRequest(`parameter "sequence_id" must be a non-zero unsigned 64-bit integer or a non-empty string, got %d`, v.Int64Param)
		}
		id.Num = uint64(v.Int64Param)
	case *inference.InferParameter_Uint64Param:
		if v.Uint64Param == 0 {
			return badRequest(`parameter "sequence_id" must be a non-zero unsigned 64-bit integer or a non-empty string, got 0`)
		}
		id.Num = v.Uint64Param
	case *inference.InferParameter_StringParam:
		if len(v.StringParam) > maxIDLen {
			return badRequest(`parameter "sequence_id" is longer than %d bytes: %q`, maxIDLen, clip(v.StringParam, 32))
		}
		if v.StringParam == "" {
			return badRequest(`parameter "sequence_id" must not be empty`)
		}
		id.Str = v.StringParam
	default:
		return badRequest(`parameter "sequence_id" must be an int64_param, uint64_param or string_param, got %s`, paramKind(idP))
	}
	for _, p := range []struct {
		name string
		p    *inference.InferParameter
		dst  *bool
	}{{"sequence_start", startP, &r.run.Sequence.Start}, {"sequence_end", endP, &r.run.Sequence.End}} {
		if p.p == nil {
			continue
		}
		b, ok := p.p.GetParameterChoice().(*inference.InferParameter_BoolParam)
		if !ok {
			return badRequest("parameter %q must be a bool_param, got %s", p.name, paramKind(p.p))
		}
		*p.dst = b.BoolParam
	}
	r.run.Sequence.Store, r.run.Sequence.ID = seqs, id
	return nil
}

// decodeInput checks input i of the request against the signature and takes its data.
func (g *grpcRequest) decodeInput(i int, in *inference.ModelInferRequest_InferInputTensor, ins []bridge.IOInfo, raw bool) error {
	r := g.r
	if in == nil {
		return badRequest("inputs[%d] is empty", i)
	}
	k := bridge.IOIndex(ins, in.Name)
	if k < 0 {
		return badRequest("unknown input %q (model inputs: %s)", clip(in.Name, 100), bridge.IONames(ins))
	}
	info := &ins[k]
	if err := r.checkSupplied(k, info.Name); err != nil {
		return err
	}
	if r.given[k] {
		return badRequest("input %q given more than once", info.Name)
	}
	shm, hasShm, err := r.shm.shmRefGRPC(in.Parameters, "input", info.Name)
	if err != nil {
		return err
	}
	if in.Datatype != info.DType.String() {
		return badRequest("input %q: expected datatype %s, got %s", info.Name, info.DType, clip(in.Datatype, 32))
	}
	if info.DType.Size() == 0 {
		return badRequest("input %q: datatype %s is not supported", info.Name, info.DType)
	}
	if len(in.Shape) > bridge.MaxRank {
		return badRequest("input %q: expected shape %s, got rank %d", info.Name, formatShape(info.Shape), len(in.Shape))
	}
	shape := r.shapes[k][:0]
	for _, d := range in.Shape {
		if d < 0 {
			return badRequest("input %q: shape %s has a negative dimension", info.Name, formatShape(in.Shape))
		}
		shape = append(shape, d)
	}
	if !shapeMatches(info.Shape, shape) {
		return badRequest("input %q: expected shape %s, got %s", info.Name, formatShape(info.Shape), formatShape(shape))
	}
	count, ok := numElements(shape)
	if !ok {
		return badRequest("input %q: shape %s has too many elements", info.Name, formatShape(shape))
	}
	if hasShm {
		if in.Contents != nil {
			return badRequest(`input %q: "contents" given with "shared_memory_region"; send one`, info.Name)
		}
		return r.shmInput(k, info, shape, shm)
	}
	if raw {
		if in.Contents != nil {
			return badRequest("input %q: contents given with raw_input_contents: send every input one way", info.Name)
		}
		i := g.rawNext
		g.rawNext++
		return g.rawInput(k, info, shape, g.req.RawInputContents[i], i)
	}
	if in.Contents == nil {
		return badRequest(`input %q: no data: give its "contents" or raw_input_contents for every input`, info.Name)
	}
	return g.typedInput(k, info, shape, count, in.Contents)
}

// rawInput takes raw_input_contents[i] as input k: a view when aligned for the datatype
// (the message lives until the response is sent), else a copy into the input's buffer.
func (g *grpcRequest) rawInput(k int, info *bridge.IOInfo, shape []int64, data []byte, i int) error {
	r := g.r
	want, _ := bridge.ByteSize(info.DType, shape)
	if int64(len(data)) != want {
		return badRequest("input %q: raw_input_contents[%d] has %d bytes, but shape %s of %s takes %d bytes",
			info.Name, i, len(data), formatShape(shape), info.DType, want)
	}
	return r.rawTensor(k, info, shape, data)
}

// typedDType reports whether a datatype has a typed field in InferTensorContents.
func typedDType(dt bridge.DType) bool {
	switch dt {
	case bridge.Float16, bridge.BFloat16, bridge.String, bridge.Undefined:
		return false
	}
	return true
}

// contentsField names the field of InferTensorContents a datatype uses.
func contentsField(dt bridge.DType) string {
	switch dt {
	case bridge.Bool:
		return "bool_contents"
	case bridge.Int8, bridge.Int16, bridge.Int32:
		return "int_contents"
	case bridge.Int64:
		return "int64_contents"
	case bridge.Uint8, bridge.Uint16, bridge.Uint32:
		return "uint_contents"
	case bridge.Uint64:
		return "uint64_contents"
	case bridge.Float32:
		return "fp32_contents"
	case bridge.Float64:
		return "fp64_contents"
	}
	return ""
}

// contentsCounts are the element counts of every field of c, in field order.
func contentsCounts(c *inference.InferTensorContents) [8]int {
	return [8]int{len(c.BoolContents), len(c.IntContents), len(c.Int64Contents), len(c.UintContents),
		len(c.Uint64Contents), len(c.Fp32Contents), len(c.Fp64Contents), len(c.BytesContents)}
}

var contentsFields = [8]string{"bool_contents", "int_contents", "int64_contents", "uint_contents",
	"uint64_contents", "fp32_contents", "fp64_contents", "bytes_contents"}

// typedInput converts the typed contents of input k into its buffer, checking the field
// against the datatype, the count against the shape and every value against the datatype's
// range.
func (g *grpcRequest) typedInput(k int, info *bridge.IOInfo, shape []int64, count int64, c *inference.InferTensorContents) error {
	r := g.r
	dt := info.DType
	field := contentsField(dt)
	if field == "" {
		return badRequest("input %q: datatype %s has no typed contents field: send it in raw_input_contents", info.Name, dt)
	}
	n := int64(0)
	for f, cnt := range contentsCounts(c) {
		if cnt == 0 {
			continue
		}
		if contentsFields[f] != field {
			return badRequest("input %q: %s given for datatype %s, which takes %s", info.Name, contentsFields[f], dt, field)
		}
		n = int64(cnt)
	}
	if n != count {
		return badRequest("input %q: shape %s needs %d elements, %s has %d", info.Name, formatShape(shape), count, field, n)
	}
	size := dt.Size()
	buf := r.bufs[k]
	if need := int(count) * size; cap(buf) < need {
		buf = make([]byte, need)
	} else {
		buf = buf[:need]
	}
	r.bufs[k] = buf
	le := binary.LittleEndian
	switch dt {
	case bridge.Bool:
		for i, v := range c.BoolContents {
			buf[i] = 0
			if v {
				buf[i] = 1
			}
		}
	case bridge.Int8, bridge.Int16, bridge.Int32:
		lo, hi := int32(math.MinInt32), int32(math.MaxInt32)
		switch dt {
		case bridge.Int8:
			lo, hi = math.MinInt8, math.MaxInt8
		case bridge.Int16:
			lo, hi = math.MinInt16, math.MaxInt16
		}
		for i, v := range c.IntContents {
			if v < lo || v > hi {
				return badRequest("input %q: element %d: %d is out of range for %s", info.Name, i, v, dt)
			}
			switch dt {
			case bridge.Int8:
				buf[i] = byte(v)
			case bridge.Int16:
				le.PutUint16(buf[2*i:], uint16(v))
			default:
				le.PutUint32(buf[4*i:], uint32(v))
			}
		}
	case bridge.Int64:
		for i, v := range c.Int64Contents {
			le.PutUint64(buf[8*i:], uint64(v))
		}
	case bridge.Uint8, bridge.Uint16, bridge.Uint32:
		hi := uint32(math.MaxUint32)
		switch dt {
		case bridge.Uint8:
			hi = math.MaxUint8
		case bridge.Uint16:
			hi = math.MaxUint16
		}
		for i, v := range c.UintContents {
			if v > hi {
				return badRequest("input %q: element %d: %d is out of range for %s", info.Name, i, v, dt)
			}
			switch dt {
			case bridge.Uint8:
				buf[i] = byte(v)
			case bridge.Uint16:
				le.PutUint16(buf[2*i:], uint16(v))
			default:
				le.PutUint32(buf[4*i:], v)
			}
		}
	case bridge.Uint64:
		for i, v := range c.Uint64Contents {
			le.PutUint64(buf[8*i:], v)
		}
	case bridge.Float32:
		for i, v := range c.Fp32Contents {
			le.PutUint32(buf[4*i:], math.Float32bits(v))
		}
	case bridge.Float64:
		for i, v := range c.Fp64Contents {
			le.PutUint64(buf[8*i:], math.Float64bits(v))
		}
	}
	r.tensors[k] = bridge.Tensor{DType: dt, Shape: shape, Data: buf}
	r.given[k] = true
	return nil
}

// encodeOutputs is the callback passed to Model.Do: on the engine's worker, while the outputs
// are valid, it copies them into the response (raw or typed, see grpcRequest).
func (g *grpcRequest) encodeOutputs(outs []bridge.Tensor) error {
	r := g.r
	r.dl.markLate()
	m := r.model
	infos := m.Outputs()
	if len(outs) != len(infos) {
		return fmt.Errorf("engine returned %d outputs, the signature has %d", len(outs), len(infos))
	}
	idx := g.outputIndices(len(outs))
	rank := 0
	for _, k := range idx {
		rank += len(outs[k].Shape)
	}
	resp, tensors, dims := newResponse(len(idx), rank, g.raw)
	resp.ModelName, resp.ModelVersion, resp.Id = m.Name(), m.Version(), g.req.Id
	for i, k := range idx {
		t := &outs[k]
		if err := checkOutput(infos[k].Name, t); err != nil {
			return err
		}
		o := &tensors[i]
		o.Name, o.Datatype = infos[k].Name, t.DType.String()
		if len(t.Shape) > 0 {
			start := len(dims)
			dims = append(dims, t.Shape...)
			o.Shape = dims[start:len(dims):len(dims)]
		}
		if so := r.outShm(i); so != nil {
			// written to shared memory: no data; its raw_output_contents entry, if any, is empty
			if err := writeShm(infos[k].Name, t, so); err != nil {
				return err
			}
			o.Parameters = shmOutParams(so, len(t.Data))
		} else if g.raw {
			resp.RawOutputContents[i] = append([]byte(nil), t.Data...)
		} else {
			o.Contents = typedContents(t)
		}
	}
	if r.dl.fallback != "" || r.dl.late > 0 {
		resp.Parameters = deadlineParamsGRPC(&r.dl)
	}
	g.resp = resp
	return nil
}

// responseBlock is a response with up to two outputs of up to eight dimensions in all (a
// policy's action, or action and value) in one allocation instead of five: the message, its
// outputs slice, each output, their shapes and the raw contents slice. grpc-go marshals the
// message after the handler returns and keeps none of it.
type responseBlock struct {
	resp    inference.ModelInferResponse
	ptrs    [blockOutputs]*inference.ModelInferResponse_InferOutputTensor
	tensors [blockOutputs]inference.ModelInferResponse_InferOutputTensor
	raw     [blockOutputs][]byte
	dims    [blockDims]int64
}

const blockOutputs, blockDims = 2, 8

// newResponse makes an empty response with n outputs (tensors[i] is Outputs[i]), room for rank
// dimensions in dims (to be appended), and n raw contents when raw.
func newResponse(n, rank int, raw bool) (*inference.ModelInferResponse, []inference.ModelInferResponse_InferOutputTensor, []int64) {
	var (
		resp    *inference.ModelInferResponse
		tensors []inference.ModelInferResponse_InferOutputTensor
		dims    []int64
	)
	if n <= blockOutputs && rank <= blockDims {
		b := &responseBlock{}
		resp, tensors, dims = &b.resp, b.tensors[:n:n], b.dims[:0:rank]
		resp.Outputs = b.ptrs[:n:n]
		if raw {
			resp.RawOutputContents = b.raw[:n:n]
		}
	} else {
		resp = &inference.ModelInferResponse{Outputs: make([]*inference.ModelInferResponse_InferOutputTensor, n)}
		tensors, dims = make([]inference.ModelInferResponse_InferOutputTensor, n), make([]int64, 0, rank)
		if raw {
			resp.RawOutputContents = make([][]byte, n)
		}
	}
	for i := range tensors {
		resp.Outputs[i] = &tensors[i]
	}
	return resp, tensors, dims
}

// typedContents converts a tensor (checked by checkOutput, of a typedDType) into the typed
// field of its datatype.
func typedContents(t *bridge.Tensor) *inference.InferTensorContents {
	d, le := t.Data, binary.LittleEndian
	n := len(d) / max(t.DType.Size(), 1)
	c := &inference.InferTensorContents{}
	switch t.DType {
	case bridge.Bool:
		c.BoolContents = make([]bool, n)
		for i := range n {
			c.BoolContents[i] = d[i] != 0
		}
	case bridge.Int8:
		c.IntContents = make([]int32, n)
		for i := range n {
			c.IntContents[i] = int32(int8(d[i]))
		}
	case bridge.Int16:
		c.IntContents = make([]int32, n)
		for i := range n {
			c.IntContents[i] = int32(int16(le.Uint16(d[2*i:])))
		}
	case bridge.Int32:
		c.IntContents = make([]int32, n)
		for i := range n {
			c.IntContents[i] = int32(le.Uint32(d[4*i:]))
		}
	case bridge.Int64:
		c.Int64Contents = make([]int64, n)
		for i := range n {
			c.Int64Contents[i] = int64(le.Uint64(d[8*i:]))
		}
	case bridge.Uint8:
		c.UintContents = make([]uint32, n)
		for i := range n {
			c.UintContents[i] = uint32(d[i])
		}
	case bridge.Uint16:
		c.UintContents = make([]uint32, n)
		for i := range n {
			c.UintContents[i] = uint32(le.Uint16(d[2*i:]))
		}
	case bridge.Uint32:
		c.UintContents = make([]uint32, n)
		for i := range n {
			c.UintContents[i] = le.Uint32(d[4*i:])
		}
	case bridge.Uint64:
		c.Uint64Contents = make([]uint64, n)
		for i := range n {
			c.Uint64Contents[i] = le.Uint64(d[8*i:])
		}
	case bridge.Float32:
		c.Fp32Contents = make([]float32, n)
		for i := range n {
			c.Fp32Contents[i] = math.Float32frombits(le.Uint32(d[4*i:]))
		}
	case bridge.Float64:
		c.Fp64Contents = make([]float64, n)
		for i := range n {
			c.Fp64Contents[i] = math.Float64frombits(le.Uint64(d[8*i:]))
		}
	}
	return c
}
