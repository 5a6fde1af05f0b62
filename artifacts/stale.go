package artifacts

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// StaleAge is how old a work folder (or lock file) of Add must be before RemoveStale takes it
// for the leftover of an interrupted add: no add runs that long without writing into its
// folder.
const StaleAge = time.Hour

// RemoveStale removes the leftovers of interrupted adds from the model folders of repo (model
// "": every model; else only that one): the entries RepositoryReport.Stale lists (".tmp-*":
// Add's work folders, AddEngineCache's, and the .tmp-<version>.lock files of file systems
// without RENAME_NOREPLACE) whose newest modification time, over everything they hold, is
// olderThan before now or more. It never touches a version folder, nor a work folder an add
// still writes into: such a folder is younger than StaleAge, and on Unix it is also skipped
// while the add that made it holds its lock (a process that dies releases that lock). Model
// folders that Report refuses (invalid names, symbolic links) are left alone, as a missing
// model folder is. It returns the paths removed; the error joins every entry it could not
// remove or age (the others are still removed) and reports a repository that cannot be read.
func RemoveStale(repo, model string, olderThan time.Duration, now time.Time) ([]string, error) {
	var models []string
	if model != "" {
		if err := ValidateName(model); err != nil {
			return nil, err
		}
		models = []string{model}
	} else {
		var err error
		if models, err = Models(repo); err != nil {
			return nil, err
		}
	}
	var removed []string
	var errs []error
	for _, name := range models {
		if modelProblem(repo, name) != "" {
			continue
		}
		dir := filepath.Join(repo, name)
		des, err := os.ReadDir(dir)
		if err != nil {
			if !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove stale work of %s: %w", name, err))
			}
			continue
		}
		for _, de := range des {
			if !isTemp(de.Name()) {
				continue
			}
			p := filepath.Join(dir, de.Name())
			ok, err := removeIfStale(p, now.Add(-olderThan))
			if err != nil {
				errs = append(errs, fmt.Errorf("remove stale %s: %w", p, err))
			}
			if ok {
				removed = append(removed, p)
			}
		}
	}
	return removed, errors.Join(errs...)
}

// removeIfStale removes the work entry p when nothing in it changed after cutoff and no add
// holds it, and reports whether it did.
func removeIfStale(p string, cutoff time.Time) (bool, error) {
	newest, err := newestChange(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // removed meanwhile, e.g. by its add's rename
	}
	if err != nil {
		return false, err
	}
	if newest.After(cutoff) {
		return false, nil
	}
	st, err := os.Lstat(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, err
	}
	if st.IsDir() {
		release, err := lockWork(p)
		if errors.Is(err, errWorkBusy) {
			return false, nil // an add that is still running holds it
		}
		if err == nil {
			defer release()
		}
		// Any other error (a file system without locks): the age alone decides.
	}
	if err := os.RemoveAll(p); err != nil {
		return false, err
	}
	return true, nil
}

// newestChange returns the newest modification time of p and, for a folder, of everything
// under it, without following symbolic links.
func newestChange(p string) (time.Time, error) {
	var newest time.Time
	err := filepath.WalkDir(p, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := de.Info()
		if err != nil {
			return err
		}
		if t := info.ModTime(); t.After(newest) {
			newest = t
		}
		return nil
	})
	return newest, err
}

// modelProblem says what is wrong with the model folder repo/name itself ("" when nothing):
// Report lists it as the model's problem, and RemoveStale leaves such a folder alone.
func modelProblem(repo, name string) string {
	dir := filepath.Join(repo, name)
	if err := ValidateName(name); err != nil {
		return err.Error()
	}
	if st, err := os.Lstat(dir); err == nil && st.Mode()&fs.ModeSymlink != 0 {
		return fmt.Sprintf("model folder %s is a symlink; model folders must be real folders", dir)
	}
	return ""
}
