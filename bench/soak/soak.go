// Package soak measures policyd's memory over time and per request (`policyctl bench soak`,
// `policyctl bench memory`; make bench-soak, make bench-memory, docs/performance.md).
//
// A soak starts bin/policyd on a loopback port serving three models (3DBall from
// examples/repository and two of the peers' models), loads them closed loop over C keep-alive
// connections for a fixed time (package load), samples the server's RSS (/proc/PID/status) and
// Go heap (/metrics) every few seconds, and fits a least-squares line to the RSS after the
// warm-up: its slope, MiB per minute, is the growth a long run would see. Failed requests must
// be 0.
//
// The memory targets (Memory) start a fresh server per case, send one large JSON body and read
// the server's peak RSS (VmHWM) against its idle RSS.
//
// Every server is stopped by its PID before Run returns, also on an error or when ctx ends, and
// is killed with this process should it die (Pdeathsig).
package soak

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/policyd/policyd/bench/load"
	"github.com/policyd/policyd/bench/machine"
	"github.com/policyd/policyd/bench/peers"
	"github.com/policyd/policyd/bench/proc"
	"github.com/policyd/policyd/bench/scrape"
)

// Config is one soak.
type Config struct {
	Root        string        // policyd checkout: examples/repository, testdata/reference
	PeersDir    string        // ../shared/peers (read only)
	OutDir      string        // build/bench; the run writes OutDir/RunID/
	RunID       string        // default soak-<UTC date and time>
	Policyd     string        // the server binary
	Policyctl   string        // for `artifacts add`
	Duration    time.Duration // whole load time, warm-up included
	Exclude     time.Duration // warm-up left out of the slope; 0 = min(5m, Duration/3)
	Every       time.Duration // sampling period
	Connections int           // spread over the models
	Models      []string      // "3DBall" (examples/repository) or peer model names
	Env         []string      // KEY=VALUE added to the server's environment (MALLOC_ARENA_MAX=2, LD_PRELOAD=...)
	MaxSlope    float64       // target: RSS slope after the warm-up, MiB/min
	Command     string        // for the report
	Log         io.Writer
}

// DefaultModels are the soak's three models.
var DefaultModels = []string{"3DBall", "mlp-med", "lstm"}

// Validate checks c and fills its defaults.
func (c *Config) Validate() error {
	var errs []string
	if c.RunID == "" {
		c.RunID = "soak-" + time.Now().UTC().Format("2006-01-02_150405")
	}
	if strings.ContainsAny(c.RunID, "/\\ ") || c.RunID == "." || c.RunID == ".." {
		errs = append(errs, fmt.Sprintf("run id %q: letters, digits, '.', '_' and '-' only", c.RunID))
	}
	if c.Duration < 30*time.Second {
		errs = append(errs, fmt.Sprintf("duration %v: at least 30s", c.Duration))
	}
	if c.Every <= 0 || c.Every > time.Minute {
		errs = append(errs, fmt.Sprintf("sample period %v: want (0, 1m]", c.Every))
	}
	if c.Exclude == 0 {
		c.Exclude = min(5*time.Minute, c.Duration/3)
	}
	if c.Exclude < 0 || c.Exclude > c.Duration-10*c.Every {
		errs = append(errs, fmt.Sprintf("warm-up %v: want >= 0 and at least 10 samples (%v) before the end of %v", c.Exclude, 10*c.Every, c.Duration))
	}
	if len(c.Models) == 0 {
		c.Models = DefaultModels
	}
	if c.Connections < len(c.Models) || c.Connections > 1024 {
		errs = append(errs, fmt.Sprintf("connections %d: want %d (one per model) to 1024", c.Connections, len(c.Models)))
	}
	if c.MaxSlope <= 0 {
		c.MaxSlope = 0.5
	}
	for _, e := range c.Env {
		if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
			errs = append(errs, fmt.Sprintf("env %q: want KEY=VALUE", e))
		}
	}
	for _, f := range []struct{ what, path string }{{"policyd binary", c.Policyd}, {"policyctl binary", c.Policyctl},
		{"peers folder", filepath.Join(c.PeersDir, "models", "models.json")}} {
		if _, err := os.Stat(f.path); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", f.what, err))
		}
	}
	if len(errs) > 0 {
		return errors.New(strings.Join(errs, "; "))
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	return proc.AbsPaths(&c.OutDir, &c.Policyd, &c.Policyctl, &c.PeersDir, &c.Root)
}

