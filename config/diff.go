package config

import (
	"fmt"
	"reflect"
)

// Change is one key whose value differs between two configs. Old is "" for a models element
// that only the new config has, New is "" for one that only the old has; values are written
// as Print writes them, secrets redacted.
type Change struct {
	Key      string // "server.addr", `models["policy-a"].instances`, `models["policy-b"]`
	Old, New string
	Restart  bool // the change applies only after a restart (reload:"restart")
}

// Diff returns what changes from a to b, in key order, marking the changes a running server
// cannot apply. Elements of models are matched by name (models["policy-a"]), or by index
// when a config lists a name twice.
func Diff(a, b *Config) []Change {
	return diffTree(rootNode(), reflect.ValueOf(a).Elem(), reflect.ValueOf(b).Elem())
}

type leaf struct {
	n        *node
	v        string // as shown: secrets redacted
	compared string // as compared: the value itself
}

func diffTree(root *node, a, b reflect.Value) []Change {
	// elements are named by their key field only when both sides' names are unique
	byName := true
	unique := func(_ string, n *node, f reflect.Value) {
		if n.kind == kTable && !uniqueNames(n, f) {
			byName = false
		}
	}
	walkValues(root, a, "", false, unique)
	walkValues(root, b, "", false, unique) // (a nested table's index is relative to its element)
	collect := func(v reflect.Value) ([]string, map[string]leaf) {
		var order []string
		m := map[string]leaf{}
		walkValuesElems(root, v, "", byName, true, func(path string, n *node, f reflect.Value) {
			switch {
			case n.kind == kTable && f.Kind() == reflect.Slice:
				return // the table itself: its elements say what changed
			case n.kind == kTable:
				order = append(order, path)
				m[path] = leaf{n, formatTable(n, f), fmt.Sprintf("%#v", f.Interface())}
			default:
				order = append(order, path)
				m[path] = leaf{n, formatValue(n, f), fmt.Sprintf("%#v", f.Interface())}
			}
		})
		return order, m
	}
	ao, am := collect(a)
	bo, bm := collect(b)
	var out []Change
	isElem := func(l leaf) bool { return l.n.kind == kTable }
	seen := map[string]bool{}
	for _, k := range ao {
		seen[k] = true
		x := am[k]
		y, ok := bm[k]
		switch {
		case !ok && isElem(x):
			out = append(out, Change{Key: k, Old: x.v, Restart: x.n.restart})
		case !ok:
			// a key of a removed element: the element's own change says it
		case isElem(x):
			// the element's keys say what changed in it
		case x.compared != y.compared:
			out = append(out, Change{Key: k, Old: x.v, New: y.v, Restart: x.n.restart})
		}
	}
	for _, k := range bo {
		if y := bm[k]; !seen[k] && isElem(y) {
			out = append(out, Change{Key: k, New: y.v, Restart: y.n.restart})
		}
	}
	return out
}

// uniqueNames says whether the key fields of table value f are non-empty and unique.
func uniqueNames(n *node, f reflect.Value) bool {
	names := elemNames(n, f, true)
	return f.Len() == 0 || names[0] != "[0]"
}
