package server

import (
	"context"
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/repository"
)

// ModelConfig answers Triton's model configuration extension over gRPC: the document of GET
// /v2/models/{m}[/versions/{v}]/config (NewModelConfig, written with the proto's JSON names)
// as the proto message, read with protojson, which refuses a field the proto lacks. A
// version that is not ready is Unavailable, an unknown one NotFound.
func (g *grpcService) ModelConfig(ctx context.Context, req *inference.ModelConfigRequest) (*inference.ModelConfigResponse, error) {
	s := g.s
	m, err := s.acquire(req.Name, req.Version)
	if err != nil {
		return nil, err
	}
	defer m.Release()
	grpcExchangeOf(ctx).setModel(m, "")
	if ok, reason := m.Ready(); !ok {
		return nil, &repository.UnavailableError{Model: m.Name(), Version: m.Version(), Reason: reason}
	}
	b, err := json.Marshal(NewModelConfig(m, s.opts.QueueTimeout))
	if err != nil {
		return nil, fmt.Errorf("model configuration of %s@%s: %w", m.Name(), m.Version(), err)
	}
	cfg := &inference.ModelConfig{}
	if err := protojson.Unmarshal(b, cfg); err != nil {
		return nil, fmt.Errorf("model configuration of %s@%s as inference.ModelConfig: %w", m.Name(), m.Version(), err)
	}
	return &inference.ModelConfigResponse{Config: cfg}, nil
}
