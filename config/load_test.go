package config

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// load loads with nothing from the process: no environment, no .env, unless opts say.
func load(t *testing.T, opts LoadOptions) (*Config, *Sources, error) {
	t.Helper()
	if opts.Env == nil {
		opts.Env = []string{}
	}
	if opts.DotEnv == "" {
		opts.DotEnv = NoDotEnv
	}
	return Load(opts)
}

func mustLoad(t *testing.T, opts LoadOptions) (*Config, *Sources) {
	t.Helper()
	c, s, err := load(t, opts)
	if err != nil {
		t.Fatalf("Load(%+v):\n%v", opts, err)
	}
	return c, s
}

func write(t *testing.T, path, text string) string {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// The layers, lowest first, each setting server.addr to its own port.
var layers = []struct {
	name, port string
}{{"file", "8001"}, {"profile", "8002"}, {"dotenv", "8003"}, {"env", "8004"}, {"flag", "8005"}}

// setup writes the layers of mask (bit i: layers[i] sets server.addr) into a temp folder and
// returns the options that read them. Every layer also sets log.level, so a key set in every
// layer is tested too when mask is all ones.
func setupLayers(t *testing.T, mask int) LoadOptions {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "repo"), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := func(i int) string {
		if mask&(1<<i) == 0 {
			return ""
		}
		return "127.0.0.1:" + layers[i].port
	}
	yamlAddr := func(i int) string {
		if a := addr(i); a != "" {
			return "server:\n  addr: " + a + "\n"
		}
		return ""
	}
	opts := LoadOptions{
		File:    write(t, filepath.Join(dir, "policyd.yaml"), "repository:\n  path: repo\n"+yamlAddr(0)),
		Profile: "test",
		DotEnv:  write(t, filepath.Join(dir, "dot.env"), ""),
		Env:     []string{"HOME=/root"},
		Flags:   map[string]any{},
	}
	write(t, filepath.Join(dir, "policyd.test.yaml"), "log:\n  format: console\n"+yamlAddr(1))
	if a := addr(2); a != "" {
		write(t, opts.DotEnv, "# comment\nOTHER=1\nPOLICYD_SERVER__ADDR="+a+"\n")
	}
	if a := addr(3); a != "" {
		opts.Env = append(opts.Env, "POLICYD_SERVER__ADDR="+a)
	}
	if a := addr(4); a != "" {
		opts.Flags["server.addr"] = a
	}
	return opts
}

func TestPrecedenceOfEveryLayer(t *testing.T) {
	// every subset of the layers: the highest layer present wins, and Sources names it
	for mask := 0; mask < 1<<len(layers); mask++ {
		opts := setupLayers(t, mask)
		c, s := mustLoad(t, opts)
		want, wantSrc := "127.0.0.1:8000", "default"
		for i := len(layers) - 1; i >= 0; i-- {
			if mask&(1<<i) != 0 {
				want = "127.0.0.1:" + layers[i].port
				wantSrc = map[string]string{
					"file":    "file:" + opts.File,
					"profile": "profile:" + strings.TrimSuffix(opts.File, ".yaml") + ".test.yaml",
					"dotenv":  "dotenv:" + opts.DotEnv,
					"env":     "env:POLICYD_SERVER__ADDR",
					"flag":    "flag:--server.addr",
				}[layers[i].name]
				break
			}
		}
		if c.Server.Addr != want || s.Of("server.addr") != wantSrc {
			t.Errorf("layers %05b: server.addr = %q from %q, want %q from %q", mask, c.Server.Addr, s.Of("server.addr"), want, wantSrc)
		}
		// keys no layer set stay defaults, and say so
		if c.Server.ReadTimeout != 30*time.Second || s.Of("server.read_timeout") != "default" {
			t.Errorf("layers %05b: read_timeout %v from %s", mask, c.Server.ReadTimeout, s.Of("server.read_timeout"))
		}
		if c.Log.Format != "console" || !strings.HasPrefix(s.Of("log.format"), "profile:") {
			t.Errorf("layers %05b: log.format %q from %s", mask, c.Log.Format, s.Of("log.format"))
		}
	}
}

func TestPrecedenceEachLayerAloneBeatsLower(t *testing.T) {
	for i, l := range layers {
		t.Run(l.name, func(t *testing.T) {
			// this layer and every one below it set the key
			c, s := mustLoad(t, setupLayers(t, 1<<(i+1)-1))
			if c.Server.Addr != "127.0.0.1:"+l.port || !strings.HasPrefix(s.Of("server.addr"), l.name+":") {
				t.Errorf("server.addr = %q from %s, want port %s from %s", c.Server.Addr, s.Of("server.addr"), l.port, l.name)
			}
		})
	}
}

