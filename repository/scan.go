package repository

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/Masterminds/semver/v3"
	"go.uber.org/zap"

	"github.com/policyd/policyd/artifacts"
)

// served it is listed UNAVAILABLE with artifacts.Verify's reason.
type found struct {
	model, version string
	semver         *semver.Version
	dir            string
	refused        string // why the folder is refused before any verification ("" when not)
}

// scan lists the version folders of dir: models in byte order, versions lowest first (folders
// that are not canonical versions first). Hidden folders (".git", artifacts' ".tmp-*" work
// folders) and plain files are skipped silently; a model folder without any version folder is
// skipped with a warning. First it removes the work that interrupted adds left in the model
// folders (artifacts.RemoveStale: ".tmp-*" entries an hour old, never those of an add that
// runs), logging each; one it cannot remove (a read-only repository) is a warning.
//
// A model folder that is a symbolic link is followed only when it leads to a folder inside the
// repository; one that leads out of it has its versions refused, as artifacts.Verify refuses a
// symbolic link inside a version folder or a version folder that is one.
func scan(dir string, log *zap.Logger) ([]found, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("model repository %q: not a directory", dir)
	}
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	models, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("model repository: %w", err)
	}
	removed, err := artifacts.RemoveStale(dir, "", artifacts.StaleAge, time.Now())
	for _, p := range removed {
		log.Info("removed the stale work folder of an interrupted add", zap.String("path", p))
	}
	if err != nil {
		log.Warn("cannot remove the stale work of interrupted adds", zap.Error(err))
	}
	var out []found
	for _, m := range models {
		if strings.HasPrefix(m.Name(), ".") {
			continue
		}
		mdir := filepath.Join(dir, m.Name())
		if !isDir(mdir) {
			continue // a file beside the models (README, config): not ours
		}
		entries, err := os.ReadDir(mdir)
		if err != nil {
			log.Warn("skipping model folder", zap.String("model", m.Name()), zap.Error(err))
			continue
		}
		refused := ""
		if m.Type()&os.ModeSymlink != 0 {
			real, err := filepath.EvalSymlinks(mdir)
			if rel, rerr := filepath.Rel(root, real); err != nil || rerr != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
				refused = fmt.Sprintf("model folder %s is a symlink to %s, outside the repository", mdir, real)
			}
		}
		var versions []found
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") {
				continue
			}
			vdir := filepath.Join(mdir, e.Name())
			if !isDir(vdir) {
				continue // e.g. a Triton config.pbtxt beside the versions
			}
			f := found{model: m.Name(), version: e.Name(), dir: vdir, refused: refused}
			if c, err := artifacts.CanonicalVersion(e.Name()); err == nil && c == e.Name() {
				f.semver = semver.MustParse(c)
			}
			versions = append(versions, f)
		}
		sort.SliceStable(versions, func(i, j int) bool {
			return lessVersion(versions[i].semver, versions[j].semver, versions[i].version, versions[j].version)
		})
		if len(versions) == 0 {
			log.Warn("skipping model folder without version folders", zap.String("model", m.Name()), zap.String("folder", mdir))
			continue
		}
		out = append(out, versions...)
	}
	return out, nil
}

func isDir(path string) bool {
	fi, err := os.Stat(path) // follows symbolic links; Verify refuses a symlinked version folder
	return err == nil && fi.IsDir()
}
