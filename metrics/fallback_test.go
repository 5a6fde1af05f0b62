package metrics

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// policyd_fallback_total counts per model, version, kind and reason; a 504 is a timeout.
func TestObserveFallback(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m, err := New(reg, &emptyRepo{})
	if err != nil {
		t.Fatal(err)
	}
	m.ObserveFallback("pi", "1.0.0", "constant", "infeasible")
	m.ObserveFallback("pi", "1.0.0", "constant", "infeasible")
	m.ObserveFallback("pi", "1.0.0", "last_action", "passed")
	m.ObserveFallback("pi", "1.0.0", "none", "late")
	err = testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP policyd_fallback_total Requests with a deadline the model did not answer in time, by how they were answered (kind: last_action, constant, version, or none: a 504 or a late answer) and why (reason: passed, infeasible: not run; late: run, answered after the deadline).
# TYPE policyd_fallback_total counter
policyd_fallback_total{kind="constant",model="pi",reason="infeasible",version="1.0.0"} 2
policyd_fallback_total{kind="last_action",model="pi",reason="passed",version="1.0.0"} 1
policyd_fallback_total{kind="none",model="pi",reason="late",version="1.0.0"} 1
`), "policyd_fallback_total")
	if err != nil {
		t.Error(err)
	}
	if got := OutcomeOf(504, false, false); got != OutcomeTimeout {
		t.Errorf("OutcomeOf(504) = %s, want timeout", got)
	}
	m.deleteSeries([]string{"pi", "1.0.0"}, false)
	if n, _ := testutil.GatherAndCount(reg, "policyd_fallback_total"); n != 0 {
		t.Errorf("%d fallback series left after the version's deletion", n)
	}
}
