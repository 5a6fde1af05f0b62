package engine

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/policyd/policyd/bench/machine"
	"github.com/policyd/policyd/bench/textfmt"
)

// Case is the outcome of one model at one batch: both peers' runs, in mode order.
type Case struct {
	Model      string   `json:"model"`
	Batch      int      `json:"batch"`
	Policyd    []Result `json:"policyd"`
	ORT        []Result `json:"ort"`
	PolicydErr string   `json:"policyd_error,omitempty"`
	ORTErr     string   `json:"ort_error,omitempty"`
	RatioP50   *float64 `json:"ratio_p50_st,omitempty"`    // policyd st p50 / ORT st p50 (lower is better)
	RatioThrpt *float64 `json:"ratio_thrpt_par,omitempty"` // policyd par inf/s / ORT par inf/s (higher is better)
	RatioSTInf *float64 `json:"ratio_thrpt_st,omitempty"`  // policyd st inf/s / ORT st inf/s
	Check      *Check   `json:"check,omitempty"`           // policyd's outputs vs ORT's (Config.Check)
	// OtherCores is the average number of cores other processes kept busy while the case ran
	// (both peers); -1 unknown. Anything near 0.1 or above means the numbers are disturbed.
	OtherCores float64 `json:"other_cpu_cores"`
}

// noisyCores is the OtherCores above which a case is flagged as disturbed.
const noisyCores = 0.1

// refusedPrefix starts a PolicydErr for a model policyd refused to load (UNSUPPORTED).
const refusedPrefix = "refused:"

func findRun(runs []Result, mode string) *Result {
	for i := range runs {
		if runs[i].Mode == mode {
			return &runs[i]
		}
	}
	return nil
}

func ratio(a, b float64) *float64 {
	if a <= 0 || b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return nil
	}
	r := round(a/b, 3)
	return &r
}

// fillRatios sets the ratio fields from the runs.
func (c *Case) fillRatios() {
	if o, r := findRun(c.Policyd, "st"), findRun(c.ORT, "st"); o != nil && r != nil {
		c.RatioP50 = ratio(o.P50, r.P50)
		c.RatioSTInf = ratio(o.InferencesPerS, r.InferencesPerS)
	}
	if o, r := findRun(c.Policyd, "par"), findRun(c.ORT, "par"); o != nil && r != nil {
		c.RatioThrpt = ratio(o.InferencesPerS, r.InferencesPerS)
	}
}