func TestProfileFromEnvironmentAndDotEnv(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "policyd.yaml"), "repository: {path: .}\n")
	write(t, filepath.Join(dir, "policyd.a.yaml"), "log: {level: warn}\n")
	write(t, filepath.Join(dir, "policyd.b.yaml"), "log: {level: error}\n")
	write(t, filepath.Join(dir, "policyd.c.json"), `{"log": {"level": "debug"}}`)
	dot := write(t, filepath.Join(dir, ".env"), "POLICYD_PROFILE=b\n")
	for _, c := range []struct {
		name    string
		opts    LoadOptions
		level   string
		profile string
	}{
		{"none", LoadOptions{}, "info", ""},
		{"option", LoadOptions{Profile: "a"}, "warn", "policyd.a.yaml"},
		{"env", LoadOptions{Env: []string{"POLICYD_PROFILE=a"}}, "warn", "policyd.a.yaml"},
		{"dotenv", LoadOptions{DotEnv: dot}, "error", "policyd.b.yaml"},
		{"env beats dotenv", LoadOptions{DotEnv: dot, Env: []string{"POLICYD_PROFILE=a"}}, "warn", "policyd.a.yaml"},
		{"option beats env", LoadOptions{Profile: "b", Env: []string{"POLICYD_PROFILE=a"}}, "error", "policyd.b.yaml"},
		{"other extension", LoadOptions{Profile: "c"}, "debug", "policyd.c.json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.opts.File = file
			cfg, s := mustLoad(t, c.opts)
			if cfg.Log.Level != c.level {
				t.Errorf("log.level = %q, want %q", cfg.Log.Level, c.level)
			}
			if c.profile != "" && s.Of("log.level") != "profile:"+filepath.Join(dir, c.profile) {
				t.Errorf("source %q", s.Of("log.level"))
			}
		})
	}
}

func TestProfileListsReplaceWhole(t *testing.T) {
	c, s := mustLoad(t, LoadOptions{File: "testdata/profiles/policyd.yaml", Profile: "prod"})
	// the overlay's models list replaces the file's: policy-a is gone, policy-b has defaults
	want := []Model{{Name: "policy-b", Backends: []string{"cuda", "cpu"}, Fallback: true, Devices: []string{}, BackendParameters: BackendParams{}, Batching: ModelBatching{PreferredBatchSizes: []int{}}, Sequence: ModelSequence{States: []string{}, Controls: []SequenceControl{}},
		DeadlineFallback: ModelFallback{Kind: "none", Constant: []FallbackConstant{}}, Traffic: DefaultModel().Traffic}}
	if !reflect.DeepEqual(c.Models, want) {
		t.Errorf("models = %+v, want %+v", c.Models, want)
	}
	prof := "profile:testdata/profiles/policyd.prod.yaml"
	for key, src := range map[string]string{
		"models": prof, "models[0].name": prof, "models[0].backends": prof,
		"models[0].instances": "default", "log.level": prof, "repository.path": "file:testdata/profiles/policyd.yaml",
	} {
		if s.Of(key) != src {
			t.Errorf("source of %s = %q, want %q", key, s.Of(key), src)
		}
	}
	if _, ok := s.Map()["models[1].name"]; ok {
		t.Errorf("sources keep the replaced list's keys: %v", s.Keys())
	}
}

