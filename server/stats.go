package server

import (
	"strconv"

	"github.com/valyala/fasthttp"

	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// statser is a Model that keeps statistics (*repository.Version). A Model without them is
// listed with zeros.
type statser interface{ Stats() *engines.Stats }

func statsOf(m Model) *engines.Stats {
	if s, ok := m.(statser); ok {
		return s.Stats()
	}
	return nil
}

// modelStats answers Triton's statistics extension: GET /v2/models/stats (every version of
// every model), /v2/models/{m}/stats (every version of m) and /v2/models/{m}/versions/{v}/stats.
func (s *Server) modelStats(ctx *fasthttp.RequestCtx) {
	name, _ := ctx.UserValue("model").(string)
	version, _ := ctx.UserValue("version").(string)
	ms, err := s.statsModels(name, version)
	if err != nil {
		s.fail(ctx, err)
		return
	}
	b := append(make([]byte, 0, 512*len(ms)+32), `{"model_stats":[`...)
	for i, m := range ms {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendModelStats(b, m.Name(), m.Version(), statsOf(m).Snapshot())
	}
	b = append(b, "]}"...)
	ctx.SetContentType("application/json")
	ctx.SetBody(b)
}

// statsModels lists the versions whose statistics a request asks for: every version of every
// model (name ""), every version of a model (version ""), or one version. They are not held:
// only their counters are read.
func (s *Server) statsModels(name, version string) ([]Model, error) {
	var ms []Model
	switch {
	case name == "":
		for _, n := range s.reg.Models() {
			ms = append(ms, s.reg.Versions(n)...)
		}
	case version == "":
		if ms = s.reg.Versions(name); ms == nil {
			return nil, &repository.NotFoundError{Model: name}
		}
	default:
		m, err := s.reg.Acquire(name, version)
		if err != nil {
			return nil, err
		}
		m.Release() // only its counters are read: a reload may retire it meanwhile
		ms = []Model{m}
	}
	return ms, nil
}

func appendModelStats(b []byte, name, version string, st engines.StatsSnapshot) []byte {
	b = append(b, `{"name":`...)
	b = appendString(b, name)
	b = append(b, `,"version":`...)
	b = appendString(b, version)
	b = append(b, `,"last_inference":`...)
	b = strconv.AppendInt(b, st.LastInference, 10)
	b = append(b, `,"inference_count":`...)
	b = strconv.AppendUint(b, st.InferenceCount, 10)
	b = append(b, `,"execution_count":`...)
	b = strconv.AppendUint(b, st.ExecutionCount, 10)
	b = append(b, `,"inference_stats":{`...)
	b = appendDuration(b, "success", st.Success)
	b = append(b, ',')
	b = appendDuration(b, "fail", st.Fail)
	b = append(b, ',')
	b = appendDuration(b, "queue", st.Queue)
	b = append(b, ',')
	b = appendComputeDurations(b, st.ComputeInput, st.ComputeInfer, st.ComputeOutput)
	b = append(b, `},"batch_stats":[`...)
	for i, bs := range st.Batches {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"batch_size":`...)
		b = strconv.AppendInt(b, int64(bs.BatchSize), 10)
		b = append(b, ',')
		b = appendComputeDurations(b, bs.ComputeInput, bs.ComputeInfer, bs.ComputeOutput)
		b = append(b, '}')
	}
	return append(b, "]}"...)
}

func appendComputeDurations(b []byte, input, infer, output engines.Duration) []byte {
	b = appendDuration(b, "compute_input", input)
	b = append(b, ',')
	b = appendDuration(b, "compute_infer", infer)
	b = append(b, ',')
	return appendDuration(b, "compute_output", output)
}

func appendDuration(b []byte, key string, d engines.Duration) []byte {
	b = append(b, '"')
	b = append(b, key...)
	b = append(b, `":{"count":`...)
	b = strconv.AppendUint(b, d.Count, 10)
	b = append(b, `,"ns":`...)
	b = strconv.AppendUint(b, d.NS, 10)
	return append(b, '}')
}
