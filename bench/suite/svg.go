package suite

import (
	"fmt"
	"html"
	"math"
	"sort"
	"strings"
)

// Series is one server's curve: points of (throughput req/s, latency µs).
type Series struct {
	Name   string
	Points [][2]float64
	Dashed bool
}

// svgPalette is one color per server, readable on white and in grey print.
var svgPalette = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"}

// SVG plots latency against throughput from the open-loop runs (p99 solid, p50 dashed, one
// color per server); without open-loop runs, from the concurrency sweep.
func (r *Report) SVG() string {
	stage, title := "open-loop", "open loop, Poisson arrivals: latency from each request's intended send time; solid p99, dashed p50"
	if !hasStage(r.Cases, stage) {
		stage, title = "conc-sweep", "closed loop over 1..64 connections; solid p99, dashed p50"
	}
	title = "Latency vs throughput — mlp-med, batch 1, KServe v2 JSON\n" + title
	var servers []string
	by := map[string][]Case{}
	for _, c := range r.Cases {
		if c.Stage != stage || c.Error != "" || c.Requests == 0 {
			continue
		}
		if _, ok := by[c.Server]; !ok {
			servers = append(servers, c.Server)
		}
		by[c.Server] = append(by[c.Server], c)
	}
	var series []Series
	for _, s := range servers {
		cs := by[s]
		sort.Slice(cs, func(i, j int) bool { return cs[i].RPS < cs[j].RPS })
		p99 := Series{Name: s + " p99"}
		p50 := Series{Name: s + " p50", Dashed: true}
		for _, c := range cs {
			p99.Points = append(p99.Points, [2]float64{c.RPS, float64(c.P99)})
			p50.Points = append(p50.Points, [2]float64{c.RPS, float64(c.P50)})
		}
		series = append(series, p99, p50)
	}
	return plotSVG(title, "throughput (requests/s)", "latency (µs, log scale)", series)
}

func hasStage(cs []Case, stage string) bool {
	for _, c := range cs {
		if c.Stage == stage && c.Error == "" {
			return true
		}
	}
	return false
}

// niceStep is a 1, 2 or 5 × 10^k step giving about n ticks over span.
func niceStep(span float64, n int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// plotSVG draws series on a linear x axis from 0 and a log10 y axis, with ticks, grid, axis
// labels and a legend. Series with the same server prefix share a color.
func plotSVG(title, xlabel, ylabel string, series []Series) string {
	const (
		W, H                   = 900, 560
		left, right, top, bott = 90, 220, 50, 70
	)
	pw, ph := float64(W-left-right), float64(H-top-bott)
	xmax, ymin, ymax := 0.0, math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, p := range s.Points {
			xmax = max(xmax, p[0])
			if p[1] > 0 {
				ymin, ymax = min(ymin, p[1]), max(ymax, p[1])
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", W, H, W, H)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", W, H)
	head, sub, _ := strings.Cut(title, "\n")
	fmt.Fprintf(&b, `<text x="%d" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", left, html.EscapeString(head))
	fmt.Fprintf(&b, `<text x="%d" y="38" font-size="12" fill="#444">%s</text>`+"\n", left, html.EscapeString(sub))
	if xmax == 0 || math.IsInf(ymin, 1) {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no data</text>`+"\n</svg>\n", left, top+40)
		return b.String()
	}
	step := niceStep(xmax, 6)
	xtop := math.Ceil(xmax*1.05/step) * step
	lo, hi := math.Floor(math.Log10(ymin)), math.Ceil(math.Log10(ymax))
	if hi == lo {
		hi++
	}
	X := func(v float64) float64 { return float64(left) + pw*v/xtop }
	Y := func(v float64) float64 { return float64(top) + ph*(1-(math.Log10(v)-lo)/(hi-lo)) }
	// Grid and ticks.
	for v := 0.0; v <= xtop+step/2; v += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", X(v), top, X(v), H-bott)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", X(v), H-bott+18, num(v, 0))
	}
	for e := lo; e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if e == hi && m > 1 {
				break
			}
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
			}
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", left, Y(v), W-right, Y(v), stroke)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, Y(v)+4, num(v, 0))
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle">%s</text>`+"\n", float64(left)+pw/2, H-bott+45, html.EscapeString(xlabel))
	fmt.Fprintf(&b, `<text transform="translate(24,%.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", float64(top)+ph/2, html.EscapeString(ylabel))
	// Series and legend.
	colors := map[string]string{}
	for i, s := range series {
		server, _, _ := strings.Cut(s.Name, " ")
		c, ok := colors[server]
		if !ok {
			c = svgPalette[len(colors)%len(svgPalette)]
			colors[server] = c
		}
		dash := ""
		if s.Dashed {
			dash = ` stroke-dasharray="6 4"`
		}
		var pts []string
		for _, p := range s.Points {
			if p[1] > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", X(p[0]), Y(p[1])))
			}
		}
		fmt.Fprintf(&b, `<polyline class="series" data-name="%s" fill="none" stroke="%s" stroke-width="2"%s points="%s"/>`+"\n",
			html.EscapeString(s.Name), c, dash, strings.Join(pts, " "))
		for _, p := range pts {
			x, y, _ := strings.Cut(p, ",")
			fmt.Fprintf(&b, `<circle cx="%s" cy="%s" r="3" fill="%s"/>`+"\n", x, y, c)
		}
		ly := top + 10 + 20*i
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"%s/>`+"\n", W-right+15, ly, W-right+45, ly, c, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", W-right+52, ly+4, html.EscapeString(s.Name))
	}
	b.WriteString("</svg>\n")
	return b.String()
}
