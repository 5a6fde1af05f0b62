package engines

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// ParseVersion parses the name of a version folder. It accepts a semantic version
// ("1.2.3", "1.2.3-rc.1", "v1.2.3") and a plain integer as Triton uses ("1", "2"), which stands
// for N.0.0. Anything else ("1.2", "01", "latest") is an error: a version folder names one
// version exactly, so that two folders never mean the same version by accident.
func ParseVersion(name string) (*semver.Version, error) {
	if name == "" {
		return nil, fmt.Errorf("version %q: empty", name)
	}
	if isDigits(name) {
		if len(name) > 1 && name[0] == '0' {
			return nil, fmt.Errorf("version %q: integer version with a leading zero", name)
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("version %q: %w", name, err)
		}
		return semver.New(n, 0, 0, "", ""), nil
	}
	v, err := semver.StrictNewVersion(strings.TrimPrefix(name, "v"))
	if err != nil {
		return nil, fmt.Errorf("version %q: not a semantic version (MAJOR.MINOR.PATCH) or an integer: %w", name, err)
	}
	return v, nil
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// SortVersions sorts folder names by the versions they name, lowest first; names that are not
// versions go last, in byte order. It is stable for names that name equal versions.
func SortVersions(names []string) {
	type key struct {
		v    *semver.Version
		name string
	}
	keys := make([]key, len(names))
	for i, n := range names {
		v, _ := ParseVersion(n)
		keys[i] = key{v, n}
	}
	sort.SliceStable(keys, func(i, j int) bool {
		a, b := keys[i], keys[j]
		switch {
		case a.v == nil && b.v == nil:
			return a.name < b.name
		case a.v == nil:
			return false
		case b.v == nil:
			return true
		}
		return a.v.LessThan(b.v)
	})
	for i := range keys {
		names[i] = keys[i].name
	}
}
