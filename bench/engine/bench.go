// Package engine benchmarks policyd's inference engine (through package bridge) beside the
// onnxruntime-node peer (shared/peers/ort_bench.js), on the same machine, in the same process
// run, one after another: for each model and batch, policyd st, policyd par, then one
// ort_bench.js process for ORT's st and par. `policyctl bench engine` is its command line and
// bench/engine/run.sh the `make bench-engine` entry.
package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/policyd/policyd/bench/machine"
	"github.com/policyd/policyd/bridge"
)

// Config is one benchmark run.
type Config struct {
	ModelsDir string   // holds models.json and the .onnx files
	Models    []string // names to run; empty = every model of models.json, in its order
	Batches   []int
	Modes     []string // "st", "par"
	Params    Params
	ORT       *ORTRunner // nil: policyd only
	Format    string     // "markdown" or "json"
	Retries   int        // times a disturbed run is measured again (see measure)
	// Check compares policyd's outputs with ORT's (ORT.CheckScript) on each model and batch;
	// a mismatch fails the run.
	Check bool
	// AllowRefused: a model policyd refuses to load (an UNSUPPORTED error: an operator it does
	// not implement) is reported as "refused: …" and does not fail the run.
	AllowRefused bool

	quietWait time.Duration // how long measure waits for a quiet second; 0 = 10 s, < 0 = none
	Command   string        // the command line, for the report
	Log       io.Writer     // progress lines; nil = none
}

// Validate checks a Config and fills defaults that depend on the machine.
func (c *Config) Validate() error {
	if c.Format != "markdown" && c.Format != "json" {
		return fmt.Errorf("--format %q: want markdown or json", c.Format)
	}
	if len(c.Batches) == 0 {
		return errors.New("no batch sizes")
	}
	for _, b := range c.Batches {
		if b < 1 {
			return fmt.Errorf("batch %d: must be at least 1", b)
		}
	}
	if len(c.Modes) == 0 {
		return errors.New("no modes")
	}
	for _, m := range c.Modes {
		if m != "st" && m != "par" {
			return fmt.Errorf("mode %q: want st or par", m)
		}
	}
	p := &c.Params
	if p.Seconds <= 0 || p.Warmup < 0 {
		return fmt.Errorf("--seconds must be > 0 and --warmup >= 0")
	}
	if c.Retries < 0 {
		return errors.New("--retries must be >= 0")
	}
	if p.MaxIters < 1 {
		return errors.New("--max-iters must be at least 1")
	}
	p.MinIters = min(max(p.MinIters, 1), p.MaxIters)
	if p.Workers <= 0 {
		p.Workers = runtime.NumCPU()
	}
	return nil
}

func (c *Config) logf(format string, a ...any) {
	if c.Log != nil {
		fmt.Fprintf(c.Log, "bench engine: "+format+"\n", a...)
	}
}

// measure runs f, and runs it again, up to cfg.Retries times, while other processes disturbed
// it (one of its runs has OtherCores >= noisyCores), waiting first up to 10 s for a quiet
// second. The last attempt's runs are returned, with Attempts set.
func (cfg *Config) measure(ctx context.Context, what string, f func() ([]Result, error)) ([]Result, error) {
	for attempt := 1; ; attempt++ {
		rs, err := f()
		if err != nil {
			return nil, err
		}
		worst := 0.0
		for i := range rs {
			rs[i].Attempts = attempt
			worst = max(worst, rs[i].OtherCores)
		}
		if worst < noisyCores || attempt > cfg.Retries || ctx.Err() != nil {
			return rs, nil
		}
		cfg.logf("%s: other processes used %.2f cores meanwhile; measuring again (%d of %d)", what, worst, attempt, cfg.Retries)
		wait := cfg.quietWait
		if wait == 0 {
			wait = 10 * time.Second
		}
		waitQuiet(ctx, wait)
	}
}

// waitQuiet returns at the end of the first second in which other processes used less than
// noisyCores, or after limit.
func waitQuiet(ctx context.Context, limit time.Duration) {
	end := time.Now().Add(limit)
	for time.Now().Before(end) && ctx.Err() == nil {
		a := sampleCPU()
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		if o := otherCores(a, sampleCPU()); o >= 0 && o < noisyCores {
			return
		}
	}
}

