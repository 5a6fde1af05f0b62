package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/policyd/policyd/bench/load"
	"github.com/policyd/policyd/bench/machine"
	"github.com/policyd/policyd/bench/peers"
	"github.com/policyd/policyd/bench/suite"
)

// parseFlags parses args into fs, answering --help on stdout; done means the command should
// return code.
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (code int, done bool) {
	if len(args) > 0 && isHelp(args[0]) {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0, true
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, true
		}
		return 2, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "%s: unexpected arguments %q\n", fs.Name(), fs.Args())
		return 2, true
	}
	return 0, false
}

// reportRun is a bench subcommand that runs a report (suite, soak, memory): its flags and
// how it was invoked.
type reportRun struct {
	name           string
	fs             *flag.FlagSet
	argv0          string
	path, args     []string
	stdout, stderr io.Writer
}

func newReportRun(argv0 string, path, args []string, stdout, stderr io.Writer) *reportRun {
	name := strings.Join(path, " ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return &reportRun{name: name, fs: fs, argv0: argv0, path: path, args: args, stdout: stdout, stderr: stderr}
}

// usage sets the -h text: the name and title, the usage line, about (a paragraph ending in
// "\n\nFlags:\n") and the flags.
func (r *reportRun) usage(title, about string) {
	r.fs.Usage = func() {
		w := r.fs.Output()
		fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s [flags]\n\n", r.name, title, r.name)
		fmt.Fprint(w, about)
		r.fs.PrintDefaults()
	}
}

// parse parses the flags and finds this binary, which the run calls back, and the command line
// the report records; done says to return code now.
func (r *reportRun) parse() (exe, command string, code int, done bool) {
	if code, done := parseFlags(r.fs, r.args, r.stdout); done {
		return "", "", code, true
	}
	exe, err := os.Executable()
	if err != nil {
		return "", "", r.fail(err), true
	}
	return exe, machine.ShellQuote(append(append([]string{r.argv0}, r.path[1:]...), r.args...)), 0, false
}

// fail reports err on stderr and returns the exit code 1.
func (r *reportRun) fail(err error) int {
	fmt.Fprintf(r.stderr, "%s: %v\n", r.name, err)
	return 1
}

// exit is the exit code of a run that ended with err: 0 when nil, 130 when interrupted, else 1
// (err reported on stderr).
func (r *reportRun) exit(err error) int {
	if err == nil {
		return 0
	}
	r.fail(err)
	if errors.Is(err, context.Canceled) {
		return 130
	}
	return 1
}

func benchLoad(ctx context.Context, argv0 string, path, args []string, stdout, stderr io.Writer) int {
	name := strings.Join(path, " ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                             load.Options
		url, bodyPath, expect, model  string
		peersDir, refDir, pids, label string
		batch                         int
		binary, shapeOnly, stream     bool
		atol, rtol                    float64
		grpcAddr, grpcModel           string
		shm, shmRewrite               bool
		tokenFile                     string
	)
	fs.StringVar(&url, "url", "", "`URL` to POST to, http://127.0.0.1:PORT/v2/models/NAME/infer (loopback only)")
	fs.StringVar(&bodyPath, "body", "", "KServe v2 JSON request `FILE` (e.g. ../shared/peers/models/bodies/mlp-med_b1.json)")
	fs.StringVar(&expect, "expect", "", "reference response `FILE` the first answer must match (KServe v2 JSON)")
	fs.StringVar(&model, "model", "", "instead of -body/-expect: the peer model `NAME` whose body and reference to use (peers' bodies, else testdata/reference tiled)")
	fs.IntVar(&batch, "batch", 1, "with -model: the batch `SIZE`")
	fs.StringVar(&peersDir, "peers", "../shared/peers", "with -model: the peer harness `DIR`")
	fs.StringVar(&refDir, "refs", "testdata/reference", "with -model: the ONNX Runtime references `DIR` (when the peers' bodies are absent)")
	fs.BoolVar(&binary, "binary", false, "send the inputs with the binary tensor data extension and ask for binary outputs")
	fs.StringVar(&grpcAddr, "grpc", "", "instead of -url: the gRPC `HOST:PORT` (loopback only); ModelInfer with raw FP32 inputs, closed loop")
	fs.StringVar(&grpcModel, "grpc-model", "", "with -grpc: the served model `NAME` (default -model)")
	fs.BoolVar(&stream, "stream", false, "with -grpc: ModelStreamInfer, one stream per connection, one request in flight on it")
	fs.BoolVar(&shm, "shm", false, "Triton's system shared memory: inputs and outputs in a /dev/shm object per connection, registered as a region over -url; requests over -url, or unary over -grpc when given (needs shared_memory.enabled and a reference: -model or -expect)")
	fs.BoolVar(&shmRewrite, "shm-rewrite", false, "with -shm: write the inputs into the region before every request, as a simulator writes each step's observation")
	fs.StringVar(&tokenFile, "token-file", "", "with -shm: `FILE` holding the admin token for the register and unregister calls")
	fs.BoolVar(&shapeOnly, "shape-only", false, "check only output names and shapes (the constant-output floor)")
	fs.Float64Var(&atol, "atol", 1e-4, "absolute tolerance of the check")
	fs.Float64Var(&rtol, "rtol", 1e-3, "relative tolerance of the check")
	fs.StringVar(&o.Mode, "mode", "closed", "`MODE`: closed (C connections, one request in flight each) or open (fixed arrival rate)")
	fs.IntVar(&o.Connections, "c", 1, "`N` connections (closed: workers; open: most requests in flight)")
	fs.Float64Var(&o.Rate, "rate", 0, "open: requests per `SECOND`")
	fs.StringVar(&o.Arrival, "arrival", "constant", "open: `KIND` of arrivals, constant or poisson")
	fs.Uint64Var(&o.Seed, "seed", 1, "open, poisson: `SEED` of the arrival times")
	fs.IntVar(&o.Outstanding, "outstanding", 0, "open: most requests queued or in flight (`N`); beyond it a due request is dropped (default 4 × -c)")
	fs.DurationVar(&o.Duration, "d", 5*time.Second, "measured `DURATION`")
	fs.DurationVar(&o.Warmup, "warmup", time.Second, "warm-up `DURATION` (not recorded)")
	fs.DurationVar(&o.Timeout, "timeout", 10*time.Second, "per-request `TIMEOUT`")
	fs.Int64Var(&o.MaxRequests, "max-requests", 5_000_000, "closed: stop after `N` measured requests")
	fs.StringVar(&pids, "server-pid", "", "server `PIDS`, comma-separated: report their CPU time per request")
	fs.StringVar(&label, "label", "", "free `TEXT` echoed in the output")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s — KServe v2 load generator (HTTP closed or open loop, JSON, binary or shared memory; gRPC closed loop, unary or streaming)\n\nUsage:\n  %s (-url URL | -grpc HOST:PORT [-stream] | -shm -url URL [-grpc HOST:PORT]) (-body FILE [-expect FILE] | -model NAME [-batch N]) [flags]\n\n", name, name)
		fmt.Fprintf(w, "Checks the first answer, then loads the URL and prints one JSON line: the peers' loadgen\n"+
			"fields (p50_us ... p999_us, rps, errors, server_cpu_us_per_req), plus, open loop, dropped,\n"+
			"late, service and send_lag percentiles. Exit 1 when the check fails or nothing succeeded.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if code, done := parseFlags(fs, args, stdout); done {
		return code
	}
	for _, p := range strings.Split(pids, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		pid, err := strconv.Atoi(p)
		if err != nil {
			fmt.Fprintf(stderr, "%s: -server-pid: %q is not a PID\n", name, p)
			return 2
		}
		o.ServerPIDs = append(o.ServerPIDs, pid)
	}
	if shm && url == "" {
		fmt.Fprintf(stderr, "%s: -shm needs -url (the regions are registered over HTTP; with -grpc too, the requests go over gRPC)\n", name)
		return 2
	}
	if (!shm && (url == "") == (grpcAddr == "")) || (bodyPath == "") == (model == "") {
		fmt.Fprintf(stderr, "%s: need exactly one of -url or -grpc and exactly one of -body or -model\n", name)
		return 2
	}
	if shm && (stream || binary || o.Mode != "closed") {
		fmt.Fprintf(stderr, "%s: -shm is closed loop only, JSON over HTTP or unary over gRPC\n", name)
		return 2
	}
	var token string
	if tokenFile != "" {
		raw, err := os.ReadFile(tokenFile)
		if err != nil {
			fmt.Fprintf(stderr, "%s: -token-file: %v\n", name, err)
			return 2
		}
		token = strings.TrimSpace(string(raw))
	}
	if grpcModel == "" {
		grpcModel = model
	}
	if grpcAddr != "" && grpcModel == "" {
		fmt.Fprintf(stderr, "%s: -grpc with -body needs -grpc-model\n", name)
		return 2
	}
	var inputs []load.Tensor
	var body []byte
	ref := &load.Reference{ShapeOnly: true}
	if model != "" {
		specs, err := peers.LoadSpecs(filepath.Join(peersDir, "models"))
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 2
		}
		spec, ok := peers.FindSpec(specs, model)
		if !ok {
			fmt.Fprintf(stderr, "%s: -model %q is not in %s/models/models.json\n", name, model, peersDir)
			return 2
		}
		b, err := peers.Harness{Dir: peersDir}.LoadBody(model, batch, spec, refDir)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 2
		}
		inputs, body, ref = b.Inputs, b.JSON, &b.Ref
	} else {
		var err error
		if body, err = os.ReadFile(bodyPath); err != nil {
			fmt.Fprintf(stderr, "%s: -body: %v\n", name, err)
			return 2
		}
		if inputs, err = load.ParseInputs(body); err != nil {
			fmt.Fprintf(stderr, "%s: -body %s: %v\n", name, bodyPath, err)
			return 2
		}
		if expect != "" {
			raw, err := os.ReadFile(expect)
			if err != nil {
				fmt.Fprintf(stderr, "%s: -expect: %v\n", name, err)
				return 2
			}
			r, err := load.ParseReference(raw)
			if err != nil {
				fmt.Fprintf(stderr, "%s: -expect %s: %v\n", name, expect, err)
				return 2
			}
			ref = &r
		}
	}
	ref.Atol, ref.Rtol = atol, rtol
	ref.ShapeOnly = ref.ShapeOnly || shapeOnly
	o.Check = ref
	req := load.Request{URL: url, Body: body}
	if binary {
		b, n, err := load.BinaryBody(inputs)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", name, err)
			return 2
		}
		req.Body, req.HeaderLength = b, n
	}
	if err := o.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	var res load.Result
	var err error
	switch {
	case shm:
		if len(ref.Outputs) == 0 {
			fmt.Fprintf(stderr, "%s: -shm needs the outputs' shapes: give -model or -expect\n", name)
			return 2
		}
		res, err = load.RunSHM(ctx, load.SHMRequest{URL: url, GRPCAddr: grpcAddr, Inputs: inputs, Outputs: ref.Outputs, Token: token, Rewrite: shmRewrite}, o)
	case grpcAddr != "":
		res, err = load.RunGRPC(ctx, load.GRPCRequest{Addr: grpcAddr, Model: grpcModel, Inputs: inputs, Stream: stream}, o)
	default:
		res, err = load.Run(ctx, req, o)
	}
	res.Label = label
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		if errors.Is(err, load.ErrCheck) || res.Requests == 0 {
			return 1
		}
	}
	line, _ := json.Marshal(res)
	fmt.Fprintln(stdout, string(line))
	if err != nil {
		return 1
	}
	return 0
}

