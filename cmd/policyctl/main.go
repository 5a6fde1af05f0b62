// Command policyctl is the operator CLI of policyd. It is thin: flags and wiring; the work is
// in the packages it calls.
//
// Usage:
//
//	policyctl artifacts add --repository DIR --name NAME --version X.Y.Z MODEL.onnx
//	                        [--metadata k=v]... [--sign-key KEY]
//	policyctl artifacts verify --repository DIR [NAME[@VERSION]] [--trusted-key PUB]...
//	policyctl artifacts list --repository DIR
//	policyctl artifacts report --repository DIR [NAME[@VERSION]] [--trusted-key PUB]... [--format text|json]
//	policyctl artifacts keygen --out NAME
//	policyctl artifacts sign --repository DIR --key KEY NAME@VERSION
//	policyctl artifacts migrate --repository DIR
//	policyctl artifacts rollback NAME --to X.Y.Z [--server URL] [--token-file F]
//	policyctl bench engine [--models DIR] [--model NAME,...] [--batch 1,32,256] [--seconds 2]
//	                       [--warmup 0.5] [--modes st,par] [--ort-script PATH] [--node node]
//	                       [--check=true] [--allow-refused] [--format markdown|json]
//	policyctl bench load (-url URL [-binary] | -grpc HOST:PORT [-stream]) (-body FILE [-expect FILE] | -model NAME [-batch N])
//	                     [-mode closed|open] [-c N] [-rate R] [-arrival constant|poisson] [-d 5s] ...
//	policyctl bench suite [-quick] [-p99-target 2ms] [-save-baseline] [-stages ...] [-run-all auto|off] ...
//	policyctl config validate FILE [--profile P] [--env]
//	policyctl config diff A B [--profile P | --profile-a P --profile-b Q] [--env]
//	policyctl config schema
//	policyctl engines build --repository DIR [--model NAME[@VERSION]] [--backend-dir DIR]
//	                        [--sign-key KEY] [--force]
//	policyctl traffic set MODEL VERSION=WEIGHT... [--clear] [--server URL] [--token-file F]
//	policyctl traffic status MODEL [--server URL] [--token-file F] [--format text|json]
//
// Every command and command group takes --help. Exit status: 0 success, 1 failure, 2 usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	benchengine "github.com/policyd/policyd/bench/engine"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// command is a node of the command tree: a group (subs) or a leaf (run). The shape maps one to
// one onto cobra.Command should the CLI move to it.
type command struct {
	name  string
	short string
	subs  []*command
	run   func(ctx context.Context, argv0 string, path, args []string, stdout, stderr io.Writer) int
}

func root() *command {
	return &command{name: "policyctl", short: "operator CLI of policyd", subs: []*command{
		{name: "artifacts", short: "the model repository: add, verify, sign, report, roll back versions", subs: artifactsCommands()},
		{name: "bench", short: "benchmarks", subs: []*command{
			{name: "engine", short: "engine latency/throughput beside onnxruntime-node, same machine, same run", run: benchEngine},
			{name: "load", short: "KServe v2 load generator: closed or open loop, JSON or binary, HdrHistogram percentiles", run: benchLoad},
			{name: "suite", short: "the benchmark suite (make bench): policyd beside the peers, report, baseline", run: benchSuite},
			{name: "soak", short: "memory over time (make bench-soak): RSS slope under load over three models", run: benchSoak},
			{name: "memory", short: "peak RSS for large JSON bodies, the memory targets (make bench-memory)", run: benchMemory},
		}},
		{name: "config", short: "check, compare and describe config files", subs: configCommands()},
		{name: "engines", short: "engine caches: build them for the local GPUs (make engines)", subs: enginesCommands()},
		{name: "traffic", short: "traffic policies of a running server: weighted splits, shadow, gates", subs: trafficCommands()},
	}}
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "help" }

// run dispatches args (os.Args) down the tree and returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	argv0 := "policyctl"
	if len(args) > 0 {
		argv0, args = args[0], args[1:]
	}
	cmd, path := root(), []string{"policyctl"}
	for cmd.run == nil {
		if len(args) == 0 {
			usage(stderr, cmd, path)
			return 2
		}
		if isHelp(args[0]) {
			usage(stdout, cmd, path)
			return 0
		}
		var next *command
		for _, s := range cmd.subs {
			if s.name == args[0] {
				next = s
			}
		}
		if next == nil {
			fmt.Fprintf(stderr, "%s: unknown command %q\n\n", strings.Join(path, " "), args[0])
			usage(stderr, cmd, path)
			return 2
		}
		cmd, path, args = next, append(path, next.name), args[1:]
	}
	return cmd.run(ctx, argv0, path, args, stdout, stderr)
}