func TestEnvNames(t *testing.T) {
	for _, c := range []struct {
		name  string
		env   []string
		check func(*Config) bool
		key   string // whose source must be the first variable
	}{
		{"nested", []string{"POLICYD_SERVER__ADDR=:9"}, func(c *Config) bool { return c.Server.Addr == ":9" }, "server.addr"},
		{"snake case key", []string{"POLICYD_LIMITS__MAX_REQUEST_SIZE=1MiB"}, func(c *Config) bool { return c.Limits.MaxRequestSize == MiB }, "limits.max_request_size"},
		{"duration", []string{"POLICYD_SERVER__SHUTDOWN_TIMEOUT=1m30s"}, func(c *Config) bool { return c.Server.ShutdownTimeout == 90*time.Second }, "server.shutdown_timeout"},
		{"uint64", []string{"POLICYD_ENGINE__SEED=18446744073709551615"}, func(c *Config) bool { return c.Engine.Seed == 1<<64-1 }, "engine.seed"},
		{"list index merges", []string{"POLICYD_MODELS__1__INSTANCES=4"}, func(c *Config) bool {
			return len(c.Models) == 2 && c.Models[0].Name == "policy-a" && c.Models[0].Instances == 2 &&
				c.Models[1].Name == "policy-b" && c.Models[1].Instances == 4
		}, "models[1].instances"},
		{"comma list", []string{"POLICYD_MODELS__0__BACKENDS=tensorrt, cuda,cpu"}, func(c *Config) bool {
			return reflect.DeepEqual(c.Models[0].Backends, []string{"tensorrt", "cuda", "cpu"}) && c.Models[0].Instances == 2
		}, "models[0].backends"},
		{"append", []string{"POLICYD_MODELS__2__NAME=policy-a2", "POLICYD_MODELS__2__VERSION=1"}, func(c *Config) bool {
			return len(c.Models) == 3 && c.Models[2].Name == "policy-a2" && c.Models[2].Version == "1" &&
				reflect.DeepEqual(c.Models[2].Backends, []string{}) && c.Models[2].Fallback
		}, "models[2].name"},
		{"not config", []string{"POLICYD_BACKEND_DIR=/x", "POLICYD_PROFILE=", "POLICYD_BIN=/y", "PATH=/bin"}, func(c *Config) bool { return c.Repository.BackendDir == "" }, ""},
		{"last wins", []string{"POLICYD_LOG__LEVEL=debug", "POLICYD_LOG__LEVEL=warn"}, func(c *Config) bool { return c.Log.Level == "warn" }, "log.level"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, m := range []string{"policy-a", "policy-b", "policy-a2"} {
				if err := os.MkdirAll(filepath.Join(dir, "repo", m), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			write(t, filepath.Join(dir, "policyd.yaml"), "repository: {path: repo}\n"+
				"models:\n  - {name: policy-a, instances: 2}\n  - {name: policy-b}\n")
			cfg, s := mustLoad(t, LoadOptions{File: filepath.Join(dir, "policyd.yaml"), Env: c.env})
			if !c.check(cfg) {
				t.Errorf("%v: got %+v", c.env, cfg)
			}
			if c.key != "" {
				name, _, _ := strings.Cut(c.env[len(c.env)-1], "=")
				if c.name == "append" {
					name, _, _ = strings.Cut(c.env[0], "=")
				}
				if got := s.Of(c.key); got != "env:"+name {
					t.Errorf("source of %s = %q, want env:%s", c.key, got, name)
				}
			}
		})
	}
}

// Every key's documented environment variable sets that key.
func TestEveryEnvNameSetsItsKey(t *testing.T) {
	values := map[kind]string{kString: "x", kDuration: "7s", kSize: "7KiB", kInt: "7", kUint: "7", kFloat: "0.5", kList: "cuda,cpu", kParams: "tensorrt.precision=fp16"}
	rootNode().leaves(func(n *node) {
		val := values[n.kind]
		if len(n.enum) > 0 && n.kind == kString {
			val = n.enum[len(n.enum)-1]
		}
		name := strings.ReplaceAll(n.env, "<i>", "0")
		key := strings.ReplaceAll(n.path, "[]", "[0]")
		env := []string{name + "=" + val}
		if strings.Contains(n.path, "[]") && n.key != "name" {
			env = append(env, "POLICYD_MODELS__0__NAME=policy-a")
		}
		_, s, _ := load(t, LoadOptions{Env: env})
		if got := s.Of(key); got != "env:"+name {
			t.Errorf("%s: source of %s is %q", name, key, got)
		}
	})
}

func TestEnvProblems(t *testing.T) {
	for _, c := range []struct {
		env  string
		want string
	}{
		{"POLICYD_SERVER__ADR=x", "server.adr: unknown key (did you mean server.addr?) (env:POLICYD_SERVER__ADR)"},
		{"POLICYD_SERVER_ADDR=x", "server.addr: unknown key: POLICYD_SERVER_ADDR is not a config variable; levels are separated by two underscores: POLICYD_SERVER__ADDR"},
		{"POLICYD_SERVER=x", "server: is a section: set its keys one by one, as POLICYD_SERVER__ADDR"},
		{"POLICYD_MODELS=a,b", "models: is a list of tables: set each element's keys by index, as POLICYD_MODELS__0__NAME"},
		{"POLICYD_MODELS__X__NAME=a", `models: is a list of tables: "x" is not an index`},
		{"POLICYD_MODELS__3__NAME=a", "models[3]: index out of range: the list has 0 elements, so a new element is models[0]"},
		{"POLICYD_MODELS__0__BACKENDS__0=cpu", "models[0].backends: is a list of strings: set it whole, comma-separated, as POLICYD_MODELS__<i>__BACKENDS=cpu,cuda,tensorrt"},
		{"POLICYD_LOG__LEVEL__X=a", `log.level: is a value, not a section: log.level has no key "x"`},
		{"POLICYD_SERVER__READ_TIMEOUT=30", `server.read_timeout: must be a duration like 30s, 1m30s or 250ms, got "30" (a duration needs a unit: 30s) (env:POLICYD_SERVER__READ_TIMEOUT)`},
		{"POLICYD_LIMITS__QUEUE_LEN=0", "limits.queue_len: must be ≥ 1, got 0 (env:POLICYD_LIMITS__QUEUE_LEN)"},
		{"POLICYD_LOGG__LEVEL=info", "logg: unknown key (did you mean log?)"},
	} {
		_, _, err := load(t, LoadOptions{File: "testdata/good/minimal.yaml", Env: []string{c.env}})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error\n%v\nwant it to contain\n%s", c.env, err, c.want)
		}
	}
}

