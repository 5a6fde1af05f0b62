package repository

import (
	"errors"
	"fmt"

	"github.com/policyd/policyd/artifacts"
)

// ModelFile is the name of the ONNX file inside a version folder.
const ModelFile = artifacts.ModelFile

// ErrNotFound matches (with errors.Is) the error of a lookup of an unknown model or version.
var ErrNotFound = errors.New("repository: not found")

// NotFoundError is returned by Repository.Get for an unknown model or version. It matches
// ErrNotFound with errors.Is.
type NotFoundError struct {
	Model   string
	Version string // "" when the model itself is unknown
	Why     string // optional: why it is unknown ("not selected by the configuration ...")
}

// Error says which model or version is unknown, and why when known.
func (e *NotFoundError) Error() string {
	s := fmt.Sprintf("unknown version %q of model %q", e.Version, e.Model)
	if e.Version == "" {
		s = fmt.Sprintf("unknown model %q", e.Model)
	}
	if e.Why != "" {
		s += ": " + e.Why
	}
	return s
}

// Is reports whether target is ErrNotFound.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// UnavailableError is returned by Version.Do for a version that is not ready; Reason says
// why (the load error, or that the repository was closed).
type UnavailableError struct {
	Model   string
	Version string
	Reason  string
}

// Error names the version and says why it is not ready.
func (e *UnavailableError) Error() string {
	if e.Version == "" { // a model the desired state lists but the repository lacks
		return fmt.Sprintf("model %q is not ready: %s", e.Model, e.Reason)
	}
	return fmt.Sprintf("model %q version %q is not ready: %s", e.Model, e.Version, e.Reason)
}
