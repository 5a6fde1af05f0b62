package soak

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"
)

func TestLeastSquares(t *testing.T) {
	tests := []struct {
		name         string
		xs, ys       []float64
		slope, icept float64
	}{
		{"exact line", []float64{0, 1, 2, 3}, []float64{10, 12, 14, 16}, 2, 10},
		{"flat with noise", []float64{0, 1, 2, 3}, []float64{5, 6, 5, 6}, 0.2, 5.2},
		{"one x", []float64{4, 4}, []float64{1, 3}, 0, 2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, i := leastSquares(tc.xs, tc.ys)
			if math.Abs(s-tc.slope) > 1e-9 || math.Abs(i-tc.icept) > 1e-9 {
				t.Errorf("leastSquares = %v, %v; want %v, %v", s, i, tc.slope, tc.icept)
			}
		})
	}
}

// A server growing 11 MiB/min after a warm-up spike fails the 0.5 MiB/min target; one that only
// spikes during the warm-up passes: the warm-up is left out of the fit.
func TestAnalyzeSlopeAfterWarmup(t *testing.T) {
	samples := func(growth float64) []Sample {
		var ss []Sample
		for ts := 0.0; ts <= 600; ts += 5 {
			rss := 100.0
			if ts < 120 {
				rss += ts / 2 // warm-up: +60 MiB in 2 minutes
			} else {
				rss += 60 + growth*(ts-120)/60
			}
			heap := 40.0 * (1 << 20)
			ss = append(ss, Sample{T: ts, Status: Status{RSS: int64(rss * (1 << 20)), Anon: int64(rss * (1 << 20)), Threads: 9}, HeapInuse: &heap})
		}
		return ss
	}
	cfg := Config{Duration: 10 * time.Minute, Exclude: 2 * time.Minute, MaxSlope: 0.5}
	for _, tc := range []struct {
		growth float64
		pass   bool
	}{{11, false}, {0, true}, {0.4, true}} {
		rep := &Report{Samples: samples(tc.growth), Requests: 1000}
		analyze(rep, cfg)
		if math.Abs(rep.RSS.SlopeMiBPerMin-tc.growth) > 0.01 || rep.Pass != tc.pass {
			t.Errorf("growth %v MiB/min: slope %v, pass %v (%s); want %v, %v", tc.growth, rep.RSS.SlopeMiBPerMin, rep.Pass, rep.Verdict, tc.growth, tc.pass)
		}
		if rep.Heap == nil || rep.Heap.SlopeMiBPerMin != 0 || rep.Threads != [3]int{9, 9, 9} {
			t.Errorf("growth %v: heap fit %+v, threads %v", tc.growth, rep.Heap, rep.Threads)
		}
	}
	rep := &Report{Samples: samples(0), Requests: 1000, Errors: 1}
	analyze(rep, cfg)
	if rep.Pass || !strings.Contains(rep.Verdict, "1 failed requests") {
		t.Errorf("a failed request: pass %v, verdict %q", rep.Pass, rep.Verdict)
	}
}

func TestParseStatus(t *testing.T) {
	text := "Name:\tpolicyd\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nRssAnon:\t   81920 kB\nRssFile:\t   20480 kB\nThreads:\t12\n"
	s, err := parseStatus(text)
	if err != nil {
		t.Fatal(err)
	}
	want := Status{RSS: 100 << 20, Peak: 200 << 20, Anon: 80 << 20, File: 20 << 20, Threads: 12}
	if s != want {
		t.Errorf("parseStatus = %+v, want %+v", s, want)
	}
	if _, err := parseStatus("VmRSS:\t12 MB\n"); err == nil || !strings.Contains(err.Error(), "VmRSS") {
		t.Errorf("a unit other than kB: err %v, want one naming VmRSS", err)
	}
}

// The refused body is exactly the size asked, valid JSON, and declares far fewer values than it
// carries.
func TestRefusedBody(t *testing.T) {
	for _, short := range []bool{true, false} {
		b := RefusedBody("obs", 64, 1<<20, short)
		if len(b) != 1<<20 {
			t.Errorf("short %v: %d bytes, want %d", short, len(b), 1<<20)
		}
		var req struct {
			Inputs []struct {
				Name  string    `json:"name"`
				Shape []int     `json:"shape"`
				Data  []float64 `json:"data"`
			} `json:"inputs"`
		}
		if err := json.Unmarshal(b, &req); err != nil {
			t.Fatalf("short %v: not JSON: %v", short, err)
		}
		in := req.Inputs[0]
		if in.Name != "obs" || len(in.Shape) != 2 || in.Shape[1] != 64 || len(in.Data) < 40_000 {
			t.Errorf("short %v: input %q shape %v with %d values", short, in.Name, in.Shape, len(in.Data))
		}
	}
}

func TestConfigValidate(t *testing.T) {
	c := Config{Duration: 3 * time.Minute, Every: 5 * time.Second, Connections: 16, Policyd: "/nonexistent/policyd"}
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "policyd binary") {
		t.Errorf("a missing binary: err %v", err)
	}
	if c.Exclude != time.Minute || len(c.Models) != 3 {
		t.Errorf("defaults: warm-up %v, models %v; want 1m (d/3) and three", c.Exclude, c.Models)
	}
	c = Config{Duration: 10 * time.Second, Every: 5 * time.Second, Connections: 2, Models: []string{"a", "b", "c"}, Env: []string{"NOEQUALS"}}
	err = c.Validate()
	for _, want := range []string{"duration 10s", "connections 2", `env "NOEQUALS"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v: want it to name %q", err, want)
		}
	}
}
