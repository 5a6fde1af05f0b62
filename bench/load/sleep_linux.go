package load

import (
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// preciseThread prepares the calling goroutine's OS thread for sleepUntil: it locks the
// goroutine to it and sets the thread's timer slack to 1 ns (the default 50 µs is added to
// every sleep). Go's own timers wake up to ~1 ms late on this kind of machine, too coarse
// for an arrival schedule of requests that take 100 µs. The returned func undoes both; it
// must run before the goroutine ends: a goroutine that ends locked takes its thread down,
// and with it every child process started from that thread with Pdeathsig (the servers of
// package suite).
func preciseThread() (release func()) {
	runtime.LockOSThread()
	old, err := unix.PrctlRetInt(unix.PR_GET_TIMERSLACK, 0, 0, 0, 0)
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
	return func() {
		if err == nil {
			_ = unix.Prctl(unix.PR_SET_TIMERSLACK, uintptr(old), 0, 0, 0)
		}
		runtime.UnlockOSThread()
	}
}

// sleepUntil blocks the (locked) thread until t with nanosleep, then spins the last spin of
// the way (spin > 0), which nanosleep's wake-up latency (~15-30 µs) would otherwise add.
func sleepUntil(t time.Time, spin time.Duration) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		if spin <= 0 || d > spin {
			ts := syscall.NsecToTimespec(int64(d - max(spin, 0)))
			_ = syscall.Nanosleep(&ts, nil)
			continue
		}
		for time.Now().Before(t) {
		}
		return
	}
}
