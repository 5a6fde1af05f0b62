//go:build cgo

package gpu

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// fakeGPU is one mock GPU's readings; rets makes a field (the collect_errors field label)
// answer an error instead. Change rets only while no sampling goroutine runs.
type fakeGPU struct {
	uuid, name         string
	util               nvml.Utilization
	mem                nvml.Memory
	powerMW, limitMW   uint32
	energyMJ           uint64
	tempC, smMHz       uint32
	reasons            uint64
	eccCorr, eccUncorr uint64
	rets               map[string]nvml.Return
	mu                 sync.Mutex
	calls              map[string]int // NVML calls per field
}

func (g *fakeGPU) ret(field string, n *atomic.Int64) nvml.Return {
	n.Add(1)
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.calls == nil {
		g.calls = map[string]int{}
	}
	g.calls[field]++
	if r, ok := g.rets[field]; ok {
		return r
	}
	return nvml.SUCCESS
}

func (g *fakeGPU) callsTo(field string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.calls[field]
}

// device is g as a go-nvml mock device; every call adds one to n.
func (g *fakeGPU) device(n *atomic.Int64) *mock.Device {
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return g.uuid, g.ret("uuid", n) },
		GetNameFunc: func() (string, nvml.Return) { return g.name, g.ret("name", n) },
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
			return g.util, g.ret("utilization", n)
		},
		GetMemoryInfoFunc:             func() (nvml.Memory, nvml.Return) { return g.mem, g.ret("memory", n) },
		GetPowerUsageFunc:             func() (uint32, nvml.Return) { return g.powerMW, g.ret("power", n) },
		GetEnforcedPowerLimitFunc:     func() (uint32, nvml.Return) { return g.limitMW, g.ret("power_limit", n) },
		GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) { return g.energyMJ, g.ret("energy", n) },
		GetTemperatureFunc: func(s nvml.TemperatureSensors) (uint32, nvml.Return) {
			if s != nvml.TEMPERATURE_GPU {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return g.tempC, g.ret("temperature", n)
		},
		GetClockInfoFunc: func(c nvml.ClockType) (uint32, nvml.Return) {
			if c != nvml.CLOCK_SM {
				return 0, nvml.ERROR_INVALID_ARGUMENT
			}
			return g.smMHz, g.ret("sm_clock", n)
		},
		GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) {
			return g.reasons, g.ret("throttle_reasons", n)
		},
		GetCurrentClocksThrottleReasonsFunc: func() (uint64, nvml.Return) {
			return g.reasons, g.ret("throttle_reasons_legacy", n)
		},
		GetTotalEccErrorsFunc: func(t nvml.MemoryErrorType, c nvml.EccCounterType) (uint64, nvml.Return) {
			switch {
			case c != nvml.VOLATILE_ECC:
				return 0, nvml.ERROR_INVALID_ARGUMENT
			case t == nvml.MEMORY_ERROR_TYPE_CORRECTED:
				return g.eccCorr, g.ret("ecc_corrected", n)
			case t == nvml.MEMORY_ERROR_TYPE_UNCORRECTED:
				return g.eccUncorr, g.ret("ecc_uncorrected", n)
			}
			return 0, nvml.ERROR_INVALID_ARGUMENT
		},
	}
}

// fakeNVML is a go-nvml mock library over gpus; every call adds one to n, Shutdowns to shut.
type fakeNVML struct {
	*mock.Interface
	calls atomic.Int64
	shut  atomic.Int64
	devs  []*mock.Device
}

