package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/policyd/policyd/artifacts"
	"github.com/policyd/policyd/server"
)

func trafficCommands() []*command {
	return []*command{
		{name: "set", short: "set a model's weights on a running server (its shadow and gates stay)", run: trafficSet},
		{name: "status", short: "a model's live traffic policy: weights, shares, routes, stickiness, gates and their history", run: trafficStatus},
	}
}

const trafficSetAbout = `set the weights of a model's traffic split on a running server
PUTs {"weights":{VERSION:WEIGHT,...}} to SERVER/v2/admin/models/MODEL/traffic with the bearer
token of --token-file, and prints the policy the server then serves (as traffic status does).
The shadow and gates of the live policy stay. Live episodes keep their version; new ones follow
the new weights. The change lasts until a configuration reload changes the model's
models[].traffic section. Weights: exact versions, ≥ 0, at least one above 0; "--clear"
removes the policy (the default version serves again).
`

const trafficStatusAbout = `show a model's live traffic policy on a running server
GETs SERVER/v2/admin/models/MODEL/traffic with the bearer token of --token-file: who set the
policy (config, admin or gate), each version's weight, share of new episodes, readiness and
requests by route, the stickiness counters, the shadow, and the gates' state and history.
`

// trafficFlags are the flags both traffic commands take.
type trafficFlags struct {
	*configFlags
	server, tokenFile *string
	timeout           *time.Duration
}

func newTrafficFlags(path []string, stderr io.Writer, synopsis, about string) trafficFlags {
	fs := newConfigFlags(path, stderr, synopsis, about)
	return trafficFlags{fs,
		fs.String("server", "http://127.0.0.1:8000", "policyd base `URL`"),
		fs.String("token-file", "", "`FILE` holding the admin bearer token"),
		fs.Duration("timeout", 30*time.Second, "give up after `D`")}
}

// call sends method to the traffic route of model and decodes the answer into doc.
func (tf trafficFlags) call(ctx context.Context, method, model string, body []byte, doc *server.TrafficDocument, stderr io.Writer) int {
	answer, ok, usage := adminCall(ctx, tf.name, method, *tf.server, "/v2/admin/models/"+url.PathEscape(model)+"/traffic",
		*tf.tokenFile, *tf.timeout, 4<<20, body, stderr)
	if usage {
		return tf.usageError(stderr, "--server %q: want http(s)://HOST[:PORT]", *tf.server)
	}
	if !ok {
		return 1
	}
	if err := json.Unmarshal(answer, doc); err != nil {
		fmt.Fprintf(stderr, "%s: the answer is not a traffic document: %v\n", tf.name, err)
		return 1
	}
	return 0
}

func trafficSet(ctx context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	tf := newTrafficFlags(path, stderr, "MODEL VERSION=WEIGHT... [--server URL] [--token-file F]", trafficSetAbout)
	clear := tf.Bool("clear", false, "remove the model's traffic policy")
	format := tf.String("format", "text", "output `format`: text or json")
	pos, code := tf.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) < 1 {
		return tf.usageError(stderr, "want MODEL and VERSION=WEIGHT pairs")
	}
	if err := artifacts.ValidateName(pos[0]); err != nil {
		return tf.usageError(stderr, "%v", err)
	}
	weights := map[string]int{}
	for _, p := range pos[1:] {
		v, w, ok := strings.Cut(p, "=")
		n, err := strconv.Atoi(w)
		if !ok || err != nil || n < 0 {
			return tf.usageError(stderr, "%q: want VERSION=WEIGHT with a weight ≥ 0", p)
		}
		c, err := artifacts.CanonicalVersion(v)
		if err != nil {
			return tf.usageError(stderr, "%q: %v", p, err)
		}
		weights[c] = n
	}
	if *clear != (len(weights) == 0) {
		return tf.usageError(stderr, "give VERSION=WEIGHT pairs, or --clear alone")
	}
	body, _ := json.Marshal(map[string]any{"weights": weights})
	var doc server.TrafficDocument
	if code := tf.call(ctx, http.MethodPut, pos[0], body, &doc, stderr); code != 0 {
		return code
	}
	return printTraffic(stdout, &doc, *format)
}

