package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"time"
)

// kind is what a key holds.
type kind int

const (
	kSection kind = iota // a struct: a mapping of keys
	kTable               // a list of structs (models)
	kList                // a list of scalars (backends)
	kString
	kDuration
	kSize
	kInt
	kUint
	kBool
	kFloat
	kParams // BackendParams: "<backend>.<name>" → value
)

// node describes one key of the config, read once by reflection from the struct and its tags.
// Every tool of the package (loading, decoding, validation, printing, diff, schema, docs)
// walks this tree, so they cannot disagree about the keys.
type node struct {
	ints     bool   // a kList of integers rather than strings
	floats   bool   // a kList of numbers rather than strings
	key      string // the koanf key of this field ("addr"); "" at the root
	path     string // display path: "server.addr", "models[].name"
	env      string // env name: "POLICYD_SERVER__ADDR", "POLICYD_MODELS__<i>__NAME"
	index    []int  // reflect field index within the parent struct
	typ      reflect.Type
	kind     kind
	desc     string
	restart  bool // reload:"restart"
	enum     []string
	min, max string
	unique   bool
	required bool
	exists   string // "dir" or "file"
	pattern  *regexp.Regexp
	isPath   bool
	isKey    bool
	secret   bool
	children []*node // sections and the element of a table
	byKey    map[string]*node
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	sizeType     = reflect.TypeFor[Size]()
	paramsType   = reflect.TypeFor[BackendParams]()
)

var rootNode = sync.OnceValue(func() *node { return buildTree(reflect.TypeFor[Config](), "", "POLICYD") })

// buildTree reads the nodes of struct type t. It panics on a field the package cannot
// handle: that is a bug of this package, caught by its tests.
func buildTree(t reflect.Type, path, env string) *node {
	n := &node{path: path, typ: t, kind: kSection, byKey: map[string]*node{}}
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("koanf")
		if key == "" || key == "-" {
			panic(fmt.Sprintf("config: field %s.%s has no koanf tag", t.Name(), f.Name))
		}
		c := &node{
			key:      key,
			path:     joinPath(path, key),
			env:      env + "__" + strings.ToUpper(key),
			index:    f.Index,
			typ:      f.Type,
			desc:     f.Tag.Get("desc"),
			min:      f.Tag.Get("min"),
			max:      f.Tag.Get("max"),
			unique:   f.Tag.Get("unique") == "true",
			required: f.Tag.Get("required") == "true",
			exists:   f.Tag.Get("exists"),
			isPath:   f.Tag.Get("path") == "true",
			isKey:    f.Tag.Get("key") == "true",
			secret:   f.Tag.Get("secret") == "true",
		}
		if env == "POLICYD" {
			c.env = "POLICYD_" + strings.ToUpper(key)
		}
		if e := f.Tag.Get("enum"); e != "" {
			c.enum = strings.Split(e, ",")
		}
		if p := f.Tag.Get("pattern"); p != "" {
			c.pattern = regexp.MustCompile(p)
		}
		if c.desc == "" {
			panic(fmt.Sprintf("config: field %s.%s has no desc tag", t.Name(), f.Name))
		}
		switch r := f.Tag.Get("reload"); r {
		case "restart":
			c.restart = true
		case "live":
		case "":
			if f.Type.Kind() != reflect.Struct {
				panic(fmt.Sprintf("config: field %s.%s has no reload tag", t.Name(), f.Name))
			}
		default:
			panic(fmt.Sprintf("config: field %s.%s: reload %q is neither live nor restart", t.Name(), f.Name, r))
		}
		switch {
		case f.Type == durationType:
			c.kind = kDuration
		case f.Type == sizeType:
			c.kind = kSize
		case f.Type == paramsType:
			c.kind = kParams
		case f.Type.Kind() == reflect.String:
			c.kind = kString
		case f.Type.Kind() == reflect.Int:
			c.kind = kInt
		case f.Type.Kind() == reflect.Uint64:
			c.kind = kUint
		case f.Type.Kind() == reflect.Bool:
			c.kind = kBool
		case f.Type.Kind() == reflect.Float64:
			c.kind = kFloat
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Int:
			c.kind, c.ints = kList, true
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Float64:
			c.kind, c.floats = kList, true
		case f.Type.Kind() == reflect.Struct:
			sub := buildTree(f.Type, c.path, c.env)
			c.kind, c.children, c.byKey = kSection, sub.children, sub.byKey
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.String:
			c.kind = kList
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			sub := buildTree(f.Type.Elem(), c.path+"[]", c.env+"__<i>")
			c.kind, c.children, c.byKey = kTable, sub.children, sub.byKey
			// a table's fields inherit its reload mode unless they say otherwise
		default:
			panic(fmt.Sprintf("config: field %s.%s: type %s is not supported", t.Name(), f.Name, f.Type))
		}
		n.children = append(n.children, c)
		n.byKey[key] = c
	}
	return n
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// keyField returns the child of a table marked key:"true", or nil.
func (n *node) keyField() *node {
	for _, c := range n.children {
		if c.isKey {
			return c
		}
	}
	return nil
}

// leaves calls fn for every node that holds a value (not a section nor a table), in struct order.
func (n *node) leaves(fn func(*node)) {
	for _, c := range n.children {
		switch c.kind {
		case kSection, kTable:
			c.leaves(fn)
		default:
			fn(c)
		}
	}
}

// typeName is the type as docs and messages name it.
func (n *node) typeName() string {
	switch n.kind {
	case kSection:
		return "section"
	case kTable:
		return "list of tables"
	case kList:
		if n.ints {
			return "list of integers"
		}
		if n.floats {
			return "list of numbers"
		}
		if len(n.enum) > 0 {
			return "list of enum"
		}
		if n.isPath {
			return "list of paths"
		}
		return "list of strings"
	case kString:
		if len(n.enum) > 0 {
			return "enum"
		}
		if n.isPath {
			return "path"
		}
		return "string"
	case kDuration:
		return "duration"
	case kSize:
		return "size"
	case kInt:
		return "integer"
	case kUint:
		return "integer (uint64)"
	case kBool:
		return "boolean"
	case kFloat:
		return "number"
	case kParams:
		return "map of backend parameters"
	}
	return "?"
}

// allPaths lists every key path, sections and tables included, for suggestions.
func (n *node) allPaths() []string {
	var out []string
	var walk func(*node)
	walk = func(m *node) {
		for _, c := range m.children {
			out = append(out, strings.ReplaceAll(c.path, "[]", ""))
			if c.kind == kSection || c.kind == kTable {
				walk(c)
			}
		}
	}
	walk(n)
	return out
}
