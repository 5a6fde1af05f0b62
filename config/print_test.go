package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestPrintShowsSources(t *testing.T) {
	c, s := mustLoad(t, LoadOptions{File: "testdata/profiles/policyd.yaml", Profile: "prod",
		Env: []string{"POLICYD_MODELS__0__INSTANCES=3"}, Flags: map[string]any{"server.addr": ":9"}})
	out := Print(c, s)
	for _, want := range []string{
		"server:\n  addr: \":9\" ",
		"# flag:--server.addr\n",
		"  read_timeout: 30s ",
		"  idle_timeout: 2m ",
		"  max_request_size: 64MiB ",
		"  level: warn ",
		"# profile:testdata/profiles/policyd.prod.yaml\n",
		"models: ",
		"  - name: policy-b ",
		"    backends: [cuda, cpu] ",
		"    instances: 3 ",
		"# env:POLICYD_MODELS__0__INSTANCES\n",
		`  version: "" `,
		"  path: testdata/repo ",
		"# file:testdata/profiles/policyd.yaml\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("Print lacks %q:\n%s", want, out)
		}
	}
	// every leaf key has a line and a source comment
	if n := strings.Count(out, "# "); n != len(s.Keys()) {
		t.Errorf("%d comments for %d keys:\n%s", n, len(s.Keys()), out)
	}
	if strings.Contains(Print(c, nil), "#") {
		t.Error("Print without sources writes comments")
	}
}

// Print writes YAML that loads back to the same config.
func TestPrintRoundTrip(t *testing.T) {
	for _, f := range []string{"testdata/good/full.yaml", "testdata/good/full.json", "testdata/good/minimal.yaml", "testdata/profiles/policyd.yaml"} {
		c, s := mustLoad(t, LoadOptions{File: f})
		// absolute paths, since the copy lives elsewhere
		abs := func(p *string) {
			if *p != "" {
				*p, _ = filepath.Abs(*p)
			}
		}
		abs(&c.Repository.Path)
		abs(&c.Repository.BackendDir)
		abs(&c.Admin.TokenFile)
		out := filepath.Join(t.TempDir(), "printed.yaml")
		write(t, out, Print(c, s))
		back, _ := mustLoad(t, LoadOptions{File: out})
		if !reflect.DeepEqual(c, back) {
			t.Errorf("%s: printed and loaded back:\n%+v\nwant\n%+v\n%s", f, back, c, Print(c, s))
		}
	}
}

func TestYAMLString(t *testing.T) {
	for _, s := range []string{"", "1", "1.0", "1.0.0", "v1", "true", "no", "null", "~", "a: b", "a #b", "-x", "[x]", "a,b",
		" x", "x ", "127.0.0.1:8000", ":8000", "x:", "a\"b", "a\\b", "#x", "*x", "&x", "!x", "%x", "@x", "`x", "a\nb", "0x10", "1e3", ".inf", "-.inf", ".NaN", "0o17", "0b101", "1_000", "+1", "2001-12-14", "=", "<<"} {
		var got any
		if err := yaml.Unmarshal([]byte("k: "+yamlString(s)), &got); err != nil {
			t.Errorf("%q as %s: %v", s, yamlString(s), err)
			continue
		}
		if v := got.(map[string]any)["k"]; v != s {
			t.Errorf("%q written %s reads back as %#v", s, yamlString(s), v)
		}
	}
}

// The admin token is never read for showing: it appears in no output of the package.
func TestSecretsNeverPrinted(t *testing.T) {
	secret, err := os.ReadFile("testdata/token")
	if err != nil {
		t.Fatal(err)
	}
	tok := strings.TrimSpace(string(secret))
	c, s := mustLoad(t, LoadOptions{File: "testdata/good/full.yaml"})
	d := Defaults()
	outs := map[string]string{
		"Print":     Print(c, s),
		"Schema":    string(Schema()),
		"Reference": Reference(),
		"Diff":      strings.Join(changeLines(Diff(d, c)), "\n"),
	}
	// nor in problems about it
	dir := t.TempDir()
	write(t, filepath.Join(dir, "policyd.yaml"), "repository: {path: "+absPath(t, "testdata/repo")+"}\nadmin: {token_file: tok}\nlog: {level: "+tok+"}\n")
	write(t, filepath.Join(dir, "tok"), "   \n"+tok+"\n")
	_, _, err = load(t, LoadOptions{File: filepath.Join(dir, "policyd.yaml")})
	if err == nil {
		t.Fatal("want a problem about the empty first line")
	}
	errText := err.Error()
	outs["error"] = strings.ReplaceAll(errText, `got "`+tok+`"`, "") // the log.level value is not the token's file
	if !strings.Contains(errText, "admin.token_file: the token file") {
		t.Errorf("no problem about the token file:\n%s", errText)
	}
	for name, out := range outs {
		if strings.Contains(out, tok) {
			t.Errorf("%s shows the admin token:\n%s", name, out)
		}
	}
	if !strings.Contains(outs["Print"], "token_file: testdata/token") {
		t.Errorf("Print does not show the token file's path:\n%s", outs["Print"])
	}
}

// A key tagged secret:"true" prints as <redacted> in Print and Diff.
func TestSecretTagRedacts(t *testing.T) {
	type creds struct {
		User     string `koanf:"user" reload:"live" desc:"User."`
		Password string `koanf:"password" reload:"live" secret:"true" desc:"Password."`
		Empty    string `koanf:"empty" reload:"live" secret:"true" desc:"Unset secret."`
	}
	type withSecret struct {
		Creds creds `koanf:"creds" desc:"Credentials."`
	}
	root := buildTree(reflect.TypeFor[withSecret](), "", "POLICYD")
	a := withSecret{creds{User: "u", Password: "hunter2-very-secret"}}
	b := withSecret{creds{User: "u", Password: "other-secret-value"}}
	out := printTree(root, reflect.ValueOf(a), nil)
	if strings.Contains(out, "hunter2") || !strings.Contains(out, "password: <redacted>") || !strings.Contains(out, `empty: ""`) {
		t.Errorf("Print:\n%s", out)
	}
	changes := diffTree(root, reflect.ValueOf(a), reflect.ValueOf(b))
	text := strings.Join(changeLines(changes), "\n")
	if len(changes) != 1 || strings.Contains(text, "secret") || changes[0].Old != Redacted {
		t.Errorf("Diff: %v", changes)
	}
}

func absPath(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func changeLines(cs []Change) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Key+" "+c.Old+" "+c.New)
	}
	return out
}
