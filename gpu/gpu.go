// Package gpu samples the NVIDIA GPUs of the machine through NVML (github.com/NVIDIA/go-nvml) on
// an interval and exports the latest sample as Prometheus metrics (policyd_gpu_*), one series per
// GPU UUID. NVML is called only by the sampling goroutine, never on the scrape path: a scrape
// reads the last snapshot. Where NVML is missing (no libnvidia-ml.so.1, no driver, no GPU, or a
// binary built without cgo) the collector logs one Info line, exports nothing and its methods
// do nothing.
//
// Wiring, in cmd/policyd:
//
//	gpus, err := gpu.New(log.Named("gpu"), 10*time.Second, reg)
//	if err != nil { ... }          // only for bad arguments or a metric name clash
//	gpus.Start()
//	defer gpus.Close()             // stops sampling, shuts NVML down, unregisters the metrics
//	... gpus.Devices()             // for /v2/health/details
package gpu

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Device is what the last sample knew about one GPU, for health details.
type Device struct {
	UUID             string `json:"uuid"`
	Index            int    `json:"index"`
	Name             string `json:"name"`
	MemoryTotalBytes uint64 `json:"memory_total_bytes"`
	MemoryUsedBytes  uint64 `json:"memory_used_bytes"`
	// Unsupported lists the fields this GPU answered NOT_SUPPORTED for; they are not queried again.
	Unsupported []string `json:"unsupported,omitempty"`
}

// Option changes how New finds NVML (see WithNVML in cgo builds).
type Option func(*options)

// sampler is the NVML side: it is called from one goroutine at a time (New, then the loop).
type sampler interface {
	sample() *snapshot
	shutdown() error
}

// snapshot is one sample of every GPU, with the metrics it exports already built.
type snapshot struct {
	devices []Device
	metrics []prometheus.Metric
}

// Collector samples the GPUs on an interval and is a prometheus.Collector over the last sample.
// Safe for concurrent use.
type Collector struct {
	log      *zap.Logger
	interval time.Duration
	reg      prometheus.Registerer
	src      sampler // nil when NVML is not available: everything is a no-op then

	snap atomic.Pointer[snapshot]

	mu      sync.Mutex
	started bool
	closed  bool
	stop    chan struct{}
	done    chan struct{}
}

var (
	uuidLabel = []string{"uuid"}

	descInfo = prometheus.NewDesc("policyd_gpu_info",
		"1 for every GPU NVML reports, with its index, product name and the driver version.",
		[]string{"uuid", "index", "name", "driver"}, nil)
	descUtil = prometheus.NewDesc("policyd_gpu_utilization_ratio",
		"Fraction of the last sample period during which a kernel ran on the GPU (NVML utilization.gpu / 100).",
		uuidLabel, nil)
	descMemUtil = prometheus.NewDesc("policyd_gpu_memory_utilization_ratio",
		"Fraction of the last sample period during which device memory was read or written (NVML utilization.memory / 100).",
		uuidLabel, nil)
	descMemUsed = prometheus.NewDesc("policyd_gpu_memory_used_bytes",
		"Device memory allocated by all processes and the driver.", uuidLabel, nil)
	descMemTotal = prometheus.NewDesc("policyd_gpu_memory_total_bytes",
		"Device memory installed.", uuidLabel, nil)
	descPower = prometheus.NewDesc("policyd_gpu_power_watts",
		"Power draw of the board.", uuidLabel, nil)
	descPowerLimit = prometheus.NewDesc("policyd_gpu_power_limit_watts",
		"Power limit the driver enforces (the lowest of the configured, default and board limits).", uuidLabel, nil)
	descEnergy = prometheus.NewDesc("policyd_gpu_energy_joules_total",
		"Energy the GPU consumed since the driver was last loaded.", uuidLabel, nil)
	descTemp = prometheus.NewDesc("policyd_gpu_temperature_celsius",
		"GPU core temperature.", uuidLabel, nil)
	descSMClock = prometheus.NewDesc("policyd_gpu_sm_clock_hertz",
		"Current streaming-multiprocessor clock.", uuidLabel, nil)
	descThrottle = prometheus.NewDesc("policyd_gpu_throttle_reasons",
		"1 while the reason holds the clocks down (NVML clocks event reasons), 0 otherwise; one series per reason.",
		[]string{"uuid", "reason"}, nil)
	descECC = prometheus.NewDesc("policyd_gpu_ecc_errors_total",
		"Volatile ECC errors (since the driver was last loaded) by type: corrected, uncorrected.",
		[]string{"uuid", "type"}, nil)
	descCollectErrors = prometheus.NewDesc("policyd_gpu_collect_errors_total",
		"NVML queries that failed, by field. A field the GPU does not support counts once and is not queried again.",
		[]string{"uuid", "field"}, nil)

	allDescs = []*prometheus.Desc{descInfo, descUtil, descMemUtil, descMemUsed, descMemTotal, descPower,
		descPowerLimit, descEnergy, descTemp, descSMClock, descThrottle, descECC, descCollectErrors}
)

