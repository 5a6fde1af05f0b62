package server

import (
	"encoding/binary"
	"math"
	"strconv"
	"time"
	"unicode/utf8"
	"unsafe"

	"github.com/valyala/fastjson"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// inferRequest is a decoded inference request: one tensor per model input, in the model's
// order, whose data live in buffers the request owns and reuses (inferRequest values are
// pooled). Little-endian byte order is the native order of every host policyd runs on
// (amd64, arm64), so the buffers go to the engine as they are.
type inferRequest struct {
	id      []byte // the request's "id", unescaped
	hasID   bool
	tensors []bridge.Tensor // one per model input
	shapes  [][bridge.MaxRank]int64
	bufs    [][]byte
	given   []bool
	outputs []int // requested outputs (indices into Model.Outputs), in request order; empty = all
	num     []byte
	str     []byte // scratch for unescaped names

	// The binary tensor data extension (binary.go).
	bin     []byte // the body after the JSON (a view of the request body, valid during the handler)
	binOff  int    // bytes of bin taken by the binary inputs decoded so far
	binAll  bool   // request parameter "binary_data_output": every output in binary
	outBin  []int8 // per entry of outputs: its "binary_data" (-1 not given, 0 false, 1 true)
	jsonLen int    // length of the JSON part of out when binOut
	binOut  bool   // out is a JSON part followed by binary outputs

	// Scheduling parameters (params.go) and the step of a stateful sequence (sequence.go:
	// run.Sequence, whose Store is set when the request belongs to a sequence).
	run     engines.RunOptions
	timeout time.Duration // the request's own queue timeout; 0: none
	dl      deadline      // its deadline and how its answer turned out (fallback.go)

	shm shmUse // the shared memory regions it reads and writes (shm.go)

	// The request as its transport gave it (infer): the value of the
	// Inference-Header-Content-Length header (nil: none) and the body, valid during the handler.
	hdr, body []byte
	episode   []byte // the X-Episode-ID header (traffic.go), valid during the handler
	key       []byte // scratch of routeKey for an episode ID with escapes (traffic.go)

	// Set by decodeRequest for the encoding callback, which is bound once (no closure per request).
	model  Model
	out    []byte
	encode func([]bridge.Tensor) error
}

func newInferRequest() *inferRequest {
	r := &inferRequest{}
	r.encode = r.encodeOutputs
	return r
}

func (r *inferRequest) reset(nIn int) {
	r.id, r.hasID = r.id[:0], false
	// shapes, bufs and given keep the most inputs seen; tensors is cut to nIn (a pooled request
	// serves models with different numbers of inputs in turn).
	for len(r.shapes) < nIn {
		r.shapes = append(r.shapes, [bridge.MaxRank]int64{})
		r.bufs = append(r.bufs, nil)
		r.given = append(r.given, false)
	}
	if cap(r.tensors) < nIn {
		r.tensors = make([]bridge.Tensor, nIn)
	}
	r.tensors = r.tensors[:nIn] // no append(make(...)...): the race build allocates for it
	for i := range r.tensors {
		r.tensors[i] = bridge.Tensor{}
		r.given[i] = false
	}
	r.outputs = r.outputs[:0]
	r.outBin = r.outBin[:0]
	r.bin, r.binOff, r.binAll = nil, 0, false
	r.jsonLen, r.binOut = 0, false
	r.run, r.timeout = engines.RunOptions{}, 0
	r.shm.reset()
}

// maxRetained bounds the buffers a pooled request keeps between requests.
const maxRetained = 1 << 20

// release drops what the request must not keep (references to the model, large buffers).
func (r *inferRequest) release() {
	r.model = nil
	r.run = engines.RunOptions{}                         // the sequence store, the trace span
	r.shm.releaseAll()                                   // the request has ended: its regions may be unmapped
	r.bin, r.hdr, r.body, r.episode = nil, nil, nil, nil // views of the request, which fasthttp reuses
	r.dl.reset()
	for i := range r.tensors {
		r.tensors[i] = bridge.Tensor{}
	}
	for i, b := range r.bufs {
		if cap(b) > maxRetained {
			r.bufs[i] = nil
		}
	}
	if cap(r.out) > maxRetained {
		r.out = nil
	}
	if cap(r.id) > maxRetained || cap(r.str) > maxRetained {
		r.id, r.str = nil, nil
	}
}

// decodeRequest is the codec's decode (infer.go): the body its transport gave r, split at
// the Inference-Header-Content-Length header into JSON and binary tensor data, decoded for m
// (decodeParts).
func (r *inferRequest) decodeRequest(m Model) error {
	js, bin, err := splitBody(r.hdr, r.body)
	if err != nil {
		return err
	}
	if err := r.decodeParts(nil, js, bin, m); err != nil {
		return err
	}
	r.model = m
	return nil
}

// call is the codec's call (infer.go).
func (r *inferRequest) call() ([]bridge.Tensor, engines.RunOptions, time.Duration, int) {
	return r.tensors, r.run, r.timeout, rowsOf(r.model, r.tensors)
}

// encoder is the codec's encoder (infer.go): encodeOutputs, bound once.
func (r *inferRequest) encoder() func([]bridge.Tensor) error { return r.encode }

// deadlines is the codec's deadlines (infer.go).
func (r *inferRequest) deadlines() *deadline { return &r.dl }

// maxIDLen bounds the string ids a request carries: its "id" and a string "sequence_id".
const maxIDLen = 256

// decode reads a JSON-only body (no binary tensor data) and fills r with the inputs of m; see
// decodeParts.
func (r *inferRequest) decode(p *fastjson.Parser, body []byte, m Model) error {
	return r.decodeParts(p, body, nil, m)
}

// decodeParts reads the JSON request js and fills r with the inputs of m, checking everything
// against m's signature: every input present once and no other, datatype, shape, element
// count, and every element's JSON type and range. bin is the body after the JSON (the binary
// tensor data extension, see binary.go): the inputs with "binary_data_size" take their bytes
// from it in order, and together they must take all of it. Binary inputs may be views of bin,
// so bin must stay valid and unchanged until the tensors are used. Every error is a
// *requestError naming the problem and, where there is one, the input.
//
// The JSON is checked whole first (scanJSON) and then read in place: no tree of it is built,
// an input's element count comes from its shape and is checked against its "data" before a
// value is converted or its buffer sized, so the memory a request takes is its tensors, never
// a multiple of its body. The parser argument is not used (it was fastjson's; the tests keep
// passing one).
func (r *inferRequest) decodeParts(_ *fastjson.Parser, js, bin []byte, m Model) error {
	ins := m.Inputs()
	r.reset(len(ins))
	r.bin = bin
	var vals [len(inferKeys)]jsonValue
	root, err := scanJSON(js, inferKeys[:], vals[:])
	if err != nil {
		return err
	}
	if k := root.kind(); k != jsonObject {
		return badRequest("request body must be a JSON object, got %s", k)
	}
	idV, inputs, outputs, params := vals[0], vals[1], vals[2], vals[3]
	if idV != nil {
		if idV.kind() != jsonString {
			return badRequest(`"id" must be a string, got %s`, idV.kind())
		}
		id, ok := unquoteMax(r.id[:0], idV, maxIDLen)
		if !ok {
			return badRequest(`"id" is longer than %d bytes: %q`, maxIDLen, clipBytes(idV.raw(), 32))
		}
		r.id, r.hasID = id, true
	}
	if params != nil {
		if params.kind() != jsonObject {
			return badRequest(`"parameters" must be an object, got %s`, params.kind())
		}
		if v := params.get("binary_data_output"); v != nil {
			all, ok := jsonBool(v)
			if !ok {
				return badRequest(`"parameters": "binary_data_output" must be true or false, got %s`, v.kind())
			}
			r.binAll = all
		}
		if err := r.decodeSequence(params, m); err != nil {
			return err
		}
		if err := r.decodeScheduling(params); err != nil {
			return err
		}
	}
	if inputs == nil {
		return badRequest(`missing "inputs"`)
	}
	if inputs.kind() != jsonArray {
		return badRequest(`"inputs" must be an array, got %s`, inputs.kind())
	}
	for i, it := 0, inputs.iter(); ; i++ {
		v, ok := it.next()
		if !ok {
			break
		}
		if err := r.decodeInput(i, v, ins); err != nil {
			return err
		}
	}
	if err := r.checkGiven(m, ins); err != nil {
		return err
	}
	if r.binOff != len(r.bin) {
		return r.binaryLeftover()
	}
	if err := r.checkBatch(m, ins); err != nil {
		return err
	}
	if outputs != nil {
		return r.decodeOutputs(outputs, m.Outputs())
	}
	return nil
}

// checkGiven checks that the request gave every input of the signature ins but the state
// and control inputs of its sequence, which the server supplies, and that a request to a
// model with control inputs is a step of a sequence (checkControls). Every codec checks it
// once its inputs are decoded.
func (r *inferRequest) checkGiven(m Model, ins []bridge.IOInfo) error {
	if err := r.checkControls(m, ins); err != nil {
		return err
	}
	for k := range ins {
		if !r.given[k] && !r.isState(k) {
			return badRequest("missing input %q", ins[k].Name)
		}
	}
	return nil
}

// checkBatch checks the batch dimensions of the decoded inputs: for a batchable model, every
// input with a batch dimension has the same batch size; a request of a sequence has batch
// size 1. Every codec checks it after checkGiven.
func (r *inferRequest) checkBatch(m Model, ins []bridge.IOInfo) error {
	if m.Batchable() {
		first := -1
		for k := range ins {
			if ins[k].BatchDim != 0 || len(r.tensors[k].Shape) == 0 {
				continue
			}
			if first < 0 {
				first = k
				continue
			}
			if a, b := r.tensors[first].Shape[0], r.tensors[k].Shape[0]; a != b {
				return badRequest("input %q: batch size %d differs from batch size %d of input %q",
					ins[k].Name, b, a, ins[first].Name)
			}
		}
	}
	if r.run.Sequence.Store != nil {
		return r.checkSequenceBatch(ins)
	}
	return nil
}

// inferKeys are the members of a request decodeParts reads.
var inferKeys = [...]string{"id", "inputs", "outputs", "parameters"}

func (r *inferRequest) decodeInput(pos int, v jsonValue, ins []bridge.IOInfo) error {
	if v.kind() != jsonObject {
		return badRequest("inputs[%d] must be an object, got %s", pos, v.kind())
	}
	var nameV, dtypeV, shapeV, dataV, paramsV jsonValue // the first of a repeated key counts
	leaves := int64(0)                                  // of dataV
	for it := v.iter(); ; {
		k, val, n, ok := it.memberData("data")
		if !ok {
			break
		}
		switch {
		case nameV == nil && k.is("name"):
			nameV = val
		case dtypeV == nil && k.is("datatype"):
			dtypeV = val
		case shapeV == nil && k.is("shape"):
			shapeV = val
		case dataV == nil && k.is("data"):
			dataV, leaves = val, n
		case paramsV == nil && k.is("parameters"):
			paramsV = val
		}
	}
	if nameV == nil {
		return badRequest(`inputs[%d]: missing "name"`, pos)
	}
	if nameV.kind() != jsonString {
		return badRequest(`inputs[%d]: "name" must be a string, got %s`, pos, nameV.kind())
	}
	k := r.inputIndex(nameV, ins)
	if k < 0 {
		return badRequest("unknown input %q (model inputs: %s)", clipBytes(nameV.raw(), 100), bridge.IONames(ins))
	}
	info := &ins[k]
	if err := r.checkSupplied(k, info.Name); err != nil {
		return err
	}
	if r.given[k] {
		return badRequest("input %q given more than once", info.Name)
	}
	binSize := int64(-1) // "binary_data_size", when given
	var shm shmRef       // the shared memory it names, when hasShm
	hasShm := false
	if paramsV != nil {
		if paramsV.kind() != jsonObject {
			return badRequest(`input %q: "parameters" must be an object, got %s`, info.Name, paramsV.kind())
		}
		if v := paramsV.get("binary_data_size"); v != nil {
			var err error
			if binSize, err = r.binarySize(v, info); err != nil {
				return err
			}
			if dataV != nil {
				return badRequest(`input %q: both "data" and "binary_data_size" given; send one`, info.Name)
			}
		}
		var err error
		if shm, hasShm, err = r.shmRefJSON(paramsV, "input", info.Name); err != nil {
			return err
		}
		if hasShm && (dataV != nil || binSize >= 0) {
			return badRequest(`input %q: "shared_memory_region" given with "data" or "binary_data_size"; send one`, info.Name)
		}
	}

	if dtypeV == nil {
		return badRequest(`input %q: missing "datatype"`, info.Name)
	}
	if dtypeV.kind() != jsonString {
		return badRequest(`input %q: "datatype" must be a string, got %s`, info.Name, dtypeV.kind())
	}
	if binSize >= 0 && dtypeV.is("BYTES") {
		return badRequest("input %q: BYTES tensors are not supported as binary data", info.Name)
	}
	if !dtypeV.is(info.DType.String()) {
		return badRequest("input %q: expected datatype %s, got %s", info.Name, info.DType, clipBytes(dtypeV.raw(), 32))
	}
	if binSize < 0 && !hasShm && !jsonDType(info.DType) {
		if info.DType.Size() > 0 {
			return badRequest(`input %q: datatype %s is not supported in JSON requests; send it as binary data ("binary_data_size")`, info.Name, info.DType)
		}
		return badRequest("input %q: datatype %s is not supported in JSON requests", info.Name, info.DType)
	}

	if shapeV == nil {
		return badRequest(`input %q: missing "shape"`, info.Name)
	}
	if shapeV.kind() != jsonArray {
		return badRequest(`input %q: "shape" must be an array, got %s`, info.Name, shapeV.kind())
	}
	if rank := shapeV.len(); rank > bridge.MaxRank {
		return badRequest("input %q: expected shape %s, got rank %d", info.Name, formatShape(info.Shape), rank)
	}
	shape := r.shapes[k][:0]
	for i, it := 0, shapeV.iter(); ; i++ {
		d, ok := it.next()
		if !ok {
			break
		}
		tok, err := numberToken(d)
		if err != nil || !isInteger(tok) || tok[0] == '-' {
			return badRequest(`input %q: "shape" must be an array of non-negative integers`, info.Name)
		}
		n, err := strconv.ParseInt(tokenString(tok), 10, 64)
		if err != nil {
			return badRequest("input %q: dimension %d out of range", info.Name, i)
		}
		shape = append(shape, n)
	}
	if !shapeMatches(info.Shape, shape) {
		return shapeError(info, shape)
	}
	count, ok := numElements(shape)
	if !ok {
		return badRequest("input %q: shape %s has too many elements", info.Name, formatShape(shape))
	}

	if binSize >= 0 {
		return r.decodeBinaryInput(k, info, shape, count, binSize)
	}
	if hasShm {
		return r.shmInput(k, info, shape, shm)
	}
	if dataV == nil {
		return badRequest(`input %q: missing "data"`, info.Name)
	}
	if dataV.kind() != jsonArray {
		return badRequest(`input %q: "data" must be an array, got %s`, info.Name, dataV.kind())
	}
	// The values were counted when the input was read, none converted: the buffer is sized
	// for values that are there.
	if leaves != count {
		return badRequest("input %q: shape %s needs %d elements, data has %d", info.Name, formatShape(shape), count, leaves)
	}
	size := info.DType.Size()
	buf := r.bufs[k]
	if need := int(count) * size; cap(buf) < need {
		buf = make([]byte, need)
	} else {
		buf = buf[:need]
	}
	r.bufs[k] = buf
	if err := r.fill(dataV, info, buf); err != nil {
		return err
	}
	r.tensors[k] = bridge.Tensor{DType: info.DType, Shape: shape, Data: buf}
	r.given[k] = true
	return nil
}

// inputIndex returns the index of the input the string value name names, -1 when none does.
func (r *inferRequest) inputIndex(name jsonValue, ins []bridge.IOInfo) int {
	longest := 0
	for i := range ins {
		longest = max(longest, len(ins[i].Name))
	}
	s, ok := unquoteMax(r.str[:0], name, longest)
	r.str = s
	if !ok {
		return -1
	}
	return bridge.IOIndex(ins, s)
}

// unquoteMax appends the text of the string value v to dst, unless it is longer than limit
// bytes: then ok is false and dst holds some of it at most.
func unquoteMax(dst []byte, v jsonValue, limit int) (_ []byte, ok bool) {
	raw := v.raw()
	if !hasEscape(raw) {
		if len(raw) > limit {
			return dst, false
		}
		return append(dst, raw...), true
	}
	if len(raw) > 6*limit { // an escape takes at most 6 bytes for one byte at least
		return dst, false
	}
	start := len(dst)
	dst = appendUnquoted(dst, raw)
	return dst, len(dst)-start <= limit
}

// fill converts the leaves of the array v (flat or nested, row-major) into buf, which holds as
// many elements as the caller counted.
func (r *inferRequest) fill(v jsonValue, info *bridge.IOInfo, buf []byte) error {
	n := len(buf) / max(info.DType.Size(), 1)
	idx := 0
	for i := 1; i < len(v)-1; {
		switch v[i] {
		case ' ', '\t', '\n', '\r', ',', '[', ']':
			i++
			continue
		}
		end := skipValue(v, i)
		if idx >= n {
			return badRequest("input %q: %d elements expected, data has more", info.Name, n)
		}
		if err := r.putElement(v[i:end], info, buf, idx); err != nil {
			return err
		}
		idx++
		i = end
	}
	if idx != n {
		return badRequest("input %q: %d elements expected, data has %d", info.Name, n, idx)
	}
	return nil
}

// putElement converts one JSON value to element i of buf.
func (r *inferRequest) putElement(e jsonValue, info *bridge.IOInfo, buf []byte, i int) error {
	dt := info.DType
	if dt == bridge.Bool {
		switch e.kind() {
		case jsonTrue:
			buf[i] = 1
		case jsonFalse:
			buf[i] = 0
		default:
			return badRequest("input %q: element %d: expected true or false, got %s", info.Name, i, e.kind())
		}
		return nil
	}
	tok, err := numberToken(e)
	if err != nil {
		return badRequest("input %q: element %d: %v", info.Name, i, err)
	}
	switch dt {
	case bridge.Float32:
		f, err := strconv.ParseFloat(tokenString(tok), 32)
		if err != nil {
			return badRequest("input %q: element %d: %s is out of range for FP32", info.Name, i, clipBytes(tok, 32))
		}
		binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(float32(f)))
		return nil
	case bridge.Float64:
		f, err := strconv.ParseFloat(tokenString(tok), 64)
		if err != nil {
			return badRequest("input %q: element %d: %s is out of range for FP64", info.Name, i, clipBytes(tok, 32))
		}
		binary.LittleEndian.PutUint64(buf[8*i:], math.Float64bits(f))
		return nil
	}
	if !isInteger(tok) {
		return badRequest("input %q: element %d: expected an integer for %s, got %s", info.Name, i, dt, clipBytes(tok, 32))
	}
	switch dt {
	case bridge.Int8, bridge.Int16, bridge.Int32, bridge.Int64:
		n, err := strconv.ParseInt(tokenString(tok), 10, 8*dt.Size())
		if err != nil {
			return badRequest("input %q: element %d: %s is out of range for %s", info.Name, i, clipBytes(tok, 32), dt)
		}
		switch dt {
		case bridge.Int8:
			buf[i] = byte(n)
		case bridge.Int16:
			binary.LittleEndian.PutUint16(buf[2*i:], uint16(n))
		case bridge.Int32:
			binary.LittleEndian.PutUint32(buf[4*i:], uint32(n))
		default:
			binary.LittleEndian.PutUint64(buf[8*i:], uint64(n))
		}
	case bridge.Uint8, bridge.Uint16, bridge.Uint32, bridge.Uint64:
		n, err := strconv.ParseUint(tokenString(tok), 10, 8*dt.Size())
		if err != nil { // including a minus sign
			return badRequest("input %q: element %d: %s is out of range for %s", info.Name, i, clipBytes(tok, 32), dt)
		}
		switch dt {
		case bridge.Uint8:
			buf[i] = byte(n)
		case bridge.Uint16:
			binary.LittleEndian.PutUint16(buf[2*i:], uint16(n))
		case bridge.Uint32:
			binary.LittleEndian.PutUint32(buf[4*i:], uint32(n))
		default:
			binary.LittleEndian.PutUint64(buf[8*i:], n)
		}
	default:
		return badRequest("input %q: datatype %s is not supported in JSON requests", info.Name, dt)
	}
	return nil
}

