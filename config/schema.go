package config

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// SchemaID is the $id of the JSON Schema.
const SchemaID = "https://github.com/policyd/policyd/config/policyd.schema.json"

// Patterns of the string forms of durations and sizes, as the schema states them.
const (
	durationPattern = `^\s*(0|([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+)\s*$`
	sizePattern     = `^\s*[0-9]+(\.[0-9]+)?\s*(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$`
)

// obj is a JSON object that keeps its keys in the order they were added.
type obj []kv

type kv struct {
	k string
	v any
}

func (o obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, err
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// Schema returns the JSON Schema (draft 2020-12) of a config file, generated from the
// struct: types, enums, bounds, defaults, descriptions, and no key beyond the known ones
// (additionalProperties: false). A profile overlay follows the same schema.
func Schema() []byte {
	root := rootNode()
	s := obj{
		{"$schema", "https://json-schema.org/draft/2020-12/schema"},
		{"$id", SchemaID},
		{"title", "policyd configuration"},
		{"description", "A policyd config file (YAML or JSON) or profile overlay. Reference: docs/configuration.md."},
	}
	s = append(s, sectionSchema(root, reflect.ValueOf(Defaults()).Elem())...)
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		panic(err) // the schema is built from plain values
	}
	return append(b, '\n')
}

func sectionSchema(n *node, def reflect.Value) obj {
	props := obj{}
	var required []string
	for _, c := range n.children {
		var f reflect.Value
		if def.IsValid() {
			f = def.FieldByIndex(c.index)
		}
		props = append(props, kv{c.key, keySchema(c, f)})
		if c.required && n.kind == kTable {
			required = append(required, c.key)
		}
	}
	out := obj{{"type", "object"}, {"properties", props}, {"additionalProperties", false}}
	if len(required) > 0 {
		out = append(out, kv{"required", required})
	}
	return out
}

// keySchema states one key; def is its default, when the key has one.
func keySchema(n *node, def reflect.Value) obj {
	var s obj
	add := func(k string, v any) { s = append(s, kv{k, v}) }
	desc := n.desc
	if n.restart {
		desc += " Needs a restart to change."
	}
	switch n.kind {
	case kSection:
		s = obj{{"description", desc}}
		s = append(s, sectionSchema(n, def)...)
		return s
	case kTable:
		add("description", desc)
		add("type", "array")
		elem := obj{}
		elem = append(elem, sectionSchema(n, newElem(n.typ.Elem()))...)
		add("items", elem)
	case kList:
		add("description", desc)
		add("type", "array")
		item := obj{{"type", "string"}}
		if n.key == "devices" { // a GPU index may be written unquoted
			item = obj{{"type", []string{"string", "integer"}}}
		}
		if n.ints {
			item = obj{{"type", "integer"}, {"minimum", 1}}
		}
		if n.floats {
			item = obj{{"type", "number"}}
		}
		if len(n.enum) > 0 {
			item = append(item, kv{"enum", n.enum})
		}
		if n.pattern != nil {
			item = append(item, kv{"pattern", n.pattern.String()})
		}
		add("items", item)
		if n.min != "" {
			lo, _ := strconv.Atoi(n.min)
			add("minItems", lo)
		}
		if n.unique {
			add("uniqueItems", true)
		}
	case kString:
		add("description", desc)
		if n.key == "version" { // an integer folder name may be written unquoted
			add("type", []string{"string", "integer"})
		} else {
			add("type", "string")
		}
		if len(n.enum) > 0 {
			add("enum", n.enum)
		}
		if n.pattern != nil && n.required {
			add("pattern", n.pattern.String())
		} else if n.pattern != nil {
			add("pattern", "^$|"+n.pattern.String()) // empty: not set
		}
		if n.required {
			add("minLength", 1)
		}
	case kDuration:
		add("description", desc+" A duration: 30s, 1m30s, 250ms.")
		add("type", "string")
		add("pattern", durationPattern)
	case kSize:
		add("description", desc)
		add("type", []string{"integer", "string"})
		add("pattern", sizePattern)
		if n.min != "" {
			lo, _ := strconv.ParseInt(n.min, 10, 64)
			add("minimum", lo)
		} else {
			add("minimum", 0)
		}
	case kParams:
		add("description", desc)
		add("type", "object")
		props := obj{}
		perBackend := map[string]obj{}
		var backends []string
		for _, p := range BackendParameters {
			ps := obj{{"description", p.Desc}}
			if p.Bool {
				ps = append(ps, kv{"enum", []any{true, false, "true", "false"}})
			} else if len(p.Enum) > 0 {
				ps = append(ps, kv{"enum", p.Enum})
			} else {
				ps = append(ps, kv{"type", []string{"integer", "string"}}, kv{"minimum", p.Min}, kv{"maximum", p.Max}, kv{"pattern", `^\s*-?[0-9]+\s*$`})
			}
			props = append(props, kv{p.Key, ps})
			b, name, _ := strings.Cut(p.Key, ".")
			if _, ok := perBackend[b]; !ok {
				backends = append(backends, b)
			}
			perBackend[b] = append(perBackend[b], kv{name, ps})
		}
		for _, b := range backends {
			props = append(props, kv{b, obj{{"type", "object"}, {"properties", perBackend[b]}, {"additionalProperties", false}}})
		}
		add("properties", props)
		add("additionalProperties", false)
	case kBool:
		add("description", desc)
		add("type", "boolean")
	case kFloat:
		add("description", desc)
		add("type", "number")
		if n.min != "" {
			lo, _ := strconv.ParseFloat(n.min, 64)
			add("minimum", lo)
		}
		if n.max != "" {
			hi, _ := strconv.ParseFloat(n.max, 64)
			add("maximum", hi)
		}
	case kInt, kUint:
		add("description", desc)
		add("type", "integer")
		if n.min != "" {
			lo, _ := strconv.ParseInt(n.min, 10, 64)
			add("minimum", lo)
		} else if n.kind == kUint {
			add("minimum", 0)
		}
		if n.max != "" {
			hi, _ := strconv.ParseInt(n.max, 10, 64)
			add("maximum", hi)
		}
	}
	if def.IsValid() {
		add("default", defaultJSON(n, def))
	}
	return s
}

// defaultJSON is a default as a config file would write it.
func defaultJSON(n *node, v reflect.Value) any {
	switch n.kind {
	case kDuration:
		return formatDuration(time.Duration(v.Int()))
	case kSize:
		return Size(v.Int()).String()
	case kList:
		if n.ints {
			out := make([]int, v.Len())
			for i := range out {
				out[i] = int(v.Index(i).Int())
			}
			return out
		}
		if n.floats {
			out := make([]float64, v.Len())
			for i := range out {
				out[i] = v.Index(i).Float()
			}
			return out
		}
		out := make([]string, v.Len())
		for i := range out {
			out[i] = v.Index(i).String()
		}
		return out
	case kTable:
		return []any{}
	case kParams:
		return map[string]any{}
	case kString:
		if n.secret && !v.IsZero() {
			return Redacted
		}
		return v.String()
	}
	return v.Interface()
}
