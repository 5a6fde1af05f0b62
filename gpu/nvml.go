//go:build cgo

package gpu

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

type options struct {
	lib nvml.Interface
}

// WithNVML samples through lib instead of nvml.New() (the system's libnvidia-ml.so.1); tests
// pass go-nvml's mock.
func WithNVML(lib nvml.Interface) Option {
	return func(o *options) { o.lib = lib }
}

// New initializes NVML once, finds the GPUs, takes the first sample and registers the metrics
// on reg. Where NVML is not available it logs one Info line and returns a disabled collector
// that exports nothing; the error is only for bad arguments (interval <= 0, nil reg) or a
// registration clash.
func New(log *zap.Logger, interval time.Duration, reg prometheus.Registerer, opts ...Option) (*Collector, error) {
	c, err := newCollector(log, interval, reg)
	if err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.lib == nil {
		o.lib = nvml.New()
	}
	src, err := openNVML(o.lib, c.log)
	if err != nil {
		c.log.Info("NVML not available: " + err.Error() + "; GPU metrics disabled")
		return c, nil
	}
	if err := c.enable(src); err != nil {
		return nil, err
	}
	c.log.Info("GPU metrics enabled", zap.Int("gpus", len(src.devs)), zap.String("driver", src.driver),
		zap.Duration("interval", interval))
	return c, nil
}

// nvmlSource samples through NVML. Not safe for concurrent use: the Collector calls it from one
// goroutine at a time.
type nvmlSource struct {
	lib     nvml.Interface
	log     *zap.Logger
	driver  string
	devs    []*nvmlDevice
	reasons func(nvml.Device) (uint64, nvml.Return) // clocks event (throttle) reasons
}

type nvmlDevice struct {
	h     nvml.Device
	index int
	uuid  string
	name  string

	unsupported map[string]bool        // fields answered NOT_SUPPORTED: never queried again
	failing     map[string]nvml.Return // fields failing now, for one log line per change
	errors      map[string]float64     // policyd_gpu_collect_errors_total by field
}

// returnError is an NVML return code as an error, naming the call.
func returnError(call string, ret nvml.Return) error {
	if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
		return fmt.Errorf("%s: %v (libnvidia-ml.so.1 could not be loaded)", call, ret)
	}
	return fmt.Errorf("%s: %v", call, ret)
}

// openNVML initializes lib and finds the GPUs; on an error NVML is shut down again.
func openNVML(lib nvml.Interface, log *zap.Logger) (s *nvmlSource, err error) {
	if ret := lib.Init(); ret != nvml.SUCCESS {
		return nil, returnError("init", ret)
	}
	defer func() {
		if err != nil {
			if ret := lib.Shutdown(); ret != nvml.SUCCESS {
				err = errors.Join(err, returnError("shutdown", ret))
			}
		}
	}()
	s = &nvmlSource{lib: lib, log: log, driver: "unknown"}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		s.driver = v
	}
	// nvmlDeviceGetCurrentClocksEventReasons came with driver 535; older drivers only have the
	// throttle-reasons call (same bits). Calling a symbol the library lacks would kill the process.
	s.reasons = nvml.Device.GetCurrentClocksEventReasons
	if ext := lib.Extensions(); ext == nil || ext.LookupSymbol("nvmlDeviceGetCurrentClocksEventReasons") != nil {
		s.reasons = nvml.Device.GetCurrentClocksThrottleReasons
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, returnError("device count", ret)
	}
	if n == 0 {
		return nil, errors.New("no GPU found")
	}
	for i := range n {
		h, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			log.Warn("GPU skipped", zap.Int("index", i), zap.Error(returnError("device handle", ret)))
			continue
		}
		uuid, ret := h.GetUUID()
		if ret != nvml.SUCCESS {
			log.Warn("GPU skipped", zap.Int("index", i), zap.Error(returnError("uuid", ret)))
			continue
		}
		name, ret := h.GetName()
		if ret != nvml.SUCCESS {
			name = "unknown"
		}
		s.devs = append(s.devs, &nvmlDevice{h: h, index: i, uuid: uuid, name: name,
			unsupported: map[string]bool{}, failing: map[string]nvml.Return{}, errors: map[string]float64{}})
	}
	if len(s.devs) == 0 {
		return nil, fmt.Errorf("none of the %d GPUs could be opened", n)
	}
	return s, nil
}

