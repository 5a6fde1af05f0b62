package artifacts

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"
)

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// ValidateName checks a model name: a letter or digit, then up to 127 letters, digits, '.',
// '_' or '-'.
func ValidateName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("model name %q: want a letter or digit, then up to 127 letters, digits, '.', '_' or '-'", name)
	}
	return nil
}

// CanonicalVersion parses a semantic version MAJOR.MINOR.PATCH with optional pre-release and
// build metadata ("1.2.3", "1.2.3-rc.1+build.5"), accepting a leading "v", and returns it as
// stored: without the "v". Anything else ("1.2", "01.2.3", "latest") is an error.
func CanonicalVersion(s string) (string, error) {
	v, err := semver.StrictNewVersion(strings.TrimPrefix(s, "v"))
	if err != nil || s == "" {
		return "", fmt.Errorf("version %q is not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] (e.g. 1.2.0, v1.2.0, 1.3.0-rc.1)", s)
	}
	return v.String(), nil
}

// ParseVersion parses a version as CanonicalVersion does and returns it parsed.
func ParseVersion(s string) (*semver.Version, error) {
	c, err := CanonicalVersion(s)
	if err != nil {
		return nil, err
	}
	return semver.MustParse(c), nil
}

// RequestedVersion parses the version a request names (a URL's version, a load or a default
// pin): a version as CanonicalVersion takes it ("1.2.3", "v1.2.3", "1.3.0-rc.1"), or a plain
// integer N, as Triton clients send, which stands for N.0.0 ("1", "2"; not "01"). It is a
// way of naming a stored version, never a version's name: a folder or a config version is
// canonical (a folder named "2" is not a version folder; rename it 2.0.0).
func RequestedVersion(s string) (*semver.Version, error) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil || (len(s) > 1 && s[0] == '0') {
			return nil, fmt.Errorf("version %q: not a semantic version MAJOR.MINOR.PATCH or an integer without leading zeros", s)
		}
		return semver.New(n, 0, 0, "", ""), nil
	}
	return ParseVersion(s)
}

// ParseSelector checks what selects the versions of a model (config's models[].version,
// repository.ModelSpec.Version): "" every version; an exact version as CanonicalVersion takes
// it, returned canonical in exact; else a semver constraint ("^1.2", "~1.2.3", ">=1.0 <2",
// "1.x", "*") that Resolve takes, exact "". Anything else is an error.
func ParseSelector(s string) (exact string, err error) {
	if s == "" {
		return "", nil
	}
	if c, err := CanonicalVersion(s); err == nil {
		return c, nil
	}
	if _, err := semver.NewConstraint(s); err != nil {
		return "", fmt.Errorf("%q is neither an exact version (1.2.3) nor a constraint (^1.2, ~1.2.3, >=1.0 <2): %v", s, err)
	}
	return "", nil
}

// isCanonical reports whether s is a version exactly as stored (a folder name).
func isCanonical(s string) bool {
	c, err := CanonicalVersion(s)
	return err == nil && c == s
}

// sortVersions sorts canonical versions ascending by semver precedence, then by string (two
// versions differing only in build metadata have equal precedence).
func sortVersions(vs []string) {
	sort.SliceStable(vs, func(i, j int) bool {
		a, b := semver.MustParse(vs[i]), semver.MustParse(vs[j])
		if c := a.Compare(b); c != 0 {
			return c < 0
		}
		return vs[i] < vs[j]
	})
}

// Resolve returns the versions that satisfy constraint, highest first. constraint is an exact
// version ("1.2.3", "v1.2.3") or a semver range ("^1.2", "~1.2.3", ">=1.0 <2", "1.x", "*").
// Pre-releases match only a constraint that names a pre-release (">=1.3.0-0", "1.3.0-rc.1");
// such a constraint admits every pre-release in its range, not only those of the version it
// names (github.com/Masterminds/semver/v3, unlike npm). Build metadata never affects matching. A constraint that matches nothing gives an empty
// result, not an error; a malformed constraint, or a version that is not canonical, is an error.
func Resolve(versions []string, constraint string) ([]string, error) {
	if strings.TrimSpace(constraint) == "" {
		return nil, fmt.Errorf("empty version constraint")
	}
	c, err := semver.NewConstraint(constraint)
	if err != nil {
		return nil, fmt.Errorf("version constraint %q: %v", constraint, err)
	}
	var out []string
	for _, s := range versions {
		if !isCanonical(s) {
			return nil, fmt.Errorf("version %q is not canonical (want e.g. 1.2.3)", s)
		}
		if c.Check(semver.MustParse(s)) {
			out = append(out, s)
		}
	}
	sortVersions(out)
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}