// numberToken returns the text of a JSON number, checked against the JSON grammar (the
// scanner delimits NaN, Inf and a leading '+' as numbers, which JSON does not allow; see
// jsonscan.go). The result is a view of v.
func numberToken(v jsonValue) ([]byte, error) {
	if k := v.kind(); k != jsonNumber {
		return nil, &requestError{msg: "expected a number, got " + k.String()}
	}
	if !isJSONNumber(v) {
		return nil, &requestError{msg: "invalid JSON number " + strconv.Quote(string(clipBytes(v, 32)))}
	}
	return v, nil
}

func (r *inferRequest) decodeOutputs(v jsonValue, outs []bridge.IOInfo) error {
	if v.kind() != jsonArray {
		return badRequest(`"outputs" must be an array, got %s`, v.kind())
	}
	for i, it := 0, v.iter(); ; i++ {
		e, ok := it.next()
		if !ok {
			break
		}
		if e.kind() != jsonObject {
			return badRequest("outputs[%d] must be an object, got %s", i, e.kind())
		}
		nameV := e.get("name")
		if nameV == nil {
			return badRequest(`outputs[%d]: missing "name"`, i)
		}
		if nameV.kind() != jsonString {
			return badRequest(`outputs[%d]: "name" must be a string, got %s`, i, nameV.kind())
		}
		k := r.inputIndex(nameV, outs)
		if k < 0 {
			return badRequest("unknown output %q (model outputs: %s)", clipBytes(nameV.raw(), 100), bridge.IONames(outs))
		}
		for _, seen := range r.outputs {
			if seen == k {
				return badRequest("output %q requested more than once", outs[k].Name)
			}
		}
		bin := int8(-1)
		var shm shmRef
		hasShm := false
		if pv := e.get("parameters"); pv != nil {
			if pv.kind() != jsonObject {
				return badRequest(`output %q: "parameters" must be an object, got %s`, outs[k].Name, pv.kind())
			}
			if b := pv.get("binary_data"); b != nil {
				on, ok := jsonBool(b)
				if !ok {
					return badRequest(`output %q: "binary_data" must be true or false, got %s`, outs[k].Name, b.kind())
				}
				bin = 0
				if on {
					bin = 1
				}
			}
			if pv.get("classification") != nil {
				return badRequest("output %q: the classification extension is not supported", outs[k].Name)
			}
			var err error
			if shm, hasShm, err = r.shmRefJSON(pv, "output", outs[k].Name); err != nil {
				return err
			}
		}
		r.outputs = append(r.outputs, k)
		r.outBin = append(r.outBin, bin)
		if err := r.shmOutput(outs[k].Name, shm, hasShm); err != nil {
			return err
		}
	}
	return nil
}

