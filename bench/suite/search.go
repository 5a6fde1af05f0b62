package suite

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// BatchConfig is one point of the batching search grid.
type BatchConfig struct {
	MaxBatchSize  int           `json:"max_batch_size"`
	MaxQueueDelay time.Duration `json:"max_queue_delay_ns"`
	Instances     int           `json:"instances"`
}

func (b BatchConfig) String() string {
	return fmt.Sprintf("max_batch_size=%d max_queue_delay=%s instances=%d", b.MaxBatchSize, fmtDelay(b.MaxQueueDelay), b.Instances)
}

// fmtDelay writes a duration the way the config accepts it: 0s, 100us, 1ms.
func fmtDelay(d time.Duration) string {
	switch {
	case d == 0:
		return "0s"
	case d%time.Millisecond == 0:
		return fmt.Sprintf("%dms", d/time.Millisecond)
	default:
		return fmt.Sprintf("%dus", d/time.Microsecond)
	}
}

// SearchPoint is one config under one load.
type SearchPoint struct {
	Config     BatchConfig `json:"config"`
	Load       string      `json:"load"` // "closed c32" or "open 1234/s"
	Open       bool        `json:"open"`
	RPS        float64     `json:"rps"`
	P50        int64       `json:"p50_us"`
	P99        int64       `json:"p99_us"`
	Overloaded bool        `json:"overloaded"` // open loop: requests dropped at the outstanding bound
	LatePct    float64     `json:"late_pct"`   // open loop: % of requests sent > 1 ms after their due time
	Errors     int64       `json:"errors"`
	Error      string      `json:"error,omitempty"`
}

// Search is the batching search: the grid, every point, and the choice.
type Search struct {
	Model     string        `json:"model"`
	Batch     int           `json:"batch"`
	TargetP99 time.Duration `json:"target_p99_ns"`
	Points    []SearchPoint `json:"points"`
	Best      *SearchPoint  `json:"best,omitempty"`
	Why       string        `json:"why"`
	Snippet   string        `json:"snippet,omitempty"`
}

// meets reports whether a point counts for the search: an open-loop run without drops or
// errors whose p99 (from the intended send times, so late sends count) is within the target.
func (p SearchPoint) meets(target time.Duration) bool {
	return p.Open && p.Error == "" && !p.Overloaded && p.Errors == 0 && p.RPS > 0 && time.Duration(p.P99)*time.Microsecond <= target
}

// choose picks the point with the highest throughput among those that meet the target; ties
// (within 2 %) go to the lower p99, then to fewer instances, then to the smaller queue delay.
// Without any, it returns nil and says so.
func choose(points []SearchPoint, target time.Duration) (*SearchPoint, string) {
	var ok []SearchPoint
	for _, p := range points {
		if p.meets(target) {
			ok = append(ok, p)
		}
	}
	if len(ok) == 0 {
		return nil, fmt.Sprintf("no configuration kept p99 ≤ %v under open-loop load without drops or errors", target)
	}
	sort.SliceStable(ok, func(i, j int) bool {
		a, b := ok[i], ok[j]
		if d := a.RPS - b.RPS; d > 0.02*max(a.RPS, b.RPS) || -d > 0.02*max(a.RPS, b.RPS) {
			return a.RPS > b.RPS
		}
		if a.P99 != b.P99 {
			return a.P99 < b.P99
		}
		if a.Config.Instances != b.Config.Instances {
			return a.Config.Instances < b.Config.Instances
		}
		return a.Config.MaxQueueDelay < b.Config.MaxQueueDelay
	})
	best := ok[0]
	return &best, fmt.Sprintf("highest throughput with p99 ≤ %v: %s req/s at p99 %s µs (%d of %d open-loop points met the target)",
		target, num(best.RPS, 0), num(float64(best.P99), 0), len(ok), countOpen(points))
}

func countOpen(points []SearchPoint) int {
	n := 0
	for _, p := range points {
		if p.Open {
			n++
		}
	}
	return n
}

// snippet is the config that applies a choice (the batching keys are global: a model's
// max_queue_delay of 0 would mean the default).
func snippet(model string, c BatchConfig) string {
	return fmt.Sprintf(`batching:
  enabled: %t
  max_batch_size: %d
  max_queue_delay: %s
models:
  - name: %s
    instances: %d
`, c.MaxBatchSize > 1, c.MaxBatchSize, fmtDelay(c.MaxQueueDelay), model, c.Instances)
}

func (r *Report) searchSection(t *table) {
	s := r.Search
	if s == nil {
		return
	}
	t.line("## 7. Batching search (policyd, %s, batch %d, JSON)\n", s.Model, s.Batch)
	t.line("For every configuration of the grid: a closed-loop probe with 32 connections gives its maximum R, then open-loop Poisson "+
		"runs at rising fractions of R until one misses the target. The recommendation is the highest achieved throughput whose p99 "+
		"(from the intended send times) stays ≤ %v (flag `-p99-target`) without drops or errors. late = requests sent > 1 ms after "+
		"their due time: the load generator shares the cores with the server, so part of the p99 is its own.\n", s.TargetP99)
	t.head("max_batch_size", "max_queue_delay", "instances", "load", "req/s", "p50 µs", "p99 µs", "late", "meets target")
	for _, p := range s.Points {
		if p.Error != "" {
			t.row(fmt.Sprint(p.Config.MaxBatchSize), fmtDelay(p.Config.MaxQueueDelay), fmt.Sprint(p.Config.Instances), p.Load, "**failed**: "+p.Error, "", "", "", "")
			continue
		}
		meets, late := "–", "–"
		if p.Open {
			late = fmt.Sprintf("%.1f %%", p.LatePct)
			meets = "no"
			if p.meets(s.TargetP99) {
				meets = "yes"
			}
			if p.Overloaded {
				meets += " (dropped requests)"
			}
		}
		t.row(fmt.Sprint(p.Config.MaxBatchSize), fmtDelay(p.Config.MaxQueueDelay), fmt.Sprint(p.Config.Instances), p.Load,
			num(p.RPS, 0), num(float64(p.P50), 0), num(float64(p.P99), 0), late, meets)
	}
	t.line("")
	t.line("**Recommendation**: %s.\n", s.Why)
	if s.Snippet != "" {
		t.line("```yaml\n%s```\n", s.Snippet)
	}
	if s.Best != nil {
		t.line("(%s on this machine; the load generator shared its %d cores. Rerun on the serving hardware.)\n", strings.TrimSpace(s.Best.Config.String()), r.Machine.Nproc)
	}
}
