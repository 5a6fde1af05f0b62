package suite

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/policyd/policyd/bench/machine"
)

// Baseline is what a later run on the same hardware is compared against: policyd's numbers
// per case, keyed by Case.Key.
type Baseline struct {
	Key     string                    `json:"key"`
	CPU     string                    `json:"cpu_model"`
	ISA     string                    `json:"onednn_isa"`
	RunID   string                    `json:"run_id"`
	Date    string                    `json:"date_utc"`
	Commit  string                    `json:"commit"`
	Quick   bool                      `json:"quick"`
	Metrics map[string]BaselineMetric `json:"metrics"`
}

// BaselineMetric is one case's numbers.
type BaselineMetric struct {
	P50 int64   `json:"p50_us"`
	P99 int64   `json:"p99_us"`
	RPS float64 `json:"rps"`
}

// Comparison is this run against the baseline of its hardware.
type Comparison struct {
	Key         string       `json:"key"`
	Path        string       `json:"path"`
	Found       bool         `json:"found"`
	BaseRun     string       `json:"base_run,omitempty"`
	BaseCommit  string       `json:"base_commit,omitempty"`
	BaseQuick   bool         `json:"base_quick,omitempty"`
	Tolerance   float64      `json:"tolerance"`
	Compared    int          `json:"compared"`
	Regressions []Regression `json:"regressions"`
	Saved       string       `json:"saved,omitempty"`
}

// Regression is one metric beyond the tolerance.
type Regression struct {
	Case   string  `json:"case"`
	Metric string  `json:"metric"` // p50, p99 (up is worse) or req/s (down is worse)
	Base   float64 `json:"base"`
	Now    float64 `json:"now"`
	Change float64 `json:"change"` // now/base − 1
}

// BaselineKey is the file name (without .json) of a machine's baseline: its CPU model and the
// ISA oneDNN dispatches to; GPU model later.
func BaselineKey(m Machine) string {
	isa := m.OneDNNISA
	if isa == "" {
		isa = "unknown-isa"
	}
	return machine.Slug(m.CPU) + "--" + machine.Slug(isa)
}

// baselineStages are the stages whose cases go into a baseline: fixed loads whose numbers
// mean the same from run to run (open-loop rates and the search depend on each run's probes).
var baselineStages = map[string]bool{"matrix": true, "binary": true, "grpc": true, "batch-sweep": true, "conc-sweep": true}

// NewBaseline takes policyd's cases of a report.
func NewBaseline(r *Report) Baseline {
	b := Baseline{Key: BaselineKey(r.Machine), CPU: r.Machine.CPU, ISA: r.Machine.OneDNNISA, RunID: r.RunID, Date: r.Date,
		Commit: r.Commit, Quick: r.Quick, Metrics: map[string]BaselineMetric{}}
	for _, c := range r.Cases {
		if c.Server == "policyd" && baselineStages[c.Stage] && c.Error == "" && c.Requests > 0 {
			b.Metrics[c.Key()] = BaselineMetric{P50: c.P50, P99: c.P99, RPS: c.RPS}
		}
	}
	return b
}

// Compare flags every case of r whose p50 or p99 rose, or whose req/s fell, by more than tol
// (0.15 = 15 %) against b.
func Compare(b Baseline, r *Report, tol float64) Comparison {
	c := Comparison{Key: b.Key, Found: true, BaseRun: b.RunID, BaseCommit: b.Commit, BaseQuick: b.Quick, Tolerance: tol}
	now := NewBaseline(r).Metrics
	keys := make([]string, 0, len(now))
	for k := range now {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		base, ok := b.Metrics[k]
		if !ok {
			continue
		}
		n := now[k]
		c.Compared++
		up := func(metric string, bv, nv float64) {
			if bv > 0 && nv/bv-1 > tol {
				c.Regressions = append(c.Regressions, Regression{Case: k, Metric: metric, Base: bv, Now: nv, Change: nv/bv - 1})
			}
		}
		up("p50", float64(base.P50), float64(n.P50))
		up("p99", float64(base.P99), float64(n.P99))
		if base.RPS > 0 && 1-n.RPS/base.RPS > tol {
			c.Regressions = append(c.Regressions, Regression{Case: k, Metric: "req/s", Base: base.RPS, Now: n.RPS, Change: n.RPS/base.RPS - 1})
		}
	}
	return c
}

// LoadBaseline reads DIR/<key>.json; a missing file is (nil, nil).
func LoadBaseline(dir, key string) (*Baseline, error) {
	path := filepath.Join(dir, key+".json")
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var b Baseline
	if err := json.Unmarshal(raw, &b); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if b.Key != key || len(b.Metrics) == 0 {
		return nil, fmt.Errorf("%s: key %q and %d metrics, want key %q and some metrics", path, b.Key, len(b.Metrics), key)
	}
	return &b, nil
}

// SaveBaseline writes b to DIR/<key>.json and returns the path.
func SaveBaseline(dir string, b Baseline) (string, error) {
	if len(b.Metrics) == 0 {
		return "", errors.New("no policyd case succeeded: nothing to save as a baseline")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	raw, err := json.MarshalIndent(b, "", " ")
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, b.Key+".json")
	return path, os.WriteFile(path, append(raw, '\n'), 0o644)
}

func (r *Report) baselineSection(t *table) {
	c := r.Baseline
	if c == nil {
		return
	}
	t.line("## 8. Baseline comparison\n")
	switch {
	case !c.Found:
		t.line("No baseline for this hardware (`%s`). `policyctl bench suite -save-baseline` (or `BENCH_SAVE_BASELINE=1 make bench`) writes one.\n", c.Path)
	default:
		t.line("Against `%s` (run %s, commit `%s`%s): %d policyd cases compared, tolerance ±%.0f %% (p50/p99 up or req/s down).\n",
			c.Path, c.BaseRun, c.BaseCommit, map[bool]string{true: ", a quick run", false: ""}[c.BaseQuick], c.Compared, 100*c.Tolerance)
		if c.BaseQuick != r.Quick {
			t.line("The baseline was a %s run and this one is not: durations differ, expect noise.\n", map[bool]string{true: "quick", false: "full"}[c.BaseQuick])
		}
		if len(c.Regressions) == 0 {
			t.line("**No regression** beyond the tolerance.\n")
		} else {
			t.line("**%d regression(s)** beyond the tolerance (a 2-core VM shared with other work is noisy: rerun before believing one):\n", len(c.Regressions))
			t.head("case", "metric", "baseline", "now", "change")
			for _, g := range c.Regressions {
				t.row(g.Case, g.Metric, num(g.Base, 0), num(g.Now, 0), fmt.Sprintf("%+.0f %%", 100*g.Change))
			}
			t.line("")
		}
	}
	if c.Saved != "" {
		t.line("This run was saved as the new baseline: `%s`.\n", c.Saved)
	}
}
