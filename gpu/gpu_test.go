package gpu

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestNewRejectsBadArguments(t *testing.T) {
	_, err := New(zap.NewNop(), 0, nil)
	if err == nil {
		t.Fatal("New(interval 0, nil registerer) succeeded")
	}
	for _, want := range []string{"interval must be positive, got 0s", "prometheus.Registerer is nil"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if _, err := New(nil, -time.Second, prometheus.NewRegistry()); err == nil || !strings.Contains(err.Error(), "-1s") {
		t.Errorf("New(interval -1s) = %v, want an error naming -1s", err)
	}
}

// TestNewWithSystemNVML runs the default path: the machine's own libnvidia-ml.so.1. Without one
// (or without cgo) the collector must say so in exactly one Info line and export nothing; with
// one, it must export the GPUs it found.
func TestNewWithSystemNVML(t *testing.T) {
	log, logs := observed()
	reg := prometheus.NewRegistry()
	c, err := New(log, time.Hour, reg)
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	defer func() {
		if err := c.Close(); err != nil {
			t.Error(err)
		}
	}()
	got := series(t, reg)
	if c.Enabled() {
		t.Logf("NVML found %d GPUs: %+v", len(c.Devices()), c.Devices())
		for _, d := range c.Devices() {
			if k := fmt.Sprintf("policyd_gpu_memory_total_bytes{uuid=%q}", d.UUID); got[k] <= 0 {
				t.Errorf("%s = %v, want the GPU's memory", k, got[k])
			}
		}
		return
	}
	all := logs.All()
	for _, e := range all {
		t.Logf("log: %s %s", e.Level, e.Message)
	}
	if len(all) != 1 || all[0].Level != zapcore.InfoLevel ||
		!strings.HasPrefix(all[0].Message, "NVML not available: ") ||
		!strings.HasSuffix(all[0].Message, "; GPU metrics disabled") {
		t.Errorf("logs = %+v, want one Info line \"NVML not available: ...; GPU metrics disabled\"", all)
	}
	if len(got) != 0 {
		t.Errorf("exported %v without NVML, want nothing", got)
	}
	if d := c.Devices(); d != nil {
		t.Errorf("Devices() = %v without NVML, want nil", d)
	}
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// series gathers g into "name{k="v",...}" → value, labels sorted by name.
func series(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var ls []string
			for _, l := range m.GetLabel() {
				ls = append(ls, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			sort.Strings(ls)
			k := mf.GetName() + "{" + strings.Join(ls, ",") + "}"
			switch mf.GetType() {
			case dto.MetricType_COUNTER:
				out[k] = m.GetCounter().GetValue()
			case dto.MetricType_GAUGE:
				out[k] = m.GetGauge().GetValue()
			default:
				t.Fatalf("%s: unexpected type %v", mf.GetName(), mf.GetType())
			}
		}
	}
	return out
}
