package soak

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/bench/peers"
	"github.com/policyd/policyd/bench/proc"
)

// MemoryConfig is one run of the memory targets.
type MemoryConfig struct {
	Root      string // policyd checkout: testdata/reference
	PeersDir  string // ../shared/peers (read only): mlp-med and cnn-atari
	OutDir    string // build/bench; the run writes OutDir/RunID/
	RunID     string // default memory-<UTC date and time>
	Policyd   string
	Policyctl string
	Env       []string // KEY=VALUE added to the server's environment
	Command   string
	Log       io.Writer
}

// MemoryCase is one body sent to a freshly started server.
type MemoryCase struct {
	Name       string  `json:"name"`
	What       string  `json:"what"`
	Model      string  `json:"model"`
	BodyBytes  int     `json:"body_bytes"`
	WantStatus int     `json:"want_status"`
	Status     int     `json:"status"`
	Answer     string  `json:"answer,omitempty"` // the start of an error answer
	IdleRSS    int64   `json:"idle_rss_bytes"`   // VmRSS before the request
	PeakRSS    int64   `json:"peak_rss_bytes"`   // VmHWM after it (reset to the idle RSS before it)
	PeakReset  bool    `json:"peak_reset"`       // false: VmHWM could not be reset and counts from the start
	AfterRSS   int64   `json:"after_rss_bytes"`  // VmRSS 2 s after the answer: what the server keeps
	AboveIdle  int64   `json:"peak_above_idle_bytes"`
	Limit      int64   `json:"limit_bytes"` // the target: peak above idle at most this
	LimitText  string  `json:"limit"`
	Multiple   float64 `json:"peak_above_idle_per_body_byte"`
	Pass       bool    `json:"pass"`
	LatencyMs  float64 `json:"latency_ms"`
	Error      string  `json:"error,omitempty"`
	ServerLog  string  `json:"server_log"`
	ServerDied bool    `json:"server_died,omitempty"`
}

// MemoryReport is one run of the memory targets.
type MemoryReport struct {
	RunID   string       `json:"run_id"`
	Date    string       `json:"date"`
	Command string       `json:"command,omitempty"`
	Commit  string       `json:"commit,omitempty"`
	CPU     string       `json:"cpu"`
	Nproc   int          `json:"nproc"`
	Env     []string     `json:"env,omitempty"`
	Cases   []MemoryCase `json:"cases"`
	Pass    bool         `json:"pass"`
}

// RefusedBodySize is the refused case's body: 15 MiB, under the prod example's 16 MiB
// max_request_size.
const RefusedBodySize = 15 << 20

// memoryModels are the models every memory server loads.
var memoryModels = []string{"mlp-med", "cnn-atari"}

