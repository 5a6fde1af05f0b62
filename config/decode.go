package config

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
)

// elemDefaults gives the defaults of a table's element type.
var elemDefaults = map[reflect.Type]func() reflect.Value{
	reflect.TypeFor[Model]():           func() reflect.Value { return reflect.ValueOf(DefaultModel()) },
	reflect.TypeFor[SequenceControl](): func() reflect.Value { return reflect.ValueOf(DefaultSequenceControl()) },
}

func newElem(t reflect.Type) reflect.Value {
	v := reflect.New(t).Elem()
	if f, ok := elemDefaults[t]; ok {
		v.Set(f())
	}
	return v
}

// decoder turns the merged tree of maps into the struct, collecting a problem for every
// value of the wrong type. Keys the schema does not know were reported per layer and are
// skipped here; so are nil values (a key written with no value is not set).
type decoder struct {
	probs  []Problem
	source func(path string) string
}

func (d *decoder) fail(path, format string, args ...any) {
	p := Problem{Key: path, Msg: fmt.Sprintf(format, args...)}
	if d.source != nil {
		p.Source = d.source(path)
	}
	d.probs = append(d.probs, p)
}

// section decodes mapping m into struct value v (already holding the defaults).
func (d *decoder) section(n *node, m map[string]any, v reflect.Value, path string) {
	for _, c := range n.children {
		val, ok := m[c.key]
		if !ok || val == nil {
			continue
		}
		d.value(c, val, v.FieldByIndex(c.index), joinPath(path, c.key))
	}
}

func (d *decoder) value(n *node, val any, v reflect.Value, path string) {
	switch n.kind {
	case kSection:
		m, ok := val.(map[string]any)
		if !ok {
			d.fail(path, "must be a section of keys (%s), got %s", strings.Join(childKeys(n), ", "), describe(val))
			return
		}
		d.section(n, m, v, path)
	case kTable:
		list, ok := val.([]any)
		if !ok {
			d.fail(path, "must be a list of tables, got %s", describe(val))
			return
		}
		out := reflect.MakeSlice(v.Type(), 0, len(list))
		for i, e := range list {
			ep := fmt.Sprintf("%s[%d]", path, i)
			ev := newElem(v.Type().Elem())
			if m, ok := e.(map[string]any); ok {
				d.section(n, m, ev, ep)
			} else {
				d.fail(ep, "must be a table of keys (%s), got %s", strings.Join(childKeys(n), ", "), describe(e))
			}
			out = reflect.Append(out, ev)
		}
		v.Set(out)
	case kList:
		list, ok := val.([]any)
		if !ok {
			if s, isStr := val.([]string); isStr {
				for _, e := range s {
					list = append(list, e)
				}
			} else {
				d.fail(path, "must be a list like [%s], got %s", strings.Join(n.enum, ", "), describe(val))
				return
			}
		}
		if n.floats {
			out := make([]float64, 0, len(list))
			for i, e := range list {
				x, ok := toFloat(e)
				if !ok {
					d.fail(fmt.Sprintf("%s[%d]", path, i), "must be a number, got %s", describe(e))
					continue
				}
				out = append(out, x)
			}
			v.Set(reflect.ValueOf(out))
			return
		}
		if n.ints {
			out := make([]int, 0, len(list))
			for i, e := range list {
				x, ok := toInt(e)
				if !ok || x < math.MinInt32 || x > math.MaxInt32 {
					d.fail(fmt.Sprintf("%s[%d]", path, i), "must be an integer, got %s", describe(e))
					continue
				}
				out = append(out, int(x))
			}
			v.Set(reflect.ValueOf(out))
			return
		}
		out := make([]string, 0, len(list))
		for i, e := range list {
			s, ok := scalarString(e)
			if !ok {
				d.fail(fmt.Sprintf("%s[%d]", path, i), "must be a string, got %s", describe(e))
				continue
			}
			out = append(out, s)
		}
		v.Set(reflect.ValueOf(out))
	case kString:
		if f, ok := val.(float64); ok && f != math.Trunc(f) {
			d.fail(path, "must be a string, got the number %v: quote it, \"%v\"", f, f)
			return
		}
		s, ok := scalarString(val)
		if !ok {
			d.fail(path, "must be a string, got %s", describe(val))
			return
		}
		v.SetString(s)
	case kDuration:
		dur, err := toDuration(val)
		if err != nil {
			hint := ""
			if i, isNum := toInt(val); isNum {
				hint = fmt.Sprintf(" (a duration needs a unit: %ds)", i)
			}
			d.fail(path, "must be a duration like 30s, 1m30s or 250ms, got %s%s", describe(val), hint)
			return
		}
		v.SetInt(int64(dur))
	case kSize:
		sz, err := toSize(val)
		if err != nil {
			d.fail(path, "must be a size like 64MiB, 512KiB, 1GB or a number of bytes, got %s", describe(val))
			return
		}
		v.SetInt(int64(sz))
	case kInt:
		i, ok := toInt(val)
		if !ok || i < math.MinInt32 || i > math.MaxInt32 {
			d.fail(path, "must be an integer, got %s", describe(val))
			return
		}
		v.SetInt(i)
	case kBool:
		b, ok := val.(bool)
		if s, isStr := val.(string); isStr {
			var err error
			b, err = strconv.ParseBool(strings.TrimSpace(s))
			ok = err == nil
		}
		if !ok {
			d.fail(path, "must be true or false, got %s", describe(val))
			return
		}
		v.SetBool(b)
	case kUint:
		u, ok := toUint(val)
		if !ok {
			d.fail(path, "must be an integer from 0 to %d, got %s", uint64(math.MaxUint64), describe(val))
			return
		}
		v.SetUint(u)
	case kFloat:
		f, ok := toFloat(val)
		if !ok {
			d.fail(path, "must be a number like 0.25, got %s", describe(val))
			return
		}
		v.SetFloat(f)
	case kParams:
		if s, ok := val.(string); ok { // the key=value,… form of a flag or variable
			m, err := parseParams(s)
			if err != nil {
				d.fail(path, "must be backend parameters like tensorrt.precision=fp16,tensorrt.workspace_mib=1024: %v", err)
				return
			}
			val = m
		}
		m, ok := val.(map[string]any)
		if !ok {
			d.fail(path, "must be a map of backend parameters like {tensorrt.precision: fp16}, got %s", describe(val))
			return
		}
		out := BackendParams{}
		set := func(key string, e any) {
			s, ok := scalarString(e)
			if b, isBool := e.(bool); isBool {
				s, ok = strconv.FormatBool(b), true
			}
			if !ok {
				d.fail(joinPath(path, key), "must be a value (a string or a number), got %s", describe(e))
				return
			}
			out[key] = s
		}
		for k, e := range m {
			if sub, isMap := e.(map[string]any); isMap {
				for name, x := range sub {
					set(k+"."+name, x)
				}
				continue
			}
			set(k, e)
		}
		v.Set(reflect.ValueOf(out))
	}
}