func trafficStatus(ctx context.Context, _ string, path, args []string, stdout, stderr io.Writer) int {
	tf := newTrafficFlags(path, stderr, "MODEL [--server URL] [--token-file F] [--format text|json]", trafficStatusAbout)
	format := tf.String("format", "text", "output `format`: text or json")
	pos, code := tf.parse(args, stdout)
	if code >= 0 {
		return code
	}
	if len(pos) != 1 {
		return tf.usageError(stderr, "want one MODEL, got %d arguments", len(pos))
	}
	var doc server.TrafficDocument
	if code := tf.call(ctx, http.MethodGet, pos[0], nil, &doc, stderr); code != 0 {
		return code
	}
	return printTraffic(stdout, &doc, *format)
}

// printTraffic writes doc as text or JSON.
func printTraffic(w io.Writer, doc *server.TrafficDocument, format string) int {
	if format == "json" {
		b, _ := json.MarshalIndent(doc, "", "  ")
		fmt.Fprintf(w, "%s\n", b)
		return 0
	}
	if !doc.Policy {
		fmt.Fprintf(w, "model %s: no traffic policy (requests without a version get the default version)\n", doc.Model)
		return 0
	}
	fmt.Fprintf(w, "model %s: traffic policy set by %s\n", doc.Model, doc.Source)
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "VERSION\tWEIGHT\tSHARE\tREADY\tSPLIT\tSTICKY\tNAMED\tDEFAULT\tANSWERED\tERRORS")
	for _, v := range doc.Versions {
		weight := "-"
		if _, ok := doc.Weights[v.Version]; ok {
			weight = strconv.Itoa(v.Weight)
		}
		ready := map[bool]string{true: "yes", false: "no"}[v.Ready]
		fmt.Fprintf(tw, "%s\t%s\t%.1f%%\t%s\t%d\t%d\t%d\t%d\t%d\t%d\n", v.Version, weight, 100*v.Share, ready,
			v.Routes["split"], v.Routes["sticky"], v.Routes["named"], v.Routes["default"], v.Requests, v.Errors)
	}
	tw.Flush()
	fmt.Fprintf(w, "episodes remembered: %d (sticky misses %d, not remembered for a full table %d)\n",
		doc.StickyKeys, doc.StickyMisses, doc.StickyTableFull)
	if sh := doc.Shadow; sh != nil {
		fmt.Fprintf(w, "shadow: %s on %.0f%% of the requests\n", sh.Version, 100*sh.Rate)
	}
	for _, st := range doc.Shadows {
		fmt.Fprintf(w, "shadow %s beside %s since %s: %d compared, %d dropped, %d errors, %d skipped; mean |diff| %.3g, max |diff| %.3g, max rel %.3g, agreement %.2f%%\n",
			st.Shadow, st.Primary, st.Since.UTC().Format(time.RFC3339), st.Samples, st.Dropped, st.Errors, st.Skipped,
			st.MeanAbs, st.MaxAbs, st.MaxRel, 100*st.Agreement)
		for _, o := range st.Outputs {
			if o.Discrete {
				fmt.Fprintf(w, "  %s (discrete): agreement %.2f%% over %d elements\n", o.Output, 100*o.Agreement, o.Elements)
			} else {
				fmt.Fprintf(w, "  %s: mean |diff| %.3g, max |diff| %.3g, max rel %.3g over %d elements\n", o.Output, o.MeanAbs, o.MaxAbs, o.MaxRel, o.Elements)
			}
		}
		if st.LastError != "" {
			fmt.Fprintf(w, "  last error: %s\n", st.LastError)
		}
	}
	if g := doc.GateStatus; g != nil {
		fmt.Fprintf(w, "gates: candidate %s, %s", g.Candidate, strings.ReplaceAll(g.State, "_", " "))
		if g.LastReason != "" {
			fmt.Fprintf(w, " (last: %s)", g.LastReason)
		}
		fmt.Fprintln(w)
		for _, a := range g.History {
			fmt.Fprintf(w, "  %s %-8s → %s: %s\n", a.Time.UTC().Format(time.RFC3339), a.Action, formatWeights(a.Weights), a.Reason)
		}
	}
	return 0
}

func formatWeights(w map[string]int) string {
	parts := []string{}
	for _, v := range slices.Sorted(maps.Keys(w)) {
		parts = append(parts, fmt.Sprintf("%s=%d", v, w[v]))
	}
	return strings.Join(parts, " ")
}
