package deploy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"go.yaml.in/yaml/v3"
)

const composeFile = "../docker/compose.yaml"

// loadCompose loads docker/compose.yaml with the Compose specification's own loader (the one
// docker compose uses): schema validation, interpolation, YAML merge keys, profiles, and the
// consistency checks (services, networks and volumes referred to exist), with every profile on.
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	abs, err := filepath.Abs(composeFile)
	if err != nil {
		t.Fatal(err)
	}
	project, err := loader.LoadWithContext(context.Background(), types.ConfigDetails{
		WorkingDir:  filepath.Dir(abs),
		ConfigFiles: []types.ConfigFile{{Filename: abs}},
		Environment: types.Mapping{},
	}, func(o *loader.Options) {
		o.SetProjectName("policyd", true)
		o.Profiles = []string{"*"}
	})
	if err != nil {
		t.Fatalf("%s: %v", composeFile, err)
	}
	return project
}

func service(t *testing.T, p *types.Project, name string) types.ServiceConfig {
	t.Helper()
	s, ok := p.Services[name]
	if !ok {
		t.Fatalf("%s: no service %q (have %v)", composeFile, name, keys(p.Services))
	}
	return s
}

func TestCompose(t *testing.T) {
	p := loadCompose(t)
	for name, want := range map[string]struct {
		profile    string
		dockerfile string
		gpu        bool
	}{
		"policyd":     {"cpu", cpuDockerfile, false},
		"policyd-gpu": {"gpu", gpuDockerfile, true},
	} {
		t.Run(name, func(t *testing.T) {
			s := service(t, p, name)
			if !slices.Equal(s.Profiles, []string{want.profile}) {
				t.Errorf("profiles %v, want [%s]", s.Profiles, want.profile)
			}
			if s.Build == nil {
				t.Fatal("no build section")
			}
			if ctx, _ := filepath.Abs(repoRoot); s.Build.Context != ctx {
				t.Errorf("build context %s, want the repository root %s", s.Build.Context, ctx)
			}
			if df, _ := filepath.Abs(want.dockerfile); filepath.Join(s.Build.Context, s.Build.Dockerfile) != df {
				t.Errorf("dockerfile %s, want %s", s.Build.Dockerfile, want.dockerfile)
			}
			if s.User != fmt.Sprintf("%d:%d", imageUID, imageUID) || !s.ReadOnly || !slices.Contains(s.CapDrop, "ALL") {
				t.Errorf("user %q read_only %v cap_drop %v: want the image's user %d, a read-only root and no capabilities", s.User, s.ReadOnly, s.CapDrop, imageUID)
			}
			for _, port := range []uint32{8000, 8001} { // HTTP, gRPC
				if !slices.ContainsFunc(s.Ports, func(p types.ServicePortConfig) bool { return p.Target == port && p.Published != "" }) {
					t.Errorf("ports %v do not publish %d", s.Ports, port)
				}
			}
			files := map[string]string{}
			mounts := map[string]types.ServiceVolumeConfig{}
			for _, v := range s.Volumes {
				mounts[v.Target] = v
				if v.Type != types.VolumeTypeBind {
					continue
				}
				if _, err := os.Stat(v.Source); err != nil {
					t.Errorf("bind mount %s: %v", v.Target, err)
					continue
				}
				if strings.HasPrefix(v.Target, "/etc/policyd/") {
					files[v.Target] = string(readFile(t, v.Source))
				}
			}
			if m, ok := mounts["/models"]; !ok || !m.ReadOnly {
				t.Errorf("the model repository is not mounted read-only at /models: %+v", m)
			}
			env := map[string]string{}
			for k, v := range s.Environment {
				if v != nil {
					env[k] = *v
				}
			}
			// the admin token: a compose secret from a file git ignores, nothing else
			secrets := map[string]string{} // target in the container → file on the host
			for _, sec := range s.Secrets {
				target := sec.Target
				if !strings.HasPrefix(target, "/") {
					target = dockerSecrets + target
				}
				secrets[target] = composeSecretFile(t, p, sec.Source)
			}
			cmd := imageCmd(t, parseDockerfile(t, want.dockerfile))
			tok := adminTokenFile(t, cmd[1:], env, files)
			if src, ok := secrets[tok]; ok {
				files[tok] = "test-token\n"
				checkGitIgnored(t, src)
			} else if tok != "" {
				t.Errorf("admin.token_file %s is not a compose secret (secrets at %v)", tok, keys(secrets))
			}
			cfg := checkPolicydConfig(t, cmd[1:], env, files, "/models")
			if _, port, _ := net.SplitHostPort(cfg.Server.Addr); port != "8000" {
				t.Errorf("policyd listens on %s, the service publishes 8000", cfg.Server.Addr)
			}
			checkGRPCListen(t, name, cfg, 8001)
			gpus := 0
			if s.Deploy != nil && s.Deploy.Resources.Reservations != nil {
				for _, d := range s.Deploy.Resources.Reservations.Devices {
					if d.Driver == "nvidia" && d.Count == -1 && slices.Contains(d.Capabilities, "gpu") {
						gpus++
					} else {
						t.Errorf("device reservation %+v: want driver nvidia, count all, capabilities [gpu]", d)
					}
				}
			}
			if want.gpu && gpus != 1 {
				t.Errorf("no reservation of every NVIDIA GPU (deploy.resources.reservations.devices)")
			}
			if !want.gpu && gpus != 0 {
				t.Errorf("the CPU service reserves GPUs")
			}
			if want.gpu && env["POLICYD_PROFILE"] != "gpu" {
				t.Errorf("POLICYD_PROFILE=%q, want gpu", env["POLICYD_PROFILE"])
			}
		})
	}
}