// Memory runs the memory targets of issue 13, each case on a freshly started policyd:
//
//   - refused-15MiB, refused-15MiB-long: an mlp-med request declaring shape [1, 64] whose data
//     array holds 15 MiB of numbers ("0" values, the most per byte, or 17-digit ones); it must
//     get 400, and the peak RSS may rise at most 150 MiB above idle.
//   - cnn-atari-b32: the cnn-atari batch-32 JSON request (about 17 MB); it must get 200, and
//     the peak RSS may rise at most 4× the body above idle.
//
// Before a case's request the server answers one small request per model (so that what a first
// request initializes is idle memory) and its VmHWM is reset to its RSS.
func Memory(ctx context.Context, cfg MemoryConfig) (*MemoryReport, error) {
	if cfg.RunID == "" {
		cfg.RunID = "memory-" + time.Now().UTC().Format("2006-01-02_150405")
	}
	if cfg.Log == nil {
		cfg.Log = io.Discard
	}
	if err := proc.AbsPaths(&cfg.OutDir, &cfg.Policyd, &cfg.Policyctl, &cfg.PeersDir, &cfg.Root); err != nil {
		return nil, err
	}
	dir, r, err := startRun(ctx, cfg.OutDir, cfg.RunID)
	if err != nil {
		return nil, err
	}
	rep := &MemoryReport{RunID: cfg.RunID, Date: r.date, Command: cfg.Command,
		Commit: r.commit, CPU: r.cpu, Nproc: r.nproc, Env: cfg.Env, Pass: true}
	sc := Config{Root: cfg.Root, PeersDir: cfg.PeersDir, Policyctl: cfg.Policyctl}
	repo := filepath.Join(dir, "repository")
	fmt.Fprintf(cfg.Log, "memory: building the repository (%s)\n", strings.Join(memoryModels, ", "))
	if err := buildRepository(ctx, sc, repo, memoryModels); err != nil {
		return nil, err
	}
	specs, err := peers.LoadSpecs(filepath.Join(cfg.PeersDir, "models"))
	if err != nil {
		return nil, err
	}
	small := map[string]peers.Body{}
	for _, m := range memoryModels {
		spec, _ := peers.FindSpec(specs, m)
		if small[m], err = (peers.Harness{Dir: cfg.PeersDir}).LoadBody(m, 1, spec, filepath.Join(cfg.Root, "testdata", "reference")); err != nil {
			return nil, err
		}
	}
	atari, _ := peers.FindSpec(specs, "cnn-atari")
	big, err := (peers.Harness{Dir: cfg.PeersDir}).LoadBody("cnn-atari", 32, atari, filepath.Join(cfg.Root, "testdata", "reference"))
	if err != nil {
		return nil, err
	}
	cases := []struct {
		c    MemoryCase
		body []byte
	}{
		{MemoryCase{Name: "refused-15MiB", What: `mlp-med, shape [1,64], a data array of 15 MiB of "0" values`, Model: "mlp-med",
			WantStatus: 400, Limit: 150 << 20, LimitText: "150 MiB above idle"}, RefusedBody("obs", 64, RefusedBodySize, true)},
		{MemoryCase{Name: "refused-15MiB-long", What: "mlp-med, shape [1,64], a data array of 15 MiB of 17-digit values", Model: "mlp-med",
			WantStatus: 400, Limit: 150 << 20, LimitText: "150 MiB above idle"}, RefusedBody("obs", 64, RefusedBodySize, false)},
		{MemoryCase{Name: "cnn-atari-b32", What: "cnn-atari batch 32, JSON", Model: "cnn-atari",
			WantStatus: 200, LimitText: "4× the body above idle"}, big.JSON},
	}
	for i, tc := range cases {
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
		c := tc.c
		c.BodyBytes = len(tc.body)
		if c.Limit == 0 {
			c.Limit = 4 * int64(len(tc.body))
		}
		fmt.Fprintf(cfg.Log, "memory: %s (%s, %.1f MiB) on a fresh policyd\n", c.Name, c.What, mib(int64(len(tc.body))))
		c = runMemoryCase(ctx, cfg, dir, repo, fmt.Sprintf("policyd-%d-%s", i, c.Name), c, tc.body, small)
		rep.Pass = rep.Pass && c.Pass
		rep.Cases = append(rep.Cases, c)
	}
	if err := rep.WriteFiles(dir); err != nil {
		return rep, fmt.Errorf("write the report: %w", err)
	}
	return rep, nil
}

func runMemoryCase(ctx context.Context, cfg MemoryConfig, dir, repo, tag string, c MemoryCase, body []byte, small map[string]peers.Body) MemoryCase {
	srv, err := startPolicyd(ctx, cfg.Policyd, dir, tag, repo, memoryModels, cfg.Env)
	if err != nil {
		c.Error = err.Error()
		return c
	}
	defer srv.Stop()
	c.ServerLog = srv.Log
	hc := &fasthttp.Client{MaxResponseBodySize: 64 << 20, ReadTimeout: 2 * time.Minute, WriteTimeout: 2 * time.Minute}
	for _, m := range memoryModels {
		if code, _, err := post(hc, srv.Addr, m, small[m].JSON); err != nil || code != 200 {
			c.Error = fmt.Sprintf("warm-up request to %s: status %d, %v", m, code, err)
			return c
		}
	}
	time.Sleep(500 * time.Millisecond)
	c.PeakReset = resetPeak(srv.PID()) == nil
	idle, err := ReadStatus(srv.PID())
	if err != nil {
		c.Error = err.Error()
		return c
	}
	c.IdleRSS = idle.RSS
	t0 := time.Now()
	code, answer, err := post(hc, srv.Addr, c.Model, body)
	c.LatencyMs = round(time.Since(t0).Seconds()*1000, 1)
	c.Status = code
	if code != 200 {
		c.Answer = clip(answer, 300)
	}
	if !srv.Alive() {
		c.ServerDied = true
		c.Error = fmt.Sprintf("policyd exited (%v): %s", srv.Err(), proc.Tail(srv.Log, 300))
		return c
	}
	after, serr := ReadStatus(srv.PID())
	if serr != nil {
		c.Error = serr.Error()
		return c
	}
	c.PeakRSS = after.Peak
	time.Sleep(2 * time.Second)
	if later, err := ReadStatus(srv.PID()); err == nil {
		c.AfterRSS = later.RSS
	}
	c.AboveIdle = c.PeakRSS - c.IdleRSS
	c.Multiple = round(float64(c.AboveIdle)/float64(len(body)), 2)
	switch {
	case err != nil:
		c.Error = err.Error()
	case code != c.WantStatus:
		c.Error = fmt.Sprintf("status %d, want %d", code, c.WantStatus)
	}
	c.Pass = c.Error == "" && c.PeakReset && c.AboveIdle <= c.Limit
	return c
}