func newFakeNVML(gpus ...*fakeGPU) *fakeNVML {
	f := &fakeNVML{}
	for _, g := range gpus {
		f.devs = append(f.devs, g.device(&f.calls))
	}
	f.Interface = &mock.Interface{
		InitFunc:     func() nvml.Return { f.calls.Add(1); return nvml.SUCCESS },
		ShutdownFunc: func() nvml.Return { f.calls.Add(1); f.shut.Add(1); return nvml.SUCCESS },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) {
			f.calls.Add(1)
			return "570.86.15", nvml.SUCCESS
		},
		DeviceGetCountFunc: func() (int, nvml.Return) { f.calls.Add(1); return len(f.devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			f.calls.Add(1)
			if i < 0 || i >= len(f.devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return f.devs[i], nvml.SUCCESS
		},
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(string) error { return nil }}
		},
	}
	return f
}

// h100 supports every field.
func h100() *fakeGPU {
	return &fakeGPU{
		uuid: "GPU-aaaaaaaa-0000-0000-0000-000000000001", name: "NVIDIA H100 80GB HBM3",
		util:    nvml.Utilization{Gpu: 37, Memory: 12},
		mem:     nvml.Memory{Total: 80 << 30, Used: 3 << 30, Free: 77 << 30},
		powerMW: 250_500, limitMW: 700_000, energyMJ: 123_456_789,
		tempC: 54, smMHz: 1980,
		reasons: nvml.ClocksEventReasonSwPowerCap | nvml.ClocksThrottleReasonHwThermalSlowdown,
		eccCorr: 3, eccUncorr: 0,
	}
}

// t4 answers NOT_SUPPORTED for power and ECC.
func t4() *fakeGPU {
	return &fakeGPU{
		uuid: "GPU-bbbbbbbb-0000-0000-0000-000000000002", name: "Tesla T4",
		util:    nvml.Utilization{Gpu: 100, Memory: 55},
		mem:     nvml.Memory{Total: 15 << 30, Used: 15 << 29, Free: 15 << 29},
		limitMW: 70_000, energyMJ: 5_000,
		tempC: 81, smMHz: 585,
		reasons: nvml.ClocksEventReasonGpuIdle,
		rets: map[string]nvml.Return{"power": nvml.ERROR_NOT_SUPPORTED,
			"ecc_corrected": nvml.ERROR_NOT_SUPPORTED, "ecc_uncorrected": nvml.ERROR_NOT_SUPPORTED},
	}
}

func newTestCollector(t *testing.T, lib nvml.Interface, interval time.Duration) (*Collector, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(zap.NewNop(), interval, reg, WithNVML(lib))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, reg
}

// key is series()'s key for name with the label pairs kv ("k", "v", ...).
func key(name string, kv ...string) string {
	var ls []string
	for i := 0; i < len(kv); i += 2 {
		ls = append(ls, fmt.Sprintf("%s=%q", kv[i], kv[i+1]))
	}
	slices.Sort(ls)
	return name + "{" + strings.Join(ls, ",") + "}"
}

// expected is what the collector must export for g at index: its info series, the values
// (metric name → value, labelled with g's uuid), the throttle reasons with the active ones at 1,
// and extra series keyed in full.
func expected(g *fakeGPU, index int, values map[string]float64, active []string, extra map[string]float64) map[string]float64 {
	m := map[string]float64{
		key("policyd_gpu_info", "uuid", g.uuid, "index", fmt.Sprint(index), "name", g.name, "driver", "570.86.15"): 1,
	}
	for name, v := range values {
		m[key(name, "uuid", g.uuid)] = v
	}
	for _, r := range throttleReasons {
		m[key("policyd_gpu_throttle_reasons", "uuid", g.uuid, "reason", r.name)] = 0
	}
	for _, r := range active {
		m[key("policyd_gpu_throttle_reasons", "uuid", g.uuid, "reason", r)] = 1
	}
	maps.Copy(m, extra)
	return m
}

