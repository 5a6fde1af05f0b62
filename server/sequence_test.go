package server

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
)

// recurrentModel is a fake stateful policy: y = x + state, state_out = state + x, all [-1,2]
// FP32, batchable. With a sequence, state_out accumulates the x of every step.
func recurrentModel(t *testing.T, spec engines.SequenceSpec) *fakeModel {
	t.Helper()
	io := func(name string) bridge.IOInfo {
		return bridge.IOInfo{Name: name, DType: bridge.Float32, Shape: []int64{-1, 2}, BatchDim: 0}
	}
	m := &fakeModel{
		name: "rnn", version: "1", batchable: true,
		inputs:  []bridge.IOInfo{io("x"), io("state")},
		outputs: []bridge.IOInfo{io("y"), io("state_out")},
		run: func(in []bridge.Tensor) []bridge.Tensor {
			x, st := in[0].Data, in[1].Data
			y, so := make([]byte, len(x)), make([]byte, len(x))
			for i := 0; i < len(x); i += 4 {
				v := math.Float32frombits(binary.LittleEndian.Uint32(x[i:])) + math.Float32frombits(binary.LittleEndian.Uint32(st[i:]))
				binary.LittleEndian.PutUint32(y[i:], math.Float32bits(v))
				binary.LittleEndian.PutUint32(so[i:], math.Float32bits(v))
			}
			shape := append([]int64(nil), in[0].Shape...)
			return []bridge.Tensor{{DType: bridge.Float32, Shape: shape, Data: y}, {DType: bridge.Float32, Shape: shape, Data: so}}
		},
	}
	if len(spec.States) == 0 {
		spec.States = []engines.StatePair{{Input: "state", Output: "state_out"}}
	}
	seqs, err := engines.NewSequences(spec, m.inputs, m.outputs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(seqs.Close)
	m.seqs = seqs
	return m
}

// seqBody is a request of one step: x as a batch of one row, with the sequence parameters.
func seqBody(id any, start, end bool, x ...float32) []byte {
	params := map[string]any{}
	if id != nil {
		params["sequence_id"] = id
	}
	if start {
		params["sequence_start"] = true
	}
	if end {
		params["sequence_end"] = true
	}
	b, _ := json.Marshal(map[string]any{
		"parameters": params,
		"inputs":     []any{map[string]any{"name": "x", "datatype": "FP32", "shape": []int{len(x) / 2, 2}, "data": x}},
	})
	return b
}

// post is a goroutine-safe request (no t.Fatal).
func (ts *testServer) post(path string, body []byte) (int, []byte, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://policyd" + path)
	req.Header.SetMethod("POST")
	req.SetBody(body)
	if err := ts.client.DoTimeout(req, resp, 10*time.Second); err != nil {
		return 0, nil, err
	}
	return resp.StatusCode(), append([]byte(nil), resp.Body()...), nil
}

// outputOf returns output name of a 200 response as float32s.
func outputOf(t *testing.T, r response, name string) []float32 {
	t.Helper()
	for _, o := range decodeResponse(t, r).Outputs {
		if o.Name == name {
			var v []float32
			if err := json.Unmarshal(o.Data, &v); err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatalf("no output %q in %s", name, r.body)
	return nil
}

const rnnInfer = "/v2/models/rnn/infer"

func TestSequenceStartContinueEnd(t *testing.T) {
	m := recurrentModel(t, engines.SequenceSpec{})
	ts := startServer(t, newFakeRegistry(m), Options{})
	steps := []struct {
		start, end bool
		x, want    []float32
	}{
		{true, false, []float32{1, 2}, []float32{1, 2}}, // zero state at the start
		{false, false, []float32{1, 1}, []float32{2, 3}},
		{false, true, []float32{0.5, 0}, []float32{2.5, 3}},
	}
	for _, id := range []any{7, "episode-7"} {
		for i, s := range steps {
			r := ts.do(t, "POST", rnnInfer, seqBody(id, s.start, s.end, s.x...))
			if got := outputOf(t, r, "y"); fmt.Sprint(got) != fmt.Sprint(s.want) {
				t.Errorf("id %v step %d: y = %v, want %v", id, i, got, s.want)
			}
		}
	}
	if n := m.seqs.Len(); n != 0 {
		t.Errorf("%d sequences live after their ends", n)
	}
	// Ended: continuing is an unknown sequence, naming the id.
	r := ts.do(t, "POST", rnnInfer, seqBody(7, false, false, 1, 1))
	if msg := errorMessage(t, r); r.status != 400 || !strings.Contains(msg, "sequence 7") {
		t.Errorf("after end: %d %s", r.status, msg)
	}
	// A restart zeroes the state of a live sequence.
	ts.do(t, "POST", rnnInfer, seqBody(9, true, false, 5, 5))
	r = ts.do(t, "POST", rnnInfer, seqBody(9, true, false, 1, 1))
	if got := outputOf(t, r, "y"); fmt.Sprint(got) != "[1 1]" {
		t.Errorf("restart: y = %v, want [1 1]", got)
	}
	// Without a sequence_id the client carries the state itself, as for any model.
	b := `{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,1]},{"name":"state","datatype":"FP32","shape":[1,2],"data":[2,3]}]}`
	if got := outputOf(t, ts.do(t, "POST", rnnInfer, []byte(b)), "y"); fmt.Sprint(got) != "[3 4]" {
		t.Errorf("without a sequence: y = %v", got)
	}
}

func TestSequenceBadRequests(t *testing.T) {
	m := recurrentModel(t, engines.SequenceSpec{})
	plain := policyModel("1")
	ts := startServer(t, newFakeRegistry(m, plain), Options{})
	cases := []struct {
		name, path string
		body       []byte
		status     int
		want       string
	}{
		{"unknown", rnnInfer, seqBody(42, false, false, 1, 1), 400, "sequence 42: unknown sequence"},
		{"unknown string", rnnInfer, seqBody("ep", false, false, 1, 1), 400, `sequence "ep": unknown`},
		{"batch 2", rnnInfer, seqBody(1, true, false, 1, 1, 2, 2), 400, "must have batch size 1"},
		{"zero id", rnnInfer, seqBody(0, true, false, 1, 1), 400, "non-zero"},
		{"negative id", rnnInfer, seqBody(-3, true, false, 1, 1), 400, "non-zero"},
		{"empty id", rnnInfer, seqBody("", true, false, 1, 1), 400, "must not be empty"},
		{"bool id", rnnInfer, seqBody(true, true, false, 1, 1), 400, "integer or a string"},
		{"start without id", rnnInfer, seqBody(nil, true, false, 1, 1), 400, "need a \"sequence_id\""},
		{"state sent", rnnInfer, []byte(`{"parameters":{"sequence_id":1,"sequence_start":true},"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1,1]},{"name":"state","datatype":"FP32","shape":[1,2],"data":[2,3]}]}`), 400, `input "state" is a state of sequence 1`},
		{"bad start", rnnInfer, []byte(`{"parameters":{"sequence_id":1,"sequence_start":"yes"},"inputs":[]}`), 400, "sequence_start"},
		{"model without sequences", "/v2/models/policy/versions/1/infer", []byte(`{"parameters":{"sequence_id":1},"inputs":[]}`), 400, `missing input "obs"`},
	}
	for _, c := range cases {
		r := ts.do(t, "POST", c.path, c.body)
		if msg := errorMessage(t, r); r.status != c.status || !strings.Contains(msg, c.want) {
			t.Errorf("%s: %d %q, want %d containing %q", c.name, r.status, msg, c.status, c.want)
		}
	}
	if n := m.seqs.Len(); n != 0 {
		t.Errorf("%d sequences live after refused requests", n)
	}
}

func TestSequenceLimit(t *testing.T) {
	m := recurrentModel(t, engines.SequenceSpec{MaxSequences: 2})
	ts := startServer(t, newFakeRegistry(m), Options{})
	for id := 1; id <= 2; id++ {
		decodeResponse(t, ts.do(t, "POST", rnnInfer, seqBody(id, true, false, 1, 1)))
	}
	r := ts.do(t, "POST", rnnInfer, seqBody(3, true, false, 1, 1))
	if msg := errorMessage(t, r); r.status != 503 || r.header["Retry-After"] == "" || !strings.Contains(msg, "max_sequences") || !strings.Contains(msg, "2") {
		t.Errorf("third start: %d Retry-After %q %s", r.status, r.header["Retry-After"], msg)
	}
	// Live sequences go on; ending one makes room.
	decodeResponse(t, ts.do(t, "POST", rnnInfer, seqBody(1, false, true, 1, 1)))
	decodeResponse(t, ts.do(t, "POST", rnnInfer, seqBody(3, true, false, 1, 1)))
}

func TestSequenceIdleTimeout(t *testing.T) {
	m := recurrentModel(t, engines.SequenceSpec{IdleTimeout: 20 * time.Millisecond})
	ts := startServer(t, newFakeRegistry(m), Options{})
	decodeResponse(t, ts.do(t, "POST", rnnInfer, seqBody(5, true, false, 1, 1)))
	deadline := time.Now().Add(5 * time.Second)
	for m.seqs.Len() != 0 { // the janitor drops it without any request
		if time.Now().After(deadline) {
			t.Fatal("idle sequence not dropped")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := ts.do(t, "POST", rnnInfer, seqBody(5, false, false, 1, 1))
	if msg := errorMessage(t, r); r.status != 400 || !strings.Contains(msg, "sequence 5") {
		t.Errorf("after idle timeout: %d %s", r.status, msg)
	}
}

// Steps of one sequence sent concurrently run one at a time: none is lost, and the state ends
// as the sum of every step's x. Many sequences run concurrently meanwhile, each with its own
// state (go test -race).
func TestSequenceConcurrency(t *testing.T) {
	m := recurrentModel(t, engines.SequenceSpec{})
	ts := startServer(t, newFakeRegistry(m), Options{})
	const seqs, steps = 16, 20
	for id := 1; id <= seqs; id++ {
		decodeResponse(t, ts.do(t, "POST", rnnInfer, seqBody(id, true, false, 0, 0)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, seqs*steps)
	for id := 1; id <= seqs; id++ {
		for range steps {
			wg.Go(func() {
				x := float32(id)
				status, body, err := ts.post(rnnInfer, seqBody(id, false, false, x, 1))
				if err == nil && status != 200 {
					err = fmt.Errorf("sequence %d: %d %s", id, status, body)
				}
				if err != nil {
					errs <- err
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for id := 1; id <= seqs; id++ {
		r := ts.do(t, "POST", rnnInfer, seqBody(id, false, true, 0, 0))
		want := fmt.Sprint([]float32{float32(id * steps), steps})
		if got := outputOf(t, r, "y"); fmt.Sprint(got) != want {
			t.Errorf("sequence %d: final state %v, want %v", id, got, want)
		}
	}
}
