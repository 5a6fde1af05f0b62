package server

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/policyd/policyd/api/inference"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// grpcHealth is the standard grpc.health.v1 health service (Kubernetes gRPC probes,
// grpc_health_probe), answered from the server's state at each call:
//
//	""  and "inference.GRPCInferenceService"   readiness, as GET /v2/health/ready
//	"live"                                      liveness: SERVING while the process serves
//	"<model>"                                   the model's default version is ready
//
// NOT_SERVING while starting, when a version is not ready, and once shutting down. Any other
// name is unknown: Check answers NotFound, Watch SERVICE_UNKNOWN. Watch sends the status at
// once and again whenever it changes (checked every healthWatchInterval).
type grpcHealth struct {
	healthpb.UnimplementedHealthServer
	s *Server
}

// ServiceLive is the grpc.health.v1 service name of liveness.
const ServiceLive = "live"

// healthWatchInterval is how often Watch looks at the state again.
const healthWatchInterval = 500 * time.Millisecond

var errUnknownService = errors.New("unknown service")

func (h *grpcHealth) status(service string) (healthpb.HealthCheckResponse_ServingStatus, error) {
	s := h.s
	serving := func(ok bool) healthpb.HealthCheckResponse_ServingStatus {
		select {
		case <-s.stop:
			return healthpb.HealthCheckResponse_NOT_SERVING
		default:
		}
		if ok {
			return healthpb.HealthCheckResponse_SERVING
		}
		return healthpb.HealthCheckResponse_NOT_SERVING
	}
	switch service {
	case ServiceLive:
		return healthpb.HealthCheckResponse_SERVING, nil
	case "", grpcServiceName:
		ok, _ := s.readiness()
		return serving(ok), nil
	}
	m, err := s.reg.Acquire(service, "")
	if err != nil {
		if errors.Is(err, repository.ErrNotFound) {
			if s.starting.Load() {
				return healthpb.HealthCheckResponse_NOT_SERVING, nil
			}
			return healthpb.HealthCheckResponse_SERVICE_UNKNOWN, errUnknownService
		}
		return healthpb.HealthCheckResponse_NOT_SERVING, nil
	}
	defer m.Release()
	ok, _ := m.Ready()
	return serving(ok), nil
}

func (h *grpcHealth) Check(_ context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	st, err := h.status(req.Service)
	if err != nil {
		return nil, status.Errorf(codes.NotFound, "unknown service %q: ask \"\" (readiness), %q (liveness) or a model's name", req.Service, ServiceLive)
	}
	return &healthpb.HealthCheckResponse{Status: st}, nil
}

// List answers the status of readiness, liveness and every model.
func (h *grpcHealth) List(context.Context, *healthpb.HealthListRequest) (*healthpb.HealthListResponse, error) {
	out := &healthpb.HealthListResponse{Statuses: map[string]*healthpb.HealthCheckResponse{}}
	names := append([]string{"", ServiceLive, grpcServiceName}, h.s.reg.Models()...)
	for _, name := range names {
		if st, err := h.status(name); err == nil {
			out.Statuses[name] = &healthpb.HealthCheckResponse{Status: st}
		}
	}
	return out, nil
}

func (h *grpcHealth) Watch(req *healthpb.HealthCheckRequest, stream grpc.ServerStreamingServer[healthpb.HealthCheckResponse]) error {
	last := healthpb.HealthCheckResponse_ServingStatus(-1)
	tick := time.NewTicker(healthWatchInterval)
	defer tick.Stop()
	for {
		st, _ := h.status(req.Service)
		if st != last {
			if err := stream.Send(&healthpb.HealthCheckResponse{Status: st}); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-h.s.stop:
			// One last NOT_SERVING, then the stream ends so that the graceful stop is not held.
			if last != healthpb.HealthCheckResponse_NOT_SERVING {
				_ = stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_NOT_SERVING})
			}
			return status.Error(codes.Unavailable, "the server is shutting down")
		case <-tick.C:
		}
	}
}

// modelStatistics is the gRPC form of a version's statistics (Triton's ModelStatistics).
func modelStatistics(name, version string, st engines.StatsSnapshot) *inference.ModelStatistics {
	d := func(x engines.Duration) *inference.StatisticDuration {
		return &inference.StatisticDuration{Count: x.Count, Ns: x.NS}
	}
	out := &inference.ModelStatistics{
		Name: name, Version: version,
		LastInference:  uint64(max(st.LastInference, 0)),
		InferenceCount: st.InferenceCount,
		ExecutionCount: st.ExecutionCount,
		InferenceStats: &inference.InferStatistics{
			Success: d(st.Success), Fail: d(st.Fail), Queue: d(st.Queue),
			ComputeInput: d(st.ComputeInput), ComputeInfer: d(st.ComputeInfer), ComputeOutput: d(st.ComputeOutput),
			CacheHit: &inference.StatisticDuration{}, CacheMiss: &inference.StatisticDuration{},
		},
		BatchStats: make([]*inference.InferBatchStatistics, 0, len(st.Batches)),
	}
	for _, b := range st.Batches {
		out.BatchStats = append(out.BatchStats, &inference.InferBatchStatistics{BatchSize: uint64(b.BatchSize),
			ComputeInput: d(b.ComputeInput), ComputeInfer: d(b.ComputeInfer), ComputeOutput: d(b.ComputeOutput)})
	}
	return out
}

// grpcServiceName is the full name of the KServe v2 service.
const grpcServiceName = "inference.GRPCInferenceService"
