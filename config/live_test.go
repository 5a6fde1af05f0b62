package config

import (
	"testing"
	"time"
)

func TestLiveHoldsBackRestartKeys(t *testing.T) {
	cur := Defaults()
	cur.Repository.Path = "/models"
	next := Defaults()
	next.Repository.Path = "/models2"
	next.Server.Addr = "0.0.0.0:9000"
	next.Server.ReadTimeout = time.Second
	next.Log.Level = "debug"
	next.Log.Format = "console"
	next.Engine.CPUThreads = 4
	next.Models = []Model{{Name: "a", Backends: []string{"cpu"}}}

	live, pending := Live(cur, next)
	if live.Server != cur.Server || live.Log.Format != cur.Log.Format || live.Engine.CPUThreads != cur.Engine.CPUThreads {
		t.Errorf("a restart-only key was applied: %+v", live)
	}
	if live.Log.Level != "debug" || live.Repository.Path != "/models2" || len(live.Models) != 1 {
		t.Errorf("a live key was held back: %+v", live)
	}
	want := map[string]bool{"server.addr": true, "server.read_timeout": true, "log.format": true, "engine.cpu_threads": true}
	for _, c := range pending {
		if !c.Restart || !want[c.Key] {
			t.Errorf("unexpected pending change %+v", c)
		}
		delete(want, c.Key)
	}
	if len(want) != 0 {
		t.Errorf("changes not reported as pending: %v", want)
	}
	if next.Server.Addr != "0.0.0.0:9000" {
		t.Error("Live modified its argument")
	}
}
