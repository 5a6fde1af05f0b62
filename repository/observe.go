package repository

import (
	"slices"
	"strconv"
	"strings"

	"github.com/policyd/policyd/engines"
)

// VersionObserver follows the life of the versions of a Repository; package metrics implements
// it. Its methods are called synchronously by Apply, Load, Unload and Close (versions of one
// Apply may be retired in parallel, so implementations must be safe for concurrent use) and
// must not call Apply, Load, Unload, SetObserver or Close (Get, All and Index are fine: the
// served table is already swapped when a version is retired).
type VersionObserver interface {
	// Loading: the load of a version begins (after its artifact was verified).
	Loading(model, version string)
	// Loaded: the load ended, ready or not (v.Ready, v.LoadDuration, v.Backend), before v
	// serves a request. The observers returned (nil: none) are fed by v's runner from now on.
	Loaded(v *Version) *engines.Observers
	// Unloading: v left the served table and is being retired (waiting for its holders,
	// draining its pool).
	Unloading(v *Version)
	// Unloaded: v is retired: drained, its engine closed.
	Unloaded(v *Version)
}

// SetObserver makes o follow the versions loaded and retired from now on; call it before the
// first Apply. nil stops following.
func (r *Repository) SetObserver(o VersionObserver) {
	r.applyMu.Lock()
	defer r.applyMu.Unlock()
	r.obs = o
}

// Device is where the version's engines run, as health details and the metrics' device label
// name it: "cpu" for the cpu backend; "cuda:<ordinal>" for a GPU backend (cuda, tensorrt) on one
// GPU, the GPUs joined by commas ("cuda:0,cuda:1") when the version runs on several (see
// ModelSpec.Devices); "" when the version is not loaded. A GPU backend whose devices the loader

// does not list (a loader without DeviceLister) runs on GPU 0: "cuda:0".
func (v *Version) Device() string {
	switch b := v.Backend(); {
	case b == "":
		return ""
	case b == "cpu":
		return "cpu"
	case len(v.devices) == 0:
		return "cuda:0"
	}
	parts := make([]string, len(v.devices))
	for i, g := range v.devices {
		parts[i] = "cuda:" + strconv.Itoa(g)
	}
	return strings.Join(parts, ",")
}

// Devices are the GPU ordinals the version runs on, one engine each; nil for a backend without
// devices (cpu) or a version not loaded.
func (v *Version) Devices() []int { return slices.Clone(v.devices) }

// InFlight is the number of requests holding the version now (Repository.Acquire not yet
// released): accepted and not yet answered.
func (v *Version) InFlight() int {
	return int(max(v.refs.Load(), 0))
}

// queueDepther is a runner that can say how many requests wait in its queue.
type queueDepther interface{ QueueDepth() int }

// QueueDepth is the number of requests waiting in the version's queue now (for a batched
// version, waiting to be formed into a batch); 0 when it is not loaded.
func (v *Version) QueueDepth() int {
	if q, ok := v.runner.(queueDepther); ok {
		return q.QueueDepth()
	}
	return 0
}

// memoryReporter is a runner whose contexts report their memory.
type memoryReporter interface {
	Memory() (arena, weights uint64, err error)
}

// Memory is the memory the version's engine holds (bridge.Context.Memory): arena is the
// activation arenas of every context, weights the engine's weights (counted once) plus every
// context's own weight copies. Safe while the version serves; 0s when it is not loaded or its
// contexts are not created yet.
func (v *Version) Memory() (arena, weights uint64, err error) {
	if m, ok := v.runner.(memoryReporter); ok {
		return m.Memory()
	}
	return 0, 0, nil
}
