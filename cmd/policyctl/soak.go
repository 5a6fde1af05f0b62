package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/policyd/policyd/bench/soak"
)

// envList is a repeatable -env KEY=VALUE flag.
type envList []string

func (e *envList) String() string     { return strings.Join(*e, " ") }
func (e *envList) Set(v string) error { *e = append(*e, v); return nil }

func benchSoak(ctx context.Context, argv0 string, path, args []string, stdout, stderr io.Writer) int {
	r := newReportRun(argv0, path, args, stdout, stderr)
	fs := r.fs
	cfg := soak.Config{Log: stderr}
	var models string
	var env envList
	fs.StringVar(&cfg.Root, "root", ".", "policyd checkout `DIR` (examples/repository, testdata/reference)")
	fs.StringVar(&cfg.PeersDir, "peers", "../shared/peers", "peer harness `DIR` (read only)")
	fs.StringVar(&cfg.OutDir, "out", "build/bench", "output `DIR`: the run writes DIR/RUN-ID/")
	fs.StringVar(&cfg.RunID, "run-id", "", "`NAME` of the run (default soak-<UTC date and time>)")
	fs.StringVar(&cfg.Policyd, "policyd", "bin/policyd", "policyd `BINARY` to soak")
	fs.DurationVar(&cfg.Duration, "d", 30*time.Minute, "load `DURATION`, warm-up included")
	fs.DurationVar(&cfg.Exclude, "warmup", 0, "the first `DURATION` left out of the RSS slope (default min(5m, d/3))")
	fs.DurationVar(&cfg.Every, "every", 5*time.Second, "sampling `PERIOD` of RSS, Go heap and goroutines")
	fs.IntVar(&cfg.Connections, "c", 16, "`N` connections, dealt round robin to the models")
	fs.StringVar(&models, "models", strings.Join(soak.DefaultModels, ","), "comma-separated `MODELS`: examples/repository names or the peers' models")
	fs.Float64Var(&cfg.MaxSlope, "max-slope", 0.5, "target: RSS slope after the warm-up at most `MIB` per minute")
	fs.Var(&env, "env", "`KEY=VALUE` added to the server's environment (repeatable; e.g. MALLOC_ARENA_MAX=2)")
	r.usage("policyd's memory over time (make bench-soak)",
		"Starts bin/policyd on loopback serving three models, loads them closed loop for -d, samples\n"+
			"the server's RSS (/proc/PID/status) and Go heap (/metrics) every -every, and fits the RSS\n"+
			"after -warmup (least squares, MiB/min). Writes OUT/RUN-ID/report.json, report.txt and\n"+
			"samples.csv; exit 1 unless the slope is within -max-slope and no request failed.\n\nFlags:\n")
	exe, command, code, done := r.parse()
	if done {
		return code
	}
	cfg.Models, cfg.Env, cfg.Policyctl, cfg.Command = splitList(models), env, exe, command
	rep, err := soak.Run(ctx, cfg)
	if rep != nil {
		fmt.Fprint(stdout, rep.Text())
		fmt.Fprintf(stdout, "Report: %s\n", filepath.Join(cfg.OutDir, rep.RunID, "report.txt"))
	}
	if err != nil {
		return r.exit(err)
	}
	if !rep.Pass {
		return 1
	}
	return 0
}

func benchMemory(ctx context.Context, argv0 string, path, args []string, stdout, stderr io.Writer) int {
	r := newReportRun(argv0, path, args, stdout, stderr)
	fs := r.fs
	cfg := soak.MemoryConfig{Log: stderr}
	var env envList
	fs.StringVar(&cfg.Root, "root", ".", "policyd checkout `DIR` (testdata/reference)")
	fs.StringVar(&cfg.PeersDir, "peers", "../shared/peers", "peer harness `DIR` (read only): mlp-med and cnn-atari")
	fs.StringVar(&cfg.OutDir, "out", "build/bench", "output `DIR`: the run writes DIR/RUN-ID/")
	fs.StringVar(&cfg.RunID, "run-id", "", "`NAME` of the run (default memory-<UTC date and time>)")
	fs.StringVar(&cfg.Policyd, "policyd", "bin/policyd", "policyd `BINARY` to measure")
	fs.Var(&env, "env", "`KEY=VALUE` added to the server's environment (repeatable)")
	r.usage("peak RSS per large JSON body, the memory targets (make bench-memory)",
		"Each case on a freshly started bin/policyd: a refused 15 MiB body (peak at most 150 MiB above\n"+
			"idle) and an accepted cnn-atari batch-32 body (at most 4x the body above idle); peak RSS is the\n"+
			"server's VmHWM, reset to its RSS just before the request. Writes OUT/RUN-ID/memory.json and\n"+
			"memory.txt; exit 1 when a target is missed.\n\nFlags:\n")
	exe, command, code, done := r.parse()
	if done {
		return code
	}
	cfg.Env, cfg.Policyctl, cfg.Command = env, exe, command
	rep, err := soak.Memory(ctx, cfg)
	if rep != nil {
		fmt.Fprint(stdout, rep.Text())
		fmt.Fprintf(stdout, "Report: %s\n", filepath.Join(cfg.OutDir, rep.RunID, "memory.txt"))
	}
	if err != nil {
		return r.fail(err)
	}
	if !rep.Pass {
		return 1
	}
	return 0
}