// run is what a report records of when and where it ran.
type run struct {
	date, commit, cpu string
	nproc             int
}

// startRun makes the run's folder, OUT/RUN-ID, and reads the date, the commit and the machine.
func startRun(ctx context.Context, outDir, runID string) (dir string, r run, err error) {
	dir = filepath.Join(outDir, runID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", r, err
	}
	cpu, _ := machine.CPUInfo()
	return dir, run{date: time.Now().UTC().Format(time.RFC3339), commit: machine.GitCommit(ctx), cpu: cpu, nproc: runtime.NumCPU()}, nil
}

// Sample is one reading of the server, T seconds after the load started.
type Sample struct {
	T float64 `json:"t_s"`
	Status
	HeapInuse  *float64 `json:"go_heap_inuse_bytes,omitempty"`
	GoSys      *float64 `json:"go_sys_bytes,omitempty"`
	Goroutines *float64 `json:"goroutines,omitempty"`
}

// Fit is a least-squares line through (minutes, MiB).
type Fit struct {
	SlopeMiBPerMin float64 `json:"slope_mib_per_min"`
	StartMiB       float64 `json:"start_mib"` // the line at the window's start
	EndMiB         float64 `json:"end_mib"`   // and at its end
	Samples        int     `json:"samples"`
}

// Report is one soak.
type Report struct {
	RunID    string        `json:"run_id"`
	Date     string        `json:"date"`
	Command  string        `json:"command,omitempty"`
	Commit   string        `json:"commit,omitempty"`
	CPU      string        `json:"cpu"`
	Nproc    int           `json:"nproc"`
	Load     []string      `json:"loadavg"` // before, after
	Env      []string      `json:"env,omitempty"`
	Duration float64       `json:"duration_s"`
	Exclude  float64       `json:"warmup_excluded_s"`
	Every    float64       `json:"sample_every_s"`
	Conns    int           `json:"connections"`
	Loads    []load.Result `json:"loads"` // one per model
	Requests int64         `json:"requests"`
	Errors   int64         `json:"errors"`
	RPS      float64       `json:"rps"`
	RSS      Fit           `json:"rss"`     // after the warm-up
	Heap     *Fit          `json:"go_heap"` // go_memstats_heap_inuse_bytes after the warm-up
	Anon     Fit           `json:"rss_anon"`
	// Goroutines at the first and last sample after the warm-up, and the most seen.
	Goroutines [3]float64 `json:"goroutines_first_last_max"`
	Threads    [3]int     `json:"threads_first_last_max"`
	MaxSlope   float64    `json:"target_max_slope_mib_per_min"`
	Pass       bool       `json:"pass"`
	Verdict    string     `json:"verdict"`
	Failures   []string   `json:"failures,omitempty"`
	Samples    []Sample   `json:"samples"`
	ServerLog  string     `json:"server_log"`
}

