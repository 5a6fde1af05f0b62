//go:build !linux

package artifacts

// renameNoReplace renames the folder tmp to final unless final exists (an error matching
// os.ErrExist then).
func renameNoReplace(tmp, final string) error { return renameLocked(tmp, final) }