// A bad key changes nothing: no element is appended to models for it.
func TestBadEnvKeyChangesNothing(t *testing.T) {
	c, _, err := load(t, LoadOptions{File: "testdata/good/minimal.yaml", Env: []string{"POLICYD_MODELS__0__INSTANCS=1"}})
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || len(c.Models) != 0 ||
		ve.Problems[0].String() != "models[0].instancs: unknown key (did you mean models[0].instances?) (env:POLICYD_MODELS__0__INSTANCS)" {
		t.Errorf("models %+v, error:\n%v", c.Models, err)
	}
}

func TestDotEnv(t *testing.T) {
	dir := t.TempDir()
	dot := write(t, filepath.Join(dir, "x.env"), "export POLICYD_LOG__LEVEL=debug\nPOLICYD_MODELS__0__NAME='policy-a'\nNOT_OURS=1\n")
	c, s := mustLoad(t, LoadOptions{File: "testdata/good/minimal.yaml", DotEnv: dot})
	if c.Log.Level != "debug" || len(c.Models) != 1 || c.Models[0].Name != "policy-a" {
		t.Errorf("got %+v", c)
	}
	if s.Of("log.level") != "dotenv:"+dot {
		t.Errorf("source %q", s.Of("log.level"))
	}
	// a missing default .env is fine; a missing named one is not
	t.Chdir(dir)
	if _, _, err := Load(LoadOptions{Env: []string{"POLICYD_REPOSITORY__PATH=."}}); err != nil {
		t.Errorf("no .env: %v", err)
	}
	write(t, ".env", "POLICYD_LOG__LEVEL=warn\nPOLICYD_REPOSITORY__PATH=.\n")
	if c, s, err := Load(LoadOptions{Env: []string{}}); err != nil || c.Log.Level != "warn" || s.Of("log.level") != "dotenv:.env" {
		t.Errorf("default .env: %v %+v %s", err, c.Log, s.Of("log.level"))
	}
	if _, _, err := Load(LoadOptions{Env: []string{}, DotEnv: "missing.env"}); err == nil || !strings.Contains(err.Error(), "missing.env") {
		t.Errorf("missing named .env: %v", err)
	}
}

func TestFlags(t *testing.T) {
	fs := flag.NewFlagSet("policyd", flag.ContinueOnError)
	set := BindFlags(fs)
	if err := fs.Parse([]string{"--server.addr", ":7", "--limits.max-request-size=1KiB", "--log.level", "debug"}); err != nil {
		t.Fatal(err)
	}
	flags := set()
	flags["models[0].name"] = "policy-a" // a caller may also pass list keys
	c, s := mustLoad(t, LoadOptions{File: "testdata/good/minimal.yaml", Flags: flags, FlagNames: map[string]string{"log.level": "--log-level"}})
	if c.Server.Addr != ":7" || c.Limits.MaxRequestSize != KiB || c.Log.Level != "debug" || c.Models[0].Name != "policy-a" {
		t.Errorf("got %+v", c)
	}
	for key, want := range map[string]string{
		"server.addr": "flag:--server.addr", "limits.max_request_size": "flag:--limits.max-request-size",
		"log.level": "flag:--log-level", "log.format": "default", "models[0].name": "flag:--models[0].name",
	} {
		if s.Of(key) != want {
			t.Errorf("source of %s = %q, want %q", key, s.Of(key), want)
		}
	}
	if fs.Lookup("log.format") == nil || !strings.Contains(fs.Lookup("log.format").Usage, "json, console") {
		t.Errorf("flag usage: %+v", fs.Lookup("log.format"))
	}
}