// Machine describes where and how a report was made.
type Machine struct {
	Date       string `json:"date_utc"`
	Command    string `json:"command"`
	NProc      int    `json:"nproc"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	CPU        string `json:"cpu_model"`
	SIMD       string `json:"simd"`
	Go         string `json:"go"`
	OSArch     string `json:"os_arch"`
	Library    string `json:"libpolicyd"`
	LibFile    string `json:"libpolicyd_file"`
	Backends   string `json:"backends"`
	Commit     string `json:"commit"`
	Node       string `json:"node"`
	ORT        string `json:"onnxruntime_node"`
	LoadBefore string `json:"loadavg_before"`
	// Average cores other processes used in the second before the run and during the whole run.
	OtherBefore float64 `json:"other_cpu_cores_before"`
	OtherDuring float64 `json:"other_cpu_cores_during"`
	LoadAfter   string  `json:"loadavg_after"`
	Settings    string  `json:"settings"`
	Warning     string  `json:"warning,omitempty"`
}

// busyWarning is set when other processes kept at least noisyCores busy in the second before
// the run: they then share the cores, and neither peer's numbers mean much. (The load average
// alone would also flag a machine that just went quiet: it decays over minutes.)
func busyWarning(other float64, load string) string {
	if other < noisyCores {
		return ""
	}
	return fmt.Sprintf("the machine was busy when the run started (other processes used %.2f cores in the second before; load average %s): "+
		"check the other column of the detail table; runs disturbed on their last try are listed below it", other, load)
}

// loadedLibrary is the path of the libpolicyd.so this process mapped (LD_LIBRARY_PATH or the
// RUNPATH decide which) and the first 12 hex digits of its SHA-256, "" where unknown.
func loadedLibrary() string {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return ""
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || filepath.Base(f[5]) != "libpolicyd.so" {
			continue
		}
		data, err := os.ReadFile(f[5])
		if err != nil {
			return f[5]
		}
		sum := sha256.Sum256(data)
		return fmt.Sprintf("%s (sha256 %x)", f[5], sum[:6])
	}
	return ""
}

// ShellQuote joins args as a copy-pastable POSIX shell command.
func ShellQuote(args []string) string { return machine.ShellQuote(args) }

// Target is one goal of the engine issue, checked against a report.
type Target struct {
	What   string   `json:"what"`
	Model  string   `json:"model"`
	Batch  int      `json:"batch"`
	Metric string   `json:"metric"` // "p50" (ratio must be <= Limit) or "par" / "st" inf/s (>= Limit)
	Limit  float64  `json:"limit"`
	Ratio  *float64 `json:"ratio"`
	Status string   `json:"status"` // met, missed, not measured
}

// Targets are the goals: batch-1 single-thread p50 of mlp-small, mlp-med and lstm at
// most 0.8× ORT's; batch-256 throughput at least 1.2× ORT's (checked for every model, with
// the par mode as the throughput mode and st shown beside it).
func Targets(cases []Case) []Target {
	var ts []Target
	get := func(model string, batch int) *Case {
		for i := range cases {
			if cases[i].Model == model && cases[i].Batch == batch {
				return &cases[i]
			}
		}
		return nil
	}
	check := func(t Target, r *float64) Target {
		t.Ratio = r
		c := get(t.Model, t.Batch)
		switch {
		case r == nil && c != nil && strings.HasPrefix(c.PolicydErr, refusedPrefix):
			t.Status = c.PolicydErr
		case r == nil:
			t.Status = "not measured"
		case t.Metric == "p50" && *r <= t.Limit, t.Metric != "p50" && *r >= t.Limit:
			t.Status = "met"
		default:
			t.Status = "missed"
		}
		return t
	}
	b1 := []string{"mlp-small", "mlp-med", "lstm"}
	if !slices.ContainsFunc(cases, func(c Case) bool { return slices.Contains(b1, c.Model) }) {
		b1 = nil // a run of other models (make bench-quant's) does not list these as not measured
	}
	for _, m := range b1 {
		t := Target{What: "batch-1 latency, st p50 ≤ 0.8× ORT", Model: m, Batch: 1, Metric: "p50", Limit: 0.8}
		var r *float64
		if c := get(m, 1); c != nil {
			r = c.RatioP50
		}
		ts = append(ts, check(t, r))
	}
	// make bench-quant's models (pd_make_bench_models): the Einsum attention policy's latency,
	// and the int8 mlp-large's throughput against policyd's own f32 mlp-large.
	if get("attention-einsum", 1) != nil {
		ts = append(ts, check(Target{What: "batch-1 latency, st p50 ≤ 0.8× ORT", Model: "attention-einsum", Batch: 1, Metric: "p50", Limit: 0.8},
			get("attention-einsum", 1).RatioP50))
	}
	if q := get("mlp-large-int8", 256); q != nil {
		f := get("mlp-large", 256)
		for _, mode := range []string{"par", "st"} {
			var r *float64
			if f != nil {
				if a, b := findRun(q.Policyd, mode), findRun(f.Policyd, mode); a != nil && b != nil {
					r = ratio(a.InferencesPerS, b.InferencesPerS)
				}
			}
			ts = append(ts, check(Target{What: "batch-256 throughput, " + mode + " inf/s ≥ 2× policyd's f32 mlp-large",
				Model: "mlp-large-int8", Batch: 256, Metric: mode, Limit: 2}, r))
		}
	}
	seen := map[string]bool{}
	for _, c := range cases {
		if c.Batch != 256 || seen[c.Model] {
			continue
		}
		seen[c.Model] = true
		ts = append(ts, check(Target{What: "batch-256 throughput, par inf/s ≥ 1.2× ORT", Model: c.Model, Batch: 256, Metric: "par", Limit: 1.2}, c.RatioThrpt))
		ts = append(ts, check(Target{What: "batch-256 throughput, st inf/s ≥ 1.2× ORT", Model: c.Model, Batch: 256, Metric: "st", Limit: 1.2}, c.RatioSTInf))
	}
	return ts
}

// fmtNum formats with thousands separators and d decimals; "–" for a missing value (NaN or
// not positive).
func fmtNum(v float64, d int) string {
	if math.IsNaN(v) || v <= 0 {
		return "–"
	}
	return textfmt.Num(v, d)
}

func fmtRatio(r *float64) string {
	if r == nil {
		return "–"
	}
	return fmt.Sprintf("%.2f×", *r)
}

func runField(runs []Result, mode string, f func(Result) float64, d int) string {
	if r := findRun(runs, mode); r != nil {
		return fmtNum(f(*r), d)
	}
	return "–"
}

// WriteMarkdown renders a report.
func WriteMarkdown(w io.Writer, m Machine, cases []Case) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Engine benchmark: policyd vs onnxruntime-node — %s\n\n", m.Date)
	fmt.Fprintf(&b, "Command: `%s`\n\n", m.Command)
	if m.Warning != "" {
		fmt.Fprintf(&b, "> **Warning:** %s.\n\n", m.Warning)
	}
	b.WriteString("| what | value |\n|---|---|\n")
	for _, kv := range [][2]string{
		{"date_utc", m.Date}, {"nproc", fmt.Sprint(m.NProc)}, {"GOMAXPROCS", fmt.Sprint(m.GOMAXPROCS)},
		{"cpu_model", m.CPU}, {"simd", m.SIMD}, {"go", m.Go}, {"os_arch", m.OSArch},
		{"libpolicyd", m.Library}, {"libpolicyd_file", m.LibFile}, {"backends", m.Backends}, {"commit", m.Commit},
		{"node", m.Node}, {"onnxruntime_node", m.ORT}, {"settings", m.Settings},
		{"loadavg_before", m.LoadBefore}, {"loadavg_after", m.LoadAfter},
		{"other_cpu_cores_before", fmt.Sprintf("%.2f", m.OtherBefore)}, {"other_cpu_cores_during", fmt.Sprintf("%.2f", m.OtherDuring)},
	} {
		v := kv[1]
		if v == "" {
			v = "–"
		}
		fmt.Fprintf(&b, "| %s | `%s` |\n", kv[0], v)
	}
	b.WriteString("\nLatency of one inference call in µs (policyd: `Context.Run`, one cgo call; ORT: `await session.run()`); " +
		"inf/s = batch × calls/s. **st** = one context/session, 1 intra-op thread. **par** = nproc contexts/sessions (1 thread each) " +
		"running concurrently, inf/s summed. ratio p50 = policyd/ORT st p50 (< 1 is faster); ratio thrpt = policyd/ORT par inf/s (> 1 is faster). " +
		"Both peers get bit-identical seeded inputs.\n\n")
	b.WriteString("| model | batch | policyd st p50 | p99 | inf/s | ORT st p50 | p99 | inf/s | ratio p50 (ours/ORT) | policyd par inf/s | ORT par inf/s | ratio thrpt |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	p50 := func(r Result) float64 { return r.P50 }
	p99 := func(r Result) float64 { return r.P99 }
	inf := func(r Result) float64 { return r.InferencesPerS }
	var errs []string
	for _, c := range cases {
		fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", c.Model, c.Batch,
			runField(c.Policyd, "st", p50, 1), runField(c.Policyd, "st", p99, 1), runField(c.Policyd, "st", inf, 0),
			runField(c.ORT, "st", p50, 1), runField(c.ORT, "st", p99, 1), runField(c.ORT, "st", inf, 0),
			fmtRatio(c.RatioP50),
			runField(c.Policyd, "par", inf, 0), runField(c.ORT, "par", inf, 0), fmtRatio(c.RatioThrpt))
		if c.PolicydErr != "" {
			errs = append(errs, fmt.Sprintf("- %s b%d policyd: %s", c.Model, c.Batch, c.PolicydErr))
		}
		if c.ORTErr != "" {
			errs = append(errs, fmt.Sprintf("- %s b%d ORT: %s", c.Model, c.Batch, c.ORTErr))
		}
	}
	b.WriteString("\nDetail (µs; iters = timed calls; cores = average CPU this peer used (policyd: the timed loop; ORT: " +
		"its whole process, setup included); other = average CPU all other processes used meanwhile, from /proc/stat):\n\n")
	b.WriteString("| model | batch | peer | mode | workers | iters | p50 | p95 | p99 | mean | inf/s | cores | other | tries |\n" +
		"|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	var noisy []string
	cores := func(v float64) string {
		if v < 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", v)
	}
	for _, c := range cases {
		for _, pr := range []struct {
			name string
			runs []Result
		}{{"policyd", c.Policyd}, {"ORT", c.ORT}} {
			for _, r := range pr.runs {
				fmt.Fprintf(&b, "| %s | %d | %s | %s | %d | %d | %s | %s | %s | %s | %s | %s | %s | %d |\n", c.Model, c.Batch, pr.name, r.Mode,
					r.Workers, r.Iters, fmtNum(r.P50, 1), fmtNum(r.P95, 1), fmtNum(r.P99, 1), fmtNum(r.Mean, 1), fmtNum(r.InferencesPerS, 0),
					cores(r.OwnCores), cores(r.OtherCores), max(r.Attempts, 1))
				if r.OtherCores >= noisyCores {
					noisy = append(noisy, fmt.Sprintf("%s b%d %s %s (%.2f)", c.Model, c.Batch, pr.name, r.Mode, r.OtherCores))
				}
			}
		}
	}
	if len(noisy) > 0 {
		fmt.Fprintf(&b, "\n> **Disturbed runs** (other processes used ≥ %.1f cores meanwhile, on the last try too; rerun before trusting them): %s.\n",
			noisyCores, strings.Join(noisy, ", "))
	}
	var checks []string
	for _, c := range cases {
		if c.Check != nil {
			checks = append(checks, fmt.Sprintf("| %s | %d | %.3g | %.3g + %.0e·\\|ORT\\| | %s | %s |", c.Model, c.Batch,
				c.Check.MaxAbsDiff, c.Check.Atol, checkRtol, c.Check.Status(), c.Check.Worst))
		}
	}
	if len(checks) > 0 {
		b.WriteString("\nOutputs vs ORT (one run each on the same seeded inputs; max |policyd − ORT| over every output element):\n\n" +
			"| model | batch | max \\|diff\\| | tolerance | status | largest at |\n|---|---|---|---|---|---|\n" +
			strings.Join(checks, "\n") + "\n")
	}
	if ts := Targets(cases); len(ts) > 0 {
		b.WriteString("\nTargets:\n\n| target | model | ratio | status |\n|---|---|---|---|\n")
		for _, t := range ts {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", t.What, t.Model, fmtRatio(t.Ratio), t.Status)
		}
	}
	if len(errs) > 0 {
		b.WriteString("\nErrors:\n\n" + strings.Join(errs, "\n") + "\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// jsonLine writes v as one line.
func jsonLine(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
