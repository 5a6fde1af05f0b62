package engine

import (
	"math"
	"slices"
)

// Result is the result of one mode of one peer on one model and batch. Latencies are µs of one
// inference call; InferencesPerS = batch × CallsPerS. The JSON names follow ort_bench.js.
type Result struct {
	Mode           string  `json:"mode"`
	Workers        int     `json:"workers"`
	IntraThreads   int     `json:"intra_threads"`
	Iters          int     `json:"iters"`
	Seconds        float64 `json:"seconds"`
	P50            float64 `json:"p50_us"`
	P95            float64 `json:"p95_us"`
	P99            float64 `json:"p99_us"`
	Mean           float64 `json:"mean_us"`
	CallsPerS      float64 `json:"calls_per_s"`
	InferencesPerS float64 `json:"inferences_per_s"`
	// CPU accounting (filled by the benchmark, not by ort_bench.js): average cores this peer
	// used (policyd: the timed loop; ORT: its whole process, setup included) and cores other
	// processes used meanwhile; -1 unknown.
	OwnCores   float64 `json:"own_cpu_cores"`
	OtherCores float64 `json:"other_cpu_cores"`
	Attempts   int     `json:"attempts,omitempty"` // measurements made; > 1 when earlier ones were disturbed
}

// percentile is the nearest-rank percentile of sorted (the definition ort_bench.js uses).
func percentile(sorted []float64, p float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	idx := int(math.Ceil(p/100*float64(n))) - 1
	return sorted[min(n-1, max(0, idx))]
}

func round(x float64, digits int) float64 {
	s := math.Pow(10, float64(digits))
	return math.Round(x*s) / s
}

// summarize merges the per-worker latencies (µs) of one mode; seconds is the wall time of the
// slowest worker's loop.
func summarize(mode string, workers, batch int, lats [][]float64, seconds float64) Result {
	var all []float64
	for _, l := range lats {
		all = append(all, l...)
	}
	slices.Sort(all)
	sum := 0.0
	for _, v := range all {
		sum += v
	}
	n := len(all)
	r := Result{Mode: mode, Workers: workers, IntraThreads: 1, Iters: n, Seconds: round(seconds, 3)}
	if n == 0 || seconds <= 0 {
		return r
	}
	r.P50 = round(percentile(all, 50), 1)
	r.P95 = round(percentile(all, 95), 1)
	r.P99 = round(percentile(all, 99), 1)
	r.Mean = round(sum/float64(n), 1)
	r.CallsPerS = round(float64(n)/seconds, 1)
	r.InferencesPerS = round(float64(n*batch)/seconds, 1)
	return r
}
