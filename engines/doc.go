// Package engines runs loaded models: Pool, a set of workers each owning one execution context
// of an engine on its own OS thread, and Repository, the model versions found in a model
// repository folder (DIR/<model>/<version>/model.onnx), each with its engine and pool, or the
// reason it failed to load.
//
// engines imports bridge and no other package of policyd; it knows nothing of HTTP.
package engines
