package soak

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// WriteFiles writes report.json, report.txt and samples.csv into dir.
func (r *Report) WriteFiles(dir string) error {
	js, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "report.txt"), []byte(r.Text()), 0o644); err != nil {
		return err
	}
	var csv strings.Builder
	csv.WriteString("t_s,rss_bytes,rss_anon_bytes,rss_file_bytes,peak_rss_bytes,threads,go_heap_inuse_bytes,go_sys_bytes,goroutines\n")
	opt := func(v *float64) string {
		if v == nil {
			return ""
		}
		return fmt.Sprintf("%.0f", *v)
	}
	for _, s := range r.Samples {
		fmt.Fprintf(&csv, "%.1f,%d,%d,%d,%d,%d,%s,%s,%s\n", s.T, s.RSS, s.Anon, s.File, s.Peak, s.Threads,
			opt(s.HeapInuse), opt(s.GoSys), opt(s.Goroutines))
	}
	return os.WriteFile(filepath.Join(dir, "samples.csv"), []byte(csv.String()), 0o644)
}

// Text is the report as a few lines for people.
func (r *Report) Text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "policyd soak %s (%s, commit %s)\n", r.RunID, r.Date, r.Commit)
	if r.Command != "" {
		fmt.Fprintf(&b, "command: %s\n", r.Command)
	}
	fmt.Fprintf(&b, "machine: %s, %d CPUs; loadavg before %s, after %s\n", r.CPU, r.Nproc, at(r.Load, 0), at(r.Load, 1))
	if len(r.Env) > 0 {
		fmt.Fprintf(&b, "server env: %s\n", strings.Join(r.Env, " "))
	}
	fmt.Fprintf(&b, "load: %.0fs closed loop over %d connections, sampled every %.0fs; slope after the first %.0fs\n",
		r.Duration, r.Conns, r.Every, r.Exclude)
	for _, l := range r.Loads {
		fmt.Fprintf(&b, "  %-10s c%-3d %9d requests %8.0f req/s  p50 %5d µs  p99 %6d µs  errors %d\n",
			l.Label, l.Concurrency, l.Requests, l.RPS, l.P50, l.P99, l.Errors)
	}
	fmt.Fprintf(&b, "requests: %d (%.0f req/s), failed: %d\n", r.Requests, r.RPS, r.Errors)
	fmt.Fprintf(&b, "RSS after warm-up:      %7.3f MiB/min (fit %.1f → %.1f MiB over %d samples)\n",
		r.RSS.SlopeMiBPerMin, r.RSS.StartMiB, r.RSS.EndMiB, r.RSS.Samples)
	fmt.Fprintf(&b, "RssAnon after warm-up:  %7.3f MiB/min (fit %.1f → %.1f MiB)\n", r.Anon.SlopeMiBPerMin, r.Anon.StartMiB, r.Anon.EndMiB)
	if r.Heap != nil {
		fmt.Fprintf(&b, "Go heap after warm-up:  %7.3f MiB/min (fit %.1f → %.1f MiB)\n", r.Heap.SlopeMiBPerMin, r.Heap.StartMiB, r.Heap.EndMiB)
	}
	fmt.Fprintf(&b, "goroutines first/last/max after warm-up: %.0f/%.0f/%.0f; threads %d/%d/%d\n",
		r.Goroutines[0], r.Goroutines[1], r.Goroutines[2], r.Threads[0], r.Threads[1], r.Threads[2])
	if len(r.Samples) > 0 {
		first, last := r.Samples[0], r.Samples[len(r.Samples)-1]
		fmt.Fprintf(&b, "RSS first/last sample: %.1f / %.1f MiB; peak %.1f MiB\n", mib(first.RSS), mib(last.RSS), mib(last.Peak))
	}
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "failure: %s\n", f)
	}
	fmt.Fprintf(&b, "target: RSS slope <= %.2f MiB/min and 0 failed requests: %s\n", r.MaxSlope, r.Verdict)
	return b.String()
}

func at(ss []string, i int) string {
	if i < len(ss) {
		return ss[i]
	}
	return "?"
}
