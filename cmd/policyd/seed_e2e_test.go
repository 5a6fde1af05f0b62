//go:build cgo

package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"
)

// TestSeedParameter: the "seed" request parameter makes a stochastic policy's samples
// reproducible through the real server (3DBall samples its continuous actions with
// RandomNormalLike); requests without one keep sampling afresh. That a seeded request samples
// the same when batched with others is tested in engines (TestBatcherNativeSeededSamples).
func TestSeedParameter(t *testing.T) {
	repo := t.TempDir()
	linkModel(t, repo, "ball", "../shared/models/mlagents/3DBall.onnx")
	d := startDaemon(t, repo)
	sample := func(params string, rows int) []float64 {
		t.Helper()
		data := make([]float64, 8*rows)
		for i := range data {
			data[i] = float64(i%8) / 8
		}
		js, _ := json.Marshal(data)
		body := fmt.Sprintf(`{"parameters":%s,"inputs":[{"name":"obs_0","datatype":"FP32","shape":[%d,8],"data":%s}],`+
			`"outputs":[{"name":"continuous_actions"}]}`, params, rows, js)
		r := d.do(t, "POST", "/v2/models/ball/infer", []byte(body))
		if r.status != 200 {
			t.Fatalf("%s: %d %s", params, r.status, r.body)
		}
		var resp struct {
			Outputs []struct {
				Data []float64 `json:"data"`
			} `json:"outputs"`
		}
		if err := json.Unmarshal(r.body, &resp); err != nil || len(resp.Outputs) != 1 {
			t.Fatalf("%s: %v %s", params, err, r.body)
		}
		return resp.Outputs[0].Data
	}
	for _, rows := range []int{1, 3} {
		a, b := sample(`{"seed":42}`, rows), sample(`{"seed":42}`, rows)
		if !slices.Equal(a, b) {
			t.Errorf("batch %d: seed 42 twice: %v and %v", rows, a, b)
		}
		if c := sample(`{"seed":43}`, rows); slices.Equal(a, c) {
			t.Errorf("batch %d: seeds 42 and 43 sampled the same %v", rows, a)
		}
		if u, v := sample(`{}`, rows), sample(`{}`, rows); slices.Equal(u, v) {
			t.Errorf("batch %d: two unseeded requests sampled the same %v", rows, u)
		}
	}
	r := d.do(t, "POST", "/v2/models/ball/infer", []byte(`{"parameters":{"seed":-1},"inputs":[{"name":"obs_0","datatype":"FP32","shape":[1,8],"data":[0,0,0,0,0,0,0,0]}]}`))
	if r.status != 400 || errorOf(t, r) != `"parameters": "seed" must be an unsigned integer, got -1` {
		t.Errorf("seed -1: %d %s", r.status, r.body)
	}
}