// Run runs the soak and writes report.json, report.txt and samples.csv under OutDir/RunID.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	dir, r, err := startRun(ctx, cfg.OutDir, cfg.RunID)
	if err != nil {
		return nil, err
	}
	rep := &Report{RunID: cfg.RunID, Date: r.date, Command: cfg.Command,
		Commit: r.commit, CPU: r.cpu, Nproc: r.nproc, Load: []string{machine.Loadavg()},
		Env: cfg.Env, Duration: cfg.Duration.Seconds(), Exclude: cfg.Exclude.Seconds(), Every: cfg.Every.Seconds(),
		Conns: cfg.Connections, MaxSlope: cfg.MaxSlope}

	fmt.Fprintf(cfg.Log, "soak: building the repository (%s)\n", strings.Join(cfg.Models, ", "))
	repo := filepath.Join(dir, "repository")
	if err := buildRepository(ctx, cfg, repo, cfg.Models); err != nil {
		return nil, err
	}
	reqs, err := requests(cfg, cfg.Models)
	if err != nil {
		return nil, err
	}
	srv, err := startPolicyd(ctx, cfg.Policyd, dir, "policyd", repo, cfg.Models, cfg.Env)
	if err != nil {
		return nil, err
	}
	defer srv.Stop()
	rep.ServerLog = srv.Log
	fmt.Fprintf(cfg.Log, "soak: policyd pid %d on %s; %v over %d connections, sampling every %v, slope after %v\n",
		srv.PID(), srv.Addr, cfg.Duration, cfg.Connections, cfg.Every, cfg.Exclude)

	// The load: the connections dealt round robin to the models.
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make([]load.Result, len(cfg.Models))
	loadErrs := make([]error, len(cfg.Models))
	var wg sync.WaitGroup
	t0 := time.Now()
	for i, m := range cfg.Models {
		conns := cfg.Connections / len(cfg.Models)
		if i < cfg.Connections%len(cfg.Models) {
			conns++
		}
		req := reqs[i]
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], loadErrs[i] = load.Run(lctx, load.Request{URL: "http://" + srv.Addr + "/v2/models/" + m + "/infer", Body: req.JSON},
				load.Options{Mode: "closed", Connections: conns, Duration: cfg.Duration, MaxRequests: math.MaxInt64,
					Timeout: 10 * time.Second, Check: &req.Ref})
			results[i].Label = m
			if loadErrs[i] != nil {
				cancel() // one model failing its check or its server gone ends the soak
			}
		}()
	}
	loadDone := make(chan struct{})
	go func() { wg.Wait(); close(loadDone) }()

	tick := time.NewTicker(cfg.Every)
	defer tick.Stop()
	next := time.Minute
	for sampling := true; sampling; {
		select {
		case <-loadDone:
			sampling = false
		case <-tick.C:
			s, err := sample(srv, time.Since(t0))
			if err != nil {
				if !srv.Alive() {
					rep.Failures = append(rep.Failures, fmt.Sprintf("policyd exited after %v (%v): %s", time.Since(t0).Round(time.Second), srv.Err(), proc.Tail(srv.Log, 400)))
					cancel()
					continue
				}
				rep.Failures = append(rep.Failures, fmt.Sprintf("sample at %v: %v", time.Since(t0).Round(time.Second), err))
				continue
			}
			rep.Samples = append(rep.Samples, s)
			if time.Duration(s.T*float64(time.Second)) >= next {
				next += time.Minute
				fmt.Fprintf(cfg.Log, "soak: %4.0fs RSS %6.1f MiB, Go heap %s, goroutines %s, threads %d\n",
					s.T, mib(s.RSS), fmtMiB(s.HeapInuse), fmtNum(s.Goroutines), s.Threads)
			}
		}
	}
	rep.Load = append(rep.Load, machine.Loadavg())
	for i, err := range loadErrs {
		if err != nil && ctx.Err() == nil {
			rep.Failures = append(rep.Failures, fmt.Sprintf("load %s: %v", cfg.Models[i], err))
		}
	}
	rep.Loads = results
	for _, r := range results {
		rep.Requests += r.Requests
		rep.Errors += r.Errors
		rep.RPS += r.RPS
	}
	analyze(rep, cfg)
	if err := rep.WriteFiles(dir); err != nil {
		return rep, fmt.Errorf("write the report: %w", err)
	}
	return rep, ctx.Err()
}

