//go:build !cgo

package gpu

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

type options struct{}

// New, in a build without cgo, cannot load NVML: it logs one Info line and returns a disabled
// collector that exports nothing. The error is only for bad arguments.
func New(log *zap.Logger, interval time.Duration, reg prometheus.Registerer, opts ...Option) (*Collector, error) {
	c, err := newCollector(log, interval, reg)
	if err != nil {
		return nil, err
	}
	c.log.Info("NVML not available: policyd was built without cgo; GPU metrics disabled")
	return c, nil
}
