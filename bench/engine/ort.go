package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ORTResult is the one JSON line ort_bench.js prints.
type ORTResult struct {
	Peer  string   `json:"peer"`
	ORT   string   `json:"ort"`
	Node  string   `json:"node"`
	Model string   `json:"model"`
	Batch int      `json:"batch"`
	NProc int      `json:"nproc"`
	Runs  []Result `json:"runs"`
}

// ORTRunner runs the onnxruntime-node peer (ort_bench.js) as a child process.
type ORTRunner struct {
	Node        string // node binary
	Script      string // path to ort_bench.js
	CheckScript string // path to ort_outputs.js (the output check); "" = no check
	ModelsDir   string
}

// Args is the command line of one ORT case.
func (o ORTRunner) Args(model string, batch int, modes []string, p Params) []string {
	return []string{o.Script,
		"--model", model, "--batch", strconv.Itoa(batch),
		"--seconds", strconv.FormatFloat(p.Seconds, 'g', -1, 64),
		"--warmup", strconv.FormatFloat(p.Warmup, 'g', -1, 64),
		"--max-iters", strconv.Itoa(p.MaxIters), "--min-iters", strconv.Itoa(p.MinIters),
		"--threads", strconv.Itoa(max(p.Workers, 1)),
		"--modes", strings.Join(modes, ","), "--models-dir", o.ModelsDir}
}

// Run runs ort_bench.js for one model and batch (its modes one after another, as it does) and
// parses its JSON line. With one mode, that run's CPU fields are set (the whole process's). The process gets a generous deadline derived from the parameters.
func (o ORTRunner) Run(ctx context.Context, model string, batch int, modes []string, p Params) (ORTResult, error) {
	limit := time.Duration((float64(len(modes))*(p.Seconds+p.Warmup)*4 + 120) * float64(time.Second))
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.Node, o.Args(model, batch, modes, p)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cpu0 := sampleCPU()
	err := cmd.Run()
	cpu1 := sampleCPU()
	if err != nil {
		return ORTResult{}, fmt.Errorf("%s %s: %w: %s", o.Node, filepath.Base(o.Script), err, tail(stderr.String(), 800))
	}
	r, err := ParseORT(stdout.Bytes())
	if err != nil {
		return ORTResult{}, fmt.Errorf("%s: %w (stderr: %s)", filepath.Base(o.Script), err, tail(stderr.String(), 400))
	}
	if r.Model != model || r.Batch != batch {
		return ORTResult{}, fmt.Errorf("ort_bench.js answered for %s b%d, asked %s b%d", r.Model, r.Batch, model, batch)
	}
	if len(r.Runs) == 1 { // one mode: the process's CPU is that mode's
		account(&r.Runs[0], cpu0, cpu1)
	} else {
		for i := range r.Runs {
			r.Runs[i].OwnCores, r.Runs[i].OtherCores = -1, -1
		}
	}
	return r, nil
}

// ParseORT takes the last line of out that is a JSON object.
func ParseORT(out []byte) (ORTResult, error) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		if !strings.HasPrefix(l, "{") {
			continue
		}
		var r ORTResult
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			return ORTResult{}, fmt.Errorf("bad JSON line: %w", err)
		}
		if len(r.Runs) == 0 {
			return ORTResult{}, fmt.Errorf("JSON line has no runs")
		}
		return r, nil
	}
	return ORTResult{}, fmt.Errorf("no JSON line in output %q", tail(string(out), 200))
}

// Version returns `node --version` and the version in node_modules/onnxruntime-node/package.json
// beside the script (ort_bench.js's own layout), "" where unknown.
func (o ORTRunner) Version(ctx context.Context) (node, ort string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, o.Node, "--version").Output(); err == nil {
		node = strings.TrimSpace(string(out))
	}
	pj := filepath.Join(filepath.Dir(o.Script), "node", "node_modules", "onnxruntime-node", "package.json")
	if b, err := os.ReadFile(pj); err == nil {
		var v struct {
			Version string `json:"version"`
		}
		if json.Unmarshal(b, &v) == nil {
			ort = v.Version
		}
	}
	return node, ort
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