// Run benchmarks every model × batch and writes the report to out (JSON: a "machine" line,
// then one "case" line as each case finishes). A case that fails is reported and the run goes
// on; the returned error then names the failures.
func Run(ctx context.Context, cfg Config, out io.Writer) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	all, err := LoadSpecs(cfg.ModelsDir)
	if err != nil {
		return err
	}
	specs := all
	if len(cfg.Models) > 0 {
		specs = nil
		for _, name := range cfg.Models {
			i := slices.IndexFunc(all, func(s ModelSpec) bool { return s.Name == name })
			if i < 0 {
				var have []string
				for _, s := range all {
					have = append(have, s.Name)
				}
				return fmt.Errorf("unknown model %q; models.json has %s", name, strings.Join(have, ", "))
			}
			specs = append(specs, all[i])
		}
	}
	if err := bridge.Available(); err != nil {
		return err
	}
	rt, err := bridge.NewRuntime("")
	if err != nil {
		return fmt.Errorf("policyd runtime: %w", err)
	}
	defer rt.Close()

	m := describeMachine(ctx, cfg, rt)
	if m.Warning != "" {
		cfg.logf("WARNING: %s", m.Warning)
	}
	if cfg.Format == "json" {
		if err := jsonLine(out, struct {
			Type string `json:"type"`
			Machine
		}{"machine", m}); err != nil {
			return err
		}
	}
	var cases []Case
	var failed []string
	runStart := sampleCPU()
	for _, spec := range specs {
		if err := ctx.Err(); err != nil {
			return err
		}
		cfg.logf("%s: compiling", spec.Name)
		t0 := time.Now()
		eng, engErr := LoadEngine(rt, cfg.ModelsDir, spec)
		refused := false
		if engErr == nil {
			cfg.logf("%s: compiled in %.2fs", spec.Name, time.Since(t0).Seconds())
		} else if errors.Is(engErr, &bridge.Error{Code: bridge.CodeUnsupported}) {
			refused = true
			engErr = fmt.Errorf("%s %w", refusedPrefix, engErr)
			cfg.logf("%s: %v", spec.Name, engErr)
		}
		for _, batch := range cfg.Batches {
			if err := ctx.Err(); err != nil {
				if eng != nil {
					eng.Close()
				}
				return err
			}
			c := Case{Model: spec.Name, Batch: batch, Policyd: []Result{}, ORT: []Result{}}
			cpu0 := sampleCPU()
			if engErr != nil {
				c.PolicydErr = engErr.Error()
			}
			for _, mode := range cfg.Modes {
				if c.PolicydErr != "" {
					break
				}
				rs, err := cfg.measure(ctx, fmt.Sprintf("%s b%d policyd %s", spec.Name, batch, mode), func() ([]Result, error) {
					r, err := BenchOurs(eng, spec, batch, mode, cfg.Params)
					return []Result{r}, err
				})
				if err != nil {
					c.PolicydErr = fmt.Sprintf("%s: %v", mode, err)
					break
				}
				for _, r := range rs {
					cfg.logf("%s b%d policyd %-3s p50 %8.1fµs p99 %8.1fµs %12.0f inf/s  cores %.2f (others %.2f)", spec.Name, batch, mode, r.P50, r.P99, r.InferencesPerS, r.OwnCores, r.OtherCores)
				}
				c.Policyd = append(c.Policyd, rs...)
			}
			// ORT: one process per mode, so each mode's CPU accounting is its own.
			for _, mode := range cfg.Modes {
				if cfg.ORT == nil || c.ORTErr != "" {
					break
				}
				var r ORTResult
				_, err := cfg.measure(ctx, fmt.Sprintf("%s b%d ORT %s", spec.Name, batch, mode), func() ([]Result, error) {
					var err error
					r, err = cfg.ORT.Run(ctx, spec.Name, batch, []string{mode}, cfg.Params)
					return r.Runs, err
				})
				if err != nil {
					c.ORTErr = fmt.Sprintf("%s: %v", mode, err)
					break
				}
				if m.ORT == "" {
					m.ORT = r.ORT
				}
				if m.Node == "" {
					m.Node = r.Node
				}
				for _, x := range r.Runs {
					cfg.logf("%s b%d ORT     %-3s p50 %8.1fµs p99 %8.1fµs %12.0f inf/s  cores %.2f (others %.2f)", spec.Name, batch, x.Mode, x.P50, x.P99, x.InferencesPerS, x.OwnCores, x.OtherCores)
				}
				c.ORT = append(c.ORT, r.Runs...)
			}
			if cfg.Check && cfg.ORT != nil && eng != nil && c.PolicydErr == "" && c.ORTErr == "" {
				c.Check = cfg.checkCase(ctx, eng, spec, batch)
				cfg.logf("%s b%d outputs vs ORT: max |diff| %.3g (tolerance %.3g + %.0e·|ORT|): %s", spec.Name, batch,
					c.Check.MaxAbsDiff, c.Check.Atol, checkRtol, c.Check.Status())
				if !c.Check.OK {
					failed = append(failed, fmt.Sprintf("%s b%d outputs vs ORT: %s (max |diff| %.3g at %s)", c.Model, c.Batch,
						c.Check.Status(), c.Check.MaxAbsDiff, c.Check.Worst))
				}
			}
			c.OtherCores = round(otherCores(cpu0, sampleCPU()), 2)
			if c.OtherCores >= noisyCores {
				cfg.logf("%s b%d: other processes used %.2f cores during the case: numbers disturbed", spec.Name, batch, c.OtherCores)
			}
			c.fillRatios()
			if c.PolicydErr != "" && !(refused && cfg.AllowRefused) {
				failed = append(failed, fmt.Sprintf("%s b%d policyd: %s", c.Model, c.Batch, c.PolicydErr))
				cfg.logf("%s b%d policyd FAILED: %s", spec.Name, batch, c.PolicydErr)
			}
			if c.ORTErr != "" {
				failed = append(failed, fmt.Sprintf("%s b%d ORT: %s", c.Model, c.Batch, c.ORTErr))
				cfg.logf("%s b%d ORT FAILED: %s", spec.Name, batch, c.ORTErr)
			}
			cases = append(cases, c)
			if cfg.Format == "json" {
				if err := jsonLine(out, struct {
					Type string `json:"type"`
					Case
				}{"case", c}); err != nil {
					return err
				}
			}
		}
		if eng != nil {
			eng.Close()
		}
	}
	m.LoadAfter = machine.Loadavg()
	m.OtherDuring = round(otherCores(runStart, sampleCPU()), 2)
	switch cfg.Format {
	case "markdown":
		if err := WriteMarkdown(out, m, cases); err != nil {
			return err
		}
	case "json":
		if err := jsonLine(out, struct {
			Type         string   `json:"type"`
			LoadavgAfter string   `json:"loadavg_after"`
			OtherDuring  float64  `json:"other_cpu_cores_during"`
			Targets      []Target `json:"targets"`
		}{"summary", m.LoadAfter, m.OtherDuring, Targets(cases)}); err != nil {
			return err
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%d case(s) failed:\n  %s", len(failed), strings.Join(failed, "\n  "))
	}
	return nil
}

