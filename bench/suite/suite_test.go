package suite

import (
	"bytes"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/policyd/policyd/bench/load"
	"github.com/policyd/policyd/config"
)

func mk(stage, server, proto, model string, batch, conc int, p50, p99 int64, rps float64) Case {
	c := Case{Stage: stage, Server: server, Model: model, Batch: batch}
	c.Protocol, c.Mode, c.Concurrency = proto, "closed", conc
	c.P50, c.P99, c.RPS, c.Requests = p50, p99, rps, int64(rps)
	return c
}

func sampleReport() *Report {
	cases := []Case{
		mk("matrix", "policyd", "json", "mlp-med", 1, 1, 65, 120, 9000),
		mk("matrix", "floor", "json", "mlp-med", 1, 1, 50, 100, 12000),
		mk("matrix", "node", "json", "mlp-med", 1, 1, 150, 250, 5000),
		mk("matrix", "policyd", "json", "mlp-med", 1, 16, 900, 2000, 16000),
		mk("matrix", "node", "json", "mlp-med", 1, 16, 1000, 2100, 6000),
		mk("matrix", "policyd", "json", "mlp-med", 32, 16, 5000, 9000, 1500),
		mk("binary", "policyd", "binary", "mlp-med", 32, 16, 1000, 2000, 6000),
		mk("grpc", "policyd", "binary", "mlp-med", 1, 1, 100, 200, 9000),
		mk("grpc", "policyd", "grpc", "mlp-med", 1, 1, 90, 180, 10000),
		mk("grpc", "policyd", "grpc-stream", "mlp-med", 1, 1, 80, 160, 11000),
		mk("grpc", "policyd", "binary", "mlp-med", 1, 16, 1500, 3000, 12000),
		mk("grpc", "policyd", "grpc", "mlp-med", 1, 16, 1700, 3500, 10800),
	}
	ghz := mk("grpc", "policyd", "grpc", "mlp-med", 1, 1, 95, 190, 9500)
	ghz.Source = GhzVersion
	cases = append(cases, ghz)
	for i, s := range []string{"policyd", "node"} {
		for j, rate := range []float64{1000, 4000, 8000} {
			c := mk("open-loop", s, "json", "mlp-med", 1, 64, int64(60*(j+1)*(i+1)), int64(200*(j+1)*(i+1)), rate)
			c.Mode, c.TargetRPS = "open", rate
			c.Service = &load.Percentiles{P50: 50, P99: 100}
			c.SendLag = &load.Percentiles{P99: 30}
			cases = append(cases, c)
		}
	}
	mem := []MemoryRow{{Model: "mlp-med", RSS: 30e6, MaxRSS: 30e6, PeakRSS: 40e6},
		{Model: "mlp-med", Batch: 1, Concurrency: 16, RSS: 35e6, MaxRSS: 38e6, PeakRSS: 41e6},
		{Model: "mlp-med", Batch: 32, Concurrency: 16, RSS: 52e6, MaxRSS: 120e6, PeakRSS: 130e6}}
	r := &Report{RunID: "r1", Date: "2026-01-02T03:04:05Z", Command: "policyctl bench suite", Machine: Machine{CPU: "AMD EPYC", OneDNNISA: "Intel AVX-512", Nproc: 2},
		Cases: cases, Memory: mem, Peers: Peers{Dir: "../shared/peers", Bodies: map[string]string{"mlp-med_b1": "x"}}}
	r.Targets = computeTargets(r.Cases, r.Memory)
	return r
}

