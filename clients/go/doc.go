// Package policyd is the Go client of policyd, the server for ONNX reinforcement-learning
// policies (KServe v2 / Open Inference Protocol over HTTP and gRPC).
//
// Import it as
//
//	import policyd "github.com/policyd/policyd/clients/go"
//
// A [Client] talks to one server over HTTP (binary tensors by default, JSON on request) or
// gRPC (raw tensor contents). A [Policy] wraps one model: [Policy.Act] takes one observation
// or a batch and adds or removes the batch dimension as the model's metadata says; an
// [Episode] keeps a recurrent policy's state on the server (a KServe sequence) so the caller
// sends only observations.
//
// Failures come back as one error type per class ([*InvalidArgumentError],
// [*NotFoundError], [*UnavailableError], [*TimeoutError], [*ConnectError], [*ServerError]),
// usable with errors.As, and with errors.Is against [ErrInvalidArgument], [ErrNotFound],
// [ErrUnavailable], [ErrOverloaded], [ErrTimeout], [ErrConnect] and [ErrServer]. Only
// failures where the request certainly did not run are retried (docs/clients.md, "Go").
//
// The package depends on the wire format only (and on the generated gRPC code in
// github.com/policyd/policyd/api/inference); it links no native code.
package policyd
