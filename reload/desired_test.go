package reload

import (
	"reflect"
	"testing"

	"github.com/policyd/policyd/config"
)

// TestDesiredMapsBackendKeys: engine.backends is the default order, models[].fallback,
// models[].devices ("all" and empty: every GPU) and the backend parameters reach the engines'
// desired state.
func TestDesiredMapsBackendKeys(t *testing.T) {
	c := config.Defaults()
	c.Repository.Path = "repo"
	c.Engine.Backends = []string{"cuda", "cpu"}
	m := config.DefaultModel()
	a, b, all := m, m, m
	a.Name, a.Devices = "a", []string{"0", "2"}
	b.Name, b.Fallback, b.Backends = "b", false, []string{"tensorrt"}
	b.BackendParameters = config.BackendParams{"tensorrt.precision": "fp32"}
	c.Engine.BackendParameters = config.BackendParams{"tensorrt.precision": "fp16", "tensorrt.workspace_mib": "64"}
	all.Name, all.Devices = "all", []string{"all"}
	c.Models = []config.Model{a, b, all}
	d := Desired(c, nil, nil)
	if d.RequireEngineCaches {
		t.Error("engine.build_engines defaults to true: caches are not required")
	}
	if d.MaxModelMemory != 4<<30 {
		t.Errorf("limits.max_model_memory defaults to 4GiB, the engines got %d bytes", d.MaxModelMemory)
	}
	c.Engine.BuildEngines = false
	if !Desired(c, nil, nil).RequireEngineCaches {
		t.Error("engine.build_engines: false must require caches")
	}
	if !reflect.DeepEqual(d.Default.Backends, []string{"cuda", "cpu"}) || d.Default.Fallback != nil || d.Default.Devices != nil {
		t.Errorf("default = %+v", d.Default)
	}
	got := d.Models
	if len(got) != 3 {
		t.Fatalf("models = %+v", got)
	}
	if !reflect.DeepEqual(got[0].Devices, []int{0, 2}) || got[0].Fallback == nil || !*got[0].Fallback || len(got[0].Backends) != 0 {
		t.Errorf("a = %+v", got[0])
	}
	if got[1].Fallback == nil || *got[1].Fallback || !reflect.DeepEqual(got[1].Backends, []string{"tensorrt"}) || got[1].Devices != nil {
		t.Errorf("b = %+v", got[1])
	}
	if !reflect.DeepEqual(d.Default.Params, map[string]string{"tensorrt.precision": "fp16", "tensorrt.workspace_mib": "64"}) ||
		!reflect.DeepEqual(got[1].Params, map[string]string{"tensorrt.precision": "fp32"}) || len(got[0].Params) != 0 {
		t.Errorf("backend parameters: default %v, b %v, a %v", d.Default.Params, got[1].Params, got[0].Params)
	}
	if got[2].Devices != nil {
		t.Errorf("all = %+v, want every GPU (nil)", got[2])
	}
	if got[0].Fallback == got[1].Fallback {
		t.Error("models share one fallback value")
	}
}
