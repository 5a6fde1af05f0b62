package deploy

import (
	"flag"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/policyd/policyd/config"
	"go.yaml.in/yaml/v3"
)

const (
	repoRoot          = ".."
	observabilityDoc  = "../docs/observability.md"
	exampleRepository = "../examples/repository"
)

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// policydArgs parses a policyd command line the way cmd/policyd does for the flags a
// deployment may pass: --config, --profile and the long form of every config key
// (--server.addr, --repository.path, ...). It fails on any other flag or argument.
func policydArgs(t *testing.T, args []string) config.LoadOptions {
	t.Helper()
	fs := flag.NewFlagSet("policyd", flag.ContinueOnError)
	fs.SetOutput(&strings.Builder{})
	var opts config.LoadOptions
	fs.StringVar(&opts.File, "config", "", "")
	fs.StringVar(&opts.Profile, "profile", "", "")
	keyed := config.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("policyd %s: %v", strings.Join(args, " "), err)
	}
	if fs.NArg() > 0 {
		t.Fatalf("policyd %s: unexpected arguments %q", strings.Join(args, " "), fs.Args())
	}
	opts.Flags = keyed()
	return opts
}

// checkPolicydConfig validates what a deployment gives policyd: its command-line arguments,
// environment and config files (files maps a path inside the container to the file's
// content). repository.path (from the file or a flag) must be modelsPath, the folder the
// deployment mounts the repository at; it is validated against the bundled example repository
// (examples/repository, which the images ship as /models) in its place, so that the models a
// config names must exist there.
//
// Every shipped deployment listens beyond loopback, so each must set admin.token_file (the
// operator routes then need its token) and none may set admin.allow_unauthenticated. The token
// file must be one of files: the caller puts a test token at the path adminTokenFile gives,
// once it has checked that the deployment mounts a secret there. It is validated in place of
// that path (validation requires the file to exist).
//
// It returns the validated config, with Admin.TokenFile the path inside the container.
func checkPolicydConfig(t *testing.T, args []string, env map[string]string, files map[string]string, modelsPath string) *config.Config {
	t.Helper()
	token := adminTokenFile(t, args, env, files)
	if token == "" {
		t.Error("no admin.token_file: the operator routes (/v2/admin/*, repository load/unload, health details) " +
			"would answer 403 to everyone; give policyd a token from a secret (docs/deployment.md#the-admin-token)")
	} else if _, ok := files[token]; !ok {
		t.Errorf("admin.token_file %s: the deployment puts no file there (it provides %v)", token, keys(files))
		token = ""
	}
	opts := policydArgs(t, args)
	dir := t.TempDir()
	for path, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	repoPath, _ := opts.Flags["repository.path"].(string)
	if opts.File != "" {
		content, ok := files[opts.File]
		if !ok {
			t.Fatalf("--config %s: the deployment provides no such file (it has %v)", opts.File, keys(files))
		}
		var raw struct {
			Repository struct {
				Path string `yaml:"path"`
			} `yaml:"repository"`
		}
		if err := yaml.Unmarshal([]byte(content), &raw); err != nil {
			t.Fatalf("%s: %v", opts.File, err)
		}
		if repoPath == "" {
			repoPath = raw.Repository.Path
		}
		opts.File = filepath.Join(dir, filepath.FromSlash(opts.File))
	}
	if repoPath != modelsPath {
		t.Errorf("repository.path is %q; the repository is mounted at %q", repoPath, modelsPath)
	}
	models, err := filepath.Abs(exampleRepository)
	if err != nil {
		t.Fatal(err)
	}
	opts.Flags["repository.path"] = models
	if token != "" {
		opts.Flags["admin.token_file"] = filepath.Join(dir, filepath.FromSlash(token))
	}
	opts.Env = []string{}
	for k, v := range env {
		if k == "POLICYD_PROFILE" && opts.Profile == "" {
			opts.Profile = v
		}
		opts.Env = append(opts.Env, k+"="+v)
	}
	opts.DotEnv = config.NoDotEnv
	cfg, _, err := config.Load(opts)
	if err != nil {
		t.Fatalf("policyd config (args %q, env %v): %v", args, env, err)
	}
	if cfg.Admin.AllowUnauthenticated {
		t.Error("admin.allow_unauthenticated is set: a shipped deployment must not open the operator routes to whoever reaches the port")
	}
	if token != "" {
		if _, err := cfg.Admin.Token(); err != nil {
			t.Errorf("admin.token_file %s: %v", token, err)
		}
	}
	cfg.Admin.TokenFile = token
	return cfg
}

