package artifacts

import (
	"fmt"
	"strings"
	"testing"
)

func TestCanonicalVersion(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"0.0.0", "0.0.0"},
		{"1.2.3-rc.1", "1.2.3-rc.1"},
		{"v1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"},
		{"1.2.3+20260304", "1.2.3+20260304"},
		{"1.2", ""},
		{"1", ""},
		{"01.2.3", ""},
		{"1.02.3", ""},
		{"1.2.3.4", ""},
		{"latest", ""},
		{"", ""},
		{"v", ""},
		{"vv1.2.3", ""},
		{"V1.2.3", ""},
		{" 1.2.3", ""},
		{"1.2.3-", ""},
		{"1.2.3-rc..1", ""},
		{"1.2.3-01", ""},
		{"1.2.3/..", ""},
	} {
		got, err := CanonicalVersion(c.in)
		if got != c.want || (err == nil) != (c.want != "") {
			t.Errorf("%q: got %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestValidateName(t *testing.T) {
	for _, c := range []struct {
		name string
		ok   bool
	}{
		{"3DBall", true}, {"a", true}, {"mlp-small_v2.onnx", true}, {string(make([]byte, 0)) + "a" + fmt.Sprintf("%0127d", 0), true},
		{"", false}, {".hidden", false}, {"-x", false}, {"a/b", false}, {"..", false}, {"a b", false}, {"é", false},
		{"a" + fmt.Sprintf("%0128d", 0), false},
	} {
		if err := ValidateName(c.name); (err == nil) != c.ok {
			t.Errorf("%q: %v", c.name, err)
		}
	}
}

func TestResolve(t *testing.T) {
	vs := []string{"0.9.0", "1.0.0", "1.2.0", "1.2.3", "1.2.4-rc.1", "1.3.0-beta.2", "1.3.0+build.7", "2.0.0-rc.1", "2.0.0"}
	for _, c := range []struct {
		constraint string
		want       string
		err        bool
	}{
		{"1.2.3", "[1.2.3]", false},
		{"v1.2.3", "[1.2.3]", false},
		{"=1.2.3", "[1.2.3]", false},
		{"^1.2", "[1.3.0+build.7 1.2.3 1.2.0]", false},
		{"~1.2.3", "[1.2.3]", false},
		{">=1.0 <2", "[1.3.0+build.7 1.2.3 1.2.0 1.0.0]", false},
		{"*", "[2.0.0 1.3.0+build.7 1.2.3 1.2.0 1.0.0 0.9.0]", false},
		{"1.x", "[1.3.0+build.7 1.2.3 1.2.0 1.0.0]", false},
		{"1.3.0", "[1.3.0+build.7]", false},                               // build metadata is ignored for matching
		{"1.2.4-rc.1", "[1.2.4-rc.1]", false},                             // an exact pre-release
		{"^1.2.4-rc.1", "[1.3.0+build.7 1.3.0-beta.2 1.2.4-rc.1]", false}, // a pre-release in the constraint admits every pre-release in range (Masterminds, unlike npm)
		{">=1.3.0-0 <1.4", "[1.3.0+build.7 1.3.0-beta.2]", false},
		{">=2.0.0-0", "[2.0.0 2.0.0-rc.1]", false},
		{"^3", "[]", false},
		{"<0.1", "[]", false},
		{"2.0.0-rc.2", "[]", false},
		{"", "", true},
		{"   ", "", true},
		{"latest", "", true},
		{"^1.2.x.y", "", true},
		{">= <", "", true},
	} {
		got, err := Resolve(vs, c.constraint)
		if c.err {
			if err == nil {
				t.Errorf("%q: no error, got %v", c.constraint, got)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want && !(len(got) == 0 && c.want == "[]") {
			t.Errorf("%q: got %v, %v; want %s", c.constraint, got, err, c.want)
		}
	}
	if _, err := Resolve([]string{"v1.0.0"}, "*"); err == nil {
		t.Error("a non-canonical version was accepted")
	}
}

// RequestedVersion takes what CanonicalVersion takes and Triton's integer versions (the
// cases of the former engines.ParseVersion).
func TestRequestedVersion(t *testing.T) {
	tests := []struct {
		name string
		want string // canonical semver; "" = error
	}{
		{"1", "1.0.0"},
		{"2", "2.0.0"},
		{"0", "0.0.0"},
		{"10", "10.0.0"},
		{"1.2.3", "1.2.3"},
		{"v1.2.3", "1.2.3"},
		{"1.2.3-rc.1", "1.2.3-rc.1"},
		{"1.2.3+build.5", "1.2.3+build.5"},
		{"", ""},
		{"01", ""},
		{"1.2", ""},
		{"v1", ""},
		{"latest", ""},
		{"1.2.3.4", ""},
		{"-1", ""},
		{"99999999999999999999999", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, err := RequestedVersion(tt.name)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("RequestedVersion(%q) = %v, want an error", tt.name, v)
				}
				return
			}
			if err != nil {
				t.Fatalf("RequestedVersion(%q): %v", tt.name, err)
			}
			if got := v.String(); got != tt.want {
				t.Errorf("RequestedVersion(%q) = %s, want %s", tt.name, got, tt.want)
			}
		})
	}
}

func TestParseSelector(t *testing.T) {
	for _, c := range []struct{ in, exact, err string }{
		{"", "", ""},
		{"v1.2.3", "1.2.3", ""},
		{"1.3.0-rc.1", "1.3.0-rc.1", ""},
		{"^1.2", "", ""},
		{">=1.0 <2", "", ""},
		{"*", "", ""},
		{"latest", "", "neither an exact version"},
		{"1", "", ""}, // a constraint: 1.x
	} {
		exact, err := ParseSelector(c.in)
		if exact != c.exact || (err == nil) != (c.err == "") || (err != nil && !strings.Contains(err.Error(), c.err)) {
			t.Errorf("ParseSelector(%q) = %q, %v; want %q, %q", c.in, exact, err, c.exact, c.err)
		}
	}
}
