package artifacts

import (
	"fmt"
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