func childKeys(n *node) []string {
	out := make([]string, len(n.children))
	for i, c := range n.children {
		out[i] = c.key
	}
	return out
}

// describe writes a value of a layer for a message: strings quoted, numbers as they are.
func describe(v any) string {
	switch x := v.(type) {
	case string:
		return strconv.Quote(x)
	case map[string]any:
		return "a section"
	case []any, []string:
		return "a list"
	case nil:
		return "nothing"
	case bool:
		return fmt.Sprintf("the boolean %v", x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

// scalarString accepts a string, or an integer written without quotes (version: 1).
func scalarString(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case int, int64, uint64, int32, uint, int8, int16, uint8, uint16, uint32:
		return fmt.Sprint(x), true
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return strconv.FormatInt(int64(x), 10), true
		}
	}
	return "", false
}

func toDuration(v any) (time.Duration, error) {
	switch x := v.(type) {
	case time.Duration:
		return x, nil
	case string:
		return time.ParseDuration(strings.TrimSpace(x))
	case int:
		if x == 0 {
			return 0, nil
		}
	case float64:
		if x == 0 {
			return 0, nil
		}
	}
	return 0, fmt.Errorf("not a duration")
}

func toSize(v any) (Size, error) {
	switch x := v.(type) {
	case Size:
		return x, nil
	case string:
		return ParseSize(x)
	}
	if i, ok := toInt(v); ok && i >= 0 {
		return Size(i), nil
	}
	return 0, fmt.Errorf("not a size")
}

func toInt(v any) (int64, bool) {
	switch x := v.(type) {
	case int:
		return int64(x), true
	case int64:
		return x, true
	case int32:
		return int64(x), true
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), true
		}
	case uint:
		if uint64(x) <= math.MaxInt64 {
			return int64(x), true
		}
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return int64(x), true
		}
	case string:
		i, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64)
		return i, err == nil
	}
	return 0, false
}

// toFloat accepts a finite number, or a string holding one (environment, flags).
func toFloat(v any) (float64, bool) {
	var f float64
	switch x := v.(type) {
	case float64:
		f = x
	case string:
		var err error
		if f, err = strconv.ParseFloat(strings.TrimSpace(x), 64); err != nil {
			return 0, false
		}
	default:
		i, ok := toInt(v)
		if !ok {
			return 0, false
		}
		f = float64(i)
	}
	return f, !math.IsNaN(f) && !math.IsInf(f, 0)
}

func toUint(v any) (uint64, bool) {
	switch x := v.(type) {
	case uint64:
		return x, true
	case uint:
		return uint64(x), true
	case string:
		u, err := strconv.ParseUint(strings.TrimSpace(x), 10, 64)
		return u, err == nil
	}
	if i, ok := toInt(v); ok && i >= 0 {
		return uint64(i), true
	}
	return 0, false
}
