module github.com/policyd/policyd

go 1.26.0

require (
	github.com/Masterminds/semver/v3 v3.5.0
	go.uber.org/zap v1.28.0
)

require go.uber.org/multierr v1.10.0 // indirect
