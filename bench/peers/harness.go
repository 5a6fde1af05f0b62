package peers

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/policyd/policyd/bench/load"
)

// Harness is the peer benchmark harness (../shared/peers): models, the Node, FastAPI and floor
// servers, its loadgen and run_all.sh. It is read only; RunAll runs a copy.
type Harness struct {
	Dir string
	// NodeModules is a node_modules folder holding onnxruntime-node to use when Dir/node has
	// none (make bench installs one under build/peers/node, as make bench-engine does).
	NodeModules string
}

// Setup is what of setup.sh's work this machine has. Missing lists, for a person, what is
// absent and what it costs.
type Setup struct {
	Models      bool     `json:"models"`       // models.json and the .onnx files
	Bodies      bool     `json:"bodies"`       // models/bodies and models/ref (make_models.py, needs torch)
	NodeModules string   `json:"node_modules"` // a node_modules with onnxruntime-node, "" none
	Node        string   `json:"node"`         // node binary
	Python      bool     `json:"python"`       // /usr/bin/python3 with numpy, fastapi, uvicorn
	Wrk         string   `json:"wrk"`          // wrk binary
	Missing     []string `json:"missing,omitempty"`
}

// RunAllReady reports whether run_all.sh can run its HTTP stages here without installing or
// exporting anything (it would otherwise run npm ci or make_models.py itself).
func (s Setup) RunAllReady() bool {
	return s.Models && s.Bodies && s.NodeModules != "" && s.Node != "" && s.Python && s.Wrk != ""
}

// NodeReady reports whether the Node + onnxruntime-node server can start.
func (s Setup) NodeReady() bool { return s.Models && s.NodeModules != "" && s.Node != "" }

// Check looks at what is set up, running nothing but `python3 -c import ...`.
func (h Harness) Check(ctx context.Context) Setup {
	var s Setup
	miss := func(what string) { s.Missing = append(s.Missing, what) }
	_, err := os.Stat(filepath.Join(h.Dir, "models", "models.json"))
	s.Models = err == nil
	if !s.Models {
		miss(fmt.Sprintf("%s/models/models.json (the peer harness itself)", h.Dir))
	}
	bodies, _ := filepath.Glob(filepath.Join(h.Dir, "models", "bodies", "*.json"))
	refs, _ := filepath.Glob(filepath.Join(h.Dir, "models", "ref", "*.json"))
	s.Bodies = len(bodies) > 0 && len(refs) > 0
	if !s.Bodies {
		miss("models/bodies and models/ref (make_models.py: python3-torch); request bodies are derived from testdata/reference instead")
	}
	for _, nm := range []string{filepath.Join(h.Dir, "node", "node_modules"), h.NodeModules} {
		if nm == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(nm, "onnxruntime-node", "package.json")); err == nil {
			s.NodeModules = nm
			break
		}
	}
	if s.NodeModules == "" {
		miss("onnxruntime-node (npm ci in node/): the Node peer cannot run")
	}
	if p, err := exec.LookPath("node"); err == nil {
		s.Node = p
	} else {
		miss("node: the Node peer cannot run")
	}
	if err := exec.CommandContext(ctx, "/usr/bin/python3", "-c", "import numpy, fastapi, uvicorn").Run(); err == nil {
		s.Python = true
	} else {
		miss("python3-numpy/fastapi/uvicorn (Debian): the FastAPI peers cannot run")
	}
	if p, err := exec.LookPath("wrk"); err == nil {
		s.Wrk = p
	} else {
		miss("wrk: no max-throughput stage")
	}
	return s
}

// Body is the request of one model at one batch and what its answer must be.
type Body struct {
	Model  string
	Batch  int
	Inputs []load.Tensor
	JSON   []byte // the JSON request as sent (the peers' file verbatim when it exists)
	Ref    load.Reference
	Source string
}

