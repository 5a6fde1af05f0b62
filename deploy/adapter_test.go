package deploy

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"text/template"

	promlabels "github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

const adapterDir = "kubernetes/prometheus-adapter"

// adapterConfig mirrors the prometheus-adapter configuration file's fields that the rules here
// use (sigs.k8s.io/prometheus-adapter, pkg/config: MetricsDiscoveryConfig, DiscoveryRule); a
// key it does not know is an error.
type adapterConfig struct {
	Rules []adapterRule `json:"rules"`
}

type adapterRule struct {
	SeriesQuery   string `json:"seriesQuery"`
	SeriesFilters []struct {
		Is    string `json:"is,omitempty"`
		IsNot string `json:"isNot,omitempty"`
	} `json:"seriesFilters,omitempty"`
	Resources struct {
		Overrides map[string]struct {
			Group    string `json:"group,omitempty"`
			Resource string `json:"resource"`
		} `json:"overrides,omitempty"`
		Template string `json:"template,omitempty"`
	} `json:"resources"`
	Name struct {
		Matches string `json:"matches"`
		As      string `json:"as"`
	} `json:"name"`
	MetricsQuery string `json:"metricsQuery"`
}

// strictJSON decodes YAML into v as the API server decodes with fieldValidation=Strict:
// unknown and duplicate fields are errors, field names are case-sensitive.
func strictJSON(t *testing.T, what string, y []byte, v any) {
	t.Helper()
	j, err := yaml.YAMLToJSON(y)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	strict, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	for _, e := range strict {
		t.Errorf("%s: %v", what, e)
	}
}

// adapterMetrics checks the adapter rules (the ConfigMap deploy/kubernetes/prometheus-adapter
// renders) and returns the custom metrics they serve for pods.
func adapterMetrics(t *testing.T) map[string]bool {
	t.Helper()
	objs := decodeKube(t, adapterDir)
	cm := one(t, adapterDir, "ConfigMap", objs.configMaps)
	if cm.Name != "adapter-config" || cm.Namespace != "monitoring" {
		t.Errorf("%s: ConfigMap %s/%s, want monitoring/adapter-config (what kube-prometheus's adapter reads)", adapterDir, cm.Namespace, cm.Name)
	}
	var cfg adapterConfig
	strictJSON(t, adapterDir+" config.yaml", []byte(cm.Data["config.yaml"]), &cfg)
	served := map[string]bool{}
	for i, r := range cfg.Rules {
		matchers, err := parser.ParseMetricSelector(r.SeriesQuery)
		if err != nil {
			t.Errorf("rule %d: seriesQuery %q: %v", i, r.SeriesQuery, err)
			continue
		}
		var series string
		for _, m := range matchers {
			if m.Name == "__name__" {
				series = m.Value
			}
		}
		// the metric must be one policyd exports, as a gauge with the model version labels
		kind, lbls, ok := metricLabels(t, series)
		if !ok || kind != "gauge" || lbls != "L" {
			t.Errorf("rule %d: %s is not a gauge with the labels L in %s (found %v: %q %q)", i, series, observabilityDoc, ok, kind, lbls)
		}
		for _, res := range []string{"namespace", "pod"} {
			if r.Resources.Overrides[res].Resource != res {
				t.Errorf("rule %d: the label %s does not map to the resource %s (a pod metric needs both)", i, res, res)
			}
			if !slices.ContainsFunc(matchers, func(m *promlabels.Matcher) bool { return m.Name == res }) {
				t.Errorf("rule %d: seriesQuery %q does not require the label %s", i, r.SeriesQuery, res)
			}
		}
		if r.Name.As == "" || r.Name.Matches != "^"+series+"$" {
			t.Errorf("rule %d: name %+v: want matches ^%s$ and an explicit as", i, r.Name, series)
		}
		// the adapter fills the query template per request; it must make valid PromQL
		tmpl, err := template.New("metricsQuery").Delims("<<", ">>").Parse(r.MetricsQuery)
		if err != nil {
			t.Errorf("rule %d: metricsQuery: %v", i, err)
			continue
		}
		var q bytes.Buffer
		if err := tmpl.Execute(&q, map[string]string{
			"Series": series, "LabelMatchers": `namespace="policyd",pod=~"policyd-a|policyd-b"`, "GroupBy": "pod",
		}); err != nil {
			t.Errorf("rule %d: metricsQuery: %v", i, err)
			continue
		}
		expr, err := parser.ParseExpr(q.String())
		if err != nil {
			t.Errorf("rule %d: metricsQuery %q gives invalid PromQL: %v", i, q.String(), err)
			continue
		}
		if !strings.Contains(expr.String(), "by (pod)") {
			t.Errorf("rule %d: metricsQuery %q does not group by <<.GroupBy>>: one value per pod is what the HPA needs", i, r.MetricsQuery)
		}
		served[r.Name.As] = true
	}
	if len(served) == 0 {
		t.Fatalf("%s: no rule", adapterDir)
	}
	return served
}
