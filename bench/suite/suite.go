// Package suite is `make bench` (`policyctl bench suite`): it builds a policyd repository from
// the peer models, starts bin/policyd and the peer servers, runs the peers' own run_all.sh
// side by side when the harness is set up, measures what run_all.sh does not cover with
// package load (binary protocol, batch and concurrency sweeps, open loop), profiles memory per
// model, searches the batching settings for a p99 target, compares against the baseline of
// this hardware and writes report.md, report.json and latency-throughput.svg.
//
// Every server it starts is stopped by PID before Run returns, also on an error or when ctx
// ends (Ctrl-C), and killed with it should it die (Pdeathsig).
package suite

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/policyd/policyd/bench/load"
	"github.com/policyd/policyd/bench/machine"
	"github.com/policyd/policyd/bench/peers"
	"github.com/policyd/policyd/bench/proc"
	"github.com/policyd/policyd/bench/scrape"
)

// Stages, in the order they run.
var Stages = []string{"matrix", "binary", "grpc", "shm", "batch-sweep", "conc-sweep", "open-loop", "memory", "search"}

// Config is one suite run.
type Config struct {
	Root         string // repository root: testdata/reference, the default binaries
	PeersDir     string // ../shared/peers
	NodeModules  string // a node_modules with onnxruntime-node, used when the harness has none
	OutDir       string // build/bench; the run writes OutDir/<RunID>/
	RunID        string
	Quick        bool
	P99Target    time.Duration
	Tolerance    float64
	BaselineDir  string // bench/baselines
	SaveBaseline bool
	RunAll       string   // auto (when the harness is set up) or off
	Stages       []string // empty = all
	Policyd      string   // the server binary
	Policyctl    string   // for `artifacts add`
	Ghz          string   // tools/bin/ghz for the gRPC rows' independent generator; missing: those rows are left out, with a note
	Command      string   // for the report
	Log          io.Writer
}

