// Package engines runs loaded models: Pool, a set of workers each owning one execution context
// of an engine on its own OS thread, and Repository, the model versions served from a model
// repository folder (DIR/<model>/<X.Y.Z>/ with manifest.json and model.onnx, see package
// artifacts), each with its engine and pool, or the reason it is not served.
//
// Every version is a verified artifact before it is used: Repository.Apply runs
// artifacts.Verify on every version it selects, every time (a file tampered with after a load
// is caught by the next Apply), and builds the engine from the bytes of model.onnx checked
// against the manifest as they are read. A version that fails is listed UNAVAILABLE with the
// verification error while the others serve. A folder whose name is not a canonical version
// (1.2.3, not "1" or "v1.2.3") is not a version: with every version of its model served it is
// listed UNAVAILABLE with the reason (how to rename it); a version or constraint never selects
// it, and Index lists it UNLOADED.
//
// Repository.Apply changes the set of versions served at run time (hot reload): it loads what
// is new or changed first, swaps the served table atomically, then retires what is no longer
// served. A request holds its version from Repository.Acquire to ModelVersion.Release, and a
// retired version is drained and closed only once its last holder released it, so a reload
// fails no request. SetDefault (rollback) and Load/Unload (Triton's repository extension)
// change the served table the same way.
//
// engines imports bridge and artifacts and no other package of policyd; it knows nothing of
// HTTP.
package engines
