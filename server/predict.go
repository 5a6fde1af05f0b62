package server

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// TensorFlow Serving's REST predict API, for clients that only have observations:
//
//	POST /v1/models/{m}[/versions/{v}]:predict
//
// Row format: {"instances": [...]} → {"predictions": [...]}. Each instance is one row of the
// batch: for a single-input model the observation itself (nested lists) or {name: value}; for
// a model with several inputs {input name: value, ...}. The batch size is the number of
// instances. There is one prediction per instance: the output's row for a single-output model,
// else {output name: row, ...} holding the outputs that are batched (signature batch dimension
// 0, dimension 0 equal to the batch size); outputs that are not (ML-Agents' version_number,
// memory_size, ...) are left out of the rows, and the columnar form has them. A model with an
// input that has no batch dimension takes exactly one instance, which is then the whole input
// tensor (or, for a fixed leading dimension of 1, its one row), and its one prediction holds
// every output whole.
//
// Columnar format: {"inputs": value} for a single-input model, {"inputs": {name: value, ...}}
// otherwise → {"outputs": value} for a single-output model, else {"outputs": {name: value}}:
// whole tensors with their batch dimension, every output included.
//
// "signature_name" may be given; it must be "serving_default", the one signature an ONNX
// model has. Values are nested lists in the tensor's shape; outputs are written like the v2
// API's (INT64 as exact integers, FP32 as the shortest text that reads back to the same
// float32, NaN and ±Inf as null). Errors are the v2 API's: {"error": "..."} with 400, 404,
// 413 or 503.

// predictVerb is the only TensorFlow Serving verb policyd serves.
const predictVerb = "predict"

// predictRoutes registers TensorFlow Serving's predict routes with post. The verb is part of
// the last path segment (":predict"), so the routes take the whole segment and predict splits
// it.
func (s *Server) predictRoutes(post func(path string, h fasthttp.RequestHandler)) {
	post("/v1/models/{model}", s.predict)
	post("/v1/models/{model}/versions/{version}", s.predict)
}

// predictTarget splits the model and version of the route from the ":predict" verb: a path
// without a verb, or with another one (":classify", ":regress"), is a 404.
func predictTarget(ctx *fasthttp.RequestCtx) (model, version string, err error) {
	model, _ = ctx.UserValue("model").(string)
	version, versioned := ctx.UserValue("version").(string)
	last := &model
	if versioned {
		last = &version
	}
	i := strings.LastIndexByte(*last, ':')
	if i < 0 {
		return "", "", &statusError{fasthttp.StatusNotFound, fmt.Sprintf(
			"no route POST %s (TensorFlow Serving's predict is POST /v1/models/{model}[/versions/{version}]:predict)",
			clip(string(ctx.Path()), 200))}
	}
	if verb := (*last)[i+1:]; verb != predictVerb {
		return "", "", &statusError{fasthttp.StatusNotFound, fmt.Sprintf(
			"verb %q is not supported: policyd serves TensorFlow Serving's :predict only", clip(verb, 50))}
	}
	*last = (*last)[:i]
	return model, version, nil
}

// predict is the transport of TensorFlow Serving's predict: the request goes the one
// inference path (infer.go) with a predictRequest as its codec, which decodes the instances or
// inputs into pooled buffers (checking them against the signature) and encodes the
// predictions or outputs on the engine's worker.
func (s *Server) predict(ctx *fasthttp.RequestCtx) {
	x := exchangeOf(ctx)
	x.setProtocol(ProtocolPredict)
	name, version, err := predictTarget(ctx)
	if err != nil {
		s.fail(ctx, err)
		return
	}
	if limit := s.maxBody.Load(); int64(len(ctx.PostBody())) > limit {
		s.fail(ctx, s.tooLarge())
		return
	}
	req := predictRequests.Get().(*predictRequest)
	defer req.put()
	req.body = ctx.PostBody()
	if err := readDeadlineHeader(ctx, &req.dl); err != nil {
		s.fail(ctx, err)
		return
	}
	req.episode = ctx.Request.Header.Peek(HeaderEpisodeID)
	if err := s.inference(x, ProtocolPredict, name, version, req); err != nil {
		s.fail(ctx, err)
		return
	}
	writeDeadlineHeaders(ctx, &req.dl)
	ctx.SetContentType("application/json")
	ctx.SetBody(req.out)
	ctx.Response.Header.Set(HeaderModelVersion, req.model.Version())
}