// Validate checks c and fills defaults.
func (c *Config) Validate() error {
	var errs []string
	if c.RunID == "" {
		c.RunID = time.Now().UTC().Format("2006-01-02_150405")
	}
	if strings.ContainsAny(c.RunID, "/\\ ") || c.RunID == "." || c.RunID == ".." {
		errs = append(errs, fmt.Sprintf("run id %q: letters, digits, '.', '_' and '-' only", c.RunID))
	}
	if c.P99Target <= 0 {
		errs = append(errs, fmt.Sprintf("p99 target %v: must be > 0", c.P99Target))
	}
	if c.Tolerance <= 0 || c.Tolerance >= 1 {
		errs = append(errs, fmt.Sprintf("tolerance %v: want a fraction in (0, 1), e.g. 0.15", c.Tolerance))
	}
	if c.RunAll != "auto" && c.RunAll != "off" {
		errs = append(errs, fmt.Sprintf("run-all %q: want auto or off", c.RunAll))
	}
	for _, s := range c.Stages {
		if !slices.Contains(Stages, s) {
			errs = append(errs, fmt.Sprintf("stage %q: want some of %s", s, strings.Join(Stages, ", ")))
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
	// Servers get absolute paths: a config file's relative paths are relative to its folder.
	return proc.AbsPaths(&c.OutDir, &c.Policyd, &c.PeersDir, &c.NodeModules, &c.Root, &c.Ghz)
}

// plan is how long and at how many points each stage measures; quick halves the durations
// and thins the sweeps.
type plan struct {
	dur, warm         time.Duration // matrix and binary cases
	sweepDur          time.Duration
	openDur           time.Duration
	memDur            time.Duration
	probeDur, srchDur time.Duration
	openFractions     []float64
	searchFractions   []float64
	concs             []int
	batches           []int
	memModels         []string
	grid              []BatchConfig
	grpcCases         []modelBatch // the gRPC stage's models and batches (at 1 and 16 connections)
	shmCases          []shmPlan    // the shm stage's cases
	shmRounds         int          // HTTP binary then shared memory, this many times per case
}

// shmPlan is one case of the shm stage: a model and batch at some connection counts.
type shmPlan struct {
	model string
	batch int
	concs []int
}

// shmCasesPlan: mlp-med b1 (the latency target) at 1 and 16 connections, cnn-atari b32 (3.6 MB
// of input; the time-outside-the-engine target) at 1.
var shmCasesPlan = []shmPlan{{"mlp-med", 1, []int{1, 16}}, {"cnn-atari", 32, []int{1}}}

type modelBatch struct {
	model string
	batch int
}

func newPlan(quick bool, specs []peers.ModelSpec) plan {
	if quick {
		return plan{dur: 2 * time.Second, warm: 500 * time.Millisecond, sweepDur: time.Second, openDur: 1500 * time.Millisecond,
			memDur: time.Second, probeDur: time.Second, srchDur: time.Second,
			openFractions: []float64{0.3, 0.6, 0.9}, searchFractions: []float64{0.3, 0.6},
			concs: []int{1, 4, 16, 64}, batches: []int{1, 32, 256}, memModels: []string{"mlp-med"},
			grid:      []BatchConfig{{1, 0, 1}, {1, 0, 2}, {32, 100 * time.Microsecond, 1}, {32, 100 * time.Microsecond, 2}},
			grpcCases: []modelBatch{{"mlp-med", 1}}, shmCases: shmCasesPlan, shmRounds: 2}
	}
	var all []string
	for _, s := range specs {
		all = append(all, s.Name)
	}
	p := plan{dur: 4 * time.Second, warm: time.Second, sweepDur: 2 * time.Second, openDur: 2 * time.Second,
		memDur: 2 * time.Second, probeDur: 1500 * time.Millisecond, srchDur: 1500 * time.Millisecond,
		openFractions: []float64{0.2, 0.4, 0.6, 0.8, 0.95}, searchFractions: []float64{0.25, 0.5, 0.7, 0.85},
		concs: []int{1, 2, 4, 8, 16, 32, 64}, batches: []int{1, 8, 32, 64, 256}, memModels: all,
		grpcCases: []modelBatch{{"mlp-med", 1}, {"mlp-small", 1}, {"mlp-med", 32}}, shmCases: shmCasesPlan, shmRounds: 2}
	for _, inst := range []int{1, 2} {
		p.grid = append(p.grid, BatchConfig{1, 0, inst})
		for _, mbs := range []int{8, 32} {
			for _, d := range []time.Duration{0, 100 * time.Microsecond, 500 * time.Microsecond} {
				p.grid = append(p.grid, BatchConfig{mbs, d, inst})
			}
		}
	}
	return p
}

// run is the state of one suite run.
type run struct {
	cfg     Config
	plan    plan
	dir     string // OutDir/RunID
	repo    string
	specs   []peers.ModelSpec
	harness peers.Harness
	setup   peers.Setup
	bodies  map[string]peers.Body
	rep     *Report
	ss      servers
	prog    *progress
	mu      sync.Mutex
	runAll  bool // run_all.sh measured the closed-loop matrix
	floor   string
}

func (r *run) want(stage string) bool {
	return len(r.cfg.Stages) == 0 || slices.Contains(r.cfg.Stages, stage)
}

// Run runs the suite and writes its report files. The report is returned also when a stage
// failed (the failures are in it); the error is for what stops the whole run.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t0 := time.Now()
	specs, err := peers.LoadSpecs(filepath.Join(cfg.PeersDir, "models"))
	if err != nil {
		return nil, err
	}
	r := &run{cfg: cfg, plan: newPlan(cfg.Quick, specs), specs: specs, dir: filepath.Join(cfg.OutDir, cfg.RunID),
		harness: peers.Harness{Dir: cfg.PeersDir, NodeModules: cfg.NodeModules}, bodies: map[string]peers.Body{}}
	r.rep = &Report{RunID: cfg.RunID, Date: t0.UTC().Format(time.RFC3339), Command: cfg.Command, Quick: cfg.Quick,
		Commit: machine.GitCommit(ctx), Peers: Peers{Dir: cfg.PeersDir, Bodies: map[string]string{}}}
	r.prog = newProgress(cfg.Log, r.estimateSteps())
	defer r.prog.finish()
	defer r.ss.stopAll()
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return nil, err
	}
	if err := r.prepare(ctx); err != nil {
		return nil, err
	}
	r.matrixByRunAll(ctx)
	if err := r.policydStages(ctx); err != nil {
		return r.rep, err
	}
	if r.want("shm") {
		r.shmStage(ctx)
	}
	r.peerStages(ctx)
	if r.want("memory") {
		r.memory(ctx)
	}
	if r.want("search") {
		r.search(ctx)
	}
	if ctx.Err() != nil {
		return r.rep, ctx.Err()
	}
	r.rep.Targets = computeTargets(r.rep.Cases, r.rep.Memory)
	r.baseline()
	r.rep.Machine.LoadAfter = machine.Loadavg()
	r.rep.ElapsedS = time.Since(t0).Round(time.Second).Seconds()
	if err := r.rep.WriteFiles(r.dir); err != nil {
		return r.rep, fmt.Errorf("write the report: %w", err)
	}
	return r.rep, nil
}

// estimateSteps is the progress bar's length: one step per measurement and server start.
func (r *run) estimateSteps() int {
	p := r.plan
	n := 4 // prepare
	if r.want("matrix") {
		n += 3 * 8
	}
	if r.want("binary") {
		n += 8
	}
	if r.want("grpc") {
		n += 4 * 2 * len(r.plan.grpcCases)
	}
	if r.want("shm") {
		n++
		for _, c := range p.shmCases {
			n += 3 * p.shmRounds * len(c.concs)
		}
	}
	if r.want("batch-sweep") {
		n += 2 * len(p.batches)
	}
	if r.want("conc-sweep") {
		n += 3 * len(p.concs)
	}
	if r.want("open-loop") {
		n += 3 * len(p.openFractions)
	}
	if r.want("memory") {
		n += 3 * len(p.memModels)
	}
	if r.want("search") {
		n += len(p.grid) * (2 + len(p.searchFractions))
	}
	return n + 3
}

