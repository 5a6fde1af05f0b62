package server

import "testing"

// A pooled request serves models with different numbers of inputs in turn (the soak's 3DBall
// with one input, lstm with three). Its per-input slices must stay at the most inputs seen:
// before, reset grew shapes, bufs and given by the difference on every switch, and a soak's Go
// heap grew ~30 MiB a minute.
func TestPooledRequestResetBounded(t *testing.T) {
	r := newInferRequest()
	p := &predictRequest{}
	for range 1000 {
		for _, n := range []int{1, 3, 2, 3, 1} {
			r.reset(n)
			p.reset(n)
			if len(r.tensors) != n || len(p.tensors) != n {
				t.Fatalf("reset(%d): %d tensors (v2), %d (:predict)", n, len(r.tensors), len(p.tensors))
			}
			for i := range n {
				if r.given[i] {
					t.Fatalf("reset(%d): input %d still marked given", n, i)
				}
			}
			r.release()
		}
	}
	if len(r.shapes) != 3 || len(r.bufs) != 3 || len(r.given) != 3 {
		t.Errorf("v2 request after 5,000 resets over 1–3 inputs: %d shapes, %d bufs, %d given; want 3 each", len(r.shapes), len(r.bufs), len(r.given))
	}
	if len(p.shapes) != 3 || len(p.bufs) != 3 {
		t.Errorf(":predict request after 5,000 resets over 1–3 inputs: %d shapes, %d bufs; want 3 each", len(p.shapes), len(p.bufs))
	}
}
