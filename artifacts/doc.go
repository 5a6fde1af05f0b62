// Package artifacts is the model repository of policyd: its layout, the manifest format, digests,
// ed25519 signatures, and the operations on it (add, verify, list, report, sign, migrate).
//
// A repository is a folder of model folders, each a folder of version folders:
//
//	DIR/<model>/<MAJOR.MINOR.PATCH>/manifest.json   lists every file with sha256 and size
//	                               /model.onnx
//	                               /engines/...     optional caches, listed the same way
//	                               /manifest.sig    optional ed25519 signature of manifest.json
//
// The manifest binds the files of its folder in place (there is no blob store): a version folder
// is self-contained and verifying it needs nothing outside it. The artifact's digest is
// "sha256:" + the hex SHA-256 of the manifest.json bytes. Folders whose name starts with ".tmp-"
// are Add's work in progress (or its leftovers after a crash) and are never versions.
//
// The package is pure Go and imports nothing else of policyd: the model's input/output
// signature is given by the caller. Every function is safe for concurrent use, also across
// processes sharing a repository: Add never overwrites a version and never makes a half-written
// one visible. See docs/artifacts.md for the format and the operator walkthrough.
package artifacts
