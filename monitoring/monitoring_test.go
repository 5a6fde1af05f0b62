package monitoring

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/prometheus/promql/parser"
	"go.yaml.in/yaml/v3"
)

const (
	docPath       = "../docs/observability.md"
	dashboardPath = "grafana/policyd.json"
	rulesPath     = "prometheus/policyd.rules.yml"
	rulesTestPath = "prometheus/policyd.rules.test.yml"
)

// contract is every series name policyd exports: the metric table of docs/observability.md
// (histograms with their _bucket, _sum and _count series) and what client_golang's Go and
// process collectors export.
func contract(t *testing.T) map[string]bool {
	t.Helper()
	doc := readFile(t, docPath)
	names := map[string]bool{}
	row := regexp.MustCompile("(?m)^\\| `([a-z_:]+)` \\| (counter|gauge|histogram|summary) \\|")
	for _, m := range row.FindAllStringSubmatch(doc, -1) {
		addSeries(names, m[1], m[2])
	}
	if len(names) < 30 {
		t.Fatalf("found %d metrics in the table of %s; is the table still there?", len(names), docPath)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		kind := map[dto.MetricType]string{dto.MetricType_HISTOGRAM: "histogram", dto.MetricType_SUMMARY: "summary"}[mf.GetType()]
		addSeries(names, mf.GetName(), kind)
	}
	return names
}

func addSeries(names map[string]bool, name, kind string) {
	names[name] = true
	switch kind {
	case "histogram":
		names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
	case "summary":
		names[name+"_sum"], names[name+"_count"] = true, true
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// grafanaVar is a Grafana variable in a query: $name, ${name} or ${name:format}.
var grafanaVar = regexp.MustCompile(`\$\{?(\w+)(?::\w+)?\}?`)

// substitute turns a Grafana query into PromQL: interval variables become durations, the
// others a value that is valid inside the label matchers they stand in.
func substitute(expr string) string {
	return grafanaVar.ReplaceAllStringFunc(expr, func(v string) string {
		switch grafanaVar.FindStringSubmatch(v)[1] {
		case "__rate_interval", "__interval", "__range":
			return "5m"
		case "__interval_ms", "__range_s", "__range_ms":
			return "300"
		}
		return "x"
	})
}

// checkExpr parses expr and reports metric names outside known, selectors without a metric
// name, and histogram_quantile calls that do not aggregate by le. It returns the names used.
func checkExpr(t *testing.T, where, expr string, known map[string]bool) []string {
	t.Helper()
	e, err := parser.ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %v\n%s", where, err, expr)
		return nil
	}
	var used []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			if n.Name == "" {
				t.Errorf("%s: selector %s names no metric", where, n)
				break
			}
			used = append(used, n.Name)
			if !known[n.Name] {
				t.Errorf("%s: %s is not a policyd metric (docs/observability.md)", where, n.Name)
			}
		case *parser.Call:
			if n.Func.Name != "histogram_quantile" {
				break
			}
			agg, ok := n.Args[1].(*parser.AggregateExpr)
			if !ok || agg.Without || !slices.Contains(agg.Grouping, "le") {
				t.Errorf("%s: histogram_quantile over %s does not aggregate by le", where, n.Args[1])
			}
		}
		return nil
	})
	return used
}

// dashboard is the part of the Grafana JSON model the test reads.
type dashboard struct {
	UID           string  `json:"uid"`
	Title         string  `json:"title"`
	SchemaVersion int     `json:"schemaVersion"`
	Panels        []panel `json:"panels"`
	Templating    struct {
		List []struct {
			Name       string          `json:"name"`
			Type       string          `json:"type"`
			Query      json.RawMessage `json:"query"`
			Datasource *datasource     `json:"datasource"`
		} `json:"list"`
	} `json:"templating"`
	Annotations struct {
		List []struct {
			Name       string      `json:"name"`
			Expr       string      `json:"expr"`
			Datasource *datasource `json:"datasource"`
		} `json:"list"`
	} `json:"annotations"`
}

type datasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type panel struct {
	ID         int                      `json:"id"`
	Type       string                   `json:"type"`
	Title      string                   `json:"title"`
	Datasource *datasource              `json:"datasource"`
	GridPos    struct{ H, W, X, Y int } `json:"gridPos"`
	Targets    []struct {
		RefID      string      `json:"refId"`
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
	Panels []panel `json:"panels"` // a collapsed row's panels
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal([]byte(readFile(t, dashboardPath)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	return d
}

// dashboardExprs is every PromQL expression of the dashboard, Grafana variables substituted,
// keyed by where it is.
func dashboardExprs(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	exprs := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				exprs[fmt.Sprintf("panel %q target %s", p.Title, tg.RefID)] = substitute(tg.Expr)
			}
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		if a.Expr != "" {
			exprs[fmt.Sprintf("annotation %q", a.Name)] = substitute(a.Expr)
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *(\w+)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Errorf("variable %s: query: %v", v.Name, err)
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		exprs["variable "+v.Name] = substitute(m[1])
	}
	return exprs
}

func TestDashboardQueriesUseOnlyPolicydMetrics(t *testing.T) {
	known := contract(t)
	d := loadDashboard(t)
	exprs := dashboardExprs(t, d)
	if len(exprs) < 40 {
		t.Fatalf("only %d queries in the dashboard", len(exprs))
	}
	for where, expr := range exprs {
		if strings.TrimSpace(expr) == "" {
			t.Errorf("%s: empty query", where)
			continue
		}
		checkExpr(t, where, expr, known)
	}
}

func TestDashboardStructure(t *testing.T) {
	d := loadDashboard(t)
	if d.UID == "" || d.Title == "" || d.SchemaVersion < 36 {
		t.Errorf("uid %q, title %q, schemaVersion %d: want both set and schemaVersion >= 36", d.UID, d.Title, d.SchemaVersion)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
		if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != "${datasource}") {
			t.Errorf("variable %s does not query ${datasource}", v.Name)
		}
	}
	for name, typ := range map[string]string{"datasource": "datasource", "instance": "query", "model": "query",
		"version": "query", "device": "query", "gpu": "query"} {
		if vars[name] != typ {
			t.Errorf("variable %s: type %q, want %q", name, vars[name], typ)
		}
	}
	ids := map[int]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if prev, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, prev)
			}
			ids[p.ID] = p.Title
			if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
				t.Errorf("panel %q: gridPos %+v outside the 24 columns", p.Title, g)
			}
			if p.Type == "row" {
				continue
			}
			if p.Title == "" || len(p.Targets) == 0 {
				t.Errorf("panel %d: title %q, %d targets", p.ID, p.Title, len(p.Targets))
			}
			if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: datasource %+v, want uid ${datasource}", p.Title, p.Datasource)
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || tg.Datasource.UID != "${datasource}" {
					t.Errorf("panel %q target %s: datasource %+v, want uid ${datasource}", p.Title, tg.RefID, tg.Datasource)
				}
			}
		}
	}
	walk(d.Panels)
	for _, a := range d.Annotations.List {
		if a.Expr != "" && (a.Datasource == nil || a.Datasource.UID != "${datasource}") {
			t.Errorf("annotation %q: datasource %+v, want uid ${datasource}", a.Name, a.Datasource)
		}
	}
}

// rules is the part of a Prometheus rule file the test reads.
type rules struct {
	Groups []struct {
		Name  string `yaml:"name"`
		Rules []struct {
			Record      string            `yaml:"record"`
			Alert       string            `yaml:"alert"`
			Expr        string            `yaml:"expr"`
			Labels      map[string]string `yaml:"labels"`
			Annotations map[string]string `yaml:"annotations"`
		} `yaml:"rules"`
	} `yaml:"groups"`
}

func loadRules(t *testing.T) rules {
	t.Helper()
	var r rules
	if err := yaml.Unmarshal([]byte(readFile(t, rulesPath)), &r); err != nil {
		t.Fatalf("%s: %v", rulesPath, err)
	}
	return r
}

// ruleNames is contract plus what rules may also read: up and the recorded series.
func ruleNames(t *testing.T, r rules) map[string]bool {
	t.Helper()
	known := contract(t)
	known["up"] = true
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			if rule.Record != "" {
				known[rule.Record] = true
			}
		}
	}
	return known
}

func TestRulesUseOnlyPolicydMetrics(t *testing.T) {
	r := loadRules(t)
	known := ruleNames(t, r)
	n := 0
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			checkExpr(t, "rule "+rule.Record+rule.Alert, rule.Expr, known)
			n++
		}
	}
	if n < 10 {
		t.Fatalf("only %d rules in %s", n, rulesPath)
	}
}