func describeMachine(ctx context.Context, cfg Config, rt *bridge.Runtime) Machine {
	cpu, simd := machine.CPUInfo()
	var backends []string
	for _, b := range rt.Backends() {
		s := b.Name + " " + b.Version
		if !b.Available {
			s = b.Name + " (unavailable)" // the reason is a path; the report stays short
		}
		backends = append(backends, s)
	}
	major, minor := bridge.APIVersion()
	m := Machine{
		Date:       time.Now().UTC().Format(time.RFC3339),
		Command:    cfg.Command,
		NProc:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		CPU:        cpu,
		SIMD:       simd,
		Go:         runtime.Version(),
		OSArch:     runtime.GOOS + "/" + runtime.GOARCH,
		LibFile:    loadedLibrary(),
		Library:    fmt.Sprintf("%s (ABI %d.%d)", bridge.LibraryVersion(), major, minor),
		Backends:   strings.Join(backends, ", "),
		Commit:     machine.GitCommit(ctx),
		LoadBefore: machine.Loadavg(),
		Settings: fmt.Sprintf("seconds=%g warmup=%g max_iters=%d min_iters=%d par_workers=%d modes=%s retries=%d",
			cfg.Params.Seconds, cfg.Params.Warmup, cfg.Params.MaxIters, cfg.Params.MinIters, cfg.Params.Workers,
			strings.Join(cfg.Modes, ","), cfg.Retries),
	}
	a := sampleCPU()
	select {
	case <-ctx.Done():
	case <-time.After(time.Second):
	}
	m.OtherBefore = round(otherCores(a, sampleCPU()), 2)
	m.Warning = busyWarning(m.OtherBefore, m.LoadBefore)
	if cfg.ORT != nil {
		m.Node, m.ORT = cfg.ORT.Version(ctx)
	}
	return m
}
