package artifacts

import (
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// age sets the modification time of root and of everything under it to when.
func age(t *testing.T, root string, when time.Time) {
	t.Helper()
	err := filepath.WalkDir(root, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Chtimes(p, when, when)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// RemoveStale removes exactly the old work entries Report lists as stale: old work folders and
// lock files, and an old stray .tmp-* file; never a version (however old), a work folder that
// is new or holds anything new, a hidden entry beside the model folders, or what is inside a
// symlinked model folder.
func TestRemoveStale(t *testing.T) {
	repo := t.TempDir()
	now := time.Now()
	old := now.Add(-2 * StaleAge)
	add(t, repo, "m", "1.0.0", nil)
	m := filepath.Join(repo, "m")
	age(t, filepath.Join(m, "1.0.0"), old)

	oldWork := filepath.Join(m, ".tmp-1.1.0-111")
	mustWrite(t, filepath.Join(oldWork, ModelFile), []byte("half"))
	mustWrite(t, filepath.Join(oldWork, "engines", "cpu", "x.bin"), []byte("deep"))
	age(t, oldWork, old)
	oldLock := filepath.Join(m, ".tmp-2.0.0.lock")
	mustWrite(t, oldLock, nil)
	age(t, oldLock, old)
	oldFile := filepath.Join(m, ".tmp-x") // a plain file in Add's name space
	mustWrite(t, oldFile, []byte("x"))
	age(t, oldFile, old)

	newWork := filepath.Join(m, ".tmp-1.2.0-222")
	mustWrite(t, filepath.Join(newWork, ModelFile), []byte("being written"))
	busyWork := filepath.Join(m, ".tmp-1.3.0-333") // an old folder an add still writes into
	mustWrite(t, filepath.Join(busyWork, ModelFile), []byte("slow copy"))
	age(t, busyWork, old)
	if err := os.Chtimes(filepath.Join(busyWork, ModelFile), now, now); err != nil {
		t.Fatal(err)
	}
	newFile := filepath.Join(m, ".tmp-y")
	mustWrite(t, newFile, nil)

	hidden := filepath.Join(repo, ".tmp-x") // beside the model folders: not a model's work
	mustWrite(t, filepath.Join(hidden, "f"), nil)
	age(t, hidden, old)
	elsewhere := t.TempDir()
	linkedWork := filepath.Join(elsewhere, ".tmp-1.0.0-444")
	mustWrite(t, filepath.Join(linkedWork, ModelFile), nil)
	age(t, linkedWork, old)
	if err := os.Symlink(elsewhere, filepath.Join(repo, "linked")); err != nil {
		t.Skip("symlinks unsupported:", err)
	}

	before, err := Report(repo, ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	removed, err := RemoveStale(repo, "", StaleAge, now)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{oldWork, oldLock, oldFile}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %v\nwant %v", removed, want)
	}
	for _, p := range removed {
		if exists(p) {
			t.Errorf("%s still there", p)
		}
		if !slices.Contains(before.Stale, p) {
			t.Errorf("removed %s, which Report did not list as stale (%v)", p, before.Stale)
		}
	}
	for _, p := range []string{newWork, busyWork, newFile, hidden, linkedWork, filepath.Join(m, "1.0.0", ModelFile)} {
		if !exists(p) {
			t.Errorf("%s was removed", p)
		}
	}
	if _, err := Verify(filepath.Join(m, "1.0.0"), VerifyOptions{}); err != nil {
		t.Errorf("the version after RemoveStale: %v", err)
	}
	after, err := Report(repo, ReportOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{newWork, busyWork, newFile}; !slices.Equal(after.Stale, want) {
		t.Errorf("report lists %v as stale, want the new ones %v", after.Stale, want)
	}

	// One model only; a model folder that does not exist has nothing stale; a bad name is
	// an error.
	if got, err := RemoveStale(repo, "m", 0, now.Add(2*StaleAge)); err != nil || len(got) != 3 {
		t.Errorf("RemoveStale(m, 0) = %v, %v; want the 3 left", got, err)
	}
	if got, err := RemoveStale(repo, "nope", StaleAge, now); err != nil || got != nil {
		t.Errorf("RemoveStale(nope) = %v, %v", got, err)
	}
	if _, err := RemoveStale(repo, "../m", StaleAge, now); err == nil {
		t.Error("RemoveStale(../m) = nil error")
	}
	if _, err := RemoveStale(filepath.Join(repo, "missing"), "", StaleAge, now); err == nil {
		t.Error("RemoveStale of a missing repository = nil error")
	}
	if !exists(linkedWork) || !exists(filepath.Join(m, "1.0.0")) {
		t.Error("the second pass removed what is not work")
	}
}

// A work folder that its add holds (its lock) is never removed, however old; once the add is
// gone (a killed process releases the lock), it is.
func TestRemoveStaleSkipsRunningAdd(t *testing.T) {
	repo := t.TempDir()
	work := filepath.Join(repo, "m", ".tmp-1.0.0-555")
	mustWrite(t, filepath.Join(work, ModelFile), []byte("half"))
	release, err := lockWork(work)
	if err != nil {
		t.Skip("no work folder locks here:", err)
	}
	now := time.Now()
	age(t, work, now.Add(-10*StaleAge))
	if got, err := RemoveStale(repo, "m", StaleAge, now); err != nil || len(got) != 0 || !exists(work) {
		t.Errorf("RemoveStale with the add running = %v, %v", got, err)
	}
	release()
	if got, err := RemoveStale(repo, "m", StaleAge, now); err != nil || len(got) != 1 || exists(work) {
		t.Errorf("RemoveStale once the add ended = %v, %v", got, err)
	}
}

// Add holds its work folder's lock while it writes, and leaves what RemoveStale ignores: an
// add that waits before its rename for longer than StaleAge keeps its folder.
func TestAddHoldsItsWorkFolder(t *testing.T) {
	repo := t.TempDir()
	if release, err := lockWork(t.TempDir()); err != nil {
		t.Skip("no work folder locks here:", err)
	} else {
		release()
	}
	var got []string
	var rerr error
	beforeRename = func(tmp string) error {
		age(t, tmp, time.Now().Add(-2*StaleAge))
		got, rerr = RemoveStale(repo, "m", StaleAge, time.Now())
		if !exists(tmp) {
			t.Errorf("RemoveStale removed the work folder of a running add")
		}
		return nil
	}
	defer func() { beforeRename = nil }()
	a := add(t, repo, "m", "1.0.0", nil)
	if rerr != nil || len(got) != 0 {
		t.Errorf("RemoveStale during the add = %v, %v", got, rerr)
	}
	if !strings.HasSuffix(a.Dir, filepath.Join("m", "1.0.0")) {
		t.Errorf("added into %s", a.Dir)
	}
}
