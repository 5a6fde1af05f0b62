package load

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/types/descriptorpb"
)

func TestGhzArgs(t *testing.T) {
	args := GhzArgs(GhzRequest{Addr: "127.0.0.1:9001", Protoset: "/x/inference.protoset", Data: "/x/m.bin"},
		Options{Connections: 16, Timeout: 3 * time.Second}, 2*time.Second)
	flag := func(name string) string {
		i := slices.Index(args, name)
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("%s missing from %q", name, args)
		}
		return args[i+1]
	}
	for name, want := range map[string]string{"--protoset": "/x/inference.protoset", "--call": "inference.GRPCInferenceService.ModelInfer",
		"--binary-file": "/x/m.bin", "--concurrency": "16", "--connections": "16", "--duration": "2s", "--duration-stop": "ignore",
		"--timeout": "3s", "--format": "json"} {
		if got := flag(name); got != want {
			t.Errorf("%s %q, want %q", name, got, want)
		}
	}
	if !slices.Contains(args, "--insecure") || args[len(args)-1] != "127.0.0.1:9001" {
		t.Errorf("args %q: want --insecure and the address last", args)
	}
	if slices.Contains(args, "--data") || slices.Contains(args, "--data-file") {
		t.Errorf("args %q: the call data must be binary, not JSON", args)
	}
}

// ghzJSON is a report in ghz's JSON format (runner.Report; durations in ns).
func ghzJSON(ok, failed int, details bool) []byte {
	type detail struct {
		Latency int64  `json:"latency"`
		Status  string `json:"status"`
		Error   string `json:"error"`
	}
	rep := map[string]any{
		"date": "2026-12-06T16:40:00Z", "count": ok + failed, "total": int64(2e9), "average": int64(150e3),
		"fastest": int64(1e3), "slowest": int64(ok) * 1e3, "rps": float64(ok+failed) / 2,
		"statusCodeDistribution": map[string]int{"OK": ok},
		"latencyDistribution": []map[string]int64{{"percentage": 50, "latency": 123e3}, {"percentage": 90, "latency": 222e3},
			{"percentage": 95, "latency": 333e3}, {"percentage": 99, "latency": 444e3}},
	}
	if failed > 0 {
		rep["statusCodeDistribution"].(map[string]int)["Unavailable"] = failed
		rep["errorDistribution"] = map[string]int{"rpc error: code = Unavailable desc = queue full": failed}
	}
	if details {
		var ds []detail
		for i := 1; i <= ok; i++ { // latencies 1 µs … ok µs
			ds = append(ds, detail{Latency: int64(i) * 1000, Status: "OK"})
		}
		for range failed {
			ds = append(ds, detail{Latency: 5e9, Status: "Unavailable", Error: "queue full"})
		}
		rep["details"] = ds
	}
	b, _ := json.Marshal(rep)
	return b
}

func TestParseGhz(t *testing.T) {
	// Every call in the details: percentiles from our histogram over the OK calls only.
	res, err := ParseGhz(ghzJSON(1000, 10, true))
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 1000 || res.Errors != 10 || res.RPS != 500 || res.DurationS != 2 {
		t.Errorf("requests %d errors %d rps %v duration %v", res.Requests, res.Errors, res.RPS, res.DurationS)
	}
	if res.P50 != 500 || res.P99 != 990 || res.P999 != 999 || res.Max != 1000 || res.Count != 1000 {
		t.Errorf("percentiles %+v: want p50 500, p99 990, p99.9 999, max 1000 µs (the failed 5 s calls left out)", res.Percentiles)
	}
	if !strings.Contains(res.LastError, "queue full") {
		t.Errorf("last error %q", res.LastError)
	}
	// Details cut short (ghz keeps at most a million): ghz's own distribution.
	res, err = ParseGhz(ghzJSON(1000, 0, false))
	if err != nil {
		t.Fatal(err)
	}
	if res.P50 != 123 || res.P90 != 222 || res.P95 != 333 || res.P99 != 444 || res.Max != 1000 || res.Mean != 150 {
		t.Errorf("percentiles %+v: want ghz's latencyDistribution in µs", res.Percentiles)
	}
	// A report whose status codes do not add up to its count is refused, as is one that is not JSON.
	bad := strings.Replace(string(ghzJSON(10, 0, false)), `"count":10`, `"count":11`, 1)
	if _, err := ParseGhz([]byte(bad)); err == nil || !strings.Contains(err.Error(), "count 11") {
		t.Errorf("count mismatch: err %v", err)
	}
	if _, err := ParseGhz([]byte("Summary:\n  Count: 10")); err == nil {
		t.Error("a summary-format report parsed")
	}
}

func TestWriteProtoset(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inference.protoset")
	if err := WriteProtoset(path); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var set descriptorpb.FileDescriptorSet
	if err := proto.Unmarshal(raw, &set); err != nil {
		t.Fatal(err)
	}
	files, err := protodesc.NewFiles(&set) // every import is in the set, before its importer
	if err != nil {
		t.Fatal(err)
	}
	d, err := files.FindDescriptorByName("inference.GRPCInferenceService.ModelInfer")
	if err != nil {
		t.Fatalf("the protoset lacks ModelInfer: %v", err)
	}
	if got := fmt.Sprint(d.FullName()); got != "inference.GRPCInferenceService.ModelInfer" {
		t.Errorf("found %s", got)
	}
}

// ghz itself (make tools) against policyd's gRPC front end: the binary call data must be the
// request RunGRPC sends (the model refuses any other input bytes), and the answers are counted.
func TestGhzAgainstPolicyd(t *testing.T) {
	bin, _ := filepath.Abs(filepath.Join("..", "..", "tools", "bin", "ghz"))
	if _, err := os.Stat(bin); err != nil {
		t.Skipf("%s missing: run make tools", bin)
	}
	msg, err := GRPCInferRequest("affine", "", affineIn)
	if err != nil {
		t.Fatal(err)
	}
	m := &affine{want: msg.RawInputContents[0]}
	addr := startPolicydGRPC(t, m)
	res, err := RunGhz(context.Background(), GhzRequest{Bin: bin, Addr: addr, Dir: t.TempDir(), Model: "affine", Inputs: affineIn},
		Options{Connections: 2, Duration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests < 20 || res.Errors != 0 {
		t.Fatalf("ghz: %d OK, %d errors (%s)", res.Requests, res.Errors, res.LastError)
	}
	if calls := m.calls.Load(); calls < res.Requests {
		t.Errorf("server ran %d calls, ghz counted %d OK", calls, res.Requests)
	}
	if res.P50 <= 0 || res.P99 < res.P50 || res.Protocol != "grpc" || res.Concurrency != 2 || res.ClientCPU <= 0 {
		t.Errorf("result %+v", res)
	}
	// A model that refuses the bytes ghz sends: every call fails, and RunGhz says so.
	m2 := &affine{want: []byte("something else")}
	addr2 := startPolicydGRPC(t, m2)
	res, err = RunGhz(context.Background(), GhzRequest{Bin: bin, Addr: addr2, Dir: t.TempDir(), Model: "affine", Inputs: affineIn},
		Options{Connections: 1, Duration: 200 * time.Millisecond})
	if err == nil || res.Errors == 0 || !strings.Contains(res.LastError, "unexpected input bytes") {
		t.Errorf("refused input: err %v, %d errors, last %q", err, res.Errors, res.LastError)
	}
}
