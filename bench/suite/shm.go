package suite

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/policyd/policyd/bench/load"
	"github.com/policyd/policyd/bench/proc"
	"github.com/policyd/policyd/bench/scrape"
)

// engineMetric is the histogram of the engine's own time: each request observes the engine run
// of the batch it was in (metrics/metrics.go).
const engineMetric = "policyd_compute_infer_duration_seconds"

// shmStage measures Triton's system shared memory extension beside HTTP binary on a policyd of
// its own (shared_memory.enabled, an admin token, gRPC on): for each case of the plan, HTTP
// binary, shared memory over HTTP, then over gRPC (unary), in turn (twice), each run's engine
// time per request from the server's metrics. The shared-memory runs rewrite the inputs in the region before each request, as a
// simulator on the same host writes each step's observation; that copy is timed.
func (r *run) shmStage(ctx context.Context) {
	r.prog.step("starting policyd for shared memory (mlp-med, cnn-atari; shared_memory.enabled, admin token)")
	token := fmt.Sprintf("bench-%d-%d", os.Getpid(), time.Now().UnixNano())
	tokenFile := filepath.Join(r.dir, "servers", "shm.token")
	if err := os.MkdirAll(filepath.Dir(tokenFile), 0o755); err != nil {
		r.fail("shm: %v", err)
		return
	}
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		r.fail("shm: %v", err)
		return
	}
	srv, err := r.startPolicyd(ctx, "shm", policydOptions{models: []modelOptions{{name: "mlp-med"}, {name: "cnn-atari"}}, shm: true, tokenFile: tokenFile, grpc: true})
	if err != nil {
		r.fail("shm: policyd does not start: %v", err)
		return
	}
	defer r.ss.stop(srv)
	r.rep.Servers = append(r.rep.Servers, Server{Name: "policyd (shm)", What: "bin/policyd, default settings plus shared_memory.enabled and an admin token file; config " + filepath.Join(r.dir, "servers", "shm.yaml")})
	for _, sc := range r.plan.shmCases {
		for _, conc := range sc.concs {
			for round := 0; round < r.plan.shmRounds; round++ {
				if ctx.Err() != nil {
					return
				}
				for _, proto := range []string{"binary", "shm", "grpc-shm"} {
					r.shmCase(ctx, srv, sc.model, sc.batch, conc, proto, token)
				}
			}
		}
	}
	if !srv.Alive() {
		r.fail("policyd (shm) exited during the run: %s", proc.Tail(srv.Log, 600))
	}
}

// shmCase is one closed-loop run, HTTP binary ("binary") or shared memory over HTTP ("shm") or
// gRPC ("grpc-shm"), with the engine's mean time per
// request over the run (the delta of engineMetric's sum / count for the model, warm-up and the
// checked request included).
func (r *run) shmCase(ctx context.Context, srv *server, model string, batch, conc int, proto, token string) Case {
	b := r.body(model, batch)
	ref := b.Ref
	o := load.Options{Mode: "closed", Connections: conc, Duration: r.plan.dur, Warmup: r.plan.warm, ServerPIDs: srv.PIDs(), Check: &ref}
	match := map[string]string{"model": model}
	s0, n0, ok0, err0 := scrape.Histogram(srv.Addr, engineMetric, match)
	var (
		res load.Result
		err error
		c   = Case{Stage: "shm", Server: "policyd", Model: model, Batch: batch, Source: "policyctl bench load"}
	)
	r.prog.step("shm: policyd %s %s b%d c%d", proto, model, batch, conc)
	switch proto {
	case "shm", "grpc-shm":
		req := load.SHMRequest{URL: inferURL(srv.Addr, model), Inputs: b.Inputs, Outputs: ref.Outputs, Token: token, Rewrite: true}
		if proto == "grpc-shm" {
			req.GRPCAddr = srv.GRPCAddr
		}
		res, err = load.RunSHM(ctx, req, o)
	default:
		body, n, berr := load.BinaryBody(b.Inputs)
		if berr != nil {
			r.fail("binary body %s b%d: %v", model, batch, berr)
			return Case{Error: berr.Error()}
		}
		res, err = load.Run(ctx, load.Request{URL: inferURL(srv.Addr, model), Body: body, HeaderLength: n}, o)
	}
	if s1, n1, ok1, err1 := scrape.Histogram(srv.Addr, engineMetric, match); err0 == nil && err1 == nil && ok0 && ok1 && n1 > n0 {
		v := round1((s1 - s0) / (n1 - n0) * 1e6)
		c.EngineUS = &v
	}
	if res.Protocol == "" { // a failed run: label it still
		res.Protocol = proto
	}
	return r.record(ctx, srv, c, res, err, o)
}

