package engines

import (
	"reflect"
	"testing"
)

func TestParseVersion(t *testing.T) {
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
			v, err := ParseVersion(tt.name)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ParseVersion(%q) = %v, want an error", tt.name, v)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseVersion(%q): %v", tt.name, err)
			}
			if got := v.String(); got != tt.want {
				t.Errorf("ParseVersion(%q) = %s, want %s", tt.name, got, tt.want)
			}
		})
	}
}

func TestSortVersions(t *testing.T) {
	names := []string{"10", "v1.10.0", "2", "1.2.0", "x", "1", "1.2.0-rc.1", "a", "v1.9.3"}
	SortVersions(names)
	want := []string{"1", "1.2.0-rc.1", "1.2.0", "v1.9.3", "v1.10.0", "2", "10", "a", "x"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("SortVersions = %v\nwant %v", names, want)
	}
}