// predictRequest is a decoded predict request: one tensor per model input, in the model's
// order, in buffers the request owns and reuses (values are pooled, not shared).
type predictRequest struct {
	conv    inferRequest // converts JSON elements (putElement, fill); nothing else of it is used
	tensors []bridge.Tensor
	shapes  [][bridge.MaxRank]int64
	bufs    [][]byte
	scratch [bridge.MaxRank]int64
	rows    bool  // row format: answer "predictions"
	batch   int64 // the batch size; -1 when no input has a batch dimension

	body    []byte // the request body its transport gave (a view, valid during the handler)
	episode []byte // the X-Episode-ID header (traffic.go), valid during the handler
	model   Model
	out     []byte
	encode  func([]bridge.Tensor) error // encodeOutputs, bound once
	dl      deadline                    // X-Deadline-Us, and how the answer turned out
}

var predictRequests = sync.Pool{New: func() any {
	r := &predictRequest{}
	r.encode = r.encodeOutputs
	return r
}}

func (r *predictRequest) reset(nIn int) {
	for len(r.shapes) < nIn { // as inferRequest.reset: the most inputs seen
		r.shapes = append(r.shapes, [bridge.MaxRank]int64{})
		r.bufs = append(r.bufs, nil)
	}
	r.tensors = append(r.tensors[:0], make([]bridge.Tensor, nIn)...)
	for i := range r.tensors {
		r.tensors[i] = bridge.Tensor{}
	}
	r.rows, r.batch = false, -1
}

// put drops what the request must not keep (the model, large buffers) and pools it.
func (r *predictRequest) put() {
	r.model, r.body, r.episode = nil, nil, nil
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
	if cap(r.conv.str) > maxRetained {
		r.conv.str = nil
	}
	predictRequests.Put(r)
}

// decodeRequest is the codec's decode (infer.go): the body its transport gave r, decoded for
// m's inputs.
func (r *predictRequest) decodeRequest(m Model) error {
	if err := r.decode(r.body, m.Inputs()); err != nil {
		return err
	}
	r.model = m
	return nil
}

// call is the codec's call (infer.go): predict has no run options or timeout of its own.
func (r *predictRequest) call() ([]bridge.Tensor, engines.RunOptions, time.Duration, int) {
	return r.tensors, engines.RunOptions{}, 0, max(int(r.batch), 1)
}

// encoder is the codec's encoder (infer.go): encodeOutputs, bound once.
func (r *predictRequest) encoder() func([]bridge.Tensor) error { return r.encode }

// deadlines is the codec's deadlines (infer.go): predict takes X-Deadline-Us only.
func (r *predictRequest) deadlines() *deadline { return &r.dl }

// decode reads body and fills r with the inputs ins. Every error is a *requestError naming
// the problem and, where there is one, the instance and the input. As for the v2 API
// (inferRequest.decodeParts) the JSON is checked whole and read in place: the shape of a value
// is taken from its lists before its buffer is sized, so the memory a request takes is its
// tensors.
func (r *predictRequest) decode(body []byte, ins []bridge.IOInfo) error {
	r.reset(len(ins))
	var vals [len(predictKeys)]jsonValue
	root, err := scanJSON(body, predictKeys[:], vals[:])
	if err != nil {
		return err
	}
	if k := root.kind(); k != jsonObject {
		return badRequest("request body must be a JSON object, got %s", k)
	}
	instances, inputs, sig := vals[0], vals[1], vals[2]
	if sig != nil {
		if sig.kind() != jsonString {
			return badRequest(`"signature_name" must be a string, got %s`, sig.kind())
		}
		if len(sig.raw()) > 0 && !sig.is("serving_default") {
			return badRequest(`unknown signature_name %q: an ONNX model has one signature, "serving_default"`, clipBytes(sig.raw(), 100))
		}
	}
	switch {
	case instances != nil && inputs != nil:
		return badRequest(`"instances" (row format) and "inputs" (columnar format) are exclusive: send one`)
	case instances != nil:
		return r.decodeInstances(instances, ins)
	case inputs != nil:
		return r.decodeColumns(inputs, ins)
	}
	return badRequest(`missing "instances" (row format) or "inputs" (columnar format)`)
}

// predictKeys are the members of a request decode reads.
var predictKeys = [...]string{"instances", "inputs", "signature_name"}

