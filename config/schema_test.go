package config

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite docs/configuration.md from the struct")

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema()))
	if err != nil {
		t.Fatalf("Schema() is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource(SchemaID, doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile(SchemaID)
	if err != nil {
		t.Fatalf("Schema() does not compile: %v", err)
	}
	return s
}

// readAsJSON reads a YAML or JSON config file as the JSON value the schema validates.
func readAsJSON(t *testing.T, path string) any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	out, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestSchemaAcceptsGoodFiles(t *testing.T) {
	s := compileSchema(t)
	files, _ := filepath.Glob("testdata/good/*")
	more, _ := filepath.Glob("../examples/config/*.yaml")
	for _, f := range append(append(files, more...), "testdata/profiles/policyd.yaml", "testdata/profiles/policyd.prod.yaml") {
		if strings.HasSuffix(f, "empty-values.yaml") {
			continue // Load takes a key with no value as unset; the schema, for editors, asks for a value
		}
		if err := s.Validate(readAsJSON(t, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestSchemaRejects(t *testing.T) {
	s := compileSchema(t)
	for _, c := range []struct {
		doc  string
		want string
	}{
		{`{"server": {"adr": "x"}}`, "additional properties 'adr' not allowed"},
		{`{"sever": {}}`, "additional properties 'sever' not allowed"},
		{`{"models": [{"name": "a", "instancs": 1}]}`, "additional properties 'instancs' not allowed"},
		{`{"log": {"level": "verbose"}}`, "value must be one of 'debug', 'info', 'warn', 'error'"},
		{`{"server": {"read_timeout": "thirty"}}`, "does not match pattern"},
		{`{"limits": {"max_request_size": "lots"}}`, "does not match pattern"},
		{`{"limits": {"queue_len": 0}}`, "minimum"},
		{`{"models": [{"name": "a", "instances": 2000}]}`, "maximum"},
		{`{"models": [{"instances": 1}]}`, "missing property 'name'"},
		{`{"engine": {"backends": []}}`, "minItems"},
		{`{"models": [{"name": "a", "devices": ["gpu0"]}]}`, "does not match pattern"},
		{`{"models": [{"name": "a", "backends": ["cpu", "cpu"]}]}`, "items at 0 and 1 are equal"},
		{`{"models": [{"name": "a", "backends": ["gpu"]}]}`, "value must be one of 'cpu', 'cuda', 'tensorrt'"},
	} {
		doc, err := jsonschema.UnmarshalJSON(strings.NewReader(c.doc))
		if err != nil {
			t.Fatal(err)
		}
		err = s.Validate(doc)
		if err == nil || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(c.want)) {
			t.Errorf("%s: %v; want %q", c.doc, err, c.want)
		}
	}
}

func TestSchemaStatesEveryKey(t *testing.T) {
	var v map[string]any
	if err := json.Unmarshal(Schema(), &v); err != nil {
		t.Fatal(err)
	}
	if v["$schema"] != "https://json-schema.org/draft/2020-12/schema" || v["additionalProperties"] != false {
		t.Errorf("header: %v %v", v["$schema"], v["additionalProperties"])
	}
	rootNode().leaves(func(n *node) {
		cur := v
		for _, seg := range strings.Split(strings.ReplaceAll(n.path, "[]", ".[]"), ".") {
			if seg == "[]" {
				cur = cur["items"].(map[string]any)
				continue
			}
			p, ok := cur["properties"].(map[string]any)[seg].(map[string]any)
			if !ok {
				t.Fatalf("schema lacks %s", n.path)
			}
			cur = p
		}
		if cur["description"] == "" || cur["type"] == nil {
			t.Errorf("%s: %v", n.path, cur)
		}
		if !strings.Contains(n.path, "[]") && cur["default"] == nil {
			t.Errorf("%s: no default", n.path)
		}
	})
}

// docs/configuration.md is generated from the struct; refresh with go test ./config -update.
func TestReferenceIsFresh(t *testing.T) {
	const path = "../docs/configuration.md"
	want := Reference()
	if *update {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v; generate it: go test ./config -update", err)
	}
	if string(got) != want {
		t.Fatalf("%s is stale: the config struct changed. Refresh it: go test ./config -update", path)
	}
	for _, w := range []string{"| `server.addr` | string | `127.0.0.1:8000` | `POLICYD_SERVER__ADDR` | restart |",
		"| `models[].instances` | integer | `0` | `POLICYD_MODELS__<i>__INSTANCES` | reload |",
		"| `log.level` | enum: debug, info, warn, error | `info` | `POLICYD_LOG__LEVEL` | reload |"} {
		if !strings.Contains(want, w) {
			t.Errorf("reference lacks %q", w)
		}
	}
}

func TestExamplesValidate(t *testing.T) {
	for _, p := range []string{"", "dev", "staging", "prod"} {
		t.Run("profile="+p, func(t *testing.T) {
			c, s := mustLoad(t, LoadOptions{File: "../examples/config/policyd.yaml", Profile: p})
			if c.Repository.Path != filepath.Join("..", "examples", "repository") || len(c.Models) != 1 {
				t.Errorf("repository %q, models %+v", c.Repository.Path, c.Models)
			}
			if p != "" && !strings.HasPrefix(s.Of("log.level"), "profile:") && p != "staging" {
				t.Errorf("log.level from %s", s.Of("log.level"))
			}
		})
	}
}
