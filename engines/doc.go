// Package engines is the runtime of one loaded model version: Pool, the execution contexts of
// the version's engines (one engine per GPU) behind one priority queue, whose workers run a
// lone request on its caller's goroutine when a context is idle; Batcher, Triton's dynamic
// batcher in front of a Pool; Sequences, the state of stateful sequences; warm-up runs at
// start; Stats and the Observers a version's runner feeds; and the trace spans of its runs.
//
// engines knows nothing of files, configs or version lifecycles: package repository decides
// which versions serve, builds their engines and makes their runners from this package.
// engines imports bridge and no other package of policyd; it knows nothing of HTTP.
package engines
