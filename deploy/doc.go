// Package deploy holds no code: it is the home of the Kubernetes manifests (kubernetes/, a
// kustomize base, components and the cpu and gpu overlays, and the Prometheus adapter rule of
// the autoscaler), the KServe serving runtime (kserve/) and the systemd unit (systemd/). Its
// Go tests validate them and the Docker files of ../docker: every rendered Kubernetes object
// decoded strictly into the Kubernetes API types, the Dockerfiles parsed and linted with
// BuildKit's own parser and rules plus this project's, the compose file loaded with the
// Compose specification's loader, and every policyd configuration they carry validated by
// package config. make check-deploy runs them; docs/deployment.md is the guide.
package deploy
