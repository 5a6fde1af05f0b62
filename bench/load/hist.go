package load

import (
	"math"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// The histograms record microseconds from 1 µs to 60 s with 3 significant digits, as the peers'
// loadgen does, so percentiles of both tools mean the same thing.
const (
	histMin    = 1
	histMax    = 60_000_000
	histDigits = 3
)

func newHist() *hdrhistogram.Histogram { return hdrhistogram.New(histMin, histMax, histDigits) }

// Percentiles summarises a latency histogram, in µs.
type Percentiles struct {
	Count int64   `json:"count"`
	P50   int64   `json:"p50_us"`
	P90   int64   `json:"p90_us"`
	P95   int64   `json:"p95_us"`
	P99   int64   `json:"p99_us"`
	P999  int64   `json:"p999_us"`
	Max   int64   `json:"max_us"`
	Mean  float64 `json:"mean_us"`
}

// merge adds every histogram of hs into one (hdrhistogram's Merge: exact per bucket, so the
// percentiles of the merge are those of all recorded values together, not an average of
// per-worker percentiles).
func merge(hs []*hdrhistogram.Histogram) *hdrhistogram.Histogram {
	all := newHist()
	for _, h := range hs {
		all.Merge(h)
	}
	return all
}

// summarize reads the percentiles of h; a histogram without values gives zeros.
func summarize(h *hdrhistogram.Histogram) Percentiles {
	if h.TotalCount() == 0 {
		return Percentiles{}
	}
	return Percentiles{
		Count: h.TotalCount(),
		P50:   h.ValueAtQuantile(50),
		P90:   h.ValueAtQuantile(90),
		P95:   h.ValueAtQuantile(95),
		P99:   h.ValueAtQuantile(99),
		P999:  h.ValueAtQuantile(99.9),
		Max:   h.Max(),
		Mean:  round(h.Mean(), 1),
	}
}

// record adds one latency; values outside the histogram's range are clamped to it rather than
// lost (a request slower than 60 s still counts, as 60 s).
func record(h *hdrhistogram.Histogram, us int64) {
	_ = h.RecordValue(min(max(us, histMin), histMax))
}

func round(x float64, d int) float64 {
	p := math.Pow(10, float64(d))
	return math.Round(x*p) / p
}