// LoadBody returns the request body and reference of model at batch: the harness's
// models/bodies/<model>_b<batch>.json and models/ref/ when present; otherwise built from the
// ONNX Runtime reference in refDir (testdata/reference/peers-<model>_b8.json or _b1.json),
// its rows tiled to the batch along each tensor's batch axis (spec).
func (h Harness) LoadBody(model string, batch int, spec ModelSpec, refDir string) (Body, error) {
	b := Body{Model: model, Batch: batch}
	name := fmt.Sprintf("%s_b%d.json", model, batch)
	raw, err1 := os.ReadFile(filepath.Join(h.Dir, "models", "bodies", name))
	refRaw, err2 := os.ReadFile(filepath.Join(h.Dir, "models", "ref", name))
	if err1 == nil && err2 == nil {
		var err error
		if b.Inputs, err = load.ParseInputs(raw); err != nil {
			return b, fmt.Errorf("%s: %w", name, err)
		}
		if b.Ref, err = load.ParseReference(refRaw); err != nil {
			return b, fmt.Errorf("ref/%s: %w", name, err)
		}
		b.JSON, b.Source = raw, "peers models/bodies + models/ref (torch)"
		return b, nil
	}
	return derivedBody(model, batch, spec, refDir)
}

// testdataRef is the layout of testdata/reference/<id>_b<batch>.json.
type testdataRef struct {
	Inputs  []load.Tensor `json:"inputs"`
	Outputs []load.Tensor `json:"outputs"`
}

func derivedBody(model string, batch int, spec ModelSpec, refDir string) (Body, error) {
	b := Body{Model: model, Batch: batch}
	var src string
	var ref testdataRef
	for _, from := range []int{8, 1} {
		path := filepath.Join(refDir, fmt.Sprintf("peers-%s_b%d.json", model, from))
		raw, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return b, err
		}
		if err := json.Unmarshal(raw, &ref); err != nil {
			return b, fmt.Errorf("%s: %w", path, err)
		}
		src = fmt.Sprintf("%s (ONNX Runtime), rows tiled from batch %d", filepath.Base(path), from)
		break
	}
	if src == "" {
		return b, fmt.Errorf("no request body for %s at batch %d: neither the peers' models/bodies nor %s/peers-%s_b8.json", model, batch, refDir, model)
	}
	tile := func(ts []load.Tensor, ios []IOSpec) ([]load.Tensor, error) {
		var out []load.Tensor
		for _, t := range ts {
			axis := 0
			for _, io := range ios {
				if io.Name == t.Name {
					axis = io.BatchAxis()
				}
			}
			tt, err := load.TileBatch(t, axis, batch)
			if err != nil {
				return nil, err
			}
			out = append(out, tt)
		}
		return out, nil
	}
	var err error
	if b.Inputs, err = tile(ref.Inputs, spec.Inputs); err != nil {
		return b, err
	}
	outs, err := tile(ref.Outputs, spec.Outputs)
	if err != nil {
		return b, err
	}
	if b.JSON, err = load.JSONBody(b.Inputs); err != nil {
		return b, err
	}
	b.Ref = load.Reference{Outputs: outs, Atol: 1e-4, Rtol: 1e-3}
	b.Source = src
	return b, nil
}

// ExtraServer is run_all.sh's EXTRA_SERVER_*: one more server measured beside the peers.
type ExtraServer struct {
	Name string
	Port int
	Cmd  string
}

// RunAllOptions is one run of run_all.sh (see its header for the knobs).
type RunAllOptions struct {
	Copy    string // folder for the harness copy; its results/ get the output
	RunID   string
	Stages  string // e.g. "http wrk"
	Servers string // e.g. "node fastapi fastapi-w2 floor"
	Quick   bool
	Extra   *ExtraServer
	// NodeModules is linked as the copy's node/node_modules when the harness has none, so
	// that run_all.sh does not run npm ci itself.
	NodeModules string
	Env         []string // more KEY=VALUE (DURATION, HTTP_MODELS, ...)
	Log         io.Writer
}

