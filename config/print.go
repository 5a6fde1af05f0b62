package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Redacted replaces the value of a secret:"true" key wherever the package shows values.
const Redacted = "<redacted>"

// encodeTree turns struct value v into the tree of maps koanf merges: typed scalars
// (time.Duration, Size, int, uint64, string), []any and map[string]any.
func encodeTree(n *node, v reflect.Value) map[string]any {
	m := make(map[string]any, len(n.children))
	for _, c := range n.children {
		f := v.FieldByIndex(c.index)
		switch c.kind {
		case kSection:
			m[c.key] = encodeTree(c, f)
		case kTable:
			list := make([]any, f.Len())
			for i := range f.Len() {
				list[i] = encodeTree(c, f.Index(i))
			}
			m[c.key] = list
		case kList:
			list := make([]any, f.Len())
			for i := range f.Len() {
				if c.ints {
					list[i] = int(f.Index(i).Int())
				} else if c.floats {
					list[i] = f.Index(i).Float()
				} else {
					list[i] = f.Index(i).String()
				}
			}
			m[c.key] = list
		case kParams:
			p := make(map[string]any, f.Len())
			for k, v := range f.Interface().(BackendParams) {
				p[k] = v
			}
			m[c.key] = nestParams(p)
		default:
			m[c.key] = f.Interface()
		}
	}
	return m
}

// walkValues calls fn, in struct order, for every value of v: each leaf ("server.addr",
// "models[0].backends") and each table itself ("models", with the whole slice). With byName,
// the elements of a table whose element has a key:"true" field are named by it
// (models["policy-a"]) rather than by index, provided the names are unique.
//
// With elems, fn is also called for each element of a table, before the element's keys, with
// the table's node and the element's struct value.
func walkValues(n *node, v reflect.Value, path string, byName bool, fn func(path string, n *node, v reflect.Value)) {
	walkValuesElems(n, v, path, byName, false, fn)
}

func walkValuesElems(n *node, v reflect.Value, path string, byName, elems bool, fn func(path string, n *node, v reflect.Value)) {
	for _, c := range n.children {
		f := v.FieldByIndex(c.index)
		p := joinPath(path, c.key)
		switch c.kind {
		case kSection:
			walkValuesElems(c, f, p, byName, elems, fn)
		case kTable:
			fn(p, c, f)
			names := elemNames(c, f, byName)
			for i := range f.Len() {
				if elems {
					fn(p+names[i], c, f.Index(i))
				}
				walkValuesElems(c, f.Index(i), p+names[i], byName, elems, fn)
			}
		default:
			fn(p, c, f)
		}
	}
}

// elemNames returns the path suffix of each element of table value f: [i], or ["name"] when
// byName and the key field's values are unique and non-empty.
func elemNames(n *node, f reflect.Value, byName bool) []string {
	out := make([]string, f.Len())
	for i := range out {
		out[i] = fmt.Sprintf("[%d]", i)
	}
	kf := n.keyField()
	if !byName || kf == nil {
		return out
	}
	seen := map[string]bool{}
	named := make([]string, f.Len())
	for i := range named {
		name := f.Index(i).FieldByIndex(kf.index).String()
		if name == "" || seen[name] {
			return out
		}
		seen[name] = true
		named[i] = "[" + strconv.Quote(name) + "]"
	}
	return named
}