func (r *run) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	r.mu.Lock()
	r.rep.Failures = append(r.rep.Failures, msg)
	r.mu.Unlock()
	r.prog.logf("FAILED: %s", msg)
}

func (r *run) note(format string, a ...any) {
	r.rep.Notes = append(r.rep.Notes, fmt.Sprintf(format, a...))
}

// prepare: the harness check, the repository, the bodies, the machine and oneDNN's ISA.
func (r *run) prepare(ctx context.Context) error {
	r.prog.step("checking the peer harness (%s)", r.cfg.PeersDir)
	r.setup = r.harness.Check(ctx)
	r.rep.Peers.Setup = r.setup
	for _, m := range r.setup.Missing {
		r.prog.logf("peers: missing %s", m)
	}

	r.prog.step("building the policyd repository from the peer models")
	r.repo = filepath.Join(r.dir, "repository")
	if err := os.RemoveAll(r.repo); err != nil { // a rerun of the same run id starts afresh
		return err
	}
	models := []string{"mlp-small", "mlp-med"}
	if r.want("shm") {
		for _, c := range r.plan.shmCases {
			if !slices.Contains(models, c.model) {
				models = append(models, c.model)
			}
		}
	}
	if r.want("memory") {
		for _, m := range r.plan.memModels {
			if !slices.Contains(models, m) {
				models = append(models, m)
			}
		}
	}
	for _, m := range models {
		spec, ok := peers.FindSpec(r.specs, m)
		if !ok {
			return fmt.Errorf("model %q is not in %s/models/models.json", m, r.cfg.PeersDir)
		}
		cmd := exec.CommandContext(ctx, r.cfg.Policyctl, "artifacts", "add", "--repository", r.repo, "--name", m,
			"--version", "1.0.0", "--metadata", "source=peers", filepath.Join(r.cfg.PeersDir, "models", spec.File))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("policyctl artifacts add %s: %v: %s", m, err, strings.TrimSpace(string(out)))
		}
	}

	r.prog.step("loading request bodies and references")
	need := map[string][]int{"mlp-small": {1, 32}, "mlp-med": {1, 32}}
	for _, b := range r.plan.batches {
		if !slices.Contains(need["mlp-med"], b) {
			need["mlp-med"] = append(need["mlp-med"], b)
		}
	}
	for _, m := range r.plan.memModels {
		if _, ok := need[m]; !ok {
			need[m] = []int{1, 32}
		}
	}
	if r.want("shm") {
		for _, c := range r.plan.shmCases {
			if !slices.Contains(need[c.model], c.batch) {
				need[c.model] = append(need[c.model], c.batch)
			}
		}
	}
	for m, bs := range need {
		spec, _ := peers.FindSpec(r.specs, m)
		for _, b := range bs {
			body, err := r.harness.LoadBody(m, b, spec, filepath.Join(r.cfg.Root, "testdata", "reference"))
			if err != nil {
				return err
			}
			key := fmt.Sprintf("%s_b%d", m, b)
			r.bodies[key] = body
			r.rep.Peers.Bodies[key] = fmt.Sprintf("%s, %s bytes of JSON", body.Source, num(float64(len(body.JSON)), 0))
		}
	}

	r.prog.step("machine and the ISA oneDNN dispatches to")
	return r.describeMachine(ctx)
}

func (r *run) body(model string, batch int) peers.Body {
	return r.bodies[fmt.Sprintf("%s_b%d", model, batch)]
}

func (r *run) describeMachine(ctx context.Context) error {
	cpu, simd := machine.CPUInfo()
	m := Machine{CPU: cpu, SIMD: simd, Nproc: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0), Go: runtime.Version(),
		Kernel: machine.Kernel(), LoadBefore: machine.Loadavg()}
	if r.setup.Node != "" {
		if out, err := exec.CommandContext(ctx, r.setup.Node, "--version").Output(); err == nil {
			m.Node = strings.TrimSpace(string(out))
		}
	}
	// oneDNN prints its ISA at the first primitive creation under ONEDNN_VERBOSE=1: a policyd of
	// its own, serving mlp-small, one request.
	srv, err := r.startPolicyd(ctx, "isa-probe", policydOptions{models: []modelOptions{{name: "mlp-small"}}, env: []string{"ONEDNN_VERBOSE=1"}})
	if err != nil {
		return fmt.Errorf("policyd does not start: %w", err)
	}
	b := r.body("mlp-small", 1)
	_, err = load.Run(ctx, load.Request{URL: inferURL(srv.Addr, "mlp-small"), Body: b.JSON},
		load.Options{Mode: "closed", Connections: 1, Duration: 50 * time.Millisecond, Check: &b.Ref})
	r.ss.stop(srv)
	if err != nil {
		return fmt.Errorf("policyd fails the mlp-small reference check: %w", err)
	}
	out, _ := os.ReadFile(srv.Log)
	m.OneDNNISA, m.OneDNNVersion, m.OneDNNRuntime = machine.OneDNNISA(string(out)), machine.OneDNNVersion(string(out)), machine.OneDNNRuntime(string(out))
	if m.OneDNNISA == "" {
		r.note("oneDNN printed no ISA line under ONEDNN_VERBOSE=1 (see %s)", srv.Log)
	}
	r.rep.Machine = m
	return nil
}