// RunAll copies the harness to o.Copy (symlinking the models and node_modules, copying the
// scripts and Go sources: run_all.sh writes results/, bin/ and build output beside itself, and
// the harness is read only) and runs its run_all.sh there. It returns the raw output folder.
func (h Harness) RunAll(ctx context.Context, o RunAllOptions) (string, error) {
	if err := h.copyTo(o.Copy); err != nil {
		return "", fmt.Errorf("copy the peer harness: %w", err)
	}
	if o.NodeModules != "" {
		if err := linkNodeModules(o.Copy, o.NodeModules); err != nil {
			return "", fmt.Errorf("link node_modules: %w", err)
		}
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(o.Copy, "run_all.sh"))
	cmd.Env = append(os.Environ(), "RUN_ID="+o.RunID, "STAGES="+o.Stages, "SERVERS="+o.Servers, "GOTOOLCHAIN=local")
	if o.Quick {
		cmd.Env = append(cmd.Env, "QUICK=1")
	}
	if e := o.Extra; e != nil {
		cmd.Env = append(cmd.Env, "EXTRA_SERVER_NAME="+e.Name, "EXTRA_SERVER_PORT="+strconv.Itoa(e.Port), "EXTRA_SERVER_CMD="+e.Cmd)
	}
	cmd.Env = append(cmd.Env, o.Env...)
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) } // its trap stops its servers
	raw := filepath.Join(o.Copy, "results", "raw", o.RunID)
	if err := cmd.Run(); err != nil {
		return raw, fmt.Errorf("run_all.sh: %w", err)
	}
	return raw, nil
}

func (h Harness) copyTo(dst string) error {
	src, err := filepath.Abs(h.Dir)
	if err != nil {
		return err
	}
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		to := filepath.Join(dst, rel)
		switch {
		case rel == "results" || rel == "bin":
			return filepath.SkipDir
		case rel == filepath.Join("node", "node_modules"):
			return filepath.SkipDir
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case strings.HasPrefix(rel, "models"+string(filepath.Separator)):
			_ = os.Remove(to)
			return os.Symlink(path, to)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(to, b, info.Mode().Perm()|0o200)
	})
}

// linkNodeModules makes copyDir/node/node_modules a link to nodeModules unless it exists.
func linkNodeModules(copyDir, nodeModules string) error {
	to := filepath.Join(copyDir, "node", "node_modules")
	if _, err := os.Lstat(to); err == nil {
		return nil
	}
	abs, err := filepath.Abs(nodeModules)
	if err != nil {
		return err
	}
	return os.Symlink(abs, to)
}

// Row is one line of run_all.sh's http.jsonl (its loadgen's output) with its label split.
type Row struct {
	Server string `json:"server"`
	Model  string `json:"model"`
	Batch  int    `json:"batch"`
	Conc   int    `json:"conc"`
	load.Result
}

// WrkRow is one line of wrk.jsonl: max throughput with 64 connections.
type WrkRow struct {
	Server   string  `json:"server"`
	Model    string  `json:"model"`
	Batch    int     `json:"batch"`
	Conn     int     `json:"conn"`
	Requests int64   `json:"requests"`
	RPS      float64 `json:"rps"`
	Errors   int64   `json:"errors"`
	P50      float64 `json:"p50_us"`
	P99      float64 `json:"p99_us"`
}

// ReadHTTP reads raw/http.jsonl; a missing file is no rows.
func ReadHTTP(raw string) ([]Row, error) {
	var rows []Row
	err := readLines(filepath.Join(raw, "http.jsonl"), func(line []byte) error {
		var r Row
		if err := json.Unmarshal(line, &r.Result); err != nil {
			return err
		}
		for _, kv := range strings.Fields(r.Label) {
			k, v, _ := strings.Cut(kv, "=")
			switch k {
			case "server":
				r.Server = v
			case "model":
				r.Model = v
			case "batch":
				r.Batch, _ = strconv.Atoi(v)
			case "conc":
				r.Conc, _ = strconv.Atoi(v)
			}
		}
		if r.Server == "" || r.Model == "" || r.Batch == 0 || r.Conc == 0 {
			return fmt.Errorf("label %q lacks server/model/batch/conc", r.Label)
		}
		r.Mode, r.Protocol = "closed", "json"
		rows = append(rows, r)
		return nil
	})
	return rows, err
}

// ReadWrk reads raw/wrk.jsonl; a missing file is no rows.
func ReadWrk(raw string) ([]WrkRow, error) {
	var rows []WrkRow
	err := readLines(filepath.Join(raw, "wrk.jsonl"), func(line []byte) error {
		var r WrkRow
		if err := json.Unmarshal(line, &r); err != nil {
			return err
		}
		rows = append(rows, r)
		return nil
	})
	return rows, err
}

func readLines(path string, f func([]byte) error) error {
	fh, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "{") {
			continue
		}
		if err := f([]byte(line)); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	return sc.Err()
}
