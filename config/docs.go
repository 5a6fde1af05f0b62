package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Reference returns docs/configuration.md: the introduction below, then every key with its
// type, default, environment variable, reload mode and description, generated from the
// struct. A test fails when the file in the repository differs; go test ./config -update
// rewrites it.
func Reference() string {
	var b strings.Builder
	b.WriteString(referenceIntro)
	root := rootNode()
	def := reflect.ValueOf(Defaults()).Elem()
	for _, sec := range root.children {
		fmt.Fprintf(&b, "\n### %s\n\n%s\n\n", sec.key, sec.desc)
		b.WriteString("| key | type | default | environment | change | description |\n")
		b.WriteString("| --- | --- | --- | --- | --- | --- |\n")
		var rows func(n *node, v reflect.Value)
		row := func(n *node, v reflect.Value) {
			d := "—"
			if v.IsValid() {
				d = "`" + strings.ReplaceAll(formatValue(n, v), "|", `\|`) + "`"
			}
			env, desc := "`"+n.env+"`", docDesc(n)
			if n.kind == kTable {
				env = "by index, below"
				desc = "The list; the keys of each element follow." + strings.TrimPrefix(desc, n.desc)
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s | %s |\n",
				n.path, docType(n), d, env, changeMode(n), mdEscape(desc))
		}
		rows = func(n *node, v reflect.Value) {
			for _, c := range n.children {
				var f reflect.Value
				if v.IsValid() {
					f = v.FieldByIndex(c.index)
				}
				switch c.kind {
				case kSection:
					rows(c, f)
				case kTable:
					row(c, f)
					rows(c, newElem(c.typ.Elem()))
				default:
					row(c, f)
				}
			}
		}
		if sec.kind == kSection {
			rows(sec, def.FieldByIndex(sec.index))
		} else {
			row(sec, def.FieldByIndex(sec.index))
			if sec.kind == kTable {
				rows(sec, newElem(sec.typ.Elem()))
			}
		}
	}
	b.WriteString(paramsReference())
	return b.String()
}

// mdEscape keeps a description's text as text in a table cell.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;").Replace(s)
}

func changeMode(n *node) string {
	if n.restart {
		return "restart"
	}
	return "reload"
}

func docType(n *node) string {
	t := n.typeName()
	if len(n.enum) > 0 {
		t += ": " + strings.Join(n.enum, ", ")
	}
	return t
}

// docDesc is the description with the constraints the tags state.
func docDesc(n *node) string {
	var c []string
	if n.required {
		c = append(c, "required")
	}
	if n.kind == kList && n.min != "" {
		c = append(c, "at least "+n.min)
	} else if n.min != "" && n.max != "" {
		c = append(c, n.min+" to "+n.max)
	} else if n.min != "" {
		c = append(c, "≥ "+n.min)
	} else if n.max != "" {
		c = append(c, "≤ "+n.max)
	}
	if n.unique && n.kind == kList {
		c = append(c, "no duplicates")
	}
	if n.unique && n.kind == kTable {
		if k := n.keyField(); k != nil {
			c = append(c, "one element per "+k.key)
		}
	}
	switch {
	case n.exists == "dir" && n.kind == kList:
		c = append(c, "each folder must exist")
	case n.exists == "file" && n.kind == kList:
		c = append(c, "each file must exist")
	case n.exists == "dir":
		c = append(c, "the folder must exist")
	case n.exists == "file":
		c = append(c, "the file must exist")
	}
	if n.pattern != nil {
		c = append(c, "pattern "+n.pattern.String())
	}
	if n.secret {
		c = append(c, "secret: printed as "+Redacted)
	}
	if len(c) == 0 {
		return n.desc
	}
	return n.desc + " (" + strings.Join(c, "; ") + ")"
}