// composeSecretFile is the host file of a top-level file secret (not an environment variable's
// content, not an external one: the token is created beside the compose file).
func composeSecretFile(t *testing.T, p *types.Project, name string) string {
	t.Helper()
	sec, ok := p.Secrets[name]
	if !ok {
		t.Fatalf("%s: no top-level secret %q (have %v)", composeFile, name, keys(p.Secrets))
	}
	if sec.File == "" || sec.Environment != "" || bool(sec.External) {
		t.Errorf("%s: secret %s: want a file (file: ./...), got %+v", composeFile, name, sec)
	}
	return sec.File
}

// checkGitIgnored: git would not commit the file (a token written there stays out of the
// repository). Skipped outside a git work tree.
func checkGitIgnored(t *testing.T, file string) {
	t.Helper()
	git, err := exec.LookPath("git")
	if err != nil {
		t.Log("git not installed: not checking that the secret file is ignored")
		return
	}
	rel, err := filepath.Rel(mustAbs(t, repoRoot), file)
	if err != nil || strings.HasPrefix(rel, "..") {
		return // outside the repository
	}
	cmd := exec.Command(git, "check-ignore", "-q", "--no-index", rel)
	cmd.Dir = repoRoot
	err = cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil: // ignored
	case errors.As(err, &exit) && exit.ExitCode() == 1:
		t.Errorf("%s: git does not ignore it; add it to .gitignore so that no token is committed", rel)
	default:
		t.Logf("git check-ignore %s: %v (not a git work tree?)", rel, err)
	}
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestComposeMonitoring: Prometheus scrapes policyd (under a name both variants answer to) with
// the repository's rules loaded, and Grafana has the dashboard and a Prometheus data source.
func TestComposeMonitoring(t *testing.T) {
	p := loadCompose(t)
	for _, name := range []string{"prometheus", "grafana"} {
		if err := checkPinned(service(t, p, name).Image); err != nil {
			t.Errorf("service %s: %v", name, err)
		}
	}

	prom := service(t, p, "prometheus")
	mounts := map[string]string{}
	for _, v := range prom.Volumes {
		mounts[v.Target] = v.Source
	}
	var cfgPath string
	for _, arg := range prom.Command {
		if v, ok := strings.CutPrefix(arg, "--config.file="); ok {
			cfgPath = v
		}
	}
	src, ok := mounts[cfgPath]
	if !ok {
		t.Fatalf("prometheus: --config.file=%q is not a mounted file (mounts %v)", cfgPath, keys(mounts))
	}
	var promCfg struct {
		Global        map[string]string `yaml:"global"`
		RuleFiles     []string          `yaml:"rule_files"`
		ScrapeConfigs []struct {
			JobName       string `yaml:"job_name"`
			MetricsPath   string `yaml:"metrics_path"`
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	strictYAML(t, src, &promCfg)
	rules, _ := filepath.Abs("../monitoring/prometheus/policyd.rules.yml")
	for _, f := range promCfg.RuleFiles {
		if mounts[f] != rules {
			t.Errorf("prometheus: rule file %s is mounted from %q, want %s", f, mounts[f], rules)
		}
	}
	if len(promCfg.RuleFiles) == 0 {
		t.Error("prometheus: no rule_files: policyd's rules are not loaded")
	}
	names := map[string]bool{}
	for name, s := range p.Services {
		names[name] = true
		for _, n := range s.Networks {
			if n != nil {
				for _, a := range n.Aliases {
					names[a] = true
				}
			}
		}
	}
	scraped := false
	for _, sc := range promCfg.ScrapeConfigs {
		if !strings.Contains(sc.JobName, "policyd") {
			continue
		}
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			t.Errorf("job %s scrapes %s, policyd serves /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, port, err := net.SplitHostPort(target)
				if err != nil || !names[host] || port != "8000" {
					t.Errorf("job %s: target %s is not a compose service or alias on port 8000 (%v)", sc.JobName, target, err)
				}
				scraped = true
			}
		}
	}
	if !scraped {
		t.Error("prometheus: no job whose name contains \"policyd\" scrapes policyd (PolicydDown matches such jobs)")
	}
	for _, s := range []string{"policyd", "policyd-gpu"} {
		svc := service(t, p, s)
		if !names[s] && !slices.ContainsFunc(keys(svc.Networks), func(n string) bool { return slices.Contains(svc.Networks[n].Aliases, "policyd") }) {
			t.Errorf("service %s does not answer to the scraped name", s)
		}
	}

	graf := service(t, p, "grafana")
	gm := map[string]string{}
	for _, v := range graf.Volumes {
		gm[v.Target] = v.Source
	}
	dashboard, _ := filepath.Abs("../monitoring/grafana/policyd.json")
	var dashDir string
	for target, source := range gm {
		if source == dashboard {
			dashDir = filepath.Dir(target)
		}
	}
	if dashDir == "" {
		t.Fatalf("grafana: monitoring/grafana/policyd.json is not mounted (mounts %v)", gm)
	}
	prov, ok := gm["/etc/grafana/provisioning"]
	if !ok {
		t.Fatalf("grafana: nothing mounted at /etc/grafana/provisioning")
	}
	var dashProv struct {
		APIVersion int `yaml:"apiVersion"`
		Providers  []struct {
			Name            string `yaml:"name"`
			Type            string `yaml:"type"`
			DisableDeletion bool   `yaml:"disableDeletion"`
			AllowUIUpdates  bool   `yaml:"allowUiUpdates"`
			Options         struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	strictYAML(t, filepath.Join(prov, "dashboards", "policyd.yaml"), &dashProv)
	if len(dashProv.Providers) != 1 || dashProv.Providers[0].Type != "file" || dashProv.Providers[0].Options.Path != dashDir {
		t.Errorf("grafana dashboard provider %+v: want one file provider over %s", dashProv.Providers, dashDir)
	}
	var dsProv struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name      string `yaml:"name"`
			UID       string `yaml:"uid"`
			Type      string `yaml:"type"`
			Access    string `yaml:"access"`
			URL       string `yaml:"url"`
			IsDefault bool   `yaml:"isDefault"`
			Editable  bool   `yaml:"editable"`
		} `yaml:"datasources"`
	}
	strictYAML(t, filepath.Join(prov, "datasources", "prometheus.yaml"), &dsProv)
	if len(dsProv.Datasources) != 1 || dsProv.Datasources[0].Type != "prometheus" || dsProv.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana data sources %+v: want the compose Prometheus, http://prometheus:9090", dsProv.Datasources)
	}
}

// strictYAML decodes a YAML file into v, failing on a key v has no field for.
func strictYAML(t *testing.T, path string, v any) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	dec.KnownFields(true)
	if err := dec.Decode(v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