// formatValue writes a leaf value as YAML: a string quoted where YAML would read it as
// something else, a duration like 2m or 30s, a size like 64MiB, a list in flow style. Secret
// values are Redacted.
func formatValue(n *node, v reflect.Value) string {
	if n.secret {
		if v.IsZero() {
			return `""`
		}
		return Redacted
	}
	switch n.kind {
	case kDuration:
		return formatDuration(time.Duration(v.Int()))
	case kSize:
		return Size(v.Int()).String()
	case kString:
		return yamlString(v.String())
	case kInt:
		return strconv.FormatInt(v.Int(), 10)
	case kUint:
		return strconv.FormatUint(v.Uint(), 10)
	case kBool:
		return strconv.FormatBool(v.Bool())
	case kFloat:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case kList:
		parts := make([]string, v.Len())
		for i := range parts {
			if n.ints {
				parts[i] = strconv.FormatInt(v.Index(i).Int(), 10)
			} else if n.floats {
				parts[i] = strconv.FormatFloat(v.Index(i).Float(), 'g', -1, 64)
			} else {
				parts[i] = yamlString(v.Index(i).String())
			}
		}
		return "[" + strings.Join(parts, ", ") + "]"
	case kParams:
		return v.Interface().(BackendParams).String()
	case kSection:
		return formatTable(n, v)
	case kTable:
		if v.Len() == 0 {
			return "[]"
		}
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = formatTable(n, v.Index(i))
		}
		return "[" + strings.Join(parts, ", ") + "]"
	}
	return fmt.Sprint(v.Interface())
}

// formatTable writes one element of a table in flow style: {name: a, threads: 2}.
func formatTable(n *node, v reflect.Value) string {
	var parts []string
	for _, c := range n.children {
		parts = append(parts, c.key+": "+formatValue(c, v.FieldByIndex(c.index)))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}

// formatDuration writes 2m rather than 2m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

var looksLikeDate = regexp.MustCompile(`^[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}`)

// yamlString quotes s when plain YAML would not read it back as the same string.
func yamlString(s string) string {
	if s == "" || strings.TrimSpace(s) != s || strings.ContainsAny(s, "\"'\\{}[],\n\t") ||
		strings.ContainsAny(s[:1], "-?:#&*!|>%@`") || strings.Contains(s, ": ") || strings.Contains(s, " #") ||
		strings.HasSuffix(s, ":") {
		return strconv.Quote(s)
	}
	switch strings.ToLower(s) {
	case "true", "false", "yes", "no", "on", "off", "null", "~", "y", "n", ".inf", "-.inf", "+.inf", ".nan":
		return strconv.Quote(s)
	}
	if looksLikeDate.MatchString(s) {
		return strconv.Quote(s)
	}
	if _, err := strconv.ParseFloat(s, 64); err == nil {
		return strconv.Quote(s)
	}
	if _, err := strconv.ParseInt(s, 0, 64); err == nil {
		return strconv.Quote(s)
	}
	return s
}

// Print writes c as YAML, each value followed by the layer that set it (# file:policyd.yaml),
// secret values redacted. The admin token itself is never read: only its file's path shows.
// sources may be nil: then no comments.
func Print(c *Config, sources *Sources) string {
	return printTree(rootNode(), reflect.ValueOf(c).Elem(), sources)
}

func printTree(root *node, v reflect.Value, sources *Sources) string {
	type line struct{ text, comment string }
	var lines []line
	var walk func(n *node, v reflect.Value, path, indent string, first string)
	walk = func(n *node, v reflect.Value, path, indent, first string) {
		for i, c := range n.children {
			f := v.FieldByIndex(c.index)
			p := joinPath(path, c.key)
			ind := indent
			if i == 0 && first != "" {
				ind = first
			}
			switch {
			case c.kind == kSection:
				lines = append(lines, line{ind + c.key + ":", ""})
				walk(c, f, p, indent+"  ", "")
			case c.kind == kTable && f.Len() > 0:
				lines = append(lines, line{ind + c.key + ":", sourceComment(sources, p)})
				for j := range f.Len() {
					walk(c, f.Index(j), fmt.Sprintf("%s[%d]", p, j), indent+"    ", indent+"  - ")
				}
			default:
				lines = append(lines, line{ind + c.key + ": " + formatValue(c, f), sourceComment(sources, p)})
			}
		}
	}
	walk(root, v, "", "", "")
	width := 0
	for _, l := range lines {
		if l.comment != "" {
			width = max(width, len(l.text))
		}
	}
	var b strings.Builder
	for _, l := range lines {
		b.WriteString(l.text)
		if l.comment != "" {
			b.WriteString(strings.Repeat(" ", width-len(l.text)+2))
			b.WriteString("# " + l.comment)
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func sourceComment(s *Sources, path string) string {
	if s == nil {
		return ""
	}
	return s.Of(path)
}