// TestAlertsAreDocumentedAndTested: every alert has a severity, the annotations an operator
// reads, a runbook section in docs/observability.md, and promtool cases where it fires and
// where it stays silent.
func TestAlertsAreDocumentedAndTested(t *testing.T) {
	doc := readFile(t, docPath)
	var tests struct {
		RuleFiles []string `yaml:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string           `yaml:"alertname"`
				ExpAlerts []map[string]any `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	if err := yaml.Unmarshal([]byte(readFile(t, rulesTestPath)), &tests); err != nil {
		t.Fatalf("%s: %v", rulesTestPath, err)
	}
	if !slices.Contains(tests.RuleFiles, "policyd.rules.yml") {
		t.Errorf("%s does not test policyd.rules.yml: rule_files %v", rulesTestPath, tests.RuleFiles)
	}
	fires, silent := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				silent[a.Alertname] = true
			}
		}
	}
	var alerts []string
	for _, g := range loadRules(t).Groups {
		for _, rule := range g.Rules {
			if rule.Alert == "" {
				continue
			}
			name := rule.Alert
			alerts = append(alerts, name)
			if s := rule.Labels["severity"]; s != "critical" && s != "warning" {
				t.Errorf("%s: severity %q, want critical or warning", name, s)
			}
			for _, a := range []string{"summary", "description", "runbook"} {
				if rule.Annotations[a] == "" {
					t.Errorf("%s: no %s annotation", name, a)
				}
			}
			anchor := "docs/observability.md#" + strings.ToLower(name)
			if rule.Annotations["runbook"] != anchor {
				t.Errorf("%s: runbook %q, want %q", name, rule.Annotations["runbook"], anchor)
			}
			if !strings.Contains(doc, "\n### "+name+"\n") {
				t.Errorf("%s: no \"### %s\" section in %s", name, name, docPath)
			}
			if !fires[name] || !silent[name] {
				t.Errorf("%s: promtool tests where it fires: %v, where it stays silent: %v; want both", name, fires[name], silent[name])
			}
		}
	}
	for _, want := range []string{"PolicydLatencySLOBurnFast", "PolicydLatencySLOBurnSlow", "PolicydHighErrorRate",
		"PolicydNotReady", "PolicydDown", "PolicydGPUMemoryHigh", "PolicydArtifactVerificationFailed",
		"PolicydConfigReloadFailed"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("alert %s is missing", want)
		}
	}
}

// TestLatencyBucketsAreDocumented: an le the rules or the dashboard select on a duration
// histogram must be one of the documented duration buckets, or the selection is empty.
func TestLatencyBucketsAreDocumented(t *testing.T) {
	doc := readFile(t, docPath)
	m := regexp.MustCompile("\\*\\*Duration buckets\\*\\* \\(seconds\\)[^`]*`([^`]+)`").FindStringSubmatch(doc)
	if m == nil {
		t.Fatalf("no **Duration buckets** list in %s", docPath)
	}
	buckets := strings.Split(m[1], ", ")
	if !slices.Contains(buckets, "0.01") {
		t.Errorf("documented duration buckets %v lack 0.01, which the latency SLO rules read", buckets)
	}
	le := regexp.MustCompile(`_duration_seconds_bucket\{[^}]*le="([^"]+)"`)
	sources := readFile(t, rulesPath) + readFile(t, dashboardPath)
	found := le.FindAllStringSubmatch(strings.ReplaceAll(sources, `\"`, `"`), -1)
	if len(found) == 0 {
		t.Fatal("no le matcher on a duration histogram in the rules or the dashboard")
	}
	for _, f := range found {
		if !slices.Contains(buckets, f[1]) {
			t.Errorf("le=%q is selected but is not a documented duration bucket %v", f[1], buckets)
		}
	}
}

// TestEveryPolicydMetricIsShown: each documented policyd metric appears in the dashboard or the
// alerts, so a metric added to the contract gets a panel or says why not here.
func TestEveryPolicydMetricIsShown(t *testing.T) {
	notShown := map[string]string{
		"policyd_config_restart_pending_changes": "shown in health details; nothing to graph",
	}
	known := contract(t)
	used := map[string]bool{}
	for where, expr := range dashboardExprs(t, loadDashboard(t)) {
		for _, n := range checkExpr(t, where, expr, known) {
			used[n] = true
		}
	}
	r := loadRules(t)
	ruleKnown := ruleNames(t, r)
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			for _, n := range checkExpr(t, rule.Alert+rule.Record, rule.Expr, ruleKnown) {
				used[n] = true
			}
		}
	}
	doc := readFile(t, docPath)
	for _, m := range regexp.MustCompile("(?m)^\\| `(policyd_[a-z_]+)` \\| (\\w+) \\|").FindAllStringSubmatch(doc, -1) {
		name, kind := m[1], m[2]
		shown := used[name] || used[name+"_bucket"] || used[name+"_sum"] || used[name+"_count"]
		if !shown && notShown[name] == "" {
			t.Errorf("%s (%s) is neither on the dashboard nor in an alert", name, kind)
		}
	}
}
