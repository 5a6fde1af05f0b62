package artifacts

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/policyd/policyd/api/inference"
)

// A Triton model repository is SRC/<model>/config.pbtxt (optional) and SRC/<model>/<N>/model.onnx
// for integer versions N. ScanTriton reads one into TritonModels, mapping each config.pbtxt
// (parsed with the protobuf text format into Triton's own inference.ModelConfig) onto policyd's
// settings and listing what it cannot carry over; policyctl artifacts import-triton stores the
// versions as N.0.0 and writes the config.

// TritonModel is one model folder of a Triton repository.
type TritonModel struct {
	Name string
	// Config is the parsed config.pbtxt; nil when the folder has none.
	Config *inference.ModelConfig
	// Versions are the importable versions, lowest first.
	Versions []TritonVersion
	// Settings are the policyd settings the config maps to.
	Settings TritonSettings
	// NotCarried lists, one line each, what the import cannot carry over (a config field
	// policyd has no equivalent of, a version folder skipped), never dropped silently.
	NotCarried []string
	// Err, when set, says why the model cannot be imported at all; the others still are.
	Err error
}

// TritonVersion is an integer version folder N with its ONNX file.
type TritonVersion struct {
	N       uint64
	Version string // "N.0.0"
	Model   string // path of the ONNX file
}

// TritonControl is one mapped sequence control input (config's models[].sequence.controls).
type TritonControl struct {
	Input, Kind, DataType string
	False, True           float64
}

// TritonSettings are the policyd settings of one model (config keys in comments); zero
// values are not set.
type TritonSettings struct {
	Version              string        // models[].version: the version policy as a constraint
	Instances            int           // models[].instances: the instance groups' counts
	Backends             []string      // models[].backends: [cpu] for KIND_CPU instance groups
	Devices              []string      // models[].devices: the instance groups' gpus
	MaxBatchSize         int           // models[].batching.max_batch_size
	MaxQueueDelay        time.Duration // models[].batching.max_queue_delay
	PreferredBatchSizes  []int         // models[].batching.preferred_batch_sizes
	PriorityLevels       int           // models[].batching.priority_levels
	DefaultPriorityLevel int           // models[].batching.default_priority_level
	QueueTimeout         time.Duration // limits.queue_timeout (server-wide)
	QueueLen             int           // limits.queue_len (server-wide)
	Sequence             bool          // sequence_batching is set
	IdleTimeout          time.Duration // models[].sequence.idle_timeout
	MaxSequences         int           // models[].sequence.max_sequences
	States               []string      // models[].sequence.states: "input:output"
	Controls             []TritonControl
}

// ParseTritonConfig reads a config.pbtxt with the protobuf text format into Triton's
// ModelConfig; an error names the file and the line:col of the problem.
func ParseTritonConfig(path string) (*inference.ModelConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cfg := &inference.ModelConfig{}
	if err := prototext.Unmarshal(b, cfg); err != nil {
		// prototext says "proto: (line L:C): ..."; keep the position, drop the prefix.
		msg := strings.TrimPrefix(strings.TrimPrefix(err.Error(), "proto:"), "\u00a0")
		return nil, fmt.Errorf("%s: %s", path, strings.TrimSpace(msg))
	}
	return cfg, nil
}

// ScanTriton reads the Triton repository src: every folder is a model. A model that cannot be
// imported (a config.pbtxt that does not parse, a platform other than onnxruntime_onnx, no
// importable version) has Err set; the others are returned importable.
func ScanTriton(src string) ([]TritonModel, error) {
	entries, err := os.ReadDir(src)
	if err != nil {
		return nil, fmt.Errorf("triton repository: %w", err)
	}
	var out []TritonModel
	for _, e := range entries {
		if !e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		out = append(out, scanTritonModel(filepath.Join(src, e.Name()), e.Name()))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("triton repository %s: no model folders", src)
	}
	return out, nil
}