func TestCollectorExportsEveryField(t *testing.T) {
	a, b := h100(), t4()
	c, reg := newTestCollector(t, newFakeNVML(a, b).Interface, time.Hour)

	want := expected(a, 0, map[string]float64{
		"policyd_gpu_utilization_ratio":        0.37,
		"policyd_gpu_memory_utilization_ratio": 0.12,
		"policyd_gpu_memory_used_bytes":        3 << 30,
		"policyd_gpu_memory_total_bytes":       80 << 30,
		"policyd_gpu_power_watts":              250.5,
		"policyd_gpu_power_limit_watts":        700,
		"policyd_gpu_energy_joules_total":      123_456.789,
		"policyd_gpu_temperature_celsius":      54,
		"policyd_gpu_sm_clock_hertz":           1.98e9,
	}, []string{"sw_power_cap", "hw_thermal_slowdown"}, map[string]float64{
		key("policyd_gpu_ecc_errors_total", "uuid", a.uuid, "type", "corrected"):   3,
		key("policyd_gpu_ecc_errors_total", "uuid", a.uuid, "type", "uncorrected"): 0,
	})
	maps.Copy(want, expected(b, 1, map[string]float64{
		"policyd_gpu_utilization_ratio":        1,
		"policyd_gpu_memory_utilization_ratio": 0.55,
		"policyd_gpu_memory_used_bytes":        15 << 29,
		"policyd_gpu_memory_total_bytes":       15 << 30,
		"policyd_gpu_power_limit_watts":        70,
		"policyd_gpu_energy_joules_total":      5,
		"policyd_gpu_temperature_celsius":      81,
		"policyd_gpu_sm_clock_hertz":           585e6,
	}, []string{"gpu_idle"}, map[string]float64{
		key("policyd_gpu_collect_errors_total", "uuid", b.uuid, "field", "power"):           1,
		key("policyd_gpu_collect_errors_total", "uuid", b.uuid, "field", "ecc_corrected"):   1,
		key("policyd_gpu_collect_errors_total", "uuid", b.uuid, "field", "ecc_uncorrected"): 1,
	}))

	got := series(t, reg)
	for k, v := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("missing %s", k)
		} else if g != v {
			t.Errorf("%s = %v, want %v", k, g, v)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %s = %v", k, v)
		}
	}

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		wantType := dto.MetricType_GAUGE
		if strings.HasSuffix(mf.GetName(), "_total") {
			wantType = dto.MetricType_COUNTER
		}
		if mf.GetType() != wantType {
			t.Errorf("%s is a %v, want %v", mf.GetName(), mf.GetType(), wantType)
		}
	}

	devs := c.Devices()
	wantDevs := []Device{
		{UUID: a.uuid, Index: 0, Name: a.name, MemoryTotalBytes: 80 << 30, MemoryUsedBytes: 3 << 30},
		{UUID: b.uuid, Index: 1, Name: b.name, MemoryTotalBytes: 15 << 30, MemoryUsedBytes: 15 << 29,
			Unsupported: []string{"power", "ecc_corrected", "ecc_uncorrected"}},
	}
	if fmt.Sprint(devs) != fmt.Sprint(wantDevs) {
		t.Errorf("Devices() = %+v\nwant %+v", devs, wantDevs)
	}
	if len(devs) == 2 && len(devs[1].Unsupported) > 0 {
		devs[1].Unsupported[0] = "changed by the caller"
		if c.Devices()[1].Unsupported[0] != "power" {
			t.Error("Devices() shares its slices with the snapshot")
		}
	}
}

func TestCollectDoesNotCallNVML(t *testing.T) {
	lib := newFakeNVML(h100(), t4())
	_, reg := newTestCollector(t, lib.Interface, time.Hour)
	before := lib.calls.Load()
	if before == 0 {
		t.Fatal("New made no NVML call: the mock is not in use")
	}
	for range 3 {
		if n := len(series(t, reg)); n == 0 {
			t.Fatal("scrape exported nothing")
		}
	}
	if after := lib.calls.Load(); after != before {
		t.Errorf("3 scrapes made %d NVML calls, want 0", after-before)
	}
}

