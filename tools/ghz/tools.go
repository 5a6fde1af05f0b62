//go:build tools

// Package tools pins ghz's command for `go build` (see go.mod).
package tools

import _ "github.com/bojand/ghz/cmd/ghz"
