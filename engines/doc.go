// Package engines runs loaded models: Pool, a set of workers each owning one execution context
// of an engine on its own OS thread, and Repository, the model versions served from a model
// repository folder (DIR/<model>/<version>/model.onnx), each with its engine and pool, or the
// reason it failed to load.
//
// Repository.Apply changes the set of versions served at run time (hot reload): it loads what
// is new or changed first, swaps the served table atomically, then retires what is no longer
// served. A request holds its version from Repository.Acquire to ModelVersion.Release, and a
// retired version is drained and closed only once its last holder released it, so a reload
// fails no request.
//
// engines imports bridge and no other package of policyd; it knows nothing of HTTP.
package engines
