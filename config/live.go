package config

import "reflect"

// Live returns what a running server applies when its configuration changes from cur to next:
// next, except that every key that needs a restart keeps cur's value. The second result lists
// those held-back changes, so they are reported as pending a restart and never half-applied.
func Live(cur, next *Config) (*Config, []Change) {
	out := *next
	out.Models = append([]Model(nil), next.Models...)
	var pending []Change
	for _, c := range Diff(cur, next) {
		if c.Restart {
			pending = append(pending, c)
		}
	}
	keepRestart(rootNode(), reflect.ValueOf(cur).Elem(), reflect.ValueOf(&out).Elem())
	return &out, pending
}

// keepRestart copies every restart-only leaf of the sections under n from cur into out.
// Tables (models) have no restart-only keys: their elements are applied live.
func keepRestart(n *node, cur, out reflect.Value) {
	for _, c := range n.children {
		if c.kind == kTable {
			continue
		}
		cf, of := cur.FieldByIndex(c.index), out.FieldByIndex(c.index)
		if len(c.children) > 0 && c.kind == kSection {
			keepRestart(c, cf, of)
			continue
		}
		if c.restart {
			of.Set(cf)
		}
	}
}