// newCollector checks New's arguments and returns a disabled collector (src == nil).
func newCollector(log *zap.Logger, interval time.Duration, reg prometheus.Registerer) (*Collector, error) {
	var errs []error
	if interval <= 0 {
		errs = append(errs, fmt.Errorf("gpu: interval must be positive, got %v", interval))
	}
	if reg == nil {
		errs = append(errs, errors.New("gpu: prometheus.Registerer is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Collector{log: log, interval: interval, reg: reg,
		stop: make(chan struct{}), done: make(chan struct{})}, nil
}

// enable takes the first sample and registers the metrics; on a registration error it shuts
// the sampler down and returns the error.
func (c *Collector) enable(src sampler) error {
	c.src = src
	c.refresh()
	if err := c.reg.Register(c); err != nil {
		c.src = nil
		c.snap.Store(nil)
		return errors.Join(fmt.Errorf("gpu: register metrics: %w", err), src.shutdown())
	}
	return nil
}

// Start begins sampling every interval (the first sample was taken by New). It does nothing
// when NVML is not available, when already started, or after Close.
func (c *Collector) Start() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.src == nil || c.started || c.closed {
		return
	}
	c.started = true
	go c.loop()
}

func (c *Collector) loop() {
	defer close(c.done)
	t := time.NewTicker(c.interval)
	defer t.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
			c.refresh()
		}
	}
}

// refresh takes one sample and makes it the one scrapes see.
func (c *Collector) refresh() { c.snap.Store(c.src.sample()) }

// Close stops sampling, waits for the sampling goroutine, shuts NVML down and unregisters the
// metrics. Idempotent; safe without Start.
func (c *Collector) Close() error {
	c.mu.Lock()
	if c.closed || c.src == nil {
		c.closed = true
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	started := c.started
	c.mu.Unlock()

	close(c.stop)
	if started {
		<-c.done
	}
	c.reg.Unregister(c)
	c.snap.Store(nil)
	if err := c.src.shutdown(); err != nil {
		return fmt.Errorf("gpu: nvml shutdown: %w", err)
	}
	return nil
}

// Enabled reports whether NVML was found with at least one GPU.
func (c *Collector) Enabled() bool { return c.snap.Load() != nil }

// Devices returns the GPUs of the last sample (nil when NVML is not available or after Close).
// The caller owns the result.
func (c *Collector) Devices() []Device {
	s := c.snap.Load()
	if s == nil {
		return nil
	}
	out := slices.Clone(s.devices)
	for i := range out {
		out[i].Unsupported = slices.Clone(out[i].Unsupported)
	}
	return out
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

// Collect implements prometheus.Collector: it sends the last snapshot and never calls NVML.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snap.Load()
	if s == nil {
		return
	}
	for _, m := range s.metrics {
		ch <- m
	}
}