// decodeInstances decodes the row format: the instances stacked along the batch dimension.
// They must all be objects {input name: value} or all values of the one input.
func (r *predictRequest) decodeInstances(v jsonValue, ins []bridge.IOInfo) error {
	if v.kind() != jsonArray {
		return badRequest(`"instances" must be an array, got %s`, v.kind())
	}
	n := v.len()
	if n == 0 {
		return badRequest(`"instances" is empty`)
	}
	r.rows = true
	for k := range ins {
		if ins[k].BatchDim == 0 {
			r.batch = int64(n)
		} else if n > 1 {
			return badRequest(`%d instances, but input %q has no batch dimension (shape %s): send one instance, or the whole tensors in the columnar format {"inputs": ...}`,
				n, ins[k].Name, formatShape(ins[k].Shape))
		}
	}
	var first jsonValue
	for i, it := 0, v.iter(); ; i++ {
		inst, ok := it.next()
		if !ok {
			break
		}
		obj := inst.kind() == jsonObject
		if !obj && len(ins) != 1 {
			return badRequest("instances[%d] must be an object {input name: value} for a model with %d inputs (%s), got %s",
				i, len(ins), bridge.IONames(ins), inst.kind())
		}
		if i == 0 {
			first = inst
		} else if obj != (first.kind() == jsonObject) {
			return badRequest("instances[%d] is %s, but instances[0] is %s: the instances must be all objects {input name: value} or all values (lists)",
				i, instanceForm(inst), instanceForm(first))
		}
		if !obj {
			continue
		}
		if name, ok := r.unknownInput(inst, ins); !ok {
			return badRequest("instances[%d]: unknown input %q (model inputs: %s)", i, name, bridge.IONames(ins))
		}
	}
	for k := range ins {
		info := &ins[k]
		if info.BatchDim != 0 { // one instance: the whole tensor
			e, err := instanceValue(first, 0, info)
			if err != nil {
				return err
			}
			if err := r.whole(k, e, info, true); err != nil {
				return badRequest("instances[0]: %s", err)
			}
			continue
		}
		var firstShape []int64
		per := int64(0)
		for i, it := 0, v.iter(); ; i++ {
			inst, ok := it.next()
			if !ok {
				break
			}
			e, err := instanceValue(inst, i, info)
			if err != nil {
				return err
			}
			shape, err := nestedShape(e, r.scratch[:0])
			if err != nil {
				return badRequest("instances[%d]: input %q: %s", i, info.Name, err)
			}
			if i == 0 {
				if !shapeMatches(info.Shape[1:], shape) {
					return badRequest("instances[0]: input %q: expected shape %s, got %s", info.Name, formatShape(info.Shape[1:]), formatShape(shape))
				}
				full := r.shapes[k][:1+len(shape)]
				full[0] = int64(n)
				copy(full[1:], shape)
				count, ok := numElements(full)
				if !ok {
					return badRequest("input %q: shape %s has too many elements", info.Name, formatShape(full))
				}
				per = count / int64(n)
				r.tensors[k] = bridge.Tensor{DType: info.DType, Shape: full, Data: r.buffer(k, count, info)}
				firstShape = full[1:]
			} else if !slices.Equal(firstShape, shape) {
				return badRequest("instances[%d]: input %q: shape %s differs from the shape %s of instances[0]",
					i, info.Name, formatShape(shape), formatShape(firstShape))
			}
			size := int64(info.DType.Size())
			if err := r.fill(e, info, r.tensors[k].Data[int64(i)*per*size:int64(i+1)*per*size]); err != nil {
				return badRequest("instances[%d]: %s", i, err)
			}
		}
	}
	return nil
}

// instanceForm names the form of an instance for a message.
func instanceForm(v jsonValue) string {
	switch v.kind() {
	case jsonObject:
		return "an object"
	case jsonArray:
		return "a list"
	}
	return "a " + v.kind().String()
}

// instanceValue is the value of input info in instance i: the instance itself for a
// single-input model, else the instance's field.
func instanceValue(inst jsonValue, i int, info *bridge.IOInfo) (jsonValue, error) {
	if inst.kind() != jsonObject {
		return inst, nil // single input (checked by the caller)
	}
	e := inst.get(info.Name)
	if e == nil {
		return nil, badRequest("instances[%d]: missing input %q", i, info.Name)
	}
	return e, nil
}

// unknownInput returns the first key of the object v that names no input of ins (clipped for
// a message).
func (r *predictRequest) unknownInput(v jsonValue, ins []bridge.IOInfo) (string, bool) {
	for it := v.iter(); ; {
		k, _, ok := it.member()
		if !ok {
			return "", true
		}
		if r.conv.inputIndex(k, ins) < 0 {
			return clipBytes(k.raw(), 100), false
		}
	}
}