// jsonDType reports whether the JSON decoder handles dt.
func jsonDType(dt bridge.DType) bool {
	switch dt {
	case bridge.Float32, bridge.Float64, bridge.Bool,
		bridge.Int8, bridge.Int16, bridge.Int32, bridge.Int64,
		bridge.Uint8, bridge.Uint16, bridge.Uint32, bridge.Uint64:
		return true
	}
	return false
}

// shapeError says why shape does not match the signature info. A batch of more than one row
// for an input whose dimension 0 is a fixed 1 and not a batch dimension (a model that serves
// batch 1 only: its signature fixes it, or its graph does, see engines.BatchOne) is named as
// such; anything else gets the expected and the given shapes.
func shapeError(info *bridge.IOInfo, shape []int64) error {
	if info.BatchDim < 0 && len(info.Shape) >= 2 && info.Shape[0] == 1 && len(shape) == len(info.Shape) &&
		shape[0] > 1 && shapeMatches(info.Shape[1:], shape[1:]) {
		return badRequest("input %q: batch size %d, but the model serves batch 1 only (its dimension 0 is fixed at 1, shape %s): send one row per request",
			info.Name, shape[0], formatShape(info.Shape))
	}
	return badRequest("input %q: expected shape %s, got %s", info.Name, formatShape(info.Shape), formatShape(shape))
}