func TestRelativePathsFollowTheFile(t *testing.T) {
	c, _ := mustLoad(t, LoadOptions{File: "testdata/good/full.yaml"})
	if c.Repository.Path != filepath.Join("testdata", "repo") || c.Admin.TokenFile != filepath.Join("testdata", "token") {
		t.Errorf("paths %q %q", c.Repository.Path, c.Admin.TokenFile)
	}
	// from the environment: relative to the current folder
	c, _ = mustLoad(t, LoadOptions{File: "testdata/good/full.yaml", Env: []string{"POLICYD_REPOSITORY__PATH=./testdata/repo"}})
	if c.Repository.Path != "./testdata/repo" {
		t.Errorf("env path %q", c.Repository.Path)
	}
}

func TestGoodFiles(t *testing.T) {
	for _, c := range []struct {
		file  string
		check func(*Config) bool
	}{
		{"minimal.yaml", func(c *Config) bool {
			d := Defaults()
			d.Repository.Path = filepath.Join("testdata", "repo")
			return reflect.DeepEqual(c, d)
		}},
		{"full.yaml", func(c *Config) bool {
			return c.Server.WriteTimeout == 90*time.Second && c.Limits.MaxRequestSize == 512*KiB && c.Engine.Seed == 1<<64-1 &&
				c.Models[1].Version == "2" && reflect.DeepEqual(c.Models[1].Backends, []string{}) && c.Models[0].Instances == 1024 &&
				!c.Models[0].Fallback && reflect.DeepEqual(c.Models[0].Devices, []string{"0", "1"}) && c.Models[1].Fallback &&
				reflect.DeepEqual(c.Engine.Backends, []string{"cuda", "cpu"}) && !c.Engine.BuildEngines
		}},
		{"full.json", func(c *Config) bool {
			return c.Limits.MaxRequestSize == MiB && c.Models[1].Version == "2" && c.Engine.Seed == 7 && c.Server.IdleTimeout == 5*time.Minute
		}},
		{"empty-values.yaml", func(c *Config) bool { return c.Server.Addr == "127.0.0.1:8000" && len(c.Models) == 0 }},
		{"sizes.yml", func(c *Config) bool { return c.Limits.MaxRequestSize == GB }},
	} {
		t.Run(c.file, func(t *testing.T) {
			cfg, _ := mustLoad(t, LoadOptions{File: filepath.Join("testdata", "good", c.file)})
			if !c.check(cfg) {
				t.Errorf("got %+v", cfg)
			}
		})
	}
}

