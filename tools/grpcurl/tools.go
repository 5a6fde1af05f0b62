//go:build tools

// Package tools pins grpcurl's command for `go build` (see go.mod).
package tools

import _ "github.com/fullstorydev/grpcurl/cmd/grpcurl"
