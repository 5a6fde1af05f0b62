package scrape

import "testing"

func TestParse(t *testing.T) {
	text := `# HELP go_memstats_heap_inuse_bytes x
# TYPE go_memstats_heap_inuse_bytes gauge
go_memstats_heap_inuse_bytes 2.564096e+06
policyd_engine_memory_bytes{model="a",version="1.0.0",backend="cpu"} 1000
policyd_engine_memory_bytes{model="b",version="1.0.0",backend="cpu"} 24
policyd_engine_memory_bytes_total 7
`
	m := Parse(text, "go_memstats_heap_inuse_bytes", "policyd_engine_memory_bytes", "absent")
	if m["go_memstats_heap_inuse_bytes"] != 2564096 || m["policyd_engine_memory_bytes"] != 1024 {
		t.Errorf("metrics %v", m)
	}
	if _, ok := m["absent"]; ok {
		t.Error("an absent series must be absent, not 0")
	}
}