// decodeColumns decodes the columnar format: whole tensors, with their batch dimension.
func (r *predictRequest) decodeColumns(v jsonValue, ins []bridge.IOInfo) error {
	if v.kind() == jsonObject {
		if name, ok := r.unknownInput(v, ins); !ok {
			return badRequest(`"inputs": unknown input %q (model inputs: %s)`, name, bridge.IONames(ins))
		}
		for k := range ins {
			e := v.get(ins[k].Name)
			if e == nil {
				return badRequest(`"inputs": missing input %q`, ins[k].Name)
			}
			if err := r.whole(k, e, &ins[k], false); err != nil {
				return err
			}
		}
	} else {
		if len(ins) != 1 {
			return badRequest(`"inputs" must be an object {input name: value} for a model with %d inputs (%s), got %s`,
				len(ins), bridge.IONames(ins), v.kind())
		}
		if err := r.whole(0, v, &ins[0], false); err != nil {
			return err
		}
	}
	first := -1
	for k := range ins {
		if ins[k].BatchDim != 0 {
			continue
		}
		if first < 0 {
			first, r.batch = k, r.tensors[k].Shape[0]
		} else if b := r.tensors[k].Shape[0]; b != r.batch {
			return badRequest("input %q: batch size %d differs from batch size %d of input %q",
				ins[k].Name, b, r.batch, ins[first].Name)
		}
	}
	return nil
}

// whole decodes e as the whole tensor of input k. row allows, for a signature whose fixed
// dimension 0 is 1, the value of its one row.
func (r *predictRequest) whole(k int, e jsonValue, info *bridge.IOInfo, row bool) error {
	shape, err := nestedShape(e, r.shapes[k][:0])
	if err != nil {
		return badRequest("input %q: %s", info.Name, err)
	}
	if !shapeMatches(info.Shape, shape) {
		if !row || len(info.Shape) == 0 || info.Shape[0] != 1 || len(shape) == bridge.MaxRank || !shapeMatches(info.Shape[1:], shape) {
			return shapeError(info, shape)
		}
		shape = r.shapes[k][:len(shape)+1]
		copy(shape[1:], shape)
		shape[0] = 1
	}
	count, ok := numElements(shape)
	if !ok {
		return badRequest("input %q: shape %s has too many elements", info.Name, formatShape(shape))
	}
	r.tensors[k] = bridge.Tensor{DType: info.DType, Shape: shape, Data: r.buffer(k, count, info)}
	return r.fill(e, info, r.tensors[k].Data)
}

// buffer returns input k's buffer sized for count elements.
func (r *predictRequest) buffer(k int, count int64, info *bridge.IOInfo) []byte {
	need := int(count) * info.DType.Size()
	if cap(r.bufs[k]) < need {
		r.bufs[k] = make([]byte, need)
	}
	r.bufs[k] = r.bufs[k][:need]
	return r.bufs[k]
}

// fill converts the leaves of e (a scalar or nested lists whose shape was checked) into buf.
func (r *predictRequest) fill(e jsonValue, info *bridge.IOInfo, buf []byte) error {
	if !jsonDType(info.DType) {
		return badRequest("input %q: datatype %s is not supported in JSON requests", info.Name, info.DType)
	}
	if e.kind() != jsonArray {
		return r.conv.putElement(e, info, buf, 0)
	}
	return r.conv.fill(e, info, buf)
}

// nestedShape returns the shape of nested JSON lists (rank 0 for a scalar), appended to dims,
// failing when the lists are ragged or deeper than bridge.MaxRank. The shape is that of the
// values there, so its element count is bounded by the body.
func nestedShape(v jsonValue, dims []int64) ([]int64, error) {
	for cur := v; cur.kind() == jsonArray; {
		if len(dims) == bridge.MaxRank {
			return dims, fmt.Errorf("lists nested deeper than %d levels", bridge.MaxRank)
		}
		it := cur.iter()
		e, _ := it.next()
		n := cur.len()
		dims = append(dims, int64(n))
		if n == 0 {
			break
		}
		cur = e
	}
	if !rectangular(v, dims) {
		return dims, fmt.Errorf("ragged nested lists: the lists at one depth must have one length (first ones: %s)", formatShape(dims))
	}
	return dims, nil
}

// rectangular reports whether v is nested lists of exactly the shape dims, scalars at the bottom.
func rectangular(v jsonValue, dims []int64) bool {
	if len(dims) == 0 {
		return v.kind() != jsonArray
	}
	if v.kind() != jsonArray {
		return false
	}
	n := int64(0)
	for it := v.iter(); ; n++ {
		e, ok := it.next()
		if !ok {
			break
		}
		if n == dims[0] || !rectangular(e, dims[1:]) {
			return false
		}
	}
	return n == dims[0]
}

