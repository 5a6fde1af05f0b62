//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package artifacts

import "errors"

// errWorkBusy is lockWork's answer for a work folder that an add holds.
var errWorkBusy = errors.New("work folder in use")

// lockWork is not available here: RemoveStale goes by the age of a work folder alone.
func lockWork(dir string) (release func(), err error) {
	return nil, errors.New("work folder locks need flock")
}
