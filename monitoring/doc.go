// Package monitoring holds no code: it is the home of the Grafana dashboard (grafana/) and the
// Prometheus rules and their promtool tests (prometheus/), and its Go tests check that every
// PromQL expression there parses and names only metrics policyd exports
// (docs/observability.md).
package monitoring