func scanTritonModel(dir, name string) TritonModel {
	m := TritonModel{Name: name}
	if err := ValidateName(name); err != nil {
		m.Err = err
		return m
	}
	cfgPath := filepath.Join(dir, "config.pbtxt")
	if _, err := os.Stat(cfgPath); err == nil {
		if m.Config, err = ParseTritonConfig(cfgPath); err != nil {
			m.Err = err
			return m
		}
		if m.Config.Name != "" && m.Config.Name != name {
			m.Err = fmt.Errorf("%s: name %q differs from the folder name %q", cfgPath, m.Config.Name, name)
			return m
		}
		if p, b := m.Config.Platform, m.Config.Backend; p != "" && p != "onnxruntime_onnx" || b != "" && b != "onnxruntime" {
			m.Err = fmt.Errorf("platform %q backend %q: only ONNX models (platform onnxruntime_onnx, backend onnxruntime) can be imported", p, b)
			return m
		}
	}
	file := "model.onnx"
	if m.Config != nil && m.Config.DefaultModelFilename != "" {
		file = m.Config.DefaultModelFilename
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		m.Err = err
		return m
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		n, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || (len(e.Name()) > 1 && e.Name()[0] == '0') {
			m.NotCarried = append(m.NotCarried, fmt.Sprintf("folder %s: not an integer version; skipped", e.Name()))
			continue
		}
		p := filepath.Join(dir, e.Name(), file)
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			m.NotCarried = append(m.NotCarried, fmt.Sprintf("version %s: no %s; skipped", e.Name(), file))
			continue
		}
		m.Versions = append(m.Versions, TritonVersion{N: n, Version: fmt.Sprintf("%d.0.0", n), Model: p})
	}
	sort.Slice(m.Versions, func(i, j int) bool { return m.Versions[i].N < m.Versions[j].N })
	if len(m.Versions) == 0 {
		m.Err = fmt.Errorf("no version folder <N>/%s", file)
		return m
	}
	if m.Config != nil {
		m.mapConfig()
	} else {
		m.Settings.Version = latestVersions(m.Versions, 1) // Triton's default policy: latest 1
	}
	return m
}

// latestVersions is the constraint of Triton's version policy latest{num_versions: n}.
func latestVersions(vs []TritonVersion, n int) string {
	if n <= 0 || n >= len(vs) {
		return ""
	}
	return ">=" + vs[len(vs)-n].Version
}

// tritonHandled are the config fields the import carries over (or that say what policyd does
// anyway), by path of proto field names; a field set outside them is listed as not carried.
var tritonHandled = map[string]bool{
	"name": true, "platform": true, "backend": true, "default_model_filename": true, "max_batch_size": true,
	"version_policy.latest": true, "version_policy.latest.num_versions": true, "dynamic_batching": true,
	"sequence_batching": true, "sequence_batching.oldest": true, "version_policy.all": true, "version_policy.specific.versions": true,
	"input.name": true, "input.data_type": true, "input.dims": true,
	"output.name": true, "output.data_type": true, "output.dims": true,
	"instance_group.name": true, "instance_group.count": true, "instance_group.kind": true, "instance_group.gpus": true,
	"dynamic_batching.preferred_batch_size": true, "dynamic_batching.max_queue_delay_microseconds": true,
	"dynamic_batching.priority_levels": true, "dynamic_batching.default_priority_level": true,
	"dynamic_batching.default_queue_policy.default_timeout_microseconds": true,
	"dynamic_batching.default_queue_policy.max_queue_size":               true,
	"dynamic_batching.default_queue_policy.allow_timeout_override":       true,
	"sequence_batching.max_sequence_idle_microseconds":                   true,
	"sequence_batching.direct":                                           true,
	"sequence_batching.oldest.max_candidate_sequences":                   true,
	"sequence_batching.oldest.preferred_batch_size":                      true,
	"sequence_batching.oldest.max_queue_delay_microseconds":              true,
	"sequence_batching.control_input.name":                               true,
	"sequence_batching.control_input.control.kind":                       true,
	"sequence_batching.control_input.control.int32_false_true":           true,
	"sequence_batching.control_input.control.fp32_false_true":            true,
	"sequence_batching.control_input.control.bool_false_true":            true,
	"sequence_batching.control_input.control.data_type":                  true,
	"sequence_batching.state.input_name":                                 true,
	"sequence_batching.state.output_name":                                true,
	"sequence_batching.state.data_type":                                  true,
	"sequence_batching.state.dims":                                       true,
	"sequence_batching.state.initial_state.zero_data":                    true,
	"sequence_batching.state.initial_state.data_type":                    true,
	"sequence_batching.state.initial_state.dims":                         true,
	"sequence_batching.state.initial_state.name":                         true,
}