const referenceIntro = `# Configuration

<!-- Generated from config/config.go by "go test ./config -update"; do not edit by hand. -->

policyd reads one typed configuration (package ` + "`config`" + `). Every key has a default, so a
config file holds only what differs; only ` + "`repository.path`" + ` is required.

## Layers

Each layer overrides the ones above it, key by key:

1. **defaults** — the tables below;
2. **the config file** — ` + "`policyd --config policyd.yaml`" + `, YAML (` + "`.yaml`, `.yml`" + `) or JSON (` + "`.json`" + `);
3. **the profile overlay** — ` + "`--profile prod`" + ` or ` + "`POLICYD_PROFILE=prod`" + `: the file
   ` + "`policyd.prod.yaml`" + ` beside the config file (` + "`<base>.<profile>.<ext>`" + `; the same extension is
   looked for first, then ` + "`.yaml`, `.yml`, `.json`" + `). It has the config file's shape and sets only what
   the profile changes. A named profile whose file is missing is an error. ` + "`POLICYD_PROFILE`" + ` may
   also come from the .env file; ` + "`--profile`" + ` wins over the environment, which wins over .env;
4. **the .env file** — ` + "`.env`" + ` in the current folder, if there is one: its ` + "`POLICYD_…`" + `
   lines, named as environment variables are;
5. **the environment** — ` + "`POLICYD_…`" + ` variables;
6. **flags** — ` + "`--server.addr 0.0.0.0:8000`" + `: the key with ` + "`-`" + ` for ` + "`_`" + `
   (` + "`--limits.max-request-size 1MiB`" + `).

Within the file and the overlay, a list (` + "`models`" + `, ` + "`models[].backends`" + `) replaces the lower
layer's list whole. A key written with no value (` + "`addr:`" + `) sets nothing.

Relative paths (` + "`repository.path`, `repository.backend_dir`, `admin.token_file`" + `) in a config file or
overlay are relative to that file's folder, so a config works from any current folder; from the
.env file, the environment or flags they are relative to the current folder.

## Environment variables

` + "`POLICYD_`" + `, then the key path in capitals with ` + "`__`" + ` (two underscores) between levels:
` + "`server.addr`" + ` is ` + "`POLICYD_SERVER__ADDR`" + `, ` + "`limits.max_request_size`" + ` is
` + "`POLICYD_LIMITS__MAX_REQUEST_SIZE`" + `.

- An element of ` + "`models`" + ` is set by its index, merging into the list of the lower layers:
  ` + "`POLICYD_MODELS__0__INSTANCES=4`" + ` changes the instances of the first model the file lists;
  an index one past the end adds a model (` + "`POLICYD_MODELS__1__NAME=other`" + `).
- A list of strings is one comma-separated value: ` + "`POLICYD_MODELS__0__BACKENDS=tensorrt,cuda,cpu`" + `.
- ` + "`POLICYD_PROFILE`" + ` picks the profile; it is not a key. A ` + "`POLICYD_`" + ` variable without ` + "`__`" + `
  that does not start with a section's name (` + "`POLICYD_BACKEND_DIR`" + `, read by libpolicyd itself) is not
  config and is left alone; one that does (` + "`POLICYD_SERVER_ADDR`" + `) is an error naming the right variable.

## Checking and showing a config

Every problem of every layer is reported at once, one a line, with its key path, what was
expected and the layer that set the value:

` + "```" + `
server.adr: unknown key (did you mean server.addr?) (file:policyd.yaml)
server.read_timeout: must be a duration like 30s, 1m30s or 250ms, got "thirty" (env:POLICYD_SERVER__READ_TIMEOUT)
models[2].instances: must be ≥ 0, got -1 (file:policyd.yaml)
log.level: must be one of debug, info, warn, error, got "verbose" (profile:policyd.prod.yaml)
` + "```" + `

Unknown keys are errors in every layer, and an invalid config stops start-up.

- ` + "`policyd --check-config`" + ` loads and validates every layer and exits: 0 when valid, else 2 with the list (so does a plain start on an invalid config).
- ` + "`policyd --print-config`" + ` prints the merged config as YAML, each value followed by the layer that set it
  (` + "`# default`, `# file:policyd.yaml`, `# env:POLICYD_LOG__LEVEL`, `# flag:--log.level`" + `). The admin token is
  never read for it: only the token file's path shows; keys marked secret print as ` + "`<redacted>`" + `.
- ` + "`policyctl config validate FILE [--profile P]`" + ` checks a file (and overlay) alone, without the
  environment unless ` + "`--env`" + ` is given; it prints ` + "`ok`" + `, or the list and exits 1.
- ` + "`policyctl config diff A B`" + ` lists the keys whose values differ and marks those that need a restart.
- ` + "`policyctl config schema`" + ` prints the JSON Schema (draft 2020-12) of a config file, for editors and CI.

## Reload

A running policyd reloads its config when the config file, its overlay or the .env file changes
(watched with ` + "`config.Watch`" + `: writes, an editor's rename, a Kubernetes ConfigMap update) on SIGHUP, and on ` + "`POST /v2/admin/reload`" + ` (with ` + "`Authorization: Bearer <token>`" + `, the
token read from ` + "`admin.token_file`" + `; without one the admin API answers 403 unless
` + "`admin.allow_unauthenticated`" + ` is set). The token file is watched too and re-read on every
reload: a token written to it (or a Kubernetes Secret update) takes effect at once. The new config
is loaded and validated whole first; an invalid one is rejected (log, metric, health details) and
the running config stays. A valid one is applied at once: the keys marked **reload** below take
effect without dropping a request (new models load, removed ones drain and unload). A change to a
key marked **restart** is reported and not applied, neither half nor whole, until the next start.

What a reload did shows in three places: the log (one line per reload, with every key changed,
or the rejection with every problem); the metrics ` + "`policyd_config_reloads_total{outcome}`" + `
(` + "`applied`" + `, ` + "`unchanged`" + `, ` + "`rejected`" + `, ` + "`failed`" + `), ` + "`policyd_config_last_reload_successful`" + `,
` + "`policyd_config_last_reload_timestamp_seconds`" + ` and ` + "`policyd_config_restart_pending_changes`" + ` on
` + "`GET /metrics`" + `; and ` + "`GET /v2/health/details`" + `, whose ` + "`config.last_reload`" + ` holds the outcome, the
error, the changes applied, the changes pending a restart and the models loaded, reloaded and
unloaded, and ` + "`config.restart_pending`" + ` the changes waiting for a restart.

## Keys

` + "`models[]`" + ` stands for every element of ` + "`models`" + `, and ` + "`<i>`" + ` for its index in the
environment variable.
`

