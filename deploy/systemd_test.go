package deploy

import (
	"bytes"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-systemd/v22/unit"
	"github.com/policyd/policyd/config"
	"go.yaml.in/yaml/v3"
)

const (
	systemdUnit   = "systemd/policyd.service"
	deploymentDoc = "../docs/deployment.md"
)

func TestSystemdUnit(t *testing.T) {
	f, err := os.Open(systemdUnit)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	opts, err := unit.DeserializeOptions(f)
	if err != nil {
		t.Fatalf("%s: %v", systemdUnit, err)
	}
	get := func(section, name string) []string {
		var out []string
		for _, o := range opts {
			if o.Section == section && o.Name == name {
				out = append(out, o.Value)
			}
		}
		return out
	}
	only := func(section, name string) string {
		t.Helper()
		v := get(section, name)
		if len(v) != 1 {
			t.Errorf("%s: [%s] %s is set %d times, want once", systemdUnit, section, name, len(v))
			return ""
		}
		return v[0]
	}

	start := strings.Fields(only("Service", "ExecStart"))
	if len(start) == 0 || start[0] != "/opt/policyd/bin/policyd" {
		t.Fatalf("ExecStart %q, want /opt/policyd/bin/policyd ...", start)
	}
	args := policydArgs(t, start[1:])
	if args.File == "" {
		t.Error("ExecStart gives no --config: nothing to reload")
	}
	pre := strings.Fields(only("Service", "ExecStartPre"))
	if !slices.Equal(pre, append(slices.Clone(start), "--check-config")) {
		t.Errorf("ExecStartPre %q, want the ExecStart command with --check-config (an invalid config fails the start with every problem listed)", pre)
	}
	if r := only("Service", "ExecReload"); r != "/bin/kill -HUP $MAINPID" {
		t.Errorf("ExecReload %q, want /bin/kill -HUP $MAINPID (policyd reloads on SIGHUP)", r)
	}
	if ty := only("Service", "Type"); ty != "exec" && ty != "simple" {
		t.Errorf("Type=%s: policyd does not notify systemd; exec or simple", ty)
	}
	if u := only("Service", "User"); u == "" || u == "root" {
		t.Errorf("User=%q: run as a system user", u)
	}
	stop, err := time.ParseDuration(only("Service", "TimeoutStopSec"))
	if err != nil || stop <= config.Defaults().Server.ShutdownTimeout {
		t.Errorf("TimeoutStopSec %v (%v): must exceed server.shutdown_timeout's default %v, or systemd kills the drain", stop, err, config.Defaults().Server.ShutdownTimeout)
	}
	// oneDNN and NVRTC write code at run time; a GPU is a device node
	for _, bad := range [][2]string{{"MemoryDenyWriteExecute", "yes"}, {"PrivateDevices", "yes"}} {
		if slices.Contains(get("Service", bad[0]), bad[1]) {
			t.Errorf("%s=%s breaks policyd (JIT code generation, GPU device nodes)", bad[0], bad[1])
		}
	}
	for _, hard := range []string{"NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp"} {
		if len(get("Service", hard)) == 0 {
			t.Errorf("no %s= hardening", hard)
		}
	}
	if w := only("Install", "WantedBy"); w != "multi-user.target" {
		t.Errorf("WantedBy=%s, want multi-user.target", w)
	}

	// The config: the unit ships none, so the one docs/deployment.md writes stands in for it,
	// with the unit's environment and a test token where the unit says the token file is.
	env := map[string]string{}
	for _, line := range get("Service", "Environment") {
		for _, kv := range strings.Fields(line) {
			if k, v, ok := strings.Cut(strings.Trim(kv, `"`), "="); ok {
				env[k] = v
			}
		}
	}
	if len(get("Service", "LoadCredential")) > 0 {
		t.Error("LoadCredential=: systemd copies a credential at start only, so a rotated token would wait for a restart")
	}
	doc := string(readFile(t, deploymentDoc))
	m := regexp.MustCompile(`(?s)cat > ` + regexp.QuoteMeta(args.File) + ` <<'YAML'\n(.*?)\nYAML\n`).FindStringSubmatch(doc)
	if m == nil {
		t.Fatalf("%s does not write %s (cat > %s <<'YAML' ... YAML)", deploymentDoc, args.File, args.File)
	}
	files := map[string]string{args.File: m[1]}
	tok := adminTokenFile(t, start[1:], env, files)
	if tok != "" {
		files[tok] = "test-token\n"
		// the docs create the file policyd reads, readable by the service's group and written by root
		if !strings.Contains(doc, "install -m 0640 -o root -g "+only("Service", "Group")+" /dev/null "+tok) {
			t.Errorf("%s does not create %s (install -m 0640 -o root -g %s /dev/null %s)", deploymentDoc, tok, only("Service", "Group"), tok)
		}
		for _, rw := range append(get("Service", "ReadWritePaths"), get("Service", "StateDirectory")...) {
			if rw != "" && strings.HasPrefix(tok, strings.TrimSuffix(rw, "/")+"/") {
				t.Errorf("the token file %s is under ReadWritePaths %s: policyd could overwrite its own token", tok, rw)
			}
		}
	}
	var raw struct {
		Repository struct {
			Path string `yaml:"path"`
		} `yaml:"repository"`
	}
	if err := yaml.Unmarshal([]byte(m[1]), &raw); err != nil {
		t.Fatalf("%s: the config it writes: %v", deploymentDoc, err)
	}
	// gRPC: on (a host's clients reach it where the operator puts it; the loopback default is
	// fine behind a local proxy, and docs/deployment.md#grpc says how to open it)
	if cfg := checkPolicydConfig(t, start[1:], env, files, raw.Repository.Path); !config.GRPCEnabled(cfg.Server.GRPCAddr) {
		t.Errorf("the systemd config turns gRPC off (server.grpc_addr %q)", cfg.Server.GRPCAddr)
	}
}

// TestSystemdAnalyzeVerify runs systemd's own checker over the unit where systemd is there. The
// binary is not installed at /opt/policyd here, which is the one complaint tolerated.
func TestSystemdAnalyzeVerify(t *testing.T) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed: systemd's own check of the unit skipped")
	}
	cmd := exec.Command(sa, "verify", "--man=no", systemdUnit)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()
	var problems []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		if line == "" || strings.Contains(line, "Command /opt/policyd/bin/policyd is not executable: No such file or directory") {
			continue
		}
		problems = append(problems, line)
	}
	if len(problems) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", systemdUnit, runErr, strings.Join(problems, "\n"))
	}
}
