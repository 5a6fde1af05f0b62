package config

import (
	"cmp"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/policyd/policyd/artifacts"
)

// Problem is one thing wrong with a config: the key path it is about ("models[2].instances",
// "" for a whole file), what is wrong and what was expected, and the layer that set the value
// when Load knows it.
type Problem struct {
	Key    string
	Msg    string
	Source string // "file:policyd.yaml", "env:POLICYD_X", …; "" or "default" when unknown
}

func (p Problem) String() string {
	s := p.Msg
	if p.Key != "" {
		s = p.Key + ": " + p.Msg
	}
	if p.Source != "" && p.Source != "default" {
		s += " (" + p.Source + ")"
	}
	return s
}

// ValidationError lists every problem of a config, in the order the layers and keys come.
type ValidationError struct {
	Problems []Problem
}

// Error writes one problem a line: "key.path: message (source)".
func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

type checker struct{ probs []Problem }

func (c *checker) fail(key, format string, args ...any) {
	c.probs = append(c.probs, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

// Validate checks every value of c — ranges, enums, sizes, files and folders that must
// exist, and the rules across keys — and returns a *ValidationError listing every problem,
// or nil. Relative paths are taken from the current folder (Load has already made those of
// a config file relative to its folder).
func (c *Config) Validate() error {
	ch := &checker{}
	walkValues(rootNode(), reflect.ValueOf(c).Elem(), "", false, ch.field)

	// rules the tags do not say
	if _, port, err := net.SplitHostPort(c.Server.Addr); err != nil || !validPort(port) {
		ch.fail("server.addr", "must be HOST:PORT like 127.0.0.1:8000 or :8000, got %q", c.Server.Addr)
	}
	if a := c.Server.GRPCAddr; GRPCEnabled(a) {
		if _, port, err := net.SplitHostPort(a); err != nil || !validPort(port) {
			ch.fail("server.grpc_addr", `must be HOST:PORT like 127.0.0.1:8001 or :8001, or "off", got %q`, a)
		}
	}
	if n := c.Server.CompressMin; (n != 0 && n < 128) || n > 64*MiB {
		ch.fail("server.compress_min_bytes", "must be 0 (no response compression) or at least 128 bytes (a smaller body does not shrink) and at most 64MiB, got %d", n)
	}
	repoOK := false
	if c.Repository.Path != "" {
		if fi, err := os.Stat(c.Repository.Path); err == nil && fi.IsDir() {
			repoOK = true
		}
	}
	if c.Tracing.Enabled && c.Tracing.Endpoint == "" {
		ch.fail("tracing.endpoint", "is required when tracing.enabled is true: the OTLP/HTTP receiver's URL, e.g. http://127.0.0.1:4318")
	}
	if b := c.Batching; b.DefaultPriorityLevel > max(b.PriorityLevels, 1) {
		ch.fail("batching.default_priority_level", "must be at most batching.priority_levels (%d), got %d", b.PriorityLevels, b.DefaultPriorityLevel)
	}
	first := map[string]int{}
	for i, m := range c.Models {
		p := fmt.Sprintf("models[%d]", i)
		if m.Name != "" && artifacts.ValidateName(m.Name) != nil {
			ch.fail(p+".name", "must be a folder name of letters, digits, '.', '_' and '-', got %q", m.Name)
		} else if m.Name != "" {
			if j, dup := first[m.Name]; dup {
				if o := c.Models[j]; o.Version != m.Version && o.Version != "" && m.Version != "" {
					ch.fail(p+".version", "version set twice for model %q: %q here, %q at models[%d]; list a model once", m.Name, m.Version, o.Version, j)
				} else {
					ch.fail(p+".name", "duplicate model %q: also models[%d]; list a model once", m.Name, j)
				}
			} else {
				first[m.Name] = i
				if repoOK {
					if fi, err := os.Stat(filepath.Join(c.Repository.Path, m.Name)); err != nil || !fi.IsDir() {
						ch.fail(p+".name", "no model %q in the repository %s", m.Name, c.Repository.Path)
					}
				}
			}
		}
		canonical, err := artifacts.ParseSelector(m.Version)
		exact := canonical != ""
		if err != nil {
			ch.fail(p+".version", "must be empty (every version), an exact version like 1.2.3 or v1.2.3, or a constraint like ^1.2, ~1.2.3 or \">=1.0 <2\", got %q", m.Version)
		}
		if sq := m.Sequence; len(sq.States) == 0 && len(sq.Controls) == 0 && (sq.IdleTimeout != 0 || sq.MaxSequences != 0) {
			ch.fail(p+".sequence.states", "empty, but the sequence section is set: list at least one \"input:output\" state pair or a control input")
		}
		validateControls(ch, p+".sequence.controls", m.Sequence)
		validateTraffic(ch, p+".traffic", m.Traffic)
		for j, st := range m.Sequence.States {
			if _, ok := (ModelSequence{States: []string{st}}).StatePairs(); !ok {
				ch.fail(fmt.Sprintf("%s.sequence.states[%d]", p, j), "must be \"input:output\" (e.g. recurrent_in:recurrent_out), got %q", st)
			}
		}
		validateFallback(ch, p+".deadline_fallback", m.Name, m.DeadlineFallback)
		levels := cmp.Or(m.Batching.PriorityLevels, c.Batching.PriorityLevels)
		if d := cmp.Or(m.Batching.DefaultPriorityLevel, c.Batching.DefaultPriorityLevel); d > max(levels, 1) {
			ch.fail(p+".batching.default_priority_level", "must be at most the model's priority levels (%d), got %d", levels, d)
		}
		if len(m.Devices) > 1 && slices.Contains(m.Devices, "all") {
			ch.fail(p+".devices", "\"all\" selects every GPU: list it alone or list GPU indexes, got %q", m.Devices)
		}
		if m.Digest != "" && !exact {
			ch.fail(p+".digest", "a digest pins one version: set models[%d].version to an exact version like 1.2.3, not %q", i, m.Version)
		}
	}
	if f := c.Admin.TokenFile; f != "" {
		if fi, err := os.Stat(f); err == nil && !fi.IsDir() {
			if _, err := c.Admin.Token(); err != nil {
				ch.fail("admin.token_file", "the token file %s is empty", f)
			}
		}
	}
	if len(ch.probs) == 0 {
		return nil
	}
	// report in key order, whichever check found the problem
	order := map[string]int{}
	walkValues(rootNode(), reflect.ValueOf(c).Elem(), "", false, func(path string, n *node, v reflect.Value) {
		order[path] = len(order)
	})
	rank := func(key string) int {
		for k := key; k != ""; k = parentKey(k) {
			if i, ok := order[k]; ok {
				return i
			}
		}
		return len(order)
	}
	slices.SortStableFunc(ch.probs, func(a, b Problem) int { return rank(a.Key) - rank(b.Key) })
	return &ValidationError{Problems: ch.probs}
}

// parentKey drops the last segment of a key path: models[1].name → models[1] → models.
func parentKey(k string) string {
	i := strings.LastIndexAny(k, ".[")
	if i < 0 {
		return ""
	}
	return k[:i]
}

func validPort(p string) bool {
	n, err := strconv.Atoi(p)
	return err == nil && n >= 0 && n <= 65535
}

// field checks what the tags of one value say: required, enum, min, max, unique, exists.
func (ch *checker) field(path string, n *node, v reflect.Value) {
	switch n.kind {
	case kString:
		s := v.String()
		if s == "" {
			if n.required {
				ch.fail(path, "is required")
			}
			return
		}
		if len(n.enum) > 0 && !slices.Contains(n.enum, s) {
			ch.fail(path, "must be one of %s, got %q", strings.Join(n.enum, ", "), s)
		}
		if n.pattern != nil && !n.pattern.MatchString(s) {
			ch.fail(path, "must match %s, got %q", n.pattern, s)
		}
		ch.exists(path, n.exists, s)
	case kInt:
		ch.bounds(path, n, float64(v.Int()), strconv.FormatInt(v.Int(), 10))
	case kUint:
		ch.bounds(path, n, float64(v.Uint()), strconv.FormatUint(v.Uint(), 10))
	case kFloat:
		ch.bounds(path, n, v.Float(), strconv.FormatFloat(v.Float(), 'g', -1, 64))
	case kSize:
		ch.bounds(path, n, float64(v.Int()), Size(v.Int()).String())
	case kDuration:
		d := time.Duration(v.Int())
		if n.min != "" {
			if lo, _ := time.ParseDuration(n.min); d < lo {
				ch.fail(path, "must be ≥ %s, got %s", n.min, formatDuration(d))
			}
		}
	case kParams:
		ch.checkParams(path, v.Interface().(BackendParams))
	case kList:
		if n.min != "" {
			if lo, _ := strconv.Atoi(n.min); v.Len() < lo {
				ch.fail(path, "must list at least %d of %s", lo, strings.Join(n.enum, ", "))
			}
		}
		seen := map[string]bool{}
		for i := range v.Len() {
			if n.floats {
				continue // any number; the model's datatype is checked at load
			}
			s := v.Index(i).String()
			if n.ints {
				x := v.Index(i).Int()
				s = strconv.FormatInt(x, 10)
				if x < 1 {
					ch.fail(path, "must list integers ≥ 1, got %d", x)
					continue
				}
			}
			if len(n.enum) > 0 && !slices.Contains(n.enum, s) {
				ch.fail(path, "must be one of %s, got %q", strings.Join(n.enum, ", "), s)
			} else if n.pattern != nil && !n.pattern.MatchString(s) {
				ch.fail(fmt.Sprintf("%s[%d]", path, i), "must match %s, got %q", n.pattern, s)
			} else if n.unique && seen[s] {
				ch.fail(path, "lists %q twice", s)
			}
			seen[s] = true
			ch.exists(fmt.Sprintf("%s[%d]", path, i), n.exists, s)
		}
	}
}

// exists checks that the path s names what kind ("dir", "file") says; "" checks nothing.
func (ch *checker) exists(path, kind, s string) {
	switch kind {
	case "dir":
		if fi, err := os.Stat(s); err != nil {
			ch.fail(path, "folder %s: %v", s, unwrapPathError(err))
		} else if !fi.IsDir() {
			ch.fail(path, "%s is not a folder", s)
		}
	case "file":
		if fi, err := os.Stat(s); err != nil {
			ch.fail(path, "file %s: %v", s, unwrapPathError(err))
		} else if fi.IsDir() {
			ch.fail(path, "%s is a folder, not a file", s)
		}
	}
}

func (ch *checker) bounds(path string, n *node, x float64, got string) {
	if n.min != "" {
		if lo, err := strconv.ParseFloat(n.min, 64); err == nil && x < lo {
			ch.fail(path, "must be ≥ %s, got %s", n.min, got)
			return
		}
	}
	if n.max != "" {
		if hi, err := strconv.ParseFloat(n.max, 64); err == nil && x > hi {
			ch.fail(path, "must be ≤ %s, got %s", n.max, got)
		}
	}
}

func unwrapPathError(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// GRPCEnabled reports whether a server.grpc_addr value turns the gRPC listener on: "" and "off"
// turn it off.
func GRPCEnabled(addr string) bool { return addr != "" && addr != "off" }

// validateFallback checks models[i].deadline_fallback (model names it) beyond its tags: what its
// kind needs, and no fallback version of the model itself without another version.
func validateFallback(ch *checker, p, model string, f ModelFallback) {
	switch f.Kind {
	case "constant":
		if len(f.Constant) == 0 {
			ch.fail(p+".constant", "kind constant needs the constant action: list each output with its values")
		}
	case "version":
		name, version, _ := strings.Cut(f.Version, "@")
		switch {
		case f.Version == "":
			ch.fail(p+".version", "kind version needs the fallback version: model or model@version")
		case name == model && version == "":
			ch.fail(p+".version", "%q is the model itself: name another model, or a version (model@version)", f.Version)
		}
	}
	if f.Version != "" && f.Kind != "version" {
		ch.fail(p+".version", "set, but kind is %s: it is used by kind version only", f.Kind)
	}
	for j, c := range f.Constant {
		if len(c.Values) == 0 {
			ch.fail(fmt.Sprintf("%s.constant[%d].values", p, j), "empty: list the values of one row of output %q", c.Output)
		}
		for i := range j {
			if f.Constant[i].Output == c.Output {
				ch.fail(fmt.Sprintf("%s.constant[%d].output", p, j), "output %q listed twice", c.Output)
			}
		}
	}
}
