package config

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// BackendParams are backend build parameters, "<backend>.<name>" → value
// ("tensorrt.precision" → "fp16"), passed to the backend that builds a model's engine
// (bridge.EngineOptions.Params). Keys and values are checked against BackendParameters.
//
// In a file a key is written either whole or as a section per backend, both meaning the same:
//
//	backend_parameters:
//	  tensorrt.precision: fp16
//	  tensorrt:
//	    workspace_mib: 1024
//
// From the environment or a flag, one key per variable
// (POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__PRECISION=fp16), or the whole map as
// comma-separated key=value pairs (--engine.backend-parameters tensorrt.precision=fp16).
type BackendParams map[string]string

// BackendParameter is one parameter a backend knows: a boolean when Bool (true or false: a
// YAML boolean, or the strings "true" and "false" from the environment or a flag), else a value
// of Enum, or an integer from Min to Max when Enum is empty.
type BackendParameter struct {
	Key      string // "tensorrt.precision"
	Bool     bool
	Enum     []string
	Min, Max int
	Desc     string
}

// BackendParameters are the parameters of the backends (docs/configuration.md, Backend
// parameters): build parameters, and the GPU plugins' run switches (graphs, mapped_io), which
// change how a context runs, never what is built. cpu has none.
var BackendParameters = []BackendParameter{
	{Key: "tensorrt.precision", Enum: []string{"fp32", "fp16", "bf16"},
		Desc: "Precision TensorRT may choose kernels in: fp32 only, or also fp16 or bf16 where it is faster (the inputs and outputs stay as the model declares them)."},
	{Key: "tensorrt.workspace_mib", Min: 1, Max: 1 << 20,
		Desc: "Most GPU memory, in MiB, a layer of the engine may use as scratch space while TensorRT builds and runs it."},
	{Key: "tensorrt.builder_optimization_level", Min: 0, Max: 5,
		Desc: "How hard TensorRT's builder searches for fast kernels: 0 builds fastest, 5 tries the most tactics (the engine may run faster, the build takes longer)."},
	{Key: "tensorrt.graphs", Bool: true,
		Desc: "Capture each batch size's run (copies in, enqueueV3, copies out) as a CUDA graph after an eager first run, and replay it (default true). false launches every run eagerly, to tell graph capture from other faults. A plan that cannot be captured runs eagerly anyway, with one warning."},
	{Key: "cuda.graphs", Bool: true,
		Desc: "Capture each shape bucket's run (copies in, kernels, copies out) as a CUDA graph after an eager first run, and replay it (default true). false launches every run eagerly, to tell graph capture from kernel faults. A run that cannot be captured runs eagerly anyway, with one warning."},
	{Key: "cuda.mapped_io", Bool: true,
		Desc: "Move inputs and outputs of at most 64 KiB through pinned host memory mapped into the GPU, by copy kernels inside the run's graph, which is faster at small batches (default true). false uses DMA copies for every input and output."},
}

// allows says what a parameter accepts, for messages and docs: "fp32, fp16 or bf16",
// "an integer from 0 to 5".
func (p BackendParameter) allows() string {
	if p.Bool {
		return "true or false"
	}
	if len(p.Enum) > 0 {
		return strings.Join(p.Enum[:len(p.Enum)-1], ", ") + " or " + p.Enum[len(p.Enum)-1]
	}
	return fmt.Sprintf("an integer from %d to %d", p.Min, p.Max)
}

// check returns what is wrong with value v, or "".
func (p BackendParameter) check(v string) string {
	if p.Bool {
		if v != "true" && v != "false" {
			return fmt.Sprintf("must be %s, got %q", p.allows(), v)
		}
		return ""
	}
	if len(p.Enum) > 0 {
		if !slices.Contains(p.Enum, v) {
			return fmt.Sprintf("must be %s, got %q", p.allows(), v)
		}
		return ""
	}
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < p.Min || n > p.Max {
		return fmt.Sprintf("must be %s, got %q", p.allows(), v)
	}
	return ""
}

func backendParameter(key string) (BackendParameter, bool) {
	for _, p := range BackendParameters {
		if p.Key == key {
			return p, true
		}
	}
	return BackendParameter{}, false
}

// checkParams reports every unknown key and bad value of m, each under path.<key>.
func (ch *checker) checkParams(path string, m BackendParams) {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		kp := path + "." + k
		p, ok := backendParameter(k)
		if !ok {
			ch.fail(kp, "unknown backend parameter%s", suggestParam(k))
			continue
		}
		if msg := p.check(m[k]); msg != "" {
			ch.fail(kp, "%s", msg)
		}
	}
}

// suggestParam returns " (did you mean K?)" and the parameters known for an unknown key k.
func suggestParam(k string) string {
	backend, _, _ := strings.Cut(k, ".")
	var known, ofBackend []string
	best, bestD := "", 3
	for _, p := range BackendParameters {
		known = append(known, p.Key)
		if strings.HasPrefix(p.Key, backend+".") {
			ofBackend = append(ofBackend, p.Key)
		}
		if d := editDistance(k, p.Key); d < bestD {
			best, bestD = p.Key, d
		}
	}
	s := ""
	if best != "" {
		s = " (did you mean " + best + "?)"
	}
	switch {
	case !strings.Contains(k, "."):
		return s + ": a key is <backend>.<name>, one of " + strings.Join(known, ", ")
	case len(ofBackend) == 0:
		return s + fmt.Sprintf(": backend %q has no build parameters; known: %s", backend, strings.Join(known, ", "))
	}
	return s + ": known for " + backend + ": " + strings.Join(ofBackend, ", ")
}

// Merge returns the parameters of defaults overridden key by key by m (m wins).
func (m BackendParams) Merge(defaults BackendParams) BackendParams {
	out := maps.Clone(defaults)
	if out == nil {
		out = BackendParams{}
	}
	maps.Copy(out, m)
	return out
}

// String writes the parameters sorted by key, in flow style: {tensorrt.precision: fp16}.
func (m BackendParams) String() string {
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := yamlString(m[k])
		if _, err := strconv.Atoi(m[k]); err == nil {
			v = m[k] // a number stays one
		}
		parts = append(parts, k+": "+v)
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// nestParams turns a layer's value of a backend parameter map into the form the layers merge
// key by key: {backend: {name: value}}. "tensorrt.precision: fp16" and
// "tensorrt: {precision: fp16}" both become the latter; what has neither shape is kept for the
// decoder to report.
func nestParams(v any) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	for k, e := range m {
		b, name, dotted := strings.Cut(k, ".")
		if !dotted {
			if sub, isMap := e.(map[string]any); isMap {
				dst, _ := out[k].(map[string]any)
				if dst == nil {
					dst = map[string]any{}
					out[k] = dst
				}
				maps.Copy(dst, sub)
			} else {
				out[k] = e
			}
			continue
		}
		dst, _ := out[b].(map[string]any)
		if dst == nil {
			if _, taken := out[b]; taken {
				out[k] = e
				continue
			}
			dst = map[string]any{}
			out[b] = dst
		}
		dst[name] = e
	}
	return out
}

// parseParams reads the comma-separated key=value form of the environment and flags.
func parseParams(s string) (map[string]any, error) {
	out := map[string]any{}
	for _, kv := range strings.Split(s, ",") {
		if kv = strings.TrimSpace(kv); kv == "" {
			continue
		}
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("%q is not key=value", kv)
		}
		out[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return nestParams(out).(map[string]any), nil
}