func benchSuite(ctx context.Context, argv0 string, path, args []string, stdout, stderr io.Writer) int {
	r := newReportRun(argv0, path, args, stdout, stderr)
	fs := r.fs
	cfg := suite.Config{Log: stderr}
	var stages string
	fs.StringVar(&cfg.Root, "root", ".", "policyd checkout `DIR` (testdata/reference, bin/)")
	fs.StringVar(&cfg.PeersDir, "peers", "../shared/peers", "peer harness `DIR` (read only)")
	fs.StringVar(&cfg.NodeModules, "node-modules", "build/peers/node/node_modules", "`DIR` with onnxruntime-node, used when the harness's node/ has none")
	fs.StringVar(&cfg.OutDir, "out", "build/bench", "output `DIR`: the run writes DIR/RUN-ID/")
	fs.StringVar(&cfg.RunID, "run-id", "", "`NAME` of the run (default: UTC date and time)")
	fs.BoolVar(&cfg.Quick, "quick", false, "shorter runs and fewer points (about 4 minutes instead of 12)")
	fs.StringVar(&cfg.Policyd, "policyd", "bin/policyd", "policyd `BINARY` to measure")
	fs.StringVar(&cfg.Ghz, "ghz", "tools/bin/ghz", "ghz `BINARY` (make tools) for the gRPC rows' independent generator; missing: those rows are left out")
	fs.DurationVar(&cfg.P99Target, "p99-target", 2*time.Millisecond, "batching search: the p99 `LATENCY` a recommendation must keep")
	fs.Float64Var(&cfg.Tolerance, "tolerance", 0.15, "baseline: flag p50/p99 up or req/s down by more than this `FRACTION`")
	fs.StringVar(&cfg.BaselineDir, "baselines", "bench/baselines", "`DIR` of the per-hardware baselines")
	fs.BoolVar(&cfg.SaveBaseline, "save-baseline", false, "write this run as the baseline of this hardware")
	fs.StringVar(&cfg.RunAll, "run-all", "auto", "`WHEN` to run the peers' run_all.sh: auto (when the harness is set up) or off")
	fs.StringVar(&stages, "stages", "", "comma-separated `STAGES` to run (default all): "+strings.Join(suite.Stages, ","))
	r.usage("the benchmark suite (make bench)",
		"Builds a repository of the peer models, runs bin/policyd and the peers side by side, and\n"+
			"writes OUT/RUN-ID/report.md, report.json and latency-throughput.svg. Progress on stderr;\n"+
			"the targets and the report's path on stdout. See docs/performance.md.\n\nFlags:\n")
	exe, command, code, done := r.parse()
	if done {
		return code
	}
	cfg.Stages, cfg.Policyctl, cfg.Command = splitList(stages), exe, command
	rep, err := suite.Run(ctx, cfg)
	if rep != nil && rep.Targets != nil {
		fmt.Fprintf(stdout, "Targets (run %s):\n", rep.RunID)
		for _, t := range rep.Targets {
			v := "–"
			if t.Value != nil {
				v = fmt.Sprintf("%.2f", *t.Value)
			}
			fmt.Fprintf(stdout, "  %-5s %s: %s (limit %s %.1f; %s)\n", t.Status, t.What, v, t.Cmp, t.Limit, t.Detail)
		}
		if b := rep.Baseline; b != nil && b.Found {
			fmt.Fprintf(stdout, "Baseline %s: %d cases compared, %d regression(s) beyond ±%.0f %%\n", b.Path, b.Compared, len(b.Regressions), 100*b.Tolerance)
		}
		if len(rep.Failures) > 0 {
			fmt.Fprintf(stdout, "%d failure(s): see the report\n", len(rep.Failures))
		}
		fmt.Fprintf(stdout, "Report: %s\n", filepath.Join(cfg.OutDir, rep.RunID, "report.md"))
	}
	return r.exit(err)
}