// sample reads the server's /proc status and its Go runtime metrics.
func sample(srv *proc.Proc, at time.Duration) (Sample, error) {
	st, err := ReadStatus(srv.PID())
	if err != nil {
		return Sample{}, err
	}
	s := Sample{T: math.Round(at.Seconds()*10) / 10, Status: st}
	if ms, err := scrape.Metrics(srv.Addr, "go_memstats_heap_inuse_bytes", "go_memstats_sys_bytes", "go_goroutines"); err == nil {
		for name, dst := range map[string]**float64{"go_memstats_heap_inuse_bytes": &s.HeapInuse, "go_memstats_sys_bytes": &s.GoSys, "go_goroutines": &s.Goroutines} {
			if v, ok := ms[name]; ok {
				*dst = &v
			}
		}
	}
	return s, nil
}

// analyze fits the samples after the warm-up and decides.
func analyze(rep *Report, cfg Config) {
	var after []Sample
	for _, s := range rep.Samples {
		if s.T >= cfg.Exclude.Seconds() {
			after = append(after, s)
		}
	}
	rep.RSS = fit(after, func(s Sample) (float64, bool) { return float64(s.RSS), true })
	rep.Anon = fit(after, func(s Sample) (float64, bool) { return float64(s.Anon), true })
	if h := fit(after, func(s Sample) (float64, bool) {
		if s.HeapInuse == nil {
			return 0, false
		}
		return *s.HeapInuse, true
	}); h.Samples > 1 {
		rep.Heap = &h
	}
	for i, s := range after {
		g := 0.0
		if s.Goroutines != nil {
			g = *s.Goroutines
		}
		if i == 0 {
			rep.Goroutines[0], rep.Threads[0] = g, s.Threads
		}
		rep.Goroutines[1], rep.Threads[1] = g, s.Threads
		rep.Goroutines[2], rep.Threads[2] = max(rep.Goroutines[2], g), max(rep.Threads[2], s.Threads)
	}
	var why []string
	if rep.RSS.Samples < 10 {
		why = append(why, fmt.Sprintf("only %d samples after the warm-up", rep.RSS.Samples))
	}
	if rep.RSS.SlopeMiBPerMin > cfg.MaxSlope {
		why = append(why, fmt.Sprintf("RSS slope %.2f MiB/min > %.2f", rep.RSS.SlopeMiBPerMin, cfg.MaxSlope))
	}
	if rep.Errors > 0 {
		why = append(why, fmt.Sprintf("%d failed requests", rep.Errors))
	}
	if rep.Requests == 0 {
		why = append(why, "no request succeeded")
	}
	if len(rep.Failures) > 0 {
		why = append(why, fmt.Sprintf("%d failure(s)", len(rep.Failures)))
	}
	rep.Pass = len(why) == 0
	rep.Verdict = "PASS"
	if !rep.Pass {
		rep.Verdict = "FAIL: " + strings.Join(why, "; ")
	}
	if window := cfg.Duration - cfg.Exclude; window < 25*time.Minute {
		rep.Verdict += fmt.Sprintf(" (a %v window: the target is defined over 25 minutes after a 5-minute warm-up)", window.Round(time.Second))
	}
}

// fit is the least-squares line of value (bytes) over time (minutes).
func fit(ss []Sample, value func(Sample) (float64, bool)) Fit {
	var xs, ys []float64
	for _, s := range ss {
		if v, ok := value(s); ok {
			xs, ys = append(xs, s.T/60), append(ys, v/(1<<20))
		}
	}
	f := Fit{Samples: len(xs)}
	if len(xs) < 2 {
		return f
	}
	slope, icpt := leastSquares(xs, ys)
	f.SlopeMiBPerMin = round(slope, 3)
	f.StartMiB = round(icpt+slope*xs[0], 1)
	f.EndMiB = round(icpt+slope*xs[len(xs)-1], 1)
	return f
}