func TestTargets(t *testing.T) {
	ts := sampleReport().Targets
	want := []struct {
		value  float64
		status string
	}{{1.3, "PASS"}, {0.433, "PASS"}, {2.667, "MISS"}, {4, "PASS"}, {120, "MISS"}, {0.9, "PASS"}, {0.9, "MISS"}}
	if len(ts) != len(want)+2 {
		t.Fatalf("%d targets, want %d", len(ts), len(want)+2)
	}
	// The two shared-memory targets (shm_test.go): the sample has no shm stage.
	for _, s := range ts[len(want):] {
		if s.Status != "n/a" {
			t.Errorf("target %s: %s without shm cases, want n/a", s.What, s.Status)
		}
	}
	for i, w := range want {
		if ts[i].Value == nil || *ts[i].Value != w.value || ts[i].Status != w.status {
			t.Errorf("target %d (%s): %v %s, want %v %s", i, ts[i].What, ts[i].Value, ts[i].Status, w.value, w.status)
		}
	}
	// A peer that was not measured, or a failed case, leaves its targets n/a, not PASS.
	r := sampleReport()
	r.Cases[2].Error = "check failed"
	ts = computeTargets(r.Cases[:3], nil)
	if ts[1].Status != "n/a" || ts[1].Value != nil || ts[2].Status != "n/a" || ts[3].Status != "n/a" || ts[4].Status != "n/a" ||
		ts[5].Status != "n/a" || ts[6].Status != "n/a" {
		t.Errorf("targets without data: %+v", ts)
	}
	// The gRPC targets read our generator's rows (ghz's is only in the numbers), and the streaming
	// row is not the unary one.
	all := sampleReport().Targets
	if d := all[5].Detail; !strings.Contains(d, "90 / 100 µs") || !strings.Contains(d, "ghz: 95 µs") {
		t.Errorf("gRPC c1 target detail %q", d)
	}
	if d := all[6].Detail; !strings.Contains(d, "10,800 / 12,000 req/s") || !strings.Contains(d, "ghz: –") {
		t.Errorf("gRPC c16 target detail %q", d)
	}
	if k := ghz(sampleReport().Cases).Key(); k != "grpc/policyd/grpc/closed/mlp-med/b1/c1/ghz" {
		t.Errorf("ghz key %q", k)
	}
}

func ghz(cs []Case) Case {
	for _, c := range cs {
		if isGhz(c) {
			return c
		}
	}
	return Case{}
}

func TestChoose(t *testing.T) {
	cfg := func(mbs, inst int, d time.Duration) BatchConfig { return BatchConfig{mbs, d, inst} }
	target := 2 * time.Millisecond
	points := []SearchPoint{
		{Config: cfg(32, 1, 0), Load: "closed", RPS: 50000, P99: 500},                              // closed: never chosen
		{Config: cfg(1, 1, 0), Open: true, RPS: 8000, P99: 900},                                    // meets
		{Config: cfg(32, 2, 0), Open: true, RPS: 12000, P99: 1900},                                 // meets, fastest
		{Config: cfg(32, 1, 100*time.Microsecond), Open: true, RPS: 11900, P99: 1500},              // within 2 %, lower p99: wins
		{Config: cfg(8, 2, 0), Open: true, RPS: 20000, P99: 2100},                                  // p99 over target
		{Config: cfg(8, 1, 0), Open: true, RPS: 30000, P99: 800, Overloaded: true},                 // dropped requests
		{Config: cfg(8, 1, 500*time.Microsecond), Open: true, RPS: 40000, P99: 800, Errors: 3},     // errors
		{Config: cfg(64, 1, 0), Open: true, RPS: 50000, P99: 800, Error: "reference check failed"}, // failed
	}
	best, why := choose(points, target)
	if best == nil || best.Config != cfg(32, 1, 100*time.Microsecond) {
		t.Fatalf("best %+v (%s)", best, why)
	}
	if !strings.Contains(why, "11,900 req/s") || !strings.Contains(why, "3 of 7") {
		t.Errorf("why: %s", why)
	}
	if best, why := choose(points[4:], target); best != nil || !strings.Contains(why, "no configuration") {
		t.Errorf("nothing meets the target: %+v %s", best, why)
	}
}