func post(hc *fasthttp.Client, addr, model string, body []byte) (int, string, error) {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/v2/models/" + model + "/infer")
	req.Header.SetMethod("POST")
	req.Header.SetContentType("application/json")
	req.SetBodyRaw(body)
	if err := hc.DoTimeout(req, resp, 2*time.Minute); err != nil {
		return 0, "", err
	}
	return resp.StatusCode(), string(resp.Body()), nil
}

// RefusedBody is a KServe v2 JSON request for one FP32 input of shape [1, width] whose data
// array holds numbers up to size bytes: far more values than the shape declares. short writes
// "0" values (the most values per byte: an attacker's body); otherwise each value has 17
// significant digits, as the peers' bodies do.
func RefusedBody(input string, width, size int, short bool) []byte {
	head := fmt.Sprintf(`{"inputs":[{"name":%q,"shape":[1,%d],"datatype":"FP32","data":[`, input, width)
	const tailText = "]}]}"
	b := make([]byte, 0, size)
	b = append(b, head...)
	v := []byte("0")
	for i := 0; ; i++ {
		if !short {
			v = strconv.AppendFloat(v[:0], -1+float64(i%2048)/1024+1.0/3e7, 'g', 17, 64)
		}
		if len(b)+len(v)+1+len(tailText) > size {
			break
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, v...)
	}
	for len(b)+len(tailText) < size { // pad to exactly size with whitespace, which JSON allows
		b = append(b, ' ')
	}
	return append(b, tailText...)
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// WriteFiles writes memory.json and memory.txt into dir.
func (r *MemoryReport) WriteFiles(dir string) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "memory.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "memory.txt"), []byte(r.Text()), 0o644)
}

// Text is the report for people.
func (r *MemoryReport) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policyd memory targets %s (%s, commit %s; %s, %d CPUs)\n", r.RunID, r.Date, r.Commit, r.CPU, r.Nproc)
	if len(r.Env) > 0 {
		fmt.Fprintf(&b, "server env: %s\n", strings.Join(r.Env, " "))
	}
	for _, c := range r.Cases {
		verdict := "PASS"
		if !c.Pass {
			verdict = "FAIL"
		}
		fmt.Fprintf(&b, "%-4s %-18s %s: body %.1f MiB, status %d (want %d), idle %.1f MiB, peak %.1f MiB, above idle %.1f MiB (%.2f× the body; limit %s = %.1f MiB), 2 s later %.1f MiB, %.0f ms\n",
			verdict, c.Name, c.What, mib(int64(c.BodyBytes)), c.Status, c.WantStatus, mib(c.IdleRSS), mib(c.PeakRSS),
			mib(c.AboveIdle), c.Multiple, c.LimitText, mib(c.Limit), mib(c.AfterRSS), c.LatencyMs)
		if !c.PeakReset && c.Error == "" {
			fmt.Fprintf(&b, "     VmHWM could not be reset (/proc/PID/clear_refs): the peak counts from the start\n")
		}
		if c.Answer != "" {
			fmt.Fprintf(&b, "     answer: %s\n", c.Answer)
		}
		if c.Error != "" {
			fmt.Fprintf(&b, "     error: %s\n", c.Error)
		}
	}
	return b.String()
}