func TestBadFiles(t *testing.T) {
	for _, c := range []struct {
		file string
		want []string // substrings of the error, one per expected problem
	}{
		{"unknown-key.yaml", []string{"server.adr: unknown key (did you mean server.addr?) (file:testdata/bad/unknown-key.yaml)"}},
		{"unknown-section.yaml", []string{"sever: unknown key (did you mean server?)", "models[0].instancs: unknown key (did you mean models[0].instances?)"}},
		{"wrong-section.yaml", []string{"server.level: unknown key (did you mean log.level?)"}},
		{"types.yaml", []string{
			`server.read_timeout: must be a duration like 30s, 1m30s or 250ms, got "thirty"`,
			`server.write_timeout: must be a duration like 30s, 1m30s or 250ms, got 30 (a duration needs a unit: 30s)`,
			`limits.max_request_size: must be a size like 64MiB, 512KiB, 1GB or a number of bytes, got "lots"`,
			`limits.queue_len: must be an integer, got "many"`,
			`engine.seed: must be an integer from 0 to 18446744073709551615, got -1`,
			`engine.threads: must be an integer, got 1.5`,
			`models[0].version: must be a string, got the number 1.2: quote it, "1.2"`,
			`models[0].backends: must be a list like [cpu, cuda, tensorrt], got "cpu"`,
			`models[0].instances: must be an integer, got "x"`,
		}},
		{"shapes.yaml", []string{"server: must be a section of keys (addr, grpc_addr, read_timeout", "models: must be a list of tables, got a section"}},
		{"enums.yaml", []string{
			`log.level: must be one of debug, info, warn, error, got "verbose"`,
			`log.format: must be one of json, console, got "xml"`,
			`models[0].backends: must be one of cpu, cuda, tensorrt, got "gpu"`,
		}},
		{"ranges.yaml", []string{
			"server.read_timeout: must be ≥ 1ms, got 0s",
			"limits.max_request_size: must be ≥ 1, got 0B",
			"limits.queue_len: must be ≥ 1, got 0",
			"engine.threads: must be ≥ 1, got 0",
			"engine.cpu_threads: must be ≥ 0, got -1",
			"models[0].instances: must be ≥ 0, got -1",
			"models[1].instances: must be ≤ 1024, got 2000",
			"models[1].threads: must be ≥ 0, got -2",
			"engine.backends: must list at least 1 of cpu, cuda, tensorrt",
			`models[1].devices[1]: must match ^(all|0|[1-9][0-9]{0,3})$, got "gpu1"`,
			`models[1].devices: "all" selects every GPU: list it alone or list GPU indexes, got ["0" "gpu1" "all"]`,
		}},
		{"duplicates.yaml", []string{
			`models[1].backends: lists "cpu" twice`,
			`models[2].name: duplicate model "policy-a": also models[0]`,
			`models[3].version: version set twice for model "policy-b": "1.0.0" here, "2" at models[1]`,
		}},
		{"missing-files.yaml", []string{
			"repository.path: folder testdata/no-such-repo: no such file or directory",
			"repository.backend_dir: folder testdata/no-such-plugins: no such file or directory",
			"admin.token_file: file testdata/no-such-token: no such file or directory",
		}},
		{"empty-token.yaml", []string{"admin.token_file: the token file testdata/empty-token is empty"}},
		{"no-repository.yaml", []string{"repository.path: is required"}},
		{"models.yaml", []string{
			`server.addr: must be HOST:PORT like 127.0.0.1:8000 or :8000, got "localhost"`,
			`models[0].name: no model "no-such-model" in the repository testdata/repo`,
			`models[1].name: must be a folder name of letters, digits, '.', '_' and '-', got "../escape"`,
			`models[2].name: is required`,
			`models[3].version: must be empty (every version), an exact version like 1.2.3 or v1.2.3, or a constraint like ^1.2, ~1.2.3 or ">=1.0 <2", got "latest"`,
		}},
		{"many.yaml", []string{
			"server.adr: unknown key (did you mean server.addr?)",
			`server.read_timeout: must be a duration like 30s, 1m30s or 250ms, got "thirty"`,
			"limits.queue_len: must be ≥ 1, got 0",
			`log.level: must be one of debug, info, warn, error, got "verbose"`,
			"repository.path: folder testdata/no-such-repo",
			"models[0].instances: must be ≥ 0, got -1",
			`models[1].name: duplicate model "policy-a"`,
		}},
		{"syntax.yaml", []string{"config file testdata/bad/syntax.yaml: yaml: line 1"}},
		{"duplicate-yaml-key.yaml", []string{`mapping key "level" already defined at line 4`}},
		{"syntax.json", []string{"config file testdata/bad/syntax.json: invalid character '}'"}},
		{"format.toml", []string{"testdata/bad/format.toml: unknown format: the name must end in .yaml, .yml or .json"}},
		{"no-such-file.yaml", []string{"config file testdata/bad/no-such-file.yaml: no such file or directory"}},
	} {
		t.Run(c.file, func(t *testing.T) {
			_, _, err := load(t, LoadOptions{File: filepath.Join("testdata", "bad", c.file)})
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %v is not a *ValidationError", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			// every problem on its own line, and no more problems than expected
			if got := len(strings.Split(err.Error(), "\n")); got != len(ve.Problems) || len(ve.Problems) < len(c.want) {
				t.Errorf("%d lines, %d problems, want %d:\n%v", got, len(ve.Problems), len(c.want), err)
			}
			if len(ve.Problems) != len(c.want) && c.file != "syntax.yaml" && c.file != "duplicate-yaml-key.yaml" {
				t.Errorf("%d problems, want %d:\n%v", len(ve.Problems), len(c.want), err)
			}
		})
	}
}

func TestProblemsFromEveryLayerTogether(t *testing.T) {
	dir := t.TempDir()
	file := write(t, filepath.Join(dir, "policyd.yaml"), "server: {adr: x}\nrepository: {path: .}\n")
	write(t, filepath.Join(dir, "policyd.p.yaml"), "log: {levl: x}\n")
	dot := write(t, filepath.Join(dir, ".env"), "POLICYD_ENGINE__THREADZ=1\n")
	_, _, err := load(t, LoadOptions{File: file, Profile: "p", DotEnv: dot,
		Env:   []string{"POLICYD_LIMITS__QUEUE_LEN=-1"},
		Flags: map[string]any{"engine.seed": "x"}})
	for _, w := range []string{
		"server.adr: unknown key (did you mean server.addr?) (file:",
		"log.levl: unknown key (did you mean log.level?) (profile:",
		"engine.threadz: unknown key (did you mean engine.threads?) (dotenv:",
		"limits.queue_len: must be ≥ 1, got -1 (env:POLICYD_LIMITS__QUEUE_LEN)",
		`engine.seed: must be an integer from 0 to 18446744073709551615, got "x" (flag:--engine.seed)`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error lacks %q:\n%v", w, err)
		}
	}
}