// The snippet and the configs the suite runs must be valid policyd configurations that mean
// what the search measured.
func TestConfigsLoad(t *testing.T) {
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	if err := os.MkdirAll(filepath.Join(repo, "mlp-med", "1.0.0"), 0o755); err != nil {
		t.Fatal(err)
	}
	c := BatchConfig{MaxBatchSize: 8, MaxQueueDelay: 0, Instances: 2}
	path := filepath.Join(dir, "p.yaml")
	for _, grpcAddr := range []string{"off", "127.0.0.1:18998"} {
		if err := os.WriteFile(path, []byte(policydConfig("127.0.0.1:18999", grpcAddr, repo, policydOptions{models: []modelOptions{{name: "mlp-med", instances: 2, batching: &c}}})), 0o644); err != nil {
			t.Fatal(err)
		}
		got, _, err := config.Load(config.LoadOptions{File: path, Env: []string{}})
		if err != nil {
			t.Fatalf("policyd rejects the suite's config: %v", err)
		}
		if !got.Batching.Enabled || got.Batching.MaxBatchSize != 8 || got.Batching.MaxQueueDelay != 0 || len(got.Models) != 1 ||
			got.Models[0].Instances != 2 || got.Server.Addr != "127.0.0.1:18999" || got.Server.GRPCAddr != grpcAddr {
			t.Errorf("config: %+v", got)
		}
	}
	snip := filepath.Join(dir, "s.yaml")
	body := "repository:\n  path: " + repo + "\n" + snippet("mlp-med", BatchConfig{MaxBatchSize: 1, MaxQueueDelay: 100 * time.Microsecond, Instances: 1})
	if err := os.WriteFile(snip, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	got, _, err := config.Load(config.LoadOptions{File: snip, Env: []string{}})
	if err != nil {
		t.Fatalf("the recommended snippet is not a valid config: %v\n%s", err, body)
	}
	if got.Batching.Enabled || got.Batching.MaxQueueDelay != 100*time.Microsecond || got.Models[0].Instances != 1 {
		t.Errorf("snippet config: %+v", got.Batching)
	}
}

func TestBaseline(t *testing.T) {
	r := sampleReport()
	b := NewBaseline(r)
	// policyd's matrix, binary and grpc cases (ghz's apart from ours); open loop and peers left out
	if b.Key != "amd-epyc--intel-avx-512" || len(b.Metrics) != 10 {
		t.Fatalf("baseline %s with %d metrics: %v", b.Key, len(b.Metrics), b.Metrics)
	}
	if g, o := b.Metrics["grpc/policyd/grpc/closed/mlp-med/b1/c1/ghz"], b.Metrics["grpc/policyd/grpc/closed/mlp-med/b1/c1"]; g.P50 != 95 || o.P50 != 90 {
		t.Errorf("ghz's and our gRPC rows must be kept apart: %+v %+v", g, o)
	}
	dir := t.TempDir()
	if _, err := SaveBaseline(dir, b); err != nil {
		t.Fatal(err)
	}
	loaded, err := LoadBaseline(dir, b.Key)
	if err != nil || loaded == nil {
		t.Fatalf("load: %v", err)
	}
	if c := Compare(*loaded, r, 0.15); c.Compared != 10 || len(c.Regressions) != 0 {
		t.Errorf("a run against itself: %+v", c)
	}
	// p50 +10 % (within), p99 +20 % (flagged) on one case, req/s −20 % on another.
	now := sampleReport()
	now.Cases[0].P50 = 71
	now.Cases[0].P99 = 144
	now.Cases[3].RPS = 12800
	c := Compare(*loaded, now, 0.15)
	if len(c.Regressions) != 2 || c.Regressions[0].Metric != "p99" || c.Regressions[1].Metric != "req/s" ||
		c.Regressions[0].Case != "matrix/policyd/json/closed/mlp-med/b1/c1" {
		t.Errorf("regressions: %+v", c.Regressions)
	}
	if got, err := LoadBaseline(dir, "other-machine"); got != nil || err != nil {
		t.Errorf("missing baseline: %v %v", got, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "bad.json"), []byte(`{"key":"bad"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBaseline(dir, "bad"); err == nil {
		t.Error("a baseline without metrics accepted")
	}
	if _, err := SaveBaseline(dir, Baseline{Key: "x"}); err == nil {
		t.Error("an empty baseline saved")
	}
}

func TestMarkdown(t *testing.T) {
	r := sampleReport()
	best, why := choose([]SearchPoint{{Config: BatchConfig{32, 100 * time.Microsecond, 1}, Open: true, RPS: 9000, P99: 800}}, 2*time.Millisecond)
	r.Search = &Search{Model: "mlp-med", Batch: 1, TargetP99: 2 * time.Millisecond, Best: best, Why: why, Snippet: snippet("mlp-med", best.Config),
		Points: []SearchPoint{*best}}
	r.Baseline = &Comparison{Key: "k", Path: "bench/baselines/k.json", Found: true, Compared: 3, Tolerance: 0.15,
		Regressions: []Regression{{Case: "matrix/policyd/json/closed/mlp-med/b1/c1", Metric: "p50", Base: 60, Now: 80, Change: 1.0 / 3}}}
	var b bytes.Buffer
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	md := b.String()
	for _, want := range []string{
		"## Machine", "## Targets", "**PASS**", "**MISS (11 % short)**", "**MISS (20 % over)**", "## 1. Closed loop",
		"## 2. Binary", "## 5. Open loop", "## 6. Memory", "## 7. Batching search", "max_batch_size: 32", "max_queue_delay: 100us",
		"## 8. Baseline comparison", "**1 regression(s)**", "+33 %",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report.md lacks %q", want)
		}
	}
	// Every table row has as many cells as its header.
	lines := strings.Split(md, "\n")
	for i := 1; i < len(lines); i++ {
		if strings.HasPrefix(lines[i], "| ---") {
			want := strings.Count(lines[i-1], "|")
			for j := i + 1; j < len(lines) && strings.HasPrefix(lines[j], "|"); j++ {
				if got := strings.Count(lines[j], "|"); got != want {
					t.Errorf("line %d has %d cells, its header %d: %s", j+1, got-1, want-1, lines[j])
				}
			}
		}
	}
}

func TestSVG(t *testing.T) {
	svg := sampleReport().SVG()
	var doc struct {
		XMLName   xml.Name `xml:"svg"`
		Polylines []struct {
			Name   string `xml:"data-name,attr"`
			Points string `xml:"points,attr"`
		} `xml:"polyline"`
		Texts []string `xml:"text"`
	}
	if err := xml.Unmarshal([]byte(svg), &doc); err != nil {
		t.Fatalf("not well-formed XML: %v", err)
	}
	var names []string
	for _, p := range doc.Polylines {
		names = append(names, p.Name)
		if n := len(strings.Fields(p.Points)); n != 3 {
			t.Errorf("series %s has %d points, want 3", p.Name, n)
		}
	}
	if strings.Join(names, ",") != "policyd p99,policyd p50,node p99,node p50" {
		t.Errorf("series %v", names)
	}
	texts := strings.Join(doc.Texts, "|")
	for _, want := range []string{"throughput (requests/s)", "latency (µs, log scale)", "open loop", "policyd p99", "8,000", "100"} {
		if !strings.Contains(texts, want) {
			t.Errorf("SVG text lacks %q: %s", want, texts)
		}
	}
	empty := (&Report{}).SVG()
	if !strings.Contains(empty, "no data") {
		t.Error("an empty report's plot must say so")
	}
}

func TestNum(t *testing.T) {
	for _, c := range []struct {
		v    float64
		d    int
		want string
	}{{0, 0, "0"}, {999, 0, "999"}, {1234567.891, 1, "1,234,567.9"}, {-12345, 0, "-12,345"}} {
		if got := num(c.v, c.d); got != c.want {
			t.Errorf("num(%v, %d) = %q, want %q", c.v, c.d, got, c.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{RunID: "a/b", P99Target: 0, Tolerance: 2, RunAll: "sometimes", Stages: []string{"nope"}, Policyd: "/nonexistent/policyd", PeersDir: "/nonexistent"}
	err := c.Validate()
	if err == nil {
		t.Fatal("an invalid config accepted")
	}
	for _, want := range []string{`run id "a/b"`, "p99 target", "tolerance 2", `run-all "sometimes"`, `stage "nope"`, "policyd binary", "peers folder"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
}
