package metrics

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/policyd/policyd/repository"
)

// emptyRepo serves nothing: every version is unknown.
type emptyRepo struct {
	ready bool
	obs   repository.VersionObserver
}

func (r *emptyRepo) All() []*repository.Version     { return nil }
func (r *emptyRepo) Index() []repository.IndexEntry { return nil }
func (r *emptyRepo) Get(model, version string) (*repository.Version, error) {
	return nil, &repository.NotFoundError{Model: model}
}
func (r *emptyRepo) Ready() bool                              { return r.ready }
func (r *emptyRepo) SetObserver(o repository.VersionObserver) { r.obs = o }

func TestOutcomeOf(t *testing.T) {
	tests := []struct {
		code            int
		retry, timedOut bool
		want            string
	}{
		{200, false, false, "success"},
		{400, false, false, "client_error"},
		{413, false, false, "client_error"},
		{404, false, false, "not_found"},
		{429, true, false, "overloaded"},
		{503, true, false, "overloaded"},
		{503, true, true, "timeout"},
		{503, false, false, "unavailable"},
		{500, false, false, "internal_error"},
		{502, false, false, "internal_error"},
	}
	for _, tc := range tests {
		if got := OutcomeOf(tc.code, tc.retry, tc.timedOut).String(); got != tc.want {
			t.Errorf("OutcomeOf(%d, retry %v, timed out %v) = %s, want %s", tc.code, tc.retry, tc.timedOut, got, tc.want)
		}
	}
}

func TestNewRegistersOnItsRegistry(t *testing.T) {
	repo := &emptyRepo{}
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg, repo)
	if err != nil {
		t.Fatal(err)
	}
	if repo.obs != m {
		t.Error("New did not make the metrics follow the repository")
	}
	if _, err := New(reg, &emptyRepo{}); err == nil {
		t.Error("a second New on the same registry succeeded")
	}
	// The first families are unregistered again after the clash: the registry holds one set.
	if n, err := testutil.GatherAndCount(reg, "policyd_ready"); err != nil || n != 1 {
		t.Errorf("policyd_ready series: %d, %v", n, err)
	}
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP policyd_ready 1 when GET /v2/health/ready answers 200 (every configured model version loaded and warmed up), else 0.
# TYPE policyd_ready gauge
policyd_ready 0
`), "policyd_ready"); err != nil {
		t.Error(err)
	}
	repo.ready = true
	if err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP policyd_ready 1 when GET /v2/health/ready answers 200 (every configured model version loaded and warmed up), else 0.
# TYPE policyd_ready gauge
policyd_ready 1
`), "policyd_ready"); err != nil {
		t.Errorf("once the repository is ready: %v", err)
	}
}

// A model that is not served is counted with every label empty: the URL's names never become
// label values.
func TestObserveRequestOfAnUnknownModel(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg, &emptyRepo{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "b", "c"} {
		m.ObserveRequest(name, "1.0.0", "v2", 404, OutcomeFromCode, time.Millisecond)
	}
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP policyd_requests_total Requests answered, by model version, protocol (v2, v2-binary, predict, grpc, grpc-stream), HTTP status code (for gRPC the status the same answer has over HTTP) and outcome (success, client_error, not_found, overloaded, timeout, unavailable, internal_error).
# TYPE policyd_requests_total counter
policyd_requests_total{backend="",code="404",device="",model="",outcome="not_found",protocol="v2",version=""} 3
`), "policyd_requests_total")
	if err != nil {
		t.Error(err)
	}
	if n, _ := testutil.GatherAndCount(reg, "policyd_request_duration_seconds"); n != 1 {
		t.Errorf("request duration series: %d, want 1", n)
	}
}

// The reload families keep the names, help and values cmd/policyd exported before they moved
// here; a second NewReload on the same registry fails and leaves the first set in place.
func TestReloadFamilies(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := NewReload(reg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewReload(reg); err == nil {
		t.Error("a second NewReload on the same registry succeeded")
	}
	const help = `# HELP policyd_config_last_reload_successful 1 when the last configuration reload was applied (or changed nothing), 0 when it was rejected or failed.
# TYPE policyd_config_last_reload_successful gauge
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(help+"policyd_config_last_reload_successful 1\n"),
		"policyd_config_last_reload_successful"); err != nil {
		t.Errorf("before any reload: %v", err)
	}
	m.ObserveReload("applied", time.Unix(1700000000, 0), 0)
	m.ObserveReload("rejected", time.Unix(1700000060, 0), 2)
	m.VerifyFailed("a", "1.0.0")
	err = testutil.GatherAndCompare(reg, strings.NewReader(help+`policyd_config_last_reload_successful 0
# HELP policyd_config_reloads_total Configuration reloads by outcome: applied, unchanged, rejected (invalid config; the old one keeps running), failed (valid config the server could not apply).
# TYPE policyd_config_reloads_total counter
policyd_config_reloads_total{outcome="applied"} 1
policyd_config_reloads_total{outcome="failed"} 0
policyd_config_reloads_total{outcome="rejected"} 1
policyd_config_reloads_total{outcome="unchanged"} 0
# HELP policyd_config_last_reload_timestamp_seconds Unix time of the last configuration reload attempt.
# TYPE policyd_config_last_reload_timestamp_seconds gauge
policyd_config_last_reload_timestamp_seconds 1.70000006e+09
# HELP policyd_config_restart_pending_changes Configuration changes loaded but held back until a restart (e.g. server.addr).
# TYPE policyd_config_restart_pending_changes gauge
policyd_config_restart_pending_changes 2
# HELP policyd_artifact_verification_failures_total Artifact verifications that failed (checked at start and at every reload): the version is refused, or, with artifacts.on_tamper: keep, one already serving serves on.
# TYPE policyd_artifact_verification_failures_total counter
policyd_artifact_verification_failures_total{model="a",version="1.0.0"} 1
`))
	if err != nil {
		t.Error(err)
	}
}