func inferURL(addr, model string) string { return "http://" + addr + "/v2/models/" + model + "/infer" }

// modelOptions and policydOptions make a policyd config file.
type modelOptions struct {
	name      string
	instances int
	batching  *BatchConfig
}

type policydOptions struct {
	models []modelOptions
	env    []string
	grpc   bool // serve gRPC too, on a free port (server.GRPCAddr); otherwise grpc_addr is off
	// shm turns on the shared-memory extension (shared_memory.enabled); tokenFile, when set, is
	// admin.token_file (the register calls are operator calls).
	shm       bool
	tokenFile string
}

// startPolicyd writes a config for opts and starts bin/policyd on a free port.
func (r *run) startPolicyd(ctx context.Context, tag string, opts policydOptions) (*server, error) {
	port, err := proc.FreePort()
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	grpcAddr := "off"
	if opts.grpc {
		gport, err := proc.FreePort()
		if err != nil {
			return nil, err
		}
		grpcAddr = fmt.Sprintf("127.0.0.1:%d", gport)
	}
	cfgPath := filepath.Join(r.dir, "servers", tag+".yaml")
	if err := os.MkdirAll(filepath.Dir(cfgPath), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(cfgPath, []byte(policydConfig(addr, grpcAddr, r.repo, opts)), 0o644); err != nil {
		return nil, err
	}
	srv, err := r.ss.start(ctx, "policyd "+tag, addr, []string{r.cfg.Policyd, "--config", cfgPath}, opts.env,
		filepath.Join(r.dir, "servers", tag+".log"), 60*time.Second)
	if err != nil || !opts.grpc {
		return srv, err
	}
	if err := waitListening(ctx, grpcAddr, 10*time.Second); err != nil {
		r.ss.stop(srv)
		return nil, fmt.Errorf("policyd %s: gRPC on %s: %w", tag, grpcAddr, err)
	}
	srv.GRPCAddr = grpcAddr
	return srv, nil
}

// policydConfig is the YAML of a policyd serving opts' models from repo on addr, and gRPC on
// grpcAddr ("off": none, so that two servers, or one beside a running policyd, do not collide
// on the default 127.0.0.1:8001). A model's batching settings go into the global batching
// section (a model's max_queue_delay of 0 means "the default", not "no wait"); max_batch_size 1
// turns batching off.
func policydConfig(addr, grpcAddr, repo string, opts policydOptions) string {
	var b strings.Builder
	fmt.Fprintf(&b, "server:\n  addr: %q\n  grpc_addr: %q\nrepository:\n  path: %q\n", addr, grpcAddr, repo)
	if opts.shm {
		b.WriteString("shared_memory:\n  enabled: true\n")
	}
	if opts.tokenFile != "" {
		fmt.Fprintf(&b, "admin:\n  token_file: %q\n", opts.tokenFile)
	}
	for _, m := range opts.models {
		if c := m.batching; c != nil {
			fmt.Fprintf(&b, "batching:\n  enabled: %t\n  max_batch_size: %d\n  max_queue_delay: %s\n", c.MaxBatchSize > 1, c.MaxBatchSize, fmtDelay(c.MaxQueueDelay))
			break
		}
	}
	b.WriteString("models:\n")
	for _, m := range opts.models {
		fmt.Fprintf(&b, "  - name: %s\n", m.name)
		if m.instances > 0 {
			fmt.Fprintf(&b, "    instances: %d\n", m.instances)
		}
	}
	return b.String()
}

// measure runs one case against srv and records it; the case is returned, with Error set
// when it failed.
func (r *run) measure(ctx context.Context, srv *server, c Case, req load.Request, o load.Options) Case {
	res, err := load.Run(ctx, req, o)
	err = srv.explain(err)
	c.Result = res
	if c.Source == "" {
		c.Source = "policyctl bench load"
	}
	if c.Protocol == "" {
		c.Protocol = "json"
		if req.HeaderLength > 0 {
			c.Protocol = "binary"
		}
	}
	c.Mode, c.Concurrency = o.Mode, o.Connections
	if err != nil && ctx.Err() == nil {
		c.Error = err.Error()
		r.fail("%s %s %s b%d c%d %s: %v", c.Stage, c.Server, c.Model, c.Batch, c.Concurrency, c.Protocol, err)
	}
	if ctx.Err() == nil {
		r.mu.Lock()
		r.rep.Cases = append(r.rep.Cases, c)
		r.mu.Unlock()
	}
	return c
}

// closed measures one closed-loop case of model at batch against srv, JSON or binary.
func (r *run) closed(ctx context.Context, stage string, srv *server, model string, batch, conc int, binary bool, dur, warm time.Duration) Case {
	b := r.body(model, batch)
	req := load.Request{URL: inferURL(srv.Addr, model), Body: b.JSON}
	ref := b.Ref
	if srv.Name == "floor" {
		ref.ShapeOnly = true // the floor answers a constant of the right shape
	}
	if binary {
		body, n, err := load.BinaryBody(b.Inputs)
		if err != nil {
			r.fail("binary body %s b%d: %v", model, batch, err)
			return Case{Error: err.Error()}
		}
		req.Body, req.HeaderLength = body, n
	}
	name := srv.Name
	if strings.HasPrefix(name, "policyd") {
		name = "policyd"
	}
	proto := "json"
	if binary {
		proto = "binary"
	}
	r.prog.step("%s: %s %s %s b%d c%d", stage, name, proto, model, batch, conc)
	return r.measure(ctx, srv, Case{Stage: stage, Server: name, Model: model, Batch: batch},
		req, load.Options{Mode: "closed", Connections: conc, Duration: dur, Warmup: warm, ServerPIDs: srv.PIDs(), Check: &ref})
}

// policydStages runs, on one policyd serving mlp-small and mlp-med with default settings, the
// matrix (unless run_all.sh did it), the binary cases, the sweeps and the open loop.
func (r *run) policydStages(ctx context.Context) error {
	if !(r.want("matrix") && !r.runAll) && !r.want("binary") && !r.want("grpc") && !r.want("batch-sweep") && !r.want("conc-sweep") && !r.want("open-loop") {
		return nil
	}
	r.prog.step("starting policyd (mlp-small, mlp-med; default settings)")
	srv, err := r.startPolicyd(ctx, "main", policydOptions{models: []modelOptions{{name: "mlp-small"}, {name: "mlp-med"}}, grpc: r.want("grpc")})
	if err != nil {
		return fmt.Errorf("policyd does not start: %w", err)
	}
	defer r.ss.stop(srv)
	r.rep.Servers = append(r.rep.Servers, Server{Name: "policyd", What: "bin/policyd, default settings (batching on, max_batch_size 32, max_queue_delay 100µs, instances = cores, 1 thread each); config " + filepath.Join(r.dir, "servers", "main.yaml")})
	p := r.plan
	if r.want("matrix") && !r.runAll {
		r.matrix(ctx, srv)
	}
	if r.want("binary") {
		for _, m := range []string{"mlp-small", "mlp-med"} {
			for _, b := range []int{1, 32} {
				for _, c := range []int{1, 16} {
					r.closed(ctx, "binary", srv, m, b, c, true, p.dur, p.warm)
				}
			}
		}
	}
	if r.want("grpc") {
		r.grpcStage(ctx, srv)
	}
	if r.want("batch-sweep") {
		for _, binary := range []bool{false, true} {
			for _, b := range p.batches {
				r.closed(ctx, "batch-sweep", srv, "mlp-med", b, 16, binary, p.sweepDur, p.warm/2)
			}
		}
	}
	r.sweepAndOpen(ctx, srv)
	if !srv.Alive() {
		r.fail("policyd exited during the run: %s", proc.Tail(srv.Log, 600))
	}
	return ctx.Err()
}

// matrix is run_all.sh's HTTP matrix with our generator: mlp-small and mlp-med, batch 1 and 32,
// 1 and 16 connections, JSON, closed loop.
func (r *run) matrix(ctx context.Context, srv *server) {
	for _, m := range []string{"mlp-small", "mlp-med"} {
		for _, b := range []int{1, 32} {
			for _, c := range []int{1, 16} {
				r.closed(ctx, "matrix", srv, m, b, c, false, r.plan.dur, r.plan.warm)
			}
		}
	}
}

// sweepAndOpen runs the concurrency sweep and the open-loop rates of mlp-med b1 JSON on srv.
func (r *run) sweepAndOpen(ctx context.Context, srv *server) {
	p := r.plan
	name := srv.Name
	if strings.HasPrefix(name, "policyd") {
		name = "policyd"
	}
	if r.want("conc-sweep") {
		for _, c := range p.concs {
			r.closed(ctx, "conc-sweep", srv, "mlp-med", 1, c, false, p.sweepDur, p.warm/2)
		}
	}
	if !r.want("open-loop") || ctx.Err() != nil {
		return
	}
	// The rates are fractions of the server's closed-loop maximum with 16 connections.
	peak, ok := find(r.rep.Cases, closedJSON("matrix", name, "mlp-med", 1, 16))
	if !ok {
		peak = r.closed(ctx, "probe", srv, "mlp-med", 1, 16, false, p.sweepDur, p.warm/2)
		r.dropStage("probe")
	}
	if peak.RPS <= 0 {
		r.fail("open-loop %s: no closed-loop peak to scale the rates from", name)
		return
	}
	b := r.body("mlp-med", 1)
	ref := b.Ref
	if name == "floor" {
		ref.ShapeOnly = true
	}
	for i, f := range p.openFractions {
		rate := float64(int(f*peak.RPS/10+0.5) * 10)
		r.prog.step("open-loop: %s mlp-med b1 at %s req/s (%.0f %% of its peak)", name, num(rate, 0), 100*f)
		r.measure(ctx, srv, Case{Stage: "open-loop", Server: name, Model: "mlp-med", Batch: 1},
			load.Request{URL: inferURL(srv.Addr, "mlp-med"), Body: b.JSON},
			load.Options{Mode: "open", Connections: 64, Outstanding: 512, Rate: rate, Arrival: "poisson", Seed: uint64(i + 1),
				Duration: p.openDur, Warmup: p.warm / 2, ServerPIDs: srv.PIDs(), Check: &ref})
	}
}

// dropStage removes the cases of a helper stage (a probe) from the report.
func (r *run) dropStage(stage string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rep.Cases = slices.DeleteFunc(r.rep.Cases, func(c Case) bool { return c.Stage == stage })
}

// peerStages starts each peer our generator can reach and runs the matrix (unless run_all.sh
// did), the concurrency sweep and the open loop on it.
func (r *run) peerStages(ctx context.Context) {
	if !(r.want("matrix") && !r.runAll) && !r.want("conc-sweep") && !r.want("open-loop") {
		return
	}
	if r.setup.NodeReady() {
		r.prog.step("starting the Node + onnxruntime-node peer")
		port, err := proc.FreePort()
		if err == nil {
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			var srv *server
			srv, err = r.ss.start(ctx, "node", addr, []string{r.setup.Node, filepath.Join(r.cfg.PeersDir, "node", "server.js"),
				"--port", fmt.Sprint(port), "--models", "mlp-small,mlp-med", "--threads", "1"},
				[]string{"NODE_PATH=" + r.setup.NodeModules}, filepath.Join(r.dir, "servers", "node.log"), 60*time.Second)
			if err == nil {
				r.rep.Servers = append(r.rep.Servers, Server{Name: "node", What: r.rep.Machine.Node + " http + onnxruntime-node (intraOpNumThreads=1, 1 process): the peers' node/server.js"})
				r.peerRun(ctx, srv)
				r.ss.stop(srv)
			}
		}
		if err != nil && ctx.Err() == nil {
			r.fail("node peer: %v", err)
		}
	} else {
		r.note("Node + onnxruntime-node peer not measured: %s", strings.Join(r.setup.Missing, "; "))
	}
	if ctx.Err() != nil {
		return
	}
	r.prog.step("building and starting the floor peer (Go fasthttp, parse + validate, no compute)")
	floor := filepath.Join(r.dir, "bin", "floor")
	build := exec.CommandContext(ctx, "go", "build", "-o", floor, ".")
	build.Dir = filepath.Join(r.cfg.PeersDir, "floor")
	build.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-mod=readonly")
	if out, err := build.CombinedOutput(); err != nil {
		r.fail("floor peer: go build: %v: %s", err, strings.TrimSpace(string(out)))
		return
	}
	port, err := proc.FreePort()
	if err != nil {
		r.fail("floor peer: %v", err)
		return
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	srv, err := r.ss.start(ctx, "floor", addr, []string{floor, "-addr", addr, "-models", filepath.Join(r.cfg.PeersDir, "models", "models.json")},
		nil, filepath.Join(r.dir, "servers", "floor.log"), 30*time.Second)
	if err != nil {
		r.fail("floor peer: %v", err)
		return
	}
	r.rep.Servers = append(r.rep.Servers, Server{Name: "floor", What: "the peers' floor/: Go fasthttp + fastjson, parses and validates every value, answers a constant of the right shape; no compute"})
	r.peerRun(ctx, srv)
	r.ss.stop(srv)
}

func (r *run) peerRun(ctx context.Context, srv *server) {
	if r.want("matrix") && !r.runAll {
		r.matrix(ctx, srv)
	}
	r.sweepAndOpen(ctx, srv)
}

// matrixByRunAll runs the peers' run_all.sh (HTTP + wrk stages, every peer plus policyd as its
// EXTRA server) when the harness is set up; its closed-loop rows become the matrix.
func (r *run) matrixByRunAll(ctx context.Context) {
	switch {
	case !r.want("matrix"):
		r.rep.Peers.RunAll = "not run (matrix stage not selected)"
		return
	case r.cfg.RunAll == "off":
		r.rep.Peers.RunAll = "not run (-run-all off); the matrix comes from our generator"
		return
	case !r.setup.RunAllReady():
		r.rep.Peers.RunAll = "not run: the harness is not set up on this machine (see below); the matrix comes from our generator, same closed-loop semantics as its loadgen, for the peers that can start"
		return
	}
	r.prog.step("run_all.sh: node, fastapi, fastapi-w2, floor and policyd (several minutes)")
	port, err := proc.FreePort()
	if err != nil {
		r.fail("run_all.sh: %v", err)
		return
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	cfgPath := filepath.Join(r.dir, "servers", "run_all.yaml")
	_ = os.MkdirAll(filepath.Dir(cfgPath), 0o755)
	if err := os.WriteFile(cfgPath, []byte(policydConfig(addr, "off", r.repo, policydOptions{models: []modelOptions{{name: "mlp-small"}, {name: "mlp-med"}}})), 0o644); err != nil {
		r.fail("run_all.sh: %v", err)
		return
	}
	policyd, _ := filepath.Abs(r.cfg.Policyd)
	cfgAbs, _ := filepath.Abs(cfgPath)
	servers := "node fastapi fastapi-w2 floor"
	if r.cfg.Quick {
		servers = "node floor"
	}
	logPath := filepath.Join(r.dir, "run_all.log")
	logf, err := os.Create(logPath)
	if err != nil {
		r.fail("run_all.sh: %v", err)
		return
	}
	defer logf.Close()
	copyDir := filepath.Join(r.dir, "peers")
	raw, err := r.harness.RunAll(ctx, peers.RunAllOptions{Copy: copyDir, RunID: r.cfg.RunID, Stages: "http wrk", Servers: servers,
		Quick: r.cfg.Quick, Extra: &peers.ExtraServer{Name: "policyd", Port: port, Cmd: policyd + " --config " + cfgAbs}, NodeModules: r.setup.NodeModules, Log: logf})
	r.rep.Peers.RawDir = raw
	if err != nil {
		r.fail("%v (log: %s)", err, logPath)
		r.rep.Peers.RunAll = "failed: " + err.Error() + "; the matrix comes from our generator"
		return
	}
	rows, err := peers.ReadHTTP(raw)
	if err == nil {
		r.rep.Wrk, err = peers.ReadWrk(raw)
	}
	if err != nil || len(rows) == 0 {
		r.fail("run_all.sh output: %v (%d rows; log: %s)", err, len(rows), logPath)
		r.rep.Peers.RunAll = "ran, but its output was unusable; the matrix comes from our generator"
		return
	}
	for _, row := range rows {
		c := Case{Stage: "matrix", Server: row.Server, Model: row.Model, Batch: row.Batch, Source: "run_all.sh loadgen", Result: row.Result}
		c.Concurrency = row.Conc
		r.rep.Cases = append(r.rep.Cases, c)
	}
	r.runAll = true
	r.rep.Peers.RunAll = fmt.Sprintf("ran (STAGES=\"http wrk\" SERVERS=\"%s\" + policyd as EXTRA_SERVER; raw lines in %s)", servers, raw)
}

// memory starts one policyd per model and samples its memory at rest and under load.
func (r *run) memory(ctx context.Context) {
	for _, m := range r.plan.memModels {
		if ctx.Err() != nil {
			return
		}
		r.prog.step("memory: policyd serving %s alone", m)
		srv, err := r.startPolicyd(ctx, "memory-"+m, policydOptions{models: []modelOptions{{name: m}}})
		if err != nil {
			r.fail("memory %s: %v", m, err)
			r.rep.Memory = append(r.rep.Memory, MemoryRow{Model: m, Error: err.Error()})
			continue
		}
		time.Sleep(200 * time.Millisecond)
		row := r.memorySample(srv, MemoryRow{Model: m})
		row.MaxRSS = row.RSS
		r.rep.Memory = append(r.rep.Memory, row)
		for _, b := range []int{1, 32} {
			conc := 16
			if len(r.body(m, b).JSON) > 1<<20 {
				conc = 2 // cnn-atari: megabytes of JSON per request
			}
			r.rep.Memory = append(r.rep.Memory, r.memoryUnderLoad(ctx, srv, m, b, conc))
		}
		r.ss.stop(srv)
	}
}

func (r *run) memorySample(srv *server, row MemoryRow) MemoryRow {
	mem, err := load.ProcMemory(srv.PID())
	if err != nil {
		row.Error = err.Error()
		return row
	}
	row.RSS, row.PeakRSS = mem.RSS, mem.PeakRSS
	if ms, err := scrape.Metrics(srv.Addr, "go_memstats_heap_inuse_bytes", "policyd_engine_memory_bytes"); err == nil {
		if v, ok := ms["go_memstats_heap_inuse_bytes"]; ok {
			row.HeapInuse = &v
		}
		if v, ok := ms["policyd_engine_memory_bytes"]; ok {
			row.Engine = &v
		}
	}
	return row
}

func (r *run) memoryUnderLoad(ctx context.Context, srv *server, model string, batch, conc int) MemoryRow {
	r.prog.step("memory: %s b%d c%d under load", model, batch, conc)
	b := r.body(model, batch)
	var maxRSS atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if m, err := load.ProcMemory(srv.PID()); err == nil && m.RSS > maxRSS.Load() {
				maxRSS.Store(m.RSS)
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	res, err := load.Run(ctx, load.Request{URL: inferURL(srv.Addr, model), Body: b.JSON},
		load.Options{Mode: "closed", Connections: conc, Duration: r.plan.memDur, Warmup: r.plan.warm / 2, Check: &b.Ref})
	err = srv.explain(err)
	close(stop)
	wg.Wait()
	row := r.memorySample(srv, MemoryRow{Model: model, Batch: batch, Concurrency: conc, RPS: res.RPS})
	row.MaxRSS = max(maxRSS.Load(), row.RSS)
	if err != nil && ctx.Err() == nil {
		row.Error = err.Error()
		r.fail("memory %s b%d: %v", model, batch, err)
	}
	return row
}

// search runs the batching grid on mlp-med b1 JSON.
func (r *run) search(ctx context.Context) {
	s := &Search{Model: "mlp-med", Batch: 1, TargetP99: r.cfg.P99Target}
	r.rep.Search = s
	b := r.body("mlp-med", 1)
	for _, cfg := range r.plan.grid {
		if ctx.Err() != nil {
			return
		}
		r.prog.step("search: %s", cfg)
		c := cfg
		srv, err := r.startPolicyd(ctx, "search", policydOptions{models: []modelOptions{{name: "mlp-med", instances: c.Instances, batching: &c}}})
		if err != nil {
			s.Points = append(s.Points, SearchPoint{Config: cfg, Load: "start", Error: err.Error()})
			r.fail("search %s: %v", cfg, err)
			continue
		}
		req := load.Request{URL: inferURL(srv.Addr, "mlp-med"), Body: b.JSON}
		r.prog.step("search: %s closed loop, 32 connections", cfg)
		res, err := load.Run(ctx, req, load.Options{Mode: "closed", Connections: 32, Duration: r.plan.probeDur, Warmup: r.plan.warm / 2, Check: &b.Ref})
		err = srv.explain(err)
		pt := SearchPoint{Config: cfg, Load: "closed, 32 connections", RPS: res.RPS, P50: res.P50, P99: res.P99, Errors: res.Errors}
		if err != nil {
			pt.Error = err.Error()
		}
		s.Points = append(s.Points, pt)
		for i, f := range r.plan.searchFractions {
			if err != nil || ctx.Err() != nil {
				break
			}
			rate := float64(int(f*pt.RPS/10+0.5) * 10)
			r.prog.step("search: %s open loop at %s req/s", cfg, num(rate, 0))
			o, oerr := load.Run(ctx, req, load.Options{Mode: "open", Connections: 64, Outstanding: 512, Rate: rate, Arrival: "poisson",
				Seed: uint64(i + 1), Duration: r.plan.srchDur, Warmup: r.plan.warm / 2})
			oerr = srv.explain(oerr)
			op := SearchPoint{Config: cfg, Load: fmt.Sprintf("open, %s req/s (%.0f %% of closed)", num(rate, 0), 100*f), Open: true,
				RPS: o.RPS, P50: o.P50, P99: o.P99, Overloaded: o.Dropped > 0, Errors: o.Errors}
			if n := o.Requests + o.Errors; n > 0 {
				op.LatePct = round1(100 * float64(o.Late) / float64(n))
			}
			if oerr != nil {
				op.Error = oerr.Error()
			}
			s.Points = append(s.Points, op)
			if !op.meets(r.cfg.P99Target) {
				break // a higher rate will not meet it either
			}
		}
		r.ss.stop(srv)
	}
	s.Best, s.Why = choose(s.Points, s.TargetP99)
	if s.Best != nil {
		s.Snippet = snippet(s.Model, s.Best.Config)
	}
}

func round1(x float64) float64 { return float64(int(x*10+0.5)) / 10 }

// baseline compares against bench/baselines/<key>.json and saves this run when asked.
func (r *run) baseline() {
	key := BaselineKey(r.rep.Machine)
	c := &Comparison{Key: key, Path: filepath.Join(r.cfg.BaselineDir, key+".json"), Tolerance: r.cfg.Tolerance}
	b, err := LoadBaseline(r.cfg.BaselineDir, key)
	switch {
	case err != nil:
		r.fail("baseline: %v", err)
	case b != nil:
		cmp := Compare(*b, r.rep, r.cfg.Tolerance)
		cmp.Path = c.Path
		c = &cmp
	}
	if r.cfg.SaveBaseline {
		path, err := SaveBaseline(r.cfg.BaselineDir, NewBaseline(r.rep))
		if err != nil {
			r.fail("save baseline: %v", err)
		} else {
			c.Saved = path
		}
	}
	r.rep.Baseline = c
}