// adminTokenFile is the admin.token_file that a deployment's arguments, environment and config
// files (as checkPolicydConfig takes them) give policyd, as a path inside the container: from
// the first layer that sets it, in policyd's order — flag, environment, profile overlay, config
// file; "" when none does. A relative path in a file is relative to the file's folder; from a
// flag or the environment it would be relative to policyd's working folder, which no deployment
// should rely on, so it must be absolute.
func adminTokenFile(t *testing.T, args []string, env, files map[string]string) string {
	t.Helper()
	opts := policydArgs(t, args)
	abs := func(layer, p string) string {
		if p != "" && !path.IsAbs(p) {
			t.Errorf("%s: admin.token_file %q: give an absolute path", layer, p)
		}
		return p
	}
	if v, ok := opts.Flags["admin.token_file"].(string); ok {
		return abs("--admin.token-file", v)
	}
	if v, ok := env["POLICYD_ADMIN__TOKEN_FILE"]; ok {
		return abs("POLICYD_ADMIN__TOKEN_FILE", v)
	}
	if opts.File == "" {
		return ""
	}
	var layers []string
	profile := opts.Profile
	if profile == "" {
		profile = env["POLICYD_PROFILE"]
	}
	if profile != "" {
		ext := path.Ext(opts.File)
		for _, e := range []string{ext, ".yaml", ".yml", ".json"} { // policyd's overlay lookup
			if f := strings.TrimSuffix(opts.File, ext) + "." + profile + e; files[f] != "" {
				layers = append(layers, f)
				break
			}
		}
	}
	layers = append(layers, opts.File)
	for _, f := range layers {
		var raw struct {
			Admin struct {
				TokenFile *string `yaml:"token_file"`
			} `yaml:"admin"`
		}
		if err := yaml.Unmarshal([]byte(files[f]), &raw); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if p := raw.Admin.TokenFile; p != nil {
			if *p == "" || path.IsAbs(*p) {
				return *p
			}
			return path.Join(path.Dir(f), *p)
		}
	}
	return ""
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// metricLabels returns the labels docs/observability.md documents for a metric, and its
// type; ok is false when the metric is not in the table.
func metricLabels(t *testing.T, name string) (kind, labels string, ok bool) {
	t.Helper()
	row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(name) + "` \\| (\\w+) \\| ([^|]*) \\|")
	m := row.FindSubmatch(readFile(t, observabilityDoc))
	if m == nil {
		return "", "", false
	}
	return string(m[1]), strings.TrimSpace(string(m[2])), true
}

// checkGRPCListen: a deployment whose clients are on other machines (a container's port, a
// pod's) serves KServe v2 gRPC there: server.grpc_addr is on, on every interface of the
// container (a loopback or other one address would be unreachable through the port mapping or
// the pod's address), at the port the deployment publishes.
func checkGRPCListen(t *testing.T, what string, cfg *config.Config, port int32) {
	t.Helper()
	a := cfg.Server.GRPCAddr
	if !config.GRPCEnabled(a) {
		t.Errorf("%s: server.grpc_addr is %q: gRPC is off; serve it on 0.0.0.0:%d (docs/deployment.md#grpc)", what, a, port)
		return
	}
	host, p, err := net.SplitHostPort(a)
	if err != nil || p != strconv.Itoa(int(port)) {
		t.Errorf("%s: policyd serves gRPC on %s, the deployment publishes port %d (%v)", what, a, port, err)
	}
	if host != "" && host != "0.0.0.0" && host != "::" {
		t.Errorf("%s: policyd serves gRPC on %s, inside the container only: listen on every interface (0.0.0.0:%d)", what, a, port)
	}
}
