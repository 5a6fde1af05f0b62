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

func TestParseHistogram(t *testing.T) {
	text := `# HELP policyd_compute_infer_duration_seconds x
# TYPE policyd_compute_infer_duration_seconds histogram
policyd_compute_infer_duration_seconds_bucket{model="a",version="1",le="0.001"} 3
policyd_compute_infer_duration_seconds_bucket{model="a",version="1",le="+Inf"} 4
policyd_compute_infer_duration_seconds_sum{model="a",version="1"} 0.0025
policyd_compute_infer_duration_seconds_count{model="a",version="1"} 4
policyd_compute_infer_duration_seconds_bucket{model="b",version="1",le="+Inf"} 1
policyd_compute_infer_duration_seconds_sum{model="b",version="1"} 0.5
policyd_compute_infer_duration_seconds_count{model="b",version="1"} 1
`
	name := "policyd_compute_infer_duration_seconds"
	if s, n, ok := ParseHistogram(text, name, map[string]string{"model": "a"}); !ok || s != 0.0025 || n != 4 {
		t.Errorf("model a: sum %v count %v ok %v", s, n, ok)
	}
	if s, n, ok := ParseHistogram(text, name, nil); !ok || s != 0.5025 || n != 5 {
		t.Errorf("all: sum %v count %v ok %v", s, n, ok)
	}
	if _, _, ok := ParseHistogram(text, name, map[string]string{"model": "c"}); ok {
		t.Error("no series of model c: want ok false")
	}
	if _, _, ok := ParseHistogram(text, "absent", nil); ok {
		t.Error("absent histogram: want ok false")
	}
}