// tritonWhy says why a field is not carried, by the first segments of its path.
var tritonWhy = map[string]string{
	"optimization":                                         "policyd's backends optimize on their own (TensorRT: models[].backends: [tensorrt] and backend_parameters)",
	"optimization.execution_accelerators":                  "TensorRT/OpenVINO accelerators of onnxruntime: use models[].backends: [tensorrt] and backend_parameters",
	"model_warmup":                                         "policyd warms every version up itself at load",
	"dynamic_batching.preserve_ordering":                   "policyd answers each request as its batch finishes",
	"dynamic_batching.priority_queue_policy":               "policyd's priority levels share the queue settings",
	"dynamic_batching.default_queue_policy.timeout_action": "policyd rejects a request that times out in the queue (REJECT)",
	"sequence_batching.state.initial_state":                "policyd starts every state at zeros",
	"sequence_batching.iterative_sequence":                 "no policyd equivalent",
	"parameters":                                           "no policyd equivalent",
	"response_cache":                                       "policyd has no response cache",
}

// mapConfig maps m.Config onto m.Settings and lists what it cannot carry.
func (m *TritonModel) mapConfig() {
	c, s := m.Config, &m.Settings
	note := func(format string, a ...any) { m.NotCarried = append(m.NotCarried, fmt.Sprintf(format, a...)) }
	var leftovers []string
	walkSet(c.ProtoReflect(), "", func(path string) {
		if !tritonHandled[path] && !slices.Contains(leftovers, path) {
			leftovers = append(leftovers, path)
		}
	})
	for _, p := range leftovers {
		why := "no policyd equivalent"
		for q := p; q != ""; q = parentPath(q) {
			if w, ok := tritonWhy[q]; ok {
				why = w
				break
			}
		}
		note("%s: not carried over (%s)", p, why)
	}

	// version policy → a version constraint over the imported versions
	switch vp := c.GetVersionPolicy().GetPolicyChoice().(type) {
	case *inference.ModelVersionPolicy_All_:
		s.Version = ""
	case *inference.ModelVersionPolicy_Specific_:
		var parts []string
		for _, n := range vp.Specific.Versions {
			parts = append(parts, fmt.Sprintf("%d.0.0", n))
		}
		s.Version = strings.Join(parts, " || ")
	case *inference.ModelVersionPolicy_Latest_:
		s.Version = latestVersions(m.Versions, int(vp.Latest.NumVersions))
	default:
		s.Version = latestVersions(m.Versions, 1)
	}

	if c.MaxBatchSize > 0 {
		s.MaxBatchSize = int(c.MaxBatchSize)
	}
	for _, g := range c.InstanceGroup {
		s.Instances += int(max(g.Count, 1))
		switch g.Kind {
		case inference.ModelInstanceGroup_KIND_CPU:
			if !slices.Contains(s.Backends, "cpu") {
				s.Backends = append(s.Backends, "cpu")
			}
		case inference.ModelInstanceGroup_KIND_GPU, inference.ModelInstanceGroup_KIND_AUTO:
			for _, gpu := range g.Gpus {
				if d := strconv.Itoa(int(gpu)); !slices.Contains(s.Devices, d) {
					s.Devices = append(s.Devices, d)
				}
			}
		default:
			note("instance_group %q: kind %s not carried over (policyd runs on cpu or GPUs)", g.Name, g.Kind)
		}
	}
	if len(c.InstanceGroup) > 1 {
		note("instance_group: %d groups merged into instances: %d (policyd has one instance count per model, per GPU on a GPU backend)", len(c.InstanceGroup), s.Instances)
	}
	if len(s.Backends) > 0 && len(s.Devices) > 0 {
		note("instance_group: both KIND_CPU and GPU groups; backends: [cpu] serves on the CPU only")
	}

	if d := c.GetDynamicBatching(); d != nil {
		s.MaxQueueDelay = time.Duration(d.MaxQueueDelayMicroseconds) * time.Microsecond
		for _, n := range d.PreferredBatchSize {
			s.PreferredBatchSizes = append(s.PreferredBatchSizes, int(n))
		}
		if d.PriorityLevels > 16 {
			note("dynamic_batching.priority_levels %d: not carried over (policyd has at most 16)", d.PriorityLevels)
		} else {
			s.PriorityLevels, s.DefaultPriorityLevel = int(d.PriorityLevels), int(d.DefaultPriorityLevel)
		}
		if q := d.DefaultQueuePolicy; q != nil {
			s.QueueTimeout = time.Duration(q.DefaultTimeoutMicroseconds) * time.Microsecond
			s.QueueLen = int(q.MaxQueueSize)
		}
	} else if c.MaxBatchSize > 0 && c.GetSequenceBatching() == nil {
		note("dynamic_batching: not set, so Triton runs each request alone; policyd's batcher joins requests when batching.enabled (the default)")
	}

	if sb := c.GetSequenceBatching(); sb != nil {
		s.Sequence = true
		s.IdleTimeout = time.Duration(sb.MaxSequenceIdleMicroseconds) * time.Microsecond
		if o := sb.GetOldest(); o != nil {
			s.MaxSequences = int(o.MaxCandidateSequences)
			s.MaxQueueDelay = time.Duration(o.MaxQueueDelayMicroseconds) * time.Microsecond
			for _, n := range o.PreferredBatchSize {
				s.PreferredBatchSizes = append(s.PreferredBatchSizes, int(n))
			}
		}
		for _, st := range sb.State {
			s.States = append(s.States, st.InputName+":"+st.OutputName)
			for _, is := range st.InitialState {
				if !is.GetZeroData() {
					note("sequence_batching.state %q: initial_state from a data file not carried over (policyd starts at zeros)", st.InputName)
				}
			}
		}
		for _, ci := range sb.ControlInput {
			for _, ctl := range ci.Control {
				tc, err := tritonControl(ci.Name, ctl)
				if err != nil {
					note("sequence_batching.control_input %q: %v; not carried over", ci.Name, err)
					continue
				}
				s.Controls = append(s.Controls, tc)
			}
		}
		if len(s.States) == 0 && len(s.Controls) == 0 {
			s.Sequence = false
			note("sequence_batching: neither a state nor a control input carried over; policyd keeps no sequences for this model")
		}
	}
}

