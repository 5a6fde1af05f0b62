package load

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	"github.com/policyd/policyd/api/inference"
)

// ghz (github.com/bojand/ghz, built by `make tools` into tools/bin/ghz) is the independent gRPC
// load generator beside RunGRPC: same server, same request message (raw FP32 inputs, sent as
// ghz's --binary call data, so no JSON anywhere), its own client and its own clock. Its closed
// loop is the same as ours: -c workers each with one call in flight, here on as many
// connections (--connections = -c).

// GhzMethod is the RPC the ghz rows call.
const GhzMethod = "inference.GRPCInferenceService.ModelInfer"

// GhzRequest is one ghz run's target and inputs.
type GhzRequest struct {
	Bin      string // the ghz binary
	Addr     string // HOST:PORT of policyd's gRPC listener (loopback only)
	Dir      string // where the protoset and the binary call data are written
	Model    string
	Version  string
	Inputs   []Tensor
	Protoset string // set by RunGhz: Dir/inference.protoset
	Data     string // set by RunGhz: Dir/<model>.bin, the serialized ModelInferRequest
}

// WriteProtoset writes the FileDescriptorSet of api/inference's grpc_service.proto (and what it
// imports) to path, for ghz's --protoset: the service as compiled into policyd's generated
// code, without the .proto files or server reflection.
func WriteProtoset(path string) error {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(f protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imps := f.Imports()
		for i := 0; i < imps.Len(); i++ {
			add(imps.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	add(inference.File_grpc_service_proto)
	b, err := proto.Marshal(set)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

// GhzArgs is the ghz command line of one run of r as o says (closed loop, o.Connections workers
// on as many connections, o.Duration long, JSON report on stdout). Calls still in flight when
// the duration ends are left out of the report (--duration-stop ignore), as our closed loop
// records only the answers that arrive in its window.
func GhzArgs(r GhzRequest, o Options, d time.Duration) []string {
	timeout := o.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	return []string{
		"--insecure",
		"--protoset", r.Protoset,
		"--call", GhzMethod,
		"--binary-file", r.Data,
		"--concurrency", fmt.Sprint(o.Connections),
		"--connections", fmt.Sprint(o.Connections),
		"--duration", d.String(),
		"--duration-stop", "ignore",
		"--timeout", timeout.String(),
		"--max-recv-message-size", "256MB",
		"--max-send-message-size", "256MB",
		"--disable-template-functions",
		"--disable-template-data",
		"--format", "json",
		r.Addr,
	}
}

// ghzReport is the part of ghz's JSON report (runner.Report) read here. Durations are ns.
type ghzReport struct {
	Count      uint64         `json:"count"`
	Total      int64          `json:"total"`
	Average    int64          `json:"average"`
	Slowest    int64          `json:"slowest"`
	RPS        float64        `json:"rps"`
	ErrorDist  map[string]int `json:"errorDistribution"`
	StatusDist map[string]int `json:"statusCodeDistribution"`
	Latencies  []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"`
	} `json:"latencyDistribution"`
	Details []struct {
		Latency int64  `json:"latency"`
		Status  string `json:"status"`
	} `json:"details"`
}

// ParseGhz reads ghz's JSON report into a Result in our units: requests = OK answers, errors =
// the others (ghz's statusCodeDistribution), latencies in µs. The percentiles come from the
// per-call details into the same HdrHistogram as our generator's when ghz kept every call,
// else from ghz's own latencyDistribution (p50, p90, p95, p99; p99.9 left 0).
func ParseGhz(b []byte) (Result, error) {
	var g ghzReport
	if err := json.Unmarshal(b, &g); err != nil {
		return Result{}, fmt.Errorf("ghz report is not JSON: %v (%.200s)", err, b)
	}
	var res Result
	for status, n := range g.StatusDist {
		if status == "OK" {
			res.Requests += int64(n)
		} else {
			res.Errors += int64(n)
		}
	}
	if int64(g.Count) != res.Requests+res.Errors {
		return Result{}, fmt.Errorf("ghz report: count %d, status codes add up to %d", g.Count, res.Requests+res.Errors)
	}
	if len(g.ErrorDist) > 0 {
		keys := make([]string, 0, len(g.ErrorDist))
		for k := range g.ErrorDist {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		res.LastError = keys[0]
	}
	if g.Total > 0 {
		res.DurationS = round(float64(g.Total)/1e9, 3)
		res.RPS = round(float64(res.Requests)/(float64(g.Total)/1e9), 1)
	}
	if uint64(len(g.Details)) == g.Count {
		h := newHist()
		for _, d := range g.Details {
			if d.Status == "OK" {
				record(h, (d.Latency+500)/1000)
			}
		}
		res.Percentiles = summarize(h)
		return res, nil
	}
	res.Count = res.Requests
	res.Mean = round(float64(g.Average)/1e3, 1)
	res.Max = g.Slowest / 1000
	for _, l := range g.Latencies {
		us := (l.Latency + 500) / 1000
		switch l.Percentage {
		case 50:
			res.P50 = us
		case 90:
			res.P90 = us
		case 95:
			res.P95 = us
		case 99:
			res.P99 = us
		}
	}
	return res, nil
}

// RunGhz runs ghz against r.Addr: a warm-up run of o.Warmup (not recorded), then the measured
// run of o.Duration, with the server's CPU (o.ServerPIDs) measured over the measured run. The
// request is the same ModelInferRequest RunGRPC sends; ghz does not check answers, so run a
// checked RunGRPC of the same inputs first.
func RunGhz(ctx context.Context, r GhzRequest, o Options) (Result, error) {
	o.Mode = "closed"
	if err := o.Validate(); err != nil {
		return Result{}, err
	}
	if host, _, err := net.SplitHostPort(r.Addr); err != nil || !(strings.HasPrefix(host, "127.") || host == "localhost" || host == "::1") {
		return Result{}, fmt.Errorf("grpc address %q: want a loopback HOST:PORT", r.Addr)
	}
	if _, err := os.Stat(r.Bin); err != nil {
		return Result{}, fmt.Errorf("ghz: %w (make tools builds tools/bin/ghz)", err)
	}
	msg, err := GRPCInferRequest(r.Model, r.Version, r.Inputs)
	if err != nil {
		return Result{}, err
	}
	raw, err := proto.Marshal(msg)
	if err != nil {
		return Result{}, err
	}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return Result{}, err
	}
	r.Protoset = r.Dir + "/inference.protoset"
	r.Data = fmt.Sprintf("%s/%s.bin", r.Dir, safeName(r.Model, len(raw)))
	if err := WriteProtoset(r.Protoset); err != nil {
		return Result{}, err
	}
	if err := os.WriteFile(r.Data, raw, 0o644); err != nil {
		return Result{}, err
	}
	run := func(d time.Duration) ([]byte, error) {
		cmd := exec.CommandContext(ctx, r.Bin, GhzArgs(r, o, d)...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			return nil, fmt.Errorf("ghz: %v: %s", err, strings.TrimSpace(errb.String()))
		}
		return out.Bytes(), nil
	}
	if o.Warmup > 0 {
		if _, err := run(o.Warmup); err != nil {
			return Result{}, err
		}
	}
	g := &gen{o: o}
	w := g.openWindow()
	child0 := childrenCPU()
	out, err := run(o.Duration)
	ghzCPU := childrenCPU() - child0
	g.closeWindow(w)
	if err != nil {
		return Result{}, err
	}
	res, err := ParseGhz(out)
	if err != nil {
		return Result{}, err
	}
	res.URL = "grpc://" + r.Addr + "/" + r.Model
	res.Protocol, res.Mode, res.Concurrency, res.BodyBytes = "grpc", "closed", o.Connections, len(raw)
	res.GOMAXPROCS = runtime.GOMAXPROCS(0)
	// The CPU window spans ghz's start and exit too (a few ms of connecting, none of them
	// requests): CPU per request is a little high, never low.
	res.ClientCPU = round(ghzCPU, 3) // the load generator's CPU: ghz's, a waited child's
	if w.srvAvailable {
		s := round(w.srv, 2)
		res.ServerCPU = &s
		if res.Requests > 0 {
			per := round(w.srv*1e6/float64(res.Requests), 1)
			res.ServerCPUPerReq = &per
		}
		if w.busyOK && w.elapsed > 0 {
			other := round(max(0, (w.busy-w.cli-ghzCPU-w.srv)/w.elapsed), 2)
			res.OtherCores = &other
		}
	}
	if res.Requests == 0 {
		return res, fmt.Errorf("ghz: no call succeeded in %v (%d errors; %s)", o.Duration, res.Errors, res.LastError)
	}
	return res, nil
}

func safeName(model string, n int) string {
	var b strings.Builder
	for _, c := range model {
		if c == '-' || c == '_' || c == '.' || (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	return fmt.Sprintf("%s_%d", b.String(), n)
}
