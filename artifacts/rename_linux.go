package artifacts

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// renameNoReplace renames the folder tmp to final atomically unless final exists (an error
// matching os.ErrExist then).
func renameNoReplace(tmp, final string) error {
	err := unix.Renameat2(unix.AT_FDCWD, tmp, unix.AT_FDCWD, final, unix.RENAME_NOREPLACE)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EINVAL), errors.Is(err, unix.ENOSYS):
		return renameLocked(tmp, final) // file system or kernel without RENAME_NOREPLACE
	}
	return &os.LinkError{Op: "rename", Old: tmp, New: final, Err: err}
}

// exchangeDirs swaps the folders a and b atomically (both must exist).
func exchangeDirs(a, b string) error {
	if err := unix.Renameat2(unix.AT_FDCWD, a, unix.AT_FDCWD, b, unix.RENAME_EXCHANGE); err != nil {
		return &os.LinkError{Op: "exchange", Old: a, New: b, Err: err}
	}
	return nil
}