// encodeOutputs is the callback passed to Model.Do: it runs on the engine's worker while the
// outputs are valid and encodes the whole response into r.out.
func (r *predictRequest) encodeOutputs(outs []bridge.Tensor) error {
	r.dl.markLate()
	infos := r.model.Outputs()
	if len(outs) != len(infos) {
		return fmt.Errorf("engine returned %d outputs, the signature has %d", len(outs), len(infos))
	}
	for k := range outs {
		t := &outs[k]
		size := t.DType.Size()
		if size == 0 {
			return fmt.Errorf("output %q: datatype %s cannot be written as JSON", infos[k].Name, t.DType)
		}
		if n := bridge.NumElements(t.Shape); n < 0 || int64(len(t.Data)) != n*int64(size) {
			return fmt.Errorf("output %q: %d bytes for shape %s of %s", infos[k].Name, len(t.Data), formatShape(t.Shape), t.DType)
		}
	}
	b := r.out[:0]
	if r.rows {
		var err error
		if b, err = r.appendPredictions(b, infos, outs); err != nil {
			return err
		}
	} else {
		b = append(b, `{"outputs":`...)
		b = appendPredictOutputs(b, infos, outs)
		b = append(b, '}')
	}
	r.out = b
	return nil
}

// appendPredictions writes {"predictions": [...]}: one per instance, the row of each batched
// output (see predictRoutes), or every output whole when the request has no batch dimension.
func (r *predictRequest) appendPredictions(b []byte, infos []bridge.IOInfo, outs []bridge.Tensor) ([]byte, error) {
	b = append(b, `{"predictions":[`...)
	if r.batch < 0 {
		b = appendPredictOutputs(b, infos, outs)
		return append(b, "]}"...), nil
	}
	isRow := func(k int) bool {
		return infos[k].BatchDim == 0 && len(outs[k].Shape) > 0 && outs[k].Shape[0] == r.batch
	}
	if len(outs) == 1 && !isRow(0) {
		return b, badRequest(`output %q is not batched (shape %s): ask in the columnar format {"inputs": ...}`,
			infos[0].Name, formatShape(outs[0].Shape))
	}
	for i := int64(0); i < r.batch; i++ {
		if i > 0 {
			b = append(b, ',')
		}
		if len(outs) == 1 {
			b = appendPredictRow(b, &outs[0], i)
			continue
		}
		b = append(b, '{')
		n := 0
		for k := range outs {
			if !isRow(k) {
				continue
			}
			if n > 0 {
				b = append(b, ',')
			}
			b = appendString(b, infos[k].Name)
			b = append(b, ':')
			b = appendPredictRow(b, &outs[k], i)
			n++
		}
		b = append(b, '}')
	}
	return append(b, "]}"...), nil
}

// appendPredictOutputs writes the single output whole, or {name: whole tensor, ...}.
func appendPredictOutputs(b []byte, infos []bridge.IOInfo, outs []bridge.Tensor) []byte {
	if len(outs) == 1 {
		b, _ = appendPredictNested(b, &outs[0], outs[0].Shape, 0)
		return b
	}
	b = append(b, '{')
	for k := range outs {
		if k > 0 {
			b = append(b, ',')
		}
		b = appendString(b, infos[k].Name)
		b = append(b, ':')
		b, _ = appendPredictNested(b, &outs[k], outs[k].Shape, 0)
	}
	return append(b, '}')
}

// appendPredictRow writes row i of t (dimension 0 is the batch) as nested lists.
func appendPredictRow(b []byte, t *bridge.Tensor, i int64) []byte {
	per := bridge.NumElements(t.Shape[1:])
	b, _ = appendPredictNested(b, t, t.Shape[1:], i*per)
	return b
}

// appendPredictNested writes the elements of t from off on as nested lists of the given shape, and
// returns the offset after them.
func appendPredictNested(b []byte, t *bridge.Tensor, shape []int64, off int64) ([]byte, int64) {
	if len(shape) == 0 {
		return appendElement(b, t, off), off + 1
	}
	b = append(b, '[')
	for j := int64(0); j < shape[0]; j++ {
		if j > 0 {
			b = append(b, ',')
		}
		b, off = appendPredictNested(b, t, shape[1:], off)
	}
	return append(b, ']'), off
}
