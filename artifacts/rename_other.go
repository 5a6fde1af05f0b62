//go:build !linux

package artifacts

import "errors"

// renameNoReplace renames the folder tmp to final unless final exists (an error matching
// os.ErrExist then).
func renameNoReplace(tmp, final string) error { return renameLocked(tmp, final) }

// exchangeDirs is not available: swapping two folders atomically needs Linux's
// renameat2(RENAME_EXCHANGE).
func exchangeDirs(a, b string) error {
	return errors.New("adding an engine cache needs Linux (an atomic folder exchange)")
}