// shapeMatches checks a request shape against a signature: same rank, fixed dimensions equal,
// dynamic ones (-1) at least 1.
func shapeMatches(want, got []int64) bool {
	if len(want) != len(got) {
		return false
	}
	for i, w := range want {
		if w < 0 && got[i] < 1 || w >= 0 && got[i] != w {
			return false
		}
	}
	return true
}

// numElements is the element count of a request's shape (bridge.Elements, checked before it
// multiplies), failing beyond 2^31-1 elements, far more than a request body can carry.
func numElements(shape []int64) (int64, bool) {
	n, ok := bridge.Elements(shape)
	if !ok || n > math.MaxInt32 {
		return 0, false
	}
	return n, true
}

// isJSONNumber reports whether b is a number as RFC 8259 defines it:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(b []byte) bool {
	i := 0
	if i < len(b) && b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return false
	}
	if b[i] == '0' {
		i++
	} else if b[i] >= '1' && b[i] <= '9' {
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	} else {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		start := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == start {
			return false
		}
	}
	return i == len(b)
}

// isInteger reports whether a valid JSON number has neither fraction nor exponent.
func isInteger(b []byte) bool {
	for _, c := range b {
		if c == '.' || c == 'e' || c == 'E' {
			return false
		}
	}
	return len(b) > 0
}

// formatShape writes a shape as JSON: [-1,8].
func formatShape(shape []int64) string {
	b := make([]byte, 0, 32)
	b = append(b, '[')
	for i, d := range shape {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, d, 10)
	}
	return string(append(b, ']'))
}

// clip shortens s for an error message, at a character boundary.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "..."
}

// clipBytes is clip for a view of the body: it copies at most n+3 bytes.
func clipBytes(b []byte, n int) string {
	if len(b) <= n {
		return string(b)
	}
	for n > 0 && !utf8.RuneStart(b[n]) {
		n--
	}
	return string(b[:n]) + "..."
}

// tokenString is a number token as a string for strconv, without a copy: strconv keeps nothing
// of its argument (its errors copy what they quote), and the body does not change meanwhile.
func tokenString(tok []byte) string { return unsafe.String(unsafe.SliceData(tok), len(tok)) }