func TestNotSupportedIsQueriedOnceAndOtherErrorsCountEachTime(t *testing.T) {
	a, b := h100(), t4()
	lib := newFakeNVML(a, b)
	log, logs := observed()
	reg := prometheus.NewRegistry()
	c, err := New(log, time.Hour, reg, WithNVML(lib.Interface))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	a.rets = map[string]nvml.Return{"temperature": nvml.ERROR_UNKNOWN}
	c.refresh()
	c.refresh()
	if n := b.callsTo("power"); n != 1 {
		t.Errorf("unsupported power queried %d times in 3 samples, want 1", n)
	}
	if n := a.callsTo("temperature"); n != 3 {
		t.Errorf("temperature queried %d times in 3 samples, want 3", n)
	}
	got := series(t, reg)
	errs := func(uuid, field string) string {
		return key("policyd_gpu_collect_errors_total", "uuid", uuid, "field", field)
	}
	temp := key("policyd_gpu_temperature_celsius", "uuid", a.uuid)
	if got[errs(b.uuid, "power")] != 1 || got[errs(a.uuid, "temperature")] != 2 {
		t.Errorf("collect errors: power %v (want 1), temperature %v (want 2)",
			got[errs(b.uuid, "power")], got[errs(a.uuid, "temperature")])
	}
	if v, ok := got[temp]; ok {
		t.Errorf("%s = %v exported while it cannot be read", temp, v)
	}
	if n := logs.FilterMessage("GPU field unreadable").Len(); n != 1 {
		t.Errorf("%d \"GPU field unreadable\" lines for one failure that lasted 2 samples, want 1", n)
	}

	a.rets = nil
	c.refresh()
	got = series(t, reg)
	if got[temp] != 54 || got[errs(a.uuid, "temperature")] != 2 {
		t.Errorf("after recovery: temperature %v (want 54), errors %v (want 2)", got[temp], got[errs(a.uuid, "temperature")])
	}
	if logs.FilterMessage("GPU field readable again").Len() != 1 {
		t.Errorf("no \"GPU field readable again\" line: %v", logs.All())
	}
}

func TestThrottleReasonsFallBackOnOldDrivers(t *testing.T) {
	a := h100()
	lib := newFakeNVML(a)
	lib.ExtensionsFunc = func() nvml.ExtendedInterface {
		return &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
			return errors.New("undefined symbol: " + s)
		}}
	}
	_, reg := newTestCollector(t, lib.Interface, time.Hour)
	if a.callsTo("throttle_reasons") != 0 || a.callsTo("throttle_reasons_legacy") != 1 {
		t.Errorf("event reasons called %d times, throttle reasons %d times; want 0 and 1",
			a.callsTo("throttle_reasons"), a.callsTo("throttle_reasons_legacy"))
	}
	k := key("policyd_gpu_throttle_reasons", "uuid", a.uuid, "reason", "hw_thermal_slowdown")
	if v := series(t, reg)[k]; v != 1 {
		t.Errorf("%s = %v, want 1", k, v)
	}
}

func TestNVMLUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		change   func(f *fakeNVML)
		message  string
		shutdown int64
	}{
		{"no library", func(f *fakeNVML) {
			f.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
		}, "NVML not available: init: " + nvml.ERROR_LIBRARY_NOT_FOUND.Error() + " (libnvidia-ml.so.1 could not be loaded); GPU metrics disabled", 0},
		{"no driver", func(f *fakeNVML) {
			f.InitFunc = func() nvml.Return { return nvml.ERROR_DRIVER_NOT_LOADED }
		}, "NVML not available: init: " + nvml.ERROR_DRIVER_NOT_LOADED.Error() + "; GPU metrics disabled", 0},
		{"no GPU", func(f *fakeNVML) {
			f.devs = nil
		}, "NVML not available: no GPU found; GPU metrics disabled", 1},
		{"count fails", func(f *fakeNVML) {
			f.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, nvml.ERROR_UNKNOWN }
		}, "NVML not available: device count: " + nvml.ERROR_UNKNOWN.Error() + "; GPU metrics disabled", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lib := newFakeNVML(h100())
			tc.change(lib)
			log, logs := observed()
			reg := prometheus.NewRegistry()
			c, err := New(log, time.Millisecond, reg, WithNVML(lib.Interface))
			if err != nil {
				t.Fatalf("New: %v, want a disabled collector", err)
			}
			c.Start()
			time.Sleep(5 * time.Millisecond)
			if err := c.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			all := logs.All()
			if len(all) != 1 || all[0].Level != zapcore.InfoLevel || all[0].Message != tc.message {
				t.Errorf("logs = %+v\nwant one Info line %q", all, tc.message)
			}
			if got := series(t, reg); len(got) != 0 {
				t.Errorf("exported %v, want nothing", got)
			}
			if c.Enabled() || c.Devices() != nil {
				t.Errorf("Enabled() = %v, Devices() = %v; want false, nil", c.Enabled(), c.Devices())
			}
			if n := lib.shut.Load(); n != tc.shutdown {
				t.Errorf("Shutdown called %d times, want %d (once after a successful Init)", n, tc.shutdown)
			}
		})
	}
}

func TestStartSamplesUntilClose(t *testing.T) {
	a := h100()
	lib := newFakeNVML(a)
	reg := prometheus.NewRegistry()
	c, err := New(zap.NewNop(), time.Millisecond, reg, WithNVML(lib.Interface))
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	c.Start() // a second Start does not start a second loop
	deadline := time.Now().Add(10 * time.Second)
	for a.callsTo("power") < 5 {
		if time.Now().After(deadline) {
			t.Fatalf("power sampled %d times in 10s at a 1ms interval", a.callsTo("power"))
		}
		time.Sleep(time.Millisecond)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	calls := lib.calls.Load()
	time.Sleep(20 * time.Millisecond)
	if n := lib.calls.Load() - calls; n != 0 {
		t.Errorf("%d NVML calls after Close", n)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	c.Start() // after Close: nothing
	if n := lib.shut.Load(); n != 1 {
		t.Errorf("Shutdown called %d times, want 1", n)
	}
	if got := series(t, reg); len(got) != 0 {
		t.Errorf("still exported after Close: %d series", len(got))
	}
	// Unregistered: a new collector can take its place.
	c2, err := New(zap.NewNop(), time.Hour, reg, WithNVML(newFakeNVML(h100()).Interface))
	if err != nil {
		t.Fatalf("New after Close on the same registry: %v", err)
	}
	c2.Close()
}

func TestRegistrationClashShutsNVMLDown(t *testing.T) {
	reg := prometheus.NewRegistry()
	c, err := New(zap.NewNop(), time.Hour, reg, WithNVML(newFakeNVML(h100()).Interface))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	lib := newFakeNVML(h100())
	if _, err := New(zap.NewNop(), time.Hour, reg, WithNVML(lib.Interface)); err == nil ||
		!strings.Contains(err.Error(), "gpu: register metrics") {
		t.Errorf("second New on one registry = %v, want a register error", err)
	}
	if lib.shut.Load() != 1 {
		t.Errorf("NVML not shut down after the failed registration")
	}
}

// TestMetricsAreDocumented keeps docs/observability.md and the exported families in step.
func TestMetricsAreDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `(policyd_gpu_[a-z_]+)`").FindAllStringSubmatch(string(doc), -1) {
		documented[m[1]] = true
	}
	_, reg := newTestCollector(t, newFakeNVML(h100(), t4()).Interface, time.Hour)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	exported := map[string]bool{}
	for _, mf := range mfs {
		exported[mf.GetName()] = true
		if !documented[mf.GetName()] {
			t.Errorf("%s is exported but not in the metrics table of docs/observability.md", mf.GetName())
		}
	}
	for name := range documented {
		if !exported[name] {
			t.Errorf("%s is in docs/observability.md but not exported", name)
		}
	}
}
