// Package repository is the set of model versions served from a model repository folder
// (DIR/<model>/<X.Y.Z>/ with manifest.json and model.onnx, see package artifacts): Repository
// holds each served Version with its engines and runner (package engines), or the reason it
// is not served.
//
// Every version is a verified artifact before it is used: Repository.Apply runs
// artifacts.Verify on every version it selects, every time (a file tampered with after a load
// is caught by the next Apply), and builds the engine from the bytes of model.onnx checked
// against the manifest as they are read. A version that fails is listed UNAVAILABLE with the
// verification error while the others serve. A folder whose name is not a canonical version
// (1.2.3, not "1" or "v1.2.3"; artifacts.CanonicalVersion) is not a version: with every version
// of its model served it is listed UNAVAILABLE with the reason (how to rename it); a version or
// constraint never selects it, and Index lists it UNLOADED. A request may still name a version
// as Triton clients do ("1" for exactly 1.0.0, not 1.0.0+build.7; artifacts.RequestedVersion),
// and as policyctl artifacts import-triton keeps a Triton folder "1" (stored as 1.0.0).
//
// The files, by concern: desired.go (Desired, ModelSpec and their validation), settings.go (the
// effective settings of a version), select.go (which versions a desired state selects),
// scan.go (the folders found), load.go (engines, devices, engine caches, runners), verify.go
// (refused and kept versions), apply.go (Apply: load, swap, retire), version.go (a served
// Version, its holders and retirement), repository.go (the served table, Get, Acquire),
// control.go (the repository API: Index, defaults, pins, Load, Unload), observe.go (the
// observer of versions' lives) and build.go (engine caches for policyctl engines build).
//
// Repository.Apply changes the set of versions served at run time (hot reload): it loads what
// is new or changed first, swaps the served table atomically, then retires what is no longer
// served. A request holds its version from Repository.Acquire to Version.Release, and a
// retired version is drained and closed only once its last holder released it, so a reload
// fails no request. SetDefault (rollback) and Load/Unload (Triton's repository extension)
// change the served table the same way.
//
// repository imports engines, artifacts and bridge; it knows nothing of HTTP.
package repository
