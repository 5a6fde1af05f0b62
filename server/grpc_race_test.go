//go:build race

package server

// grpcRaceEnabled: the race detector adds allocations, so allocation counts are not asserted
// (gRPC and the shadow handler tests).
const grpcRaceEnabled = true