func TestProfileProblems(t *testing.T) {
	for _, c := range []struct {
		opts LoadOptions
		want string
	}{
		{LoadOptions{File: "testdata/profiles/policyd.yaml", Profile: "nope"}, `profile "nope": no overlay file testdata/profiles/policyd.nope.yaml nor testdata/profiles/policyd.nope.yml nor testdata/profiles/policyd.nope.json`},
		{LoadOptions{Profile: "prod"}, `profile "prod": a profile is an overlay file beside the config file, and no config file was given`},
		{LoadOptions{File: "testdata/profiles/policyd.yaml", Profile: "../x"}, `profile "../x": a profile name is letters, digits`},
		{LoadOptions{File: "testdata/profiles/policyd.yaml", Profile: "typo"}, `log.levl: unknown key (did you mean log.level?) (profile:testdata/profiles/policyd.typo.yaml)`},
	} {
		_, _, err := load(t, c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error\n%v\nwant %q", c.opts, err, c.want)
		}
	}
}

func TestValidateDefaults(t *testing.T) {
	err := Defaults().Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 1 || ve.Problems[0].Key != "repository.path" {
		t.Fatalf("Defaults().Validate() = %v; want only repository.path required", err)
	}
	d := Defaults()
	d.Repository.Path = "testdata/repo"
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestHelpers(t *testing.T) {
	c := Defaults()
	c.Engine.Threads, c.Engine.CPUThreads = 2, 8
	for _, x := range []struct {
		m              Model
		threads, insts int
	}{
		{Model{}, 2, 4},
		{Model{Threads: 3}, 3, 2},
		{Model{Threads: 16}, 16, 1},
		{Model{Instances: 5}, 2, 5},
	} {
		if c.Threads(x.m) != x.threads || c.Instances(x.m) != x.insts {
			t.Errorf("%+v: threads %d instances %d, want %d %d", x.m, c.Threads(x.m), c.Instances(x.m), x.threads, x.insts)
		}
	}
	tok, err := Admin{TokenFile: "testdata/token"}.Token()
	if err != nil || tok != "s3cr3t-T0KEN-value-4f9a" {
		t.Errorf("Token() = %q, %v", tok, err)
	}
	if tok, err := (Admin{}).Token(); tok != "" || err != nil {
		t.Errorf("no token file: %q %v", tok, err)
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want Size
		err  bool
	}{
		{"64MiB", 64 * MiB, false}, {"512KiB", 512 * KiB, false}, {"1GB", GB, false}, {"1048576", MiB, false},
		{"1.5GiB", 3 * GiB / 2, false}, {"10 kB", 10000, false}, {"10KB", 10000, false}, {"0", 0, false}, {"7B", 7, false},
		{"", 0, true}, {"lots", 0, true}, {"-1", 0, true}, {"1.5B", 0, true}, {"1e6", 0, true}, {"9999999TiB", 0, true}, {"5 mb", 0, true},
	} {
		got, err := ParseSize(c.in)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("ParseSize(%q) = %d, %v", c.in, got, err)
		}
		if err == nil {
			if back, _ := ParseSize(got.String()); back != got {
				t.Errorf("%q: String %q does not parse back", c.in, got.String())
			}
		}
	}
	for s, want := range map[Size]string{64 * MiB: "64MiB", GB: "1GB", 1000: "1kB", 1001: "1001B", 0: "0B", 3 * GiB / 2: "1536MiB"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", int64(s), s.String(), want)
		}
	}
}

func TestBatchingKeys(t *testing.T) {
	dir := t.TempDir()
	repo, _ := filepath.Abs("testdata/repo")
	file := write(t, filepath.Join(dir, "policyd.yaml"), `
repository: {path: `+repo+`}
batching: {enabled: false, preferred_batch_sizes: [4, 8]}
models:
  - name: policy-a
    batching: {max_batch_size: 16, max_queue_delay: 250us, preferred_batch_sizes: [2]}
  - name: policy-b
`)
	c, _ := mustLoad(t, LoadOptions{File: file})
	if c.Batching.Enabled || c.Batching.MaxBatchSize != 32 || !reflect.DeepEqual(c.Batching.PreferredBatchSizes, []int{4, 8}) {
		t.Errorf("batching = %+v", c.Batching)
	}
	want := ModelBatching{MaxBatchSize: 16, MaxQueueDelay: 250 * time.Microsecond, PreferredBatchSizes: []int{2}}
	if !reflect.DeepEqual(c.Models[0].Batching, want) || c.Models[1].Batching.MaxBatchSize != 0 {
		t.Errorf("models[].batching = %+v, %+v", c.Models[0].Batching, c.Models[1].Batching)
	}
	c, _ = mustLoad(t, LoadOptions{File: file, Env: []string{"POLICYD_BATCHING__ENABLED=true", "POLICYD_BATCHING__PREFERRED_BATCH_SIZES=1,3"}})
	if !c.Batching.Enabled || !reflect.DeepEqual(c.Batching.PreferredBatchSizes, []int{1, 3}) {
		t.Errorf("from env: batching = %+v", c.Batching)
	}
	write(t, file, "repository: {path: "+repo+"}\nbatching: {enabled: maybe, preferred_batch_sizes: [0, x]}\n")
	if _, _, err := load(t, LoadOptions{File: file}); err == nil ||
		!strings.Contains(err.Error(), "batching.enabled") || !strings.Contains(err.Error(), "preferred_batch_sizes[1]") {
		t.Errorf("bad batching keys: %v", err)
	}
}