// shmTargets are issue 16's shared-memory targets, from the shm stage (HTTP binary and shared
// memory in turn on the same policyd), on the median over the rounds of each protocol's p50:
// mlp-med b1 c1 shared-memory p50 ≤ 0.6 × HTTP binary's; cnn-atari b32 c1 time outside the
// engine (p50 − engine mean) ≤ 0.3 × HTTP binary's.
func shmTargets(cases []Case) []Target {
	var ts []Target
	b, okB := shmSummary(cases, "binary", "mlp-med", 1, 1)
	s, okS := shmSummary(cases, "shm", "mlp-med", 1, 1)
	t := Target{What: "shared memory, mlp-med, batch 1, 1 connection: p50 / HTTP binary p50", Limit: 0.6, Cmp: "<="}
	t.judge(s.p50/b.p50, okB && okS, fmt.Sprintf("%s / %s µs (median of %d runs each)", num(s.p50, 0), num(b.p50, 0), s.runs))
	ts = append(ts, t)
	b, okB = shmSummary(cases, "binary", "cnn-atari", 32, 1)
	s, okS = shmSummary(cases, "shm", "cnn-atari", 32, 1)
	t = Target{What: "shared memory, cnn-atari, batch 32, 1 connection: time outside the engine (p50 − engine mean) / HTTP binary's", Limit: 0.3, Cmp: "<="}
	okE := okB && okS && b.engineOK && s.engineOK
	t.judge(s.outside/b.outside, okE, fmt.Sprintf("%s / %s µs outside (p50 %s / %s µs, engine %s / %s µs)",
		num(s.outside, 0), num(b.outside, 0), num(s.p50, 0), num(b.p50, 0), num(s.engine, 0), num(b.engine, 0)))
	return append(ts, t)
}

// shmRow is the median over the rounds of one protocol's case.
type shmRow struct {
	p50, engine, outside float64
	engineOK             bool
	runs                 int
}

func shmSummary(cases []Case, proto, model string, batch, conc int) (shmRow, bool) {
	var p50s, engines, outs []float64
	for _, c := range cases {
		if c.Stage != "shm" || c.Protocol != proto || c.Model != model || c.Batch != batch || c.Concurrency != conc || c.Error != "" {
			continue
		}
		p50s = append(p50s, float64(c.P50))
		if c.EngineUS != nil {
			engines = append(engines, *c.EngineUS)
			outs = append(outs, float64(c.P50)-*c.EngineUS)
		}
	}
	if len(p50s) == 0 {
		return shmRow{}, false
	}
	row := shmRow{p50: median(p50s), runs: len(p50s)}
	if len(engines) == len(p50s) {
		row.engine, row.outside, row.engineOK = median(engines), median(outs), true
	}
	return row, true
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	for i := 1; i < len(s); i++ { // insertion sort: a handful of values
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// shmTable is the shm stage's section: each run with its engine time and the time outside it.
func (r *Report) shmTable(t *table) {
	var cs []Case
	for _, c := range r.Cases {
		if c.Stage == "shm" {
			cs = append(cs, c)
		}
	}
	if len(cs) == 0 {
		return
	}
	t.line("## 2c. Shared memory beside HTTP binary (policyd)\n")
	t.line("Triton's system shared memory extension: each connection's inputs and outputs in a /dev/shm object of its own, " +
		"registered as a region (admin token); the request is a small JSON naming the windows (grpc-shm: a unary ModelInfer whose tensors' parameters name them), the inputs are rewritten in the region " +
		"before every request (a simulator writing its observation; the copy is inside the timed latency) and the outputs read from it. " +
		"Measured in turn with HTTP binary (inputs and outputs as raw FP32 in the body) on the same policyd: binary, shm, grpc-shm, twice. " +
		"engine µs = the mean of `" + engineMetric + "` per request over the run (its sum / count delta for the model, " +
		"warm-up included; the histogram's buckets are too coarse for a p50); outside = p50 − engine: what the protocol, the copies and the queueing cost.\n")
	t.head("proto", "model", "batch", "C", "body bytes", "p50", "p90", "p99", "max", "req/s", "engine µs", "outside µs", "srv CPU µs/req", "other cores", "errors")
	for _, c := range cs {
		if c.Error != "" {
			t.row(c.Protocol, c.Model, fmt.Sprint(c.Batch), fmt.Sprint(c.Concurrency), "**failed**: "+c.Error, "", "", "", "", "", "", "", "", "", "")
			continue
		}
		cpu, eng, out := "–", "–", "–"
		if c.ServerCPUPerReq != nil {
			cpu = num(*c.ServerCPUPerReq, 1)
		}
		if c.EngineUS != nil {
			eng, out = num(*c.EngineUS, 0), num(float64(c.P50)-*c.EngineUS, 0)
		}
		t.row(c.Protocol, c.Model, fmt.Sprint(c.Batch), fmt.Sprint(c.Concurrency), num(float64(c.BodyBytes), 0), num(float64(c.P50), 0),
			num(float64(c.P90), 0), num(float64(c.P99), 0), num(float64(c.Max), 0), num(c.RPS, 0), eng, out, cpu, others(c.OtherCores), fmt.Sprint(c.Errors))
	}
	t.line("")
}
