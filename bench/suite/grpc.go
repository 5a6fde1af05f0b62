package suite

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/policyd/policyd/bench/load"
)

// GhzVersion is the ghz that tools/ghz/go.mod pins, for the report's source column.
const GhzVersion = "ghz v0.120.0"

// grpcStage measures policyd's gRPC front end beside its HTTP binary protocol, JSON-free both:
// for each model and batch of the plan and 1 and 16 connections, in turn (A/B, so that a
// disturbance of this shared machine hits neighbours alike): HTTP binary, gRPC unary and gRPC
// streaming from our generator, then gRPC unary from ghz, the independent generator. The
// request is the same tensors throughout; our runs check the first answer against the
// reference, ghz sends the message our unary run checked.
func (r *run) grpcStage(ctx context.Context, srv *server) {
	p := r.plan
	if srv.GRPCAddr == "" {
		r.fail("grpc: policyd serves no gRPC")
		return
	}
	ghz := r.cfg.Ghz
	if ghz != "" {
		if _, err := os.Stat(ghz); err != nil {
			r.note("ghz rows not measured: %s is missing (make tools builds it)", ghz)
			ghz = ""
		}
	} else {
		r.note("ghz rows not measured: no ghz binary given (-ghz)")
	}
	for _, mb := range p.grpcCases {
		for _, conc := range []int{1, 16} {
			if ctx.Err() != nil {
				return
			}
			r.closed(ctx, "grpc", srv, mb.model, mb.batch, conc, true, p.dur, p.warm)
			for _, stream := range []bool{false, true} {
				r.grpcCase(ctx, srv, mb.model, mb.batch, conc, stream)
			}
			if ghz != "" {
				r.ghzCase(ctx, srv, ghz, mb.model, mb.batch, conc)
			}
		}
	}
}

// grpcCase is one closed-loop run of our generator over gRPC, unary or streaming.
func (r *run) grpcCase(ctx context.Context, srv *server, model string, batch, conc int, stream bool) Case {
	b := r.body(model, batch)
	ref := b.Ref
	req := load.GRPCRequest{Addr: srv.GRPCAddr, Model: model, Inputs: b.Inputs, Stream: stream}
	r.prog.step("grpc: policyd %s %s b%d c%d", req.Protocol(), model, batch, conc)
	o := load.Options{Mode: "closed", Connections: conc, Duration: r.plan.dur, Warmup: r.plan.warm, ServerPIDs: srv.PIDs(), Check: &ref}
	res, err := load.RunGRPC(ctx, req, o)
	return r.record(ctx, srv, Case{Stage: "grpc", Server: "policyd", Model: model, Batch: batch, Source: "policyctl bench load"}, res, err, o)
}

// ghzCase is one ghz run: gRPC unary, as many connections as workers.
func (r *run) ghzCase(ctx context.Context, srv *server, bin, model string, batch, conc int) Case {
	b := r.body(model, batch)
	r.prog.step("grpc: policyd grpc %s b%d c%d (ghz)", model, batch, conc)
	o := load.Options{Mode: "closed", Connections: conc, Duration: r.plan.dur, Warmup: r.plan.warm, ServerPIDs: srv.PIDs()}
	res, err := load.RunGhz(ctx, load.GhzRequest{Bin: bin, Addr: srv.GRPCAddr, Dir: filepath.Join(r.dir, "ghz"), Model: model, Inputs: b.Inputs}, o)
	return r.record(ctx, srv, Case{Stage: "grpc", Server: "policyd", Model: model, Batch: batch, Source: GhzVersion}, res, err, o)
}

// record adds a case measured outside measure (the gRPC generators) to the report.
func (r *run) record(ctx context.Context, srv *server, c Case, res load.Result, err error, o load.Options) Case {
	err = srv.explain(err)
	c.Result = res
	c.Mode, c.Concurrency = o.Mode, o.Connections
	if c.Protocol == "" {
		c.Protocol = "grpc"
	}
	if err != nil && ctx.Err() == nil {
		c.Error = err.Error()
		r.fail("%s %s %s b%d c%d %s (%s): %v", c.Stage, c.Server, c.Model, c.Batch, c.Concurrency, c.Protocol, c.Source, err)
	}
	if ctx.Err() == nil {
		r.mu.Lock()
		r.rep.Cases = append(r.rep.Cases, c)
		r.mu.Unlock()
	}
	return c
}

// waitListening waits until addr accepts a TCP connection.
func waitListening(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			return c.Close()
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("not listening after %v: %w", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// isGhz reports whether c came from ghz.
func isGhz(c Case) bool { return strings.HasPrefix(c.Source, "ghz") }