// tritonControl maps one Triton control onto models[].sequence.controls.
func tritonControl(input string, c *inference.ModelSequenceBatching_Control) (TritonControl, error) {
	t := TritonControl{Input: input}
	switch c.Kind {
	case inference.ModelSequenceBatching_Control_CONTROL_SEQUENCE_START:
		t.Kind = "start"
	case inference.ModelSequenceBatching_Control_CONTROL_SEQUENCE_END:
		t.Kind = "end"
	case inference.ModelSequenceBatching_Control_CONTROL_SEQUENCE_READY:
		t.Kind = "ready"
	case inference.ModelSequenceBatching_Control_CONTROL_SEQUENCE_CORRID:
		t.Kind = "corrid"
		switch c.DataType {
		case inference.DataType_TYPE_UINT64:
			t.DataType = "UINT64"
		case inference.DataType_TYPE_INT64:
			t.DataType = "INT64"
		case inference.DataType_TYPE_UINT32:
			t.DataType = "UINT32"
		case inference.DataType_TYPE_INT32:
			t.DataType = "INT32"
		default:
			return t, fmt.Errorf("CORRID of %s (policyd's CORRID is INT32, INT64, UINT32 or UINT64; string sequence IDs are not filled)", c.DataType)
		}
		return t, nil
	default:
		return t, fmt.Errorf("kind %s", c.Kind)
	}
	switch {
	case len(c.Int32FalseTrue) == 2:
		t.DataType, t.False, t.True = "INT32", float64(c.Int32FalseTrue[0]), float64(c.Int32FalseTrue[1])
	case len(c.Fp32FalseTrue) == 2:
		t.DataType, t.False, t.True = "FP32", float64(c.Fp32FalseTrue[0]), float64(c.Fp32FalseTrue[1])
	case len(c.BoolFalseTrue) == 2:
		t.DataType, t.False, t.True = "BOOL", b2f(c.BoolFalseTrue[0]), b2f(c.BoolFalseTrue[1])
	default:
		return t, errors.New("no int32_false_true, fp32_false_true or bool_false_true with two values")
	}
	return t, nil
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func parentPath(p string) string {
	i := strings.LastIndexByte(p, '.')
	if i < 0 {
		return ""
	}
	return p[:i]
}

// walkSet calls fn with the path (proto field names joined by '.') of every field set in m
// that holds no message itself (a scalar, a list of scalars, a map, an empty message).
func walkSet(m protoreflect.Message, prefix string, fn func(path string)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		p := string(fd.Name())
		if prefix != "" {
			p = prefix + "." + p
		}
		switch {
		case fd.IsMap() || fd.Message() == nil:
			fn(p)
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				walkMessage(l.Get(i).Message(), p, fn)
			}
		default:
			walkMessage(v.Message(), p, fn)
		}
		return true
	})
}

func walkMessage(m protoreflect.Message, p string, fn func(string)) {
	empty := true
	m.Range(func(protoreflect.FieldDescriptor, protoreflect.Value) bool { empty = false; return false })
	if empty {
		fn(p)
		return
	}
	walkSet(m, p, fn)
}
