package suite

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/policyd/policyd/bench/load"
	"github.com/policyd/policyd/bench/peers"
	"github.com/policyd/policyd/bench/textfmt"
)

// Report is everything one suite run measured; report.json is it, report.md renders it.
type Report struct {
	RunID    string         `json:"run_id"`
	Date     string         `json:"date_utc"`
	Command  string         `json:"command"`
	Commit   string         `json:"commit,omitempty"`
	Quick    bool           `json:"quick"`
	ElapsedS float64        `json:"elapsed_s"`
	Machine  Machine        `json:"machine"`
	Peers    Peers          `json:"peers"`
	Servers  []Server       `json:"servers"`
	Cases    []Case         `json:"cases"`
	Wrk      []peers.WrkRow `json:"wrk,omitempty"`
	Targets  []Target       `json:"targets"`
	Memory   []MemoryRow    `json:"memory"`
	Search   *Search        `json:"batching_search,omitempty"`
	Baseline *Comparison    `json:"baseline,omitempty"`
	Failures []string       `json:"failures,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
}

// Machine is the hardware and software the numbers come from.
type Machine struct {
	CPU           string `json:"cpu_model"`
	SIMD          string `json:"simd_flags"`
	OneDNNISA     string `json:"onednn_isa"`
	OneDNNVersion string `json:"onednn_version"`
	OneDNNRuntime string `json:"onednn_runtime"`
	Nproc         int    `json:"nproc"`
	GOMAXPROCS    int    `json:"gomaxprocs"`
	Go            string `json:"go"`
	Kernel        string `json:"kernel"`
	Node          string `json:"node,omitempty"`
	LoadBefore    string `json:"loadavg_before"`
	LoadAfter     string `json:"loadavg_after"`
}

// Peers says how the peers were measured.
type Peers struct {
	Dir    string            `json:"dir"`
	Setup  peers.Setup       `json:"setup"`
	RunAll string            `json:"run_all"` // what happened to run_all.sh
	RawDir string            `json:"raw_dir,omitempty"`
	Bodies map[string]string `json:"bodies"` // model_bB -> where its body and reference came from
}

// Server is one server measured.
type Server struct {
	Name string `json:"name"`
	What string `json:"what"`
}

// Case is one load run.
type Case struct {
	Stage  string `json:"stage"` // matrix, binary, batch-sweep, conc-sweep, open-loop, memory, search
	Server string `json:"server"`
	Model  string `json:"model"`
	Batch  int    `json:"batch"`
	Source string `json:"source"` // our generator or run_all.sh's loadgen
	Config string `json:"config,omitempty"`
	Error  string `json:"error,omitempty"`
	// EngineUS is the engine's mean time per request over the run (shm stage), µs.
	EngineUS *float64 `json:"engine_us,omitempty"`
	load.Result
}

// InfPerS is inferences per second: requests × batch.
func (c Case) InfPerS() float64 { return c.RPS * float64(c.Batch) }

// Key names a case for baselines: stage/server/protocol/mode/model/bB/cC.
// A ghz row's key ends in /ghz: it measures what our generator's grpc row beside it does.
func (c Case) Key() string {
	k := fmt.Sprintf("%s/%s/%s/%s/%s/b%d/c%d", c.Stage, c.Server, c.Protocol, c.Mode, c.Model, c.Batch, c.Concurrency)
	if isGhz(c) {
		k += "/ghz"
	}
	return k
}

// MemoryRow is policyd's memory serving one model, at rest and under load at one batch.
type MemoryRow struct {
	Model       string   `json:"model"`
	Batch       int      `json:"batch"` // 0: idle after start
	Concurrency int      `json:"concurrency,omitempty"`
	RSS         int64    `json:"rss_bytes"`      // at the end of the run
	MaxRSS      int64    `json:"max_rss_bytes"`  // the most sampled (every 50 ms) during the run
	PeakRSS     int64    `json:"peak_rss_bytes"` // VmHWM: the process's peak since start
	HeapInuse   *float64 `json:"go_heap_inuse_bytes,omitempty"`
	Engine      *float64 `json:"engine_memory_bytes,omitempty"` // policyd_engine_memory_bytes, when /metrics has it
	RPS         float64  `json:"rps,omitempty"`
	Error       string   `json:"error,omitempty"`
}

// Target is one goal of the issue with its measured ratio.
type Target struct {
	What   string   `json:"what"`
	Limit  float64  `json:"limit"`
	Cmp    string   `json:"cmp"` // "<=" or ">="
	Value  *float64 `json:"value"`
	Detail string   `json:"detail"`
	Status string   `json:"status"` // PASS, MISS, n/a
}

func (t *Target) judge(v float64, ok bool, detail string) {
	t.Detail = detail
	if !ok || math.IsNaN(v) || math.IsInf(v, 0) {
		t.Status = "n/a"
		return
	}
	v = math.Round(v*1000) / 1000
	t.Value = &v
	pass := v <= t.Limit
	if t.Cmp == ">=" {
		pass = v >= t.Limit
	}
	if pass {
		t.Status = "PASS"
	} else {
		t.Status = "MISS"
	}
}

// find returns the first case matching the filter.
func find(cases []Case, f func(Case) bool) (Case, bool) {
	for _, c := range cases {
		if c.Error == "" && c.Requests > 0 && f(c) {
			return c, true
		}
	}
	return Case{}, false
}

func closedJSON(stage, server, model string, batch, conc int) func(Case) bool {
	return func(c Case) bool {
		return (stage == "" || c.Stage == stage) && c.Server == server && c.Model == model && c.Batch == batch &&
			c.Concurrency == conc && c.Mode == "closed" && c.Protocol == "json"
	}
}

// computeTargets reads the four targets off the cases and the memory rows.
func computeTargets(cases []Case, mem []MemoryRow) []Target {
	var ts []Target
	ours, ok1 := find(cases, closedJSON("matrix", "policyd", "mlp-med", 1, 1))
	floor, ok2 := find(cases, closedJSON("matrix", "floor", "mlp-med", 1, 1))
	node, ok3 := find(cases, closedJSON("matrix", "node", "mlp-med", 1, 1))
	t := Target{What: "mlp-med, JSON, batch 1, 1 connection: policyd p50 / floor p50", Limit: 1.3, Cmp: "<="}
	t.judge(float64(ours.P50)/float64(floor.P50), ok1 && ok2, fmt.Sprintf("%s / %s µs", us(ours.P50, ok1), us(floor.P50, ok2)))
	ts = append(ts, t)
	t = Target{What: "mlp-med, JSON, batch 1, 1 connection: policyd p50 / Node+ORT p50", Limit: 0.6, Cmp: "<="}
	t.judge(float64(ours.P50)/float64(node.P50), ok1 && ok3, fmt.Sprintf("%s / %s µs", us(ours.P50, ok1), us(node.P50, ok3)))
	ts = append(ts, t)

	ours16, ok1 := find(cases, closedJSON("matrix", "policyd", "mlp-med", 1, 16))
	node16, ok3 := find(cases, closedJSON("matrix", "node", "mlp-med", 1, 16))
	t = Target{What: "mlp-med, JSON, batch 1, 16 connections: policyd req/s / Node+ORT req/s", Limit: 3, Cmp: ">="}
	t.judge(ours16.RPS/node16.RPS, ok1 && ok3, fmt.Sprintf("%s / %s req/s", rps(ours16.RPS, ok1), rps(node16.RPS, ok3)))
	ts = append(ts, t)

	js, ok1 := find(cases, closedJSON("matrix", "policyd", "mlp-med", 32, 16))
	bin, ok2 := find(cases, func(c Case) bool {
		return c.Stage == "binary" && c.Server == "policyd" && c.Model == "mlp-med" && c.Batch == 32 && c.Concurrency == 16
	})
	t = Target{What: "mlp-med, batch 32, 16 connections: policyd binary req/s / JSON req/s", Limit: 3, Cmp: ">="}
	t.judge(bin.RPS/js.RPS, ok1 && ok2, fmt.Sprintf("%s / %s req/s", rps(bin.RPS, ok2), rps(js.RPS, ok1)))
	ts = append(ts, t)

	var maxRSS int64
	var runs []string
	for _, m := range mem {
		if m.Model == "mlp-med" && m.Batch > 0 && m.Error == "" {
			maxRSS = max(maxRSS, m.MaxRSS)
			runs = append(runs, fmt.Sprintf("b%d c%d", m.Batch, m.Concurrency))
		}
	}
	t = Target{What: "RSS of policyd serving one policy (mlp-med) under load, MB", Limit: 100, Cmp: "<="}
	t.judge(float64(maxRSS)/1e6, maxRSS > 0, "most sampled RSS over the memory runs "+strings.Join(runs, ", "))
	ts = append(ts, t)
	ts = append(ts, grpcTargets(cases)...)
	return append(ts, shmTargets(cases)...)
}

// grpcTargets are issue 16's gRPC targets, from the grpc stage (HTTP binary and gRPC measured
// in turn on the same policyd): gRPC unary at 1 connection no slower at p50, at 16 connections
// no less throughput. Judged on our generator's rows, which measure both protocols alike; ghz's
// unary row is in the numbers as the independent check.
func grpcTargets(cases []Case) []Target {
	row := func(proto string, conc int, ghz bool) (Case, bool) {
		return find(cases, func(c Case) bool {
			return c.Stage == "grpc" && c.Server == "policyd" && c.Model == "mlp-med" && c.Batch == 1 && c.Concurrency == conc &&
				c.Mode == "closed" && c.Protocol == proto && isGhz(c) == ghz
		})
	}
	var ts []Target
	h, ok1 := row("binary", 1, false)
	g, ok2 := row("grpc", 1, false)
	z, ok3 := row("grpc", 1, true)
	t := Target{What: "gRPC unary, mlp-med, batch 1, 1 connection: p50 / HTTP binary p50", Limit: 1, Cmp: "<="}
	t.judge(float64(g.P50)/float64(h.P50), ok1 && ok2, fmt.Sprintf("%s / %s µs (ghz: %s µs)", us(g.P50, ok2), us(h.P50, ok1), us(z.P50, ok3)))
	ts = append(ts, t)
	h, ok1 = row("binary", 16, false)
	g, ok2 = row("grpc", 16, false)
	z, ok3 = row("grpc", 16, true)
	t = Target{What: "gRPC unary, mlp-med, batch 1, 16 connections: req/s / HTTP binary req/s", Limit: 1, Cmp: ">="}
	t.judge(g.RPS/h.RPS, ok1 && ok2, fmt.Sprintf("%s / %s req/s (ghz: %s req/s)", rps(g.RPS, ok2), rps(h.RPS, ok1), rps(z.RPS, ok3)))
	return append(ts, t)
}

func us(v int64, ok bool) string {
	if !ok {
		return "–"
	}
	return num(float64(v), 0)
}

func rps(v float64, ok bool) string {
	if !ok {
		return "–"
	}
	return num(v, 0)
}

// num formats v with thousands separators and d decimals.
func num(v float64, d int) string { return textfmt.Num(v, d) }

func mb(v int64) string {
	if v <= 0 {
		return "n/a"
	}
	return num(float64(v)/1e6, 1)
}

func mbp(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return num(*v/1e6, 1)
}

// WriteFiles writes report.json, report.md and latency-throughput.svg into dir.
func (r *Report) WriteFiles(dir string) error {
	b, err := json.MarshalIndent(r, "", " ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(dir, "report.md"))
	if err != nil {
		return err
	}
	if err := r.WriteMarkdown(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "latency-throughput.svg"), []byte(r.SVG()), 0o644)
}

type table struct {
	w    io.Writer
	err  error
	cols int
}

func (t *table) row(cells ...string) {
	if t.err != nil {
		return
	}
	_, t.err = fmt.Fprintf(t.w, "| %s |\n", strings.Join(cells, " | "))
}

func (t *table) head(cells ...string) {
	t.row(cells...)
	sep := make([]string, len(cells))
	for i := range sep {
		sep[i] = "---"
	}
	t.row(sep...)
}

func (t *table) line(format string, a ...any) {
	if t.err != nil {
		return
	}
	_, t.err = fmt.Fprintf(t.w, format+"\n", a...)
}

// WriteMarkdown renders the report.
func (r *Report) WriteMarkdown(w io.Writer) error {
	t := &table{w: w}
	mode := "full"
	if r.Quick {
		mode = "quick (BENCH_QUICK=1: shorter runs, fewer points)"
	}
	t.line("# policyd benchmark — %s (UTC)\n", r.Date)
	t.line("Run `%s`, %s, commit `%s`, %.0f s. Command: `%s`. All servers and load generators ran on this machine over 127.0.0.1.\n",
		r.RunID, mode, r.Commit, r.ElapsedS, r.Command)

	t.line("## Machine\n")
	t.head("what", "value")
	m := r.Machine
	t.row("CPU", m.CPU)
	t.row("ISA flags", m.SIMD)
	t.row("oneDNN dispatches to", fmt.Sprintf("%s (oneDNN %s, runtime %s; from ONEDNN_VERBOSE=1)", orNA(m.OneDNNISA), orNA(m.OneDNNVersion), orNA(m.OneDNNRuntime)))
	t.row("nproc / GOMAXPROCS", fmt.Sprintf("%d / %d", m.Nproc, m.GOMAXPROCS))
	t.row("Go", m.Go)
	t.row("kernel", m.Kernel)
	t.row("node", orNA(m.Node))
	t.row("load average before / after", m.LoadBefore+" / "+m.LoadAfter)
	t.line("")

	t.line("## Targets\n")
	t.line("From the issue (same run; not asserted in tests). Ratios are policyd over the peer.\n")
	t.head("target", "limit", "measured", "status", "numbers")
	for _, x := range r.Targets {
		v := "–"
		if x.Value != nil {
			v = fmt.Sprintf("%.2f", *x.Value)
		}
		status := x.Status
		if x.Status == "MISS" && x.Value != nil {
			if x.Cmp == "<=" {
				status = fmt.Sprintf("MISS (%.0f %% over)", 100*(*x.Value/x.Limit-1))
			} else {
				status = fmt.Sprintf("MISS (%.0f %% short)", 100*(1-*x.Value/x.Limit))
			}
		}
		t.row(x.What, x.Cmp+" "+num(x.Limit, 1), v, "**"+status+"**", x.Detail)
	}
	t.line("")

	if len(r.Failures) > 0 {
		t.line("## Failures\n")
		for _, f := range r.Failures {
			t.line("- %s", f)
		}
		t.line("")
	}

	t.line("## Peers\n")
	t.line("Harness `%s`. run_all.sh: %s.\n", r.Peers.Dir, r.Peers.RunAll)
	if len(r.Peers.Setup.Missing) > 0 {
		t.line("Not set up on this machine (run `bash %s/setup.sh` as root once to get them):\n", r.Peers.Dir)
		for _, m := range r.Peers.Setup.Missing {
			t.line("- %s", m)
		}
		t.line("")
	}
	t.head("server", "what")
	for _, s := range r.Servers {
		t.row(s.Name, s.What)
	}
	t.line("")
	var keys []string
	for k := range r.Peers.Bodies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	t.line("Request bodies and references:\n")
	for _, k := range keys {
		t.line("- `%s`: %s", k, r.Peers.Bodies[k])
	}
	t.line("")

	r.caseTable(t, "matrix", "## 1. Closed loop, KServe v2 JSON: every server, same bodies",
		"C connections each with one request in flight; latency µs as the client sees it; inf/s = req/s × batch; srv CPU = the server's CPU time per request; "+
			"other cores = CPU that processes other than the load generator and the server used meanwhile (bold from 0.1: disturbed; compare such rows with care).")
	r.caseTable(t, "binary", "## 2. Binary tensor data extension (policyd)",
		"Same cases as section 1 with the inputs and outputs as raw little-endian FP32 after a JSON header (`Inference-Header-Content-Length`).")
	r.caseTable(t, "grpc", "## 2b. gRPC beside HTTP binary (policyd, JSON-free)",
		"KServe v2 gRPC (`inference.GRPCInferenceService`) with raw FP32 tensors (`raw_input_contents`/`raw_output_contents`), one HTTP/2 connection per worker, "+
			"measured in turn with HTTP binary at the same settings on the same policyd. grpc = unary ModelInfer; grpc-stream = ModelStreamInfer, one stream per connection, "+
			"one request in flight on it (latency send → answer). Source `policyctl bench load` is our generator (first answer checked against the reference); "+
			"`ghz` is the independent one (github.com/bojand/ghz, `make tools`; unary only: its streaming calls time whole streams, not messages), sending the same message. "+
			"srv CPU µs/req is the server's CPU over the measured time per answered request.")
	r.shmTable(t)
	r.caseTable(t, "batch-sweep", "## 3. Batch sweep (policyd, mlp-med)", "")
	r.caseTable(t, "conc-sweep", "## 4. Concurrency sweep (mlp-med, batch 1, JSON)", "")
	r.openTable(t)
	if len(r.Wrk) > 0 {
		t.line("## Max throughput (run_all.sh's wrk, 64 connections)\n")
		t.head("server", "model", "batch", "req/s", "inf/s", "errors")
		for _, w := range r.Wrk {
			t.row(w.Server, w.Model, fmt.Sprint(w.Batch), num(w.RPS, 0), num(w.RPS*float64(w.Batch), 0), fmt.Sprint(w.Errors))
		}
		t.line("")
	}
	r.memoryTable(t)
	r.searchSection(t)
	r.baselineSection(t)
	if len(r.Notes) > 0 {
		t.line("## Notes\n")
		for _, n := range r.Notes {
			t.line("- %s", n)
		}
		t.line("")
	}
	return t.err
}

// others shows the cores other processes used during a case, in bold when they disturbed it.
func others(v *float64) string {
	switch {
	case v == nil:
		return "–"
	case *v >= noisyCores:
		return "**" + num(*v, 2) + "**"
	}
	return num(*v, 2)
}

// noisyCores is the OtherCores from which a case counts as disturbed by other processes.
const noisyCores = 0.1

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

func (r *Report) caseTable(t *table, stage, title, intro string) {
	var cs []Case
	for _, c := range r.Cases {
		if c.Stage == stage {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return
	}
	t.line("%s\n", title)
	if intro != "" {
		t.line("%s\n", intro)
	}
	t.head("server", "proto", "model", "batch", "C", "p50", "p90", "p99", "p99.9", "max", "req/s", "inf/s", "srv CPU µs/req", "other cores", "errors", "source")
	for _, c := range cs {
		if c.Error != "" {
			t.row(c.Server, c.Protocol, c.Model, fmt.Sprint(c.Batch), fmt.Sprint(c.Concurrency), "**failed**: "+c.Error, "", "", "", "", "", "", "", "", "", c.Source)
			continue
		}
		cpu := "–"
		if c.ServerCPUPerReq != nil {
			cpu = num(*c.ServerCPUPerReq, 1)
		}
		t.row(c.Server, c.Protocol, c.Model, fmt.Sprint(c.Batch), fmt.Sprint(c.Concurrency), num(float64(c.P50), 0), num(float64(c.P90), 0),
			num(float64(c.P99), 0), num(float64(c.P999), 0), num(float64(c.Max), 0), num(c.RPS, 0), num(c.InfPerS(), 0), cpu,
			others(c.OtherCores), fmt.Sprint(c.Errors), c.Source)
	}
	t.line("")
}

func (r *Report) openTable(t *table) {
	var cs []Case
	for _, c := range r.Cases {
		if c.Stage == "open-loop" {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return
	}
	t.line("## 5. Open loop (mlp-med, batch 1, JSON): latency from the intended send time\n")
	t.line("Poisson arrivals at a fixed rate (fractions of each server's closed-loop 16-connection req/s), " +
		"latency measured from each request's due time, so queueing behind a slow answer counts (no coordinated omission). " +
		"Requests due while the outstanding bound was reached are dropped; late = sent > 1 ms after due. " +
		"send lag = due → sent, the generator's own precision on this machine. Plotted in `latency-throughput.svg`.\n")
	t.head("server", "target req/s", "achieved req/s", "p50", "p90", "p99", "p99.9", "max", "service p50", "service p99", "send lag p99", "late", "dropped", "errors", "other cores")
	for _, c := range cs {
		if c.Error != "" {
			t.row(c.Server, num(c.TargetRPS, 0), "**failed**: "+c.Error, "", "", "", "", "", "", "", "", "", "", "", "")
			continue
		}
		svc50, svc99, lag := "–", "–", "–"
		if c.Service != nil {
			svc50, svc99 = num(float64(c.Service.P50), 0), num(float64(c.Service.P99), 0)
		}
		if c.SendLag != nil {
			lag = num(float64(c.SendLag.P99), 0)
		}
		t.row(c.Server, num(c.TargetRPS, 0), num(c.RPS, 0), num(float64(c.P50), 0), num(float64(c.P90), 0), num(float64(c.P99), 0),
			num(float64(c.P999), 0), num(float64(c.Max), 0), svc50, svc99, lag, fmt.Sprint(c.Late), fmt.Sprint(c.Dropped), fmt.Sprint(c.Errors),
			others(c.OtherCores))
	}
	t.line("")
}

func (r *Report) memoryTable(t *table) {
	if len(r.Memory) == 0 {
		return
	}
	t.line("## 6. Memory of policyd serving one model\n")
	t.line("One policyd per model (that model only, default settings). batch 0 = at rest after start-up; " +
		"otherwise under closed-loop JSON load at that batch. RSS at the end of the run, the most RSS sampled every 50 ms during it, " +
		"peak = VmHWM since start (includes loading and compiling the model), Go heap = `go_memstats_heap_inuse_bytes`, " +
		"native arenas = `policyd_engine_memory_bytes` summed over kind (arena, weights; n/a where /metrics does not expose it). MB = 10^6 bytes.\n")
	t.head("model", "batch", "C", "RSS MB", "max RSS MB", "peak RSS MB", "Go heap MB", "native arenas MB", "req/s")
	for _, m := range r.Memory {
		if m.Error != "" {
			t.row(m.Model, fmt.Sprint(m.Batch), fmt.Sprint(m.Concurrency), "**failed**: "+m.Error, "", "", "", "", "")
			continue
		}
		reqs := "–"
		if m.Batch > 0 {
			reqs = num(m.RPS, 0)
		}
		t.row(m.Model, fmt.Sprint(m.Batch), fmt.Sprint(m.Concurrency), mb(m.RSS), mb(m.MaxRSS), mb(m.PeakRSS), mbp(m.HeapInuse), mbp(m.Engine), reqs)
	}
	t.line("")
}