// paramsReference is the section of the reference listing BackendParameters.
func paramsReference() string {
	var b strings.Builder
	b.WriteString(`
## Backend parameters

` + "`engine.backend_parameters`" + ` (every model) and ` + "`models[].backend_parameters`" + ` (one model, key by key
over the former) pass build parameters to the backend that builds a model's engine. A key is
` + "`<backend>.<name>`" + `; in a file it may also be written as a section per backend:

` + "```yaml" + `
engine:
  backend_parameters:
    tensorrt.precision: fp16
models:
  - name: walker
    backend_parameters:
      tensorrt:
        workspace_mib: 2048
        builder_optimization_level: 5
` + "```" + `

From the environment, one variable per key
(` + "`POLICYD_ENGINE__BACKEND_PARAMETERS__TENSORRT__PRECISION=fp16`" + `,
` + "`POLICYD_MODELS__0__BACKEND_PARAMETERS__TENSORRT__WORKSPACE_MIB=2048`" + `), or the whole map as
comma-separated ` + "`key=value`" + ` pairs, as a flag takes it
(` + "`--engine.backend-parameters tensorrt.precision=fp16,tensorrt.workspace_mib=1024`" + `). An unknown key
or a value out of range is an error naming the key. Only the backend named by a key reads it:
` + "`tensorrt.*`" + ` is ignored by a model served on cuda or cpu. The parameters that change what is built
are part of an engine cache's binding: ` + "`policyctl engines build --config`" + ` builds with the same
ones (docs/gpu.md, Engine caches). The ` + "`graphs`" + ` and ` + "`mapped_io`" + ` switches of the GPU backends change
how a context runs, not what is built, and are no part of that binding. cpu has no parameters.

| key | values | description |
| --- | --- | --- |
`)
	for _, p := range BackendParameters {
		fmt.Fprintf(&b, "| `%s` | %s | %s |\n", p.Key, p.allows(), mdEscape(p.Desc))
	}
	return b.String()
}