func (s *nvmlSource) shutdown() error {
	if ret := s.lib.Shutdown(); ret != nvml.SUCCESS {
		return returnError("shutdown", ret)
	}
	return nil
}

// throttleReasons are the clocks event reason bits NVML defines, with their label values.
var throttleReasons = []struct {
	bit  uint64
	name string
}{
	{nvml.ClocksEventReasonGpuIdle, "gpu_idle"},
	{nvml.ClocksEventReasonApplicationsClocksSetting, "applications_clocks_setting"},
	{nvml.ClocksEventReasonSwPowerCap, "sw_power_cap"},
	{nvml.ClocksThrottleReasonHwSlowdown, "hw_slowdown"},
	{nvml.ClocksEventReasonSyncBoost, "sync_boost"},
	{nvml.ClocksEventReasonSwThermalSlowdown, "sw_thermal_slowdown"},
	{nvml.ClocksThrottleReasonHwThermalSlowdown, "hw_thermal_slowdown"},
	{nvml.ClocksThrottleReasonHwPowerBrakeSlowdown, "hw_power_brake_slowdown"},
	{nvml.ClocksEventReasonDisplayClockSetting, "display_clock_setting"},
	{nvml.ClocksEventReasonBoardLimit, "board_limit"},
	{nvml.ClocksEventReasonReliability, "reliability"},
}

// reading is one device's sample in the making.
type reading struct {
	d       *nvmlDevice
	dev     *Device
	metrics []prometheus.Metric
}

func (r *reading) gauge(desc *prometheus.Desc, v float64, labels ...string) {
	r.metrics = append(r.metrics, prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v,
		append([]string{r.d.uuid}, labels...)...))
}

func (r *reading) counter(desc *prometheus.Desc, v float64, labels ...string) {
	r.metrics = append(r.metrics, prometheus.MustNewConstMetric(desc, prometheus.CounterValue, v,
		append([]string{r.d.uuid}, labels...)...))
}

