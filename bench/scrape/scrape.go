// Package scrape reads a server's Prometheus /metrics for the benchmarks.
package scrape

import (
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/valyala/fasthttp"
)

// Metrics fetches http://addr/metrics and returns the values of the named series (summed
// over their labels); a name absent from the exposition is absent from the map.
func Metrics(addr string, names ...string) (map[string]float64, error) {
	code, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/metrics", 5*time.Second)
	if err != nil {
		return nil, err
	}
	if code != 200 {
		return nil, fmt.Errorf("GET /metrics: status %d", code)
	}
	return Parse(string(body), names...), nil
}

// Parse reads Prometheus text exposition (with prometheus/common's parser): for each wanted
// name, the sum of its samples (gauges, counters, untyped). A name absent from the text is
// absent from the map. Text the parser refuses yields an empty map.
func Parse(text string, names ...string) map[string]float64 {
	out := map[string]float64{}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return out
	}
	for _, n := range names {
		mf, ok := families[n]
		if !ok {
			continue
		}
		sum := 0.0
		for _, m := range mf.GetMetric() {
			switch {
			case m.Gauge != nil:
				sum += m.GetGauge().GetValue()
			case m.Counter != nil:
				sum += m.GetCounter().GetValue()
			case m.Untyped != nil:
				sum += m.GetUntyped().GetValue()
			}
		}
		out[n] = sum
	}
	return out
}

// Histogram fetches http://addr/metrics and returns the sum and count of the histogram name
// over the series whose labels include every pair of match (nil: all series). ok is false when
// the exposition has no such series.
func Histogram(addr, name string, match map[string]string) (sum, count float64, ok bool, err error) {
	code, body, err := fasthttp.GetTimeout(nil, "http://"+addr+"/metrics", 5*time.Second)
	if err != nil {
		return 0, 0, false, err
	}
	if code != 200 {
		return 0, 0, false, fmt.Errorf("GET /metrics: status %d", code)
	}
	sum, count, ok = ParseHistogram(string(body), name, match)
	return sum, count, ok, nil
}

// ParseHistogram is Histogram over Prometheus text exposition.
func ParseHistogram(text, name string, match map[string]string) (sum, count float64, ok bool) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return 0, 0, false
	}
	mf, found := families[name]
	if !found {
		return 0, 0, false
	}
series:
	for _, m := range mf.GetMetric() {
		h := m.GetHistogram()
		if h == nil {
			continue
		}
		for k, v := range match {
			hit := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					hit = true
				}
			}
			if !hit {
				continue series
			}
		}
		sum += h.GetSampleSum()
		count += float64(h.GetSampleCount())
		ok = true
	}
	return sum, count, ok
}
