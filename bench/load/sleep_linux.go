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
// for an arrival schedule of requests that take 100 µs.
func preciseThread() {
	runtime.LockOSThread()
	_ = unix.Prctl(unix.PR_SET_TIMERSLACK, 1, 0, 0, 0)
}

// sleepUntil blocks the (locked) thread until t with nanosleep, then spins the last spin of
// the way, which nanosleep's wake-up latency (~15-30 µs) would otherwise add.
func sleepUntil(t time.Time, spin time.Duration) {
	for {
		d := time.Until(t)
		if d <= 0 {
			return
		}
		if d > spin {
			ts := syscall.NsecToTimespec(int64(d - spin))
			_ = syscall.Nanosleep(&ts, nil)
			continue
		}
		for time.Now().Before(t) {
		}
		return
	}
}