func TestPriorityLevelKeys(t *testing.T) {
	dir := t.TempDir()
	repo, _ := filepath.Abs("testdata/repo")
	file := write(t, filepath.Join(dir, "policyd.yaml"), `
repository: {path: `+repo+`}
batching: {priority_levels: 3, default_priority_level: 2}
models:
  - name: policy-a
    batching: {priority_levels: 2}
  - name: policy-b
    batching: {priority_levels: 4, default_priority_level: 4}
`)
	c, _ := mustLoad(t, LoadOptions{File: file})
	if c.Batching.PriorityLevels != 3 || c.Batching.DefaultPriorityLevel != 2 || c.Models[0].Batching.PriorityLevels != 2 ||
		c.Models[1].Batching.DefaultPriorityLevel != 4 {
		t.Errorf("priority keys: %+v %+v", c.Batching, c.Models)
	}
	write(t, file, `
repository: {path: `+repo+`}
batching: {priority_levels: 2, default_priority_level: 3}
models:
  - name: policy-a
    batching: {priority_levels: 1, default_priority_level: 2}
  - name: policy-b
    batching: {priority_levels: 17}
`)
	_, _, err := load(t, LoadOptions{File: file})
	for _, want := range []string{"batching.default_priority_level: must be at most batching.priority_levels (2), got 3",
		"models[0].batching.default_priority_level: must be at most the model's priority levels (1), got 2",
		"models[1].batching.priority_levels"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}

func TestTracingAndLogKeys(t *testing.T) {
	dir := t.TempDir()
	repo, _ := filepath.Abs("testdata/repo")
	file := write(t, filepath.Join(dir, "policyd.yaml"), `
repository: {path: `+repo+`}
log: {access: false}
tracing: {enabled: true, endpoint: "http://collector:4318", sampling_ratio: 0.25}
`)
	c, _ := mustLoad(t, LoadOptions{File: file})
	want := Tracing{Enabled: true, Endpoint: "http://collector:4318", SamplingRatio: 0.25, ServiceName: "policyd"}
	if c.Log.Access || c.Tracing != want {
		t.Errorf("log.access = %v, tracing = %+v, want false, %+v", c.Log.Access, c.Tracing, want)
	}
	c, _ = mustLoad(t, LoadOptions{File: file, Env: []string{"POLICYD_TRACING__SAMPLING_RATIO=0.125", "POLICYD_LOG__ACCESS=true"}})
	if c.Tracing.SamplingRatio != 0.125 || !c.Log.Access {
		t.Errorf("from env: sampling_ratio = %v, log.access = %v", c.Tracing.SamplingRatio, c.Log.Access)
	}
	for _, bad := range []struct{ yaml, want string }{
		{`tracing: {sampling_ratio: 1.5}`, "tracing.sampling_ratio: must be ≤ 1, got 1.5"},
		{`tracing: {sampling_ratio: -0.1}`, "tracing.sampling_ratio: must be ≥ 0, got -0.1"},
		{`tracing: {sampling_ratio: half}`, `tracing.sampling_ratio: must be a number like 0.25, got "half"`},
		{`tracing: {enabled: true}`, "tracing.endpoint: is required when tracing.enabled is true"},
		{`tracing: {endpoint: "collector:4318"}`, "tracing.endpoint: must match ^https?://"},
		{`log: {access: sometimes}`, "log.access: must be true or false"},
	} {
		write(t, file, "repository: {path: "+repo+"}\n"+bad.yaml+"\n")
		if _, _, err := load(t, LoadOptions{File: file}); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error\n%v\nwant it to contain\n%s", bad.yaml, err, bad.want)
		}
	}
}
