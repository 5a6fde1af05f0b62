package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/policyd/policyd/artifacts"
)

const importTritonAbout = `import a Triton model repository as verified artifacts and write the matching config
Reads SRC laid out as Triton's model repository: SRC/<model>/<N>/model.onnx (N an integer
version; default_model_filename when the config sets one) and an optional
SRC/<model>/config.pbtxt, parsed with the protobuf text format into Triton's ModelConfig (a
parse error names its line:col). Each version is added to --repository as <model>/<N>.0.0/
exactly as "artifacts add" adds one (it must load through the engine; external data, manifest,
--sign-key signature), and the policyd config that serves them is written as YAML to stdout
or --config-out: max_batch_size, dynamic_batching, sequence_batching (idle time, states,
control inputs), instance groups and the version policy (see docs/artifacts.md, Importing a
Triton repository). What cannot be carried over is listed per model on stderr and as
comments in the config, never dropped silently; a model that cannot be imported is reported
and the others are still imported (exit status 1 when any failed). A version that exists
already is kept (not overwritten) and reported. Requests may keep naming the integer
version: /v2/models/<model>/versions/1 serves 1.0.0.
`

// artifactsImportTriton is policyctl artifacts import-triton.
func artifactsImportTriton(_ context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	fs := newConfigFlags(path, stderr, "SRC --repository DIR [--sign-key KEY] [--config-out FILE]", importTritonAbout)
	repo := fs.String("repository", "", "policyd repository `DIR` to add the versions to (required)")
	signKey := fs.String("sign-key", "", "private `KEY` file to sign the manifests with (from keygen)")
	configOut := fs.String("config-out", "", "write the config to `FILE` instead of stdout")
	pos, code := fs.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return fs.usageError(stderr, "want one Triton repository SRC, got %d arguments", len(pos))
	}
	if *repo == "" {
		return fs.usageError(stderr, "--repository is required")
	}
	req := artifacts.AddRequest{Tool: toolVersion()}
	if *signKey != "" {
		k, err := artifacts.LoadPrivateKey(*signKey)
		if err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
			return 1
		}
		req.SignKey = k
	}
	models, err := artifacts.ScanTriton(pos[0])
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	if err := os.MkdirAll(*repo, 0o755); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
		return 1
	}
	// Progress goes to stdout when the config goes to a file, else to stderr: stdout then holds
	// the config alone, ready to redirect into a file.
	progress := stderr
	if *configOut != "" {
		progress = stdout
	}
	failed := 0
	var imported []artifacts.TritonModel
	for _, m := range models {
		if m.Err != nil {
			fmt.Fprintf(stderr, "model %s: not imported: %v\n", m.Name, m.Err)
			failed++
			continue
		}
		ok := 0
		for _, v := range m.Versions {
			r := req
			r.Name, r.Version, r.Model = m.Name, v.Version, v.Model
			r.Metadata = map[string]string{"imported_from": "triton", "triton_version": strconv.FormatUint(v.N, 10)}
			a, err := addVersion(*repo, r, stderr)
			switch {
			case err == nil:
				fmt.Fprintf(progress, "added %s %s\n", a.Ref(), a.Digest)
				ok++
			case errors.Is(err, artifacts.ErrExists):
				fmt.Fprintf(stderr, "model %s: version %s exists in %s; kept as it is\n", m.Name, v.Version, *repo)
				ok++
			default:
				fmt.Fprintf(stderr, "model %s: version %d: not imported: %v\n", m.Name, v.N, err)
				m.NotCarried = append(m.NotCarried, fmt.Sprintf("version %d: not imported: %v", v.N, err))
			}
		}
		for _, n := range m.NotCarried {
			fmt.Fprintf(stderr, "model %s: %s\n", m.Name, n)
		}
		if ok == 0 {
			fmt.Fprintf(stderr, "model %s: not imported: no version could be added\n", m.Name)
			failed++
			continue
		}
		imported = append(imported, m)
	}
	abs, err := filepath.Abs(*repo)
	if err != nil {
		abs = *repo
	}
	yaml := tritonConfigYAML(pos[0], abs, imported)
	if *configOut != "" {
		if err := os.WriteFile(*configOut, []byte(yaml), 0o644); err != nil {
			fmt.Fprintf(stderr, "%s: %v\n", fs.name, err)
			return 1
		}
		fmt.Fprintf(stdout, "wrote %s (models imported: %d)\n", *configOut, len(imported))
	} else {
		fmt.Fprint(stdout, yaml)
	}
	if failed > 0 {
		fmt.Fprintf(stderr, "%d of %d models not imported\n", failed, len(models))
		return 1
	}
	return 0
}

