//go:build !race

package server

const grpcRaceEnabled = false