// fields are the NVML queries of one sample; name is the field label of
// policyd_gpu_collect_errors_total. Each read appends its metrics only on success.
var fields = []struct {
	name string
	read func(s *nvmlSource, r *reading) nvml.Return
}{
	{"utilization", func(_ *nvmlSource, r *reading) nvml.Return {
		u, ret := r.d.h.GetUtilizationRates()
		if ret == nvml.SUCCESS {
			r.gauge(descUtil, float64(u.Gpu)/100)
			r.gauge(descMemUtil, float64(u.Memory)/100)
		}
		return ret
	}},
	{"memory", func(_ *nvmlSource, r *reading) nvml.Return {
		m, ret := r.d.h.GetMemoryInfo()
		if ret == nvml.SUCCESS {
			r.gauge(descMemUsed, float64(m.Used))
			r.gauge(descMemTotal, float64(m.Total))
			r.dev.MemoryUsedBytes, r.dev.MemoryTotalBytes = m.Used, m.Total
		}
		return ret
	}},
	{"power", func(_ *nvmlSource, r *reading) nvml.Return {
		mw, ret := r.d.h.GetPowerUsage()
		if ret == nvml.SUCCESS {
			r.gauge(descPower, float64(mw)/1000)
		}
		return ret
	}},
	{"power_limit", func(_ *nvmlSource, r *reading) nvml.Return {
		mw, ret := r.d.h.GetEnforcedPowerLimit()
		if ret == nvml.SUCCESS {
			r.gauge(descPowerLimit, float64(mw)/1000)
		}
		return ret
	}},
	{"energy", func(_ *nvmlSource, r *reading) nvml.Return {
		mj, ret := r.d.h.GetTotalEnergyConsumption()
		if ret == nvml.SUCCESS {
			r.counter(descEnergy, float64(mj)/1000)
		}
		return ret
	}},
	{"temperature", func(_ *nvmlSource, r *reading) nvml.Return {
		c, ret := r.d.h.GetTemperature(nvml.TEMPERATURE_GPU)
		if ret == nvml.SUCCESS {
			r.gauge(descTemp, float64(c))
		}
		return ret
	}},
	{"sm_clock", func(_ *nvmlSource, r *reading) nvml.Return {
		mhz, ret := r.d.h.GetClockInfo(nvml.CLOCK_SM)
		if ret == nvml.SUCCESS {
			r.gauge(descSMClock, float64(mhz)*1e6)
		}
		return ret
	}},
	{"throttle_reasons", func(s *nvmlSource, r *reading) nvml.Return {
		bits, ret := s.reasons(r.d.h)
		if ret == nvml.SUCCESS {
			for _, t := range throttleReasons {
				v := 0.0
				if bits&t.bit != 0 {
					v = 1
				}
				r.gauge(descThrottle, v, t.name)
			}
		}
		return ret
	}},
	{"ecc_corrected", func(_ *nvmlSource, r *reading) nvml.Return {
		n, ret := r.d.h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_CORRECTED, nvml.VOLATILE_ECC)
		if ret == nvml.SUCCESS {
			r.counter(descECC, float64(n), "corrected")
		}
		return ret
	}},
	{"ecc_uncorrected", func(_ *nvmlSource, r *reading) nvml.Return {
		n, ret := r.d.h.GetTotalEccErrors(nvml.MEMORY_ERROR_TYPE_UNCORRECTED, nvml.VOLATILE_ECC)
		if ret == nvml.SUCCESS {
			r.counter(descECC, float64(n), "uncorrected")
		}
		return ret
	}},
}

// sample queries every supported field of every GPU once.
func (s *nvmlSource) sample() *snapshot {
	snap := &snapshot{devices: make([]Device, 0, len(s.devs))}
	for _, d := range s.devs {
		dev := Device{UUID: d.uuid, Index: d.index, Name: d.name}
		r := &reading{d: d, dev: &dev}
		r.metrics = append(r.metrics, prometheus.MustNewConstMetric(descInfo, prometheus.GaugeValue, 1,
			d.uuid, strconv.Itoa(d.index), d.name, s.driver))
		for _, f := range fields {
			if d.unsupported[f.name] {
				continue
			}
			ret := f.read(s, r)
			s.note(d, f.name, ret)
		}
		for _, f := range fields {
			if d.unsupported[f.name] {
				dev.Unsupported = append(dev.Unsupported, f.name)
			}
			if n := d.errors[f.name]; n > 0 {
				r.counter(descCollectErrors, n, f.name)
			}
		}
		snap.devices = append(snap.devices, dev)
		snap.metrics = append(snap.metrics, r.metrics...)
	}
	return snap
}

// note records the outcome of one query: NOT_SUPPORTED counts once and retires the field, any
// other failure counts every time and is logged when it starts, changes or ends.
func (s *nvmlSource) note(d *nvmlDevice, field string, ret nvml.Return) {
	switch ret {
	case nvml.SUCCESS:
		if prev, ok := d.failing[field]; ok {
			delete(d.failing, field)
			s.log.Info("GPU field readable again", zap.String("uuid", d.uuid), zap.String("field", field),
				zap.Stringer("after", prev))
		}
	case nvml.ERROR_NOT_SUPPORTED:
		d.unsupported[field] = true
		d.errors[field]++
		delete(d.failing, field)
		s.log.Info("GPU field not supported; not queried again", zap.String("uuid", d.uuid),
			zap.String("field", field))
	default:
		d.errors[field]++
		if prev, ok := d.failing[field]; !ok || prev != ret {
			d.failing[field] = ret
			s.log.Warn("GPU field unreadable", zap.String("uuid", d.uuid), zap.String("field", field),
				zap.Error(returnError(field, ret)))
		}
	}
}
