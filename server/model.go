package server

import (
	"context"

	"github.com/policyd/policyd/bridge"
	"github.com/policyd/policyd/engines"
	"github.com/policyd/policyd/repository"
)

// Model is one version of one model as the handlers see it. *repository.Version implements
// it; tests use fakes. Implementations must be safe for concurrent use.
type Model interface {
	// Name is the model's name.
	Name() string
	// Version is the version's name as it appears in URLs and responses.
	Version() string
	// Inputs is the input signature, in the order Do takes the tensors; -1 marks a dimension the
	// model does not fix. Nil when the version is not loaded.
	Inputs() []bridge.IOInfo
	// Outputs is the output signature, in the order Do passes the tensors to fn.
	Outputs() []bridge.IOInfo
	// Batchable reports whether inputs with IOInfo.BatchDim 0 share a dynamic dimension 0.
	Batchable() bool
	// Ready reports whether the version serves requests and, when not, why.
	Ready() (bool, string)
	// Do runs the model and calls fn with the outputs while they are valid (see engines.Pool.Do).
	Do(ctx context.Context, inputs []bridge.Tensor, opts engines.RunOptions, fn func(outputs []bridge.Tensor) error) error
	// Release ends the use begun by Registry.Acquire. Handlers call it exactly once per
	// Acquire, after the response is encoded, and never on a Model from Versions.
	Release()
}

// Registry finds models. Implementations must be safe for concurrent use.
type Registry interface {
	// Models lists the model names, sorted.
	Models() []string
	// Versions lists every version of a model, lowest first (nil for an unknown model), for
	// listing: they are not held, so a reload may unload them at any time.
	Versions(model string) []Model
	// Acquire returns one version of a model and holds it until its Release: a reload that
	// replaces or removes it meanwhile waits for the Release before closing it, so a request
	// that acquired a version is answered by it. version "" asks for the default version. An
	// unknown model or version is an error matching repository.ErrNotFound.
	Acquire(name, version string) (Model, error)
}

// NewRegistry adapts an repository.Repository to Registry: Acquire is Repository.Acquire, so the
// handlers hold the version they serve for the whole request and a Repository.Apply (hot
// reload) never closes it under them.
func NewRegistry(r *repository.Repository) Registry { return repositoryRegistry{r} }

type repositoryRegistry struct{ r *repository.Repository }

func (rr repositoryRegistry) Models() []string { return rr.r.Models() }

func (rr repositoryRegistry) Versions(model string) []Model {
	vs := rr.r.Versions(model)
	if vs == nil {
		return nil
	}
	out := make([]Model, len(vs))
	for i, v := range vs {
		out[i] = v
	}
	return out
}

func (rr repositoryRegistry) DefaultVersion(model string) (string, bool) {
	return rr.r.DefaultVersion(model)
}

func (rr repositoryRegistry) Acquire(name, version string) (Model, error) {
	v, err := rr.r.Acquire(name, version)
	if err != nil {
		return nil, err
	}
	return v, nil
}
