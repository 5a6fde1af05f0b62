//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package artifacts

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// errWorkBusy is lockWork's answer for a work folder that an add holds.
var errWorkBusy = errors.New("work folder in use")

// lockWork takes an exclusive advisory lock (flock) on the work folder dir without waiting:
// Add holds it while it writes there, RemoveStale while it removes one. The lock goes with
// its holder's process, so the folder of an add that was killed is free. It returns
// errWorkBusy when another holds it, another error when the file system cannot lock.
func lockWork(dir string) (release func(), err error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|oNoFollow, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, errWorkBusy
		}
		return nil, err
	}
	return func() { f.Close() }, nil
}
