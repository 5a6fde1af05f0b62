//go:build !cgo

package bridge

import "time"

// Available reports why the native library cannot be used: this build has no cgo.
func Available() error { return ErrUnavailable }

// APIVersion returns 0, 0: no library is linked.
func APIVersion() (major, minor uint32) { return 0, 0 }

// LibraryVersion returns "" : no library is linked.
func LibraryVersion() string { return "" }

// SetLogger does nothing without the native library.
func SetLogger(func(LogLevel, string)) {}

// Runtime is unavailable without cgo.
type Runtime struct{}

// NewRuntime returns ErrUnavailable.
func NewRuntime(string) (*Runtime, error) { return nil, ErrUnavailable }

// Backends returns nil.
func (r *Runtime) Backends() []BackendInfo { return nil }

// Devices returns ErrUnavailable.
func (r *Runtime) Devices(string) ([]Device, error) { return nil, ErrUnavailable }

// NewEngine returns ErrUnavailable.
func (r *Runtime) NewEngine([]byte, EngineOptions) (*Engine, error) { return nil, ErrUnavailable }

// Close does nothing.
func (r *Runtime) Close() error { return nil }

// Engine is unavailable without cgo.
type Engine struct{}

// Backend returns "".
func (e *Engine) Backend() string { return "" }

// Inputs returns nil.
func (e *Engine) Inputs() []IOInfo { return nil }

// Outputs returns nil.
func (e *Engine) Outputs() []IOInfo { return nil }

// Batchable returns false.
func (e *Engine) Batchable() bool { return false }

// Serialize returns ErrUnavailable.
func (e *Engine) Serialize() ([]byte, error) { return nil, ErrUnavailable }

// TimingCache returns ErrUnavailable.
func (e *Engine) TimingCache() ([]byte, error) { return nil, ErrUnavailable }

// NewContext returns ErrUnavailable.
func (e *Engine) NewContext() (*Context, error) { return nil, ErrUnavailable }

// Close does nothing.
func (e *Engine) Close() error { return nil }

// Context is unavailable without cgo.
type Context struct{}

// SetSeed returns ErrUnavailable.
func (c *Context) SetSeed(uint64) error { return ErrUnavailable }

// SetRowSeeds returns ErrUnavailable.
func (c *Context) SetRowSeeds([]uint64) error { return ErrUnavailable }

// Memory returns ErrUnavailable.
func (c *Context) Memory() (MemoryInfo, error) { return MemoryInfo{}, ErrUnavailable }

// DeviceTime returns ErrUnavailable.
func (c *Context) DeviceTime() (time.Duration, error) { return 0, ErrUnavailable }

// Run returns ErrUnavailable.
func (c *Context) Run([]Tensor, []Tensor) error { return ErrUnavailable }

// Close does nothing.
func (c *Context) Close() error { return nil }