// tritonConfigYAML writes the policyd config of the imported models: the repository, each
// model's mapped settings, and as comments what was not carried over.
func tritonConfigYAML(src, repo string, models []artifacts.TritonModel) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by policyctl artifacts import-triton from the Triton repository %s.\n", src)
	fmt.Fprintf(&b, "repository:\n  path: %s\n", strconv.Quote(repo))
	var queueTimeout time.Duration
	queueLen := 0
	for _, m := range models {
		queueTimeout = max(queueTimeout, m.Settings.QueueTimeout)
		queueLen = max(queueLen, m.Settings.QueueLen)
	}
	if queueTimeout > 0 || queueLen > 0 {
		b.WriteString("# From dynamic_batching.default_queue_policy (server-wide in policyd: the largest of the models).\nlimits:\n")
		if queueTimeout > 0 {
			fmt.Fprintf(&b, "  queue_timeout: %s\n", queueTimeout)
		}
		if queueLen > 0 {
			fmt.Fprintf(&b, "  queue_len: %d\n", queueLen)
		}
	}
	if len(models) == 0 {
		b.WriteString("models: []\n")
		return b.String()
	}
	b.WriteString("models:\n")
	for _, m := range models {
		s := m.Settings
		fmt.Fprintf(&b, "  - name: %s\n", strconv.Quote(m.Name))
		for _, n := range m.NotCarried {
			fmt.Fprintf(&b, "    # import-triton: %s\n", strings.ReplaceAll(n, "\n", " "))
		}
		if s.Version != "" {
			fmt.Fprintf(&b, "    version: %s\n", strconv.Quote(s.Version))
		}
		if len(s.Backends) > 0 {
			fmt.Fprintf(&b, "    backends: [%s]\n", strings.Join(s.Backends, ", "))
		}
		if len(s.Devices) > 0 {
			fmt.Fprintf(&b, "    devices: [%s]\n", quoteAll(s.Devices))
		}
		if s.Instances > 0 {
			fmt.Fprintf(&b, "    instances: %d\n", s.Instances)
		}
		var batching []string
		if s.MaxBatchSize > 0 {
			batching = append(batching, fmt.Sprintf("max_batch_size: %d", s.MaxBatchSize))
		}
		if s.MaxQueueDelay > 0 {
			batching = append(batching, fmt.Sprintf("max_queue_delay: %s", s.MaxQueueDelay))
		}
		if len(s.PreferredBatchSizes) > 0 {
			batching = append(batching, fmt.Sprintf("preferred_batch_sizes: [%s]", joinInts(s.PreferredBatchSizes)))
		}
		if s.PriorityLevels > 0 {
			batching = append(batching, fmt.Sprintf("priority_levels: %d", s.PriorityLevels))
		}
		if s.DefaultPriorityLevel > 0 {
			batching = append(batching, fmt.Sprintf("default_priority_level: %d", s.DefaultPriorityLevel))
		}
		if len(batching) > 0 {
			b.WriteString("    batching:\n")
			for _, l := range batching {
				fmt.Fprintf(&b, "      %s\n", l)
			}
		}
		if s.Sequence {
			b.WriteString("    sequence:\n")
			if s.IdleTimeout > 0 {
				fmt.Fprintf(&b, "      idle_timeout: %s\n", s.IdleTimeout)
			}
			if s.MaxSequences > 0 {
				fmt.Fprintf(&b, "      max_sequences: %d\n", s.MaxSequences)
			}
			if len(s.States) > 0 {
				fmt.Fprintf(&b, "      states: [%s]\n", quoteAll(s.States))
			}
			if len(s.Controls) > 0 {
				b.WriteString("      controls:\n")
				for _, c := range s.Controls {
					fmt.Fprintf(&b, "        - {input: %s, kind: %s, datatype: %s", strconv.Quote(c.Input), c.Kind, c.DataType)
					if c.Kind != "corrid" {
						fmt.Fprintf(&b, ", false_value: %s, true_value: %s", fmtFloat(c.False), fmtFloat(c.True))
					}
					b.WriteString("}\n")
				}
			}
		}
	}
	return b.String()
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

func joinInts(ns []int) string {
	q := make([]string, len(ns))
	for i, n := range ns {
		q[i] = strconv.Itoa(n)
	}
	return strings.Join(q, ", ")
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }
