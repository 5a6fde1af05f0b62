package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/knadh/koanf/parsers/dotenv"
	"github.com/knadh/koanf/parsers/json"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/providers/file"
	"github.com/knadh/koanf/v2"
)

// EnvPrefix starts the name of every environment variable that sets a key.
const EnvPrefix = "POLICYD_"

// ProfileEnv names the environment variable (or .env line) that picks the profile when
// LoadOptions.Profile is empty. It is not a config key.
const ProfileEnv = "POLICYD_PROFILE"

// NoDotEnv, as LoadOptions.DotEnv, reads no .env file.
const NoDotEnv = "-"

// LoadOptions says where Load finds the layers.
type LoadOptions struct {
	// File is the config file, YAML (.yaml, .yml) or JSON (.json); empty: none.
	File string
	// Profile names the overlay file <base>.<profile>.<ext> beside File (policyd.yaml and
	// prod: policyd.prod.yaml); empty: $POLICYD_PROFILE, then POLICYD_PROFILE of the .env
	// file, else no overlay.
	Profile string
	// Env is the environment, as os.Environ returns it; nil: os.Environ(). A non-nil empty
	// slice reads no environment.
	Env []string
	// Flags holds the values of the flags set explicitly on the command line, keyed by koanf
	// key ("server.addr", "models.0.instances"); values are strings (as flag.Value.String
	// gives them) or typed values. BindFlags builds it.
	Flags map[string]any
	// FlagNames maps a key of Flags to the flag's name for Sources, when it is not
	// FlagName(key).
	FlagNames map[string]string
	// DotEnv is the .env file; empty: ".env" in the current folder. A missing file is no
	// error; NoDotEnv reads none.
	DotEnv string
}

// Sources says which layer set each value of a loaded Config: "default", "file:PATH",
// "profile:PATH", "dotenv:PATH", "env:POLICYD_X" or "flag:--x". Keys are the leaf paths that
// Print shows: "server.addr", "models[0].backends", and "models" for the list itself.
type Sources struct {
	m    map[string]string
	keys []string
}

// Of returns the source of key, "default" when no layer set it.
func (s *Sources) Of(key string) string {
	if s == nil {
		return "default"
	}
	if v, ok := s.m[key]; ok {
		return v
	}
	return "default"
}

// Keys returns every leaf key of the config, in the order Print shows them.
func (s *Sources) Keys() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.keys)
}

// Map returns a copy of the sources of every leaf key.
func (s *Sources) Map() map[string]string {
	if s == nil {
		return map[string]string{}
	}
	out := make(map[string]string, len(s.keys))
	for _, k := range s.keys {
		out[k] = s.Of(k)
	}
	return out
}

// loader merges the layers into one koanf instance, recording problems and sources.
type loader struct {
	root  *node
	k     *koanf.Koanf
	probs []Problem
	src   map[string]string // display path → the layer that set it last
}

func (l *loader) fail(key, source, format string, args ...any) {
	msg := strings.Join(strings.Fields(fmt.Sprintf(format, args...)), " ") // one line: parsers' errors may have several
	l.probs = append(l.probs, Problem{Key: key, Msg: msg, Source: source})
}

// Load reads the layers, lowest first — defaults, the file, the profile overlay, the .env
// file, the environment, the flags — merges them, decodes and validates the result. The
// error, when not nil, is a *ValidationError listing every problem of every layer at once;
// Config and Sources are then still returned, for display only (print-config), never to run.
func Load(opts LoadOptions) (*Config, *Sources, error) {
	l := &loader{root: rootNode(), k: koanf.New("."), src: map[string]string{}}
	environ := opts.Env
	if environ == nil {
		environ = os.Environ()
	}

	// defaults
	if err := l.k.Load(confmap.Provider(encodeTree(l.root, reflect.ValueOf(Defaults()).Elem()), ""), nil); err != nil {
		panic(err) // a map provider does not fail
	}

	// the .env file is read first: it may name the profile
	dotPath := opts.DotEnv
	if dotPath == "" {
		dotPath = ".env"
	}
	var dot map[string]any
	if dotPath != NoDotEnv {
		b, err := os.ReadFile(dotPath)
		switch {
		case errors.Is(err, fs.ErrNotExist) && opts.DotEnv == "":
		case err != nil:
			l.fail("", "", "dotenv file: %v", err)
		default:
			if dot, err = dotenv.Parser().Unmarshal(b); err != nil {
				l.fail("", "", "dotenv file %s: %v", dotPath, err)
				dot = nil
			}
		}
	}

	profile := profileOf(opts, environ, dot)

	if opts.File != "" {
		l.loadFile(opts.File, "file:"+opts.File)
	}
	if profile != "" {
		l.loadProfile(opts.File, profile)
	}
	if dot != nil {
		label := "dotenv:" + dotPath
		l.loadKeyed(func() (koanf.Provider, koanf.Parser) {
			return file.Provider(dotPath), dotenv.ParserEnvWithValue(EnvPrefix, "", l.envTransform(func(string) string { return label }))
		})
	}
	l.loadKeyed(func() (koanf.Provider, koanf.Parser) {
		return env.Provider("", env.Opt{
			Prefix:        EnvPrefix,
			EnvironFunc:   func() []string { return environ },
			TransformFunc: l.envTransform(func(name string) string { return "env:" + name }),
		}), nil
	})
	if len(opts.Flags) > 0 {
		flat := map[string]any{}
		for k, v := range opts.Flags {
			key := normalizeKey(k)
			name := opts.FlagNames[k]
			if name == "" {
				name = FlagName(k)
			}
			flat[key] = keyed{Val: v, Label: "flag:--" + strings.TrimLeft(name, "-")}
		}
		l.loadKeyed(func() (koanf.Provider, koanf.Parser) { return confmap.Provider(flat, ""), nil })
	}

	// decode the merged tree; validate what decoded
	cfg := Defaults()
	d := &decoder{source: l.sourceOf}
	d.section(l.root, l.k.Raw(), reflect.ValueOf(cfg).Elem(), "")
	probs := append(l.probs, d.probs...)
	seen := map[string]bool{}
	for _, p := range d.probs {
		seen[p.Key] = true
	}
	unreadable := slices.ContainsFunc(l.probs, func(p Problem) bool { return p.Key == "" })
	if err := cfg.Validate(); err != nil && !unreadable { // a layer that did not read would make the rest guesswork
		var ve *ValidationError
		if !errors.As(err, &ve) {
			panic(err) // Validate returns nothing else
		}
		for _, p := range ve.Problems {
			if seen[p.Key] {
				continue // its value did not decode: one problem per key is enough
			}
			p.Source = l.sourceOf(p.Key)
			probs = append(probs, p)
		}
	}
	srcs := &Sources{m: map[string]string{}}
	walkValues(l.root, reflect.ValueOf(cfg).Elem(), "", false, func(path string, _ *node, _ reflect.Value) {
		srcs.keys = append(srcs.keys, path)
		if s, ok := l.src[path]; ok {
			srcs.m[path] = s
		}
	})
	if len(probs) > 0 {
		return cfg, srcs, &ValidationError{Problems: probs}
	}
	return cfg, srcs, nil
}

func lookupEnv(environ []string, name string) string {
	v := ""
	for _, kv := range environ {
		if k, val, ok := strings.Cut(kv, "="); ok && k == name {
			v = val // the last one wins, as in os.Getenv
		}
	}
	return v
}

// sourceOf returns the layer that set path or, for a section or table, one of its keys.
func (l *loader) sourceOf(path string) string {
	if s, ok := l.src[path]; ok {
		return s
	}
	for k, s := range l.src {
		if strings.HasPrefix(k, path+".") || strings.HasPrefix(k, path+"[") {
			return s
		}
	}
	for p := parentKey(path); p != ""; p = parentKey(p) { // a key within a map of parameters
		if s, ok := l.src[p]; ok {
			return s
		}
	}
	return "default"
}

// parserFor picks the parser by the file's extension.
func parserFor(path string) (koanf.Parser, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return yaml.Parser(), nil
	case ".json":
		return json.Parser(), nil
	}
	return nil, fmt.Errorf("%s: unknown format: the name must end in .yaml, .yml or .json", path)
}

// loadFile merges a YAML or JSON file: its lists replace the lower layers' lists whole.
func (l *loader) loadFile(path, label string) {
	pa, err := parserFor(path)
	if err != nil {
		l.fail("", "", "%v", err)
		return
	}
	lk := koanf.New(".")
	if err := lk.Load(file.Provider(path), pa); err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			l.fail("", "", "config file %s: %v", path, pe.Err)
		} else {
			l.fail("", "", "config file %s: %v", path, err)
		}
		return
	}
	raw := stripNil(lk.Raw()).(map[string]any)
	l.checkTree(l.root, raw, "", label, filepath.Dir(path))
	if err := l.k.Load(confmap.Provider(raw, ""), nil); err != nil {
		l.fail("", label, "%v", err)
	}
}

var profileName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]*$`)

// loadProfile merges the overlay <base>.<profile>.<ext> beside file; the same extension is
// tried first, then .yaml, .yml and .json.
func (l *loader) loadProfile(file, profile string) {
	if !profileName.MatchString(profile) {
		l.fail("", "", "profile %q: a profile name is letters, digits, '-' and '_'", profile)
		return
	}
	if file == "" {
		l.fail("", "", "profile %q: a profile is an overlay file beside the config file, and no config file was given", profile)
		return
	}
	tried := overlayFiles(file, profile)
	for _, p := range tried {
		if _, err := os.Stat(p); err == nil {
			l.loadFile(p, "profile:"+p)
			return
		}
	}
	l.fail("", "", "profile %q: no overlay file %s", profile, strings.Join(tried, " nor "))
}

// overlayFiles lists the overlay files of profile beside file, in the order they are looked
// for: the file's own extension first, then .yaml, .yml and .json.
func overlayFiles(file, profile string) []string {
	ext := filepath.Ext(file)
	base := strings.TrimSuffix(file, ext)
	var out []string
	for _, e := range []string{ext, ".yaml", ".yml", ".json"} {
		if p := base + "." + profile + e; !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

// profileOf picks the profile: the option, else $POLICYD_PROFILE, else the .env file's.
func profileOf(opts LoadOptions, environ []string, dot map[string]any) string {
	if opts.Profile != "" {
		return opts.Profile
	}
	if p := lookupEnv(environ, ProfileEnv); p != "" {
		return p
	}
	p, _ := dot[ProfileEnv].(string)
	return p
}

// stripNil drops keys written without a value ("addr:" in YAML): they do not set anything.
func stripNil(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			if e == nil {
				delete(x, k)
			} else {
				x[k] = stripNil(e)
			}
		}
	case []any:
		for i, e := range x {
			x[i] = stripNil(e)
		}
	}
	return v
}

// checkTree walks a file layer: reports unknown keys, makes relative paths relative to the
// file's folder, and records the layer as the source of every value it sets. A list set by
// the layer replaces the lower one whole, so the sources of the old list's values go.
func (l *loader) checkTree(n *node, m map[string]any, path, label, dir string) {
	// unknown keys first, then the known ones in struct order
	var keys []string
	for k := range m {
		if n.byKey[k] == nil {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, c := range n.children {
		if _, ok := m[c.key]; ok {
			keys = append(keys, c.key)
		}
	}
	for _, k := range keys {
		v := m[k]
		c, ok := n.byKey[k]
		p := joinPath(path, k)
		if !ok {
			l.fail(p, label, "unknown key%s", l.suggest(n, path, k))
			continue
		}
		switch c.kind {
		case kSection:
			if sub, ok := v.(map[string]any); ok {
				l.checkTree(c, sub, p, label, dir)
				continue
			}
		case kTable:
			l.dropSources(p)
			if list, ok := v.([]any); ok {
				for i, e := range list {
					if sub, ok := e.(map[string]any); ok {
						l.checkTree(c, sub, fmt.Sprintf("%s[%d]", p, i), label, dir)
					}
				}
			}
		case kParams:
			m[k] = nestParams(v) // merged key by key with the lower layers
		default:
			if s, ok := v.(string); ok && c.isPath && s != "" && !filepath.IsAbs(s) {
				m[k] = filepath.Join(dir, s)
			}
			if list, ok := v.([]any); ok && c.isPath {
				out := make([]any, len(list))
				for i, e := range list {
					out[i] = e
					if s, ok := e.(string); ok && s != "" && !filepath.IsAbs(s) {
						out[i] = filepath.Join(dir, s)
					}
				}
				m[k] = out
			}
		}
		l.src[p] = label
	}
}

func (l *loader) dropSources(p string) {
	for k := range l.src {
		if k == p || strings.HasPrefix(k, p+"[") || strings.HasPrefix(k, p+".") {
			delete(l.src, k)
		}
	}
}

// suggest returns " (did you mean X?)" for an unknown key k under section n, or "".
func (l *loader) suggest(n *node, path, k string) string {
	best, bestD := "", 3
	for _, c := range n.children {
		if d := editDistance(k, c.key); d < bestD && d <= max(1, len(k)/3) {
			best, bestD = joinPath(path, c.key), d
		}
	}
	if best == "" { // the right key in the wrong section?
		for _, p := range l.root.allPaths() {
			if strings.HasSuffix(p, "."+k) || p == k {
				best = p
				break
			}
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// keyed is one value of a keyed layer (.env, environment, flags) with its source.
type keyed struct {
	Val   any
	Label string
}

// envTransform maps POLICYD_SERVER__READ_TIMEOUT to the flat key "server.read_timeout",
// wrapping the value with its source. Variables that are not config keys (POLICYD_PROFILE,
// POLICYD_BACKEND_DIR read by libpolicyd, …) are skipped: a config variable has "__" in its
// name or starts with a section's name.
func (l *loader) envTransform(label func(name string) string) func(k, v string) (string, any) {
	return func(name, v string) (string, any) {
		rest := strings.TrimPrefix(name, EnvPrefix)
		lower := strings.ToLower(rest)
		isConfig := strings.Contains(rest, "__")
		for _, c := range l.root.children {
			if lower == c.key || strings.HasPrefix(lower, c.key+"_") {
				isConfig = true
			}
		}
		if !isConfig || name == ProfileEnv {
			return "", nil
		}
		if !strings.Contains(rest, "__") && strings.Contains(rest, "_") {
			// POLICYD_SERVER_ADDR: one underscore where two were meant
			sec, key, _ := strings.Cut(lower, "_")
			if s := l.root.byKey[sec]; s != nil && s.byKey[key] != nil {
				l.fail(sec+"."+key, label(name), "unknown key: %s is not a config variable; levels are separated by two underscores: %s",
					name, s.byKey[key].env)
				return "", nil
			}
		}
		return strings.ReplaceAll(lower, "__", "."), keyed{Val: v, Label: label(name)}
	}
}

// normalizeKey turns "models[0].instances" into "models.0.instances".
func normalizeKey(k string) string {
	k = strings.ReplaceAll(k, "[", ".")
	k = strings.ReplaceAll(k, "]", "")
	return strings.TrimPrefix(k, ".")
}

// loadKeyed merges a layer of flat keys ("models.0.instances") whose values are keyed. A key
// that indexes a list sets that element's key, merging into the list of the lower layers; an
// index one past the end appends an element. A list of strings is one comma-separated value.
func (l *loader) loadKeyed(mk func() (koanf.Provider, koanf.Parser)) {
	p, pa := mk()
	merge := func(src, dest map[string]any) error {
		keys := make([]string, 0, len(src))
		for k := range src {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, compareKeys)
		for _, k := range keys {
			kv, ok := src[k].(keyed)
			if !ok {
				continue
			}
			l.setKeyed(dest, strings.Split(k, "."), kv)
		}
		return nil
	}
	if err := l.k.Load(p, pa, koanf.WithMergeFunc(merge)); err != nil {
		l.fail("", "", "%v", err)
	}
}

// compareKeys orders flat keys segment by segment, numbers numerically, so that list
// elements are appended in order.
func compareKeys(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		ai, aerr := strconv.Atoi(as[i])
		bi, berr := strconv.Atoi(bs[i])
		if aerr == nil && berr == nil {
			return ai - bi
		}
		return strings.Compare(as[i], bs[i])
	}
	return len(as) - len(bs)
}

// setKeyed sets one flat key of a keyed layer in the merged tree dest. The key is checked
// whole first, so that a bad key changes nothing (not even an element appended to a list).
func (l *loader) setKeyed(dest map[string]any, segs []string, kv keyed) {
	if l.walkKeyed(map[string]any{}, segs, kv, true) {
		l.walkKeyed(dest, segs, kv, false)
	}
}

// walkKeyed follows segs down the tree, creating what is missing. With dry it only checks
// the key's shape (on a scratch tree) and reports whether it is good; otherwise it sets the
// value and records its source.
func (l *loader) walkKeyed(dest map[string]any, segs []string, kv keyed, dry bool) bool {
	n, cur, path := l.root, dest, ""
	fail := func(key, format string, args ...any) bool {
		l.fail(key, kv.Label, format, args...)
		return false
	}
	for i := 0; i < len(segs); i++ {
		seg := segs[i]
		c, ok := n.byKey[seg]
		if !ok {
			if n.kind == kSection || n.kind == kTable {
				return fail(joinPath(path, seg), "unknown key%s", l.suggest(n, path, seg))
			}
			return false
		}
		path = joinPath(path, seg)
		last := i == len(segs)-1
		switch c.kind {
		case kSection:
			if last {
				return fail(path, "is a section: set its keys one by one, as %s", c.children[0].env)
			}
			m, ok := cur[seg].(map[string]any)
			if !ok {
				m = map[string]any{}
				cur[seg] = m
			}
			n, cur = c, m
		case kTable:
			example := strings.Replace(c.children[0].env, "<i>", "0", 1)
			if last || i+2 >= len(segs) {
				return fail(path, "is a list of tables: set each element's keys by index, as %s", example)
			}
			idx, err := strconv.Atoi(segs[i+1])
			if err != nil || idx < 0 {
				return fail(path, "is a list of tables: %q is not an index; set each element's keys by index, as %s", segs[i+1], example)
			}
			path = fmt.Sprintf("%s[%d]", path, idx)
			i++
			if dry { // the lower layers' list is not at hand: the index is checked for real
				n, cur = c, map[string]any{}
				continue
			}
			list, _ := cur[seg].([]any)
			if idx > len(list) {
				return fail(path, "index out of range: the list has %d elements, so a new element is %s[%d]",
					len(list), strings.TrimSuffix(path, fmt.Sprintf("[%d]", idx)), len(list))
			}
			if idx == len(list) {
				list = append(list, map[string]any{})
			}
			m, ok := list[idx].(map[string]any)
			if !ok {
				m = map[string]any{}
				list[idx] = m
			}
			cur[seg] = list
			n, cur = c, m
		case kList:
			if !last {
				return fail(path, "is a list of strings: set it whole, comma-separated, as %s=%s", c.env, strings.Join(c.enum, ","))
			}
			var list []any
			switch v := kv.Val.(type) {
			case string:
				for _, e := range strings.Split(v, ",") {
					if e = strings.TrimSpace(e); e != "" {
						list = append(list, e)
					}
				}
			case []string:
				for _, e := range v {
					list = append(list, e)
				}
			case []any:
				list = v
			default:
				return fail(path, "must be a list, got %s", describe(v))
			}
			if list == nil {
				list = []any{}
			}
			if !dry {
				cur[seg] = list
				l.src[path] = kv.Label
			}
			return true
		case kParams:
			// the whole map as key=value,… (decoded, and checked, with the rest), or one
			// parameter as <backend>.<name>
			if last {
				if !dry {
					cur[seg] = kv.Val
					l.src[path] = kv.Label
				}
				return true
			}
			if len(segs)-i-1 != 2 {
				return fail(joinPath(path, strings.Join(segs[i+1:], ".")), "a backend parameter is <backend>.<name>, as %s__TENSORRT__PRECISION", c.env)
			}
			if !dry {
				m, ok := cur[seg].(map[string]any)
				if !ok {
					m = map[string]any{}
					cur[seg] = m
				}
				b, _ := m[segs[i+1]].(map[string]any)
				if b == nil {
					b = map[string]any{}
					m[segs[i+1]] = b
				}
				b[segs[i+2]] = kv.Val
				l.src[path] = kv.Label
			}
			return true
		default:
			if !last {
				return fail(path, "is a value, not a section: %s has no key %q", path, segs[i+1])
			}
			if !dry {
				cur[seg] = kv.Val
				l.src[path] = kv.Label
			}
			return true
		}
	}
	return true
}