// leastSquares returns the slope and intercept of the line that minimizes the squared
// vertical distances to (xs, ys); xs must not all be equal.
func leastSquares(xs, ys []float64) (slope, intercept float64) {
	n := float64(len(xs))
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx, my = mx/n, my/n
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 {
		return 0, my
	}
	slope = sxy / sxx
	return slope, my - slope*mx
}

// buildRepository makes repo with models: 3DBall copied from examples/repository, the others
// added from the peers' models with `policyctl artifacts add`.
func buildRepository(ctx context.Context, cfg Config, repo string, models []string) error {
	if err := os.RemoveAll(repo); err != nil { // a rerun of the same run id starts afresh
		return err
	}
	if err := os.MkdirAll(repo, 0o755); err != nil {
		return err
	}
	var specs []peers.ModelSpec
	for _, m := range models {
		if src := filepath.Join(cfg.Root, "examples", "repository", m); isDir(src) {
			if out, err := exec.CommandContext(ctx, "cp", "-r", src, filepath.Join(repo, m)).CombinedOutput(); err != nil {
				return fmt.Errorf("copy %s: %v: %s", src, err, out)
			}
			continue
		}
		if specs == nil {
			var err error
			if specs, err = peers.LoadSpecs(filepath.Join(cfg.PeersDir, "models")); err != nil {
				return err
			}
		}
		spec, ok := peers.FindSpec(specs, m)
		if !ok {
			return fmt.Errorf("model %q is neither in %s/examples/repository nor in %s/models/models.json", m, cfg.Root, cfg.PeersDir)
		}
		cmd := exec.CommandContext(ctx, cfg.Policyctl, "artifacts", "add", "--repository", repo, "--name", m,
			"--version", "1.0.0", "--metadata", "source=peers", filepath.Join(cfg.PeersDir, "models", spec.File))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("policyctl artifacts add %s: %v: %s", m, err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// exampleRefs maps an examples/repository model to its ONNX Runtime reference.
var exampleRefs = map[string]string{"3DBall": "mlagents-3DBall_b1.json"}

// requests returns each model's batch-1 body and reference: the peers' (package peers) or, for
// an example model, its testdata/reference file, checked for output names and shapes only
// (3DBall's continuous_actions are sampled).
func requests(cfg Config, models []string) ([]peers.Body, error) {
	var specs []peers.ModelSpec
	out := make([]peers.Body, len(models))
	for i, m := range models {
		if ref, ok := exampleRefs[m]; ok {
			raw, err := os.ReadFile(filepath.Join(cfg.Root, "testdata", "reference", ref))
			if err != nil {
				return nil, err
			}
			inputs, err := load.ParseInputs(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ref, err)
			}
			body, err := load.JSONBody(inputs)
			if err != nil {
				return nil, err
			}
			r, err := load.ParseReference(raw)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", ref, err)
			}
			r.ShapeOnly = true
			out[i] = peers.Body{Model: m, Batch: 1, Inputs: inputs, JSON: body, Ref: r, Source: ref}
			continue
		}
		if specs == nil {
			var err error
			if specs, err = peers.LoadSpecs(filepath.Join(cfg.PeersDir, "models")); err != nil {
				return nil, err
			}
		}
		spec, ok := peers.FindSpec(specs, m)
		if !ok {
			return nil, fmt.Errorf("model %q: no request body (not an example model, not in the peers' models.json)", m)
		}
		b, err := peers.Harness{Dir: cfg.PeersDir}.LoadBody(m, 1, spec, filepath.Join(cfg.Root, "testdata", "reference"))
		if err != nil {
			return nil, err
		}
		out[i] = b
	}
	return out, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func fmtMiB(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.1f MiB", *v/(1<<20))
}

func fmtNum(v *float64) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf("%.0f", *v)
}

func round(x float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(x*p) / p
}
