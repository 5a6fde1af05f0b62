package artifacts

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// WriteJSON writes the report as one indented JSON document.
func (r *RepositoryReport) WriteJSON(w io.Writer) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// signer describes the signature of a version for people.
func (v *VersionStatus) signer() string {
	switch {
	case v.SignedBy == "":
		return "unsigned"
	case v.SignatureVerified:
		return "signed by " + v.SignedBy + " (verified)"
	}
	return "signed by " + v.SignedBy + " (not checked: no trusted key given)"
}

// WriteText writes the report for people: one block per version, its files, its problems,
// then stale work folders and a summary line.
func (r *RepositoryReport) WriteText(w io.Writer) error {
	tw := &errWriter{w: w}
	fmt.Fprintf(tw, "repository %s\n", r.Repository)
	for _, m := range r.Models {
		fmt.Fprintf(tw, "\n%s\n", m.Name)
		if m.Problem != "" {
			fmt.Fprintf(tw, "  error: %s\n", m.Problem)
		}
		if len(m.Versions) == 0 && m.Problem == "" {
			fmt.Fprintf(tw, "  (no versions)\n")
		}
		width := 0
		for _, v := range m.Versions {
			width = max(width, len(v.Version))
		}
		for _, v := range m.Versions {
			digest := v.Digest
			if digest == "" {
				digest = "-"
			}
			fmt.Fprintf(tw, "  %-*s  %-5s  %s  %s\n", width, v.Version, v.Status, digest, v.signer())
			if !v.Created.IsZero() {
				fmt.Fprintf(tw, "    created %s by %s\n", v.Created.UTC().Format(time.RFC3339), v.Tool)
			}
			for _, k := range sortedKeys(v.Metadata) {
				fmt.Fprintf(tw, "    %s=%s\n", k, v.Metadata[k])
			}
			for _, f := range v.Files {
				fmt.Fprintf(tw, "    %s  sha256:%s  %d bytes\n", f.Path, f.SHA256, f.Size)
			}
			for _, p := range v.Problems {
				fmt.Fprintf(tw, "    error: %s\n", strings.ReplaceAll(p, "\n", "\n      "))
			}
		}
	}
	if len(r.Stale) > 0 {
		fmt.Fprintf(tw, "\nstale work folders of interrupted adds (not versions; remove when no add runs):\n")
		for _, s := range r.Stale {
			fmt.Fprintf(tw, "  %s\n", s)
		}
	}
	fmt.Fprintf(tw, "\n%d ok, %d with errors\n", r.OK, r.Errors)
	return tw.err
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(b []byte) (int, error) {
	if e.err != nil {
		return len(b), nil
	}
	_, e.err = e.w.Write(b)
	return len(b), nil
}