func usage(w io.Writer, cmd *command, path []string) {
	fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s <command> [flags]\n\nCommands:\n", strings.Join(path, " "), cmd.short, strings.Join(path, " "))
	for _, s := range cmd.subs {
		fmt.Fprintf(w, "  %-10s %s\n", s.name, s.short)
	}
	fmt.Fprintf(w, "\nRun '%s <command> --help' for a command's flags.\n", strings.Join(path, " "))
}

func benchEngine(ctx context.Context, argv0 string, path, args []string, stdout, stderr io.Writer) int {
	name := strings.Join(path, " ")
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		cfg     = benchengine.Config{Log: stderr}
		models  string
		batches string
		modes   string
		script  string
		node    string
	)
	fs.StringVar(&cfg.ModelsDir, "models", "../shared/peers/models", "`DIR` with models.json and the .onnx files")
	fs.StringVar(&models, "model", "", "comma-separated model `NAMES` (default: every model of models.json)")
	fs.StringVar(&batches, "batch", "1,32,256", "comma-separated batch `SIZES`")
	fs.Float64Var(&cfg.Params.Seconds, "seconds", 2, "timed `SECONDS` per mode, model and batch (each peer)")
	fs.Float64Var(&cfg.Params.Warmup, "warmup", 0.5, "warm-up `SECONDS` before each timed loop")
	fs.IntVar(&cfg.Params.MaxIters, "max-iters", 200000, "at most `N` timed calls per worker (the loop ends at --seconds or N)")
	fs.IntVar(&cfg.Params.MinIters, "min-iters", 10, "at least `N` timed calls per worker")
	fs.IntVar(&cfg.Params.Workers, "workers", runtime.NumCPU(), "`N` contexts/sessions of mode par, each peer (default: nproc)")
	fs.IntVar(&cfg.Retries, "retries", 1, "measure a run again up to `N` times while other processes used >= 0.1 cores during it")
	fs.StringVar(&modes, "modes", "st,par", "comma-separated `MODES`: st (one context, 1 thread), par (--workers contexts at once)")
	fs.StringVar(&script, "ort-script", "", "`PATH` of ort_bench.js with node/node_modules/onnxruntime-node beside it (default: no ORT columns)")
	fs.StringVar(&node, "node", "node", "node `BINARY` to run --ort-script with")
	fs.BoolVar(&cfg.Check, "check", true, "with --ort-script: compare policyd's outputs with ORT's on each model and batch (ort_outputs.js beside ort_bench.js); a mismatch fails the run")
	fs.BoolVar(&cfg.AllowRefused, "allow-refused", false, "a model policyd refuses to load (UNSUPPORTED) is reported as \"refused: …\" and does not fail the run")
	fs.StringVar(&cfg.Format, "format", "markdown", "report `FORMAT`: markdown (one table) or json (JSON lines)")
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "%s — %s\n\nUsage:\n  %s [flags]\n\n", name, "benchmark policyd's engine beside onnxruntime-node", name)
		fmt.Fprintf(w, "For each model and batch: policyd st, policyd par (through package bridge, 1 thread per\n"+
			"context), then ORT st and par (node --ort-script), one after another. Progress goes to\n"+
			"stderr, the report to stdout.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if len(args) > 0 && isHelp(args[0]) {
		fs.SetOutput(stdout)
		fs.Usage()
		return 0
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected arguments %q\n", name, fs.Args())
		return 2
	}
	var err error
	cfg.Models = splitList(models)
	cfg.Modes = splitList(modes)
	if cfg.Batches, err = parseInts(batches); err != nil {
		fmt.Fprintf(stderr, "%s: --batch: %v\n", name, err)
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 2
	}
	if script != "" {
		if _, err := os.Stat(script); err != nil {
			fmt.Fprintf(stderr, "%s: --ort-script: %v\n", name, err)
			return 2
		}
		cfg.ORT = &benchengine.ORTRunner{Node: node, Script: script, ModelsDir: absOr(cfg.ModelsDir)}
		if cfg.Check {
			cfg.ORT.CheckScript = filepath.Join(filepath.Dir(script), "ort_outputs.js")
			if _, err := os.Stat(cfg.ORT.CheckScript); err != nil {
				fmt.Fprintf(stderr, "%s: --check: %v (bench/engine/run.sh copies bench/engine/ort_outputs.js there; --check=false skips the check)\n", name, err)
				return 2
			}
		}
	}
	cfg.Command = benchengine.ShellQuote(append(append([]string{argv0}, path[1:]...), args...))
	if err := benchengine.Run(ctx, cfg, stdout); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
	return 0
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func parseInts(s string) ([]int, error) {
	var out []int
	for _, f := range splitList(s) {
		n, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("%q is not an integer", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func absOr(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
